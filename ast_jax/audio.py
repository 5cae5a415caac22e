"""Audio input: files, bytes, file objects and arrays as float32 mono waveforms at the model's sample rate.

Decoding. soundfile (libsndfile) reads first: WAV (8-bit unsigned and 16/24/32-bit signed integer PCM,
32/64-bit float), FLAC, OGG/Vorbis, MP3 (libsndfile 1.1 or later), AIFF, W64, CAF and the rest of
`soundfile.available_formats()`, from a path, the file's bytes or a binary file object. Integer PCM is
scaled exactly, by 1 / 2^(bits - 1), to [-1, 1); float files keep their values (a float file may hold
samples beyond +-1; clipping them would distort, so they are passed on as they are). A path that libsndfile
cannot open goes to audioread, librosa's fallback, which decodes with ffmpeg, GStreamer or Core Audio where
one is installed (AAC, M4A, WMA...); without one, such a file is "cannot decode this format here", with what to
install.

Mono. Channels are averaged: mono = mean over channels, as `librosa.to_mono`. (Taking one channel loses
whatever is only in the others; the mean keeps both sides of a stereo recording.)

Resampling. soxr at "HQ" quality, which is librosa's default (`res_type="soxr_hq"`): a band-limited
polyphase resampler (about 0.01 dB passband ripple up to 0.9 Nyquist, 140 dB image rejection), so downsampling
does not fold energy above the new Nyquist back into the mel bands; it is fast (a minute of 44.1 kHz audio in
a few milliseconds), it can stream in blocks with exactly the same output, and it is what a librosa user of
the original AST recipes gets. The output has ceil(n * target_rate / source_rate) samples, as librosa's.
`load_audio(path)` equals `librosa.load(path, sr=16000)`.

Errors are `AudioError` (a ValueError) with one line naming the input and the problem:
"clip.wav: empty file (0 bytes)", "x.wav: not an audio file (...)", "x.wav: truncated (...)",
"x.wav: contains NaN or Inf samples (...)", "x.wav: implausible sample rate in its header (...)" (outside
`HEADER_RATES`, 1 kHz to 1 MHz). A missing path is FileNotFoundError.

Short audio. Any length is returned, even fewer samples than one feature frame (25 ms): the features
(`ast_jax.features.fbank`) of such audio have no frames, and the model input is all padding rows.

Long recordings. `stream_audio` yields the same samples as `load_audio` block by block, and
`iter_audio_blocks` yields analysis windows, both reading a file incrementally: memory stays bounded
whatever the length.

Pipes. A file object on a pipe (a live recording: `arecord -t wav | ...`, `sox ... -t wav - | ...`) or the
path of a named pipe is read as a stream, in blocks of 0.1 s, each handed on as soon as it arrives. A stream
that ends before the length its header gives keeps what came, with a warning; a recorder's header, which leaves
the length open, never warns. On a named pipe or a `WholeStream` (`ast-jax predict -` reads standard input as
one), samples going on past the header's length are not read: a warning says so (an error when the header says
0). libsndfile streams WAV, AIFF and AU from a pipe; other formats must be files (or bytes). Other non-seekable
file objects are read whole first.
"""

from __future__ import annotations

import io
import numbers
import os
import re
import stat
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Union

import numpy as np
import soundfile as sf
import soxr

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, np.ndarray]

# soxr quality: librosa's default resampler ("soxr_hq").
RESAMPLE_QUALITY = "HQ"
# Leading bytes of audio containers: a file that starts with one but does not open is damaged, not foreign.
_AUDIO_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"FORM", b"fLaC", b"OggS", b"ID3", b".snd", b"caff", b"riff")
# libsndfile's header log reports a data chunk longer than the file as "data : 192000 (should be 95978)".
_SHORT_DATA_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
PIPE_BLOCK_SECONDS = 0.1  # a pipe's samples are handed on in blocks this long (the delay they add)
# A header's data length this large means "unknown": recorders write a placeholder while recording (0xFFFFFFFF;
# arecord 0x80000000, sox 0x7FFFF000) and fix it, if they can seek, when they stop.
_OPEN_LENGTH_BYTES = 0x7FF00000
# Sample rates a header may state. Lower, resampling would multiply the samples (a damaged header saying 1 Hz
# turns 0.4 MB of 16-bit samples into 24 GB of float32 at 16 kHz); higher, no audio recorder writes.
HEADER_RATES = (1_000, 1_000_000)


class AudioError(ValueError):
    """Audio that cannot be used; the message is one line, "<input>: <problem>"."""


class WholeStream(io.FileIO):
    """A pipe that carries one recording and nothing after it (`ast-jax predict -` reads standard input as one):
    read as a stream like any pipe, and also watched past the length its header gives, where samples going on
    are said to be left unread (a writer that could not fix its header). Other pipes are left where their audio
    ended, so that a next file can be read from them."""


def load_audio(source: AudioSource, sample_rate: int = 16000, *, source_rate: int | None = None) -> np.ndarray:
    """`source` as float32 mono at `sample_rate`: shape `(samples,)`, integer formats in [-1, 1).

    `source` is a path, the bytes of a file, a binary file object, or an array (numpy, or any array numpy reads:
    torch, jax) with its `source_rate` (1-D mono or `(frames, channels)` as soundfile returns; integer arrays
    are scaled as integer PCM, bfloat16 and float16 read as float32).
    """
    blocks = list(stream_audio(source, sample_rate, source_rate=source_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def stream_audio(source: AudioSource, sample_rate: int = 16000, *, source_rate: int | None = None,
                 block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """The samples of `load_audio(source, ...)`, as consecutive float32 blocks of about `block_seconds`.

    The file is read and resampled block by block (soxr's streaming resampler gives the same samples as
    resampling everything at once), so memory does not grow with the recording's length. Problems found
    when opening raise here; damage further into the file raises when the iteration reaches it.
    """
    _check_rate("sample_rate", sample_rate)
    if source_rate is not None:
        _check_rate("source_rate", source_rate)
    if is_array(source):
        source = as_numpy(source)
    name = _describe(source)
    rate, channel_blocks = _decode(source, name, source_rate, block_seconds)
    return _resample_blocks(_mono_blocks(channel_blocks, name, rate), rate, int(sample_rate))


def iter_audio_blocks(source: AudioSource, block_seconds: float, hop_seconds: float, sample_rate: int = 16000,
                      *, source_rate: int | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Analysis windows over a recording, read incrementally: `(start_seconds, waveform)`.

    Windows of round(block_seconds * sample_rate) samples start every round(hop_seconds * sample_rate)
    samples from 0, up to the first that reaches the end of the recording; that last window holds what is
    left (it is shorter, the features pad it). A recording no longer than one window is one window.
    Memory holds about one window and one read block (30 s), whatever the recording's length.
    """
    window, hop = int(round(block_seconds * sample_rate)), int(round(hop_seconds * sample_rate))
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {block_seconds} s and {hop_seconds} s")
    pending = np.zeros(0, np.float32)  # samples from absolute position `offset` on
    offset = start = 0  # `start`: the next window's first sample
    for block in stream_audio(source, sample_rate, source_rate=source_rate):
        pending = np.concatenate([pending, block])
        while offset + len(pending) >= start + window:
            yield start / sample_rate, pending[start - offset:start - offset + window].copy()
            start += hop
            drop = min(start - offset, len(pending))
            pending, offset = pending[drop:], offset + drop
        drop = min(start - offset, len(pending))  # a hop longer than the window skips samples
        pending, offset = pending[drop:], offset + drop
    end = offset + len(pending)
    # no window yet, or the last one stopped short of the end and this one starts before it (a hop longer than
    # the window may have stepped past the end)
    if start == 0 or (start < end and start + window - hop < end):
        yield start / sample_rate, pending[start - offset:].copy()


def as_numpy(array: Any) -> np.ndarray:
    """A numpy array of an array of any library: a torch tensor is detached and moved to the host first, and
    floats numpy has no arithmetic for (bfloat16) become float32."""
    if hasattr(array, "detach"):
        array = array.detach().cpu()
        if str(array.dtype) == "torch.bfloat16":
            array = array.float()
    array = np.asarray(array)
    return array.astype(np.float32) if array.dtype.name == "bfloat16" else array


def is_array(source: Any) -> bool:
    """Whether `source` is an array: numpy, or one numpy reads (torch, jax), not a path or bytes."""
    return isinstance(source, np.ndarray) or (
        not isinstance(source, (str, bytes, bytearray, memoryview, os.PathLike))
        and (hasattr(source, "__array__") or hasattr(source, "__dlpack__")))


def _check_rate(name: str, rate: Any) -> None:
    if isinstance(rate, bool) or not (isinstance(rate, numbers.Integral) or
                                      (isinstance(rate, float) and rate.is_integer())) or rate < 1:
        raise ValueError(f"{name} must be a positive whole number of Hz, got {rate!r}")


def resample(waveform: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """A 1-D waveform at `source_rate` resampled to `sample_rate` (soxr HQ, as `stream_audio`), float32."""
    waveform = np.asarray(waveform, np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"resample takes a 1-D waveform, got shape {waveform.shape}")
    blocks = list(_resample_blocks([waveform], int(source_rate), int(sample_rate)))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


# ----------------------------------------------------------------------------------------------------------
# Decoding: every source becomes (sample rate, iterator of float32 (frames, channels) blocks).

def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, np.ndarray):
        return "array"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "bytes"
    return str(getattr(source, "name", None) or "file object")


def _decode(source: AudioSource, name: str, source_rate: int | None, block_seconds: float):
    if isinstance(source, np.ndarray):
        if source_rate is None:
            raise TypeError("an array needs its sample rate: load_audio(array, source_rate=...)")
        return int(source_rate), _array_blocks(source, name, int(source_rate), block_seconds)
    if source_rate is not None:
        raise TypeError("source_rate is only for arrays; a file states its own sample rate")
    if isinstance(source, (str, os.PathLike)):
        if stat.S_ISFIFO(os.stat(source).st_mode):  # a named pipe, or a shell's <(recorder)
            return _pipe_stream(os.open(source, os.O_RDONLY), name, block_seconds, close=True, watch_end=True)
        if os.path.isdir(source):
            raise AudioError(f"{name}: is a folder, not an audio file")
        if os.path.getsize(source) == 0:  # FileNotFoundError for a missing path
            raise AudioError(f"{name}: empty file (0 bytes)")
        opened: Any = os.fspath(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        opened = io.BytesIO(bytes(source))
    elif isinstance(source, io.TextIOBase):
        raise TypeError(f"{name}: a file opened in text mode; open audio in binary mode, open(path, 'rb')")
    elif hasattr(source, "read") and not _seekable(source) and _is_pipe(source):
        return _pipe_stream(source.fileno(), name, block_seconds, close=False,
                            watch_end=isinstance(source, WholeStream))
    elif hasattr(source, "read"):
        opened = source if _seekable(source) else io.BytesIO(source.read())
    else:
        raise TypeError(f"cannot read audio from an object of type {type(source).__name__}: give a path, bytes, "
                        "a binary file object or an array")
    if not isinstance(opened, str) and _remaining_bytes(opened) == 0:
        raise AudioError(f"{name}: empty file (0 bytes)")
    try:
        sound = sf.SoundFile(_native_path(opened))
    except sf.LibsndfileError as error:
        fallback = _audioread(opened) if isinstance(opened, str) else None
        if fallback is not None:
            return fallback
        raise AudioError(_unreadable(name, opened, error)) from None
    try:
        _check_rate_in_header(sound.samplerate, name)
        if sound.format == "OGG" and not _ogg_ends_cleanly(opened):
            raise AudioError(f"{name}: truncated (the Ogg stream does not end with a complete end-of-stream page)")
    except AudioError:
        sound.close()
        raise
    # A truncated WAV or AIFF gives the samples it holds, then the error: windows before the cut are kept.
    return sound.samplerate, _soundfile_blocks(sound, name, block_seconds, cut_short=_truncation(sound, name))


def _native_path(opened: Any) -> Any:
    """A path as the bytes the operating system gave for it (POSIX). soundfile encodes a str path strictly in the
    filesystem encoding, so a name that is not valid UTF-8 (which Python holds with surrogate escapes, as
    os.listdir returns it) would fail to open; its bytes open it."""
    return os.fsencode(opened) if isinstance(opened, str) and os.name == "posix" else opened


def _ogg_ends_cleanly(opened: Any) -> bool:
    """Whether the last Ogg page of a file (a path, or a seekable file object) carries the end-of-stream flag.

    Ogg states no length up front, so libsndfile reads a cut file as a shorter one without a word; a complete
    last page with that flag is what shows that the stream was written to its end."""
    tail = _peek(opened, -(1 << 16), 1 << 16)  # Ogg pages are at most 65,307 bytes: the last starts in here
    start = tail.rfind(b"OggS")
    if start < 0 or len(tail) < start + 27:
        return False
    # Page header: capture pattern, version, flags (0x04: end of stream), granule, serial, sequence, CRC, and the
    # segment count; then the segment table, whose lengths add up to the page body. Complete: it ends the file.
    segments = tail[start + 26]
    table = tail[start + 27:start + 27 + segments]
    complete = len(table) == segments and start + 27 + segments + sum(table) == len(tail)
    return complete and bool(tail[start + 5] & 0x04)


def _peek(opened: Any, start: int, size: int) -> bytes:
    """Up to `size` bytes from `start` (counted from the end where negative) of a path or seekable file object,
    which is left where it was."""
    def read(file) -> bytes:
        end = file.seek(0, io.SEEK_END)
        file.seek(max(0, end + start) if start < 0 else start)
        return file.read(size)

    if isinstance(opened, str):
        with open(opened, "rb") as file:
            return read(file)
    position = opened.tell()
    try:
        return read(opened)
    finally:
        opened.seek(position)


def _seekable(file: Any) -> bool:
    try:
        return bool(file.seekable())
    except (AttributeError, OSError):
        return False


def _is_pipe(file: Any) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(file.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


def _pipe_stream(descriptor: int, name: str, block_seconds: float, *, close: bool, watch_end: bool):
    """(rate, blocks) of audio arriving on a pipe, read through its descriptor with libsndfile's pipe support
    (which closes the descriptor at the end, or when it cannot open it, when `close`). With `watch_end` (a named
    pipe, a `WholeStream`), the stream is watched past the length its header gives (`_check_stream_end`); a
    caller's other pipe is left where its audio ended, so that a next file can be read from it."""
    try:
        sound = sf.SoundFile(descriptor, closefd=close)
    except sf.LibsndfileError as error:
        raise AudioError(f"{name}: cannot be read as a stream ({error.error_string.strip().rstrip('.')}); WAV, "
                         f"AIFF and AU can, other formats must be given as files") from None
    try:
        _check_rate_in_header(sound.samplerate, name)
    except AudioError:
        sound.close()
        raise
    declared, at_end = sound.frames, None
    if watch_end and not _open_ended(sound):
        def at_end(read: int) -> None:
            if read == declared:
                _check_stream_end(descriptor, name, declared)

    return sound.samplerate, _soundfile_blocks(sound, name, min(block_seconds, PIPE_BLOCK_SECONDS),
                                               short_ending="warn", at_end=at_end)


# How long a stream that has given the samples its header declares is watched for more (a writer still sending).
STREAM_END_WAIT_SECONDS = 1.0
_STREAM_END_LOOK = 1 << 20  # at most this many bytes are read past the declared samples, while they are all zero


def _check_stream_end(descriptor: int, name: str, declared: int) -> None:
    """After the samples a stream's header declares: more samples following mean a writer that could not go back
    to write the real length (Python's `wave` on a pipe writes its first piece's). Without any samples that is
    an AudioError, otherwise a warning (what came is kept). The end of the stream, a following chunk ("LIST", a
    next "RIFF"), zero padding up to the end, or nothing more within STREAM_END_WAIT_SECONDS is no problem."""
    import select
    import time

    deadline, head, count, nonzero, ended = time.monotonic() + STREAM_END_WAIT_SECONDS, b"", 0, False, False
    try:  # read on while all is zero (padding, if the stream then ends), up to the deadline
        while count < _STREAM_END_LOOK and not (nonzero and len(head) >= 4):
            if not select.select([descriptor], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break  # nothing more for now: a writer keeping the pipe open, or pieces far apart
            piece = os.read(descriptor, min(65536, _STREAM_END_LOOK - count))
            if not piece:
                ended = True
                break
            head, count, nonzero = (head + piece)[:4], count + len(piece), nonzero or any(piece)
    except (OSError, ValueError):  # a descriptor select cannot watch (pipes on Windows): not checked
        return
    chunk = len(head) == 4 and all(32 <= byte < 127 for byte in head)
    if not count or chunk or (ended and (not nonzero or count < 4)):
        return
    advice = ("the writer could not go back to fill in the length; have it write the length as unknown, "
              "0xFFFFFFFF, as arecord, sox and ffmpeg do")
    if not declared:
        raise AudioError(f"{name}: its header declares no samples, yet samples follow ({advice})")
    import warnings

    warnings.warn(f"{name}: the stream goes on past the {declared} frames its header declares, and the rest was not "
                  f"read ({advice})", stacklevel=2)


def _remaining_bytes(file: Any) -> int:
    position = file.tell()
    end = file.seek(0, io.SEEK_END)
    file.seek(position)
    return end - position


def _unreadable(name: str, opened: Any, error: sf.LibsndfileError) -> str:
    """'not an audio file' or, for a file that starts like one, 'truncated or corrupt'."""
    head = _peek(opened, 0, 12)
    if _needs_ffmpeg(opened, head) and not _has_ffmpeg():
        return (f"{name}: cannot decode this format here: libsndfile does not read MP4/AAC/WMA/WebM audio, and "
                f"neither ffmpeg nor GStreamer is installed for audioread to use (install ffmpeg, or convert the "
                f"file to WAV or FLAC)")
    detail = error.error_string.strip().rstrip(".")
    if detail.startswith("File does not exist"):  # libsndfile's words when its MPEG decoder finds no frames
        detail = "no audio frames found"
    mpeg_sync = len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    if head.startswith(_AUDIO_MAGIC) or mpeg_sync:
        return f"{name}: truncated or corrupt audio file ({detail})"
    return f"{name}: not an audio file ({detail})"


# Containers libsndfile cannot open and audioread decodes only through ffmpeg or GStreamer.
_FFMPEG_EXTENSIONS = (".m4a", ".mp4", ".m4b", ".aac", ".wma", ".webm", ".mka", ".3gp", ".amr")


def _needs_ffmpeg(opened: Any, head: bytes) -> bool:
    """Whether the file is one only ffmpeg-backed decoders read: by its extension, or an MP4 ('ftyp' box), ASF
    (WMA), Matroska/WebM or ADTS AAC header."""
    if isinstance(opened, str) and opened.lower().endswith(_FFMPEG_EXTENSIONS):
        return True
    adts = len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0
    return head[4:8] == b"ftyp" or head.startswith((b"\x30\x26\xb2\x75", b"\x1a\x45\xdf\xa3")) or adts


def _has_ffmpeg() -> bool:
    import audioread

    return any(backend.__name__ != "RawAudioFile" for backend in audioread.available_backends())


def _check_rate_in_header(rate: int, name: str) -> None:
    low, high = HEADER_RATES
    if not low <= rate <= high:
        raise AudioError(f"{name}: implausible sample rate in its header ({rate:,} Hz; audio is {low:,} to "
                         f"{high:,} Hz): a damaged header?")


def _truncation(sound: sf.SoundFile, name: str) -> str | None:
    """The error for a WAV/AIFF file whose header promises more sample data than it holds (libsndfile gives
    the frames that are there and notes the difference in its header log), or None."""
    for match in _SHORT_DATA_CHUNK.finditer(sound.extra_info):
        promised, present = int(match.group(1)), int(match.group(2))
        if promised < _OPEN_LENGTH_BYTES and present < promised - 1:  # one byte of slack: chunk padding
            return f"{name}: truncated (header promises {promised} bytes of samples, the file holds {present})"
    return None


# Bytes a sample takes, per libsndfile subtype (libsndfile gives a header's length in frames).
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
                 "DOUBLE": 8}


def _open_ended(sound: sf.SoundFile) -> bool:
    """Whether the header leaves the length open (or gives it in a sample format this code cannot size)."""
    size = _SAMPLE_BYTES.get(sound.subtype)
    return size is None or sound.frames * size * sound.channels >= _OPEN_LENGTH_BYTES


def _soundfile_blocks(sound: sf.SoundFile, name: str, block_seconds: float, *, short_ending: str = "error",
                      cut_short: str | None = None, at_end: Callable[[int], None] | None = None
                      ) -> Iterator[np.ndarray]:
    """Blocks of `block_seconds`; audio that ends before its header's length is an AudioError, or for a stream
    (`short_ending="warn"`: a recorder stopped early is no damage to what came) a warning after the last block.
    `cut_short`, the error for a file known to be truncated, is raised after its last block; `at_end` is called
    with the frames read after the last block, before the file closes."""
    block_frames = max(1, int(block_seconds * sound.samplerate))
    declared, read = sound.frames, 0
    with sound:
        try:
            # read() returns only the frames that are there (blocks() would fill a short file's tail with
            # uninitialised memory)
            while len(block := sound.read(block_frames, dtype="float32", always_2d=True)):
                read += len(block)
                yield block
        except sf.LibsndfileError as error:
            raise AudioError(f"{name}: truncated or corrupt ({error.error_string.strip().rstrip('.')} after "
                             f"{read} of {declared} frames)") from None
        if at_end is not None:
            at_end(read)
    if cut_short is not None:
        raise AudioError(cut_short)
    if read < declared and short_ending == "error":
        raise AudioError(f"{name}: truncated (the header promises {declared} frames, the file holds {read})")
    if read < declared and not _open_ended(sound):
        import warnings

        warnings.warn(f"{name}: the stream ended after {read} of the {declared} frames its header promised",
                      stacklevel=2)


def _audioread(path: str):
    """(rate, blocks) from audioread for a file libsndfile cannot open, or None if no backend decodes it."""
    import audioread

    try:
        decoder = audioread.audio_open(path)
    except (audioread.DecodeError, OSError, EOFError):
        return None
    try:
        _check_rate_in_header(decoder.samplerate, path)
    except AudioError:
        decoder.close()
        raise

    def blocks():
        with decoder:
            for buffer in decoder:  # 16-bit little-endian interleaved PCM
                pcm = np.frombuffer(buffer, "<i2").reshape(-1, decoder.channels)
                yield pcm.astype(np.float32) / 32768.0

    return decoder.samplerate, blocks()


def _array_blocks(array: np.ndarray, name: str, rate: int, block_seconds: float) -> Iterator[np.ndarray]:
    """An array as float32 `(frames, channels)` blocks; integer arrays are scaled like integer PCM.
    Checks the array at once (not when the blocks are read)."""
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise AudioError(f"{name}: expected samples (frames,) or (frames, channels), got shape {array.shape}")
    if array.shape[0] == 0:
        raise AudioError(f"{name}: no samples (empty array)")
    if array.shape[1] > array.shape[0]:
        raise AudioError(f"{name}: shape {array.shape} looks like (channels, frames); pass (frames, channels), "
                         "e.g. array.T")
    if np.issubdtype(array.dtype, np.signedinteger):
        scale, shift = 2.0 ** (8 * array.dtype.itemsize - 1), 0.0
    elif np.issubdtype(array.dtype, np.unsignedinteger):
        scale = shift = 2.0 ** (8 * array.dtype.itemsize - 1)
    elif np.issubdtype(array.dtype, np.floating):
        scale, shift = 1.0, 0.0
    else:
        raise AudioError(f"{name}: samples must be integers or floats, got {array.dtype}")
    step = max(1, int(block_seconds * rate))
    blocks = (array[begin:begin + step] for begin in range(0, len(array), step))
    return (((block - shift) / scale).astype(np.float32) for block in blocks)


def _mono_blocks(blocks: Iterable[np.ndarray], name: str, rate: int) -> Iterator[np.ndarray]:
    """Refuse non-finite samples; average the channels."""
    position = 0
    for block in blocks:
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            clean = int(np.argmin(finite))
            if clean:  # what comes before the damage, so that a reader window by window keeps its windows
                yield block[:clean, 0] if block.shape[1] == 1 else block[:clean].mean(axis=1)
            raise AudioError(f"{name}: contains NaN or Inf samples (first at {(position + clean) / rate:.3f} s)")
        position += len(block)
        yield block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)


def _resample_blocks(blocks: Iterable[np.ndarray], source_rate: int, sample_rate: int) -> Iterator[np.ndarray]:
    """Mono blocks resampled by soxr's streaming resampler, ceil(n * sample_rate / source_rate) samples in all."""
    if source_rate == sample_rate:
        yield from (block for block in blocks if len(block))
        return
    resampler = soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    consumed = produced = 0
    for block in blocks:
        consumed += len(block)
        out = resampler.resample_chunk(np.ascontiguousarray(block, np.float32))
        produced += len(out)
        if len(out):
            yield out
    wanted = -(-consumed * sample_rate // source_rate) - produced
    tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)[:max(wanted, 0)]
    tail = np.pad(tail, (0, max(wanted, 0) - len(tail)))
    if len(tail):
        yield tail
