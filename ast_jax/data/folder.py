"""The user's own audio: a labelled folder, or a CSV manifest.

Folder (`source="folder"`, data_dir = the root): `<root>/<label>/**/*.wav` (also flac, ogg, mp3, ...), or
`<root>/{train,validation,test}/<label>/...` when the root holds split folders.
Manifest (`source="manifest"`, data_dir = the CSV file): columns `path,label[,split][,group]`; paths are relative
to the CSV's folder (or absolute); several labels of one clip are separated by ";" (a multi-label task).

Any sample rate and channel count: clips are decoded, mixed to mono and resampled to `sample_rate`.
Without split folders or a split column, clips are assigned to validation and test by a hash
(`validation_fraction`, `test_fraction`, default 0.1 each), so the split never changes between runs. The hash
reads a clip's group, so that one speaker's clips are never on both sides: the manifest's `group` column where
it has one; else, for a file named `<speaker>_nohash_<n>.wav` (the Speech Commands convention) or
`<word>_<speaker>_nohash_<n>.wav` with one of Speech Commands' 35 words, the speaker, as Speech Commands' own
split does; else the clip's path (each clip its own group).
Labels are the sorted folder names or label values, unless `labels` lists them (then any other label is an
error). An unknown split value, a folder with no audio, a label folder with no audio (unless `labels` names it)
or a clip with no label is an error before training starts.
"""

from __future__ import annotations

import csv
import unicodedata
import zlib
from pathlib import Path
from typing import Sequence

from ast_jax.data.files import (AUDIO_EXTENSIONS, Clip, FileSource, SplitFiles, audio_files, log, one_hot,
                                spelled_path)
from ast_jax.data.speech_commands import LABELS_35

SPLITS = ("train", "validation", "test")


def _hash_split(key: str, validation_fraction: float, test_fraction: float) -> str:
    # a name that is not valid UTF-8 hashes as the bytes the filesystem holds (the same bytes for any other)
    position = zlib.crc32(key.encode("utf-8", "surrogateescape")) / 2 ** 32
    if position < test_fraction:
        return "test"
    return "validation" if position < test_fraction + validation_fraction else "train"


def _group_key(path: str, group: str = "") -> str:
    """The hash key of a clip: its group (a manifest's group column), else the speaker of a
    `<speaker>_nohash_<n>` file name, as one group (so a manifest may give the group on some rows only), else
    the path itself (already spelled one way by the caller). A Speech Commands word before the speaker,
    `<word>_<speaker>_nohash_<n>`, as copies gathered from several word folders into one (an "unknown" class)
    are often named, is left out: the speaker is one group across words."""
    name = path.rsplit("/", 1)[-1]
    speaker = name.split("_nohash_", 1)[0] if "_nohash_" in name else ""
    word, _, rest = speaker.partition("_")
    if rest and word in LABELS_35:
        speaker = rest
    group = group or speaker
    return "group:" + group if group else path


def _build(entries: list[tuple[str, list[str], str | None, str]], where: str, labels: Sequence[str] | None,
           validation_fraction: float, test_fraction: float) -> tuple[list[str], dict[str, SplitFiles], bool]:
    """entries: (path, labels, split or None, hash key). Returns labels, splits, multilabel."""
    if not entries:
        raise ValueError(f"{where}: no audio files found")
    if labels is None:
        labels = sorted({label for _, names, _, _ in entries for label in names})
        by_case: dict[str, list[str]] = {}
        for label in labels:
            by_case.setdefault(label.casefold(), []).append(label)
        for same in (group for group in by_case.values() if len(group) > 1):
            log.warning("%s: labels %s differ only in case: they are %d classes (as folders, one on macOS and "
                        "Windows)", where, " and ".join(repr(label) for label in same), len(same))
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
    if root.is_file():
        raise ValueError(f"{root}: is a file, not a folder of label folders (a CSV manifest is read with "
                         "data.source=manifest)")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: audio folder not found")
    has_splits = any((root / split).is_dir() for split in SPLITS)
    if has_splits:  # every clip must be under a split folder: anything beside them would be silently left out
        beside = sorted(p.name for p in root.iterdir()
                        if p.name not in SPLITS and not p.name.startswith(".")
                        and (audio_files(p) if p.is_dir() else p.suffix.lower() in AUDIO_EXTENSIONS))
        if beside:
            present = [f"{split}/" for split in SPLITS if (root / split).is_dir()]
            # one of them alone among label folders is more likely a label so named (ESC-50 has "train")
            named_like = (f"; if {present[0]} is a label, not a split, list the clips in a CSV manifest "
                          f"(data.source=manifest), where a label may have any name") if len(present) == 1 else ""
            raise ValueError(f"{root}: has split folders ({', '.join(present)}) and audio beside them "
                             f"({', '.join(beside[:5])}{', ...' if len(beside) > 5 else ''}); put every clip under "
                             f"{'/'.join(SPLITS)}/<label>/, or use no split folders (then clips are split by a "
                             f"hash){named_like}")
    entries = []
    for split in (SPLITS if has_splits else (None,)):
        base = root / split if split else root
        if not base.is_dir():
            continue
        for path in audio_files(base):
            relative = path.relative_to(base)
            if len(relative.parts) < 2:
                raise ValueError(f"{path}: audio directly in {base}; put each clip in a folder named by its label")
            key = _group_key(unicodedata.normalize("NFC", relative.as_posix()))
            entries.append((str(path), [relative.parts[0]], split, key))
    return entries


def empty_label_folders(root: Path, entries: list[tuple[str, list[str], str | None, str]]) -> list[Path]:
    """Label folders (`root/<label>`, or `root/<split>/<label>`) whose label no clip of `entries` (the folder's,
    from `folder_entries`) has in any split: that label would silently be missing from the task."""
    with_audio = {names[0] for _, names, _, _ in entries}
    bases = [root / split for split in SPLITS if (root / split).is_dir()] or [root]
    return [folder for base in bases for folder in sorted(base.iterdir())
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in with_audio]


def manifest_entries(manifest: Path) -> list[tuple[str, list[str], str | None, str]]:
    if manifest.is_dir():
        raise ValueError(f"{manifest}: is a folder, not a CSV manifest (a folder of label folders is read with "
                         "data.source=folder)")
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: manifest not found")
    try:  # utf-8-sig: spreadsheets save "CSV UTF-8" with a byte-order mark before the header
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{manifest}: not a UTF-8 CSV manifest ({error})") from None
    header = [name.strip().lower() for name in rows[0]] if rows else []
    missing = {"path", "label"} - set(header)
    if missing:
        raise ValueError(f"{manifest}: manifest needs columns path,label[,split][,group]; missing "
                         f"{', '.join(sorted(missing))}")
    entries, first_row = [], {}
    for line, values in enumerate(rows[1:], start=2):
        if not any(value.strip() for value in values):
            continue  # a blank line
        row = dict(zip(header, (value.strip() for value in values)))
        if not row.get("path"):
            raise ValueError(f"{manifest}:{line}: no path")
        names = [name.strip() for name in (row.get("label") or "").split(";") if name.strip()]
        if not names:
            raise ValueError(f"{manifest}:{line}: no label for {row['path']!r}")
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise ValueError(f"{manifest}:{line}: unknown split {split!r}; use one of {', '.join(SPLITS)}")
        path = Path(row["path"])
        resolved = path if path.is_absolute() else manifest.parent / path
        spelled = spelled_path(row["path"])
        if spelled in first_row:
            raise ValueError(f"{manifest}:{line}: {row['path']!r} is listed again (first at line "
                             f"{first_row[spelled]}); give each clip one row, with all its labels joined by ';'")
        first_row[spelled] = line
        entries.append((str(resolved), names, split,
                        _group_key(spelled, unicodedata.normalize("NFC", row.get("group") or ""))))
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
    if data_config.source == "folder" and not labels and entries:
        empty = empty_label_folders(path, entries)
        if empty:
            raise ValueError(f"{empty[0]}: a label folder with no audio files, so its label would be left out of "
                             f"the task ({len(empty)} such folder{'s' if len(empty) > 1 else ''}); add clips or "
                             f"remove it")
    labels, splits, multilabel = _build(entries, str(path), list(labels) if labels else None,
                                        float(data_config.get("validation_fraction", 0.1)),
                                        float(data_config.get("test_fraction", 0.1)))
    name = path.stem if data_config.source == "manifest" else path.name  # a folder's name may hold dots
    return FileSource(labels=labels, clip_samples=clip_samples, multilabel=multilabel, splits=splits,
                      sample_rate=int(data_config.get("sample_rate", 16000)), cache_dir=data_config.get("cache_dir"),
                      prepared=bool(data_config.get("prepared", True)), name=f"{data_config.source}-{name}")
