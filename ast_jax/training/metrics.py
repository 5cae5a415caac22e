"""Evaluation metrics in numpy: accuracy, and per-class average precision and ROC AUC (mAP, mAUC).

The definitions are those of scikit-learn's `average_precision_score` and `roc_auc_score`, which the original
recipe reported (tests compare against scikit-learn). A class with no positive (or no negative) example has no
AP (AUC) and is left out of the mean rather than counted as zero.
"""

from __future__ import annotations

import numpy as np


def accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of rows whose top-scoring class is one of the row's labels (target >= 0.5): the original's
    accuracy on single-label data (argmax of scores against argmax of targets), and on multi-label data what
    `ast-jax evaluate` counts, rather than the original's comparison with the lowest-numbered label."""
    return float(np.mean(targets[np.arange(len(scores)), np.argmax(scores, axis=1)] >= 0.5))


def _ranked_counts(scores: np.ndarray, positive: np.ndarray):
    """True- and false-positive counts at each distinct score threshold, from the highest score down."""
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    threshold_ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(positive)[threshold_ends]
    false_positives = threshold_ends + 1 - true_positives
    return true_positives, false_positives


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall step curve: sum over thresholds of (R_n - R_{n-1}) * P_n."""
    positive = positive.astype(bool)
    if not positive.any():
        return float("nan")
    true_positives, false_positives = _ranked_counts(scores, positive)
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / positive.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative, ties counting one half (Mann-Whitney U)."""
    positive = positive.astype(bool)
    num_positive, num_negative = int(positive.sum()), int((~positive).sum())
    if not num_positive or not num_negative:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # average rank (1-based) within each run of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[positive].sum() - num_positive * (num_positive + 1) / 2) / (num_positive * num_negative))


def classification_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """accuracy, mAP and mAUC of `scores (n, C)` against `targets (n, C)` (a target >= 0.5 is a positive).

    Only the order of the scores counts, so the logits give the figures of their sigmoid, which the original
    recipe ranks by, without its float32 ties (1.0 above a logit of about 17); the trainer passes logits."""
    positive = targets >= 0.5
    per_class_ap = [average_precision(scores[:, k], positive[:, k]) for k in range(scores.shape[1])]
    per_class_auc = [roc_auc(scores[:, k], positive[:, k]) for k in range(scores.shape[1])]
    mean = lambda values: float(np.nanmean(values)) if not np.all(np.isnan(values)) else float("nan")
    return {"accuracy": accuracy(scores, targets), "mAP": mean(per_class_ap), "mAUC": mean(per_class_auc)}


def json_ready(value):
    """`value` (nested dicts and lists) with every float that is not finite made None: JSON has no NaN, and a
    metric can be undefined (the AUC of a split with one class, the precision of a label never predicted)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value
