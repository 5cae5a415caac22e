"""Training: the original AST recipe as a sharded JAX loop.

  config_io   configs as Python files, command-line overrides
  optim       the optimizers (`make_optimizer`): the recipes' Adam with coupled L2 and per-epoch staircase
              decay, or AdamW; warmup, and a cosine schedule
  losses      BCE / CE on soft targets, masked for padded batches
  metrics     accuracy, mAP, mAUC (numpy, scikit-learn's definitions)
  sharding    the (data, fsdp) mesh and the shardings of state and batches
  checkpoint  Orbax checkpoints of the train state, for resuming
  trainer     `train_and_evaluate(config, workdir)`, the loop itself

Names and submodules are imported on first use, so `ast_jax.training.metrics` can be used without loading the
trainer.
"""

import importlib

_EXPORTS = {
    "apply_overrides": "ast_jax.training.config_io",
    "load_config": "ast_jax.training.config_io",
    "make_optimizer": "ast_jax.training.optim",
    "make_schedule": "ast_jax.training.optim",
    "default_config": "ast_jax.training.trainer",
    "train_and_evaluate": "ast_jax.training.trainer",
}

_SUBMODULES = ("config_io", "optim", "losses", "metrics", "sharding", "checkpoint", "trainer")

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"ast_jax.training.{name}")
    raise AttributeError(f"module 'ast_jax.training' has no attribute {name!r}")


def __dir__() -> list[str]:  # what tab completion offers
    return sorted({name for name in globals() if name.startswith("__")} | set(_EXPORTS) | set(_SUBMODULES))
