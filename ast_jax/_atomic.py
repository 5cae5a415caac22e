"""Writing outputs so that nothing is ever left half-written: files and folders are made under a temporary
name beside their target and renamed into place once complete, with the permissions a plain write would give."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _current_umask()


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(temporary_path)` next to `path`, then rename it into place (never a half-written file).

    A link is written through: its target gets the new content. Failing to make or write the file (a full
    disk) is an OSError naming `path`, not the temporary name; `path` is then as it was."""
    write_files_atomically({path: write})


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """`write_atomically` of a text file, written as given (no newline translation)."""
    def write(temporary: str) -> None:
        with open(temporary, "w", newline="") as handle:
            handle.write(text)

    write_atomically(path, write)


def write_files_atomically(writers: Mapping[str | os.PathLike, Callable[[str], None]]) -> None:
    """`write_atomically` for files that belong together (embeddings and their file list, an evaluation's
    report): all are written under temporary names first and renamed into place only once every one is
    complete, so a failure leaves each as it was rather than some new beside others old."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, write in writers.items():
            path = Path(path)
            if path.is_symlink():
                path = path.resolve()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
            except OSError as error:
                raise OSError(f"{path}: cannot write there ({error.strerror or error})") from None
            os.close(handle)
            staged.append((temporary, path))
            try:
                write(temporary)
            except OSError as error:  # ENOSPC names no file; numpy's short write has no errno
                raise OSError(f"{path}: cannot be written ({error.strerror or error})") from None
            os.chmod(temporary, 0o666 & ~UMASK)  # mkstemp makes the file private; give it a normal file's mode
        for temporary, path in staged:
            os.replace(temporary, path)
    except BaseException:
        for temporary, _ in staged:
            if os.path.exists(temporary):
                os.remove(temporary)
        raise


@contextlib.contextmanager
def staged_directory(directory: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of `directory` to fill; it replaces `directory` only if the block succeeds.

    So an interrupted or failed write never leaves a half-written folder behind.
    """
    directory = Path(directory).absolute()
    if directory.is_symlink():  # write into the folder the link points to; the link stays
        directory = directory.resolve()
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory}: exists and is not a folder")
    if directory.exists() and not overwrite and any(directory.iterdir()):
        raise FileExistsError(f"{directory}: output folder exists and is not empty")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    except OSError as error:  # a parent that is a file, a read-only or special file system
        blocking = file_in_the_way(directory.parent)
        reason = f"{blocking} is a file" if blocking else error.strerror or str(error)
        raise OSError(f"{directory}: cannot be written ({reason})") from None
    try:
        os.chmod(staging, 0o777 & ~UMASK)  # mkdtemp makes the folder private; give it a normal folder's mode
        yield staging
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_free_space(target: str | os.PathLike, needed: int, what: str = "") -> None:
    """An OSError naming `target` when its file system (that of its nearest existing folder) has less than
    `needed` bytes free: said in one line before a writer (Orbax, safetensors) fails half way with its own
    messages. `what` says what the bytes are for."""
    folder = Path(target).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # nothing to say; the write will tell
    if free < needed:
        digits = 1 if round(needed / 1e6, 1) != round(free / 1e6, 1) else 3
        raise OSError(f"{target}: not enough space: {needed / 1e6:.{digits}f} MB to write, "
                      f"{free / 1e6:.{digits}f} MB free" + (f": {what}" if what else ""))


def file_in_the_way(folder: Path) -> Path | None:
    """The first of `folder` and its parents that exists and is not a folder (so `folder` cannot be made)."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) and SIGTERM until the block is done, then deliver them.

    Orbax writes from background threads: stopped half way, they go on writing into a folder being removed and
    log tracebacks. Deferred, the write ends cleanly and the caller's cleanup runs; a second signal stops at
    once. Outside the main thread, where signal handlers cannot be set, the block runs as it is.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(number, frame):
        if received:  # asked twice: stop now
            raise KeyboardInterrupt
        received.append(number)

    previous = {number: signal.signal(number, hold) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received:  # now to the handler that was there before (Ctrl-C: KeyboardInterrupt)
        handler = previous[received[0]]
        if callable(handler):
            handler(received[0], None)  # called here: a re-sent signal's exception could land in a GC callback
        else:
            signal.raise_signal(received[0])  # the default action (SIGTERM ends the process)
