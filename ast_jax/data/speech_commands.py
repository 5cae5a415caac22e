"""The raw Speech Commands v0.02 folder: the 35-word task of the released checkpoint, or the 12-class task.

Layout (the official archive): `<root>/<word>/<speaker>_nohash_<n>.wav`, `validation_list.txt` and
`testing_list.txt` (paths relative to the root), and `_background_noise_/` with a few long recordings.
Validation and test are the listed clips; train is every other clip (AST's egs/speechcommands/prep_sc.py).

35 classes: every word, in the label order of the released model (not alphabetical).
12 classes (the TFDS task): the ten command words, `_silence_` and `_unknown_` (all other words), in TFDS's
order. `_silence_` clips are one-second windows cut every half second from the background recordings, as
the TFDS builder does: `running_tap.wav` gives validation silence, the other recordings train silence. The
official test archive ships its own `_silence_/` folder; if the root holds one, its clips are test silence.

config.data fields: data_dir (the root), num_classes (35 or 12).
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from ast_jax.data.files import AUDIO_EXTENSIONS, Clip, FileSource, SplitFiles, audio_files, one_hot

# Index -> word of the released speechcommands_10_10_0.9812 model (egs/speechcommands/data).
LABELS_35 = [
    "backward", "follow", "five", "bed", "zero", "on", "learn", "two", "house", "tree", "dog", "stop", "seven",
    "eight", "down", "six", "forward", "cat", "right", "visual", "four", "wow", "no", "nine", "off", "three",
    "left", "marvin", "yes", "up", "sheila", "happy", "bird", "go", "one",
]
COMMAND_WORDS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]
SILENCE, UNKNOWN = "_silence_", "_unknown_"
LABELS_12 = COMMAND_WORDS + [SILENCE, UNKNOWN]  # TFDS speech_commands ClassLabel order
BACKGROUND = "_background_noise_"
VALIDATION_NOISE = "running_tap.wav"  # TFDS puts this recording's silence in validation


def label_of_word(word: str, num_classes: int) -> str:
    if num_classes == 35:
        return word
    return word if word in COMMAND_WORDS or word == SILENCE else UNKNOWN


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: split list not found (a Speech Commands v0.02 folder has validation_list.txt and "
            f"testing_list.txt next to the word folders)")
    # normalised (`./yes/a.wav` is `yes/a.wav`), as the folder's own paths are compared with them
    return {posixpath.normpath(line.strip()) for line in path.read_text().splitlines() if line.strip()}


def silence_windows(recording: Path, sample_rate: int, clip_samples: int) -> list[Clip]:
    """One-second windows every half second, as the TFDS builder cuts its `_silence_` examples."""
    import soundfile

    try:
        info = soundfile.info(str(recording))
    except RuntimeError as error:
        raise ValueError(f"{recording}: unreadable background recording ({error})") from None
    frames = info.frames * sample_rate // info.samplerate  # length after resampling to sample_rate
    return [Clip(str(recording), start, start + clip_samples)
            for start in range(0, frames - clip_samples, clip_samples // 2)]


def speech_commands_splits(root: str | Path, num_classes: int = 35, *, sample_rate: int = 16000,
                           clip_samples: int = 16000) -> dict[str, SplitFiles]:
    """Clips and targets of train, validation and test."""
    if num_classes not in (35, 12):
        raise ValueError(f"Speech Commands has a 35-class and a 12-class task, not {num_classes}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: Speech Commands folder not found")
    listed = {"validation": _read_list(root / "validation_list.txt"), "test": _read_list(root / "testing_list.txt")}
    labels = LABELS_35 if num_classes == 35 else LABELS_12
    index = {label: i for i, label in enumerate(labels)}
    clips: dict[str, list[Clip]] = {"train": [], "validation": [], "test": []}
    label_ids: dict[str, list[list[int]]] = {"train": [], "validation": [], "test": []}

    def add(split: str, clip: Clip, label: str) -> None:
        clips[split].append(clip)
        label_ids[split].append([index[label]])

    found = {p.name: audio_files(p) for p in root.iterdir()
             if p.is_dir() and p.name not in (BACKGROUND, SILENCE) and not p.name.startswith(".")}
    present = {path.relative_to(root).as_posix() for paths in found.values() for path in paths}
    # Clips the lists name that are not there (a partial download or extraction) are kept, so that reading
    # them reports each one rather than the split shrinking unnoticed.
    for entry in sorted(set().union(*listed.values()) - present):
        word = entry.split("/")[0]
        if "/" in entry and word not in (BACKGROUND, SILENCE) and Path(entry).suffix.lower() in AUDIO_EXTENSIONS:
            found.setdefault(word, []).append(root / entry)
    for word in sorted(found):
        if num_classes == 35 and word not in index:
            raise ValueError(f"{root / word}: unknown label {word!r}: not one of the 35 Speech Commands words")
        for path in sorted(found[word]):
            relative = path.relative_to(root).as_posix()
            split = next((s for s in ("validation", "test") if relative in listed[s]), "train")
            add(split, Clip(str(path)), label_of_word(word, num_classes))
    if num_classes == 12:
        background = root / BACKGROUND
        for recording in (audio_files(background) if background.is_dir() else []):
            split = "validation" if recording.name == VALIDATION_NOISE else "train"
            for clip in silence_windows(recording, sample_rate, clip_samples):
                add(split, clip, SILENCE)
        if (root / SILENCE).is_dir():
            for path in audio_files(root / SILENCE):
                add("test", Clip(str(path)), SILENCE)
    if not any(clips.values()):
        raise ValueError(f"{root}: no audio files found in the word folders")
    return {split: SplitFiles(clips[split], one_hot(label_ids[split], len(labels))) for split in clips}


def from_config(data_config, clip_samples: int) -> FileSource:
    if not data_config.get("data_dir"):
        raise ValueError("data.data_dir must name the Speech Commands v0.02 folder")
    num_classes = int(data_config.get("num_classes", 35))
    sample_rate = int(data_config.get("sample_rate", 16000))
    splits = speech_commands_splits(data_config.data_dir, num_classes, sample_rate=sample_rate,
                                    clip_samples=clip_samples)
    return FileSource(labels=LABELS_35 if num_classes == 35 else LABELS_12, clip_samples=clip_samples,
                      splits=splits, sample_rate=sample_rate, cache_dir=data_config.get("cache_dir"),
                      prepared=bool(data_config.get("prepared", True)), name=f"speech_commands{num_classes}")
