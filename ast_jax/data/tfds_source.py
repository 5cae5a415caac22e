"""TFDS `speech_commands`: the 12-class task (10 words, `_silence_`, `_unknown_`), 16 kHz int16 audio.

Each process reads only its own part of a split (`even_split` of the examples, read with TFDS's slicing
API, the same parts `tfds.even_splits` makes), keeps it decoded in memory as int16, and shuffles and
batches it itself. Clips are cut or zero-padded to `clip_samples`; `tfds.testing.mock_data`'s fake clips,
a few dozen samples long, are padded the same way.

config.data fields: data_dir (the TFDS data_dir; None for TFDS's default), tfds_name ("speech_commands").
TensorFlow loads when the source is built (TFDS reads the data set's description with it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging

import numpy as np

from ast_jax.data import DataSource, even_split
from ast_jax.data.files import INT16_SCALE, fit_length

SPLIT_NAMES = {"train": "train", "validation": "validation", "test": "test"}


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def tfds_quietly():
    """A call into TFDS that leaves neither warnings nor empty folders behind. TFDS's absl warnings about a
    data_dir without prepared data ("Variant folder ... has no dataset_info.json", several times) are not
    shown: the error raised for it says what is missing and what to do, in one line. Each hold is a filter of
    its own, so holds in several threads (the prefetching one reads splits too) end independently. And TFDS
    makes a temporary folder (/tmp/tmpXXXXtfds) for each description of unprepared data it looks for online,
    and leaves it, empty when nothing came: those it made during the call are removed if empty."""
    import glob
    import os
    import tempfile

    pattern = os.path.join(tempfile.gettempdir(), "tmp*tfds")
    before = set(glob.glob(pattern))
    logger, only_errors = logging.getLogger("absl"), _ErrorsOnly()
    logger.addFilter(only_errors)
    try:
        yield
    finally:
        logger.removeFilter(only_errors)
        for folder in set(glob.glob(pattern)) - before:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only an empty folder goes


@dataclasses.dataclass
class TFDSSource(DataSource):
    name: str = "speech_commands"
    data_dir: str | None = None
    split_sizes: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        # (split, start, stop) -> int16 audio, labels and lengths of those examples
        self._shards: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._processes = (0, 1)

    def num_examples(self, split: str) -> int:
        if split not in SPLIT_NAMES:
            raise ValueError(f"TFDS {self.name}: no split {split!r}; it has {', '.join(SPLIT_NAMES)}")
        if split not in self.split_sizes:
            # No recorded split sizes (tfds.testing.mock_data has none): read the split once to count it.
            self.split_sizes[split] = len(self._read(split, 0, None)[1])
        return self.split_sizes[split]

    def process_range(self, split, process_index, process_count):
        self._processes = (process_index, process_count)
        return even_split(self.num_examples(split), process_index, process_count)

    def _read(self, split: str, start: int, stop: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """int16 audio, labels and lengths of examples [start, stop) of the split (stop None: to the end)."""
        key = (split, start, stop)
        if key not in self._shards:
            import tensorflow_datasets as tfds

            try:
                part = f"{SPLIT_NAMES[split]}[{start}:{'' if stop is None else stop}]"
                with tfds_quietly():
                    dataset = tfds.load(self.name, split=part, data_dir=self.data_dir or None, shuffle_files=False,
                                        download=False)
            except AssertionError:  # what tfds raises for data that was never prepared (download=False)
                with tfds_quietly():
                    where = tfds.builder(self.name, data_dir=self.data_dir or None).data_dir
                raise ValueError(f"{where}: no prepared TFDS {self.name} data there; prepare it once where the "
                                 f"network is reachable (`tfds build {self.name} --data_dir DIR`) and set "
                                 f"data.data_dir to DIR (evaluate: --tfds-data-dir DIR)") from None
            audio, labels, lengths = [], [], []
            for example in tfds.as_numpy(dataset):
                samples = np.asarray(example["audio"], np.int16).reshape(-1)
                audio.append(fit_length(samples, self.clip_samples))
                lengths.append(min(len(samples), self.clip_samples))
                labels.append(int(example["label"]))
            audio = np.stack(audio) if audio else np.zeros((0, self.clip_samples), np.int16)
            self._shards[key] = (audio, np.asarray(labels, np.int64), np.asarray(lengths, np.int32))
            if stop is None:
                self._shards[split, start, start + len(labels)] = self._shards[key]
        return self._shards[key]

    def load(self, split, indices):
        process_index, process_count = self._processes
        start, stop = even_split(self.num_examples(split), process_index, process_count)
        indices = np.asarray(indices)
        if len(indices) and (indices.min() < start or indices.max() >= stop):
            start, stop = 0, self.num_examples(split)  # outside this process's part: read the whole split
        audio, labels, lengths = self._read(split, start, stop)
        rows = indices - start
        targets = np.zeros((len(rows), self.num_classes), np.float32)
        targets[np.arange(len(rows)), labels[rows]] = 1.0
        return audio[rows].astype(np.float32) / INT16_SCALE, targets, lengths[rows]


def from_config(data_config, clip_samples: int) -> TFDSSource:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError("the tfds source needs TensorFlow Datasets: pip install -c constraints.txt -e '.[tfds]' "
                         "(tensorflow-cpu and tensorflow-datasets)") from None

    name = data_config.get("tfds_name", "speech_commands")
    with tfds_quietly():
        try:
            builder = tfds.builder(name, data_dir=data_config.get("data_dir") or None)
        except tfds.core.registered.DatasetNotFoundError:  # its message lists every data set TFDS has, a line each
            close = difflib.get_close_matches(name, tfds.list_builders(with_community_datasets=False), n=1)
            raise ValueError(f"TFDS has no data set {name!r}"
                             + (f"; did you mean {close[0]!r}?" if close else "")) from None
    labels = list(builder.info.features["label"].names)
    sizes = {split: builder.info.splits[tfds_split].num_examples for split, tfds_split in SPLIT_NAMES.items()
             if tfds_split in builder.info.splits}
    if "num_classes" in data_config and int(data_config.num_classes) != len(labels):
        raise ValueError(f"TFDS {name} has {len(labels)} classes, not {data_config.num_classes}")
    return TFDSSource(labels=labels, clip_samples=clip_samples, name=name, data_dir=data_config.get("data_dir"),
                      split_sizes=sizes)
