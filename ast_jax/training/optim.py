"""The original recipe's optimiser: PyTorch `Adam(weight_decay=w)` with a per-epoch staircase decay.

PyTorch's Adam adds `w * param` to the gradient before the moments (coupled L2, not AdamW), so the optax
equivalent is `add_decayed_weights` *before* `scale_by_adam`. The original stepped
`MultiStepLR(milestones=range(start, 1000, step), gamma)` once at the end of every epoch, so epoch e (1-based)
runs at `lr * gamma ** n(e)` with n(e) the number of milestones <= e - 1. A staircase `exponential_decay` over
optimiser steps gives the same numbers when each transition spans `step` epochs and the first one ends where
epoch `start + 1` begins, i.e. `transition_begin = (start - step) * steps_per_epoch`.
(`tests/test_optim.py` checks this against torch's MultiStepLR.)
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def make_schedule(optim_config, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per optimiser step: optional linear warmup, then the per-epoch staircase decay.

    Warmup follows the original AudioSet recipe: for the first `warmup_steps` steps the rate is
    `lr * s / warmup_steps`, updated every `warmup_update_every` steps (the original set it every 50 steps, so it
    is a staircase from 0, not a smooth ramp).
    """
    cfg = optim_config
    if cfg.lr_decay_start < cfg.lr_decay_every:
        raise ValueError(f"optim.lr_decay_start ({cfg.lr_decay_start}) must be >= optim.lr_decay_every "
                         f"({cfg.lr_decay_every}): the first decay ends an epoch after training begins")
    decay = optax.exponential_decay(
        init_value=cfg.learning_rate,
        transition_steps=cfg.lr_decay_every * steps_per_epoch,
        decay_rate=cfg.lr_decay_rate,
        transition_begin=(cfg.lr_decay_start - cfg.lr_decay_every) * steps_per_epoch,
        staircase=True)
    if not cfg.warmup_steps:
        return decay

    def schedule(count):
        last_update = count // cfg.warmup_update_every * cfg.warmup_update_every
        warm = cfg.learning_rate * last_update / cfg.warmup_steps
        return jnp.where(count < cfg.warmup_steps, warm, decay(count))

    return schedule


def make_optimizer(config, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`(optimiser, schedule)` for `config.optim`: coupled L2 weight decay, Adam, scheduled learning rate."""
    cfg = config.optim
    schedule = make_schedule(cfg, steps_per_epoch)
    optimizer = optax.chain(
        optax.add_decayed_weights(cfg.weight_decay),
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.scale_by_learning_rate(schedule),
    )
    return optimizer, schedule
