"""Training losses on (soft) targets, in float32, averaged over the valid rows of a padded batch."""

from __future__ import annotations

import jax.numpy as jnp
import optax

LOSSES = ("bce", "ce")


def per_example_loss(name: str, logits, targets):
    """`(B,)` losses. "bce": torch's BCEWithLogitsLoss averaged over classes (multi-hot or mixup targets).
    "ce": cross entropy against the target distribution; for one-hot targets this is exactly the original's
    `CrossEntropyLoss(logits, argmax(targets))`."""
    logits, targets = logits.astype(jnp.float32), targets.astype(jnp.float32)
    if name == "bce":
        return optax.sigmoid_binary_cross_entropy(logits, targets).mean(axis=-1)
    if name == "ce":
        return optax.softmax_cross_entropy(logits, targets)
    raise ValueError(f"unknown loss {name!r}; choose from {LOSSES}")


def masked_mean(values, valid):
    """Mean of `values` over rows where `valid`: padding rows of a short last batch do not count, so a partial
    batch gives the same loss as PyTorch's smaller last batch."""
    valid = valid.astype(jnp.float32)
    return jnp.sum(values * valid) / jnp.maximum(jnp.sum(valid), 1.0)
