"""ast-jax: the Audio Spectrogram Transformer in JAX.

    import ast_jax
    model = ast_jax.load_pretrained("hf:MIT/ast-finetuned-speech-commands-v2")  # or a .pth, or a folder
    classify = ast_jax.pipeline(model)
    classify("clip.wav")  # [{"score": 0.99, "label": "yes"}, ...]

Submodules are imported on first use, so `import ast_jax` is cheap and torch is never imported unless a
PyTorch file is read.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "AST": "ast_jax.model",
    "ASTConfig": "ast_jax.model",
    "init_params": "ast_jax.model",
    "FeatureConfig": "ast_jax.features",
    "Pretrained": "ast_jax.pretrained",
    "load_model": "ast_jax.pretrained",
    "save_model": "ast_jax.pretrained",
    "load_pretrained": "ast_jax.convert",
    "export_hf": "ast_jax.convert",
    "load_audio": "ast_jax.audio",
    "pipeline": "ast_jax.inference",
}

_SUBMODULES = ("features", "audio", "model", "convert", "inference", "data", "augment", "training", "evaluation",
               "explain", "pretrained")

__all__ = sorted(_EXPORTS) + ["features", "audio"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"ast_jax.{name}")
    raise AttributeError(f"module 'ast_jax' has no attribute {name!r}")


def __dir__() -> list[str]:  # what tab completion offers
    return sorted({name for name in globals() if name.startswith("__")} | set(_EXPORTS) | set(_SUBMODULES))
