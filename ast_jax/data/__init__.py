"""Data sources: where waveforms and targets come from, as per-process numpy batches.

Every source turns a `config.data` ConfigDict into a `DataSource`. The host only reads, resamples and
pads audio; features and augmentation run on the device inside the jitted step (`ast_jax.augment`).

Common `config.data` fields (sources add their own, with defaults):
  source        "synthetic" | "demo" | "speech_commands" | "tfds" | "folder" | "manifest" | "json"
  data_dir      root folder, TFDS data_dir, or manifest path (source-specific)
  num_classes   class count where a source offers several tasks (speech_commands: 35 or 12)
  clip_seconds  every waveform is cut or zero-padded to this length
  sample_rate   16000
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Iterator

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

    def load(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Waveforms `(n, clip_samples)` float32 in [-1, 1] and targets `(n, num_classes)` float32."""
        raise NotImplementedError

    def batches(self, split: str, *, batch_size: int, process_index: int = 0, process_count: int = 1,
                shuffle: bool = False, seed: int = 0, epoch: int = 0, start_batch: int = 0,
                drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """This process's share of each global batch of one epoch.

        The global order is a permutation fixed by (seed, epoch), so a run resumes exactly from
        (epoch, start_batch). Each global batch of `batch_size` rows is cut into `process_count` equal
        slices; process p gets rows [p * b, (p + 1) * b), b = batch_size // process_count. Without
        `drop_remainder` the last batch is padded to full size with `valid = False` rows.
        Yields {"audio": (b, clip_samples) float32, "targets": (b, C) float32, "valid": (b,) bool,
        "index": (b,) int64 example index within the split (-1 for padding)}.
        """
        if batch_size % process_count:
            raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
        total = self.num_examples(split)
        order = np.arange(total)
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(total)
        num_batches = total // batch_size if drop_remainder else -(-total // batch_size)
        local = batch_size // process_count
        for b in range(start_batch, num_batches):
            rows = order[b * batch_size:(b + 1) * batch_size]
            rows = np.concatenate([rows, np.full(batch_size - len(rows), -1)])
            mine = rows[process_index * local:(process_index + 1) * local]
            valid = mine >= 0
            audio = np.zeros((local, self.clip_samples), np.float32)
            targets = np.zeros((local, self.num_classes), np.float32)
            if valid.any():
                audio[valid], targets[valid] = self.load(split, mine[valid])
            yield {"audio": audio, "targets": targets, "valid": valid, "index": mine.astype(np.int64)}


@dataclasses.dataclass
class SyntheticSource(DataSource):
    """Deterministic tones for smoke tests: class k is a sine at 200 * (k + 1) Hz with noise."""

    sizes: dict = dataclasses.field(default_factory=lambda: {"train": 64, "validation": 16, "test": 16})
    sample_rate: int = 16000

    def num_examples(self, split: str) -> int:
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


def build_source(data_config) -> DataSource:
    """The `DataSource` named by `data_config.source`."""
    source = data_config.get("source", "synthetic")
    clip_samples = int(round(data_config.get("clip_seconds", 1.0) * data_config.get("sample_rate", 16000)))
    if source == "synthetic":
        num_classes = int(data_config.get("num_classes", 4))
        return SyntheticSource(labels=[f"tone{k}" for k in range(num_classes)], clip_samples=clip_samples)
    raise ValueError(f"unknown data source {source!r}")
