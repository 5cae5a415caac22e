"""The `ast-jax` command: one entry point, one subcommand per task.

Each subcommand lives in its own module, which defines `add_arguments(parser)` and `run(args) -> int`; its
one-line help is in COMMANDS below, its module docstring is the description `ast-jax COMMAND --help` shows.
Modules are imported only when their subcommand runs, so `ast-jax --help` is instant and torch is never
imported unless needed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import signal
import sys
import threading
import warnings

from ast_jax import _compilation_cache, _cpu_devices, _host_memory
from ast_jax._atomic import interrupts_deferred
from ast_jax.commands import forget_signals, raise_if_interrupted, raise_on_signal, received_signal

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("ast_jax.commands.convert", "port a PyTorch AST checkpoint (.pth, Hugging Face folder, hf:<repo>) to an ast-jax model folder"),
    "export-hf": ("ast_jax.commands.export_hf", "write an ast-jax model as a Hugging Face transformers folder"),
    "train": ("ast_jax.commands.train", "train or fine-tune an AST from a config file (same as train.py)"),
    "predict": ("ast_jax.commands.predict", "classify audio files, folders or long recordings"),
    "evaluate": ("ast_jax.commands.evaluate", "score a model on a data set: accuracy, mAP, per-class metrics, confusion matrix"),
    "embed": ("ast_jax.commands.embed", "write pooled (or per-token) embeddings of audio files to .npy/.npz"),
    "explain": ("ast_jax.commands.explain", "draw the model's attention over the spectrogram as a PNG"),
}

# Subcommands that run the Predictor, which splits each batch across two CPU devices (ast_jax/_cpu_devices.py)
INFERENCE_COMMANDS = ("predict", "evaluate", "embed", "explain")


def version_text() -> str:
    """ast-jax's version and those of the libraries that decide its numbers (read without importing them)."""
    from importlib import metadata

    from ast_jax import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in ("jax", "jaxlib", "flax", "optax"))
    return f"ast-jax {__version__} ({libraries}; Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ast-jax", description="Audio Spectrogram Transformer in JAX: convert and export checkpoints, train, "
                                    "predict, evaluate, embed and explain.",
        formatter_class=argparse.RawDescriptionHelpFormatter)  # keeps the version on one line
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is, so that the same cleanup runs: what is done is kept, temporary files go."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _quiet_once_stopped(default):
    """Python's reports of exceptions it cannot raise (a signal's, inside a garbage-collection callback), of
    threads' exceptions and of those a library prints itself, unless a signal is stopping the command: then
    one line says so ("ast-jax: interrupted"), not pages of the libraries' threads being cut short. Reports
    from other threads of Orbax's "Event loop is closed" are never shown: TensorStore's reads still in flight
    when a restore fails (a damaged model folder) finish into the closed loop, after the command's one-line
    error. (The command's own uncaught exceptions, in the main thread, are always shown.)"""
    def hook(*args):
        error = args[1] if len(args) == 3 else getattr(args[0], "exc_value", None)
        closed_loop = (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
                       and threading.current_thread() is not threading.main_thread())
        if received_signal() is None and not closed_loop:
            default(*args)

    return hook


def _not_left_behind(record: logging.LogRecord) -> bool:
    """A filter for asyncio's log: not its "Future exception was never retrieved" of the reads a failed restore
    left behind (each of them another TensorStore error on the damaged files, the first already reported)."""
    return not record.getMessage().startswith(("Future exception was never retrieved",
                                               "Task exception was never retrieved"))


def _show_warning(prefix, default, message, category, filename, lineno, file=None, line=None):
    """ast-jax's own warnings as one line, "ast-jax convert: warning: ..."; other libraries' as they print them."""
    if os.path.abspath(filename).startswith(_PACKAGE + os.sep) and issubclass(category, UserWarning):
        print(f"{prefix}: warning: {message}", file=sys.stderr if file is None else file)
    else:
        default(message, category, filename, lineno, file, line)


class _LogLine(logging.Formatter):
    """A log record as one line, "ast-jax train: warning: ...", as the commands' own warnings are written."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.prefix}: {record.levelname.lower()}: {record.getMessage()}"


def main(argv: list[str] | None = None, program: bool | None = None) -> int:
    """Run one subcommand. As a program (no `argv`, or `program=True`) it first re-runs itself with huge pages
    for XLA's CPU buffers where that helps (ast_jax/_host_memory.py), and keeps compiled functions on disk for
    the next run (ast_jax/_compilation_cache.py)."""
    if program is None:
        program = argv is None
    forget_signals()
    if program:
        try:
            _host_memory.reexec_with_huge_pages()
        except ValueError as error:
            print(f"ast-jax: error: {error}", file=sys.stderr)
            return 2
        # TensorFlow only decodes TFDS audio here, where its oneDNN kernels change nothing, and announces them on
        # stderr when it loads ("oneDNN custom operations are on"), twice, around an error's one line. Programs
        # only: a library user's TensorFlow is left as it is.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        signal.signal(signal.SIGTERM, raise_on_signal(Terminated))
        signal.signal(signal.SIGINT, raise_on_signal(KeyboardInterrupt))
        sys.unraisablehook = _quiet_once_stopped(sys.__unraisablehook__)
        sys.excepthook = _quiet_once_stopped(sys.__excepthook__)
        threading.excepthook = _quiet_once_stopped(threading.__excepthook__)
        logging.getLogger("asyncio").addFilter(_not_left_behind)
        # A file name that is not valid in the locale's encoding (Python holds its bytes as surrogate escapes)
        # goes out as those bytes, as ls and find write it, rather than failing the whole output.
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="surrogateescape")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:  # no command: the help, on stderr, as a usage error
        parser.print_help(sys.stderr)
        return 2
    if argv[0] not in COMMANDS:
        parser.parse_args(argv)  # --help, --version, or an error for an unknown command
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    if program:  # ast-jax's log lines (clips left out of the data, ...) in the command's own words
        package_log = logging.getLogger("ast_jax")
        for earlier in [h for h in package_log.handlers if isinstance(h.formatter, _LogLine)]:
            package_log.removeHandler(earlier)  # a program that runs several commands: one line each, not one more
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_LogLine(f"ast-jax {name}"))
        package_log.addHandler(handler)
        package_log.propagate = False  # not again through a handler a library gave the root
    try:
        if program:
            # Held back while JAX loads: an exception raised inside its extension's start-up aborts the
            # interpreter ("terminate called after throwing ..."). Delivered, as one line, once it has loaded.
            with interrupts_deferred():
                if name in INFERENCE_COMMANDS:
                    _cpu_devices.configure()
                _compilation_cache.enable()
        module = importlib.import_module(module_name)
        sub_parser = argparse.ArgumentParser(prog=f"ast-jax {name}", description=module.__doc__ or help_text,
                                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub_parser)
        # A subcommand may read arguments argparse cannot express (train's `--config.FIELD=VALUE`).
        args = module.parse_args(sub_parser, rest) if hasattr(module, "parse_args") else sub_parser.parse_args(rest)
        # Called from Python, the warning settings are put back afterwards. A program keeps them to its exit:
        # filters a run adds (checkpoint.py's, for a failed restore's leftover reads) must still hold when the
        # interpreter collects what is left at shutdown.
        with contextlib.nullcontext() if program else warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, f"ast-jax {name}", warnings.showwarning)
            code = int(module.run(args) or 0)
        raise_if_interrupted()  # a signal whose exception Python dropped: the exit status still says so
        return code
    except Terminated:
        print("ast-jax: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("ast-jax: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`ast-jax predict ... | head`): stop quietly, as command-line tools
        # do, and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:
        if received_signal() is not None:  # a library turned the interrupt into its own error (Orbax does)
            terminated = received_signal() is Terminated
            print(f"ast-jax: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
            return 143 if terminated else 130
        if not isinstance(error, (OSError, ValueError)):
            raise
        # User-facing failures (bad files, bad configs) are one line, not a traceback.
        print(f"ast-jax {name}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
