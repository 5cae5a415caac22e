"""Training checkpoints with Orbax: the train state (sharded arrays) plus JSON metadata, saved asynchronously.

Each checkpoint step holds two items: "state" (params, optimiser state, step, and the weight-averaging sum when
enabled) and "meta" (the best validation score and its step and epoch, the evaluation history). The data position and the random state
follow from the step: batches are a fixed function of (seed, epoch, batch index) and per-step randomness is
`fold_in(key, step)`, so restoring the step restores both.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpoints:
    """Periodic, asynchronous checkpoints of one run, keeping the newest `max_to_keep`."""

    def __init__(self, directory: str | Path, *, max_to_keep: int, asynchronous: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=asynchronous, create=True)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options,
                                             item_names=("state", "meta"))

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
        return restored["state"], dict(restored["meta"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(shapes, shardings):
    """ShapeDtypeStructs carrying their target shardings, for restoring straight onto the mesh."""
    return jax.tree_util.tree_map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                                  shapes, shardings)
