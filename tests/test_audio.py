"""Audio input: formats, sources, resampling and mixing against librosa and the signals themselves; errors;
long recordings in bounded memory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ast_jax.audio import AudioError, WholeStream, iter_audio_blocks, load_audio, resample, stream_audio
from ast_jax.features import FeatureConfig, fbank, fbank_stream

CLIPS = Path(__file__).parent / "data" / "speech_clips"
CLIP = CLIPS / "left_5170b77f_nohash_2.wav"
RATE = 16000


def noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    shape = (int(seconds * rate), channels) if channels > 1 else (int(seconds * rate),)
    return (0.1 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def librosa_load(path, rate: int = RATE) -> np.ndarray:
    librosa = pytest.importorskip("librosa")
    return librosa.load(path, sr=rate, mono=True)[0]


# ----------------------------------------------------------------------------------------------------------
# Formats and sources

@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_wav_sample_formats_are_scaled_exactly(tmp_path, subtype):
    signal = noise(0.5, RATE)
    path = tmp_path / "clip.wav"
    sf.write(path, signal, RATE, subtype=subtype)
    loaded = load_audio(path)
    assert loaded.dtype == np.float32 and loaded.shape == signal.shape
    np.testing.assert_array_equal(loaded, sf.read(path, dtype="float32")[0])
    bits = {"PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}.get(subtype)
    np.testing.assert_allclose(loaded, signal, atol=2.0 ** -(bits - 1) if bits else 0)


@pytest.mark.parametrize("container", ["FLAC", "OGG", "MP3"])
def test_compressed_formats_equal_librosa(tmp_path, container):
    path = tmp_path / f"clip.{container.lower()}"
    sf.write(path, noise(1.0, 44100, channels=2), 44100, format=container)
    loaded = load_audio(path)
    np.testing.assert_array_equal(loaded, librosa_load(path))
    assert len(loaded) == RATE


def test_path_bytes_and_file_objects_agree():
    expected = load_audio(CLIP)
    data = CLIP.read_bytes()

    class Pipe(io.RawIOBase):  # a stream that cannot seek
        def __init__(self):
            self.inner = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            chunk = self.inner.read(len(buffer))
            buffer[:len(chunk)] = chunk
            return len(chunk)

    with open(CLIP, "rb") as file:
        from_file = load_audio(file)
    for loaded in (load_audio(str(CLIP)), load_audio(data), load_audio(io.BytesIO(data)), from_file,
                   load_audio(Pipe())):
        np.testing.assert_array_equal(loaded, expected)
    np.testing.assert_array_equal(expected, sf.read(CLIP, dtype="float32")[0])
    np.testing.assert_array_equal(expected, librosa_load(CLIP))


def test_a_file_name_that_is_not_utf8(tmp_path):
    """A name with a Latin-1 byte, which Python holds with a surrogate escape (as os.listdir gives it)."""
    name = tmp_path / os.fsdecode(b"caf\xe9.wav")
    name.write_bytes(CLIP.read_bytes())
    assert "\udce9" in str(name)
    np.testing.assert_array_equal(load_audio(name), load_audio(CLIP))
    np.testing.assert_array_equal(load_audio(str(name)), load_audio(CLIP))


def as_recorded(wav: bytes, unknown: int = 0xFFFFFFFF) -> bytes:
    """A WAV file's bytes with the header a recorder writes to a pipe: RIFF and data lengths unknown, written as
    the placeholder `unknown`."""
    data = bytearray(wav)
    start = data.find(b"data")
    data[4:8] = data[start + 4:start + 8] = unknown.to_bytes(4, "little")
    return bytes(data)


def feed(data: bytes | list[bytes], fifo: Path | None = None, pieces: int = 7):
    """A thread writes `data` in pieces (`pieces` of them, or the list's), as a recorder would, into a new pipe
    (whose read end is returned) or into the named pipe `fifo`; a reader that stops early is not an error."""
    import os
    import threading
    import time

    read_end, write_end = (None, None) if fifo else os.pipe()
    step = -(-len(data) // pieces) if isinstance(data, bytes) else 0
    parts = data if isinstance(data, list) else [data[begin:begin + step] for begin in range(0, len(data), step)]

    def write():
        try:
            with (open(fifo, "wb") if fifo else os.fdopen(write_end, "wb")) as pipe:
                for part in parts:
                    pipe.write(part)
                    pipe.flush()
                    time.sleep(0.01)
        except BrokenPipeError:
            pass

    threading.Thread(target=write, daemon=True).start()
    return None if fifo else os.fdopen(read_end, "rb", buffering=0)


def test_pipes_are_read_as_streams(tmp_path):
    """A pipe is read block by block as it fills (its header's unknown length is not an error), and gives the
    samples of the same audio as a file; a format libsndfile cannot stream is a clear error."""
    import os

    signal = noise(2.0, 44100, channels=2)
    sf.write(tmp_path / "same.wav", signal, 44100, subtype="PCM_24")
    expected = load_audio(tmp_path / "same.wav")
    data = as_recorded((tmp_path / "same.wav").read_bytes())
    with feed(data) as pipe, warnings.catch_warnings():
        warnings.simplefilter("error")  # a recorder's open-ended header: the stream may end anywhere
        blocks = list(stream_audio(pipe))
    assert len(blocks) >= 10  # 0.1 s blocks, not one read to the end
    np.testing.assert_array_equal(np.concatenate(blocks), expected)

    whole = (tmp_path / "same.wav").read_bytes()
    for unknown in (0x80000000, 0x7FFFF000):  # arecord's and sox's placeholders mean "unknown" too
        with feed(as_recorded(whole, unknown)) as pipe, warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(np.concatenate(list(stream_audio(pipe))), expected)
    # A header with a length, and the stream ends at half of it: what came is kept, with a warning.
    with feed(whole[:len(whole) // 2]) as pipe, pytest.warns(
            UserWarning, match=r"the stream ended after \d+ of the 88200 frames its header promised"):
        half = np.concatenate(list(stream_audio(pipe)))
    assert 0.45 * len(expected) < len(half) < 0.55 * len(expected)
    np.testing.assert_allclose(half[:-100], expected[:len(half) - 100], atol=1e-6)

    os.mkfifo(tmp_path / "fifo")  # a named pipe (or a shell's <(recorder)): a path, read the same way
    feed(data, fifo=tmp_path / "fifo")
    np.testing.assert_array_equal(load_audio(tmp_path / "fifo"), expected)

    # A writer that cannot go back to fix its header (Python's wave on a pipe) leaves a length that is too short:
    # on a pipe of ours (a named pipe) or standard input, the samples past it are said to be left unread, not
    # silently dropped; a length of 0 would drop them all.
    def declaring(frames: int) -> bytes:
        data = bytearray(whole)
        data[data.find(b"data") + 4:data.find(b"data") + 8] = (frames * 6).to_bytes(4, "little")  # 24-bit stereo
        return bytes(data)

    def fifo(name: str) -> Path:  # one each: a writer still sending into a closed one must not reach the next
        os.mkfifo(tmp_path / name)
        return tmp_path / name

    feed(declaring(4410), fifo=fifo("long"))
    with pytest.warns(UserWarning, match=r"goes on past the 4410 frames its header declares, and the rest was not "
                                         r"read"):
        assert len(load_audio(tmp_path / "long")) == 1600  # 0.1 s at 16 kHz
    feed(declaring(0), fifo=fifo("zero"))
    with pytest.raises(AudioError, match="its header declares no samples, yet samples follow .*0xFFFFFFFF"):
        load_audio(tmp_path / "zero")
    # no problem: a chunk after the data, even cut across two writes, or zero padding to the end
    chunk = b"LIST\x04\x00\x00\x00INFO"
    for n, parts in enumerate(([whole, chunk], [whole, b"\x00" * 8192], [whole + chunk[:2], chunk[2:]])):
        feed(parts, fifo=fifo(f"end{n}"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(load_audio(tmp_path / f"end{n}"), expected)
    # a caller's own pipe is left where the audio ended: files written one after another are read one by one;
    # one marked as a whole stream (standard input in `ast-jax predict -`) is watched as a named pipe is
    with feed(whole + (tmp_path / "same.wav").read_bytes()) as pipe:
        assert len(load_audio(pipe)) == len(load_audio(pipe)) == len(expected)
    with feed(declaring(4410)) as pipe, pytest.warns(UserWarning, match=r"goes on past the 4410 frames"):
        load_audio(WholeStream(pipe.fileno(), "rb", closefd=False))

    sf.write(tmp_path / "x.flac", signal, 44100)
    with feed((tmp_path / "x.flac").read_bytes()) as pipe, pytest.raises(AudioError) as error:
        load_audio(pipe)
    assert "cannot be read as a stream" in str(error.value) and "WAV, AIFF and AU can" in str(error.value)
    feed((tmp_path / "x.flac").read_bytes(), fifo=fifo("flac"))  # the same from a named pipe, closed once
    with pytest.raises(AudioError, match="cannot be read as a stream"):
        load_audio(tmp_path / "flac")


def test_arrays_with_a_sample_rate(tmp_path):
    pcm = (noise(0.5, 22050, channels=2) * 32767).astype(np.int16)
    path = tmp_path / "stereo.wav"
    sf.write(path, pcm, 22050)
    from_file = load_audio(path)
    np.testing.assert_array_equal(load_audio(pcm, source_rate=22050), from_file)
    np.testing.assert_array_equal(load_audio(pcm.astype(np.float64) / 32768, source_rate=22050), from_file)
    unsigned = np.array([0, 128, 255], np.uint8)
    np.testing.assert_array_equal(load_audio(unsigned, source_rate=RATE), [-1.0, 0.0, 127 / 128])
    with pytest.raises(AudioError, match=r"array: shape \(2, 11025\) looks like \(channels, frames\)"):
        load_audio(pcm.T, source_rate=22050)
    with pytest.raises(TypeError, match="source_rate"):
        load_audio(pcm)
    with pytest.raises(TypeError, match="only for arrays"):
        load_audio(path, source_rate=22050)


# ----------------------------------------------------------------------------------------------------------
# Resampling and mixing

@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_equals_librosa_and_keeps_a_tone(tmp_path, rate):
    t = np.arange(2 * rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, tone, rate, subtype="FLOAT")
    loaded = load_audio(path)
    assert len(loaded) == -(-len(tone) * RATE // rate)
    np.testing.assert_array_equal(loaded, librosa_load(path))
    middle = slice(RATE // 10, -RATE // 10)  # away from the filter's edge transients
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(len(loaded)) / RATE)
    assert np.abs(loaded - expected)[middle].max() < 1e-3


def test_downsampling_removes_what_is_above_the_new_nyquist():
    """The reason for a band-limited resampler: a 12 kHz tone must not fold back to 4 kHz at 16 kHz."""
    t = np.arange(48000) / 48000
    alias = resample((0.5 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32), 48000, RATE)
    assert np.sqrt(np.mean(alias[1600:-1600] ** 2)) < 1e-4  # naive decimation would leave 0.35 rms


def test_stereo_is_the_mean_of_different_channels(tmp_path):
    t = np.arange(RATE) / RATE
    left = 0.6 * np.sin(2 * np.pi * 440 * t)
    right = noise(1.0, RATE, seed=5)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), RATE, subtype="FLOAT")
    stored = sf.read(path, dtype="float32")[0]
    np.testing.assert_array_equal(load_audio(path), stored.mean(axis=1))
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-7)
    np.testing.assert_array_equal(load_audio(path), librosa_load(path))
    four = np.stack([left, right, -left, np.zeros(RATE)], axis=1).astype(np.float32)
    np.testing.assert_allclose(load_audio(four, source_rate=RATE), right / 4, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# Edge cases and errors: one line, naming the input

def assert_one_line(error: pytest.ExceptionInfo, name: str):
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{name}: "), message


def test_empty_file(tmp_path):
    path = tmp_path / "clip.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"clip.wav: empty file \(0 bytes\)") as error:
        load_audio(path)
    assert_one_line(error, str(path))
    with pytest.raises(AudioError, match=r"^bytes: empty file"):
        load_audio(b"")
    with pytest.raises(AudioError, match=r"no samples \(empty array\)"):
        load_audio(np.zeros(0, np.float32), source_rate=16000)


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not a recording\n" * 20)
    with pytest.raises(AudioError, match=r"notes.wav: not an audio file \(Format not recognised\)") as error:
        load_audio(path)
    assert_one_line(error, str(path))


def test_formats_only_ffmpeg_reads_say_so_without_it(tmp_path, monkeypatch):
    import ast_jax.audio

    monkeypatch.setattr(ast_jax.audio, "_has_ffmpeg", lambda: False)
    mp4 = b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(200)
    for name, data in (("voice.m4a", mp4), ("voice.bin", mp4), ("song.wma", bytes(300))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(AudioError, match=rf"{name}: cannot decode this format here: .* \(install ffmpeg, or "
                                             r"convert the file to WAV or FLAC\)") as error:
            load_audio(path)
        assert_one_line(error, str(path))
    path = tmp_path / "notes.m4a.txt"  # neither the name nor the bytes of such a container
    path.write_text("these are my notes\n" * 20)
    with pytest.raises(AudioError, match="not an audio file"):
        load_audio(path)


def test_an_mp3_with_a_tag_and_no_frames(tmp_path):
    path = tmp_path / "tag_only.mp3"
    path.write_bytes(b"ID3" + bytes(100))
    with pytest.raises(AudioError, match=r"tag_only.mp3: truncated or corrupt audio file \(no audio frames found\)") \
            as error:
        load_audio(path)
    assert_one_line(error, str(path))


def test_truncated_files(tmp_path):
    signal = noise(1.0, RATE, channels=2)
    for container, cut in (("WAV", 0.5), ("FLAC", 0.5), ("MP3", 0.3), ("WAV", 30), ("OGG", 0.5), ("OGG", 0.99)):
        buffer = io.BytesIO()
        sf.write(buffer, signal, RATE, format=container)
        data = buffer.getvalue()
        path = tmp_path / f"cut.{container.lower()}"
        path.write_bytes(data[:int(len(data) * cut) if cut < 1 else cut])
        expected = "truncated or corrupt" if cut == 30 else "truncated"
        with pytest.raises(AudioError, match=f"cut.{container.lower()}: {expected}") as error:
            load_audio(path)
        assert_one_line(error, str(path))
    # Ogg states no length: a cut Vorbis or Opus file decodes as a shorter one, unless its last page is checked
    for subtype in ("VORBIS", "OPUS"):
        buffer = io.BytesIO()
        sf.write(buffer, signal, RATE, format="OGG", subtype=subtype)
        data = buffer.getvalue()
        assert len(load_audio(data)) == RATE  # whole
        for cut in (0.9, 0.99):
            with pytest.raises(AudioError, match=r"^bytes: truncated \(the Ogg stream does not end with a complete "):
                load_audio(data[:int(len(data) * cut)])


def test_non_finite_samples(tmp_path):
    signal = noise(1.0, RATE)
    signal[8000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, signal, RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan.wav: contains NaN or Inf samples \(first at 0.500 s\)") as error:
        load_audio(path)
    assert_one_line(error, str(path))
    signal[8000] = np.inf
    with pytest.raises(AudioError, match=r"^array: contains NaN or Inf"):
        load_audio(signal, source_rate=RATE)


def test_a_sample_rate_no_audio_has_is_a_damaged_header(tmp_path, monkeypatch):
    """A header claiming 1 Hz would be resampled into 16,000 times the samples (24 GB from 0.4 MB); 4 GHz is
    refused by libsndfile and would go to audioread. Both are one line, from a file, bytes or a pipe."""
    sf.write(tmp_path / "good.wav", noise(0.5, 8000), 8000, subtype="PCM_16")
    good = (tmp_path / "good.wav").read_bytes()
    assert len(load_audio(tmp_path / "good.wav")) == 8000  # 8 kHz is audio
    for rate in (1, 999, 1_000_001, 4_000_000_000):
        data = bytearray(good)
        data[24:28] = rate.to_bytes(4, "little")  # the fmt chunk's sample rate
        data[28:32] = (2 * rate % 2**32).to_bytes(4, "little")  # and its byte rate
        path = tmp_path / f"rate{rate}.wav"
        path.write_bytes(data)
        message = rf"implausible sample rate in its header \({rate:,} Hz; audio is 1,000 to 1,000,000 Hz\)"
        with pytest.raises(AudioError, match=message) as error:
            load_audio(path)
        assert_one_line(error, str(path))
        if rate < 4_000_000_000:  # libsndfile refuses that header on bytes and pipes (no audioread there)
            with pytest.raises(AudioError, match=message):
                load_audio(bytes(data))
            with feed(bytes(data)) as pipe, pytest.raises(AudioError, match=message):
                load_audio(pipe)
    monkeypatch.setattr(sf, "SoundFile", lambda *a, **k: (_ for _ in ()).throw(sf.LibsndfileError(0)))
    with pytest.raises(AudioError, match=r"\(1 Hz; audio"):  # audioread's reader is checked too
        load_audio(tmp_path / "rate1.wav")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "absent.wav")
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioError, match=r"folder.wav: is a folder, not an audio file$"):
        load_audio(tmp_path / "folder.wav")


def test_silence_and_audio_shorter_than_a_frame(tmp_path):
    """Both load as they are; shorter than one frame gives model input of padding only (see features)."""
    path = tmp_path / "short.wav"
    sf.write(path, np.zeros(100, np.int16), RATE)
    short = load_audio(path)
    assert short.shape == (100,) and not short.any()
    assert fbank(short[None], FeatureConfig()).shape == (1, 0, 128)


def test_audioread_fallback(tmp_path, monkeypatch):
    """Files libsndfile cannot open go to audioread (here its stdlib WAV reader stands in for ffmpeg)."""
    expected = load_audio(CLIP)

    def refuse(*args, **kwargs):
        raise sf.LibsndfileError(0, prefix="Error opening: ")

    monkeypatch.setattr(sf, "SoundFile", refuse)
    np.testing.assert_array_equal(load_audio(CLIP), expected)


# ----------------------------------------------------------------------------------------------------------
# Long recordings

def test_stream_and_windows_equal_the_whole_file(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, noise(30.0, 44100, channels=2, seed=2), 44100, subtype="PCM_24")
    whole = load_audio(path)
    np.testing.assert_array_equal(np.concatenate(list(stream_audio(path, block_seconds=1.3))), whole)
    for window, hop in ((1.0, 0.5), (2.5, 1.0), (1.0, 1.5), (40.0, 1.0)):
        windows = list(iter_audio_blocks(path, window, hop))
        size, step = int(window * RATE), int(hop * RATE)
        # up to the first window that reaches the end; a hop longer than the window may step past it instead
        count = 1 if len(whole) <= size else min(1 + -(-(len(whole) - size) // step), -(-len(whole) // step))
        assert [start for start, _ in windows] == [i * hop for i in range(count)]
        assert all(len(piece) for _, piece in windows)
        for start, piece in windows:
            first = int(round(start * RATE))
            np.testing.assert_array_equal(piece, whole[first:first + size])
    features = np.concatenate([np.asarray(block) for block in fbank_stream(stream_audio(path, block_seconds=0.7),
                                                                           FeatureConfig(), block_frames=250)])
    np.testing.assert_allclose(features, np.asarray(fbank(whole[None], FeatureConfig()))[0], atol=1e-5)


ONE_HOUR_CHILD = textwrap.dedent("""
    import json, resource, sys
    from itertools import islice
    import numpy as np
    from ast_jax.audio import iter_audio_blocks, stream_audio
    from ast_jax.features import FeatureConfig, fbank_stream

    path, config = sys.argv[1], FeatureConfig()
    for block in islice(fbank_stream(stream_audio(path), config), 3):  # compile and warm the allocator
        np.asarray(block)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    frames = 0
    for block in fbank_stream(stream_audio(path), config):
        frames += np.asarray(block).shape[0]
    windows = sum(1 for _ in iter_audio_blocks(path, 10.0, 5.0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (peak - baseline) / 1024, "frames": frames, "windows": windows}))
""")


@pytest.mark.slow
def test_one_hour_recording_in_bounded_memory(tmp_path):
    """An hour at 8 kHz: resampled whole it would be 230 MB of float32 and its features 184 MB."""
    path = tmp_path / "hour.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=8000, channels=1, subtype="PCM_16") as file:
        for minute in range(60):
            file.write((0.1 * rng.standard_normal(8000 * 60)).astype(np.float32))
    result = subprocess.run([sys.executable, "-c", ONE_HOUR_CHILD, str(path)], capture_output=True, text=True,
                            check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["frames"] == FeatureConfig().num_frames(3600 * RATE)
    assert measured["windows"] == 1 + (3600 - 10) // 5
    assert measured["growth_mb"] < 100, measured
