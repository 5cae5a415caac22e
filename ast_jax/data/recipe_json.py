"""The original AST recipes' data files: JSON manifests with a label CSV (ESC-50, AudioSet, Speech Commands).

A manifest is `{"data": [{"wav": "/path/clip.flac", "labels": "/m/09x0r,/m/05zppz"}, ...]}`; the label CSV
has columns `index,mid,display_name` and maps each mid to its output index. Targets are multi-hot; the data are
multi-label (AudioSet) when some clip has more than one label, and single-label (ESC-50, Speech Commands)
otherwise, which decides how `ast-jax evaluate` scores them.

config.data fields: `json` (a mapping split -> manifest path, e.g. {"train": ..., "validation": ..., "test":
...}), `label_csv`, and `prepared` (False decodes clips per batch: for AudioSet-sized sets whose decoded
copy would not fit on disk).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ast_jax.data.files import Clip, FileSource, SplitFiles, one_hot, spelled_path


def read_label_csv(path: str | Path) -> tuple[list[str], dict[str, int]]:
    """Display names in index order, and mid -> index. Every row needs an integer index, a mid and a display
    name; indices run 0..n-1 and mids are unique (a repeated mid would send its clips to one of the labels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label CSV not found")
    try:  # utf-8-sig: spreadsheets save "CSV UTF-8" with a byte-order mark before the header
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [name.strip() for name in reader.fieldnames or []]
            rows = []
            for row in reader:  # names and values stripped; extra values (under None) dropped; blank lines skipped
                row = {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}
                if any(row.values()):
                    rows.append((reader.line_num, row))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: not a UTF-8 label CSV ({error})") from None
    if not {"index", "mid", "display_name"} <= set(columns):
        raise ValueError(f"{path}: a label CSV needs the columns index,mid,display_name (it has "
                         f"{','.join(columns) or 'none'})")
    names: dict[int, str] = {}
    mid_index: dict[str, int] = {}
    mid_line: dict[str, int] = {}
    for line, row in rows:
        index, mid, name = row.get("index"), row.get("mid"), row.get("display_name")
        if not (index and mid and name):
            missing = [column for column, value in (("index", index), ("mid", mid), ("display_name", name))
                       if not value]
            raise ValueError(f"{path}:{line}: no {' or '.join(missing)}")
        try:
            position = int(index)
        except ValueError:
            raise ValueError(f"{path}:{line}: index {index!r} is not an integer") from None
        if position in names:
            raise ValueError(f"{path}:{line}: index {position} is given twice")
        if mid in mid_index:
            raise ValueError(f"{path}:{line}: mid {mid!r} is given twice (first at line {mid_line[mid]}); each mid "
                             f"names one label")
        names[position], mid_index[mid], mid_line[mid] = name, position, line
    if not names:
        raise ValueError(f"{path}: no labels (only the header)")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{path}: label indices must run 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))], mid_index


def read_manifest(path: str | Path, mid_index: dict[str, int], num_classes: int) -> SplitFiles:
    """One split's clips and multi-hot targets. A clip listed twice is an error (its labels belong in one entry,
    comma-separated); `wav` paths are used as they are written, relative ones from the current folder, as the
    original recipes read them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: JSON manifest not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))["data"]
        if not isinstance(data, list):
            raise TypeError(f"'data' is a {type(data).__name__}, not a list")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not an AST manifest {{\"data\": [{{\"wav\", \"labels\"}}]}} ({error})") from None
    clips, ids, first = [], [], {}
    for position, datum in enumerate(data):
        if not isinstance(datum, dict) or "wav" not in datum or "labels" not in datum:
            keys = ", ".join(map(repr, datum)) if isinstance(datum, dict) else type(datum).__name__
            raise ValueError(f"{path}: entry {position} needs the keys 'wav' and 'labels' (it has {keys or 'none'})")
        mids = [mid.strip() for mid in str(datum["labels"]).split(",") if mid.strip()]
        unknown = [mid for mid in mids if mid not in mid_index]
        if not mids or unknown:
            problem = f"unknown label {unknown[0]!r}" if unknown else "no labels"
            raise ValueError(f"{path}: entry {position} ({datum['wav']}): {problem}")
        wav = str(datum["wav"])
        spelled = spelled_path(wav)
        if spelled in first:
            raise ValueError(f"{path}: entry {position} ({wav}) is listed again (first as entry {first[spelled]}); "
                             f"give each clip one entry, its labels joined by ','")
        first[spelled] = position
        clips.append(Clip(wav))
        ids.append([mid_index[mid] for mid in mids])
    return SplitFiles(clips, one_hot(ids, num_classes))


def from_config(data_config, clip_samples: int) -> FileSource:
    manifests = data_config.get("json")
    if not manifests or not data_config.get("label_csv"):
        raise ValueError("data.json (split -> manifest path) and data.label_csv are needed for the json source")
    labels, mid_index = read_label_csv(data_config.label_csv)
    manifests = dict(manifests)
    splits = {split: read_manifest(path, mid_index, len(labels)) for split, path in manifests.items()}
    if "train" in splits:  # validation and test may share clips (the recipes score their eval set as both)
        trained = {spelled_path(clip.path) for clip in splits["train"].clips}
        for split, files in splits.items():
            shared = [clip.path for clip in files.clips if split != "train" and spelled_path(clip.path) in trained]
            if shared:
                raise ValueError(f"{manifests[split]}: {len(shared)} of its clips are also in the training manifest "
                                 f"{manifests['train']} (the first: {shared[0]}); a clip trained on cannot score "
                                 f"the model")
    multilabel = any((files.targets.sum(axis=1) > 1).any() for files in splits.values())
    return FileSource(labels=labels, clip_samples=clip_samples, multilabel=multilabel, splits=splits,
                            sample_rate=int(data_config.get("sample_rate", 16000)),
                            cache_dir=data_config.get("cache_dir"), prepared=bool(data_config.get("prepared", True)),
                            name=f"json-{Path(data_config.label_csv).stem}")
