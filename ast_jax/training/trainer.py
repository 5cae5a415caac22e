"""Train and evaluate an AST from a config: one `train_and_evaluate(config, workdir)` in banner sections.

input (with the mesh) -> shardings -> model -> shard -> update step -> checkpoint -> evals -> loop, as in
big_vision's train.py.
The same code runs on one CPU, on every device of a host and on many hosts (`jax.distributed`): each process
reads its own slice of every global batch and `jax.jit` with NamedShardings does the rest.

The workdir holds
  config.json        the resolved config
  data.json          the count of training clips, their fingerprint and the labels: resuming on other data is
                     refused
  model_config.json  the model as the run began (a resume rebuilds it from this, not from init.source)
  checkpoints/       Orbax checkpoints (train state + metadata); a run started again here with the same config
                     resumes from the latest (SIGTERM or Ctrl-C write one after the current step, then stop)
  metrics.jsonl      one JSON object per log or evaluation ({"step", "split", "loss", ...})
  tensorboard/       the same metrics for TensorBoard
  best/, final/      ast-jax model folders (usable by `ast-jax predict --model`); averaged/ with weight averaging
  model              a link to best/: the model a finished run delivers
  results.json       the end-of-run table
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ast_jax import features as features_lib
from ast_jax._atomic import check_free_space, file_in_the_way, write_text_atomically
from ast_jax.augment import train_inputs
from ast_jax.data import DataSource, build_source, prefetch
from ast_jax.model import AST, ASTConfig
from ast_jax.pretrained import from_params, load_model, save_model
from ast_jax.training import sharding
from ast_jax.training.checkpoint import Checkpoints, abstract_with_shardings, complete_steps
from ast_jax.training.config_io import add_source_fields, config_values, expand_user_paths, save_config
from ast_jax.training.losses import LOSSES, masked_mean, per_example_loss
from ast_jax.training.metrics import classification_metrics, json_ready
from ast_jax.training.optim import make_optimizer

BEST_METRICS = ("accuracy", "mAP", "mAUC")


def default_config() -> ml_collections.ConfigDict:
    """Every field a training config has, with the Speech Commands recipe's values; configs/ start from here."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_epochs = 30
    c.batch_size = 128  # global batch, split over all devices of all processes
    c.eval_batch_size = 256  # the original evaluated with twice the training batch
    c.loss = "bce"  # "bce" (multi-hot or mixup targets) or "ce"
    c.best_metric = "accuracy"  # validation metric that picks the best model: accuracy, mAP or mAUC
    c.eval_every_steps = 0  # 0: validate at the end of every epoch
    c.log_every_steps = 50
    c.progress_bar = True
    c.validation_split = "validation"
    c.test_split = "test"  # "" to skip the final test evaluation

    c.model = ml_collections.ConfigDict(dict(
        model_size="base384",  # DeiT preset: tiny224, small224, base224, base384
        num_layers=12,
        frequency_stride=10,
        time_stride=10,
        dtype="float32",  # compute dtype; "bfloat16" keeps float32 parameters, LayerNorm statistics and losses
        param_dtype="float32",
    ))
    c.features = ml_collections.ConfigDict(dict(  # FeatureConfig fields
        num_mel_bins=128,
        target_length=128,
        mean=features_lib.DATASET_STATS["speech_commands"][0],
        std=features_lib.DATASET_STATS["speech_commands"][1],
    ))
    c.data = ml_collections.ConfigDict(dict(
        source="speech_commands",
        data_dir="",
        num_classes=35,
        clip_seconds=1.0,
        sample_rate=16000,
        balanced=False,  # sample with replacement by the source's example weights (AudioSet recipe)
        cache_dir="",  # file sources' prepared copies ("": ~/.cache/ast_jax/prepared)
        prepared=True,  # False: decode files for every batch
    ))
    c.augment = ml_collections.ConfigDict(dict(  # see ast_jax.augment.train_inputs
        mixup=0.5, mixup_alpha=10.0, freqm=48, timem=48, noise=True, roll=10))
    c.optim = ml_collections.ConfigDict(dict(
        learning_rate=2.5e-4,
        weight_decay=5e-7,  # coupled L2, as PyTorch Adam(weight_decay=...)
        decoupled_weight_decay=False,  # True: AdamW's decay (torch.optim.AdamW), for training from scratch
        b1=0.95, b2=0.999, eps=1e-8,
        lr_decay_start=5,  # first MultiStepLR milestone (epochs): epoch start + 1 is the first decayed one
        lr_decay_every=1,  # epochs between milestones
        lr_decay_rate=0.85,
        warmup_steps=0,  # AudioSet: 1000
        warmup_update_every=50,
        lr_schedule="multistep",  # "multistep" (the staircase above) or "cosine" to min_lr_ratio after warmup
        min_lr_ratio=0.0,
    ))
    c.init = ml_collections.ConfigDict(dict(
        source="",  # "" for a random init, or anything ast_jax.load_pretrained reads (ImageNet DeiT, AudioSet, folder)
        keep_head=False,  # keep the source's classifier (its labels must be the data set's)
    ))
    c.weight_averaging = ml_collections.ConfigDict(dict(start_epoch=0, end_epoch=0))  # 1-based, inclusive; 0: off
    c.mesh = ml_collections.ConfigDict(dict(fsdp=1))  # devices on the parameter-sharding axis (-1: all)
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, max_to_keep=3, asynchronous=True))
    return c


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient: training stops, the last good checkpoint stays."""


class Preempted(Exception):
    """SIGTERM or Ctrl-C arrived: a checkpoint was written and the run can be resumed."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code  # 143 for SIGTERM, 130 for Ctrl-C, as if the signal had ended the program


# Fields a resumed run may change: how it reports, validates and checkpoints, where the data lives (a folder, a
# CSV, or the json source's manifests and label CSV; `check_same_data` still asks for the same clips and labels),
# how the parameters are laid out over the devices (mesh; checkpoints restore onto any layout), and (with the step
# schedule, which does not depend on it) how long it trains. Any other change would make the saved
# state belong to a different run.
RESUMABLE_CHANGES = ("progress_bar", "log_every_steps", "eval_every_steps", "eval_batch_size", "test_split",
                     "checkpoint.", "data.data_dir", "data.cache_dir", "data.prepared", "data.json.",
                     "data.label_csv", "num_epochs", "mesh.")


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = list(value) if isinstance(value, tuple) else value
    return flat


def _checkpoint_steps(workdir: Path) -> list[int]:
    return complete_steps(workdir / "checkpoints")


def check_resumable(config, workdir: Path) -> None:
    """Refuse to resume a workdir's checkpoints under a config that trains differently from the one saved there,
    and a workdir that is something else: data or models (a mistyped path), or a folder with another config.json.
    A run writes its config.json before anything else, so a folder without one may hold only what a user puts in
    a new run's folder first (a log file: `| tee WORKDIR/train.log`, a scheduler's output)."""
    saved_path = workdir / "config.json"
    steps = _checkpoint_steps(workdir)
    if not saved_path.is_file():
        if steps:
            raise ValueError(f"{workdir}: holds checkpoints but no config.json, so the config they were trained with "
                             f"cannot be checked against this one; put the run's config.json back, or give a new "
                             f"--workdir")
        if (found := _not_a_run(workdir)) is not None:
            raise ValueError(f"{workdir}: not an ast-jax run, and it holds {found}; give a new --workdir (a run's "
                             f"folder may start with log files in it, no other folders or audio)")
        return
    try:
        written = json.loads(saved_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{saved_path}: cannot read the config of the run to resume ({error})") from None
    if not (isinstance(written, dict) and {"data", "optim", "num_epochs"} <= written.keys()):
        raise ValueError(f"{workdir}: its config.json is not an ast-jax run's (another program's folder?); give a new "
                         f"--workdir")
    if not steps:
        return
    try:
        # Fields of the source that a config leaves out count as their defaults, as `ast-jax train` fills them.
        saved = _flat(config_values(add_source_fields(ml_collections.ConfigDict(written))))
    except (ValueError, AttributeError, TypeError) as error:
        raise ValueError(f"{saved_path}: cannot read the config of the run to resume ({error})") from None
    current = _flat(config_values(add_source_fields(config.copy_and_resolve_references())))
    fixed = lambda name: not any(name == c or (c.endswith(".") and name.startswith(c)) for c in RESUMABLE_CHANGES)
    changed = [name for name in sorted(set(saved) | set(current))
               if fixed(name) and saved.get(name, "<unset>") != current.get(name, "<unset>")]
    if config.optim.lr_schedule != "multistep" and saved.get("num_epochs") != current.get("num_epochs"):
        changed.append("num_epochs")
    if changed:
        spans = " (the cosine schedule spans the whole run)" if config.optim.lr_schedule != "multistep" else ""
        shown = "; ".join(f"{name}: {saved.get(name, '<unset>')!r} -> {current.get(name, '<unset>')!r}"
                          + (spans if name == "num_epochs" else "") for name in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ValueError(f"{workdir}: holds checkpoints of a run with another config ({shown}{more}); resume it "
                         f"with --config {saved_path}, or give a new --workdir")


# With several processes, the steps between their polls of a stop request (see stop_requested in
# _train_and_evaluate): a stop waits at most this many steps more.
STOP_POLL_STEPS = 10

DATA_FACTS = "data.json"  # in the workdir: what a run's checkpoints were trained on, checked when it resumes
MODEL_CONFIG = "model_config.json"  # in the workdir: the model as the run began, init.source's settings included

# Names a new run's folder may hold before its config.json: anything hidden, and what file systems and desktops
# put in folders.
_NOT_DATA = ("lost+found", "Thumbs.db", "desktop.ini")
_RUN_FILES = (DATA_FACTS, MODEL_CONFIG, "metrics.jsonl", "results.json", "model")


def _not_a_run(workdir: Path) -> str | None:
    """What in a workdir without config.json shows it is not a new run's folder (a folder, an audio file, or a
    file of a name the run writes), described; None if nothing does."""
    from ast_jax.data.files import AUDIO_EXTENSIONS

    if not workdir.is_dir():
        return None
    for path in sorted(workdir.iterdir()):
        if path.name.startswith(".") or path.name in _NOT_DATA:
            continue
        if path.is_dir():
            return f"a folder, {path.name}/"
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            return f"audio, {path.name}"
        if path.name in _RUN_FILES:  # another program's file of a name the run would overwrite
            return f"{path.name}, which a run writes"
    return None


def started_model_config(workdir: Path) -> ASTConfig | None:
    """The model config a run with checkpoints began with, so that a resume need not read init.source again
    (its weights are in the checkpoints; the file may have moved or gone). None for a new run, or a run from
    before the file was kept."""
    path = workdir / MODEL_CONFIG
    if not _checkpoint_steps(workdir) or not path.is_file():
        return None
    try:
        return ASTConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: cannot read the model the run began with ({error})") from None


def check_same_data(workdir: Path, facts: dict[str, Any], total_steps: int, data_name: str) -> None:
    """Refuse to resume checkpoints trained on other data (data.data_dir may move, but must hold the same
    training clips and labels: another count re-cuts the epochs and the schedule, other labels mean another
    head), or for fewer steps than they have run already."""
    steps = _checkpoint_steps(workdir)
    if not steps:
        return
    try:
        saved = json.loads((workdir / DATA_FACTS).read_text())
        if not isinstance(saved, dict) or not isinstance(saved.get("labels"), list):
            raise ValueError("not an object with the labels and the count of training clips")
    except FileNotFoundError:
        saved = facts  # a run from before the data was recorded
    except (OSError, ValueError) as error:
        raise ValueError(f"{workdir / DATA_FACTS}: cannot read what the run was trained on ({error})") from None
    differences = []
    if saved.get("train_examples") != facts["train_examples"]:
        differences.append(f"{saved.get('train_examples')} training clips, now {facts['train_examples']}")
    if saved.get("labels") != facts["labels"]:
        old, new = saved.get("labels") or [], facts["labels"]
        differences.append(f"labels {old[:3]}... ({len(old)}), now {new[:3]}... ({len(new)})"
                           if len(old) != len(new) or set(old) != set(new) else "the labels in another order")
    if not differences and None not in (saved.get("train_fingerprint"), facts.get("train_fingerprint")) \
            and saved["train_fingerprint"] != facts["train_fingerprint"]:  # (runs before it was recorded lack it)
        differences.append("as many training clips and the same labels, but other clips or targets")
    if differences:
        raise ValueError(f"{workdir}: its checkpoints were trained on other data than {data_name} has "
                         f"({'; '.join(differences)}); resume with the same data, or give a new --workdir")
    if steps[-1] > total_steps:  # (after the data: fewer clips also mean fewer steps)
        raise ValueError(f"{workdir}: its latest checkpoint is at step {steps[-1]}, past the {total_steps} steps "
                         f"that num_epochs asks for now; ask for as many epochs as before or more, or give a new "
                         f"--workdir")


def check_room_for_checkpoints(config, model_config: ASTConfig, workdir: Path) -> None:
    """Refuse, in one line, a new run whose workdir's file system cannot hold what it will write: its
    checkpoints at their peak (max_to_keep of them and the one being written, each the parameters, Adam's two
    moments and, with weight averaging, the running sum) and the best and final model folders. A disk that
    fills half way through a save gives pages of Orbax's tracebacks instead."""
    from ast_jax.model import parameter_shapes

    parameter_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(
        parameter_shapes(model_config)))
    state_bytes = parameter_bytes * (4 if config.weight_averaging.start_epoch else 3)
    needed = state_bytes * (config.checkpoint.max_to_keep + 1) + 2 * parameter_bytes
    check_free_space(workdir, needed, f"{config.checkpoint.max_to_keep + 1} checkpoints of {state_bytes / 1e6:.1f} "
                                      f"MB at most, and the best and final models (checkpoint.max_to_keep lowers it)")


def model_config_from(config, num_labels: int) -> ASTConfig:
    m = config.model
    return ASTConfig.from_size(
        m.model_size, num_layers=m.num_layers, frequency_stride=m.frequency_stride, time_stride=m.time_stride,
        num_mel_bins=config.features.num_mel_bins, max_length=config.features.target_length,
        num_labels=num_labels, dtype=m.dtype, param_dtype=m.param_dtype)


def feature_config_from(config) -> features_lib.FeatureConfig:
    return features_lib.FeatureConfig(sample_rate=config.data.sample_rate, **config.features.to_dict())


def check_fields(config) -> None:
    """Fields training has no use for (a typo in a config file, `c.batchsize = 16`, which would otherwise train at
    the default batch; a data field its source does not read) and groups set to plain values, as one ValueError."""
    from ast_jax.data import SOURCE_FIELDS
    from ast_jax.training.config_io import OPEN_GROUPS

    def problems(node, reference, prefix: str = ""):
        for key in node.keys():
            name = prefix + key
            if name in OPEN_GROUPS:
                continue
            if name == "data" and isinstance(node[key], ml_collections.ConfigDict):
                source = node[key].get("source")
                known = sorted(set(reference[key]) | set(SOURCE_FIELDS.get(source, {})))
                yield from (f"data.{field} is not a field of the {source} source (its fields: {', '.join(known)})"
                            for field in sorted(set(node[key]) - set(known)))
                continue
            if key not in reference:
                known = ", ".join(sorted(reference.keys()))
                yield f"unknown config field {name!r} (fields of {prefix[:-1] or 'the config'}: {known})"
            elif isinstance(reference[key], ml_collections.ConfigDict):
                if isinstance(node[key], ml_collections.ConfigDict):
                    yield from problems(node[key], reference[key], name + ".")
                else:
                    yield f"config field {name!r} is a group ({', '.join(sorted(reference[key].keys()))}), not a value"

    found = list(problems(config, default_config()))
    if found:
        raise ValueError("; ".join(found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else ""))


# (field, lowest allowed, whether the lowest is allowed itself) for the numbers of a training config.
_NUMBER_RANGES = (
    ("seed", 0, True), ("optim.b1", 0, True), ("optim.b2", 0, True), ("optim.eps", 0, False),
    ("num_epochs", 1, True), ("batch_size", 1, True), ("eval_batch_size", 1, True), ("log_every_steps", 1, True),
    ("eval_every_steps", 0, True), ("checkpoint.every_steps", 1, True), ("checkpoint.max_to_keep", 1, True),
    ("data.clip_seconds", 0, False), ("data.sample_rate", 1, True), ("features.std", 0, False),
    ("features.num_mel_bins", 1, True), ("features.target_length", 1, True), ("optim.learning_rate", 0, False),
    ("optim.weight_decay", 0, True), ("optim.lr_decay_rate", 0, False), ("optim.lr_decay_every", 1, True),
    ("optim.warmup_steps", 0, True), ("optim.warmup_update_every", 1, True), ("optim.min_lr_ratio", 0, True),
    ("augment.mixup", 0, True), ("augment.mixup_alpha", 0, False), ("augment.freqm", 0, True),
    ("augment.timem", 0, True), ("augment.roll", 0, True), ("model.num_layers", 1, True),
    ("model.frequency_stride", 1, True), ("model.time_stride", 1, True),
    ("data.validation_fraction", 0, True), ("data.test_fraction", 0, True),  # folder and manifest sources
)
_AT_MOST_ONE = ("augment.mixup", "optim.lr_decay_rate", "optim.min_lr_ratio", "data.validation_fraction",
                "data.test_fraction")
_BELOW_ONE = ("optim.b1", "optim.b2")  # Adam's moment decays
_MISSING = object()


def _field(config, dotted: str, missing=None):
    """The value of `a.b.c` in a ConfigDict, or `missing` where the config has no such field."""
    for key in dotted.split("."):
        if not isinstance(config, ml_collections.ConfigDict) or key not in config:
            return missing
        config = config[key]
    return config


def check_numbers(config) -> None:
    """Counts, sizes and rates out of range, as one ValueError, before any data is read."""
    problems = []
    for name, lowest, inclusive in _NUMBER_RANGES:
        value = _field(config, name, _MISSING)
        if value is _MISSING:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"{name} must be a number, got {value!r}")
        elif value < lowest or (value == lowest and not inclusive):
            problems.append(f"{name} must be {'at least' if inclusive else 'above'} {lowest}, got {value}")
        elif name in _AT_MOST_ONE and value > 1:
            problems.append(f"{name} must be at most 1, got {value}")
        elif name in _BELOW_ONE and value >= 1:
            problems.append(f"{name} must be below 1, got {value}")
        elif name == "seed" and value >= 2 ** 63:  # jax.random.key takes a 64-bit signed integer
            problems.append(f"seed must be below 2**63, got {value}")
    if not problems:
        frame_seconds = feature_config_from(config).frame_length_ms / 1000
        if config.data.clip_seconds < frame_seconds:
            problems.append(f"data.clip_seconds must be at least one {frame_seconds * 1000:g} ms analysis frame, "
                            f"got {config.data.clip_seconds:g}")
        warmup = config.optim
        if warmup.warmup_steps and warmup.warmup_update_every > warmup.warmup_steps:
            problems.append(f"optim.warmup_update_every ({warmup.warmup_update_every}) is beyond "
                            f"optim.warmup_steps ({warmup.warmup_steps}): the warmup would stay at 0")
    held_out = [_field(config, f"data.{name}_fraction") for name in ("validation", "test")]
    if all(isinstance(f, (int, float)) for f in held_out) and sum(held_out) >= 1:
        problems.append(f"data.validation_fraction and data.test_fraction add up to {sum(held_out):g}, "
                        f"leaving nothing to train on")
    if problems:
        raise ValueError("bad config: " + "; ".join(problems))


def check_device_counts() -> None:
    """One line on every process unless all have the same number of devices: the batch and the mesh are laid
    out as processes x local devices (numpy's reshape error, or a batch-size message, would say otherwise)."""
    local, total, processes = jax.local_device_count(), jax.device_count(), jax.process_count()
    if local * processes != total:
        raise ValueError(f"process {jax.process_index()} has {local} of the {total} devices of the {processes} "
                         f"processes; every process needs the same number of devices")


def check_processes_agree(config, workdir: Path, source: DataSource, data_facts: dict[str, Any]) -> None:
    """With several processes: the same config on every one (else each would train a different run, silently or
    until a collective fails), the same data in every split (`check_same_data_everywhere`), and one workdir that all
    of them see (Orbax writes each checkpoint into it together; separate folders make it wait forever). One line
    on every process, before anything is written."""
    if jax.process_count() == 1:
        return
    import zlib

    from jax.experimental import multihost_utils

    text = json.dumps(config_values(config), sort_keys=True)
    digests = np.asarray(multihost_utils.process_allgather(np.int32(zlib.crc32(text.encode()) % 2 ** 31))).ravel()
    differ = [i for i, digest in enumerate(digests) if digest != digests[0]]
    if differ:
        raise ValueError(f"process{'es' if len(differ) > 1 else ''} {', '.join(map(str, differ))} "
                         f"{'run' if len(differ) > 1 else 'runs'} another config than process 0; start every process "
                         f"with the same config and overrides")
    check_same_data_everywhere(source, splits_read(config), data_facts)
    token = int(multihost_utils.broadcast_one_to_all(np.int32(np.random.randint(1, 2 ** 31 - 1))))
    marker, created = workdir / ".ast_jax_shared_check", not workdir.exists()
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(token))
    multihost_utils.sync_global_devices("ast_jax: workdir marker written")
    try:
        seen = marker.read_text().strip() == str(token)
    except OSError:
        seen = False
    seen_by = np.asarray(multihost_utils.process_allgather(np.int32(seen))).ravel()
    multihost_utils.sync_global_devices("ast_jax: workdir marker read")
    if jax.process_index() == 0:
        marker.unlink(missing_ok=True)
    blind = [i for i, ok in enumerate(seen_by) if not ok]
    if blind:
        if created and jax.process_index() == 0:
            workdir.rmdir()
        raise ValueError(f"{workdir}: process{'es' if len(blind) > 1 else ''} {', '.join(map(str, blind))} cannot "
                         f"see process 0's workdir; give every process one folder they all share (a network "
                         f"filesystem): checkpoints are written into it by all of them together")


def splits_read(config) -> list[str]:
    """The splits a run reads: train, its validation split and its test split (if any), each once."""
    return [split for split in dict.fromkeys(("train", config.validation_split, config.test_split)) if split]


def check_same_data_everywhere(source: DataSource, splits: list[str], train_facts: dict[str, Any]) -> None:
    """With several processes: the same clips in every split on every one (for training, also the labels). Each
    process reads its part of every batch from its own copy of the data; copies that differ would cut an epoch
    or an evaluation into different numbers of batches (the processes then wait on each other for ever), or mix
    the clips of two orders into one batch, or score each process's own copy."""
    if jax.process_count() == 1:
        return
    import zlib

    from jax.experimental import multihost_utils

    rows = []
    for split in splits:
        if split == "train":
            facts, count = train_facts, train_facts["train_examples"]
        else:
            count = source.num_examples(split)
            facts = {"examples": count, "fingerprint": source.fingerprint(split)}
        rows.append([zlib.crc32(json.dumps(facts, sort_keys=True).encode()) % 2 ** 31, count])
    gathered = np.asarray(multihost_utils.process_allgather(np.int32(rows)))  # (processes, splits, 2)
    for k, split in enumerate(splits):
        differ = [i for i in range(len(gathered)) if gathered[i, k, 0] != gathered[0, k, 0]]
        if differ:
            name = "training" if split == "train" else split
            counts = ", ".join(str(gathered[i, k, 1]) for i in differ)
            raise ValueError(f"process{'es' if len(differ) > 1 else ''} {', '.join(map(str, differ))} "
                             f"{'read' if len(differ) > 1 else 'reads'} other {name} data than process 0 "
                             f"({counts} {name} clips against {gathered[0, k, 1]}, or other clips or labels); give "
                             f"every process the same data")


def warn_of_unused_manifests(config) -> None:
    """A warning for each manifest of the json source in a split the run does not read (a typo such as
    data.json.tset, or a test manifest with test_split empty, as the ESC-50 and AudioSet recipes leave it)."""
    if config.data.source != "json":
        return
    read = splits_read(config)
    for split, manifest in (config.data.get("json") or {}).items():
        if split not in read:
            hint = f": set test_split={split!r} to report its scores" if not config.test_split else ""
            warnings.warn(f"data.json.{split} ({manifest}): the run reads no split {split!r} (it reads "
                          f"{', '.join(read)}), so this manifest is left unused{hint}", stacklevel=2)


def describe_data(config, source: DataSource) -> str:
    """One line: the source, its label count and each split's clips, as the run reads them."""
    counts = ", ".join(f"{split} {source.num_examples(split)}" for split in splits_read(config))
    return f"data: {source_name(config)}: {source.num_classes} labels; clips: {counts}"


def warn_of_missing_labels(config, source: DataSource) -> None:
    """A warning for each split the run reads that has no clip of some label (sources that list their clips'
    labels): one the training split lacks can never be learned, one an evaluated split lacks is not scored."""
    targets = getattr(source, "targets", None)
    if targets is None:
        return
    hint = ("; where clips are split by a hash (no split folders or split column), more clips of those labels, "
            "or their split given, put them there") if config.data.source in ("folder", "manifest") else ""
    lacking = []  # (split, labels it has no clips of)
    for split in splits_read(config):
        counts = np.asarray(targets(split)).sum(axis=0)
        missing = [label for label, count in zip(source.labels, counts) if count == 0]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            lacking.append((split, f"{len(missing)} of its {source.num_classes} labels ({shown})"))
    if lacking and lacking[0][0] == "train":
        warnings.warn(f"{source_name(config)}: no clips in the 'train' split for {lacking.pop(0)[1]}: the model "
                      f"cannot learn them{hint}", stacklevel=2)
    if lacking:  # the evaluated splits, in one warning
        where = "; ".join(f"in the {split!r} split for {labels}" for split, labels in lacking)
        warnings.warn(f"{source_name(config)}: no clips {where}: they are not scored there (their recall is "
                      f"undefined){hint}", stacklevel=2)


def warn_of_unheard_audio(config, features: features_lib.FeatureConfig) -> None:
    """A warning when the clips hold more frames than the model's input: the rest would be decoded, kept and
    never heard."""
    frames = features.num_frames(int(round(config.data.clip_seconds * features.sample_rate)))
    if frames > features.target_length:
        heard = features.input_samples / features.sample_rate
        warnings.warn(f"data.clip_seconds ({config.data.clip_seconds:g} s, {frames} frames) is longer than "
                      f"features.target_length ({features.target_length} frames): the model hears only the first "
                      f"{heard:.3g} s of each clip; set features.target_length={frames}, or a shorter "
                      f"data.clip_seconds (configs/folder.py:PATH,SECONDS sets both)", stacklevel=2)


def _why_empty(config, split: str) -> str:
    """What may have left a split of a folder or manifest without clips, as the end of a message."""
    from ast_jax.data.folder import SPLITS

    root = Path(config.data.get("data_dir") or ".")
    present = [name for name in SPLITS if (root / name).is_dir()] if config.data.source == "folder" else []
    if present and split in SPLITS:
        if not (root / split).is_dir():
            return (f" (the folder has split folders, {', '.join(f'{name}/' for name in present)}, but no {split}/: "
                    f"give all three, or none, and then the clips are split by a hash)")
        return f" ({root / split} holds no readable clips in any label folder)"
    if config.data.source in ("folder", "manifest"):
        return (" (none found, none readable, or, split by hash, no speaker or group fell into it: more speakers "
                "or groups, a larger data.validation_fraction / data.test_fraction, or the split given by split "
                "folders or a manifest's split column help)")
    return ""


def source_name(config) -> str:
    return f"the {config.data.source} source" + (f" ({config.data.data_dir})" if config.data.get("data_dir") else "")


def check_config(config, source: DataSource) -> None:
    """Every problem that can be seen before compiling, as one ValueError."""
    problems = []
    devices = jax.device_count()
    for name in ("batch_size", "eval_batch_size"):
        if config[name] % devices:
            problems.append(f"{name} {config[name]} is not divisible by the {devices} devices")
    if source.num_classes < 2:
        found = f"1 class ({source.labels[0]})" if source.num_classes else "no classes"
        problems.append(f"{source_name(config)} has {found}; a classifier needs at least two")
    if not config.validation_split:
        problems.append("validation_split is empty: the run keeps the model that scores best on it and reports "
                        "its scores, so it needs a split (test_split may be empty)")
    split_errors: dict[str, list[str]] = {}  # one message for the splits that fail alike (unprepared TFDS data)
    for role, split in (("train", "train"), ("validation_split", config.validation_split),
                        ("test_split", config.test_split)):
        if not split:
            continue
        try:
            count = source.num_examples(split)
        except ValueError as error:
            split_errors.setdefault(str(error), []).append(role)
            continue
        if count == 0:
            problems.append(f"the {split!r} split of {source_name(config)} has no usable clips"
                            f"{_why_empty(config, split)}")
    problems.extend(f"{', '.join(roles)}: {error}" for error, roles in split_errors.items())
    if config.loss not in LOSSES:
        problems.append(f"loss must be one of {LOSSES}, got {config.loss!r}")
    if config.best_metric not in BEST_METRICS:
        problems.append(f"best_metric must be one of {BEST_METRICS}, got {config.best_metric!r}")
    wanted = config.data.get("num_classes")
    if wanted and wanted != source.num_classes:
        problems.append(f"data.num_classes is {wanted} but the {config.data.source} source has "
                        f"{source.num_classes} labels")
    if config.data.get("balanced") and source.example_weights("train") is None:
        problems.append(f"data.balanced: {source_name(config)} gives no example weights to sample by (the "
                        f"sources that read audio files weigh clips by their labels, as the AudioSet recipe)")
    wa = config.weight_averaging
    if wa.start_epoch and not 1 <= wa.start_epoch <= wa.end_epoch <= config.num_epochs:
        problems.append(f"weight_averaging epochs {wa.start_epoch}..{wa.end_epoch} are not within 1..{config.num_epochs}")
    if problems:
        raise ValueError("bad config: " + "; ".join(problems))


def load_initial_model(config, model_config: ASTConfig, labels: list[str]):
    """`(model config, parameters)` from `config.init.source`, moved to this run's input geometry with
    `ast_jax.load_pretrained` (position table adapted) and, unless `init.keep_head`, a new head."""
    from ast_jax.convert import load_pretrained

    init = config.init
    with warnings.catch_warnings():  # the run computes features its own way: the source's do not matter
        warnings.filterwarnings("ignore", message=".*no preprocessor_config.json")
        pretrained = load_pretrained(
            init.source, max_length=model_config.max_length, num_mel_bins=model_config.num_mel_bins,
            frequency_stride=model_config.frequency_stride, time_stride=model_config.time_stride,
            num_labels=None if init.keep_head else len(labels), seed=config.seed)
    if init.keep_head and list(pretrained.labels) != list(labels):
        raise ValueError(f"{init.source}: its {len(pretrained.labels)} labels are not the data set's "
                         f"{len(labels)} labels; set init.keep_head=False to train a new head")
    loaded = pretrained.config
    if (loaded.hidden_size, loaded.num_layers) != (model_config.hidden_size, model_config.num_layers):
        raise ValueError(f"{init.source}: a {loaded.num_layers}-layer, {loaded.hidden_size}-wide AST, but "
                         f"config.model asks for {model_config.num_layers} layers of width {model_config.hidden_size}")
    params = dict(pretrained.params)
    # The source fixes the LayerNorm epsilons (1e-12 for transformers weights); the run fixes the dtypes.
    return loaded.replace(dtype=model_config.dtype, param_dtype=model_config.param_dtype), params


# What the host sends to the device for every batch (see `ast_jax.data.DataSource.batches`).
BATCH_KEYS = ("audio", "targets", "valid", "length")


def make_train_step(model: AST, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    loss: str, make_inputs, rng: jax.Array):
    """The update step `(state, batch) -> (state, metrics)`, to be jitted by the caller.

    `make_inputs(step_rng, batch) -> (input_values, targets)` turns the batch into model inputs
    (`ast_jax.augment.train_inputs` in training); its randomness is `fold_in(rng, step)`, so a resumed run
    repeats it exactly.
    """

    def train_step(state, batch):
        step = state["step"]
        inputs, targets = make_inputs(jax.random.fold_in(rng, step), batch)

        def loss_fn(params):
            logits, _ = model.apply({"params": params}, inputs, return_tokens=False)
            return masked_mean(per_example_loss(loss, logits, targets), batch["valid"])

        loss_value, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = {**state, "params": optax.apply_updates(state["params"], updates),
                     "opt_state": opt_state, "step": step + 1}
        metrics = {"loss": loss_value, "grad_norm": optax.global_norm(grads), "learning_rate": schedule(step)}
        return new_state, metrics

    return train_step


def step_compiler_options(platform: str) -> dict[str, bool]:
    """XLA options for compiling the update step on `platform`.

    On CPU, copy insertion with region analysis: with the state donated, XLA's default analysis copies every
    parameter before updating it in place (its Adam fusions read the parameter twice), 100 copies and 333 MB
    written per AST-base step; region analysis proves the copies unneeded. The results are the same bit for
    bit; the step is about 2% faster (bench/bench_train_step.py's setting, paired runs).
    """
    return {"xla_cpu_copy_insertion_use_region_analysis": True} if platform == "cpu" else {}


def _tensorboard_writer():
    """tensorboardX's SummaryWriter, imported without torch. tensorboardX imports torch where it is installed,
    only to accept torch tensors (ast-jax gives it floats): a second of start-up, and torch's warning filters
    and loggers in the training process."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` is then an ImportError, which tensorboardX handles
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    """metrics.jsonl and TensorBoard, written by process 0 only."""

    def __init__(self, workdir: Path, resume_step: int):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        SummaryWriter = _tensorboard_writer()
        self.path = workdir / "metrics.jsonl"
        if self.path.exists():  # forget what was logged after the checkpoint we resume from, and the results
            rows = []
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a killed run: what it logged is lost anyway
                    continue
            kept = [row for row in rows if isinstance(row, dict) and isinstance(row.get("step"), int)
                    and row["step"] <= resume_step and not str(row.get("split", "")).startswith("result/")]
            write_text_atomically(self.path, "".join(json.dumps(json_ready(row)) + "\n" for row in kept))
        self.file = self.path.open("a")
        # TensorBoard drops the events of earlier sessions from step resume_step + 1 on, as metrics.jsonl does.
        self.tensorboard = SummaryWriter(str(workdir / "tensorboard"),
                                         purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.active:
            return
        # an undefined metric (the mAUC of a split with one class) is null in the file and left out of TensorBoard
        self.file.write(json.dumps(json_ready({"step": step, "split": split, **values}), allow_nan=False) + "\n")
        self.file.flush()
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.tensorboard.add_scalar(f"{split}/{name}", value, step)

    def flush(self) -> None:
        """Write TensorBoard's buffered events (kept up to two minutes otherwise): called at every checkpoint, so
        that a run killed outright and resumed keeps every logged step."""
        if self.active:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.active:
            self.file.close()
            self.tensorboard.close()


def format_table(rows: list[dict]) -> str:
    """The end-of-run results as a plain-text table."""
    columns = ["model", "split", "loss", "accuracy", "mAP", "mAUC"]
    def shown(value) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if math.isfinite(value) else "n/a"  # undefined: the mAUC of a one-class split
        return "" if value is None else str(value)

    cells = [[shown(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths))
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


class StopRequests:
    """SIGTERM and Ctrl-C during a run, as a context manager that installs their handlers (main thread only).

    While `after_step` is set (the training loop), the first one is only recorded: the loop stops after the
    current step with a checkpoint (a second Ctrl-C stops at once). Elsewhere (reading data, compiling, the final
    evaluations) they stop the run at once, as usual, and are recorded as well: Python drops an exception raised
    inside a garbage-collection callback, so `check` stops a run whose interrupt was lost that way.
    """

    def __init__(self):
        self.signals: list[int] = []
        self.after_step = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame) -> None:
        self.signals.append(number)
        if self.after_step and not (number == signal.SIGINT and self.signals.count(signal.SIGINT) > 1):
            if number == signal.SIGINT:
                when = "this step" if jax.process_count() == 1 else f"at most {STOP_POLL_STEPS} steps, with the others"
                print(f"\nast-jax train: stopping after {when} with a checkpoint (Ctrl-C again to stop now)",
                      file=sys.stderr, flush=True)
            return
        self._stop_now(number, frame)

    def _stop_now(self, number, frame) -> None:
        previous = self._previous.get(number)
        if callable(previous):
            previous(number, frame)  # the ast-jax command's (which notes the signal and stops with 130/143), or Python's
        if number == signal.SIGTERM:
            raise SystemExit(143)
        raise KeyboardInterrupt

    def check(self) -> None:
        """Stop now if a signal came while stopping at once was due (its exception may have been dropped)."""
        if self.signals and not self.after_step:
            self._stop_now(self.signals[0], None)

    @property
    def by_ctrl_c(self) -> bool:
        return self.signals[:1] == [signal.SIGINT]


def train_and_evaluate(config: ml_collections.ConfigDict | Mapping[str, Any], workdir: str | Path) -> dict[str, Any]:
    """Train per `config` (a ConfigDict, or a mapping of the same fields), resuming from `workdir` if it holds
    checkpoints; returns the results summary.

    SIGTERM or Ctrl-C during the training steps stop the run after the current step with a checkpoint
    (`Preempted`); elsewhere they stop it at once (see `StopRequests`)."""
    if isinstance(config, Mapping):
        config = ml_collections.ConfigDict(config)
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(f"config: a ConfigDict (ast_jax.training.load_config) or a mapping, got "
                        f"{type(config).__name__}")
    if not isinstance(workdir, (str, os.PathLike)):
        raise TypeError(f"workdir: a folder path, got {type(workdir).__name__}")
    with StopRequests() as stops:
        return _train_and_evaluate(config, workdir, stops)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, stops: StopRequests) -> dict[str, Any]:
    config = add_source_fields(expand_user_paths(config))  # a copy, with the source's fields as the CLI has them
    workdir = Path(workdir).expanduser().absolute()
    blocking = file_in_the_way(workdir)
    if blocking == workdir:
        raise ValueError(f"{workdir}: workdir exists and is not a folder")
    if blocking is not None:
        raise ValueError(f"{workdir}: workdir cannot be made ({blocking} is a file)")
    check_fields(config)
    check_numbers(config)
    check_device_counts()
    check_resumable(config, workdir)
    is_main = jax.process_index() == 0

    # ------------------------------------------------------------------------------------------------ input
    if config.data.get("data_dir") and not Path(config.data.data_dir).exists():
        raise FileNotFoundError(f"{config.data.data_dir}: data.data_dir does not exist")
    source = build_source(config.data)
    check_config(config, source)
    warn_of_unused_manifests(config)
    if is_main:
        print(describe_data(config, source), flush=True)
    warn_of_missing_labels(config, source)
    if config.loss == "ce" and source.multilabel:
        warnings.warn(f"loss=ce on multi-label data ({source_name(config)} has clips with several labels): the "
                      f"model will score with softmax, so its labels compete; the AudioSet recipe trains these with "
                      f"--config.loss=bce")
    num_train = source.num_examples("train")
    data_facts = {"train_examples": num_train, "labels": list(source.labels)}
    fingerprint = source.fingerprint("train")
    if fingerprint is not None:
        data_facts["train_fingerprint"] = fingerprint
    check_processes_agree(config, workdir, source, data_facts)
    # Evaluation batches are padded to their size: no larger than the largest split evaluated needs (a device
    # multiple), whatever eval_batch_size says.
    evaluated = [source.num_examples(split) for split in (config.validation_split, config.test_split) if split]
    devices = jax.device_count()
    eval_batch_size = min(config.eval_batch_size, -(-max(evaluated, default=1) // devices) * devices)
    steps_per_epoch = -(-num_train // config.batch_size)
    total_steps = config.num_epochs * steps_per_epoch
    features = feature_config_from(config)
    warn_of_unheard_audio(config, features)
    model_config = model_config_from(config, source.num_classes)
    initial_params, started = None, started_model_config(workdir)
    if started is not None:  # a resume: the checkpoints hold the weights
        model_config = started.replace(dtype=model_config.dtype, param_dtype=model_config.param_dtype)
    elif config.init.source:
        model_config, initial_params = load_initial_model(config, model_config, source.labels)
    elif model_config.num_layers >= 12 and model_config.hidden_size >= 768:
        warnings.warn(f"a {model_config.num_layers}-layer, {model_config.hidden_size}-wide AST starts from random "
                      f"weights (config.init.source is empty); the released recipes fine-tune an ImageNet DeiT or "
                      f"AudioSet checkpoint and reach their published accuracy only from one: set "
                      f"--config.init.source=PATH")
    activation = "softmax" if config.loss == "ce" else "sigmoid"
    optimizer, schedule = make_optimizer(config, steps_per_epoch)  # checks the schedule against the run's length
    if not (workdir / "checkpoints").is_dir():  # every process: one stopping alone would leave the others waiting
        check_room_for_checkpoints(config, model_config, workdir)
    mesh = sharding.make_mesh(config.mesh)  # checks mesh.fsdp against the devices
    check_same_data(workdir, data_facts, total_steps, source_name(config))
    workdir.mkdir(parents=True, exist_ok=True)  # only now: a config or data problem leaves no empty workdir
    if is_main:
        save_config(config, workdir / "config.json")
        write_text_atomically(workdir / DATA_FACTS, json.dumps(data_facts, indent=1) + "\n")
        write_text_atomically(workdir / MODEL_CONFIG, json.dumps(model_config.to_dict(), indent=1) + "\n")

    # -------------------------------------------------------------------------------------------- shardings
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)

    # ------------------------------------------------------------------------------------------------ model
    model = AST(model_config)
    averaging = bool(config.weight_averaging.start_epoch)
    rng = jax.random.PRNGKey(config.seed)
    init_rng, train_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, model_config.max_length, model_config.num_mel_bins), jnp.float32)

    def init_state(params):
        state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
        if averaging:
            state["average_sum"] = jax.tree_util.tree_map(jnp.zeros_like, params)
        return state

    # -------------------------------------------------------------------------------------------------- shard
    # Shapes first (nothing allocated), then shardings, then parameters created already in place.
    param_shapes = jax.eval_shape(lambda r: model.init(r, dummy)["params"], init_rng)
    state_shapes = jax.eval_shape(init_state, param_shapes)
    state_shardings = sharding.state_shardings(mesh, state_shapes)
    param_shardings = state_shardings["params"]

    # ------------------------------------------------------------------------------------------- update step
    def make_inputs(step_rng, batch):
        # Padding rows never become mixup partners; clips shorter than the batch end in padding frames.
        return train_inputs(step_rng, batch["audio"], batch["targets"], features, config.augment,
                            valid=batch["valid"], num_samples=batch["length"])

    train_step = make_train_step(model, optimizer, schedule, config.loss, make_inputs, train_rng)
    train_step = jax.jit(train_step, in_shardings=(state_shardings, batch_sharding),
                         out_shardings=(state_shardings, replicated), donate_argnums=0,
                         compiler_options=step_compiler_options(mesh.devices.flat[0].platform))

    def eval_step(params, batch):
        input_values = features_lib.input_values(batch["audio"], features, batch["length"])
        logits, _ = model.apply({"params": params}, input_values, return_tokens=False)
        return {"logits": logits, "targets": batch["targets"], "valid": batch["valid"],
                "loss": per_example_loss(config.loss, logits, batch["targets"])}

    eval_step = jax.jit(eval_step, in_shardings=(param_shardings, batch_sharding), out_shardings=replicated)
    add_to_average = jax.jit(
        lambda state: {**state, "average_sum": jax.tree_util.tree_map(jnp.add, state["average_sum"], state["params"])},
        in_shardings=(state_shardings,), out_shardings=state_shardings, donate_argnums=0)

    # ------------------------------------------------------------------------------------------- checkpoint
    checkpoints = Checkpoints(workdir / "checkpoints", max_to_keep=config.checkpoint.max_to_keep,
                              asynchronous=config.checkpoint.asynchronous)
    try:
        restored = checkpoints.restore_latest(abstract_with_shardings(state_shapes, state_shardings))
    except BaseException:
        checkpoints.close()
        raise
    if restored is None:
        def fresh_state(r):
            return init_state(model.init(r, dummy)["params"])

        if initial_params is not None:
            state = jax.jit(init_state, out_shardings=state_shardings)(initial_params)
        else:
            state = jax.jit(fresh_state, out_shardings=state_shardings)(init_rng)
        meta = {"best": None, "best_step": None, "best_epoch": None, "history": []}
    else:
        _, state, meta = restored
    step = int(state["step"])
    if is_main and restored is not None and step >= total_steps:
        print(f"{workdir}: the run is complete ({step} of {total_steps} steps); scoring its models again",
              flush=True)
    writer = MetricWriter(workdir, step)

    # ----------------------------------------------------------------------------------------------- evals
    def evaluate(params, split: str) -> dict[str, float]:
        rows = []
        batches = source.batches(split, batch_size=eval_batch_size, process_index=jax.process_index(),
                                 process_count=jax.process_count())
        for local in prefetch(batches):
            out = eval_step(params, sharding.global_batch(
                {k: local[k] for k in BATCH_KEYS}, batch_sharding))
            rows.append(jax.tree_util.tree_map(np.asarray, out))
        out = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        valid = out["valid"]
        result = classification_metrics(out["logits"][valid], out["targets"][valid])
        result["loss"] = float(out["loss"][valid].mean())
        result["examples"] = int(valid.sum())
        return result

    def export(params, name: str, note: str) -> None:
        host_params = jax.tree_util.tree_map(np.asarray, _gather(params))
        if is_main:
            save_model(workdir / name, from_params(model_config, host_params, features, source.labels, activation,
                                                   source=f"ast-jax train {workdir} ({note})"), overwrite=True)

    def validate_and_keep_best(epoch: int) -> None:
        result = evaluate(state["params"], config.validation_split)
        writer.write(step, "validation", {**result, "epoch": epoch})
        meta["history"].append({"step": step, "epoch": epoch, **result})
        if meta["best"] is None or result[config.best_metric] > meta["best"]:
            meta.update(best=result[config.best_metric], best_step=step, best_epoch=epoch)
            export(state["params"], "best", f"best validation {config.best_metric} at step {step}")
        say(f"step {step} (epoch {epoch}): validation " + ", ".join(
            f"{k} {v:.4f}" for k, v in result.items() if k in ("loss", *BEST_METRICS)))

    # ------------------------------------------------------------------------------------------------ loop
    # SIGTERM (a scheduler's preemption) and a first Ctrl-C stop the run after the current step with a checkpoint;
    # a second Ctrl-C stops at once.
    stops.check()
    stops.after_step = True
    progress = None
    if is_main and config.progress_bar:
        from tqdm import tqdm

        progress = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True, desc="train")

    def say(line: str) -> None:
        """A line of the training log on the main process: above the progress bar, or printed without one."""
        if progress is not None:
            progress.write(line)
        elif is_main:
            print(line, flush=True)
    pending: list[tuple[int, dict]] = []
    interval_start, interval_steps = time.perf_counter(), 0

    def flush_metrics() -> None:
        """Fetch the metrics of the steps run since the last flush; stop on a non-finite loss or gradient."""
        nonlocal interval_start, interval_steps
        if not pending:
            return
        fetched = [(s, {k: float(v) for k, v in m.items()}) for s, m in pending]
        pending.clear()
        for s, m in fetched:
            if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
                checkpoints.wait()
                last = checkpoints.latest_step()
                kept = (f"The last good checkpoint (step {last}) is kept in {workdir / 'checkpoints'}"
                        if last is not None else "No checkpoint had been written yet")
                raise TrainingDiverged(
                    f"non-finite training loss at step {s} (loss {m['loss']}, gradient norm {m['grad_norm']}); "
                    f"stopped. {kept}; try a lower optim.learning_rate, or check features.mean and std")
        elapsed = time.perf_counter() - interval_start
        summary = {k: float(np.mean([m[k] for _, m in fetched])) for k in ("loss", "grad_norm")}
        summary["learning_rate"] = fetched[-1][1]["learning_rate"]
        summary["clips_per_second"] = interval_steps * config.batch_size / max(elapsed, 1e-9)
        writer.write(fetched[-1][0], "train", summary)
        if progress is not None:
            progress.set_postfix(loss=f"{summary['loss']:.4f}", lr=f"{summary['learning_rate']:.3g}")
        else:  # logs of runs without a bar (batch jobs) still show the training going
            say(f"step {fetched[-1][0]}/{total_steps}: loss {summary['loss']:.4f}, learning rate "
                f"{summary['learning_rate']:.3g}, {summary['clips_per_second']:.1f} clips/s")
        interval_start, interval_steps = time.perf_counter(), 0

    def stop_requested(due: bool = True) -> bool:
        """Whether a signal asks the run to stop. With several processes they must agree, at the same step,
        through a collective that waits for the step to finish, which keeps the host from queueing steps ahead
        of the devices: they poll only at steps that wait anyway (`due`: logging, evaluation, checkpoints) and
        every STOP_POLL_STEPS steps."""
        if jax.process_count() == 1:
            return bool(stops.signals)
        if not due:
            return False
        from jax.experimental import multihost_utils

        return bool(multihost_utils.process_allgather(np.int32(bool(stops.signals))).any())

    def preempted() -> Preempted:
        checkpoints.wait()
        cause = "Ctrl-C" if stops.by_ctrl_c else "SIGTERM" if stops.signals else "a signal to another process"
        return Preempted(f"stopped by {cause} at step {step}; checkpoint saved in "
                         f"{workdir / 'checkpoints'}; run the same command (or call) again to resume",
                         130 if stops.by_ctrl_c else 143)

    try:
        for epoch_index in range(step // steps_per_epoch, config.num_epochs):
            batches = source.batches(
                "train", batch_size=config.batch_size, process_index=jax.process_index(),
                process_count=jax.process_count(), shuffle=True, seed=config.seed, epoch=epoch_index,
                start_batch=step % steps_per_epoch, balanced=config.data.balanced)
            for local in prefetch(batches):
                batch = sharding.global_batch({k: local[k] for k in BATCH_KEYS}, batch_sharding)
                state, metrics = train_step(state, batch)
                step += 1
                pending.append((step, metrics))
                interval_steps += 1
                if progress is not None:
                    progress.update(1)
                epoch_done = step % steps_per_epoch == 0
                evaluate_now = (step % config.eval_every_steps == 0) if config.eval_every_steps else epoch_done
                periodic = step % config.checkpoint.every_steps == 0
                waits = step % config.log_every_steps == 0 or epoch_done or evaluate_now or periodic
                stop = stop_requested(waits or step % STOP_POLL_STEPS == 0 or step == total_steps)
                if waits or stop:
                    flush_metrics()
                epoch = epoch_index + 1
                if epoch_done and averaging and (config.weight_averaging.start_epoch <= epoch
                                                 <= config.weight_averaging.end_epoch):
                    state = add_to_average(state)
                if evaluate_now or step == total_steps:
                    validate_and_keep_best(epoch)
                if epoch_done or evaluate_now or periodic or stop or step == total_steps:
                    checkpoints.save(step, state, meta)
                    writer.flush()
                if stop:
                    raise preempted()
        if stop_requested():  # it came during the last step's validation or checkpoint, all saved now
            raise preempted()
        stops.after_step = False  # from here on, a signal stops the run at once
        flush_metrics()
        checkpoints.wait()
        if progress is not None:
            progress.close()
            progress = None

        # ------------------------------------------------------------------------------------- final results
        export(state["params"], "final", f"after {config.num_epochs} epochs")
        results = []
        final_validation = meta["history"][-1] if meta["history"] else evaluate(state["params"], config.validation_split)
        results.append({"model": "final", "split": config.validation_split, **final_validation})
        best_params = jax.device_put(load_model(workdir / "best").params, param_shardings)
        best_validation = next(h for h in meta["history"] if h["step"] == meta["best_step"])
        best_name = f"best (epoch {meta['best_epoch']})"
        results.append({"model": best_name, "split": config.validation_split, **best_validation})
        if config.test_split:
            results.append({"model": best_name, "split": config.test_split,
                            **evaluate(best_params, config.test_split)})
        if averaging:
            count = config.weight_averaging.end_epoch - config.weight_averaging.start_epoch + 1
            averaged = jax.tree_util.tree_map(lambda s: s / count, state["average_sum"])
            export(averaged, "averaged", f"mean of epochs {config.weight_averaging.start_epoch}-"
                                         f"{config.weight_averaging.end_epoch}")
            for split in dict.fromkeys([config.validation_split, config.test_split]):
                if split:
                    results.append({"model": "averaged", "split": split, **evaluate(averaged, split)})
        stops.check()  # an interrupt of the final evaluations that Python dropped: no results from a stopped run
        for row in results:
            writer.write(step, f"result/{row['model']}/{row['split']}",
                         {k: v for k, v in row.items() if k not in ("model", "split", "step", "epoch")})
        summary = {"steps": step, "epochs": config.num_epochs, "best_epoch": meta["best_epoch"],
                   "best_validation": meta["best"], "best_metric": config.best_metric, "results": results}
        if is_main:
            link = workdir / ".model.tmp"  # WORKDIR/model: the run's model to use, i.e. the best one
            link.unlink(missing_ok=True)
            link.symlink_to("best", target_is_directory=True)
            link.replace(workdir / "model")
            write_text_atomically(workdir / "results.json", json.dumps(json_ready(summary), indent=2, allow_nan=False)
                                  + "\n")
            print(format_table(results), flush=True)
            print(f"model: {workdir / 'model'} (the best, epoch {meta['best_epoch']}); results: "
                  f"{workdir / 'results.json'}", flush=True)
        return summary
    finally:
        if progress is not None:
            progress.close()
        writer.close()
        checkpoints.close()


def _gather(tree):
    """A tree of global arrays as arrays every process can read (a no-op on one process)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
