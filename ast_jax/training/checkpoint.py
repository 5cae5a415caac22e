"""Training checkpoints with Orbax: the train state (sharded arrays) plus JSON metadata, saved asynchronously.

Each checkpoint step holds two items: "state" (params, optimiser state, step, and the weight-averaging sum when
enabled) and "meta" (the best validation score and its step and epoch, the evaluation history). The data position and the random state
follow from the step: batches are a fixed function of (seed, epoch, batch index) and per-step randomness is
`fold_in(key, step)`, so restoring the step restores both.

A resume takes the newest checkpoint that restores. Step folders that are incomplete (a copy cut short, a folder
made by hand) or that fail to restore (a truncated or damaged file) are passed over with a warning and renamed
`STEP.unreadable`, kept for a look but out of Orbax's way (it would otherwise count them as saved steps).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

ITEMS = ("state", "meta")
# Orbax writes this file into a step's folder before the folder gets its final name (the step number).
STEP_MARK = "_CHECKPOINT_METADATA"
SET_ASIDE = ".unreadable"


def step_folders(directory: str | Path) -> dict[int, Path]:
    """Every folder named as a step (Orbax's unfinished `STEP.orbax-checkpoint-tmp-*` ones aside)."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    return {int(p.name): p for p in directory.iterdir() if p.name.isdigit() and p.is_dir()}


def incomplete(folder: Path) -> str | None:
    """Why a step folder cannot be a checkpoint this code wrote, or None if it has every part."""
    missing = [name for name in (STEP_MARK, *ITEMS) if not (folder / name).exists()]
    return f"incomplete (no {', '.join(missing)})" if missing else None


def complete_steps(directory: str | Path) -> list[int]:
    """The steps whose folders have every part, oldest first."""
    return sorted(step for step, folder in step_folders(directory).items() if incomplete(folder) is None)


def _first_line(error: BaseException) -> str:
    """The innermost cause's message (Orbax wraps TensorStore's, which names the file and the byte range)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _aside(folder: Path) -> Path:
    """Where an unreadable step folder goes: `STEP.unreadable`, numbered on if that is taken."""
    candidate, number = folder.with_name(folder.name + SET_ASIDE), 1
    while candidate.exists():
        number += 1
        candidate = folder.with_name(f"{folder.name}{SET_ASIDE}-{number}")
    return candidate


# Orbax's read of one array (a coroutine in its event loop), and the error it raises when the read fails.
LEFTOVER_READ = ("_read_array_index_and_device_put", "Encountered error while reading array index")
_dropping_leftover_reads = False


def _drop_leftover_reads() -> None:
    """A failed Orbax restore leaves its other reads' coroutines and futures behind, each holding an error with
    a page of TensorStore spec (or never started); as they are collected (now or later, from Orbax's thread),
    Python and asyncio print every one. From the first failed restore on, those are dropped: the caller says
    it in one line."""
    global _dropping_leftover_reads
    if _dropping_leftover_reads:
        return
    _dropping_leftover_reads = True
    previous = sys.unraisablehook

    def hook(unraisable):
        said = f"{getattr(unraisable.object, '__qualname__', '')} {unraisable.exc_value}"
        if not any(mark in said for mark in LEFTOVER_READ):
            previous(unraisable)

    sys.unraisablehook = hook
    warnings.filterwarnings("ignore", f"coroutine '{LEFTOVER_READ[0]}' was never awaited", RuntimeWarning)
    logging.getLogger("asyncio").addFilter(
        lambda record: not any(mark in record.getMessage() for mark in LEFTOVER_READ))


def _set_aside(problems: dict[int, str], folders: dict[int, Path], then: str) -> None:
    """Rename each step folder in `problems` to `STEP.unreadable` (on process 0), with a warning each."""
    for step, problem in sorted(problems.items(), reverse=True):
        aside = _aside(folders[step])
        warnings.warn(f"{folders[step]}: checkpoint {problem}; {then} (the folder is kept, renamed {aside.name})",
                      stacklevel=3)
        if jax.process_index() == 0:
            os.replace(folders[step], aside)
    _barrier("ast_jax: step folders set aside")


def _barrier(name: str) -> None:
    """Wait for every process here (none to wait for on one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _all_agree(ok: bool) -> bool:
    """True when every process's `ok` is (the processes restore together and must pick the same step)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(multihost_utils.process_allgather(np.int32(ok)).all())


class Checkpoints:
    """Periodic, asynchronous checkpoints of one run, keeping the newest `max_to_keep`."""

    def __init__(self, directory: str | Path, *, max_to_keep: int, asynchronous: bool = True):
        # Incomplete step folders go aside before Orbax lists the steps (it would take them for saved ones).
        folders = step_folders(directory)
        problems = {step: incomplete(folder) for step, folder in folders.items()}
        _barrier("ast_jax: step folders listed")  # by every process before process 0 renames any
        _set_aside({step: problem for step, problem in problems.items() if problem}, folders, "passed over")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=asynchronous, create=True)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options,
                                             item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        """Start writing `state` and `meta` at `step` (returns before the write finishes)."""
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def restore(self, step: int, abstract_state) -> tuple[dict, dict]:
        """State arrays placed as `abstract_state` (a tree of ShapeDtypeStruct with shardings), and the metadata."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        meta = restored["meta"]
        if not isinstance(meta, dict) or "history" not in meta:
            raise ValueError("its meta item is not this trainer's (no evaluation history)")
        return restored["state"], dict(meta)

    def restore_latest(self, abstract_state) -> tuple[int, dict, dict] | None:
        """`(step, state, metadata)` of the newest checkpoint that restores, or None when there is none.

        Step folders newer than it that fail to restore are renamed `STEP.unreadable`, each with a warning. When
        none restores, a ValueError names the newest and why it failed, and nothing is renamed."""
        folders = step_folders(self.manager.directory)
        passed_over: dict[int, str] = {}
        for step in sorted(folders, reverse=True):
            try:
                state, meta = self.restore(step, abstract_state)
                problem = None
            except Exception as error:  # Orbax raises plain Exception around TensorStore's errors
                _drop_leftover_reads()
                problem = f"cannot be restored ({_first_line(error)})"
            if problem:
                gc.collect()  # the failed reads' leftovers, now that the error is let go
            if _all_agree(problem is None):
                _set_aside(passed_over, folders, f"resuming from step {step}, the newest that restores")
                if passed_over:
                    self.manager.reload()
                return step, state, meta
            passed_over[step] = problem or "cannot be restored on another process"
        if passed_over:
            step = max(passed_over)
            raise ValueError(f"{folders[step]}: checkpoint {passed_over[step]}, and no older one restores; remove "
                             f"{folders[step].parent} to start again, or give a new --workdir")
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(shapes, shardings):
    """ShapeDtypeStructs carrying their target shardings, for restoring straight onto the mesh."""
    return jax.tree_util.tree_map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                                  shapes, shardings)
