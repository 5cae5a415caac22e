"""Benchmark sides in their own processes, taking turns: each in the environment its users run it in.

`ast-jax train` and train.py start with glibc's hugetlb malloc tunable on CPU (ast_jax/_host_memory.py): it
makes XLA's per-call buffers cheaper, while PyTorch's eager step runs a few per cent slower with it, and a
tunable is fixed when a process starts. So bench_train_step.py starts one worker process per side (ast-jax in
the environment the ast-jax command would give it, PyTorch in the environment as it is), lets each set up (build,
compile, warm up), then asks them in turn to run a block of steps, so that a change in the machine's load falls
on all sides alike. Only one side computes at a time.

A worker is the benchmark script itself, run with `--worker NAME`: it calls `serve(setup)`, where `setup()`
builds the side and returns (info, run); `run(request)` does one block of work and returns what to report.
Requests and replies are JSON lines on the worker's stdin and stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable

from ast_jax._host_memory import huge_pages_environment

AST_JAX_ENV = "ast-jax"  # the environment the ast-jax command runs in
PLAIN_ENV = "plain"  # the environment as it is


def environment(kind: str) -> dict[str, str]:
    plain = dict(os.environ)
    if kind == AST_JAX_ENV:
        return huge_pages_environment(plain) or plain
    return plain


class Worker:
    """One side of a benchmark: `python SCRIPT --worker NAME ARGS...` in the given environment."""

    def __init__(self, script: str, name: str, args: list[str], env_kind: str):
        self.name, self.env = name, environment(env_kind)
        self.process = subprocess.Popen([sys.executable, script, "--worker", name, *args], env=self.env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self._reply()

    @property
    def tunables(self) -> str:
        return self.env.get("GLIBC_TUNABLES") or "(unset)"

    def _reply(self) -> Any:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"benchmark worker {self.name!r} stopped (exit code {self.process.wait()})")
        return json.loads(line)

    def __call__(self, request: Any) -> Any:
        self.process.stdin.write(json.dumps(request) + "\n")
        return self._reply()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def serve(setup: Callable[[], tuple[Any, Callable[[Any], Any]]]) -> None:
    """The worker's side: set up, report `info`, then answer requests until stdin closes. The replies go to the
    real stdout; anything else the side prints goes to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    info, run = setup()
    out.write(json.dumps(info) + "\n")
    for line in sys.stdin:
        out.write(json.dumps(run(json.loads(line))) + "\n")
