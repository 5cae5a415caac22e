"""Data sources: splits, label orders, prepared copies, bad clips, batching across processes, the demo set."""

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from ml_collections import ConfigDict

from ast_jax.data import build_source, even_split, prefetch
from ast_jax.data.speech_commands import LABELS_12, LABELS_35

MINI = Path(__file__).parent / "data" / "speech_commands_mini"


def read_int16(path, start=0, stop=None):
    samples, rate = soundfile.read(str(path), dtype="int16", start=start, stop=stop)
    assert rate == 16000
    return samples.astype(np.float32) / 32768


def fit(samples, n=16000):
    return np.pad(samples, (0, max(0, n - len(samples))))[:n]


@pytest.fixture
def raw_folder(tmp_path):
    """A tiny Speech Commands v0.02 folder: one clip listed for validation, one for test."""
    root = tmp_path / "speech_commands_v0.02"
    shutil.copytree(MINI, root, ignore=shutil.ignore_patterns("LICENSE", "README.md"))
    (root / "validation_list.txt").write_text("yes/0cb74144_nohash_0.wav\nbed/28497c5b_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/0c40e715_nohash_0.wav\n")
    return root


def source(tmp_path, **fields):
    return build_source(ConfigDict({"cache_dir": str(tmp_path / "cache"), **fields}))


def test_raw_folder_35_classes_released_label_order(tmp_path, raw_folder):
    (raw_folder / ".ipynb_checkpoints").mkdir()  # a hidden folder is no word (it was an unknown label)
    shutil.copy(raw_folder / "yes" / "0cb74144_nohash_0.wav", raw_folder / ".ipynb_checkpoints" / "a_nohash_0.wav")
    src = source(tmp_path, source="speech_commands", data_dir=str(raw_folder), num_classes=35)
    assert src.labels[:4] == ["backward", "follow", "five", "bed"] and src.labels[34] == "one"
    assert len(src.labels) == 35
    assert [src.num_examples(s) for s in ("train", "validation", "test")] == [6, 2, 1]
    audio, targets, lengths = src.load("validation", np.array([0, 1]))
    assert list(lengths) == [16000, 16000]
    names = sorted(["bed/28497c5b_nohash_0.wav", "yes/0cb74144_nohash_0.wav"])
    assert [src.labels[k] for k in targets.argmax(1)] == ["bed", "yes"]
    assert (targets.sum(1) == 1).all()
    for row, name in enumerate(names):
        np.testing.assert_array_equal(audio[row], fit(read_int16(raw_folder / name)))
    train_targets = src.targets("train")
    assert sorted(src.labels[k] for k in train_targets.argmax(1)) == ["backward", "backward", "no", "no", "yes", "yes"]


def test_raw_folder_12_classes_silence_cut_like_tfds(tmp_path, raw_folder):
    src = source(tmp_path, source="speech_commands", data_dir=str(raw_folder), num_classes=12)
    assert src.labels == LABELS_12 == ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes",
                                       "_silence_", "_unknown_"]
    # 52,000-sample recordings give windows starting at 0, 8000, ..., 28000 (TFDS: range(0, n - 16000, 8000)).
    train = src.split_files("train")
    silence_train = [c for c in train.clips if c.stop is not None]
    assert [(Path(c.path).name, c.start) for c in silence_train] == [("white_noise.wav", s) for s in range(0, 36000, 8000)]
    silence_val = [c for c in src.split_files("validation").clips if c.stop is not None]
    assert {Path(c.path).name for c in silence_val} == {"running_tap.wav"} and len(silence_val) == 5
    labels = [src.labels[k] for k in src.targets("train").argmax(1)]
    assert labels.count("_unknown_") == 2 and labels.count("_silence_") == 5  # the two "backward" clips
    row = next(i for i, c in enumerate(train.clips) if c.stop is not None and c.start == 16000)
    audio = src.load("train", np.array([row]))[0]
    np.testing.assert_array_equal(audio[0], read_int16(raw_folder / "_background_noise_" / "white_noise.wav",
                                                       16000, 32000))


def test_missing_split_list_and_unknown_word_and_empty_folder(tmp_path, raw_folder):
    (raw_folder / "testing_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="testing_list.txt: split list not found"):
        source(tmp_path, source="speech_commands", data_dir=str(raw_folder), num_classes=35)
    (raw_folder / "testing_list.txt").write_text("")
    (raw_folder / "hello").mkdir()
    shutil.copy(raw_folder / "bed" / "28497c5b_nohash_0.wav", raw_folder / "hello" / "x.wav")
    with pytest.raises(ValueError, match="hello: unknown label 'hello'"):
        source(tmp_path, source="speech_commands", data_dir=str(raw_folder), num_classes=35)
    empty = tmp_path / "empty"
    (empty / "yes").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"^{empty}: no audio files found$"):
        source(tmp_path, source="folder", data_dir=str(empty))


def make_user_folder(root):
    """Two labels, clips at 8 kHz stereo and 44.1 kHz, plus three bad files."""
    rng = np.random.default_rng(0)
    for label, rate, channels in (("bird", 8000, 2), ("car", 44100, 1)):
        for n in range(3):
            (root / label).mkdir(parents=True, exist_ok=True)
            audio = 0.3 * rng.standard_normal((int(rate * 0.75), channels)).clip(-3, 3) / 3
            soundfile.write(root / label / f"{n}.wav" if n else root / label / f"{n}.flac", audio, rate)
    (root / "bird" / "empty.wav").write_bytes(b"")
    (root / "car" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio at all")
    soundfile.write(root / "car" / "silent.wav", np.zeros((0, 1)), 16000)


def test_folder_any_rate_bad_clips_reported_and_skipped(tmp_path, caplog):
    root = tmp_path / "mine_v0.02"
    make_user_folder(root)
    caplog.set_level(logging.WARNING, logger="ast_jax.data")
    src = source(tmp_path, source="folder", data_dir=str(root), validation_fraction=0.0, test_fraction=0.0)
    assert src.labels == ["bird", "car"] and src.name == "folder-mine_v0.02"  # the whole folder name
    assert src.num_examples("train") == 6
    text = caplog.text
    for bad in ("empty.wav", "corrupt.wav", "silent.wav"):
        assert bad in text
    assert text.count("3 of 9 clips are missing, unreadable, empty or corrupt") == 1  # one summary, after the lines
    from ast_jax.audio import load_audio

    audio, targets, lengths = src.load("train", np.arange(6))
    assert list(lengths) == [12000] * 6  # 0.75 s at 16 kHz, whatever the file's rate
    kept = [c.path for c in np.array(src.split_files("train").clips)[src.prepare("train").kept]]
    for row, path in enumerate(kept):
        expected = fit(load_audio(path, sample_rate=16000))
        assert np.count_nonzero(expected) > 11000  # 0.75 s resampled to 16 kHz, then padded
        np.testing.assert_allclose(audio[row], expected, atol=1 / 32768)
        assert src.labels[targets[row].argmax()] == Path(path).parent.name
    caplog.clear()
    again = source(tmp_path, source="folder", data_dir=str(root), validation_fraction=0.0, test_fraction=0.0)
    assert again.num_examples("train") == 6
    text = caplog.text  # reported again on reuse, with the clips' paths
    assert "3 of 9 clips are missing, unreadable, empty or corrupt" in text and "done.json" in text
    for bad in ("empty.wav", "corrupt.wav", "silent.wav"):
        assert bad in text


def test_labels_that_differ_only_in_case_are_warned_of(tmp_path, caplog):
    """Dog/ and dog/ are two classes on Linux and one folder on macOS or Windows: said, not silently split."""
    from ast_jax.data.folder import _build, folder_entries

    for label in ("Dog", "dog", "cat"):
        (tmp_path / label).mkdir()
        soundfile.write(tmp_path / label / "x.wav", np.zeros(160), 16000)
    caplog.set_level(logging.WARNING, logger="ast_jax.data")
    labels, _, _ = _build(folder_entries(tmp_path), str(tmp_path), None, 0.0, 0.0)
    assert labels == ["Dog", "cat", "dog"]
    assert caplog.messages == [f"{tmp_path}: labels 'Dog' and 'dog' differ only in case: they are 2 classes (as "
                               f"folders, one on macOS and Windows)"]


def test_audio_files_follow_links_to_folders_once_and_skip_hidden_ones(tmp_path):
    from ast_jax.data.files import audio_files

    (tmp_path / "elsewhere" / "bird").mkdir(parents=True)
    (tmp_path / "elsewhere" / "bird" / "a.wav").write_bytes(b"")
    (tmp_path / "root" / "car").mkdir(parents=True)
    (tmp_path / "root" / "car" / "b.flac").write_bytes(b"")
    (tmp_path / "root" / "bird").symlink_to(tmp_path / "elsewhere" / "bird")  # a class folder kept elsewhere
    (tmp_path / "root" / "car" / "loop").symlink_to(tmp_path / "root")  # a link back up the tree
    for hidden in (".Trash/bird/c.wav", "car/.backup/d.wav", "car/._e.wav"):  # a desktop's or editor's leavings
        (tmp_path / "root" / hidden).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / hidden).write_bytes(b"")
    assert [p.relative_to(tmp_path / "root").as_posix() for p in audio_files(tmp_path / "root")] == [
        "bird/a.wav", "car/b.flac"]
    assert len(audio_files(tmp_path / "root" / ".Trash")) == 1  # a hidden folder asked for by name is read


def test_listed_clips_and_links_that_are_missing_are_reported_not_dropped(tmp_path, raw_folder, caplog):
    """A clip a split list names but the folder lacks (a partial extraction), or a link leading nowhere, is
    kept as a clip that cannot be read: it is reported, not silently left out of the split."""
    caplog.set_level(logging.WARNING, logger="ast_jax.data")
    with open(raw_folder / "testing_list.txt", "a") as lists:
        lists.write("./yes/ffffffff_nohash_9.wav\nwow/ffffffff_nohash_9.wav\n")  # wow: no folder at all
    (raw_folder / "no" / "elsewhere.wav").symlink_to(tmp_path / "nowhere.wav")
    (raw_folder / "no" / "pipe.wav").unlink(missing_ok=True)
    os.mkfifo(raw_folder / "no" / "pipe.wav")  # not a file: left out (reading it would wait forever)
    src = source(tmp_path, source="speech_commands", data_dir=str(raw_folder), num_classes=35)
    test = [Path(c.path).relative_to(raw_folder).as_posix() for c in src.split_files("test").clips]
    assert test == ["no/0c40e715_nohash_0.wav", "wow/ffffffff_nohash_9.wav", "yes/ffffffff_nohash_9.wav"]
    assert [src.labels[k] for k in src.split_files("test").targets.argmax(1)] == ["no", "wow", "yes"]
    train = [Path(c.path).name for c in src.split_files("train").clips]
    assert "elsewhere.wav" in train and "pipe.wav" not in train
    assert src.num_examples("test") == 1 and src.num_examples("train") == 6
    skipped = dict(src.prepare("test").skipped)
    assert set(skipped) == {str(raw_folder / "wow" / "ffffffff_nohash_9.wav"),
                            str(raw_folder / "yes" / "ffffffff_nohash_9.wav")}
    assert set(skipped.values()) == {"file not found"}
    assert "2 of 3 clips are missing, unreadable" in caplog.text
    assert str(raw_folder / "no" / "elsewhere.wav") in dict(src.prepare("train").skipped)

def test_prepared_and_per_batch_decoding_agree(tmp_path, raw_folder):
    fields = dict(source="speech_commands", data_dir=str(raw_folder), num_classes=12)
    prepared = source(tmp_path, **fields)
    streamed = source(tmp_path, prepared=False, **fields)
    assert any(c.stop is not None for c in streamed.split_files("train").clips)  # _silence_ windows of one file
    for indices in (np.array([3, 0, 7]), np.arange(streamed.num_examples("train"))):
        for part in (0, 1, 2):  # audio, targets and true lengths
            np.testing.assert_array_equal(prepared.load("train", indices)[part], streamed.load("train", indices)[part])


def test_manifest_splits_multilabel_and_errors(tmp_path, raw_folder):
    manifest = tmp_path / "clips.csv"
    rows = [("yes/0cb74144_nohash_0.wav", "yes", "train"), ("no/0c40e715_nohash_0.wav", "no;yes", "test"),
            (str(raw_folder / "bed" / "28497c5b_nohash_0.wav"), "bed", "validation")]
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows((r[0] if r[0].startswith("/") else f"speech_commands_v0.02/{r[0]}", r[1], r[2]) for r in rows)
    src = source(tmp_path, source="manifest", data_dir=str(manifest))
    assert src.multilabel and src.labels == ["bed", "no", "yes"]
    np.testing.assert_array_equal(src.load("test", np.array([0]))[1], [[0, 1, 1]])
    assert [src.num_examples(s) for s in ("train", "validation", "test")] == [1, 1, 1]
    with pytest.raises(ValueError, match=r"/bed/[^ ]+\.wav: unknown label 'bed' \(labels are no, yes\)$"):
        source(tmp_path, source="manifest", data_dir=str(manifest), labels=["no", "yes"])
    manifest.write_text("path,label,split\nyes/a.wav,yes,training\n")
    with pytest.raises(ValueError, match=r"clips.csv:2: unknown split 'training'"):
        source(tmp_path, source="manifest", data_dir=str(manifest))


def test_manifest_header_spelling_duplicates_and_path_spelling(tmp_path, raw_folder):
    clip = "speech_commands_v0.02/yes/0cb74144_nohash_0.wav"
    other = "speech_commands_v0.02/no/0c40e715_nohash_0.wav"
    manifest = tmp_path / "clips.csv"
    # a spreadsheet's "CSV UTF-8": a byte-order mark, and spaces after the commas of the header
    manifest.write_bytes(f"\ufeffpath, label\n{clip},yes\n{other},no\n".encode("utf-8"))
    src = source(tmp_path, source="manifest", data_dir=str(manifest), validation_fraction=0.5, test_fraction=0.0)
    splits = {s: src.num_examples(s) for s in ("train", "validation")}
    assert sum(splits.values()) == 2
    # "./x" and "x" are one path, with one place in the hash split
    manifest.write_text(f"path,label\n./{clip},yes\n./{other},no\n")
    again = source(tmp_path, source="manifest", data_dir=str(manifest), validation_fraction=0.5, test_fraction=0.0)
    assert {s: again.num_examples(s) for s in ("train", "validation")} == splits
    manifest.write_text(f"path,label\n{clip},yes\n./{clip},no\n")
    with pytest.raises(ValueError, match=r"clips.csv:3: '\./speech_commands_v0.02/yes/0cb74144_nohash_0.wav' is "
                                         r"listed again \(first at line 2\)"):
        source(tmp_path, source="manifest", data_dir=str(manifest))
    manifest.write_bytes("path,label\nyes/é.wav,yes\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"clips.csv: not a UTF-8 CSV manifest"):
        source(tmp_path, source="manifest", data_dir=str(manifest))


def test_split_folders_with_audio_beside_them_are_refused(tmp_path):
    root = tmp_path / "mine"
    make_user_folder(root / "train")
    make_user_folder(root / "val")  # misnamed: would have been left out without a word
    with pytest.raises(ValueError, match=r"mine: has split folders \(train/\) and audio beside them \(val\); put "
                                         r"every clip under train/validation/test/<label>/"):
        source(tmp_path, source="folder", data_dir=str(root))


def test_the_wrong_source_for_a_file_or_folder_and_a_label_named_like_a_split_say_what_to_do(tmp_path):
    root = tmp_path / "vehicles"
    make_user_folder(root)
    (root / "car").rename(root / "train")  # ESC-50 has a class "train"
    with pytest.raises(ValueError, match=r"if train/ is a label, not a split, list the clips in a CSV manifest "
                                         r"\(data.source=manifest\)"):
        source(tmp_path, source="folder", data_dir=str(root))
    manifest = tmp_path / "clips.csv"
    manifest.write_text("path,label\n")
    with pytest.raises(ValueError, match=r"clips.csv: is a file, not a folder of label folders \(a CSV manifest is "
                                         r"read with data.source=manifest\)$"):
        source(tmp_path, source="folder", data_dir=str(manifest))
    with pytest.raises(ValueError, match=r"vehicles: is a folder, not a CSV manifest \(a folder of label folders is "
                                         r"read with data.source=folder\)$"):
        source(tmp_path, source="manifest", data_dir=str(root))


def test_clips_longer_than_the_clip_length_are_counted_once_made_and_again_when_reused(tmp_path, caplog):
    root = tmp_path / "mine"
    # 1 s makes 98 frames (400 + 97 x 160 samples make them, 80 are left): 4 ms over makes no frame, 6 ms one more
    for label, lengths in (("long", (3.0, 4.0)), ("short", (0.5, 1.004)), ("step", (1.006,))):
        (root / label).mkdir(parents=True)
        for n, seconds in enumerate(lengths):
            soundfile.write(root / label / f"{n}.wav", np.zeros(int(16000 * seconds)), 16000)
    caplog.set_level(logging.WARNING, logger="ast_jax.data")
    fields = dict(source="folder", data_dir=str(root), validation_fraction=0.0, test_fraction=0.0)
    for _ in range(2):  # made, then reused: said both times
        caplog.clear()
        assert source(tmp_path, **fields).num_examples("train") == 5
        assert ("3 of 5 clips are longer than data.clip_seconds (1 s; the longest 4 s; the first listed: "
                f"{root / 'long' / '0.wav'}) and keep only their first 1 s") in caplog.text, caplog.text
    caplog.clear()
    assert source(tmp_path, **fields, clip_seconds=4.0).num_examples("train") == 5
    assert "longer than" not in caplog.text


def test_per_batch_decoding_serves_bad_clips_as_padding_and_full_scale_is_reported(tmp_path, caplog):
    root = tmp_path / "mine"
    make_user_folder(root)
    soundfile.write(root / "car" / "loud.wav", 3.0 * np.sin(np.arange(12000) / 5.0), 16000, subtype="FLOAT")
    caplog.set_level(logging.WARNING, logger="ast_jax.data")
    src = source(tmp_path, source="folder", data_dir=str(root), validation_fraction=0.0, test_fraction=0.0,
                 prepared=False)
    assert src.num_examples("train") == 10
    batches = list(src.batches("train", batch_size=4))
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.sum() == 7 and (np.concatenate([b["length"] for b in batches])[~valid] == 0).all()
    for bad in ("empty.wav", "corrupt.wav", "silent.wav"):
        assert caplog.text.count(bad) == 1, caplog.text  # once, though every epoch meets it
    list(src.batches("train", batch_size=4))
    assert caplog.text.count("corrupt.wav") == 1
    caplog.clear()
    prepared = source(tmp_path, source="folder", data_dir=str(root), validation_fraction=0.0, test_fraction=0.0)
    assert prepared.num_examples("train") == 7
    assert "1 clip has samples beyond full scale" in caplog.text and "loud.wav" in caplog.text


def test_recipe_json_multilabel_and_balanced_weights(tmp_path, raw_folder):
    label_csv = tmp_path / "labels.csv"
    label_csv.write_text('index,mid,display_name\n0,/m/a,"Speech"\n1,/m/b,"Noise"\n2,/m/c,"Music"\n')
    clips = sorted(str(p) for p in raw_folder.glob("*/*.wav") if "background" not in str(p))[:4]
    data = {"data": [{"wav": clips[0], "labels": "/m/a"}, {"wav": clips[1], "labels": "/m/a,/m/b"},
                     {"wav": clips[2], "labels": "/m/a"}, {"wav": clips[3], "labels": "/m/c,/m/b"}]}
    (tmp_path / "train.json").write_text(json.dumps(data))
    src = source(tmp_path, source="json", json={"train": str(tmp_path / "train.json")}, label_csv=str(label_csv))
    assert src.labels == ["Speech", "Noise", "Music"] and src.multilabel
    np.testing.assert_array_equal(src.targets("train"), [[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 1, 1]])
    # gen_weight_file.py: class weight 1000 / (count + 0.01); counts a=3, b=2, c=1; clip = sum over its labels.
    a, b, c = 1000 / 3.01, 1000 / 2.01, 1000 / 1.01
    np.testing.assert_allclose(src.example_weights("train"), [a, a + b, a, c + b])
    single = {"data": [{"wav": clip, "labels": mid} for clip, mid in zip(clips, ["/m/a", "/m/b", "/m/c", "/m/a"])]}
    (tmp_path / "single.json").write_text(json.dumps(single))  # one label per clip (ESC-50): single-label
    single = source(tmp_path, source="json", json={"train": str(tmp_path / "single.json")}, label_csv=str(label_csv))
    assert not single.multilabel  # and balanced sampling weighs its classes alike: a, b, c, a
    np.testing.assert_allclose(single.example_weights("train"), [1000 / 2.01, 1000 / 1.01, 1000 / 1.01, 1000 / 2.01])
    data["data"][2]["labels"] = "/m/zzz"
    (tmp_path / "train.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="entry 2 .*unknown label '/m/zzz'"):
        source(tmp_path, source="json", json={"train": str(tmp_path / "train.json")}, label_csv=str(label_csv))



@pytest.mark.parametrize("rows, problem", [
    ("0,/m/a,Speech\n1,/m/a,Noise\n", r":3: mid '/m/a' is given twice \(first at line 2\)"),
    ("0,/m/a,Speech\n1,/m/b\n", r":3: no display_name"),
    ("0,/m/a,Speech\nx,/m/b,Noise\n", r":3: index 'x' is not an integer"),
    ("0,/m/a,Speech\n0,/m/b,Noise\n", r":3: index 0 is given twice"),
    ("0,/m/a,Speech\n2,/m/b,Noise\n", r": label indices must run 0..1 without gaps"),
    ("\n", r": no labels \(only the header\)"),
])
def test_label_csv_rows_checked_with_their_line(tmp_path, rows, problem):
    from ast_jax.data.recipe_json import read_label_csv

    path = tmp_path / "labels.csv"
    path.write_text("index,mid,display_name\n" + rows)
    with pytest.raises(ValueError, match=rf"^{path}{problem}"):
        read_label_csv(path)


def test_label_csv_saved_with_a_byte_order_mark(tmp_path):
    from ast_jax.data.recipe_json import read_label_csv

    path = tmp_path / "labels.csv"
    path.write_bytes("index,mid,display_name\n1,/m/b,Noise\n0,/m/a,Speech\n".encode("utf-8-sig"))
    assert read_label_csv(path) == (["Speech", "Noise"], {"/m/a": 0, "/m/b": 1})


def test_recipe_json_entries_repeats_and_leaks_refused(tmp_path):
    label_csv = tmp_path / "labels.csv"
    label_csv.write_text("index,mid,display_name\n0,/m/a,Speech\n1,/m/b,Noise\n")

    def manifests(**splits):
        for split, entries in splits.items():
            (tmp_path / f"{split}.json").write_text(json.dumps({"data": entries}))
        return source(tmp_path, source="json", json={split: str(tmp_path / f"{split}.json") for split in splits},
                      label_csv=str(label_csv))

    a, b, c = ({"wav": f"clips/{name}.wav", "labels": "/m/a"} for name in "abc")
    with pytest.raises(ValueError, match=r"train.json: entry 1 needs the keys 'wav' and 'labels' \(it has 'path', "
                                         r"'label'\)"):
        manifests(train=[a, {"path": "x.wav", "label": "/m/a"}])
    with pytest.raises(ValueError, match=r"train.json: entry 2 \(clips/../clips/a.wav\) is listed again \(first as "
                                         r"entry 0\)"):
        manifests(train=[a, b, {"wav": "clips/../clips/a.wav", "labels": "/m/b"}])
    with pytest.raises(ValueError, match=r"test.json: 1 of its clips are also in the training manifest "
                                         r".*train.json \(the first: ./clips/b.wav\)"):
        manifests(train=[a, b], validation=[c], test=[c, {"wav": "./clips/b.wav", "labels": "/m/b"}])
    shared = manifests(train=[a, b], validation=[c], test=[c])  # the recipes score their eval set as both
    assert len(shared.split_files("validation").clips) == len(shared.split_files("test").clips) == 1


def test_folder_label_without_audio_refused(tmp_path):
    root = tmp_path / "mine"
    make_user_folder(root)
    (root / "left").mkdir()
    (root / "left" / "notes.txt").write_text("no audio here")
    with pytest.raises(ValueError, match=rf"^{root}/left: a label folder with no audio files, so its label would be "
                                         r"left out of the task \(1 such folder\)"):
        source(tmp_path, source="folder", data_dir=str(root))
    src = source(tmp_path, source="folder", data_dir=str(root), labels=["bird", "car", "left"])  # named: kept
    assert src.labels == ["bird", "car", "left"]
    for split in ("train", "test"):  # a label with clips in one split only is not empty
        (root / split).mkdir()
    shutil.move(root / "bird", root / "train" / "bird")
    shutil.move(root / "car", root / "train" / "car")
    shutil.move(root / "left", root / "test" / "left")
    (root / "test" / "bird").mkdir()
    with pytest.raises(ValueError, match=rf"^{root}/test/left: a label folder with no audio"):
        source(tmp_path, source="folder", data_dir=str(root))
    (root / "test" / "left" / "notes.txt").unlink()
    (root / "test" / "left").rmdir()
    assert source(tmp_path, source="folder", data_dir=str(root)).labels == ["bird", "car"]


def test_tfds_unknown_name_is_one_line():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match=r"^TFDS has no data set 'speech_comands'; did you mean 'speech_commands'\?$"):
        build_source(ConfigDict(dict(source="tfds", tfds_name="speech_comands")))


def test_batches_resume_and_split_across_processes(tmp_path, raw_folder):
    src = source(tmp_path, source="speech_commands", data_dir=str(raw_folder), num_classes=12)
    full = list(src.batches("train", batch_size=4, shuffle=True, seed=3, epoch=1))
    resumed = list(src.batches("train", batch_size=4, shuffle=True, seed=3, epoch=1, start_batch=2))
    for a, b in zip(full[2:], resumed):
        np.testing.assert_array_equal(a["audio"], b["audio"])
        np.testing.assert_array_equal(a["index"], b["index"])
    halves = [list(src.batches("train", batch_size=4, shuffle=True, seed=3, epoch=1, process_index=p,
                               process_count=2)) for p in range(2)]
    for whole, first, second in zip(full, *halves):
        np.testing.assert_array_equal(whole["index"], np.concatenate([first["index"], second["index"]]))
    seen = np.concatenate([b["index"][b["valid"]] for b in full])
    assert sorted(seen) == list(range(src.num_examples("train")))
    other_epoch = np.concatenate([b["index"] for b in src.batches("train", batch_size=4, shuffle=True, seed=3, epoch=2)])
    assert not np.array_equal(other_epoch, np.concatenate([b["index"] for b in full]))
    assert all((b["length"] == np.where(b["valid"], 16000, 0)).all() for b in full)
    via_thread = list(prefetch(src.batches("train", batch_size=4, shuffle=True, seed=3, epoch=1)))
    for a, b in zip(full, via_thread):
        np.testing.assert_array_equal(a["audio"], b["audio"])


def test_prefetch_raises_the_producers_error():
    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(broken()))


def test_even_split_matches_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core import splits

    for total, count in ((10, 3), (7, 4), (100, 8)):
        info = splits.SplitDict([splits.SplitInfo(name="train", shard_lengths=[total], num_bytes=0,
                                                  filename_template=None)])
        for index, part in enumerate(tfds.even_splits("train", n=count)):
            absolute = part.to_absolute(info)[0]
            assert even_split(total, index, count) == (absolute.from_ or 0, total if absolute.to is None else absolute.to)


def test_tfds_mock_data_padded_to_a_second_and_sharded_per_process():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10):
        src = build_source(ConfigDict(dict(source="tfds", num_classes=12)))
        assert src.labels == LABELS_12
        batch = next(src.batches("train", batch_size=4))
        assert batch["audio"].shape == (4, 16000) and batch["audio"].dtype == np.float32
        assert (batch["targets"].sum(1) == 1).all()
        assert np.abs(batch["audio"]).max() <= 1.0
        assert (batch["audio"][:, 1000:] == 0).all()  # mock clips are a few dozen samples, zero-padded
        assert (0 < batch["length"]).all() and (batch["length"] < 1000).all()
        parts = [np.concatenate([b["index"][b["valid"]] for b in src.batches(
            "train", batch_size=4, shuffle=True, process_index=p, process_count=2)]) for p in range(2)]
        assert sorted(parts[0]) == list(range(0, 5)) and sorted(parts[1]) == list(range(5, 10))


def test_tfds_without_prepared_data_is_one_line(tmp_path, monkeypatch):
    """...and leaves none of the empty /tmp/tmpXXXXtfds folders TFDS makes while it looks for the data's
    description online."""
    import tempfile

    pytest.importorskip("tensorflow_datasets")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    src = build_source(ConfigDict(dict(source="tfds", num_classes=12, data_dir=str(tmp_path / "data"))))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/data/speech_commands/[0-9.]+: no prepared TFDS "
                                         r"speech_commands data there; prepare it once where the network is reachable"):
        src.num_examples("train")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_training_on_tfds_without_prepared_data_says_only_that(tmp_path):
    """The command's whole stderr is its error line: TensorFlow's oneDNN notice (printed when it loads) and TFDS's
    warnings about the empty data_dir are kept off it."""
    pytest.importorskip("tensorflow_datasets")
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    process = subprocess.run(
        [sys.executable, "-m", "ast_jax", "train", "--config", str(root / "configs" / "tfds_speech_commands.py"),
         "--workdir", str(tmp_path / "run"), f"--config.data.data_dir={tmp_path}"],
        env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300)
    assert process.returncode == 1 and process.stderr.count("\n") == 1, process.stderr
    assert "no prepared TFDS speech_commands data there" in process.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_source_is_an_error():
    with pytest.raises(ValueError, match="unknown data source 'nope'"):
        build_source(ConfigDict(dict(source="nope")))


def test_demo_set_is_small_speaker_disjoint_and_balanced(tmp_path):
    from ast_jax.data.demo import demo_dir

    root = demo_dir()
    assert (root / "LICENSE").is_file() and "Attribution 4.0" in (root / "LICENSE").read_text()
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) <= 15_000_000
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    speakers = {s: {r["speaker"] for r in rows if r["split"] == s and r["speaker"]} for s in ("train", "validation", "test")}
    assert not (speakers["train"] & speakers["test"] or speakers["train"] & speakers["validation"]
                or speakers["validation"] & speakers["test"])
    src = source(tmp_path, source="demo")
    assert src.labels == LABELS_12
    assert [src.num_examples(s) for s in ("train", "validation", "test")] == [672, 96, 144]
    for split, per_class in (("train", 56), ("validation", 8), ("test", 12)):
        assert (src.targets(split).sum(0) == per_class).all()
    audio, targets, _ = src.load("test", np.array([0]))
    first = next(r for r in rows if r["split"] == "test")
    np.testing.assert_array_equal(audio[0], fit(read_int16(root / first["path"])))
    assert src.labels[targets[0].argmax()] == first["label"]


SHARED_TEST_SET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "speech_commands_test_v0.02_dev"


@pytest.mark.skipif(not SHARED_TEST_SET.is_dir(), reason="needs the official test clips in ../shared/data")
def test_the_demo_set_is_remade_exactly_from_the_official_test_clips(tmp_path):
    """Where the shipped demo set came from: `make_demo_set` on the official test clips (../shared/data, beside
    the project in CI) writes the same manifest and the same samples, file for file."""
    import soundfile

    from ast_jax.data.demo import demo_dir, make_demo_set

    make_demo_set(SHARED_TEST_SET, tmp_path / "demo")
    shipped = (demo_dir() / "manifest.csv").read_text()
    assert (tmp_path / "demo" / "manifest.csv").read_text() == shipped
    for row in csv.DictReader(shipped.splitlines()):
        np.testing.assert_array_equal(soundfile.read(tmp_path / "demo" / row["path"], dtype="int16")[0],
                                      soundfile.read(demo_dir() / row["path"], dtype="int16")[0], err_msg=row["path"])


def test_labels_35_are_the_released_order():
    # The order of the released checkpoint's head: MIT/ast-finetuned-speech-commands-v2's config.json id2label
    # (the opt-in online test in test_convert.py checks the downloaded model against LABELS_35).
    released = ("backward follow five bed zero on learn two house tree dog stop seven eight down six forward cat right "
                "visual four wow no nine off three left marvin yes up sheila happy bird go one").split()
    assert LABELS_35 == released


def test_balanced_sampling_draws_by_example_weights():
    # The AudioSet recipe's WeightedRandomSampler: draws with replacement in proportion to the weights,
    # fixed by (seed, epoch), and the same global batches however many processes share them.
    import dataclasses

    from ast_jax.data import SyntheticSource

    @dataclasses.dataclass
    class Weighted(SyntheticSource):
        def example_weights(self, split):
            return np.array([8.0, 4.0, 2.0, 1.0, 1.0])

    source = Weighted(labels=["a", "b"], clip_samples=400, sizes={"train": 5})

    def drawn(epoch, process_index=0, process_count=1):
        return np.concatenate([b["index"] for b in source.batches(
            "train", batch_size=4, balanced=True, seed=3, epoch=epoch,
            process_index=process_index, process_count=process_count)])

    assert np.array_equal(drawn(0), drawn(0)) and not np.array_equal(drawn(0), drawn(1))
    halves = [np.stack([b["index"] for b in source.batches("train", batch_size=4, balanced=True, seed=3, epoch=0,
                                                            process_index=p, process_count=2)]) for p in (0, 1)]
    assert np.array_equal(np.concatenate(halves, axis=1).ravel(), drawn(0))

    draws = np.concatenate([drawn(e) for e in range(800)])
    assert np.sum(draws >= 0) == 800 * 5  # an epoch is as many draws as examples; the rest is padding (-1)
    frequencies = np.bincount(draws[draws >= 0], minlength=5) / (800 * 5)
    np.testing.assert_allclose(frequencies, np.array([8, 4, 2, 1, 1]) / 16, atol=0.02)

    with pytest.raises(ValueError, match="gives no example weights"):
        next(SyntheticSource(labels=["a"], clip_samples=400).batches("train", batch_size=4, balanced=True))


def test_hash_split_keeps_each_speaker_on_one_side(tmp_path):
    """`<speaker>_nohash_<n>` clips of one speaker, in any word folder, share a split (as Speech Commands' own
    split does), and so do a manifest's rows with one `group`; other clips are split one by one."""
    from ast_jax.data.folder import _build, folder_entries, manifest_entries

    root = tmp_path / "words"
    speakers = [f"{i:08x}" for i in range(40)]
    for word in ("yes", "no", "_unknown_"):
        (root / word).mkdir(parents=True)
        for speaker in speakers:
            for n in range(2):  # other words gathered into one folder keep their word in the name
                other = ("bed", "cat")[n]
                name = f"{speaker}_nohash_{n}.wav" if word != "_unknown_" else f"{other}_{speaker}_nohash_0.wav"
                soundfile.write(root / word / name, np.zeros(160), 16000)
    _, splits, _ = _build(folder_entries(root), str(root), None, 0.25, 0.25)
    side = {}
    for split, files in splits.items():
        for clip in files.clips:
            side.setdefault(Path(clip.path).name.split("_nohash_")[0][-8:], set()).add(split)
    assert len(side) == 40 and all(len(sides) == 1 for sides in side.values())
    assert {next(iter(s)) for s in side.values()} == {"train", "validation", "test"}

    manifest = tmp_path / "clips.csv"
    rows = [f"clip{n}.wav,{'ab'[n % 2]},speaker{n // 4}" for n in range(80)] + [f"solo{n}.wav,a," for n in range(40)]
    manifest.write_text("path,label,group\n" + "\n".join(rows) + "\n")
    _, splits, _ = _build(manifest_entries(manifest), str(manifest), None, 0.25, 0.25)
    where = {Path(clip.path).name: split for split, files in splits.items() for clip in files.clips}
    for speaker in range(20):
        assert len({where[f"clip{n}.wav"] for n in range(4 * speaker, 4 * speaker + 4)}) == 1
    assert len({where[f"solo{n}.wav"] for n in range(40)}) == 3  # no group: each clip on its own
    # a group given on some rows only: a blank row's file-name speaker is the same group
    rows = [f"x/{s}_nohash_{n},a,{s if n == 0 else ''}" for s in speakers for n in range(2)]
    manifest.write_text("path,label,group\n" + "\n".join(rows) + "\n")
    _, splits, _ = _build(manifest_entries(manifest), str(manifest), None, 0.25, 0.25)
    where = {Path(clip.path).name: split for split, files in splits.items() for clip in files.clips}
    assert all(where[f"{s}_nohash_0"] == where[f"{s}_nohash_1"] for s in speakers)
    # a speaker name of the user's own with "_" in it stays whole: alice_01 and bob_01 are two speakers
    from ast_jax.data.folder import _group_key

    assert _group_key("x/alice_01_nohash_0.wav") != _group_key("x/bob_01_nohash_0.wav")
    assert _group_key("x/alice_20230115_nohash_0.wav") != _group_key("x/bob_20230115_nohash_0.wav")
    assert _group_key("x/bed_0cb74144_nohash_1.wav") == _group_key("y/0cb74144_nohash_0.wav") == "group:0cb74144"
