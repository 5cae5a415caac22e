"""The original recipe's optimiser: PyTorch `Adam(weight_decay=w)` with a per-epoch staircase decay.

PyTorch's Adam adds `w * param` to the gradient before the moments (coupled L2, not AdamW), so the optax
equivalent is `add_decayed_weights` *before* `scale_by_adam`. The original stepped
`MultiStepLR(milestones=range(start, 1000, step), gamma)` once at the end of every epoch, so epoch e (1-based)
runs at `lr * gamma ** n(e)` with n(e) the number of milestones <= e - 1. A staircase `exponential_decay` over
optimiser steps gives the same numbers when each transition spans `step` epochs and the first one ends where
epoch `start + 1` begins, i.e. `transition_begin = (start - step) * steps_per_epoch`.
(`tests/test_optim.py` checks this against torch's MultiStepLR.)

Two options for training from scratch (the demo), both off by default: `lr_schedule="cosine"` replaces the
staircase by a cosine from `learning_rate` down to `learning_rate * min_lr_ratio` at the last step (torch's
`CosineAnnealingLR(T_max=total - warmup, eta_min)` after the warmup), and `decoupled_weight_decay=True` makes
the decay AdamW's (`torch.optim.AdamW`: parameters shrink by `lr * weight_decay` outside the Adam moments).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

LR_SCHEDULES = ("multistep", "cosine")


def make_schedule(optim_config, steps_per_epoch: int, total_steps: int = 0) -> optax.Schedule:
    """Learning rate per optimiser step: optional linear warmup, then the per-epoch staircase decay
    (`lr_schedule="multistep"`) or a cosine over the remaining `total_steps - warmup_steps` ("cosine").

    Warmup follows the original AudioSet recipe: for the first `warmup_steps` steps the rate is
    `lr * s / warmup_steps`, updated every `warmup_update_every` steps (the original set it every 50 steps, so it
    is a staircase from 0, not a smooth ramp). With the staircase decay it is the original loop's exactly, also
    where the warmup spans a decay (fewer steps an epoch than the warmup's): each warmup update set the rate
    afresh, undoing the decays since the one before, so the decays that count are those after the last update.
    """
    cfg = optim_config
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"optim.lr_schedule must be one of {LR_SCHEDULES}, got {cfg.lr_schedule!r}")
    if cfg.lr_schedule == "cosine":
        if total_steps <= cfg.warmup_steps:
            raise ValueError(f"optim.warmup_steps ({cfg.warmup_steps}) must be below the {total_steps} training steps "
                             f"(num_epochs x steps per epoch): lower optim.warmup_steps, or train for more epochs")
        cosine = optax.cosine_decay_schedule(cfg.learning_rate, total_steps - cfg.warmup_steps, alpha=cfg.min_lr_ratio)
        decay = lambda count: cosine(jnp.maximum(count - cfg.warmup_steps, 0))  # noqa: E731
    elif cfg.lr_decay_start < cfg.lr_decay_every:
        raise ValueError(f"optim.lr_decay_start ({cfg.lr_decay_start}) must be >= optim.lr_decay_every "
                         f"({cfg.lr_decay_every}): the first decay ends an epoch after training begins")
    else:
        begin = (cfg.lr_decay_start - cfg.lr_decay_every) * steps_per_epoch
        between = cfg.lr_decay_every * steps_per_epoch
        decay = optax.exponential_decay(init_value=cfg.learning_rate, transition_steps=between,
                                        decay_rate=cfg.lr_decay_rate, transition_begin=begin, staircase=True)
        if cfg.warmup_steps:
            decays = lambda count: jnp.maximum(count - begin, 0) // between  # noqa: E731  (made by step `count`)

            def schedule(count):
                # the last warmup update (at a multiple of warmup_update_every, up to warmup_steps), and the
                # decays made since
                update = jnp.minimum(count, cfg.warmup_steps) // cfg.warmup_update_every * cfg.warmup_update_every
                since = (decays(count) - decays(update)).astype(jnp.float32)
                return cfg.learning_rate * update / cfg.warmup_steps * jnp.float32(cfg.lr_decay_rate) ** since

            return schedule
    if not cfg.warmup_steps:
        return decay

    def schedule(count):  # the cosine's warmup (the staircase's returned above): the warmup, then the cosine
        last_update = count // cfg.warmup_update_every * cfg.warmup_update_every
        warm = cfg.learning_rate * last_update / cfg.warmup_steps
        return jnp.where(count < cfg.warmup_steps, warm, decay(count))

    return schedule


def make_optimizer(config, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`(optimiser, schedule)` for `config.optim`: Adam with coupled L2 weight decay (or AdamW's decoupled
    decay with `decoupled_weight_decay`), scheduled learning rate."""
    cfg = config.optim
    schedule = make_schedule(cfg, steps_per_epoch, config.num_epochs * steps_per_epoch)
    if cfg.decoupled_weight_decay:
        return optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay), schedule
    optimizer = optax.chain(
        optax.add_decayed_weights(cfg.weight_decay),
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.scale_by_learning_rate(schedule),
    )
    return optimizer, schedule
