"""The user's own audio: a labelled folder, or a CSV manifest.

Folder (`source="folder"`, data_dir = the root): `<root>/<label>/**/*.wav` (also flac, ogg, mp3, ...), or
`<root>/{train,validation,test}/<label>/...` when the root holds split folders.
Manifest (`source="manifest"`, data_dir = the CSV file): columns `path,label[,split]`; paths are relative to
the CSV's folder (or absolute); several labels of one clip are separated by ";" (a multi-label task).

Any sample rate and channel count: clips are decoded, mixed to mono and resampled to `sample_rate`.
Without split folders or a split column, clips are assigned to validation and test by a hash of their path
(`validation_fraction`, `test_fraction`, default 0.1 each), so the split never changes between runs.
Labels are the sorted folder names or label values, unless `labels` lists them (then any other label is an
error). An unknown split value, an empty folder or a clip with no label is an error before training starts.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path
from typing import Sequence

from ast_jax.data.files import Clip, FileSource, SplitFiles, audio_files, one_hot

SPLITS = ("train", "validation", "test")


def _hash_split(key: str, validation_fraction: float, test_fraction: float) -> str:
    position = zlib.crc32(key.encode()) / 2 ** 32
    if position < test_fraction:
        return "test"
    return "validation" if position < test_fraction + validation_fraction else "train"


def _build(entries: list[tuple[str, list[str], str | None, str]], where: str, labels: Sequence[str] | None,
           validation_fraction: float, test_fraction: float) -> tuple[list[str], dict[str, SplitFiles], bool]:
    """entries: (path, labels, split or None, hash key). Returns labels, splits, multilabel."""
    if not entries:
        raise ValueError(f"{where}: no audio files found")
    if labels is None:
        labels = sorted({label for _, names, _, _ in entries for label in names})
    index = {label: i for i, label in enumerate(labels)}
    clips: dict[str, list[Clip]] = {split: [] for split in SPLITS}
    ids: dict[str, list[list[int]]] = {split: [] for split in SPLITS}
    for path, names, split, key in entries:
        unknown = [name for name in names if name not in index]
        if unknown:
            raise ValueError(f"{path}: unknown label {unknown[0]!r} (labels are {', '.join(labels)})")
        split = split or _hash_split(key, validation_fraction, test_fraction)
        clips[split].append(Clip(path))
        ids[split].append([index[name] for name in names])
    multilabel = any(len(names) > 1 for _, names, _, _ in entries)
    return list(labels), {s: SplitFiles(clips[s], one_hot(ids[s], len(labels))) for s in SPLITS}, multilabel


def folder_entries(root: Path) -> list[tuple[str, list[str], str | None, str]]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: audio folder not found")
    has_splits = any((root / split).is_dir() for split in SPLITS)
    entries = []
    for split in (SPLITS if has_splits else (None,)):
        base = root / split if split else root
        if not base.is_dir():
            continue
        for path in audio_files(base):
            relative = path.relative_to(base)
            if len(relative.parts) < 2:
                raise ValueError(f"{path}: audio directly in {base}; put each clip in a folder named by its label")
            entries.append((str(path), [relative.parts[0]], split, relative.as_posix()))
    return entries


def manifest_entries(manifest: Path) -> list[tuple[str, list[str], str | None, str]]:
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: manifest not found")
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{manifest}: manifest needs columns path,label[,split]; missing {', '.join(sorted(missing))}")
        entries = []
        for line, row in enumerate(reader, start=2):
            names = [name.strip() for name in (row["label"] or "").split(";") if name.strip()]
            if not names:
                raise ValueError(f"{manifest}:{line}: no label for {row['path']!r}")
            split = (row.get("split") or "").strip() or None
            if split is not None and split not in SPLITS:
                raise ValueError(f"{manifest}:{line}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
            path = Path(row["path"])
            entries.append((str(path if path.is_absolute() else manifest.parent / path), names, split, row["path"]))
    return entries


def from_config(data_config, clip_samples: int) -> FileSource:
    data_dir = data_config.get("data_dir")
    if not data_dir:
        raise ValueError(f"data.data_dir must name the {'CSV manifest' if data_config.source == 'manifest' else 'audio folder'}")
    path = Path(data_dir)
    if data_config.source == "manifest":
        entries = manifest_entries(path)
    else:
        entries = folder_entries(path)
    labels = data_config.get("labels") or None
    labels, splits, multilabel = _build(entries, str(path), list(labels) if labels else None,
                                        float(data_config.get("validation_fraction", 0.1)),
                                        float(data_config.get("test_fraction", 0.1)))
    return FileSource(labels=labels, clip_samples=clip_samples, multilabel=multilabel, splits=splits,
                      sample_rate=int(data_config.get("sample_rate", 16000)), cache_dir=data_config.get("cache_dir"),
                      prepared=bool(data_config.get("prepared", True)), name=f"{data_config.source}-{path.stem}")
