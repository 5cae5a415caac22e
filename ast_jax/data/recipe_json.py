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

from ast_jax.data.files import Clip, FileSource, SplitFiles, one_hot


def read_label_csv(path: str | Path) -> tuple[list[str], dict[str, int]]:
    """Display names in index order, and mid -> index."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label CSV not found")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"index", "mid", "display_name"} <= set(rows[0]):
        raise ValueError(f"{path}: a label CSV needs the columns index,mid,display_name")
    rows.sort(key=lambda row: int(row["index"]))
    if [int(row["index"]) for row in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: label indices must run 0..{len(rows) - 1} without gaps")
    return [row["display_name"] for row in rows], {row["mid"]: int(row["index"]) for row in rows}


def read_manifest(path: str | Path, mid_index: dict[str, int], num_classes: int) -> SplitFiles:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: JSON manifest not found")
    try:
        data = json.loads(path.read_text())["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not an AST manifest {{\"data\": [{{\"wav\", \"labels\"}}]}} ({error})") from None
    clips, ids = [], []
    for position, datum in enumerate(data):
        mids = [mid.strip() for mid in str(datum.get("labels", "")).split(",") if mid.strip()]
        unknown = [mid for mid in mids if mid not in mid_index]
        if not mids or unknown or "wav" not in datum:
            problem = f"unknown label {unknown[0]!r}" if unknown else "no labels" if mids == [] else "no 'wav'"
            raise ValueError(f"{path}: entry {position} ({datum.get('wav', '?')}): {problem}")
        clips.append(Clip(str(datum["wav"])))
        ids.append([mid_index[mid] for mid in mids])
    return SplitFiles(clips, one_hot(ids, num_classes))


def from_config(data_config, clip_samples: int) -> FileSource:
    manifests = data_config.get("json")
    if not manifests or not data_config.get("label_csv"):
        raise ValueError("data.json (split -> manifest path) and data.label_csv are needed for the json source")
    labels, mid_index = read_label_csv(data_config.label_csv)
    splits = {split: read_manifest(path, mid_index, len(labels)) for split, path in dict(manifests).items()}
    multilabel = any((files.targets.sum(axis=1) > 1).any() for files in splits.values())
    return FileSource(labels=labels, clip_samples=clip_samples, multilabel=multilabel, splits=splits,
                            sample_rate=int(data_config.get("sample_rate", 16000)),
                            cache_dir=data_config.get("cache_dir"), prepared=bool(data_config.get("prepared", True)),
                            name=f"json-{Path(data_config.label_csv).stem}")
