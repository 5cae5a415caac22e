"""Huge pages for XLA's per-call CPU buffers (ast_jax/_host_memory.py): when programs re-run themselves with
glibc's hugetlb tunable, and what it changes.

The effect is measured in fresh processes: a jitted function whose 128 MB intermediate lives in XLA's temporary
buffer, called repeatedly; glibc maps and unmaps that buffer on every call, and the page faults of a call show
whether it came in 4 KiB pages (32,768 faults) or in 2 MiB huge pages (a few hundred at most).
"""

import json
import os
import subprocess
import sys

import pytest

from ast_jax import _host_memory, cli

CHILD = r"""
import json, resource
import jax, jax.numpy as jnp
import numpy as np

rows, cols = 8192, 4096  # tanh of the outer product: 128 MB of float32 in XLA's temporary buffer
f = jax.jit(lambda x, w: jnp.tanh(x[:, None] * w[None, :]) @ w)
x, w = jnp.asarray(np.ones(rows, np.float32)), jnp.asarray(np.ones(cols, np.float32))
assert f.lower(x, w).compile().memory_analysis().temp_size_in_bytes >= rows * cols * 4
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = f(x, w).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
assert abs(float(out[0]) - np.tanh(1.0) * cols) < 1e-2
print(json.dumps({"faults_per_call": float(np.median(faults[2:])), "pages": rows * cols * 4 // 4096}))
"""

CPU = {"JAX_PLATFORMS": "cpu"}
GLIBC = ("glibc", "2.36")


def run_child(environ: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD], env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def base_environment() -> dict:
    return {key: value for key, value in os.environ.items()
            if key not in ("GLIBC_TUNABLES", _host_memory.ENV, _host_memory._REEXECUTED)}


applies_here = _host_memory.huge_pages_environment({**base_environment(), **CPU}) is not None


@pytest.mark.skipif(not applies_here, reason="needs glibc >= 2.35 and the kernel's THP mode `madvise`")
def test_the_tunable_brings_xla_buffers_in_huge_pages():
    plain = run_child({**base_environment(), **CPU})
    tuned = run_child(_host_memory.huge_pages_environment({**base_environment(), **CPU}))
    pages = plain["pages"]
    assert plain["faults_per_call"] > pages / 2, plain  # 4 KiB pages: the cost the tunable removes
    assert tuned["faults_per_call"] < pages / 50, tuned
    print(f"page faults per call (median): {plain['faults_per_call']:.0f} without, "
          f"{tuned['faults_per_call']:.0f} with {_host_memory.TUNABLE} ({pages} 4 KiB pages in the buffer)")


@pytest.mark.skipif(not applies_here, reason="needs glibc >= 2.35 and the kernel's THP mode `madvise`")
def test_a_program_reexecutes_itself_once_as_the_same_process():
    code = ("import os, sys; from ast_jax import _host_memory; print('start', flush=True); "
            "_host_memory.reexec_with_huge_pages(); print(os.getpid(), os.environ.get('GLIBC_TUNABLES'))")
    environ = {**base_environment(), **CPU, "GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}
    process = subprocess.Popen([sys.executable, "-c", code], env=environ, stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    lines = out.splitlines()
    assert lines[:2] == ["start", "start"] and len(lines) == 3, out  # started twice, ran on once
    assert lines[2] == f"{process.pid} glibc.malloc.arena_max=4:{_host_memory.TUNABLE}"


@pytest.mark.parametrize("environ, libc, mode, tunables", [
    (CPU, GLIBC, "madvise", _host_memory.TUNABLE),
    ({**CPU, "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC, "madvise",
     f"glibc.malloc.arena_max=2:{_host_memory.TUNABLE}"),
    ({"JAX_PLATFORMS": "cuda,cpu", _host_memory.ENV: "hugepages"}, GLIBC, "madvise", _host_memory.TUNABLE),
    ({**CPU, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, "madvise", None),  # the user's choice stands
    ({**CPU, _host_memory._REEXECUTED: "1"}, GLIBC, "madvise", None),  # re-run once at most
    ({**CPU, _host_memory.ENV: "system"}, GLIBC, "madvise", None),
    ({"JAX_PLATFORMS": "cuda,cpu"}, GLIBC, "madvise", None),
    ({"JAX_PLATFORM_NAME": "tpu"}, GLIBC, "madvise", None),
    (CPU, GLIBC, "always", None),
    (CPU, GLIBC, "never", None),
    (CPU, ("glibc", "2.31"), "madvise", None),
    (CPU, ("", ""), "madvise", None),
])
def test_when_programs_reexecute(environ, libc, mode, tunables):
    environment = _host_memory.huge_pages_environment(environ, libc=libc, mode=mode)
    if tunables is None:
        assert environment is None
    else:
        assert environment == {**environ, "GLIBC_TUNABLES": tunables, _host_memory._REEXECUTED: "1"}


def test_jax_on_cpu_without_platforms_means_no_accelerator_plugin(monkeypatch):
    monkeypatch.setattr(_host_memory.importlib.metadata, "entry_points", lambda group: ["jax_cuda12_plugin"])
    assert _host_memory.computes_on_cpu({}) is False
    monkeypatch.setattr(_host_memory.importlib.metadata, "entry_points", lambda group: [])
    monkeypatch.setattr(_host_memory.importlib.util, "find_spec", lambda name: None)
    assert _host_memory.computes_on_cpu({}) is True


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    assert _host_memory.thp_mode(str(tmp_path / "enabled")) == "madvise"
    assert _host_memory.thp_mode(str(tmp_path / "missing")) == ""


@pytest.fixture
def program_settings_restored(monkeypatch):
    """cli.main(program=True) sets what a program may (signal handlers, exception hooks, CPU devices): undone after
    the test, so that the rest of the session runs as a Python caller of cli.main would."""
    import signal
    import threading

    from ast_jax import _cpu_devices

    for owner, name in ((sys, "excepthook"), (sys, "unraisablehook"), (threading, "excepthook")):
        monkeypatch.setattr(owner, name, getattr(owner, name))
    # The inference commands' two CPU devices would stay for the whole session if JAX has not started yet
    monkeypatch.setattr(_cpu_devices, "configure", lambda: None)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in handlers.items():
        signal.signal(number, handler)


def test_bad_setting_is_one_clear_error(monkeypatch, capsys):
    with pytest.raises(ValueError, match="AST_JAX_HOST_MALLOC='fast': expected auto, hugepages or system"):
        _host_memory.huge_pages_environment({_host_memory.ENV: "fast"})
    monkeypatch.setenv(_host_memory.ENV, "fast")
    assert cli.main(["predict", "--help"], program=True) == 2
    assert capsys.readouterr().err.strip() == (
        "ast-jax: error: AST_JAX_HOST_MALLOC='fast': expected auto, hugepages or system")


def test_only_programs_reexecute(monkeypatch, program_settings_restored):
    calls = []
    monkeypatch.setattr(_host_memory, "reexec_with_huge_pages", lambda: calls.append(1))
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])  # called from Python: never
    assert calls == []
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"], program=True)  # train.py, the console script, python -m ast_jax
    assert calls == [1]
