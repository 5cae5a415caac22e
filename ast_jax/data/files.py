"""Sources made of audio files: a list of clips with targets per split, and their prepared local copy.

Decoding a compressed or resampled file costs far more than a training step's share of host time, so a
split is *prepared* once: every clip is decoded (any format and sample rate `ast_jax.audio.load_audio`
reads), resampled, cut or zero-padded to `clip_samples` and stored as one int16 array on disk. Batches are
then slices of a memory map: a copy and a scale, thousands of clips per second per core.

The copy lives in `cache_dir/<key>/` where the key hashes the file list (paths, sizes, modification times),
the sample rate and the clip length, so a changed file or setting prepares a new copy. Clips that cannot be
read, are empty or are corrupt are reported with their paths, counted and left out when the copy is made;
the count is reported again whenever the copy is reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from ast_jax._atomic import UMASK
from ast_jax.data import DataSource

log = logging.getLogger("ast_jax.data")

# Bump when the prepared layout or the decoding changes, so old copies are not reused.
PREPARED_VERSION = 2
REPEATED_PROBLEMS = 5  # skipped clips logged again when a prepared copy is reused (all are in its done.json)
INT16_SCALE = 32768.0
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64")


# What decoding a bad clip raises: AudioError (a ValueError), OSError, and the decoders' own RuntimeError/EOFError.
DECODE_ERRORS = (OSError, ValueError, RuntimeError, EOFError)


def decode_problem(error: Exception) -> str:
    """What reports say of a clip or input that could not be decoded: "file not found", or the decoder's
    message (the data layer's reports and the commands' per-file lines alike). An operating-system error is
    given by its reason alone ("permission denied"): the reports name the file already."""
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error)


def default_cache_dir() -> Path:
    """$AST_JAX_CACHE/prepared, else $XDG_CACHE_HOME/ast_jax/prepared (~/.cache/ast_jax/prepared)."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("AST_JAX_CACHE") or Path(cache_home, "ast_jax")) / "prepared"


@dataclasses.dataclass(frozen=True)
class Clip:
    """One example: a file, optionally only the samples [start, stop) of it (after resampling)."""

    path: str
    start: int = 0
    stop: int | None = None

    def describe(self) -> str:
        return self.path if self.stop is None else f"{self.path}[{self.start}:{self.stop}]"


@dataclasses.dataclass
class SplitFiles:
    clips: list[Clip]
    targets: np.ndarray  # (n, num_classes) float32


@dataclasses.dataclass
class Prepared:
    audio: np.ndarray  # (kept, clip_samples) int16, usually a read-only memory map
    lengths: np.ndarray  # (kept,) int32 samples of each clip before zero padding
    kept: np.ndarray  # (kept,) positions in the split's clip list
    skipped: list[tuple[str, str]]  # (clip, problem)


def fit_length(samples: np.ndarray, clip_samples: int) -> np.ndarray:
    """Keep the first `clip_samples` samples, or pad with zeros at the end."""
    if len(samples) >= clip_samples:
        return samples[:clip_samples]
    return np.pad(samples, (0, clip_samples - len(samples)))


def to_int16(samples: np.ndarray) -> np.ndarray:
    # 16-bit sources come back exactly; others (24-bit, float, resampled) are rounded to 16 bits.
    return np.clip(np.round(samples * INT16_SCALE), -32768, 32767).astype(np.int16)


class ClipReader:
    """Decodes clips at one sample rate, keeping the last whole file for sources that cut many clips from it."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self._last: tuple[str, np.ndarray] | None = None

    def read(self, clip: Clip) -> np.ndarray:
        from ast_jax.audio import load_audio

        if clip.stop is not None and self._last is not None and self._last[0] == clip.path:
            samples = self._last[1]
        else:
            samples = load_audio(clip.path, sample_rate=self.sample_rate)
            if clip.stop is not None:
                self._last = (clip.path, samples)
        samples = samples[clip.start:clip.stop]
        if samples.size == 0:
            raise ValueError(f"{clip.describe()}: empty audio (no samples)")
        if not np.all(np.isfinite(samples)):
            raise ValueError(f"{clip.describe()}: corrupt audio (non-finite samples)")
        return samples


def skip_message(clip: str, problem: str) -> str:
    """The line for a clip left out (`clip` as `Clip.describe` gives it): the problem, which names the file where
    the decoder said it, else the clip and the problem."""
    file = clip[:clip.rindex("[")] if clip.endswith("]") else clip
    return problem if file in problem else f"{clip}: {problem}"


def _file_facts(clip: Clip) -> list:
    try:
        stat = os.stat(clip.path)
        return [clip.path, clip.start, clip.stop, stat.st_size, stat.st_mtime_ns]
    except OSError:
        return [clip.path, clip.start, clip.stop, None, None]


def prepare(clips: Sequence[Clip], *, sample_rate: int, clip_samples: int, cache_dir: str | Path | None = None,
            name: str = "split", workers: int | None = None) -> Prepared:
    """The prepared copy of `clips`, made now if no valid copy is in `cache_dir` yet."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = hashlib.sha256(json.dumps(
        [PREPARED_VERSION, sample_rate, clip_samples, [_file_facts(c) for c in clips]]).encode()).hexdigest()[:20]
    folder = cache_dir / f"{name}-{key}"
    reused = (folder / "done.json").is_file()
    if not reused:
        _write_prepared(folder, clips, sample_rate, clip_samples, name, workers)  # logs each clip it skips
    facts = json.loads((folder / "done.json").read_text())
    skipped = [tuple(item) for item in facts["skipped"]]
    if reused and facts.get("cut"):
        _warn_of_cut_clips(name, facts["cut"], len(clips), clip_samples / sample_rate)
    if skipped and reused:  # the copy was made by an earlier run, which logged them all; a few again, and where
        for clip, problem in skipped[:REPEATED_PROBLEMS]:
            log.warning("%s (skipped)", skip_message(clip, problem))
        log.warning("%s: %d of %d clips are missing, unreadable, empty or corrupt and are left out (%s; all listed "
                    "in %s)", name, len(skipped), len(clips),
                    f"the first {REPEATED_PROBLEMS} above" if len(skipped) > REPEATED_PROBLEMS else "above",
                    folder / "done.json")
    kept = np.load(folder / "kept.npy")
    audio = np.load(folder / "audio.npy", mmap_mode="r") if len(kept) else np.zeros((0, clip_samples), np.int16)
    return Prepared(audio=audio, lengths=np.load(folder / "lengths.npy"), kept=kept, skipped=skipped)


def _warn_of_cut_clips(name: str, cut: dict, total: int, seconds: float) -> None:
    log.warning("%s: %d of %d clips %s longer than data.clip_seconds (%.4g s; the longest %.4g s; the first "
                "listed: %s) and keep only their first %.4g s; a longer data.clip_seconds (with "
                "features.target_length, about 100 frames a second; configs/folder.py:PATH,SECONDS sets both) "
                "keeps more", name, cut["count"], total, "is" if cut["count"] == 1 else "are", seconds,
                cut["longest"], cut["first"], seconds)


def _write_prepared(folder: Path, clips: Sequence[Clip], sample_rate: int, clip_samples: int, name: str,
                    workers: int | None) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        os.chmod(staging, 0o777 & ~UMASK)  # mkdtemp makes the folder private; give it a normal folder's mode
        audio = np.lib.format.open_memmap(staging / "audio.npy", mode="w+", dtype=np.int16,
                                          shape=(len(clips), clip_samples))
        ok = np.zeros(len(clips), bool)
        lengths = np.zeros(len(clips), np.int32)
        problems: dict[int, str] = {}
        beyond_full_scale: list[int] = []  # list.append is atomic across the decoding threads
        longer: list[tuple[int, int]] = []  # (clip, its length): clips cut to clip_samples
        # a clip is cut when it makes more analysis frames than clip_samples do (samples short of a frame make none)
        from ast_jax.features import FeatureConfig

        frames = FeatureConfig(sample_rate=sample_rate).num_frames
        kept_frames = frames(clip_samples)

        # Clips cut from one long file come in runs; each worker takes whole runs so it decodes each file once.
        runs: list[list[int]] = []
        for i, clip in enumerate(clips):
            if runs and clip.stop is not None and clips[runs[-1][-1]].path == clip.path:
                runs[-1].append(i)
            else:
                runs.append([i])

        def decode(run: list[int]) -> None:
            reader = ClipReader(sample_rate)
            for i in run:
                try:
                    samples = reader.read(clips[i])
                    if len(samples) and np.abs(samples).max() > 1.0:
                        beyond_full_scale.append(i)
                    if frames(len(samples)) > kept_frames:
                        longer.append((i, len(samples)))
                    audio[i] = to_int16(fit_length(samples, clip_samples))
                    lengths[i] = min(len(samples), clip_samples)
                    ok[i] = True
                except DECODE_ERRORS as error:
                    problems[i] = decode_problem(error)

        from tqdm.auto import tqdm

        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            list(tqdm(pool.map(decode, runs), total=len(runs), desc=f"preparing {name}", unit="file",
                      disable=len(runs) < 500, leave=False))
        for i in sorted(problems):
            log.warning("%s (skipped)", skip_message(clips[i].describe(), problems[i]))
        if beyond_full_scale:  # float files may hold samples beyond +-1, which 16 bits cannot
            log.warning("%s: %d clip%s samples beyond full scale (the first: %s); the prepared 16-bit copy "
                        "clips them at +-1 (data.prepared=False decodes the files for every batch and keeps them)",
                        name, len(beyond_full_scale), " has" if len(beyond_full_scale) == 1 else "s have",
                        clips[min(beyond_full_scale)].describe())
        kept = np.flatnonzero(ok)
        if len(kept) < len(clips):
            # Compact the good rows to the front, then keep only those.
            for row, i in enumerate(kept):
                if row != i:
                    audio[row] = audio[i]
            audio.flush()
            del audio
            compact = np.load(staging / "audio.npy", mmap_mode="r")[:len(kept)]
            np.save(staging / "audio_kept.npy", compact)
            del compact
            os.replace(staging / "audio_kept.npy", staging / "audio.npy")
        else:
            audio.flush()
            del audio
        np.save(staging / "kept.npy", kept)
        np.save(staging / "lengths.npy", lengths[kept])
        skipped = [[clips[i].describe(), problems[i]] for i in sorted(problems)]
        cut = None
        if longer:
            first, _ = min(longer)
            cut = {"count": len(longer), "longest": max(n for _, n in longer) / sample_rate,
                   "first": clips[first].describe()}
        (staging / "done.json").write_text(json.dumps({"name": name, "clips": len(clips), "skipped": skipped,
                                                       "cut": cut}))
        if cut:
            _warn_of_cut_clips(name, cut, len(clips), clip_samples / sample_rate)
        if skipped:
            log.warning("%s: %d of %d clips are missing, unreadable, empty or corrupt and are left out", name,
                        len(skipped), len(clips))
        try:
            os.replace(staging, folder)
        except OSError:  # another process prepared the same copy first
            if not (folder / "done.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclasses.dataclass
class FileSource(DataSource):
    """Clips listed per split, served from their prepared copy (or decoded per batch with `prepared=False`)."""

    splits: dict[str, SplitFiles] = dataclasses.field(default_factory=dict)
    sample_rate: int = 16000
    cache_dir: str | None = None
    prepared: bool = True
    name: str = "files"

    def __post_init__(self):
        self._prepared: dict[str, Prepared] = {}
        self.unreadable: dict[str, str] = {}  # clip -> problem, found while decoding per batch; logged once each

    def split_files(self, split: str) -> SplitFiles:
        if split not in self.splits:
            raise ValueError(f"{self.name}: no split {split!r}; it has {', '.join(self.splits) or 'none'}")
        return self.splits[split]

    def prepare(self, split: str) -> Prepared:
        """Decode the split into its prepared copy now (it is otherwise made on first use)."""
        if split not in self._prepared:
            files = self.split_files(split)
            self._prepared[split] = prepare(files.clips, sample_rate=self.sample_rate,
                                            clip_samples=self.clip_samples, cache_dir=self.cache_dir,
                                            name=f"{self.name}-{split}")
        return self._prepared[split]

    def num_examples(self, split: str) -> int:
        if self.prepared:
            return len(self.prepare(split).kept)
        return len(self.split_files(split).clips)

    def targets(self, split: str) -> np.ndarray:
        """Targets of every example of the split, in index order."""
        files = self.split_files(split)
        return files.targets[self.prepare(split).kept] if self.prepared else files.targets

    def fingerprint(self, split: str) -> str:
        """Each example's file (its folder's and its own name, without the extension: the data may move or be
        re-encoded), the part of it taken and its targets, in order, hashed."""
        files = self.split_files(split)
        kept = self.prepare(split).kept if self.prepared else np.arange(len(files.clips))
        digest = hashlib.sha256()
        for i in kept:
            clip = files.clips[i]
            path = Path(clip.path)
            name = f"{path.parent.name}/{path.stem}[{clip.start}:{clip.stop}]\n"
            digest.update(name.encode("utf-8", "surrogateescape"))
        digest.update(np.ascontiguousarray(files.targets[kept], np.float32).tobytes())
        return digest.hexdigest()[:20]

    def example_weights(self, split: str) -> np.ndarray:
        """The AudioSet recipe's balanced-sampling weights (egs/audioset/gen_weight_file.py), from the labels:
        each class weighs 1000 / (its clip count in the split + 0.01), and a clip the sum over its labels."""
        targets = self.targets(split) > 0
        label_weight = 1000.0 / (targets.sum(axis=0) + 0.01)
        return (targets * label_weight).sum(axis=1)

    def load(self, split, indices):
        indices = np.asarray(indices)
        if self.prepared:
            prepared = self.prepare(split)
            order = np.argsort(indices)  # sorted reads from the memory map, then back to batch order
            audio = np.empty((len(indices), self.clip_samples), np.float32)
            audio[order] = prepared.audio[indices[order]]
            audio *= 1.0 / INT16_SCALE
            return audio, self.split_files(split).targets[prepared.kept[indices]], prepared.lengths[indices]
        files = self.split_files(split)
        # One reader for the batch: clips cut from one long file (the 12-class task's _silence_ windows) share its
        # decoding (the reader keeps the last file cut; threads that race on it only decode again).
        reader = ClipReader(self.sample_rate)

        def decode(i):
            try:
                return reader.read(files.clips[i])
            except DECODE_ERRORS as error:
                clip = files.clips[i].describe()
                if clip not in self.unreadable:
                    self.unreadable[clip] = decode_problem(error).removeprefix(clip + ": ")
                    log.warning("%s: %s; left out of every batch", clip, self.unreadable[clip])
                return None

        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            decoded = list(pool.map(decode, indices))
        silence = np.zeros(0, np.float32)
        audio = np.stack([fit_length(silence if samples is None else samples, self.clip_samples)
                          for samples in decoded]).astype(np.float32)
        # -1: unreadable, which `batches` turns into a padding row (valid False), as the prepared copy leaves it out.
        lengths = np.array([-1 if samples is None else min(len(samples), self.clip_samples) for samples in decoded],
                           np.int32)
        return audio, files.targets[indices], lengths


def one_hot(label_indices: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """(n, num_classes) float32 multi-hot rows from each example's label indices."""
    targets = np.zeros((len(label_indices), num_classes), np.float32)
    for row, labels in enumerate(label_indices):
        targets[row, list(labels)] = 1.0
    return targets


def file_or_dangling_link(path: str | os.PathLike) -> bool:
    """A file, or a link that leads nowhere: kept among found inputs so that reading it reports it, rather than
    the data shrinking unnoticed (pipes, devices and folders are not)."""
    return os.path.isfile(path) or (os.path.islink(path) and not os.path.exists(path))


def spelled_path(path: str) -> str:
    """A path as a list names it, spelled one way: "./a/x.wav" and "a/x.wav", or the NFC and NFD forms of one
    name, are one clip."""
    return unicodedata.normalize("NFC", os.path.normpath(path)).replace(os.sep, "/")


def audio_files(folder: Path) -> list[Path]:
    """Audio files under `folder` (any depth, through links to folders, each real folder once), sorted; hidden
    files and folders under it (.Trash, .ipynb_checkpoints, a dot-named backup) are ignored. A link that leads
    nowhere is kept, so that reading it reports it rather than the data shrinking unnoticed; other things that
    are not files (pipes, devices) are left out."""
    found, seen = [], set()
    for root, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree, or a second link to the same folder
            folders.clear()
            continue
        seen.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        found.extend(Path(root) / name for name in names
                     if Path(name).suffix.lower() in AUDIO_EXTENSIONS and not name.startswith("."))
    return sorted(path for path in found if file_or_dangling_link(path))
