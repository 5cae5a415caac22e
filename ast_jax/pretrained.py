"""A ready-to-use model: architecture, parameters, feature settings and labels, and its folder on disk.

An ast-jax model folder holds
  ast_jax.json   {"format": "ast-jax-model", "version": 1, "model": ASTConfig, "features": FeatureConfig,
                  "labels": [...], "activation": "sigmoid" | "softmax", "source": "<where it came from>"}
  params/        an Orbax checkpoint of the Flax parameter tree
It loads with jax, flax and orbax alone (no torch). Folders are written to a temporary sibling and renamed
into place, so an interrupted save never leaves a half-written model behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from ast_jax._atomic import check_free_space, interrupts_deferred, staged_directory
from ast_jax.features import FeatureConfig
from ast_jax.model import AST, ASTConfig, parameter_shapes

CONFIG_FILE = "ast_jax.json"
PARAMS_DIR = "params"
FORMAT_NAME = "ast-jax-model"
FORMAT_VERSION = 1
TRAINED_ACTIVATIONS = ("sigmoid", "softmax")  # what a model is trained with: BCE (multi-label) or cross-entropy


def scores_from_logits(logits, activation: str):
    """Scores from logits (B, labels): "sigmoid", "softmax" (over labels), or "none" for the logits themselves."""
    if activation == "none":
        return logits
    return jax.nn.sigmoid(logits) if activation == "sigmoid" else jax.nn.softmax(logits, axis=-1)


@dataclasses.dataclass(repr=False)
class Pretrained:
    """An AST with its parameters, the features it expects and the names of its outputs.

    config: the architecture (`ASTConfig`); params: the Flax parameter tree; features: the `FeatureConfig`
    that makes its input from audio; labels: one name per output; activation: "sigmoid" or "softmax", how
    scores are made from logits (what the model was trained with); source: where it came from.

    `apply` runs eagerly; for speed jit it with the parameters as an argument (not closed over, which would
    compile them into the program as constants):

        forward = jax.jit(lambda params, x: model.model.apply({"params": params}, x)[0])
        logits = forward(model.params, input_values)
    """

    config: ASTConfig
    params: Any
    features: FeatureConfig
    labels: list[str]
    activation: str = "sigmoid"
    source: str = ""

    def __post_init__(self):
        if len(self.labels) != self.config.num_labels:
            raise ValueError(f"{len(self.labels)} labels given for a head with {self.config.num_labels} outputs")
        if self.activation not in TRAINED_ACTIVATIONS:
            raise ValueError(f"activation must be one of {TRAINED_ACTIVATIONS}, got {self.activation!r}")
        if (self.features.num_mel_bins, self.features.target_length) != (
                self.config.num_mel_bins, self.config.max_length):
            raise ValueError(
                f"features give {self.features.target_length} frames x {self.features.num_mel_bins} bins but the "
                f"model expects {self.config.max_length} x {self.config.num_mel_bins}")

    @property
    def model(self) -> AST:
        return AST(self.config)

    def apply(self, input_values, **kwargs):
        """`(logits, out)` for normalised features `(B, T, F)`; see `AST` for what `out` holds."""
        return self.model.apply({"params": self.params}, input_values, **kwargs)

    def scores(self, logits):
        """Scores from logits with the model's activation (sigmoid, or softmax over the last axis)."""
        return scores_from_logits(logits, self.activation)

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the model as an ast-jax model folder (see `save_model`); returns its absolute path."""
        return save_model(directory, self, overwrite=overwrite)

    def __repr__(self) -> str:
        from ast_jax.model import count_parameters

        cfg = self.config
        parameters = "no parameters" if self.params is None else f"{count_parameters(self.params):,} parameters"
        labels = ", ".join(self.labels[:3]) + (", ..." if len(self.labels) > 3 else "")
        return (f"Pretrained({cfg.num_layers} blocks, width {cfg.hidden_size}, {parameters}, {cfg.max_length} frames "
                f"x {cfg.num_mel_bins} mel bins, {len(self.labels)} labels [{labels}], {self.activation}, "
                f"dtype {cfg.dtype}, source {self.source!r})")


def default_labels(n: int) -> list[str]:
    """Names for a head without label names, as transformers gives them: LABEL_0, LABEL_1, ..."""
    return [f"LABEL_{i}" for i in range(n)]


def _labels(value: Any, count: int) -> list[str]:
    """The labels entry of an ast_jax.json: a list of names (absent: LABEL_i)."""
    if value is None:
        return default_labels(count)
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError(f"labels must be a list of names, got {type(value).__name__} {str(value)[:40]!r}")
    return value


def _local_checkpointer():
    """An Orbax checkpointer for this process alone. A model folder holds host numpy arrays that one process
    writes or reads by itself; in a multi-process job (training on several hosts) the others take no part, so
    Orbax must not wait for them at its barriers."""
    import orbax.checkpoint as ocp

    me = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me}))


def save_model(directory: str | os.PathLike, model: Pretrained, *, overwrite: bool = False) -> Path:
    """Write `model` as an ast-jax model folder, atomically (temporary sibling, then rename); an existing
    folder is refused unless `overwrite`. Returns the folder's absolute path."""
    if not isinstance(model, Pretrained):
        raise TypeError(f"save_model(directory, model) takes the folder first, then a Pretrained; got a "
                        f"{type(model).__name__} as the model")
    params = jax.tree_util.tree_map(np.asarray, model.params)
    check_free_space(directory, sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(params)) + (1 << 20))
    with staged_directory(directory, overwrite=overwrite) as staging:
        with interrupts_deferred(), _local_checkpointer() as checkpointer:
            checkpointer.save(staging / PARAMS_DIR, params)
            checkpointer.wait_until_finished()
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "model": model.config.to_dict(),
            "features": model.features.to_dict(),
            "labels": list(model.labels),
            "activation": model.activation,
            "source": model.source,
        }
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(directory).absolute()


def read_json(path: Path) -> Any:
    """The content of a JSON file; malformed JSON is one line naming the file."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def load_model(directory: str | os.PathLike, *, dtype: str | None = None) -> Pretrained:
    """Load an ast-jax model folder. `dtype` overrides the compute dtype ("bfloat16" for fast GPU inference)."""
    directory = Path(directory).absolute()
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: not an ast-jax model folder (no {CONFIG_FILE})")
    meta = read_json(config_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{config_path}: not an ast-jax model config (format {found!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > FORMAT_VERSION:
        raise ValueError(f"{config_path}: format version {meta.get('version')!r}; this ast-jax reads version "
                         f"{FORMAT_VERSION} (a newer ast-jax wrote it?)")
    try:
        config = ASTConfig.from_dict(meta["model"])
        features = FeatureConfig.from_dict(meta["features"])
        if dtype is not None:
            config = config.replace(dtype=dtype)
        # Checks labels, activation and feature geometry against the config before any weights are read.
        model = Pretrained(config=config, params=None, features=features,
                           labels=_labels(meta.get("labels"), config.num_labels),
                           activation=meta.get("activation", "sigmoid"), source=meta.get("source", str(directory)))
    except KeyError as error:
        raise ValueError(f"{config_path}: no {error.args[0]!r} entry") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"{config_path}: {error}") from None
    expected = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype),
        parameter_shapes(config))
    try:
        with _local_checkpointer() as checkpointer:
            params = checkpointer.restore(directory / PARAMS_DIR, expected)
    except Exception as error:  # orbax raises many types; report one line naming the folder
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{directory / PARAMS_DIR}: cannot restore parameters ({message})") from None
    # Orbax restores what was saved whatever shapes it is asked for: a config that does not describe the saved
    # weights (an edited ast_jax.json) would fail only inside the model, with a traceback.
    for (path, stored), (_, wanted) in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                           jax.tree_util.tree_flatten_with_path(expected)[0]):
        if tuple(stored.shape) != tuple(wanted.shape):
            name = "/".join(str(getattr(key, "key", key)) for key in path)
            raise ValueError(f"{directory / PARAMS_DIR}: parameter {name} has shape {tuple(stored.shape)}, but "
                             f"{CONFIG_FILE} describes a model whose {name} is {tuple(wanted.shape)}")
    return dataclasses.replace(model, params=params)


def from_params(config: ASTConfig, params: Any, features: FeatureConfig | None = None,
                labels: Sequence[str] | None = None, activation: str = "sigmoid", source: str = "") -> Pretrained:
    """Wrap parameters (e.g. from training) as a `Pretrained`."""
    features = features or FeatureConfig(num_mel_bins=config.num_mel_bins, target_length=config.max_length)
    labels = list(labels) if labels is not None else default_labels(config.num_labels)
    return Pretrained(config, params, features, labels, activation, source)
