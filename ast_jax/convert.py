"""Checkpoint conversion between the PyTorch AST formats and ast-jax.

Sources `load_pretrained` reads:
  - an original `.pth` (`torch.save` of the training code's state dict, with or without the DataParallel
    `module.` prefix); its unused DeiT `head`/`head_dist` are dropped on purpose;
  - a Hugging Face folder (config.json, preprocessor_config.json, model.safetensors or pytorch_model.bin), as
    written by any transformers version, or `hf:<repo id>` (downloaded with huggingface_hub);
  - a timm DeiT distilled checkpoint (ImageNet weights: AST's starting point), which gets a new head;
  - an ast-jax model folder.

The converter is one explicit name map (`_EMBEDDINGS`, `_BLOCK`, `_FINAL`, `_HEAD`) with a layout rule per row,
and every conversion checks that each source tensor is used or deliberately dropped and that every shape
matches. The compatibility fixes of the original code (`adapt_position_table`, `adapt_imagenet_kernel`) are
named functions. PyTorch pickles are read with `torch.load(weights_only=True)`, which never runs pickled code;
safetensors and ast-jax folders need no torch at all.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ast_jax.features import FeatureConfig
from ast_jax.model import MODEL_SIZES, ASTConfig, dtype_name, parameter_shapes
from ast_jax._atomic import UMASK, check_apart, check_free_space, check_output_folder, staged_directory
from ast_jax.pretrained import Pretrained, default_labels, is_model_dir, load_model, read_json
from ast_jax.data.speech_commands import LABELS_35

# Input geometries of the released original checkpoints and recipes, (mel bins, frames, frequency stride, time
# stride) by feature recipe. Their patch counts are all different, so an original .pth's position table tells
# which one it was trained with.
KNOWN_GEOMETRIES = {
    (128, 1024, 10, 10): "audioset", (128, 1024, 12, 12): "audioset", (128, 1024, 14, 14): "audioset",
    (128, 1024, 16, 16): "audioset", (128, 128, 10, 10): "speech_commands", (128, 512, 10, 10): "esc50",
}

HF_CONFIG = "config.json"
HF_PREPROCESSOR = "preprocessor_config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_INDEX = ".index.json"  # suffix of a sharded checkpoint's index: model.safetensors.index.json
# Keys under which training scripts nest the state dict in a checkpoint: {"model": {...}, "epoch": ...}.
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module", "net")

# ----------------------------------------------------------------------------------------------------------------
# The name map.
# Layout rules, PyTorch -> Flax: Linear weight [out, in] -> kernel [in, out]; Conv weight OIHW -> kernel HWIO;
# everything else (biases, LayerNorm, tokens, position table) as is. Where a row names several PyTorch tensors
# (transformers' separate query/key/value), they are one Flax tensor split along PyTorch's output axis.
# ----------------------------------------------------------------------------------------------------------------
COPY, LINEAR, CONV = "copy", "linear", "conv"
_TO_FLAX = {COPY: lambda w: w, LINEAR: lambda w: w.T, CONV: lambda w: w.transpose(2, 3, 1, 0)}
_TO_TORCH = {COPY: lambda w: w, LINEAR: lambda w: w.T, CONV: lambda w: w.transpose(3, 2, 0, 1)}

# Columns: Flax path, layout, original AST / timm DeiT name, Hugging Face name (as in hub files and what
# save_pretrained writes), transformers >= 5 in-memory name (what its state_dict() returns).
_EMBEDDINGS = (
    ("cls_token", COPY, "cls_token", "embeddings.cls_token", None),
    ("dist_token", COPY, "dist_token", "embeddings.distillation_token", None),
    ("pos_embed", COPY, "pos_embed", "embeddings.position_embeddings", None),
    ("patch_embed/kernel", CONV, "patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight", None),
    ("patch_embed/bias", COPY, "patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias", None),
)
_QKV = ("query", "key", "value")
_BLOCK = (  # under block{i} / blocks.{i}. / encoder.layer.{i}. / layers.{i}.
    ("norm1/scale", COPY, "norm1.weight", "layernorm_before.weight", None),
    ("norm1/bias", COPY, "norm1.bias", "layernorm_before.bias", None),
    ("attn/qkv/kernel", LINEAR, "attn.qkv.weight", tuple(f"attention.attention.{n}.weight" for n in _QKV),
     tuple(f"attention.{n}_proj.weight" for n in "qkv")),
    ("attn/qkv/bias", COPY, "attn.qkv.bias", tuple(f"attention.attention.{n}.bias" for n in _QKV),
     tuple(f"attention.{n}_proj.bias" for n in "qkv")),
    ("attn/proj/kernel", LINEAR, "attn.proj.weight", "attention.output.dense.weight", "attention.o_proj.weight"),
    ("attn/proj/bias", COPY, "attn.proj.bias", "attention.output.dense.bias", "attention.o_proj.bias"),
    ("norm2/scale", COPY, "norm2.weight", "layernorm_after.weight", None),
    ("norm2/bias", COPY, "norm2.bias", "layernorm_after.bias", None),
    ("mlp/fc1/kernel", LINEAR, "mlp.fc1.weight", "intermediate.dense.weight", "mlp.fc1.weight"),
    ("mlp/fc1/bias", COPY, "mlp.fc1.bias", "intermediate.dense.bias", "mlp.fc1.bias"),
    ("mlp/fc2/kernel", LINEAR, "mlp.fc2.weight", "output.dense.weight", "mlp.fc2.weight"),
    ("mlp/fc2/bias", COPY, "mlp.fc2.bias", "output.dense.bias", "mlp.fc2.bias"),
)
_FINAL = (
    ("norm/scale", COPY, "norm.weight", "layernorm.weight", None),
    ("norm/bias", COPY, "norm.bias", "layernorm.bias", None),
)
_HEAD = (
    ("head_norm/scale", COPY, "mlp_head.0.weight", "classifier.layernorm.weight", None),
    ("head_norm/bias", COPY, "mlp_head.0.bias", "classifier.layernorm.bias", None),
    ("head/kernel", LINEAR, "mlp_head.1.weight", "classifier.dense.weight", None),
    ("head/bias", COPY, "mlp_head.1.bias", "classifier.dense.bias", None),
)

_HF = "audio_spectrogram_transformer."
# Source format -> (name column, prefix of embeddings and final norm, prefix of block i, prefix of the head or
# None where the format has no AST head, names dropped on purpose: DeiT's ImageNet classifiers).
_FORMATS = {
    "original": (2, "v.", "v.blocks.{i}.", "", ("v.head.weight", "v.head.bias", "v.head_dist.weight",
                                               "v.head_dist.bias")),
    "deit": (2, "", "blocks.{i}.", None, ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")),
    "hf": (3, _HF, _HF + "encoder.layer.{i}.", "", ()),
    "hf-memory": (4, _HF, _HF + "layers.{i}.", "", ()),
}


def name_map(source_format: str, num_layers: int) -> list[tuple[str, str, tuple[str, ...]]]:
    """(Flax path, layout, source tensor names) for every parameter a `source_format` checkpoint provides."""
    column, outer, block, head, _ = _FORMATS[source_format]

    def names(row, prefix):
        name = row[column] if row[column] is not None else row[3]  # in-memory names differ only inside blocks
        return tuple(prefix + n for n in ((name,) if isinstance(name, str) else name))

    rows = [(r[0], r[1], names(r, outer)) for r in _EMBEDDINGS]
    for i in range(num_layers):
        rows += [(f"block{i}/{r[0]}", r[1], names(r, block.format(i=i))) for r in _BLOCK]
    rows += [(r[0], r[1], names(r, outer)) for r in _FINAL]
    if head is not None:
        rows += [(r[0], r[1], names(r, head)) for r in _HEAD]
    return rows


def state_to_params(state: Mapping[str, np.ndarray], source_format: str, config: ASTConfig, where: str, *,
                    model: str | None = None) -> dict:
    """The Flax parameters of `config` from a PyTorch state dict, checking names and shapes exhaustively.

    Parameters the format does not carry (the head, for DeiT) are left out of the result. `model` names what
    `config` came from in the errors ("the model config.json describes").
    """
    expected = traverse_util.flatten_dict(parameter_shapes(config), sep="/")
    rows = name_map(source_format, config.num_layers)
    dropped = set(_FORMATS[source_format][4])
    missing = [n for _, _, names in rows for n in names if n not in state]
    unexpected = sorted(set(state) - {n for _, _, names in rows for n in names} - dropped)
    if missing or unexpected:
        problems = [f"{label} tensors: {_few(names)}" for label, names in (("missing", missing),
                                                                            ("unexpected", unexpected)) if names]
        raise ValueError(f"{where}: {'; '.join(problems)}" + (f" for {model}" if model else ""))
    flat = {}
    for path, layout, names in rows:
        # The PyTorch shape each source tensor must have (fused tensors split evenly along the output axis).
        want = _TO_TORCH[layout](np.broadcast_to(np.float32(0), expected[path].shape)).shape
        want = (want[0] // len(names),) + tuple(want[1:])
        for name in names:
            if state[name].shape != want:
                raise ValueError(f"{where}: tensor {name} has shape {tuple(state[name].shape)}, "
                                 f"{model or 'the model'} expects {want}")
        parts = [state[n] for n in names]
        for name, part in zip(names, parts):
            if not np.isfinite(part).all():
                raise ValueError(f"{where}: tensor {name} holds NaN or infinite values")
        value = _TO_FLAX[layout](np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0])
        flat[path] = np.ascontiguousarray(value, dtype=np.float32)
    return traverse_util.unflatten_dict(flat, sep="/")


def params_to_state(params: Any, num_layers: int, source_format: str = "hf") -> dict[str, np.ndarray]:
    """The PyTorch state dict (float32 numpy) of Flax parameters, in `source_format`'s names."""
    flat = traverse_util.flatten_dict(params, sep="/")
    state = {}
    for path, layout, names in name_map(source_format, num_layers):
        value = _TO_TORCH[layout](np.asarray(flat[path], dtype=np.float32))
        for name, part in zip(names, np.split(value, len(names), axis=0)):
            state[name] = np.ascontiguousarray(part)
    return state


def _few(names: Sequence[str], limit: int = 4) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ----------------------------------------------------------------------------------------------------------------
# Compatibility fixes of the original code, reproduced exactly.
# ----------------------------------------------------------------------------------------------------------------
def adapt_imagenet_kernel(weight: np.ndarray) -> np.ndarray:
    """An RGB patch kernel (D, 3, P, P) as a one-channel kernel (D, 1, P, P).

    Why: AST sees one-channel spectrograms. Summing the three colour filters makes the one-channel filter
    respond to a spectrogram as the ImageNet filter responds to a grey image of the same values.
    """
    return np.asarray(weight).sum(axis=1, keepdims=True)


def adapt_position_table(table: np.ndarray, source_grid: tuple[int, int], target_grid: tuple[int, int]) -> np.ndarray:
    """Move a position table (1, 2 + F*T, D) from an F x T patch grid (frequency rows, time columns) to another.

    Why: a table only covers the geometry it was trained on. The original code reuses it for other input
    lengths, strides and mel-bin counts (ImageNet's 24x24 grid for audio; AudioSet's 12x101 for Speech Commands
    or ESC-50) by, axis by axis and time first, keeping the middle positions where the new axis is not longer
    and resizing bilinearly (half-pixel centres, no antialiasing) where it is. The cls and dist rows are kept.
    """
    table = np.asarray(table)
    (source_f, source_t), (target_f, target_t) = source_grid, target_grid
    if table.shape[:2] != (1, 2 + source_f * source_t):
        raise ValueError(f"position table of shape {table.shape} does not fit a {source_f}x{source_t} grid")
    grid = table[0, 2:].reshape(source_f, source_t, -1)
    grid = _fit_axis(grid, 1, target_t)
    grid = _fit_axis(grid, 0, target_f)
    return np.concatenate([table[:, :2], grid.reshape(1, target_f * target_t, -1).astype(table.dtype)], axis=1)


def _fit_axis(grid: np.ndarray, axis: int, size: int) -> np.ndarray:
    length = grid.shape[axis]
    if size <= length:
        start = length // 2 - size // 2
        return np.take(grid, np.arange(start, start + size), axis=axis)
    resized = np.tensordot(linear_resize_weights(length, size), np.moveaxis(grid, axis, 0), axes=1)
    return np.moveaxis(resized, 0, axis)


def linear_resize_weights(length: int, size: int) -> np.ndarray:
    """(size, length) weights of 1-D linear resizing with half-pixel centres and no antialiasing.

    This is PyTorch's interpolate(mode="bilinear", align_corners=False) along one axis. jax.image.resize
    would antialias when shrinking, hence explicit weights.
    """
    # Rounded as PyTorch rounds them (a float32 scale; source positions computed in one step and stored as
    # float32), so that tables agree exactly: at a hundred positions other roundings move weights by ~1e-5.
    scale = float(np.float32(length) / np.float32(size))
    source = np.maximum(((np.arange(size) + 0.5) * scale - 0.5).astype(np.float32), 0)
    low = np.minimum(np.floor(source).astype(int), length - 1)
    high = np.minimum(low + 1, length - 1)
    fraction = source - low.astype(np.float32)
    weights = np.zeros((size, length), np.float32)
    np.add.at(weights, (np.arange(size), low), 1 - fraction)
    np.add.at(weights, (np.arange(size), high), fraction)
    return weights


# ----------------------------------------------------------------------------------------------------------------
# Reading files.
# ----------------------------------------------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file or a PyTorch pickle (.pth/.pt/.bin), as float32 numpy arrays.

    PyTorch files are read with weights_only=True, which refuses anything but tensors and plain containers.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not a checkpoint")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            state = load_file(str(path))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except Exception as error:  # safetensors raises its own error types for bad headers and short files
            raise ValueError(f"{path}: not a readable safetensors file ({_first_line(error)})") from None
    else:
        state = _read_torch(path)
    return {name: _float32(value, name, path) for name, value in state.items()}


def _read_torch(path: Path) -> Mapping[str, Any]:
    try:
        import torch
    except ImportError:
        raise ValueError(f"{path}: reading PyTorch files needs torch (pip install -c constraints.txt "
                         f"'ast-jax[torch]'), or give a .safetensors file") from None
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    # torch.save writes a zip archive (since PyTorch 1.6) or, before that, a pickle of protocol 2 or higher.
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise ValueError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    if head.startswith(b"PK"):  # torch reads the archive without checking its CRC-32s: a flipped byte would load
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
            damaged = None  # a truncated archive: torch.load below says so
        if damaged is not None:
            raise ValueError(f"{path}: not a PyTorch checkpoint (corrupt: {damaged} fails its checksum)")
    try:
        with warnings.catch_warnings():  # said below in one line if it matters: the load fails at the opcode
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and weights-only refusals all land here
        text = str(error)
        opcode = re.search(r"Unsupported operand (\d+)", text)
        if "GLOBAL" in text:  # weights_only met a reference to a Python callable or class
            message = ("not a PyTorch checkpoint (refused: it refers to Python code or classes, not only tensors; "
                       "nothing was run)")
        elif opcode and 140 <= int(opcode.group(1)) <= 152:  # protocol 4 and 5's opcodes (FRAME, 149, comes first)
            message = (f"pickle protocol 4+ (opcode {opcode.group(1)}), beyond torch's weights-only loader; nothing "
                       f"was run; re-save it with protocol 2")
        elif head.startswith(b"PK"):  # torch's own words here range from zip internals to "[Errno 22]"
            message = "not a PyTorch checkpoint (a truncated or corrupt zip archive)"
        else:
            message = "not a PyTorch checkpoint (a pickle torch.save did not write, or a corrupt one)"
        raise ValueError(f"{path}: {message}") from None
    # timm and many training scripts wrap the state dict: {"model": ...}, {"state_dict": ...}, ...
    while isinstance(state, Mapping) and len(state) and not any(torch.is_tensor(v) for v in state.values()):
        inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    return {name: _torch_to_numpy(value, name, path) if torch.is_tensor(value) else value
            for name, value in state.items()}


def _torch_to_numpy(tensor: Any, name: str, path: Path) -> np.ndarray:
    """A dense tensor as numpy: float16 and bfloat16 (which numpy lacks) widened to float32, other dtypes as they
    are, for _float32 to refuse what is not floating point."""
    try:
        return (tensor.detach().float() if tensor.is_floating_point() else tensor.detach()).numpy()
    except (TypeError, RuntimeError):  # sparse, quantized or meta tensors
        raise ValueError(f"{path}: entry {name!r} is not a dense tensor ({tensor.layout}, {tensor.dtype})") from None


def _float32(value: Any, name: str, path: Path) -> np.ndarray:
    # jnp.issubdtype, unlike numpy's, counts ml_dtypes' bfloat16 (what safetensors gives for BF16) as floating.
    if not isinstance(value, np.ndarray) or not jnp.issubdtype(value.dtype, jnp.floating):
        raise ValueError(f"{path}: entry {name!r} is not a floating-point tensor")
    return value.astype(np.float32, copy=False)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _strip_module_prefix(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop the `module.` prefix torch.nn.DataParallel puts on every name (the released .pth files have it);
    also where only some names carry it (a state dict merged from wrapped and unwrapped models)."""
    stripped = {name.removeprefix("module."): value for name, value in state.items()}
    return stripped if len(stripped) == len(state) else state


def detect_format(state: Mapping[str, np.ndarray], where: str) -> str:
    """Which of the known layouts a state dict is in: original, deit, hf or hf-memory."""
    names = set(state)
    if any(n.startswith(_HF + "layers.") for n in names):
        return "hf-memory"
    if any(n.startswith(_HF) for n in names):
        return "hf"
    if "v.pos_embed" in names or any(n.startswith("mlp_head.") for n in names):
        return "original"
    if "pos_embed" in names and "patch_embed.proj.weight" in names:
        return "deit"
    if not names:
        raise ValueError(f"{where}: holds no tensors")
    raise ValueError(f"{where}: not an AST or DeiT checkpoint (no known tensor names; it has {_few(sorted(names), 3)})")


# ----------------------------------------------------------------------------------------------------------------
# Sources.
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Geometry:
    """The input layout a model expects: mel bins, frames and patch strides."""

    num_mel_bins: int
    max_length: int
    frequency_stride: int
    time_stride: int

    @classmethod
    def of(cls, config: ASTConfig) -> "Geometry":
        return cls(config.num_mel_bins, config.max_length, config.frequency_stride, config.time_stride)

    def override(self, **given: int | None) -> "Geometry":
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})


@dataclasses.dataclass
class Conversion:
    """A converted model and what the conversion did, for the command's summary."""

    model: Pretrained
    source_format: str
    dropped: list[str] = dataclasses.field(default_factory=list)  # source tensors left out on purpose
    notes: list[str] = dataclasses.field(default_factory=list)  # adaptations, in words


def load_pretrained(source: str | os.PathLike, **options: Any) -> Pretrained:
    """A ready model from any supported source (see the module docstring and `convert_source` for options).

        load_pretrained("hf:MIT/ast-finetuned-speech-commands-v2")
        load_pretrained("audioset_10_10_0.4593.pth", labels="class_labels_indices.csv")
        load_pretrained("audioset_10_10_0.4593.pth", max_length=512, num_labels=50)  # ESC-50 fine-tuning start
    """
    known = inspect.signature(convert_source).parameters
    unknown = [name for name in options if name not in known or name == "source"]
    if unknown:
        raise TypeError(f"load_pretrained() got an unexpected keyword argument {unknown[0]!r}; its options are "
                        f"{', '.join(name for name in known if name != 'source')}")
    return convert_source(source, **options).model


def convert_source(source: str | os.PathLike, *, max_length: int | None = None, num_mel_bins: int | None = None,
                   frequency_stride: int | None = None, time_stride: int | None = None,
                   num_labels: int | None = None, labels: Sequence[str] | str | os.PathLike | None = None,
                   dtype: Any = None, seed: int = 0, trained_geometry: bool = False) -> Conversion:
    """Read `source` and, where asked, adapt it to another input geometry or label set.

    max_length, num_mel_bins, frequency_stride, time_stride: the geometry of the model to return. Where it
      differs from the source's, the position table is adapted as the original code does. An original .pth
      does not reveal its frames and strides: it is read as the released geometry with as many patches as its
      position table (its feature statistics and labels with it), and otherwise as the geometry these describe
      (a checkpoint trained on another input: give its own geometry).
    trained_geometry: for an original .pth, the four options above give the input it was trained on, which is
      then taken as it is: needed where that input has as many patches as a released geometry on another grid
      (96 mel bins x 166 frames at stride 10 is 9 x 16 = 144 patches, as Speech Commands' 12 x 12), which the
      tensors cannot tell apart.
    num_labels: a new, freshly initialised head with this many outputs (from parameters seeded by `seed`),
      also where the source's head has as many.
    labels: label names, or the path of a label CSV in the original `index,mid,display_name` format; their
      number must match the head's.
    dtype: compute dtype of the returned model ("float32", "bfloat16" or "float16", or the numpy, JAX or torch
      dtype; parameters stay float32). Without it a converted PyTorch checkpoint computes in float32, even one
      stored in bfloat16, and an ast-jax folder in the dtype of its config.
    """
    dtype = None if dtype is None else dtype_name(dtype)
    hints = dict(num_mel_bins=num_mel_bins, max_length=max_length, frequency_stride=frequency_stride,
                 time_stride=time_stride)
    label_names, label_source = None, "labels"
    if isinstance(labels, (str, os.PathLike)):
        from ast_jax.data.recipe_json import read_label_csv  # the recipes' reader: one rule for label CSVs

        label_names, label_source = read_label_csv(labels)[0], os.fspath(labels)
    elif labels is not None:
        label_names = list(labels)
    text = os.fspath(source)
    if text.startswith("hf:"):
        conversion = _read_hf_folder(_download_hf(text[3:]), where=text)
        conversion.model.source = text
    else:
        path = Path(text)
        if not path.exists():
            # "MIT/ast-finetuned-audioset-10-10-0.4593", as transformers' from_pretrained takes it
            hub_id = (re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text)
                      and not text.lower().endswith((".pth", ".pt", ".bin", ".safetensors", ".json", ".ckpt")))
            raise FileNotFoundError(f"{path}: no such file or folder" + (
                f" (a Hugging Face model? write hf:{text})" if hub_id else ""))
        if path.is_dir() and is_model_dir(path):
            conversion = Conversion(load_model(path), "ast-jax")
        elif path.is_dir() and (_run_models(path) or is_training_run(path)):
            models = _run_models(path)
            raise ValueError(f"{path}: a training run's folder, not a model; " + (
                f"give one of its models: {', '.join(map(str, models))}" if models
                else "it has no model yet (best/ is written at its first validation)"))
        elif not (path / HF_CONFIG).is_file() and (holder := _model_or_run_holding(path)) is not None:
            # (a Hugging Face folder is a model of its own, wherever it lies: export-hf may write one anywhere)
            models = [holder] if is_model_dir(holder) else _run_models(holder)
            raise ValueError(f"{path}: a part of the {'model' if is_model_dir(holder) else 'training run'} folder "
                             f"{holder}, not a model; give " + (f"{', '.join(map(str, models))}" if models
                                                                 else "a model folder"))
        elif path.is_dir():
            conversion = _read_hf_folder(path, where=str(path))
        else:
            conversion = _read_file(path, hints, num_labels, seed, trained_geometry)
    if trained_geometry and conversion.source_format != "original":
        raise ValueError(f"{text}: trained_geometry (--trained-geometry) is for original .pth checkpoints, whose "
                         f"tensors do not record their input; this {conversion.source_format} source records its own")
    conversion = _adapt(conversion, hints, num_labels, label_names, label_source, seed)
    if dtype is not None:
        conversion.model.config = conversion.model.config.replace(dtype=dtype)
    return conversion


def _read_file(path: Path, hints: dict, num_labels: int | None, seed: int, trained_geometry: bool = False
               ) -> Conversion:
    state = _strip_module_prefix(read_state_dict(path))
    source_format = detect_format(state, str(path))
    if source_format.startswith("hf"):
        if not (path.parent / HF_CONFIG).is_file():
            raise ValueError(f"{path}: Hugging Face weights need the {HF_CONFIG} beside them")
        return _read_hf_folder(path.parent, where=str(path), weights=path, state=state)
    if source_format == "deit":
        return _read_deit(path, state, hints, num_labels, seed)
    return _read_original(path, state, hints, trained_geometry)


def _backbone_shape(state: Mapping[str, np.ndarray], prefix: str, where: str) -> dict[str, int]:
    """Width, depth, heads, MLP ratio and patch size of a timm-named backbone, from its tensor shapes."""
    try:
        kernel = state[prefix + "patch_embed.proj.weight"]  # (width, 1 or 3 channels, patch, patch)
        hidden = state[prefix + "blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise ValueError(f"{where}: missing tensors: {error.args[0]}") from None
    if kernel.ndim != 4:
        raise ValueError(f"{where}: tensor {prefix}patch_embed.proj.weight has shape {kernel.shape}, not that of "
                         f"a patch convolution (width, channels, patch, patch)")
    width, patch_size = kernel.shape[0], kernel.shape[-1]
    blocks = prefix + "blocks."
    num_layers = len({n[len(blocks):].split(".")[0] for n in state if n.startswith(blocks)})
    if hidden % width:
        raise ValueError(f"{where}: MLP width {hidden} is not a multiple of the token width {width}")
    # Head count is not visible in the shapes; every DeiT size uses 64-wide heads.
    heads = max(width // 64, 1)
    if width not in {preset["hidden_size"] for preset in MODEL_SIZES.values()}:
        warnings.warn(f"{where}: {width} wide, none of the DeiT sizes the original code builds (192, 384, 768); its "
                      f"attention is taken as {heads} head{'s' * (heads > 1)} of {width // heads}, as theirs are 64 "
                      f"wide (the tensors do not record the head count: a model with other heads converts right only "
                      f"from a Hugging Face folder, whose config.json gives it)")
    return dict(hidden_size=width, num_layers=num_layers, num_heads=heads, mlp_ratio=hidden // width,
                patch_size=patch_size)


def _model_size(width: int, grid: int | None = None) -> str:
    """The DeiT preset of a backbone width (base384 for 768 unless a 14x14 ImageNet grid says base224)."""
    for name, preset in sorted(MODEL_SIZES.items(), key=lambda item: -item[1]["imagenet_grid"]):
        if preset["hidden_size"] == width and grid in (None, preset["imagenet_grid"]):
            return name
    return ASTConfig.model_size


def _grid(geometry: Geometry, patch_size: int) -> tuple[int, int]:
    return ((geometry.num_mel_bins - patch_size) // geometry.frequency_stride + 1,
            (geometry.max_length - patch_size) // geometry.time_stride + 1)


def _patches(geometry: Geometry, patch_size: int) -> int:
    frequency, time = _grid(geometry, patch_size)
    return frequency * time


def _original_geometry(num_patches: int, patch_size: int, hints: dict, where: str, trained: bool = False
                       ) -> tuple[Geometry, str | None]:
    """The input geometry an original checkpoint was trained on, from its position table's length: the released
    geometry with that many patches, else the one the hints describe if it fits; with `trained`, the one the
    hints describe. Also a note when the hints fit as well but with another patch grid (the table is then read as
    the released one and adapted)."""
    hinted = None
    if trained and hints["max_length"] is None:
        raise ValueError(f"{where}: --trained-geometry needs the checkpoint's --max-length (and its --num-mel-bins "
                         f"and strides where they are not 128 and 10)")
    if hints["max_length"] is not None:
        stride = hints["frequency_stride"] or hints["time_stride"] or 10
        hinted = Geometry(hints["num_mel_bins"] or 128, hints["max_length"], hints["frequency_stride"] or stride,
                          hints["time_stride"] or stride)
        if _patches(hinted, patch_size) != num_patches:
            if trained:
                frequency, time = _grid(hinted, patch_size)
                raise ValueError(f"{where}: its position table has {num_patches} patches, but {hinted.num_mel_bins} "
                                 f"mel bins x {hinted.max_length} frames at strides {hinted.frequency_stride}/"
                                 f"{hinted.time_stride} make {frequency} x {time} = {frequency * time}")
            hinted = None
        elif trained:
            return hinted, None
    for known, recipe in KNOWN_GEOMETRIES.items():
        released = Geometry(*known)
        if _patches(released, patch_size) == num_patches:
            note = None
            if hinted is not None and _grid(hinted, patch_size) != _grid(released, patch_size):
                note = (f"its {num_patches}-patch position table was read as the released {recipe} geometry's "
                        f"({released.max_length} frames, strides {released.frequency_stride}/{released.time_stride}"
                        f"); for a checkpoint trained on the requested grid itself, add --trained-geometry")
            return released, note
    if hinted is not None:
        return hinted, None
    raise ValueError(f"{where}: a position table of {num_patches} patches matches no released geometry; give the "
                     f"checkpoint's --max-length, --frequency-stride, --time-stride and --num-mel-bins")


def _read_original(path: Path, state: dict, hints: dict, trained_geometry: bool = False) -> Conversion:
    where = str(path)
    shape = _backbone_shape(state, "v.", where)
    if "mlp_head.1.weight" not in state or "v.pos_embed" not in state:
        raise ValueError(f"{where}: missing tensors: {_few([n for n in ('v.pos_embed', 'mlp_head.1.weight') if n not in state])}")
    table = state["v.pos_embed"]
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[1] < 3:
        raise ValueError(f"{where}: tensor v.pos_embed has shape {table.shape}, not (1, patches + 2, width)")
    geometry, note = _original_geometry(table.shape[1] - 2, shape["patch_size"], hints, where, trained_geometry)
    num_labels = state["mlp_head.1.weight"].shape[0]
    config = ASTConfig(**shape, **dataclasses.asdict(geometry), num_labels=num_labels, layer_norm_eps=1e-6,
                       head_layer_norm_eps=1e-5, model_size=_model_size(shape["hidden_size"]))
    params = state_to_params(state, "original", config, where)
    released = KNOWN_GEOMETRIES.get(dataclasses.astuple(geometry))
    recipe = released or {128: "speech_commands", 512: "esc50"}.get(geometry.max_length, "audioset")
    features = FeatureConfig.for_dataset(recipe, num_mel_bins=geometry.num_mel_bins, target_length=geometry.max_length)
    if released is None:  # the statistics a checkpoint was trained with are not in its tensors either
        warnings.warn(f"{where}: not a released geometry, so its feature statistics are assumed to be the {recipe} "
                      f"recipe's (mean {features.mean:g}, std {features.std:g}); for a model trained on other data, "
                      f"set its own in the output's ast_jax.json (features.mean, features.std)")
    if num_labels == len(LABELS_35) and recipe == "speech_commands":
        labels = list(LABELS_35)  # the released model's order: not alphabetical, fixed by its training
    else:
        labels = default_labels(num_labels)
    model = Pretrained(config, params, features, labels, "sigmoid", source=str(path.absolute()))
    conversion = Conversion(model, "original", dropped=sorted(set(state) & set(_FORMATS["original"][4])))
    conversion.notes.extend([note] if note else [])
    return conversion


def _read_deit(path: Path, state: dict, hints: dict, num_labels: int | None, seed: int) -> Conversion:
    """An AST initialised from ImageNet DeiT weights as the original recipe does, with a fresh head."""
    where = str(path)
    shape = _backbone_shape(state, "", where)
    kernel, table = state["patch_embed.proj.weight"], state["pos_embed"]
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[1] < 3:
        raise ValueError(f"{where}: tensor pos_embed has shape {table.shape}, not (1, patches + 2, width)")
    grid = math.isqrt(table.shape[1] - 2)
    if grid * grid != table.shape[1] - 2:
        raise ValueError(f"{where}: pos_embed of {table.shape[1] - 2} patches is not a square ImageNet grid")
    geometry = Geometry(128, 1024, 10, 10).override(**hints)
    config = ASTConfig(**shape, **dataclasses.asdict(geometry), num_labels=num_labels or ASTConfig.num_labels,
                       layer_norm_eps=1e-6, head_layer_norm_eps=1e-5, model_size=_model_size(shape["hidden_size"], grid))
    adapted = dict(state)
    adapted["patch_embed.proj.weight"] = adapt_imagenet_kernel(kernel)
    adapted["pos_embed"] = adapt_position_table(table, (grid, grid), (config.frequency_patches, config.time_patches))
    params = state_to_params(adapted, "deit", config, where)
    params.update(_fresh_head(config, seed))
    features = FeatureConfig(num_mel_bins=config.num_mel_bins, target_length=config.max_length)
    model = Pretrained(config, params, features, default_labels(config.num_labels), "sigmoid",
                       source=str(path.absolute()))
    notes = [f"ImageNet DeiT: patch kernel summed over RGB, {grid}x{grid} position grid adapted to "
             f"{config.frequency_patches}x{config.time_patches}, new {config.num_labels}-label head"]
    return Conversion(model, "deit", dropped=sorted(set(state) & set(_FORMATS["deit"][4])), notes=notes)


def is_training_run(folder: Path) -> bool:
    """Whether `folder` is a training run's WORKDIR (checkpoints/ and data.json, whatever models it has yet)."""
    return (folder / "checkpoints").is_dir() and (folder / "data.json").is_file()


def _model_or_run_holding(path: Path) -> Path | None:
    """The ast-jax model folder `path` lies in, or the training run whose checkpoints it is or lies in (within
    three levels: a file of a model, a checkpoint's step folder), if any; not a run's other contents, which may
    be a user's models."""
    path = path.absolute()
    for folder in list(path.parents)[:3]:
        if is_model_dir(folder) or (is_training_run(folder) and path.relative_to(folder).parts[0] == "checkpoints"):
            return folder
    return None


def _run_models(folder: Path) -> list[Path]:
    """The model folders in a training run's WORKDIR (`model` is the link to the best), if `folder` is one."""
    return [folder / name for name in ("model", "best", "final", "averaged") if is_model_dir(folder / name)]


def _read_hf_folder(folder: Path, *, where: str, weights: Path | None = None, state: dict | None = None) -> Conversion:
    config_path = folder / HF_CONFIG
    if not config_path.is_file():
        raise ValueError(f"{folder}: neither an ast-jax model folder nor a Hugging Face one (no {HF_CONFIG})")
    hf = read_json(config_path)
    config = config_from_hf(hf, str(config_path))
    if state is None:
        weights, state = _read_hf_weights(folder)
    head = next((value for key, value in state.items() if key.endswith("classifier.dense.weight")), None)
    if head is not None and len(head.shape) == 2 and head.shape[0] != config.num_labels:
        said = ("id2label names" if hf.get("id2label") else "num_labels says" if "num_labels" in hf
                else "has no id2label or num_labels, so transformers' default of")
        raise ValueError(f"{config_path}: {said} {config.num_labels} labels, but the head in {weights} has "
                         f"{head.shape[0]} outputs")
    params = state_to_params(state, detect_format(state, str(weights)), config, str(weights),
                             model=f"the model {config_path} describes")
    preprocessor = folder / HF_PREPROCESSOR
    if preprocessor.is_file():
        values = read_json(preprocessor)
        try:
            if not isinstance(values, Mapping):
                raise ValueError("not a feature extractor config (a JSON object expected)")
            features = FeatureConfig.from_hf_preprocessor_config(values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{preprocessor}: {error}") from None
    else:
        features = FeatureConfig(num_mel_bins=config.num_mel_bins, target_length=config.max_length)
        warnings.warn(f"{folder}: no {HF_PREPROCESSOR}; the features use ASTFeatureExtractor's defaults (AudioSet's "
                      f"mean {features.mean} and std {features.std}), which are wrong for a model trained on other "
                      f"data: put the model's {HF_PREPROCESSOR} beside its config.json", stacklevel=2)
    id2label = hf.get("id2label") or {}
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(config.num_labels)]
    # transformers records single- or multi-label training in problem_type (its pipeline scores with softmax
    # or sigmoid accordingly); the released AST checkpoints leave it unset and were trained with BCE (sigmoid).
    activation = "softmax" if hf.get("problem_type") == "single_label_classification" else "sigmoid"
    try:
        model = Pretrained(config, params, features, labels, activation, source=str(folder.absolute()))
    except ValueError as error:
        raise ValueError(f"{folder}: {error}") from None
    return Conversion(model, "hf")


def _read_hf_weights(folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """`(path named in messages, state dict)` of a Hugging Face folder: one weights file, or the shards that its
    `*.index.json` lists (what save_pretrained writes for large models)."""
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return folder / name, _strip_module_prefix(read_state_dict(folder / name))
    for name in HF_WEIGHTS:
        index = folder / (name + HF_INDEX)
        if index.is_file():
            weight_map = read_json(index)
            weight_map = weight_map.get("weight_map") if isinstance(weight_map, Mapping) else None
            if not isinstance(weight_map, Mapping) or not weight_map:
                raise ValueError(f"{index}: not a checkpoint index (no weight_map)")
            state = {}
            for shard in sorted(set(map(str, weight_map.values()))):
                if Path(shard).name != shard:
                    raise ValueError(f"{index}: shard {shard!r} is not a file name in the folder")
                if not (folder / shard).is_file():
                    raise ValueError(f"{index}: shard {shard} is missing")
                state.update(read_state_dict(folder / shard))
            missing = sorted(set(weight_map) - set(state))
            if missing:
                raise ValueError(f"{index}: tensors listed but not in their shards: {_few(missing)}")
            return index, _strip_module_prefix(state)
    raise ValueError(f"{folder}: no weights ({' or '.join(HF_WEIGHTS)}, or a sharded {HF_WEIGHTS[0] + HF_INDEX})")


def config_from_hf(hf: Mapping[str, Any], where: str) -> ASTConfig:
    """An ASTConfig from a transformers config.json (missing keys take transformers' defaults)."""
    if not isinstance(hf, Mapping):
        raise ValueError(f"{where}: not a transformers config (a JSON object expected)")
    if hf.get("model_type", "audio-spectrogram-transformer") != "audio-spectrogram-transformer":
        raise ValueError(f"{where}: model_type is {hf.get('model_type')!r}, not audio-spectrogram-transformer")
    if hf.get("hidden_act", "gelu") != "gelu" or not hf.get("qkv_bias", True):
        raise ValueError(f"{where}: only the released AST variant (exact GELU, qkv bias) is supported")

    def number(key: str, default: int | float, kind: type = int) -> Any:
        value = hf.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
            raise ValueError(f"{where}: {key} must be a positive {'number' if kind is float else 'integer'}, "
                             f"got {value!r}")
        return kind(value)

    width, hidden = number("hidden_size", 768), number("intermediate_size", 3072)
    if hidden % width:
        raise ValueError(f"{where}: intermediate_size {hidden} is not a multiple of hidden_size {width}")
    eps = number("layer_norm_eps", 1e-12, float)
    id2label = hf.get("id2label")
    if id2label is not None and not isinstance(id2label, Mapping):
        raise ValueError(f"{where}: id2label must map indices to names, got {type(id2label).__name__}")
    if id2label:  # transformers takes len(id2label) as the label count: its keys must be exactly 0..n-1
        if set(map(str, id2label)) != {str(i) for i in range(len(id2label))}:
            raise ValueError(f"{where}: id2label keys must run 0..{len(id2label) - 1}; it has "
                             f"{', '.join(map(str, id2label))}")
    num_labels = len(id2label) if id2label else number("num_labels", 2)
    try:
        return ASTConfig(hidden_size=width, num_layers=number("num_hidden_layers", 12),
                         num_heads=number("num_attention_heads", 12), mlp_ratio=hidden // width,
                         patch_size=number("patch_size", 16), frequency_stride=number("frequency_stride", 10),
                         time_stride=number("time_stride", 10), num_mel_bins=number("num_mel_bins", 128),
                         max_length=number("max_length", 1024), num_labels=num_labels, layer_norm_eps=eps,
                         head_layer_norm_eps=eps, model_size=_model_size(width))
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _download_hf(repo_id: str) -> Path:
    """The files of a hub repository that conversion needs, safetensors preferred, in the local HF cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"hf:{repo_id}: downloading needs huggingface_hub (pip install huggingface-hub)") from None
    def files_of(weights: str) -> list[str]:  # the single file, or the index and shards (model-00001-of-00002...)
        stem, suffix = weights.rsplit(".", 1)
        return [HF_CONFIG, HF_PREPROCESSOR, weights, weights + HF_INDEX, f"{stem}-*-of-*.{suffix}"]

    def has_weights(folder: Path, weights: str) -> bool:
        return (folder / weights).is_file() or (folder / (weights + HF_INDEX)).is_file()

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=files_of(HF_WEIGHTS[0])))
        if not has_weights(folder, HF_WEIGHTS[0]):
            folder = Path(snapshot_download(repo_id, allow_patterns=files_of(HF_WEIGHTS[1])))
    except Exception as error:  # offline, unknown repo, gated repo: huggingface_hub has many error types
        from huggingface_hub.errors import LocalEntryNotFoundError

        if isinstance(error, LocalEntryNotFoundError):  # its text starts "Got: <cause>" then a paragraph
            cause = error.__cause__
            why = ("HF_HUB_OFFLINE is set" if type(cause).__name__ == "OfflineModeIsEnabled"
                   else f"{type(cause).__name__}: {_first_line(cause)}" if cause else "")
            raise ValueError(f"hf:{repo_id}: cannot download: the hub cannot be reached" + (f" ({why})" if why else "")
                             + " and the model is not in the local Hugging Face cache; give a downloaded folder "
                             "or .pth instead") from None
        raise ValueError(f"hf:{repo_id}: cannot download ({_first_line(error)})") from None
    return folder


def _fresh_head(config: ASTConfig, seed: int) -> dict:
    """A newly initialised head, as the original code builds one for a new label set: `nn.Sequential(nn.LayerNorm,
    nn.Linear)` at PyTorch's defaults, so the LayerNorm at scale 1 and bias 0, and the Linear's weight and bias
    uniform in +-1/sqrt(width) (its default init, kaiming_uniform with a = sqrt(5)). Flax's default Dense
    init (lecun_normal weights, zero bias) would start the head 1.7 times larger, which matters at the fine-tuning
    recipes' small learning rates."""
    width, dtype = config.hidden_size, config.parameter_dtype
    bound = 1.0 / np.sqrt(width)
    kernel_key, bias_key = jax.random.split(jax.random.PRNGKey(seed))
    uniform = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)  # noqa: E731
    return {"head_norm": {"scale": jnp.ones((width,), dtype), "bias": jnp.zeros((width,), dtype)},
            "head": {"kernel": uniform(kernel_key, (width, config.num_labels)),
                     "bias": uniform(bias_key, (config.num_labels,))}}


def _adapt(conversion: Conversion, hints: dict, num_labels: int | None, labels: list[str] | None,
           label_source: str, seed: int) -> Conversion:
    """Move a converted model to the requested geometry and label set (AudioSet -> Speech Commands, ESC-50...)."""
    model = conversion.model
    config, params, features = model.config, dict(model.params), model.features
    source, target = Geometry.of(config), Geometry.of(config).override(**hints)
    if target != source:
        config = config.replace(**dataclasses.asdict(target))
        source_grid = (model.config.frequency_patches, model.config.time_patches)
        target_grid = (config.frequency_patches, config.time_patches)
        params["pos_embed"] = adapt_position_table(np.asarray(params["pos_embed"]), source_grid, target_grid)
        features = features.replace(num_mel_bins=target.num_mel_bins, target_length=target.max_length)
        if target_grid != source_grid:
            conversion.notes.append(f"position table adapted from a {source_grid[0]}x{source_grid[1]} to a "
                                    f"{target_grid[0]}x{target_grid[1]} patch grid")
    new_labels = model.labels
    if num_labels is not None and conversion.source_format != "deit":  # a DeiT source was given its head above
        config = config.replace(num_labels=num_labels)
        params.update(_fresh_head(config, seed))
        new_labels = default_labels(num_labels)
        conversion.notes.append(f"new {num_labels}-label head (the source's {model.config.num_labels}-label head dropped)")
    if labels is not None:
        if len(labels) != config.num_labels:
            raise ValueError(f"{label_source}: {len(labels)} labels for a head with {config.num_labels} outputs "
                             f"(ask for a new head with num_labels / --num-labels)")
        new_labels = labels
    conversion.model = Pretrained(config, params, features, list(new_labels), model.activation, model.source)
    return conversion


# ----------------------------------------------------------------------------------------------------------------
# Export to Hugging Face transformers.
# ----------------------------------------------------------------------------------------------------------------
def hf_config(model: Pretrained) -> dict[str, Any]:
    """The transformers ASTConfig (config.json) of a model; its one LayerNorm eps is the backbone's."""
    cfg = model.config
    return {
        "architectures": ["ASTForAudioClassification"],
        "model_type": "audio-spectrogram-transformer",
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_ratio * cfg.hidden_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.layer_norm_eps,
        "patch_size": cfg.patch_size,
        "qkv_bias": True,
        "frequency_stride": cfg.frequency_stride,
        "time_stride": cfg.time_stride,
        "max_length": cfg.max_length,
        "num_mel_bins": cfg.num_mel_bins,
        "id2label": {str(i): name for i, name in enumerate(model.labels)},
        "label2id": {name: i for i, name in enumerate(model.labels)},
        # How the head was trained, so that transformers' pipeline (and ast-jax reading the folder back) scores
        # with the same function: sigmoid for multi-label (BCE), softmax for single-label (cross-entropy).
        "problem_type": "multi_label_classification" if model.activation == "sigmoid"
        else "single_label_classification",
    }


def export_hf(model: Pretrained | str | os.PathLike, output_dir: str | os.PathLike, *,
              overwrite: bool = False) -> Path:
    """Write a folder that transformers' ASTForAudioClassification and ASTFeatureExtractor load.

    transformers has one LayerNorm eps for the whole model. A model with a different head eps (the original
    checkpoints: 1e-6 backbone, 1e-5 head) is exported with the backbone's, which changes its logits slightly;
    a warning says so.
    """
    from safetensors.numpy import save_file

    check_apart(output_dir, model)
    check_output_folder(output_dir, overwrite=overwrite)  # before the warnings below: nothing to warn of then
    if not isinstance(model, Pretrained):
        model = load_pretrained(model)
    cfg = model.config
    if cfg.head_layer_norm_eps != cfg.layer_norm_eps:
        warnings.warn(f"transformers uses one LayerNorm eps: the head's {cfg.head_layer_norm_eps:g} becomes the "
                      f"backbone's {cfg.layer_norm_eps:g}, so exported logits differ slightly from this model's",
                      stacklevel=2)
    lacking = model.features.settings_hf_lacks()
    if lacking:
        warnings.warn(f"transformers' ASTFeatureExtractor has no option for {', '.join(lacking)}: it computes "
                      f"features with the defaults, so its inputs and logits differ from this model's", stacklevel=2)
    if model.features.sample_rate != FeatureConfig().sample_rate:
        warnings.warn(f"transformers' ASTFeatureExtractor computes features at {model.features.sample_rate} Hz as "
                      f"this model does only where torchaudio is installed; without it, it frames every rate with "
                      f"16 kHz's 400 and 160 samples, and its inputs and logits differ from this model's",
                      stacklevel=2)
    state = params_to_state(model.params, cfg.num_layers, "hf")
    check_free_space(output_dir, sum(value.nbytes for value in state.values()) + (1 << 20))
    with staged_directory(output_dir, overwrite=overwrite) as staging:
        weights = staging / HF_WEIGHTS[0]
        try:
            save_file(state, str(weights), metadata={"format": "pt"})
        except Exception as error:  # safetensors' SafetensorError: a full disk, an I/O error
            raise OSError(f"{output_dir}: cannot be written ({error})") from None
        os.chmod(weights, 0o666 & ~UMASK)  # safetensors makes it private; the folder's other files are not
        (staging / HF_CONFIG).write_text(json.dumps(hf_config(model), indent=2) + "\n")
        (staging / HF_PREPROCESSOR).write_text(
            json.dumps(model.features.to_hf_preprocessor_config(), indent=2) + "\n")
    return Path(output_dir).absolute()
