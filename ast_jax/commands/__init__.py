"""Subcommands of the `ast-jax` command line (see `ast_jax.cli`)."""

import argparse
import logging
import math
import os


def _number(kind, accept, description: str):
    """An argparse `type`: `kind(text)` when `accept` takes it, else argparse's usage error naming the option."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


positive_int = _number(int, lambda n: n > 0, "a positive integer")
non_negative_int = _number(int, lambda n: n >= 0, "an integer >= 0")
positive_float = _number(float, lambda x: math.isfinite(x) and x > 0, "a positive number")


# A Ctrl-C or SIGTERM whose exception is raised inside a garbage-collection callback (JAX has one) is printed as
# "Exception ignored" and dropped by Python. The command line's handlers note each signal here as they raise it,
# and the commands' loops raise it again (`raise_if_interrupted`), so that no signal is lost.
_received: list[type[BaseException]] = []


def raise_on_signal(exception: type[BaseException]):
    """A signal handler raising `exception`, as Python's own does for Ctrl-C, noting it for
    `raise_if_interrupted`. From then on absl's error log (Orbax's threads reporting that they were cut short)
    is not shown: the command says in one line that it was stopped."""
    def handler(number, frame):
        _received.append(exception)
        logging.getLogger("absl").setLevel(logging.CRITICAL)
        raise exception

    return handler


def forget_signals() -> None:
    """Start a command with no signal noted (a process may run several, as the tests do)."""
    _received.clear()


def received_signal() -> type[BaseException] | None:
    """The exception of the first signal the handlers saw (KeyboardInterrupt, or the CLI's Terminated), if any."""
    return _received[0] if _received else None


def raise_if_interrupted() -> None:
    """Raise the signal that arrived, if Python dropped the exception its handler raised."""
    if _received:
        raise _received[0]


def partial_name(output: str) -> str:
    """Where an interrupted run puts what it has done: OUTPUT with ".partial" before its extension (p.csv ->
    p.partial.csv). OUTPUT, perhaps the finished result of an earlier run, stays as it was, and nothing
    unfinished is written under a finished result's name. A device, pipe or stream (`/dev/stdout`) holds no
    finished result: what is done goes into it, as it would to stdout."""
    from ast_jax._atomic import is_special_file

    if is_special_file(output):
        return output
    root, extension = os.path.splitext(output)
    return f"{root}.partial{extension}"


def _check_writable(path: str, folder: str) -> None:
    """A ValueError naming `path` unless a file can be made in `folder`, or, where it does not exist yet, in the
    nearest folder above it (tried with a temporary file that is removed at once)."""
    import tempfile

    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    try:
        if not os.path.isdir(folder):
            raise NotADirectoryError(f"{folder} is not a folder")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{path}: cannot write there ({error.strerror or error})") from None


def check_output_file(path: str | None) -> None:
    """Before any work: a ValueError naming `path` when a file cannot be written there (a folder, a loop of
    links, or a place that is not writable). A device or named pipe (`/dev/null`, `/dev/stdout`) is written
    into, so it only needs to be writable."""
    from ast_jax._atomic import is_special_file, own_descriptor, resolve_output

    if path is None:
        return
    descriptor = own_descriptor(path)
    if descriptor is not None:
        try:
            os.fstat(descriptor)
        except OSError:
            raise ValueError(f"{path}: cannot write there (descriptor {descriptor} is not open)") from None
        return
    if is_special_file(path):
        if not os.access(path, os.W_OK):
            raise ValueError(f"{path}: cannot write there (permission denied)")
        return
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder; --output takes a file name")
    try:
        target = resolve_output(path)
    except OSError as error:
        raise ValueError(str(error)) from None
    _check_writable(path, os.path.dirname(os.path.abspath(target)))


def check_not_an_input(output: str | None, inputs: list) -> None:
    """A ValueError when the output file is one of the input files (the results would overwrite it)."""
    if output is None or not os.path.isfile(output):
        return
    for item in inputs:
        if isinstance(item, (str, os.PathLike)) and os.path.isfile(item) and os.path.samefile(output, item):
            raise ValueError(f"{output}: is one of the inputs; the results would overwrite it")


def refuse_standard_input(command: str, inputs: list[str]) -> None:
    """A ValueError for INPUT `-` (where no file is so named) in a command that reads only files."""
    if "-" in inputs and not os.path.exists("-"):
        raise ValueError(f"-: {command} reads files, not standard input (predict does); save the audio to a file "
                         f"first")


def check_writable_folder(path: str | None) -> None:
    """Before any work: a ValueError naming `path` when it exists and is not a folder, is a loop of links, or
    cannot be written."""
    from ast_jax._atomic import resolve_output

    if path is None:
        return
    try:
        resolve_output(path)
    except OSError as error:
        raise ValueError(str(error)) from None
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path}: exists and is not a folder")
    _check_writable(path, path)
