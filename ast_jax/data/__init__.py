"""Data sources: where waveforms and targets come from, as per-process numpy batches.

Every source turns a `config.data` ConfigDict into a `DataSource`. The host only reads, resamples and
pads audio; features and augmentation run on the device inside the jitted step (`ast_jax.augment`).

Common `config.data` fields (sources add their own, with defaults):
  source        "synthetic" | "demo" | "speech_commands" | "tfds" | "folder" | "manifest" | "json"
  data_dir      root folder, TFDS data_dir, or manifest path (source-specific)
  num_classes   class count where a source offers several tasks (speech_commands: 35 or 12)
  clip_seconds  every waveform is cut or zero-padded to this length
  sample_rate   16000
  cache_dir     where file-based sources keep their prepared (decoded) copy; default ~/.cache/ast_jax/prepared
  prepared      False: decode the files for every batch instead of keeping a prepared copy
  balanced      sample by the source's example weights (AudioSet recipe; file sources weigh clips by label)
Fields only some sources read are in SOURCE_FIELDS.

Sources and the task each gives:
  demo             12-class Speech Commands subset shipped with the project (`ast_jax.data.demo`)
  speech_commands  raw Speech Commands v0.02 folder: 35 classes (released checkpoint) or 12 (`.speech_commands`)
  tfds             TFDS `speech_commands`: 12 classes (`.tfds_source`)
  folder/manifest  the user's own audio: <root>/<label>/*.wav or a CSV of path,label[,split] (`.folder`)
  json             the original recipes' JSON manifests with a label CSV: ESC-50, AudioSet (`.recipe_json`)
"""

from __future__ import annotations

import dataclasses
import importlib
import queue
import threading
import zlib
from typing import Iterable, Iterator

import numpy as np


@dataclasses.dataclass
class DataSource:
    """Examples of one data set, split by name, delivered as fixed-shape numpy batches.

    Subclasses implement `num_examples(split)` and `load(split, indices)`; batching, shuffling and the
    split across processes live here so that every source resumes and shards the same way.
    """

    labels: list[str]
    clip_samples: int
    multilabel: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def num_examples(self, split: str) -> int:
        raise NotImplementedError

    def load(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """Waveforms `(n, clip_samples)` float32 in [-1, 1] and targets `(n, num_classes)` float32, and
        optionally each clip's true length in samples `(n,)` before zero padding (default: all full; -1 for a
        clip that could not be read, which `batches` serves as a padding row)."""
        raise NotImplementedError

    def example_weights(self, split: str) -> np.ndarray | None:
        """Per-example sampling weights for balanced sampling, or None where the source has none."""
        return None

    def fingerprint(self, split: str) -> str | None:
        """A digest of which examples the split holds, in order, with their targets, that stays the same when the
        data moves to another folder (a resumed run checks it), or None where the source gives none."""
        return None

    def process_range(self, split: str, process_index: int, process_count: int) -> tuple[int, int] | None:
        """The examples [start, stop) this process reads itself, or None when every process reads the whole split.

        Sources that read one shard per process (TFDS) return `even_split(...)`; each process then shuffles
        and batches only its shard, so the global batch is the concatenation of the per-process batches.
        """
        return None

    def batches(self, split: str, *, batch_size: int, process_index: int = 0, process_count: int = 1,
                shuffle: bool = False, seed: int = 0, epoch: int = 0, start_batch: int = 0,
                drop_remainder: bool = False, balanced: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """This process's share of each global batch of one epoch.

        The global order is a permutation fixed by (seed, epoch), so a run resumes exactly from
        (epoch, start_batch). Each global batch of `batch_size` rows is cut into `process_count` equal
        slices; process p gets rows [p * b, (p + 1) * b), b = batch_size // process_count. Without
        `drop_remainder` the last batch is padded to full size with `valid = False` rows.
        Yields {"audio": (b, clip_samples) float32, "targets": (b, C) float32, "valid": (b,) bool,
        "index": (b,) int64 example index within the split (-1 for padding), "length": (b,) int32 samples of
        each clip before zero padding (0 for padding rows): pass it to the features as `num_samples` so that
        a short clip's features end in zero rows, as when the clip is extracted alone}.
        `balanced` replaces the permutation by as many draws with replacement, in proportion to
        `example_weights(split)` (the original's WeightedRandomSampler), still fixed by (seed, epoch).
        """
        if batch_size % process_count:
            raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
        total = self.num_examples(split)
        local = batch_size // process_count
        shard = self.process_range(split, process_index, process_count)
        if balanced:
            weights = self.example_weights(split)
            if weights is None or shard is not None:
                raise ValueError(f"{type(self).__name__} cannot sample {split!r} balanced: it gives no example weights")
            order = np.random.default_rng([seed, epoch]).choice(total, size=total, p=weights / np.sum(weights))
            num_batches = total // batch_size if drop_remainder else -(-total // batch_size)
        elif shard is None:
            order = np.random.default_rng([seed, epoch]).permutation(total) if shuffle else np.arange(total)
            num_batches = total // batch_size if drop_remainder else -(-total // batch_size)
        else:
            # Every process must run the same number of steps: count them from the smallest (or largest) shard.
            sizes = [stop - start for start, stop in (even_split(total, p, process_count) for p in range(process_count))]
            start, stop = shard
            order = np.arange(start, stop)
            if shuffle:
                order = start + np.random.default_rng([seed, epoch, process_index]).permutation(stop - start)
            num_batches = min(sizes) // local if drop_remainder else -(-max(sizes) // local)
        for b in range(start_batch, num_batches):
            if shard is None:
                rows = order[b * batch_size:(b + 1) * batch_size]
                rows = np.concatenate([rows, np.full(batch_size - len(rows), -1)])
                mine = rows[process_index * local:(process_index + 1) * local]
            else:
                mine = order[b * local:(b + 1) * local]
                mine = np.concatenate([mine, np.full(local - len(mine), -1)])
            valid = mine >= 0
            audio = np.zeros((local, self.clip_samples), np.float32)
            targets = np.zeros((local, self.num_classes), np.float32)
            lengths = np.zeros(local, np.int32)
            if valid.any():
                loaded = self.load(split, mine[valid])
                audio[valid], targets[valid] = loaded[:2]
                lengths[valid] = loaded[2] if len(loaded) > 2 else self.clip_samples
                unreadable = lengths < 0  # a clip `load` could not read: a padding row from here on
                if unreadable.any():
                    valid &= ~unreadable
                    audio[unreadable], targets[unreadable], lengths[unreadable] = 0.0, 0.0, 0
            yield {"audio": audio, "targets": targets, "valid": valid, "index": mine.astype(np.int64),
                   "length": lengths}


@dataclasses.dataclass
class SyntheticSource(DataSource):
    """Deterministic tones for smoke tests: class k is a sine at 200 * (k + 1) Hz with noise."""

    sizes: dict = dataclasses.field(default_factory=lambda: {"train": 64, "validation": 16, "test": 16})
    sample_rate: int = 16000

    def num_examples(self, split: str) -> int:
        if split not in self.sizes:
            raise ValueError(f"synthetic source: no split {split!r}; it has {', '.join(self.sizes)}")
        return self.sizes[split]

    def load(self, split, indices):
        t = np.arange(self.clip_samples) / self.sample_rate
        audio, targets = [], np.zeros((len(indices), self.num_classes), np.float32)
        for row, i in enumerate(indices):
            rng = np.random.default_rng([zlib.crc32(split.encode()), int(i)])
            k = int(i) % self.num_classes
            audio.append(0.5 * np.sin(2 * np.pi * 200 * (k + 1) * t) + 0.05 * rng.standard_normal(len(t)))
            targets[row, k] = 1
        return np.asarray(audio, np.float32), targets


def even_split(total: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of part `index` of `count` near-equal parts of `total` (larger parts first, as tfds.even_splits)."""
    base, extra = divmod(total, count)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def prefetch(batches: Iterable, size: int = 2) -> Iterator:
    """Iterate `batches` on a background thread, keeping up to `size` items ready.

    Reading and decoding release the GIL (file I/O, numpy copies), so the host prepares the next batches
    while the device computes. An exception in the producer is raised here, in the consumer.
    """
    ready: queue.Queue = queue.Queue(maxsize=max(1, size))
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in batches:
                if stop.is_set():
                    return
                ready.put(item)
        except BaseException as error:  # handed to the consumer, which raises it
            ready.put(error)
            return
        ready.put(done)

    thread = threading.Thread(target=produce, daemon=True, name="ast-jax-prefetch")
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.01)


# source name -> module defining `from_config(data_config, clip_samples) -> DataSource`
_SOURCES = {
    "demo": "ast_jax.data.demo",
    "speech_commands": "ast_jax.data.speech_commands",
    "tfds": "ast_jax.data.tfds_source",
    "folder": "ast_jax.data.folder",
    "manifest": "ast_jax.data.folder",
    "json": "ast_jax.data.recipe_json",
}


# Fields of `config.data` that only some sources read, with their defaults (the common ones are in the training
# config's defaults). `ast-jax train` adds the chosen source's to the config, so they can be overridden.
SOURCE_FIELDS: dict[str, dict] = {
    "folder": dict(labels=(), validation_fraction=0.1, test_fraction=0.1),
    "manifest": dict(labels=(), validation_fraction=0.1, test_fraction=0.1),
    "json": dict(json={}, label_csv=""),
    "tfds": dict(tfds_name="speech_commands"),
}


def build_source(data_config) -> DataSource:
    """The `DataSource` named by `data_config.source`."""
    source = data_config.get("source", "synthetic")
    clip_samples = int(round(data_config.get("clip_seconds", 1.0) * data_config.get("sample_rate", 16000)))
    if source == "synthetic":
        num_classes = int(data_config.get("num_classes", 4))
        return SyntheticSource(labels=[f"tone{k}" for k in range(num_classes)], clip_samples=clip_samples)
    if source not in _SOURCES:
        raise ValueError(f"data.source: unknown data source {source!r}; choose from {sorted(['synthetic', *_SOURCES])}")
    module = importlib.import_module(_SOURCES[source])
    return module.from_config(data_config, clip_samples)
