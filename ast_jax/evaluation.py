"""Scoring a model on a labelled data set: label mapping, metrics, confusion matrix and the misclassified list.

Data-set labels are matched to model labels by name (the released Speech Commands head is not in alphabetical
order, and a 12-class data set can be scored with a 35-class model on the labels they share). The prediction
is the model's best label over all its outputs, so a prediction outside the data set's labels counts as wrong.
AP and AUC (`ast_jax.training.metrics`, scikit-learn's definitions) rank the examples by each data-set label's
`ranking` value: `ast-jax evaluate` passes the sigmoid of the logits, as the original code and training do
for every model (whatever its loss), so that a model's mAP and mAUC here equal those of its training log. For a
softmax model they differ from ranking its softmax probabilities, which are normalised across labels.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from typing import Mapping, Sequence

import numpy as np

from ast_jax.training.metrics import average_precision, roc_auc

OTHER = "(other)"  # confusion-matrix column for predictions outside the data set's labels


def map_labels(dataset_labels: Sequence[str], model_labels: Sequence[str],
               overrides: Mapping[str, str] | None = None) -> list[int]:
    """Model output index of each data-set label: by `overrides` (data-set name -> model name), then by exact
    name, then ignoring case. Raises a ValueError listing every label that maps to nothing."""
    overrides = dict(overrides or {})
    exact = {name: i for i, name in enumerate(model_labels)}
    folded = {name.lower(): i for i, name in enumerate(model_labels)}
    unknown_overrides = sorted(set(overrides.values()) - set(exact))
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
    ranking: np.ndarray | None = None  # (n, model classes) values AP and AUC rank by; the scores when None

    @property
    def mapped_scores(self) -> np.ndarray:
        """(n, data-set classes): the model's score of each data-set label."""
        return self.scores[:, self.label_indices]

    @property
    def true_classes(self) -> np.ndarray:
        return np.argmax(self.targets, axis=1)

    @property
    def predicted_model_classes(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1)

    @property
    def predicted_classes(self) -> np.ndarray:
        """Data-set class of each prediction, or -1 where the model's best label is not a data-set label."""
        lookup = np.full(len(self.model_labels), -1)
        lookup[self.label_indices] = np.arange(len(self.label_indices))
        return lookup[self.predicted_model_classes]

    def per_class(self) -> list[dict]:
        """Precision, recall, support, AP and AUC of each data-set class. Single-label: the prediction is the
        best label; multi-label: every label scoring at least 0.5. AP and AUC rank by `ranking`."""
        positive = self.targets >= 0.5
        if self.multilabel:
            predicted = self.mapped_scores >= 0.5
        else:
            predicted = self.predicted_classes[:, None] == np.arange(len(self.dataset_labels))[None, :]
        rows = []
        for k, name in enumerate(self.dataset_labels):
            true_positives = int(np.sum(predicted[:, k] & positive[:, k]))
            predicted_count, support = int(predicted[:, k].sum()), int(positive[:, k].sum())
            ranked = (self.scores if self.ranking is None else self.ranking)[:, self.label_indices[k]]
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
        """examples; accuracy (best model label == the true label); mAP and mAUC over the data-set classes
        that have positives (and negatives); and per_class (see `per_class`)."""
        per_class = self.per_class()
        mean = lambda key: float(np.nanmean([row[key] for row in per_class])) if any(
            not np.isnan(row[key]) for row in per_class) else float("nan")
        correct = self.predicted_classes == self.true_classes
        return {"examples": int(len(self.targets)), "accuracy": float(np.mean(correct)),
                "mAP": mean("ap"), "mAUC": mean("auc"), "per_class": per_class}

    def confusion_matrix(self) -> tuple[np.ndarray, list[str]]:
        """Counts (true data-set class, predicted class) and the column names; a last "(other)" column counts
        predictions outside the data set's labels when there are any."""
        predicted = self.predicted_classes
        columns = list(self.dataset_labels)
        if np.any(predicted < 0):
            columns.append(OTHER)
            predicted = np.where(predicted < 0, len(self.dataset_labels), predicted)
        matrix = np.zeros((len(self.dataset_labels), len(columns)), np.int64)
        np.add.at(matrix, (self.true_classes, predicted), 1)
        return matrix, columns

    def misclassified(self) -> list[dict]:
        """Rows whose best model label is not the true label, with both labels and their scores."""
        rows = []
        true, predicted = self.true_classes, self.predicted_model_classes
        for i in np.flatnonzero(self.predicted_classes != true):
            rows.append({
                "file": self.names[i],
                "label": self.dataset_labels[true[i]],
                "predicted": self.model_labels[predicted[i]],
                "predicted_score": float(self.scores[i, predicted[i]]),
                "label_score": float(self.scores[i, self.label_indices[true[i]]]),
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
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: str, value) -> None:
    with open(path, "w") as handle:
        json.dump(value, handle, indent=2)
        handle.write("\n")
