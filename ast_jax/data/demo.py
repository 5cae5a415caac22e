"""The Speech Commands demo set that ships with the project: the 12-class task, split by speaker.

912 real one-second clips (76 per class: 56 train, 8 validation, 12 test) from the official Speech
Commands v0.02 test set (Warden 2018, CC BY 4.0), stored losslessly as 16-bit FLAC to stay small. No
speaker appears in two splits. `manifest.csv` lists path, label, split, word and speaker; `make_demo_set`
re-creates the folder from a copy of the official test set (the layout of its archive).

config.data: source="demo" (data_dir may point to another folder of the same layout).
"""

from __future__ import annotations

import collections
import csv
import shutil
import zlib
from pathlib import Path

from ast_jax.data.files import FileSource
from ast_jax.data.folder import _build, manifest_entries
from ast_jax.data.speech_commands import LABELS_12

PER_CLASS = {"train": 56, "validation": 8, "test": 12}
# Fractions of speakers held out for test and validation; the rest train.
SPEAKER_FRACTIONS = {"test": 0.2, "validation": 0.15}


def demo_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "speech_commands_demo"  # package data


def from_config(data_config, clip_samples: int) -> FileSource:
    root = Path(data_config.get("data_dir") or demo_dir())
    labels, splits, _ = _build(manifest_entries(root / "manifest.csv"), str(root), LABELS_12, 0.0, 0.0)
    return FileSource(labels=labels, clip_samples=clip_samples, splits=splits,
                      sample_rate=int(data_config.get("sample_rate", 16000)),
                      cache_dir=data_config.get("cache_dir"), prepared=bool(data_config.get("prepared", True)),
                      name="speech_commands_demo")


def _speaker_split(speaker: str, key: str) -> str:
    position = zlib.crc32(f"{key}:{speaker}".encode()) / 2 ** 32
    if position < SPEAKER_FRACTIONS["test"]:
        return "test"
    return "validation" if position < SPEAKER_FRACTIONS["test"] + SPEAKER_FRACTIONS["validation"] else "train"


def make_demo_set(official_test_dir: str | Path, out_dir: str | Path) -> None:
    """Write the demo folder from a folder with the official test set's layout and its manifest.csv.

    Speakers are assigned to splits by a hash of their id (silence clips, which have none, by file name);
    within a split and class, clips are taken round-robin over speakers so that many voices are present.
    """
    import soundfile

    source, out = Path(official_test_dir), Path(out_dir)
    with open(source / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pools: dict[tuple[str, str], dict[str, list[dict]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for row in sorted(rows, key=lambda r: r["path"]):
        split = _speaker_split(row["speaker"] or row["path"], "demo")
        pools[split, row["label12"]][row["speaker"] or row["path"]].append(row)
    chosen = []
    for (split, label), by_speaker in sorted(pools.items()):
        queues = [list(clips) for _, clips in sorted(by_speaker.items())]
        picked: list[dict] = []
        while len(picked) < PER_CLASS[split] and any(queues):
            for queue in queues:
                if queue and len(picked) < PER_CLASS[split]:
                    picked.append(queue.pop(0))
        if len(picked) < PER_CLASS[split]:
            raise ValueError(f"{source}: only {len(picked)} {label!r} clips for {split}")
        chosen += [(split, row) for row in picked]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split", "word", "speaker"])
        for split, row in chosen:
            name = Path(row["path"]).name.replace(".wav.wav", ".wav")
            target = Path(split) / row["label12"] / Path(name).with_suffix(".flac")
            (out / target).parent.mkdir(parents=True, exist_ok=True)
            samples, rate = soundfile.read(source / row["path"], dtype="int16")
            soundfile.write(out / target, samples, rate, format="FLAC", subtype="PCM_16")
            writer.writerow([target.as_posix(), row["label12"], split, row["word"], row["speaker"]])
    shutil.copy(source / "LICENSE", out / "LICENSE")
