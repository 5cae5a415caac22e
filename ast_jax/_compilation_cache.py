"""A persistent compilation cache for the `ast-jax` programs.

Every run of `ast-jax predict` (or evaluate, embed, explain, train) compiles the same functions again: about a
second for the AST-base forward on a 2-core CPU, more for a training step and more again on a GPU. JAX can keep
compiled executables on disk and load them on the next run instead (0.35 s instead of 1.0 s for the forward,
most of it tracing). The programs turn that on; code that imports ast_jax as a library is left alone, as a
library should not change JAX's configuration behind its caller's back.

Where the cache lives:
  JAX_COMPILATION_CACHE_DIR set (JAX's own setting)   that directory, with JAX's own thresholds
  AST_JAX_COMPILATION_CACHE=off (or none, 0, false)   no cache
  AST_JAX_COMPILATION_CACHE=DIR                       DIR
  otherwise                                           $XDG_CACHE_HOME/ast_jax/xla (~/.cache/ast_jax/xla)
A directory that cannot be created or written means no cache, not an error: the cache only saves time.

JAX bounds the cache's size (least recently used entries go first) with a "-atime" file beside each
"-cache" entry. A process running without that bound (no filelock, or an older ast-jax) writes entries
without one, and a bounded process that finds such an entry can write nothing more (it warns on every
compilation); `enable` therefore gives each such entry the time it was written.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Mapping

# Compilations shorter than this are not written: the model's functions take longer, while the many tiny
# ones that eager array operations compile would only fill the directory.
MIN_COMPILE_SECONDS = 0.3
# Least recently used entries are removed above this size (JAX needs the filelock package to do that).
MAX_BYTES = 1 << 30
OFF = ("off", "none", "0", "false", "no")


def cache_directory(environ: Mapping[str, str]) -> Path | None:
    """The directory the settings in `environ` choose, or None for no cache (JAX's own setting aside)."""
    setting = environ.get("AST_JAX_COMPILATION_CACHE")
    if setting is not None:
        return None if setting.strip().lower() in OFF or not setting.strip() else Path(setting).expanduser()
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ast_jax" / "xla"


def stamp_unstamped_entries(directory: Path) -> None:
    """Write the missing "-atime" file (the entry's modification time, as JAX writes it) of each entry."""
    for entry in directory.glob("*-cache"):
        stamp = entry.with_name(entry.name[:-len("-cache")] + "-atime")
        try:
            if not stamp.exists():
                stamp.write_bytes(entry.stat().st_mtime_ns.to_bytes(8, "little"))
        except OSError:  # removed meanwhile by another process's eviction, or not ours to write
            pass


def enable(environ: Mapping[str, str] | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at `cache_directory(environ)`; the directory in use, or None."""
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user's own choice, from JAX_COMPILATION_CACHE_DIR
        return Path(jax.config.jax_compilation_cache_dir)
    directory = cache_directory(os.environ if environ is None else environ)
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(directory, os.W_OK | os.X_OK):
        return None
    stamp_unstamped_entries(directory)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    if importlib.util.find_spec("filelock") is not None:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return directory
