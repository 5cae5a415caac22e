"""Two CPU devices for the inference commands, so that two halves of each batch compute at once.

XLA runs one CPU computation at a time per device. Within one, the matrix products use every core, but the
steps between them (layer norms, softmax, GELU, copies, waits at the end of each parallel step) leave cores
idle. Given two CPU devices, the `Predictor` splits each batch across them (ast_jax/inference.py): the two
computations share the cores' thread pool, and each can use the cores the other leaves idle. On this project's
2-core machine the AST-base batch-6 forward took 3-5% less time a clip in paired timings in one process, but
3% more in one process each, later the same day; files to results (bench/bench_predict.py) moved less than its
run-to-run spread (README, Benchmarks). It also lets the Python pipeline use several GPUs. The price is a second
copy of the parameters in memory (344 MB for AST-base in float32).

The number of CPU devices is fixed when JAX starts its CPU backend, so the `ast-jax` predict, evaluate, embed
and explain commands call `configure()` before anything runs on it. A user's own choice wins: with
JAX_NUM_CPU_DEVICES (or XLA's --xla_force_host_platform_device_count) set, nothing changes, and
JAX_NUM_CPU_DEVICES=1 turns the split off. In Python the pipeline splits over whatever local devices JAX has:
JAX_NUM_CPU_DEVICES=2 in the environment, or `jax.config.update("jax_num_cpu_devices", 2)` before JAX computes
anything, gives it the same two.
"""

from __future__ import annotations

import os

from ast_jax._host_memory import computes_on_cpu

DEVICES = 2


def chosen_by_user(environ=os.environ) -> bool:
    """Whether the environment already sets the number of CPU devices."""
    return "JAX_NUM_CPU_DEVICES" in environ or "xla_force_host_platform_device_count" in environ.get("XLA_FLAGS", "")


def configure(environ=os.environ) -> int | None:
    """Give JAX two CPU devices where it computes on a CPU of two or more cores and the user has not chosen a
    number; the number set, or None where nothing was changed (also where JAX has started already)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if chosen_by_user(environ) or not computes_on_cpu(environ) or cores < DEVICES:
        return None
    import jax

    if jax.config.jax_num_cpu_devices >= 0:  # set already in this process
        return None
    try:
        jax.config.update("jax_num_cpu_devices", DEVICES)
    except RuntimeError:  # JAX already computes in this process (a program calling cli.main): its devices stay
        return None
    return DEVICES
