"""Scoring a model on a labelled data set: label mapping, metrics, confusion matrix and the misclassified list.

Data-set labels are matched to model labels by name (the released Speech Commands head is not in alphabetical
order, and a 12-class data set can be scored with a 35-class model on the labels they share). The prediction
is the model's best label over all its outputs, so a prediction outside the data set's labels counts as wrong;
several data-set labels may stand for one model label (merged classes), and its prediction is right for each.
The prediction, AP and AUC (`ast_jax.training.metrics`, scikit-learn's definitions) go by the `ranking`
values: `ast-jax evaluate` passes the logits. Their order is that of the sigmoid, by which the original code
and training rank every model (whatever its loss), so that a model's mAP and mAUC here equal those of its
training log; for a softmax model they differ from ranking its softmax probabilities, which are normalised
across labels. The logits rather than the float32 sigmoid: it is 1.0 for every logit above about 17, and those
ties would make the lowest-numbered label the prediction and blur the ranking.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from typing import Mapping, Sequence

import numpy as np

from ast_jax.training.metrics import average_precision, json_ready, roc_auc

OTHER = "(other)"  # confusion-matrix column for predictions outside the data set's labels


def map_labels(dataset_labels: Sequence[str], model_labels: Sequence[str],
               overrides: Mapping[str, str] | None = None) -> list[int]:
    """Model output index of each data-set label: by `overrides` (data-set name -> model name), then by exact
    name, then ignoring case; the names in `overrides` are matched the same way. Raises a ValueError listing
    every label that maps to nothing, and every name in `overrides` that is not a label of its side."""
    exact = {name: i for i, name in enumerate(model_labels)}
    folded = {name.lower(): i for i, name in enumerate(model_labels)}
    dataset_folded = {name.lower(): name for name in dataset_labels}
    unknown_keys = [key for key in (overrides or {}) if key not in dataset_labels and key.lower() not in dataset_folded]
    if unknown_keys:
        raise ValueError(f"--label-map names data-set labels the data does not have: {', '.join(unknown_keys)} "
                         f"(its labels: {', '.join(dataset_labels[:40])}{', ...' if len(dataset_labels) > 40 else ''})")
    overrides = {key if key in dataset_labels else dataset_folded[key.lower()]: value
                 for key, value in (overrides or {}).items()}
    unknown_overrides = sorted(value for value in set(overrides.values())
                               if value not in exact and value.lower() not in folded)
    if unknown_overrides:
        raise ValueError(f"--label-map names labels the model does not have: {', '.join(unknown_overrides)}")
    indices, unmapped = [], []
    for name in dataset_labels:
        target = overrides.get(name, name)
        index = exact.get(target, folded.get(target.lower()))
        if index is None:
            unmapped.append(name)
        indices.append(index)
    if unmapped:
        raise ValueError(
            f"data-set labels not among the model's {len(model_labels)} labels: {', '.join(unmapped)}; "
            f"map them with --label-map DATASET=MODEL[,...] (model labels: {', '.join(model_labels[:40])}"
            f"{', ...' if len(model_labels) > 40 else ''})")
    return indices


@dataclasses.dataclass
class Evaluation:
    """Model scores and data-set targets of one evaluation run, and everything derived from them."""

    scores: np.ndarray  # (n, model classes), after the model's activation
    targets: np.ndarray  # (n, data-set classes)
    dataset_labels: list[str]
    model_labels: list[str]
    label_indices: list[int]  # model output of each data-set label
    names: list[str]  # one name (file path or example index) per row
    multilabel: bool = False
    ranking: np.ndarray | None = None  # (n, model classes) what predictions, AP and AUC go by; the scores if None

    @property
    def mapped_scores(self) -> np.ndarray:
        """(n, data-set classes): the model's score of each data-set label."""
        return self.scores[:, self.label_indices]

    @property
    def true_classes(self) -> np.ndarray:
        return np.argmax(self.targets, axis=1)

    @property
    def ranked(self) -> np.ndarray:
        """(n, model classes): the `ranking` values, or the scores when there are none."""
        return self.scores if self.ranking is None else self.ranking

    @property
    def predicted_model_classes(self) -> np.ndarray:
        return np.argmax(self.ranked, axis=1)

    @property
    def hits(self) -> np.ndarray:
        """(n,) whether the model's best label is the example's label (one of its labels, multi-label). Judged
        by model label, so that several data-set labels mapped to one model label all count as right."""
        true_model = np.zeros(self.scores.shape, bool)
        for k, index in enumerate(self.label_indices):
            true_model[:, index] |= self.targets[:, k] >= 0.5
        return true_model[np.arange(len(self.scores)), self.predicted_model_classes]

    def per_class(self) -> list[dict]:
        """Precision, recall, support, AP and AUC of each data-set class. Single-label: the prediction is the
        best label; multi-label: every label scoring at least 0.5. AP and AUC rank by `ranking`."""
        positive = self.targets >= 0.5
        if self.multilabel:
            predicted = self.mapped_scores >= 0.5
        else:
            predicted = self.predicted_model_classes[:, None] == np.asarray(self.label_indices)[None, :]
        rows = []
        for k, name in enumerate(self.dataset_labels):
            true_positives = int(np.sum(predicted[:, k] & positive[:, k]))
            predicted_count, support = int(predicted[:, k].sum()), int(positive[:, k].sum())
            ranked = self.ranked[:, self.label_indices[k]]
            rows.append({
                "label": name,
                "precision": true_positives / predicted_count if predicted_count else float("nan"),
                "recall": true_positives / support if support else float("nan"),
                "support": support,
                "ap": average_precision(ranked, positive[:, k]),
                "auc": roc_auc(ranked, positive[:, k]),
            })
        return rows

    def report(self) -> dict:
        """examples; accuracy (the share of `hits`); mAP and mAUC over the data-set classes that have positives
        (and negatives); and per_class (see `per_class`). Undefined figures (no positives, nothing predicted)
        are None, JSON's null."""
        per_class = self.per_class()
        mean = lambda key: float(np.nanmean([row[key] for row in per_class])) if any(
            not np.isnan(row[key]) for row in per_class) else float("nan")
        report = {"examples": int(len(self.targets)), "accuracy": float(np.mean(self.hits)),
                  "mAP": mean("ap"), "mAUC": mean("auc"), "per_class": per_class}
        return json_ready(report)

    def confusion_matrix(self) -> tuple[np.ndarray, list[str]]:
        """Counts (true data-set class, predicted model label) and the column names: the model labels the data
        set's labels map to (its own names where they match), then "(other)" for predictions outside them, when
        there are any."""
        columns_of = list(dict.fromkeys(self.label_indices))  # mapped model labels, each once, in data-set order
        column = np.full(len(self.model_labels), len(columns_of))
        column[columns_of] = np.arange(len(columns_of))
        predicted = column[self.predicted_model_classes]
        columns = [self.model_labels[i] for i in columns_of] + ([OTHER] if np.any(predicted == len(columns_of)) else [])
        matrix = np.zeros((len(self.dataset_labels), len(columns)), np.int64)
        np.add.at(matrix, (self.true_classes, predicted), 1)
        return matrix, columns

    def misclassified(self) -> list[dict]:
        """Rows whose best model label is not their label (none of their labels, multi-label), with the labels
        (joined by ";") and the scores of the prediction and of the best-scored true label."""
        rows = []
        predicted = self.predicted_model_classes
        for i in np.flatnonzero(~self.hits):
            true = np.flatnonzero(self.targets[i] >= 0.5)
            rows.append({
                "file": self.names[i],
                "label": ";".join(self.dataset_labels[k] for k in true),
                "predicted": self.model_labels[predicted[i]],
                "predicted_score": float(self.scores[i, predicted[i]]),
                "label_score": max((float(self.scores[i, self.label_indices[k]]) for k in true), default=float("nan")),
            })
        return rows


def plot_confusion_matrix(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], path: str) -> None:
    """A confusion-matrix PNG: counts as numbers, colour by the fraction of each true class (row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fraction = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(columns) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(columns)), columns, rotation=90)
    axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(columns) <= 40:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                axes.text(j, i, str(count), ha="center", va="center", fontsize=7,
                          color="white" if fraction[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of true class")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=120)
    plt.close(figure)


def write_csv(path: str, rows: Sequence[dict], fieldnames: Sequence[str]) -> None:
    """RFC 4180 CSV (CRLF line ends, so a carriage return inside a field is quoted); file names that are not valid
    UTF-8 are written as the bytes the filesystem holds."""
    with open(path, "w", newline="", errors="surrogateescape") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: str, value) -> None:
    with open(path, "w") as handle:
        json.dump(value, handle, indent=2)
        handle.write("\n")
