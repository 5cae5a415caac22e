"""Huge pages for XLA's per-call CPU buffers: programs re-run themselves with glibc's `hugetlb` malloc tunable.

XLA's CPU client allocates the temporary buffer of every executable call with posix_memalign, from one of its
worker threads, and frees it when the call ends: about 1 GB for a batch-8 AST-base training step, 38 MB for a
batch-8 forward. glibc serves a block that large with a fresh memory mapping and unmaps it on free, so every
call faults the whole buffer in again, one 4 KiB page at a time: 256,000 page faults and 0.45 s of kernel time
per training step on two cores. With GLIBC_TUNABLES=glibc.malloc.hugetlb=1 glibc asks for transparent huge
pages on those mappings (where the kernel's THP mode is `madvise`), and a step takes about 1,000 faults and
5-9% less time. Memory is still handed back to the system after each call.

Tunables are read when a process starts, so ast-jax's programs (the `ast-jax` command and train.py) call
`reexec_with_huge_pages()` first thing: where it helps and the setting is missing, the program replaces itself
(same process id, arguments and environment, plus the tunable); bench/bench_train_step.py starts its ast-jax
worker in the same environment. Python users set it themselves: `GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python
...`. AST_JAX_HOST_MALLOC=system turns the re-run off.

(Keeping freed buffers in the heap instead, with mallopt at import time, was as fast but let the heap grow
when small allocations split a freed buffer; huge pages have no such failure mode.)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path

ENV = "AST_JAX_HOST_MALLOC"
TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
_REEXECUTED = "AST_JAX_HOST_MALLOC_REEXECUTED"  # set on the re-run, so that it happens at most once


def computes_on_cpu(environ=os.environ) -> bool:
    """Whether JAX will compute on the CPU, decided without starting JAX."""
    platforms = environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME") or ""
    if platforms.strip():
        return platforms.split(",")[0].strip().lower() == "cpu"
    if any(importlib.util.find_spec(name) for name in ("jax_plugins", "libtpu")):
        return False
    return not importlib.metadata.entry_points(group="jax_plugins")


def thp_mode(path: str = THP_MODE_FILE) -> str:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"), or "" where there is none."""
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    return text[text.find("[") + 1:text.find("]")] if "[" in text else ""


def huge_pages_environment(environ=os.environ, libc=None, mode=None) -> dict[str, str] | None:
    """The environment to re-run this program with, or None when it has the tunable already or it would not
    help (not glibc 2.35+, THP mode not `madvise`, JAX not on the CPU, AST_JAX_HOST_MALLOC=system)."""
    choice = environ.get(ENV, "auto").strip().lower()
    if choice not in ("auto", "hugepages", "system"):
        raise ValueError(f"{ENV}={environ[ENV]!r}: expected auto, hugepages or system")
    tunables = environ.get("GLIBC_TUNABLES", "")
    if choice == "system" or _REEXECUTED in environ or "glibc.malloc.hugetlb" in tunables:
        return None
    name, version = libc or platform.libc_ver()
    if name != "glibc" or tuple(int(part) for part in version.split(".")[:2]) < (2, 35):
        return None  # the tunable appeared in glibc 2.35
    if (mode if mode is not None else thp_mode()) != "madvise":
        return None  # "always" needs no asking, "never" cannot be asked
    if choice == "auto" and not computes_on_cpu(environ):
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, TUNABLE))), _REEXECUTED: "1"}


def reexec_with_huge_pages() -> None:
    """Replace this program by itself run with the tunable, when `huge_pages_environment` says so. Call it first
    thing in a program's entry point, before anything else runs (it starts the program again)."""
    environment = huge_pages_environment()
    if environment is None or not getattr(sys, "orig_argv", None) or sys.orig_argv[1:2] in (["-"], []):
        return  # no program to re-run (interactive, or read from stdin)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
