"""The persistent compilation cache of the ast-jax programs (ast_jax/_compilation_cache.py).

conftest.py turns the cache off for the test session (tests must not write to the user's cache); these tests
turn it on in fresh processes, pointed at temporary directories.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from ast_jax import _compilation_cache
from ast_jax.pretrained import save_model

from test_inference import RATE, tiny_model, waveform

CHILD = r"""
import json, sys
import jax, jax.numpy as jnp
from jax import monitoring
from ast_jax import _compilation_cache

events = []
monitoring.register_event_listener(lambda event, **_: events.append(event))
directory = _compilation_cache.enable()
settings = {"directory": str(directory) if directory else None,
            "dir": jax.config.jax_compilation_cache_dir,
            "min_seconds": jax.config.jax_persistent_cache_min_compile_time_secs,
            "max_bytes": jax.config.jax_compilation_cache_max_size}
if directory is not None:
    # The function below compiles in well under the programs' threshold; the threshold is checked above.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
x = jnp.arange(64.0).reshape(8, 8)
out = jax.jit(lambda a: jnp.tanh(a @ a.T).sum())(x)
print(json.dumps({**settings, "hits": events.count("/jax/compilation_cache/cache_hits"), "out": float(out)}))
"""


def run_child(stderr: list | None = None, **environ) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AST_JAX_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update({"JAX_PLATFORMS": "cpu", **environ})
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if stderr is not None:
        stderr.append(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "cache"
    first = run_child(AST_JAX_COMPILATION_CACHE=str(cache))
    assert first["directory"] == first["dir"] == str(cache)
    assert first["min_seconds"] == _compilation_cache.MIN_COMPILE_SECONDS
    assert first["max_bytes"] == _compilation_cache.MAX_BYTES  # filelock comes with the test install
    entries = len(list(cache.glob("*-cache")))  # the jitted function and the eager arange/reshape
    assert first["hits"] == 0 and entries >= 1
    second = run_child(AST_JAX_COMPILATION_CACHE=str(cache))
    assert second["hits"] == entries and second["out"] == first["out"]


def test_entries_written_without_a_size_bound_do_not_stop_writes(tmp_path):
    """An entry without its "-atime" file (written by a process with no size bound) would make every later
    write of a bounded process fail with a warning; enable() stamps it first."""
    cache = tmp_path / "cache"
    cache.mkdir()
    stray = cache / "jit_other-0123abcd-cache"
    stray.write_bytes(b"an executable from an unbounded process")
    stderr = []
    run_child(stderr, AST_JAX_COMPILATION_CACHE=str(cache))
    assert "Error writing persistent compilation cache" not in stderr[0], stderr[0][-2000:]
    entries = sorted(cache.glob("*-cache"))
    assert len(entries) >= 2  # the stray and what the child compiled
    for entry in entries:
        stamp = entry.with_name(entry.name.replace("-cache", "-atime"))
        assert stamp.is_file() and len(stamp.read_bytes()) == 8
    assert int.from_bytes((cache / "jit_other-0123abcd-atime").read_bytes(), "little") == stray.stat().st_mtime_ns


def test_off_and_jax_own_setting(tmp_path):
    off = run_child(AST_JAX_COMPILATION_CACHE="off")
    assert off["directory"] is None and off["dir"] is None and off["hits"] == 0
    # JAX's own variable wins, with JAX's own thresholds.
    own = run_child(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "own"), AST_JAX_COMPILATION_CACHE=str(tmp_path / "x"))
    assert own["directory"] == own["dir"] == str(tmp_path / "own") and own["min_seconds"] == 1.0
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("environ, expected", [
    ({}, Path.home() / ".cache" / "ast_jax" / "xla"),
    ({"XDG_CACHE_HOME": "/var/cache/me"}, Path("/var/cache/me/ast_jax/xla")),
    ({"AST_JAX_COMPILATION_CACHE": "/data/xla", "XDG_CACHE_HOME": "/var/cache/me"}, Path("/data/xla")),
    ({"AST_JAX_COMPILATION_CACHE": "~/xla"}, Path.home() / "xla"),
    ({"AST_JAX_COMPILATION_CACHE": "OFF"}, None),
    ({"AST_JAX_COMPILATION_CACHE": "0"}, None),
    ({"AST_JAX_COMPILATION_CACHE": " "}, None),
])
def test_where_the_cache_lives(environ, expected):
    assert _compilation_cache.cache_directory(environ) == expected


def test_an_unwritable_place_means_no_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert run_child(AST_JAX_COMPILATION_CACHE=str(blocker / "xla"))["dir"] is None


def test_the_program_uses_it_and_python_callers_do_not(tmp_path):
    model = save_model(tmp_path / "model", tiny_model("softmax", seed=1))
    clip = tmp_path / "clip.wav"
    sf.write(clip, waveform(0.5, 0, 300.0), RATE, subtype="PCM_16")
    cache = tmp_path / "cache"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "AST_JAX_COMPILATION_CACHE": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    program = [sys.executable, "-m", "ast_jax", "predict", "--model", str(model), str(clip)]
    done = subprocess.run(program, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert cache.is_dir()
    library = (f"from ast_jax.cli import main; import jax; main(['predict', '--model', {str(model)!r}, "
               f"{str(clip)!r}]); assert jax.config.jax_compilation_cache_dir is None")
    env["AST_JAX_COMPILATION_CACHE"] = str(tmp_path / "no")
    done = subprocess.run([sys.executable, "-c", library], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "no").exists()
