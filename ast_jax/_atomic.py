"""Writing outputs so that nothing is ever left half-written: files and folders are made under a temporary
name beside their target and renamed into place once complete, with the permissions a plain write would give."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import warnings
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
        with open(temporary, "w", newline="", errors="surrogateescape") as handle:
            handle.write(text)

    write_atomically(path, write)


def write_files_atomically(writers: Mapping[str | os.PathLike, Callable[[str], None]]) -> None:
    """`write_atomically` for files that belong together (embeddings and their file list, an evaluation's
    report): all are written under temporary names first and renamed into place only once every one is
    complete, so a failure leaves each as it was rather than some new beside others old (a rename that fails
    half way, over a file that cannot be replaced, puts back the ones already done).

    A path naming a device, a named pipe, a socket or a stream of the process (`/dev/null`, `/dev/stdout`) is
    not replaced (that would put a plain file where the device was): its content is made in a private temporary
    folder (writers may seek, as numpy's do) and then written into it, after every file is in place, as a
    shell's `>>` would: a stream of the process is written through its own descriptor, at its own position."""
    staged: list[tuple[str, Path, bool]] = []  # (temporary, path, whether the path is special)
    scratch = None
    try:
        for path, write in writers.items():
            special = is_special_file(path)
            if special:
                scratch = scratch or tempfile.mkdtemp(prefix="ast_jax-")
                path, folder = Path(path), Path(scratch)
            else:
                path = resolve_output(path)
                if path.is_dir():
                    raise OSError(f"{path}: is a folder")
                folder = path.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
                handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=folder)
            except OSError as error:
                raise OSError(f"{path}: cannot write there ({error.strerror or error})") from None
            os.close(handle)
            staged.append((temporary, path, special))
            try:
                write(temporary)
            except OSError as error:  # ENOSPC names no file; numpy's short write has no errno
                raise OSError(f"{path}: cannot be written ({error.strerror or error})") from None
            os.chmod(temporary, 0o666 & ~UMASK)  # mkstemp makes the file private; give it a normal file's mode
        staged.sort(key=lambda item: item[2])  # into devices last: their writes cannot be taken back
        _put_in_place(staged)
    except BaseException:
        for temporary, _, _ in staged:
            if os.path.exists(temporary):
                os.remove(temporary)
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _put_in_place(staged: list[tuple[str, Path, bool]]) -> None:
    """Rename each temporary file over its path (or copy it into a device); if one fails, the files already
    renamed get their earlier content back (kept meanwhile under a hidden name) or are removed if they are new."""
    done: list[tuple[Path, str | None, bool]] = []  # (path, where its old content is kept, whether it existed)
    try:
        for temporary, path, special in staged:
            if special:
                _write_into(path, temporary)
                continue
            existed = path.exists()
            kept, moved = _keep_aside(path) if existed and len(staged) > 1 else (None, False)
            try:
                os.replace(temporary, path)
            except OSError as error:
                if moved:
                    os.replace(kept, path)
                elif kept is not None:
                    os.remove(kept)
                raise OSError(f"{path}: cannot be replaced ({error.strerror or error})") from None
            done.append((path, kept, existed))
    except BaseException:
        for path, kept, existed in reversed(done):
            with contextlib.suppress(OSError):
                if kept is not None:
                    os.replace(kept, path)
                elif not existed:
                    os.remove(path)
        raise
    finally:
        for _, kept, _ in done:
            if kept is not None and os.path.lexists(kept):
                os.remove(kept)


def _keep_aside(path: Path) -> tuple[str | None, bool]:
    """(hidden name, whether `path` was moved there): the content of `path` kept in its folder while it is
    replaced. A hard link, so that `path` never goes missing; where the file system makes none, `path` itself
    renamed, to be put back by the caller if the replacing fails. (None, False) if neither can be done (the
    replacing rename will then fail too, or succeed for good)."""
    for _ in range(100):
        aside = path.parent / f".{path.name}.{secrets.token_hex(4)}.old"
        if os.path.lexists(aside):
            continue
        try:
            os.link(path, aside)
            return str(aside), False
        except OSError:
            try:
                os.rename(path, aside)
                return str(aside), True
            except OSError:
                return None, False
    return None, False


def _write_into(path: Path, content: str) -> None:
    """Copy the file `content` into the device, pipe or stream `path`, appending. A stream of this process
    (/dev/stdout, /dev/fd/N) is written through its descriptor, after what Python has buffered for it."""
    import sys

    descriptor = own_descriptor(path)
    try:
        if descriptor is not None:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
            target = open(descriptor, "wb", closefd=False)
        else:
            target = open(path, "ab")
        with target, open(content, "rb") as source:
            shutil.copyfileobj(source, target)
    except OSError as error:
        raise OSError(f"{path}: cannot be written ({error.strerror or error})") from None


# The names of a process's own streams: /dev/stdout, /dev/fd/3, /proc/self/fd/1, /proc/<pid>/fd/1.
_STREAM = re.compile(r"/dev/(stdout|stderr|fd/(\d+))|/proc/(self|\d+)/fd/(\d+)")


def own_descriptor(path: str | os.PathLike) -> int | None:
    """The descriptor of this process that `path` names (/dev/stdout: 1, /dev/fd/3: 3), directly or through
    links, or None. Such a path is written through the descriptor, at its own position, even where it stands
    for a plain file (`>> log`): replacing the file would lose what it held and cut it off from the descriptor."""
    path = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        path = "/" + path.lstrip("/")  # "//dev/stdout" is "/dev/stdout"
        match = _STREAM.fullmatch(path)
        if match:
            if match.group(3) not in (None, "self") and int(match.group(3)) != os.getpid():
                return None  # another process's
            return {"stdout": 1, "stderr": 2}.get(match.group(1)) or int(match.group(2) or match.group(4))
        if not os.path.islink(path):
            return None
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    return None


def is_special_file(path: str | os.PathLike) -> bool:
    """Whether `path` names one of the process's streams (/dev/stdout, /dev/fd/N) or (through links) an existing
    device, named pipe or socket: written into as it is, never replaced."""
    if own_descriptor(path) is not None:
        return True
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def resolve_output(path: str | os.PathLike) -> Path:
    """Where a write to `path` lands: itself, or the file a link points to (the link stays). A loop of links is an
    OSError naming `path`."""
    path = Path(path)
    if not path.is_symlink():
        return path
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # Python 3.11 says RuntimeError for a loop, later versions OSError (ELOOP)
        raise OSError(f"{path}: is a loop of symbolic links") from None


def check_output_folder(directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Where a folder written to `directory` lands (a link: the folder it points to), or a FileExistsError when
    something is in the way: a file, or a folder with files in it unless `overwrite`."""
    directory = resolve_output(Path(directory).absolute())
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory}: exists and is not a folder")
    if directory.exists() and not overwrite and any(directory.iterdir()):
        raise FileExistsError(f"{directory}: output folder exists and is not empty; --overwrite (overwrite=True "
                              "in Python) replaces it")
    return directory


@contextlib.contextmanager
def staged_directory(directory: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of `directory` to fill; it replaces `directory` only if the block succeeds.

    So an interrupted or failed write never leaves a half-written folder behind. An existing folder is renamed
    aside and the new one renamed into place, with Ctrl-C and SIGTERM held back meanwhile (`_swap_in`), and only
    then is the old one removed: at every moment `directory` is the old folder or the new one, whole.
    """
    directory = check_output_folder(directory, overwrite=overwrite)
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
        with interrupts_deferred():
            aside = _swap_in(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if aside is not None:  # the old folder, out of the way: removed after the signals are let through again
        shutil.rmtree(aside, ignore_errors=True)
        if aside.exists():
            warnings.warn(f"{aside}: the folder {directory.name} replaced could not be removed entirely; delete it",
                          stacklevel=3)


def _swap_in(staging: Path, directory: Path) -> Path | None:
    """Rename `staging` to `directory`, an existing `directory` first renamed aside; the folder aside is returned,
    for the caller to remove. Both renames happen or neither: a failure, or an interrupt at any point (a second
    Ctrl-C comes through `interrupts_deferred` at once), puts the old folder back."""
    aside = None
    try:
        if directory.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
            os.replace(directory, aside)  # onto an empty folder: a rename
        os.replace(staging, directory)
        return aside
    except BaseException as error:
        if aside is not None:
            if not directory.exists():  # moved aside, the new one not in: the old one goes back
                try:
                    os.replace(aside, directory)
                except OSError as restore:
                    raise OSError(f"{directory}: cannot be replaced, nor put back ({restore.strerror or restore}); "
                                  f"the old folder is in {aside}") from None
            elif staging.exists():  # never moved aside: the empty folder made for it goes
                with contextlib.suppress(OSError):
                    os.rmdir(aside)
            else:  # interrupted just after the new folder went in: it stays, and the old one goes
                shutil.rmtree(aside, ignore_errors=True)
        if isinstance(error, OSError):
            raise OSError(f"{directory}: cannot be replaced ({error.strerror or error})") from None
        raise


def check_apart(output: str | os.PathLike, source: object) -> None:
    """A ValueError when writing the folder `output` would replace `source`, a local file or folder being read
    (the same path, or a folder holding it), as `--overwrite` would."""
    if not isinstance(source, (str, os.PathLike)) or not os.path.exists(source):
        return  # an hf: name, a model in memory
    try:
        output_path, source_path = Path(output).resolve(), Path(source).resolve()
    except (RuntimeError, OSError):
        return  # a loop of links: the writer names it
    if output_path == source_path or output_path in source_path.parents:
        what = "is" if output_path == source_path else "holds"
        raise ValueError(f"{output}: {what} the source {source}; write the output elsewhere")


def check_free_space(target: str | os.PathLike, needed: int, what: str = "") -> None:
    """An OSError naming `target` when its file system (that of its nearest existing folder) has less than
    `needed` bytes free: said in one line before a writer (Orbax, safetensors) fails half way with its own
    messages. `what` says what the bytes are for."""
    folder = Path(target).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return  # nothing to say; the write will tell
    free = usage.free
    if usage.total and free < needed:  # (a total of 0: /proc and the like, where the write will say why not)
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
