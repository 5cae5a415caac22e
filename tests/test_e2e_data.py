"""End to end on real data paths: train, evaluate, checkpoint and resume for a few steps, then predict.

Under `tfds.testing.mock_data` (TFDS speech_commands, fake clips padded to a second) and on a tiny raw Speech
Commands folder made from the clips in tests/data (the 35-word task of the released checkpoint).
"""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from ast_jax.data.speech_commands import LABELS_12, LABELS_35
from ast_jax.pretrained import load_model
from ast_jax.training.config_io import load_config
from ast_jax.training.trainer import train_and_evaluate

ROOT = Path(__file__).parent.parent
MINI = Path(__file__).parent / "data" / "speech_commands_mini"


def tiny_config(num_epochs: int, **data):
    """configs/smoke.py (one-layer tiny AST, 32 mel bins, 32 frames) on one-second clips of `data`."""
    config = load_config(str(ROOT / "configs" / "smoke.py"))
    config.num_epochs = num_epochs
    config.batch_size = config.eval_batch_size = 4
    config.progress_bar = False
    config.data.update(clip_seconds=1.0, **data)
    config.checkpoint.update(every_steps=1000, asynchronous=False)
    return config


def leaves(params):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params)]


def test_tfds_mock_data_train_evaluate_checkpoint_resume(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8):
        straight = train_and_evaluate(tiny_config(2, source="tfds", num_classes=12), tmp_path / "straight")
        first = train_and_evaluate(tiny_config(1, source="tfds", num_classes=12), tmp_path / "resumed")
        resumed = train_and_evaluate(tiny_config(2, source="tfds", num_classes=12), tmp_path / "resumed")
    assert first["steps"] == 2 and straight["steps"] == resumed["steps"] == 4  # 8 clips, batch 4
    assert any((tmp_path / "resumed" / "checkpoints").iterdir())
    test_rows = [row for row in resumed["results"] if row["split"] == "test"]
    assert test_rows and test_rows[0]["examples"] == 8 and 0.0 <= test_rows[0]["accuracy"] <= 1.0
    # Resuming from the step-2 checkpoint repeats the uninterrupted run exactly: same data order, same
    # augmentation draws (fold_in of the step), same parameters.
    for a, b in zip(leaves(load_model(tmp_path / "straight" / "final").params),
                    leaves(load_model(tmp_path / "resumed" / "final").params)):
        np.testing.assert_array_equal(a, b)
    model = load_model(tmp_path / "resumed" / "best")
    assert model.labels == LABELS_12
    assert json.loads((tmp_path / "resumed" / "results.json").read_text())["steps"] == 4


def test_raw_speech_commands_folder_train_resume_predict(tmp_path, capsys, caplog):
    root = tmp_path / "speech_commands_v0.02"
    shutil.copytree(MINI, root, ignore=shutil.ignore_patterns("LICENSE", "README.md"))
    (root / "validation_list.txt").write_text("yes/0cb74144_nohash_0.wav\nbed/28497c5b_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/0c40e715_nohash_0.wav\n")
    (root / "no" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")  # reported and skipped
    data = dict(source="speech_commands", data_dir=str(root), num_classes=35, cache_dir=str(tmp_path / "cache"))
    workdir = tmp_path / "run"
    first = train_and_evaluate(tiny_config(1, **data), workdir)
    summary = train_and_evaluate(tiny_config(2, **data), workdir)
    assert first["steps"] == 2 and summary["steps"] == 4  # 6 readable training clips, batch 4
    assert "broken.wav" in caplog.text and "1 of 7 clips are missing" in caplog.text
    test_row = next(row for row in summary["results"] if row["split"] == "test")
    assert test_row["examples"] == 1
    model = load_model(workdir / "best")
    assert model.labels == LABELS_35 and model.config.num_labels == 35

    from ast_jax.cli import main

    clip = root / "yes" / "42beb5eb_nohash_0.wav"
    assert main(["predict", "--model", str(workdir / "best"), "--format", "jsonl", "--top-k", "3", str(clip)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(rows) == 1 and rows[0]["file"].endswith("42beb5eb_nohash_0.wav")
    top = rows[0]["labels"]
    assert len(top) == 3 and all(item["label"] in LABELS_35 and 0.0 <= item["score"] <= 1.0 for item in top)
    assert [item["score"] for item in top] == sorted((item["score"] for item in top), reverse=True)

    # The data may move, but a resume must meet the same training clips: one renamed (as many clips, the same
    # labels) is refused before training.
    from ast_jax.data import build_source
    from ml_collections import ConfigDict

    moved = tmp_path / "moved" / "speech_commands_v0.02"
    shutil.move(root, moved)
    saved = json.loads((workdir / "data.json").read_text())["train_fingerprint"]
    assert build_source(ConfigDict({**data, "data_dir": str(moved)})).fingerprint("train") == saved
    (moved / "yes" / "63f7a489_nohash_1.wav").rename(moved / "yes" / "63f7a489_nohash_2.wav")
    with pytest.raises(ValueError, match=r"its checkpoints were trained on other data than the speech_commands source "
                                         r".*\(as many training clips and the same labels, but other clips or targets\)"):
        train_and_evaluate(tiny_config(3, **{**data, "data_dir": str(moved)}), workdir)
