"""The device mesh, and where parameters, optimiser state and batches live on it.

Mesh axes are ("data", "fsdp"). Batches are split over both axes, i.e. over every device. Parameters (and the
Adam moments, which have the same shapes) are replicated over "data" and, when `mesh.fsdp > 1`, each one is split
over "fsdp" along its largest axis that divides evenly (FSDP); XLA inserts the gathers. The axes are `Auto`:
shardings are given once at the `jax.jit` boundary (in/out shardings) and the compiler propagates them, so the
model code carries no sharding annotations.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config) -> Mesh:
    """A (data, fsdp) mesh over all devices of all processes; `fsdp = -1` puts every device on the fsdp axis."""
    devices = jax.device_count()
    fsdp = devices if mesh_config.fsdp == -1 else int(mesh_config.fsdp)
    if fsdp < 1 or devices % fsdp:
        raise ValueError(f"mesh.fsdp = {mesh_config.fsdp} does not divide the {devices} devices")
    return jax.make_mesh((devices // fsdp, fsdp), ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (example) axis split over every device."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int) -> P:
    """Split the largest axis divisible by `fsdp_size` over "fsdp"; replicate small or indivisible arrays."""
    if fsdp_size == 1 or not shape:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(mesh: Mesh, abstract_tree):
    """A NamedSharding for every array of a (params / optimiser state) tree of shapes."""
    fsdp_size = mesh.shape["fsdp"]
    return jax.tree_util.tree_map(lambda leaf: NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), fsdp_size)),
                                  abstract_tree)


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """One global array per field from this process's rows (every process passes its own slice)."""
    return {name: jax.make_array_from_process_local_data(sharding, value) for name, value in local_batch.items()}
