"""The predict, evaluate, embed and explain commands end to end, on a tiny random model saved to disk.

Metrics are checked against scikit-learn; embeddings against the model's own pooled output on features made
by transformers' ASTFeatureExtractor; predictions against the Python pipeline.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import soundfile as sf

from ast_jax.cli import main
from ast_jax.inference import pipeline
from ast_jax.pretrained import save_model

from test_audio import as_recorded
from test_inference import LABELS, RATE, tiny_model, waveform

CLIP = 7920  # samples that fill the tiny model's 48 frames


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_model(tmp_path_factory.mktemp("model") / "tiny", tiny_model("softmax", seed=1)))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A labelled folder <root>/<label>/*.wav: 4 of the model's labels (not in its order), 3 clips each."""
    root = tmp_path_factory.mktemp("clips")
    for k, label in enumerate(["up", "yes", "left", "no"]):
        (root / label).mkdir()
        for j in range(3):
            # lengths around the model's input (7,920 samples): padded, exact and cut
            seconds = (0.3, CLIP / RATE, 0.7)[j]
            sf.write(root / label / f"{label}{j}.wav", waveform(seconds, 10 * k + j, 200.0 * (k + 1) + 50 * j),
                     RATE, subtype="PCM_16")
    return root


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_formats_match_the_pipeline(model_dir, clips, capsys, tmp_path):
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--format", "jsonl", "--top-k", 3, clips)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    files = sorted(str(p) for p in clips.rglob("*.wav"))
    assert [row["file"] for row in rows] == files
    expected = pipeline(model_dir)(files, top_k=3)
    for row, labels in zip(rows, expected):
        assert [i["label"] for i in row["labels"]] == [i["label"] for i in labels]
        np.testing.assert_allclose([i["score"] for i in row["labels"]], [i["score"] for i in labels], atol=1e-6)

    output = tmp_path / "out.csv"
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--format", "csv", "-o", output,
                             str(clips / "*" / "*0.wav"))
    assert code == 0 and out == "" and err.endswith(f"ast-jax predict: 4 rows -> {output}\n"), err
    table = list(csv.DictReader(output.read_text().splitlines()))
    assert len(table) == 4 and set(table[0]) == {"file"} | {f"{k}_{i}" for i in range(1, 6) for k in ("label", "score")}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind

    # Without --format the output's name chooses it; --format still wins.
    for name, extra, check in (("names.CSV", [], lambda text: next(csv.DictReader(text.splitlines()))["file"]),
                               ("names.jsonl", [], lambda text: json.loads(text.splitlines()[0])["file"]),
                               ("table.csv", ["--format", "table"], lambda text: text.split()[0] == "file")):
        code, _, err = run_cli(capsys, "predict", "--model", model_dir, *extra, "-o", tmp_path / name,
                               clips / "up" / "up0.wav")
        assert code == 0, err
        assert check((tmp_path / name).read_text()) in (str(clips / "up" / "up0.wav"), True)

    code, out, _ = run_cli(capsys, "predict", "--model", model_dir, clips / "up" / "up0.wav")
    header, line = out.splitlines()
    assert header.split()[:3] == ["file", "label", "score"]
    assert line.split()[1] == expected[files.index(str(clips / "up" / "up0.wav"))][0]["label"]


def test_predict_activation_and_dtype(model_dir, clips, capsys):
    """--activation none prints the logits, sigmoid and softmax are taken of them; --dtype bfloat16 computes in
    bfloat16: close to float32 rather than equal."""
    files = sorted(str(p) for p in clips.rglob("*.wav"))
    logits = np.asarray(pipeline(model_dir).predictor.outputs(
        [pipeline(model_dir).load(f) for f in files], ("logits",))["logits"])

    def predicted(*options):
        code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--format", "jsonl", "--top-k",
                                 len(LABELS), *options, *files)
        assert code == 0, err
        return np.array([[{i["label"]: i["score"] for i in json.loads(line)["labels"]}[label] for label in LABELS]
                         for line in out.splitlines()])

    np.testing.assert_allclose(predicted("--activation", "none"), logits, atol=1e-5)
    np.testing.assert_allclose(predicted("--activation", "sigmoid"), 1 / (1 + np.exp(-logits)), atol=1e-6)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(predicted(), softmax, atol=1e-6)  # the model was trained with softmax
    half = predicted("--dtype", "bfloat16", "--activation", "none")
    assert 0 < np.abs(half - logits).max() <= 0.05 * np.abs(logits).max()


def test_predict_windows(model_dir, capsys, tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, waveform(1.1, 3), RATE, subtype="PCM_16")
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--window", 0.4, "--hop", 0.25,
                             "--format", "jsonl", "--top-k", 2, path)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, 0.4), (0.25, 0.65), (0.5, 0.9), (0.75, 1.1)]
    assert all(len(r["labels"]) == 2 and r["file"] == str(path) for r in rows)
    # times as they are in CSV and tables (0.0625, not 0.062 or 0.06); a hop past the window is said to skip audio
    for output_format, first_cells in (("csv", "0.0625,0.3125"), ("table", "0.0625  0.3125")):
        code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--window", 0.25, "--hop", 0.0625,
                                 "--format", output_format, path)
        assert code == 0 and first_cells in out.splitlines()[2], out
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--window", 0.25, "--hop", 0.4, "--format",
                             "csv", path)
    assert code == 0 and "--hop 0.4 s is longer than --window 0.25 s: 0.15 s of every 0.4 s is not classified" in err
    # the logits are headed as logits
    code, out, _ = run_cli(capsys, "predict", "--model", model_dir, "--window", 0.4, "--activation", "none", path)
    assert out.split()[:5] == ["file", "start", "end", "label", "logit"]


def test_files_longer_than_the_input_and_other_mistakes_are_named(model_dir, clips, capsys, tmp_path):
    """A recording given without --window is heard only at its start: said once at the end (predict, embed,
    explain). Outputs and inputs the command cannot use, and a path inside a model folder, are one line each."""
    long = tmp_path / "long.wav"
    sf.write(long, waveform(2.0, 3), RATE, subtype="PCM_16")
    short = clips / "up" / "up0.wav"  # 0.3 s
    seconds = f"{CLIP / RATE:g}"
    for command in (["predict"], ["embed", "-o", tmp_path / "e.npz"], ["explain", "-o", tmp_path / "maps"]):
        code, _, err = run_cli(capsys, *command, "--model", model_dir, long, short)
        hint = "; --window classifies a recording window by window" if command[0] == "predict" else ""
        assert code == 0 and err.splitlines()[-1] == (f"ast-jax {command[0]}: 1 file longer than the model's input "
                                                      f"({seconds} s): only its start was heard{hint}"), err
    # samples short of one more 10 ms frame make no frame: a file that long is heard whole (0.5 s for 48 frames)
    whole = tmp_path / "whole.wav"
    sf.write(whole, waveform(2.0, 3)[:CLIP + 159], RATE, subtype="PCM_16")
    code, _, err = run_cli(capsys, "predict", "--model", model_dir, whole)
    assert code == 0 and "longer than the model's input" not in err, err
    mistakes = [
        (["explain", "--model", model_dir, short, "-o", tmp_path / "one.jpg"],
         f"{tmp_path / 'one.jpg'}: explain writes PNG images; name a .png file, or a folder for one PNG per file"),
        (["explain", "--model", model_dir, short, "-o", tmp_path / "one.png", "--batch-size", "9"],
         "--batch-size 9: explain takes at most 8 clips a batch"),
        (["embed", "--model", model_dir, "-", "-o", tmp_path / "s.npz"],
         "-: embed reads files, not standard input (predict does); save the audio to a file first"),
        (["predict", "--model", Path(model_dir) / "ast_jax.json", short],
         f"{Path(model_dir) / 'ast_jax.json'}: a part of the model folder {model_dir}, not a model; give {model_dir}"),
    ]
    for argv, message in mistakes:
        code, _, err = run_cli(capsys, *argv)
        assert code == 1 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "one.jpg").exists() and not (tmp_path / "s.npz").exists()
    # a failure count over files only says files
    code, _, err = run_cli(capsys, "predict", "--model", model_dir, short, tmp_path / "missing.wav")
    assert code == 1 and err.endswith("ast-jax predict: 1 of 2 files failed\n"), err


def test_predict_windows_from_a_live_pipe(model_dir, tmp_path):
    """`predict --window ... -` writes each window's row while the audio is still arriving; the rows equal
    those of the same audio as a file."""
    audio = waveform(2.2, 5, 330.0)
    sf.write(tmp_path / "same.wav", audio, RATE, subtype="PCM_16")
    stream = as_recorded((tmp_path / "same.wav").read_bytes())
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "AST_JAX_COMPILATION_CACHE": "off"}
    command = [sys.executable, "-m", "ast_jax", "predict", "--model", model_dir, "--window", "0.4", "--hop",
               "0.25", "--format", "jsonl", "--top-k", "2", "-"]
    with subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        first_second = 44 + 2 * RATE  # header and one second of 16-bit samples
        process.stdin.write(stream[:first_second])
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "no row while the stream is open"
        first = json.loads(process.stdout.readline())
        assert first["file"] == "-" and (first["start"], first["end"]) == (0.0, 0.4)
        process.stdin.write(stream[first_second:])
        process.stdin.close()
        rest, err = process.stdout.read(), process.stderr.read()
        assert process.wait(timeout=120) == 0, err
    rows = [first] + [json.loads(line) for line in rest.splitlines()]
    expected = pipeline(model_dir).windows(str(tmp_path / "same.wav"), 0.4, 0.25, top_k=2)
    assert [(r["start"], r["end"]) for r in rows] == [(w["start"], w["end"]) for w in expected]
    for row, window in zip(rows, expected):
        assert [i["label"] for i in row["labels"]] == [i["label"] for i in window["labels"]]
        np.testing.assert_allclose([i["score"] for i in row["labels"]], [i["score"] for i in window["labels"]],
                                   atol=1e-6)


def test_predict_reads_a_whole_file_from_standard_input(model_dir, clips, capsys, monkeypatch):
    path = clips / "up" / "up1.wav"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--format", "jsonl", "-")
    assert code == 0, err
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["file"] == "-" and row["labels"] == json.loads(json.dumps(pipeline(model_dir)(str(path))))
    code, _, err = run_cli(capsys, "predict", "--model", model_dir, "-", path)
    assert code == 1 and "standard input cannot be combined with other inputs" in err


def test_an_interrupted_predict_keeps_the_rows_it_has(model_dir, clips, capsys, tmp_path, monkeypatch):
    """Ctrl-C in a long run: JSON lines already went to stdout row by row; with --output the rows done so far go
    beside it (o.csv -> o.partial.csv), leaving an earlier finished o.csv as it was, and embed does the same
    with the embeddings done; exit status 130."""
    from ast_jax.inference import Pipeline

    files = sorted(str(p) for p in clips.rglob("*.wav"))
    real = Pipeline.predict_files

    def interrupted_after_two(self, paths, **kwargs):
        for count, item in enumerate(real(self, paths, **kwargs)):
            if count == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(Pipeline, "predict_files", interrupted_after_two)
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--format", "jsonl", *files)
    assert code == 130 and "interrupted" in err
    assert [json.loads(line)["file"] for line in out.splitlines()] == files[:2]
    (tmp_path / "o.csv").write_text("an earlier run's finished result\n")
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--format", "csv", "-o", tmp_path / "o.csv",
                             *files)
    assert code == 130 and out == "" and f"the 2 rows done are in {tmp_path / 'o.partial.csv'}" in err
    assert [row["file"] for row in csv.DictReader((tmp_path / "o.partial.csv").read_text().splitlines())] == files[:2]
    assert (tmp_path / "o.csv").read_text() == "an earlier run's finished result\n"
    for output in ("e.npz", "e.npy"):
        code, _, err = run_cli(capsys, "embed", "--model", model_dir, "-o", tmp_path / output, *files)
        assert code == 130 and "2 files" in err and "(interrupted)" in err and not (tmp_path / output).exists()
    with np.load(tmp_path / "e.partial.npz") as saved:
        assert list(saved["files"]) == files[:2] and saved["embeddings"].shape[0] == 2
    assert np.load(tmp_path / "e.partial.npy").shape[0] == 2
    assert (tmp_path / "e.partial.npy.files.txt").read_text().splitlines() == files[:2]
    # into a stream (here a log opened for appending, as `>> log` does), what is done goes into the stream itself
    (tmp_path / "log").write_text("earlier line\n")
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_APPEND)
    try:
        code, _, err = run_cli(capsys, "predict", "--model", model_dir, "--format", "csv", "-o", f"/dev/fd/{log}",
                               *files)
    finally:
        os.close(log)
    assert code == 130 and f"the 2 rows done are in /dev/fd/{log}" in err
    lines = (tmp_path / "log").read_text().splitlines()
    assert lines[0] == "earlier line" and [row["file"] for row in csv.DictReader(lines[1:])] == files[:2]
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" not in p.name) == ["log", "o.csv"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception
def test_a_signal_whose_exception_python_dropped_still_stops_the_run(model_dir, clips, capsys, monkeypatch):
    """SIGTERM's exception raised inside a garbage-collection callback (JAX has one) is printed as "Exception
    ignored" and dropped by Python; the handler noted it, so the run stops at the next file, exit 143."""
    import gc
    import signal

    from ast_jax import commands
    from ast_jax.cli import Terminated
    from ast_jax.inference import Pipeline

    monkeypatch.setattr(commands, "_received", [])
    handler = commands.raise_on_signal(Terminated)

    def collect_with_a_signal(phase, info):
        if phase == "start":
            gc.callbacks.remove(collect_with_a_signal)
            handler(signal.SIGTERM, None)

    files = sorted(str(p) for p in clips.rglob("*.wav"))
    real = Pipeline.predict_files

    def signal_dropped_after_two(self, paths, **kwargs):
        for count, item in enumerate(real(self, paths, **kwargs)):
            if count == 2:
                gc.callbacks.append(collect_with_a_signal)
                gc.collect()  # the callback's Terminated goes nowhere
            yield item

    monkeypatch.setattr(Pipeline, "predict_files", signal_dropped_after_two)
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--format", "jsonl", *files)
    assert code == 143 and "ast-jax: terminated" in err
    assert [json.loads(line)["file"] for line in out.splitlines()] == files[:2]

    # A library that turns the interrupt into its own error (Orbax's restore: a ValueError from load_model, or a
    # plain Exception while reading an array): the exit status and the one line still tell of the signal.
    for signal_exception, error, code_and_line in (
            (Terminated, ValueError("params: cannot restore parameters (initialization failed)"), (143, "terminated")),
            (KeyboardInterrupt, Exception("Encountered error while reading array index"), (130, "interrupted"))):
        def error_after_the_signal(self, paths, **kwargs):
            commands._received.append(signal_exception)
            raise error
            yield

        monkeypatch.setattr(Pipeline, "predict_files", error_after_the_signal)
        code, _, err = run_cli(capsys, "predict", "--model", model_dir, *files)
        assert (code, err) == (code_and_line[0], f"ast-jax: {code_and_line[1]}\n")


def test_bad_files_are_reported_and_the_rest_processed(model_dir, clips, capsys, tmp_path):
    good = sorted(str(p) for p in (clips / "no").glob("*.wav"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "text.wav").write_text("this is not audio\n" * 20)
    header_cut = bad / "truncated.wav"
    sf.write(header_cut, waveform(0.5), RATE, subtype="PCM_16")
    header_cut.write_bytes(header_cut.read_bytes()[:30])
    nan = waveform(0.5)
    nan[100:200] = np.nan
    sf.write(bad / "nan.wav", nan, RATE, subtype="FLOAT")
    silent_header = bad / "no_samples.wav"
    sf.write(silent_header, np.zeros(0, np.float32), RATE, subtype="PCM_16")
    (bad / "loop.wav").symlink_to(bad / "loop.wav")
    broken = [str(bad / "missing.wav"), str(bad / "empty.wav"), str(bad / "text.wav"), str(header_cut),
              str(bad / "nan.wav"), str(silent_header), str(bad / "loop.wav")]
    for command in (["predict", "--format", "jsonl"], ["embed", "-o", tmp_path / "e.npz"]):
        code, out, err = run_cli(capsys, *command, "--model", model_dir, good[0], *broken, *good[1:])
        assert code == 1
        lines = err.strip().splitlines()
        problems = ["file not found", "empty file (0 bytes)", "not an audio file (",
                    "truncated or corrupt audio file (", "contains NaN or Inf samples (first at 0.006 s)",
                    "no audio samples", "too many levels of symbolic links"]
        for path, problem in zip(broken, problems):  # one line each, naming the file and what is wrong with it
            assert sum(line.startswith(f"{path}: {problem}") for line in lines) == 1, (path, err)
        assert err.count(str(bad / "loop.wav")) == 1  # an OS error's reason, without the path again
        if command[0] == "predict":
            assert [json.loads(line)["file"] for line in out.splitlines()] == good
        else:
            assert list(np.load(tmp_path / "e.npz")["files"]) == good


@pytest.mark.parametrize("command, option, value", [
    ("predict", "--top-k", "0"), ("predict", "--batch-size", "-1"), ("predict", "--workers", "0"),
    ("predict", "--window", "0"), ("predict", "--hop", "-0.5"), ("predict", "--window", "nan"),
    ("embed", "--batch-size", "0"), ("evaluate", "--clip-seconds", "0"), ("evaluate", "--num-classes", "7"),
])
def test_bad_numbers_are_usage_errors(model_dir, capsys, command, option, value):
    """Zero, negative or nan counts and lengths stop the command before the model loads (argparse, exit 2),
    rather than quietly falling back to a default."""
    extra = {"predict": ["x.wav"], "embed": ["x.wav", "-o", "e.npz"], "evaluate": ["--data", "demo"]}[command]
    with pytest.raises(SystemExit) as stop:
        main([command, "--model", model_dir, option, value, *extra])
    assert stop.value.code == 2
    assert f"argument {option}: " in capsys.readouterr().err


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out.count("\n") == 1
    assert out.startswith(f"ast-jax {metadata.version('ast-jax')} (jax {metadata.version('jax')}, ")
    assert main([]) == 2  # no command: the help, on stderr, and a usage error's status
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: ast-jax") and "export-hf" in err


def test_public_names_are_listed_for_tab_completion_and_submodules_load_on_use():
    import types

    import ast_jax
    import ast_jax.training

    for package in (ast_jax, ast_jax.training):
        assert set(package.__all__) <= set(dir(package)), package
    assert {"train_and_evaluate", "metrics", "trainer"} <= set(dir(ast_jax.training))
    assert isinstance(ast_jax.training.metrics, types.ModuleType) and callable(ast_jax.training.metrics.accuracy)
    assert isinstance(ast_jax.evaluation, types.ModuleType)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        ast_jax.training.nope


def test_top_k_and_hop_must_be_positive_in_python(model_dir, monkeypatch):
    classify = pipeline(model_dir)
    audio = waveform(0.5)
    # function_to_apply as transformers' pipeline takes it, "none" giving the logits
    logits = np.asarray(classify.predictor.outputs([audio], ("logits",))["logits"][0])
    raw = classify(audio, top_k=None, function_to_apply="none")
    assert [i["score"] for i in raw] == pytest.approx(sorted(logits, reverse=True), abs=1e-6)
    assert [i["label"] for i in raw] == [LABELS[i] for i in np.argsort(-logits, kind="stable")]
    with pytest.raises(ValueError, match="^function_to_apply must be one of softmax, sigmoid, none"):
        classify(audio, function_to_apply="relu")
    # the other activations come from the model's one Predictor (one compiled function, one copy of the
    # parameters on the device), as lists or from an iterator
    import ast_jax.inference

    made = []
    monkeypatch.setattr(ast_jax.inference.Predictor, "__init__", lambda *args, **kwargs: made.append(args))
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    for other, expected in (("softmax", softmax), ("sigmoid", 1 / (1 + np.exp(-logits)))):
        for got in (classify(audio, top_k=None, function_to_apply=other),
                    next(classify(iter([audio]), top_k=None, function_to_apply=other))):
            assert [i["score"] for i in got] == pytest.approx(sorted(expected, reverse=True), abs=1e-6)
    assert made == []
    assert len(classify(audio, top_k=100)) == len(LABELS) == len(classify(audio, top_k=None))
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        classify(audio, top_k=0)
    with pytest.raises(ValueError, match="must be positive"):
        classify.windows(audio, 0.5, 0.0)


def test_csv_header_follows_top_k_when_nothing_is_read(model_dir, capsys, tmp_path):
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, "--format", "csv", "--top-k", 3,
                             tmp_path / "missing.wav")
    assert code == 1 and "missing.wav: file not found" in err
    assert out == "file,label_1,score_1,label_2,score_2,label_3,score_3\n"
    # A table has no header over no rows, and a folder without audio is said to be one
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, tmp_path / "missing.wav", tmp_path / "empty")
    assert (code, out) == (1, "") and f"{tmp_path / 'empty'}: no audio files in it\n" in err
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, str(tmp_path / "*.flac"))
    assert (code, out) == (1, "") and f"{tmp_path / '*.flac'}: no audio files match\n" in err


def test_evaluate_metrics_match_sklearn(model_dir, clips, capsys, tmp_path, monkeypatch):
    from sklearn.metrics import accuracy_score, average_precision_score, precision_score, recall_score, roc_auc_score

    monkeypatch.setenv("AST_JAX_CACHE", str(tmp_path / "cache"))
    code, out, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", clips, "--output-dir", tmp_path / "eval",
                             "--batch-size", 4)
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {key: metrics[key] for key in ("model", "data", "split", "dtype")} == {
        "model": str(model_dir), "data": str(clips), "split": "all clips", "dtype": "float32"}

    # the reference: the Python pipeline's scores, labels matched by name
    dataset_labels = sorted(["up", "yes", "left", "no"])
    files = [str(clips / label / f"{label}{j}.wav") for label in dataset_labels for j in range(3)]
    truth = np.repeat(np.arange(4), 3)
    scores = np.stack([[{i["label"]: i["score"] for i in result}[name] for name in LABELS]
                       for result in pipeline(model_dir)(files, top_k=None)])
    columns = [LABELS.index(name) for name in dataset_labels]
    predicted = np.array([LABELS[i] for i in scores.argmax(1)])
    true_names = np.array(dataset_labels)[truth]
    onehot = np.eye(4)[truth]
    assert metrics["examples"] == 12
    assert metrics["accuracy"] == pytest.approx(accuracy_score(true_names, predicted))
    # mAP and mAUC rank by the sigmoid of the logits (the original code's and training's definition), not by
    # this softmax model's probabilities, which would give other figures here.
    sigmoid = np.stack([[{i["label"]: i["score"] for i in result}[name] for name in LABELS]
                        for result in pipeline(model_dir)(files, top_k=None, function_to_apply="sigmoid")])

    def mean_over_classes(metric, ranking):
        return np.mean([metric(onehot[:, k], ranking[:, columns[k]]) for k in range(4)])

    assert metrics["mAP"] == pytest.approx(mean_over_classes(average_precision_score, sigmoid), abs=1e-6)
    assert metrics["mAUC"] == pytest.approx(mean_over_classes(roc_auc_score, sigmoid), abs=1e-6)
    assert abs(mean_over_classes(average_precision_score, scores) - metrics["mAP"]) > 1e-3
    precision = precision_score(true_names, predicted, labels=dataset_labels, average=None, zero_division=np.nan)
    recall = recall_score(true_names, predicted, labels=dataset_labels, average=None, zero_division=np.nan)
    for row, p, r in zip(metrics["per_class"], precision, recall):
        assert (row["precision"] is None if np.isnan(p) else row["precision"] == pytest.approx(p))  # JSON null
        assert row["recall"] == pytest.approx(r)

    wrong = list(csv.DictReader((tmp_path / "eval" / "misclassified.csv").read_text().splitlines()))
    assert sorted(row["file"] for row in wrong) == sorted(np.array(files)[predicted != true_names].tolist())
    saved = np.load(tmp_path / "eval" / "scores.npz")  # every clip's scores, for metrics of one's own
    order = [saved["files"].tolist().index(f) for f in files]
    assert saved["model_labels"].tolist() == LABELS and saved["dataset_labels"].tolist() == dataset_labels
    np.testing.assert_allclose(saved["scores"][order], scores, atol=1e-5)
    np.testing.assert_array_equal(saved["targets"][order], onehot)
    assert accuracy_score(true_names, np.array(LABELS)[saved["scores"].argmax(1)][order]) == metrics["accuracy"]
    png = (tmp_path / "eval" / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert "accuracy" in out


def test_evaluate_reports_each_unreadable_clip_once(model_dir, clips, capsys, caplog, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("AST_JAX_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    shutil.copytree(clips, data)
    (data / "up" / "broken.wav").write_text("not audio")
    code, out, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", data)
    assert code == 1 and f"{data} [all clips]: 12 examples" in out
    assert err.count("broken.wav") == 1 and f"{data / 'up' / 'broken.wav'}: not an audio file" in err, err
    assert not [r for r in caplog.records if r.name == "ast_jax.data" and r.levelno >= 30]
    assert not (tmp_path / "cache").exists()  # decoded batch by batch: no prepared copy


def test_evaluate_scores_float_files_beyond_full_scale_as_predict_does(model_dir, clips, capsys, tmp_path):
    """A float file peaking at 1.5 is scored from its samples as they are, as predict scores it (a 16-bit
    prepared copy would clip them at +-1)."""
    loud = waveform(0.5, 3, 900.0) * (1.5 / np.abs(waveform(0.5, 3, 900.0)).max())
    sf.write(tmp_path / "loud.wav", loud, RATE, subtype="FLOAT")
    expected = {row["label"]: row["score"] for row in pipeline(model_dir)(str(tmp_path / "loud.wav"), top_k=None)}
    wrong = min(expected, key=expected.get)  # labelled as its least likely label: listed as misclassified
    (tmp_path / "data" / wrong).mkdir(parents=True)
    (tmp_path / "data" / wrong / "loud.wav").write_bytes((tmp_path / "loud.wav").read_bytes())
    (tmp_path / "data" / "no").mkdir(exist_ok=True)
    (tmp_path / "data" / "no" / "other.wav").write_bytes((clips / "no" / "no1.wav").read_bytes())
    code, _, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", tmp_path / "data", "--output-dir",
                           tmp_path / "eval")
    assert code == 0, err
    row = next(r for r in csv.DictReader(open(tmp_path / "eval" / "misclassified.csv")) if r["label"] == wrong)
    assert abs(float(row["label_score"]) - expected[wrong]) < 1e-6
    assert abs(float(row["predicted_score"]) - expected[row["predicted"]]) < 1e-6


def test_evaluate_a_raw_speech_commands_folder_names_listed_clips_it_lacks(capsys, tmp_path, monkeypatch):
    """A clip testing_list.txt names but the folder lacks is one line and exit status 1 (the split does not
    shrink unnoticed), and nothing is written to the prepared-copy cache."""
    import shutil

    from ast_jax.data.speech_commands import LABELS_35
    from ast_jax.model import init_params
    from ast_jax.pretrained import Pretrained
    from test_inference import CONFIG, FEATURES

    config = CONFIG.replace(num_labels=35)
    model_dir = save_model(tmp_path / "model35", Pretrained(config, init_params(config, 3), FEATURES, LABELS_35,
                                                            "sigmoid", source="test"))
    monkeypatch.setenv("AST_JAX_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "speech_commands_v0.02"
    shutil.copytree(Path(__file__).parent / "data" / "speech_commands_mini", data)
    (data / "validation_list.txt").write_text("yes/0cb74144_nohash_0.wav\n")
    (data / "testing_list.txt").write_text("no/0c40e715_nohash_0.wav\nyes/ffffffff_nohash_9.wav\n")
    code, out, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", data)
    assert code == 1 and f"{data} [test]: 1 examples" in out, (out, err)
    assert err.splitlines()[0] == f"{data / 'yes' / 'ffffffff_nohash_9.wav'}: file not found"
    assert not (tmp_path / "cache").exists()  # decoded batch by batch: no prepared copy

def test_evaluate_names_data_that_is_not_there_or_not_data(model_dir, capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", tmp_path / "nope")
    assert code == 1 and len(err.strip().splitlines()) == 1 and f"{tmp_path / 'nope'}: not found" in err, err
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", tmp_path / "notes.txt")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "notes.txt: not a folder, .csv manifest" in err

def test_evaluate_split_of_data_without_splits(model_dir, clips, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AST_JAX_CACHE", str(tmp_path / "cache"))
    code, out, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", clips, "--split", "test")
    assert code == 1 and out == "" and err == (
        f"ast-jax evaluate: error: {clips}: has no split folders, so it is scored whole; leave out --split, or "
        f"give the training run's WORKDIR/config.json as --data to score the split it held out\n")
    from ast_jax.training.config_io import add_source_fields, load_config, save_config

    (tmp_path / "run").mkdir()
    config = tmp_path / "run" / "config.json"  # a run's saved config whose data folder was given relative
    saved = add_source_fields(load_config(str(Path(__file__).parents[1] / "configs" / "smoke.py")),
                              ["data.source=folder"])
    saved.data.update(source="folder", data_dir="clips-elsewhere")
    save_config(saved, config)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", config, "--split", "test")
    assert code == 1 and "data_dir 'clips-elsewhere' is relative and not found from the current folder" in err, err


def test_a_training_config_scores_the_split_its_run_held_out():
    """Its test split, else its validation split: the ESC-50 recipe holds out a fold, the AudioSet one its
    evaluation set, both as validation (the default "test" found no such split there)."""
    from ast_jax.commands.evaluate import held_out_split
    from ast_jax.training.config_io import load_config

    configs = Path(__file__).parents[1] / "configs"
    assert held_out_split(load_config(str(configs / "esc50.py:2"))) == "validation"
    assert held_out_split(load_config(str(configs / "audioset.py"))) == "validation"
    assert held_out_split(load_config(str(configs / "speech_commands.py"))) == "test"


def test_evaluate_leaves_out_clips_found_unreadable_while_decoding_per_batch(model_dir, clips, capsys, tmp_path,
                                                                            monkeypatch):
    """With data.prepared=False the data layer finds a bad clip only when it serves it (as a padding row): it is
    named and left out as with a prepared copy, not scored as an all-zero example of the first label."""
    import shutil

    from ast_jax.training.config_io import add_source_fields, load_config, save_config

    monkeypatch.setenv("AST_JAX_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    shutil.copytree(clips, data)
    (data / "up" / "broken.wav").write_text("not audio")
    results = {}
    for prepared in (True, False):
        config = add_source_fields(load_config(str(Path(__file__).parents[1] / "configs" / "smoke.py")),
                                   ["data.source=folder"])
        config.data.update(source="folder", data_dir=str(data), prepared=prepared, validation_fraction=0.0,
                           test_fraction=1.0, cache_dir=str(tmp_path / "cache"))
        save_config(config, tmp_path / f"{prepared}.json")
        code, out, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", tmp_path / f"{prepared}.json",
                                 "--split", "test", "--output-dir", tmp_path / f"eval-{prepared}")
        assert code == 1 and err.count("broken.wav") == 1 and "broken.wav: not an audio file" in err, err
        results[prepared] = json.loads((tmp_path / f"eval-{prepared}" / "metrics.json").read_text())
        assert results[prepared].pop("data") == str(tmp_path / f"{prepared}.json")
        left_out = results[prepared].pop("left_out")  # what the saved figures leave out, and why
        assert [row["file"] for row in left_out] == [str(data / "up" / "broken.wav")], left_out
        assert left_out[0]["problem"].startswith("not an audio file"), left_out
    assert results[False]["examples"] == 12 and results[False] == results[True]


def test_evaluate_keeps_a_manifests_blank_split_rows_where_training_put_them(model_dir, clips, capsys, tmp_path,
                                                                          monkeypatch):
    from ast_jax.commands.evaluate import without_splits
    from ast_jax.data import build_source

    monkeypatch.setenv("AST_JAX_CACHE", str(tmp_path / "cache"))
    files = sorted(clips.rglob("*.wav"))
    rows = [f"{path},{path.parent.name},{'train' if i % 3 == 0 else ''}" for i, path in enumerate(files)]
    (tmp_path / "m.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    training = build_source(ml_collections.ConfigDict(dict(source="manifest", data_dir=str(tmp_path / "m.csv"),
                                                            cache_dir=str(tmp_path / "cache"))))
    for split in ("test", "validation"):
        code, out, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", tmp_path / "m.csv",
                                 "--split", split)
        expected = training.num_examples(split)
        if expected:
            assert code == 0 and f"[{split}]: {expected} examples" in out, err
        else:
            assert code == 1 and f"split {split!r} has no examples" in err
    (tmp_path / "demo").mkdir()  # a workdir named like the keyword, in the current folder
    monkeypatch.chdir(tmp_path)
    assert not without_splits("demo") and not without_splits("tfds:speech_commands") and without_splits(str(clips))


def test_evaluate_label_mapping_errors(model_dir, clips, capsys, tmp_path, monkeypatch):
    from ast_jax.evaluation import map_labels

    assert map_labels(["YES", "go"], ["no", "yes", "stop"], {"go": "stop"}) == [1, 2]
    assert map_labels(["YES", "go"], ["no", "yes", "stop"], {"Go": "STOP", "yes": "no"}) == [0, 2]  # case as names
    with pytest.raises(ValueError, match=r"names data-set labels the data does not have: gone \(its labels: YES, go\)"):
        map_labels(["YES", "go"], ["no", "yes", "stop"], {"gone": "stop"})  # a typo was ignored
    with pytest.raises(ValueError, match="not among the model's 3 labels: go, cat"):
        map_labels(["yes", "go", "cat"], ["no", "yes", "stop"])
    from ast_jax.commands.evaluate import parse_label_map

    assert parse_label_map(" go = stop,, a=b=c ,") == {"go": "stop", "a": "b=c"}
    for text, bad in [("a=b,,c", "c"), ("a=b,,c=d,e", "e"), ("a=,=b,c", "a=, =b, c")]:  # the bad items, named
        with pytest.raises(ValueError, match=f"^--label-map: expected DATASET=MODEL pairs, got {bad}$"):
            parse_label_map(text)
    monkeypatch.setenv("AST_JAX_CACHE", str(tmp_path / "cache"))
    code, _, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", clips, "--label-map", "up=down",
                           "--output-dir", tmp_path / "mapped")
    assert code == 0, err
    # scored as if the folder were named down: the same figures as the data with its folder renamed
    import shutil

    shutil.copytree(clips, tmp_path / "renamed")
    (tmp_path / "renamed" / "up").rename(tmp_path / "renamed" / "down")
    code, _, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", tmp_path / "renamed",
                           "--output-dir", tmp_path / "plain")
    mapped, plain = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("mapped", "plain"))
    figures = ("accuracy", "mAP", "mAUC")
    assert code == 0 and [mapped[k] for k in figures] == pytest.approx([plain[k] for k in figures], abs=1e-12), err
    assert {row["label"] for row in mapped["per_class"]} == {"up", "yes", "left", "no"}  # the data's names shown
    code, _, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", clips, "--label-map", "up=sideways")
    assert code == 1 and "sideways" in err and len(err.strip().splitlines()) == 1
    raw_folder_only = "--num-classes applies to a raw Speech Commands folder (with testing_list.txt)"
    for option, message in (("--num-classes", raw_folder_only),
                            ("--tfds-data-dir", "--tfds-data-dir applies to --data tfds:NAME")):
        value = "12" if option == "--num-classes" else str(tmp_path)
        code, _, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", clips, option, value)
        assert code == 1 and err.count("\n") == 1 and f"{message}, not to {clips}" in err, err


def test_an_overconfident_models_tied_scores_go_by_its_logits(clips, capsys, tmp_path, monkeypatch):
    """Above a logit of about 17 a float32 sigmoid is 1.0: such a model's labels tie in score, and the top-k
    order, the prediction, mAP and mAUC must follow the logits (the sigmoid's exact order), not the label
    order. Reference logits: the model on features made by transformers' ASTFeatureExtractor."""
    from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score
    from transformers import ASTFeatureExtractor
    confident = tiny_model("sigmoid", seed=2)
    confident.params["head"]["kernel"] = confident.params["head"]["kernel"] * 400.0
    model_dir = save_model(tmp_path / "confident", confident)
    dataset_labels = sorted(["up", "yes", "left", "no"])
    files = [str(clips / label / f"{label}{j}.wav") for label in dataset_labels for j in range(3)]
    extractor = ASTFeatureExtractor(**{k: v for k, v in confident.features.to_hf_preprocessor_config().items()
                                       if k != "feature_extractor_type"})
    values = extractor([sf.read(f, dtype="float32")[0] for f in files], sampling_rate=RATE, return_tensors="np")
    logits = np.asarray(confident.apply(jnp.asarray(values["input_values"]))[0], np.float64)
    assert np.sum(logits > 20.0) > len(files), "the scaled head should give several saturated labels a clip"

    results = pipeline(model_dir)(files, top_k=None)
    assert any(sum(item["score"] == 1.0 for item in result) > 1 for result in results)  # ties in score
    for result, row in zip(results, logits):
        assert [item["label"] for item in result] == [LABELS[i] for i in np.argsort(-row)]

    monkeypatch.setenv("AST_JAX_CACHE", str(tmp_path / "cache"))
    code, _, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", clips, "--output-dir", tmp_path / "eval")
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    truth = np.repeat(np.arange(4), 3)
    columns = [LABELS.index(name) for name in dataset_labels]
    predicted = np.array(LABELS)[logits.argmax(1)]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(np.array(dataset_labels)[truth], predicted))
    onehot = np.eye(4)[truth]
    for name, metric in (("mAP", average_precision_score), ("mAUC", roc_auc_score)):
        reference = np.mean([metric(onehot[:, k], logits[:, columns[k]]) for k in range(4)])
        assert metrics[name] == pytest.approx(reference, abs=1e-9)


def test_evaluation_confusion_and_multilabel_precision():
    from ast_jax.evaluation import OTHER, Evaluation

    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    result = Evaluation(scores, targets, ["b", "a"], ["a", "b", "c"], [1, 0], ["w", "x", "y", "z"])
    # predictions by name: a, b, c, a; truth: b, b, a, a
    matrix, columns = result.confusion_matrix()
    assert columns == ["b", "a", OTHER]
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 1]]
    assert [row["file"] for row in result.misclassified()] == ["w", "y"]
    assert result.report()["accuracy"] == 0.5


def test_evaluation_merged_labels_multilabel_hits_and_undefined_figures():
    from ast_jax.evaluation import Evaluation

    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.1, 0.6, 0.3]])
    # Data-set labels "bird" and "yes" both stand for the model's "yes" (index 0).
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], np.float32)
    merged = Evaluation(scores, targets, ["bird", "yes", "up"], ["yes", "no", "up"], [0, 0, 2], ["a", "b", "c", "d"])
    report = merged.report()
    assert report["accuracy"] == 0.75 and [r["file"] for r in merged.misclassified()] == ["d"]
    assert [row["recall"] for row in report["per_class"]] == [1.0, 1.0, 0.5]
    matrix, columns = merged.confusion_matrix()
    assert columns == ["yes", "up", "(other)"] and matrix.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]

    # Multi-label: right when the best label is one of the clip's labels; the row names all of them.
    targets = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 1]], np.float32)
    multi = Evaluation(scores, targets, ["yes", "no", "up"], ["yes", "no", "up"], [0, 1, 2], list("abcd"), True)
    assert multi.report()["accuracy"] == 0.25 and [r["file"] for r in multi.misclassified()] == ["b", "c", "d"]
    (row,) = [r for r in multi.misclassified() if r["file"] == "b"]
    assert row["label"] == "no;up" and row["predicted"] == "yes" and row["label_score"] == 0.1

    # A label never predicted has no precision: None (JSON null), not NaN, which JSON cannot hold.
    report = Evaluation(scores[:3], np.eye(3, dtype=np.float32), ["yes", "no", "up"],  # predicts yes, yes, up
                        ["yes", "no", "up"], [0, 1, 2], list("abc")).report()
    assert json.loads(json.dumps(report, allow_nan=False))["per_class"][1]["precision"] is None


def test_embed_shapes_and_values(model_dir, clips, capsys, tmp_path):
    from transformers import ASTFeatureExtractor

    from ast_jax.pretrained import load_model

    files = sorted(str(p) for p in clips.rglob("*.wav"))[:5]
    code, _, err = run_cli(capsys, "embed", "--model", model_dir, "--tokens", "-o", tmp_path / "e.npz", *files)
    assert code == 0, err
    saved = np.load(tmp_path / "e.npz")
    model = load_model(model_dir)
    tokens = 2 + model.config.num_patches
    assert saved["embeddings"].shape == (5, model.config.hidden_size)
    assert saved["tokens"].shape == (5, tokens, model.config.hidden_size)
    assert list(saved["files"]) == files
    extractor = ASTFeatureExtractor(**{k: v for k, v in model.features.to_hf_preprocessor_config().items()
                                       if k != "feature_extractor_type"})
    audio = [sf.read(f, dtype="float32")[0] for f in files]
    _, out = model.apply(jnp.asarray(extractor(audio, sampling_rate=RATE, return_tensors="np")["input_values"]))
    np.testing.assert_allclose(saved["embeddings"], np.asarray(out["pooled"]), atol=2e-4)
    np.testing.assert_allclose(saved["tokens"], np.asarray(out["tokens"]), atol=2e-4)

    code, _, _ = run_cli(capsys, "embed", "--model", model_dir, "-o", tmp_path / "e.npy", *files[:2])
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), saved["embeddings"][:2], atol=1e-5)  # 2-row batch
    assert (tmp_path / "e.npy.files.txt").read_text().splitlines() == files[:2]


def test_explain_writes_pngs(model_dir, clips, capsys, tmp_path):
    one = tmp_path / "はい.wav"  # a title the plot's font cannot draw: boxes, not warnings
    one.write_bytes((clips / "yes" / "yes0.wav").read_bytes())
    code, _, err = run_cli(capsys, "explain", "--model", model_dir, one, "-o", tmp_path / "one.png")
    assert code == 0 and "warning" not in err, err
    png = (tmp_path / "one.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    code, _, err = run_cli(capsys, "explain", "--model", model_dir, clips / "no", tmp_path / "missing.wav",
                           "-o", tmp_path / "many", "--map", "rollout")
    assert code == 1 and err.count("missing.wav: ") == 1
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["no0.wav.png", "no1.wav.png", "no2.wav.png"]

    # an --output that cannot be what is asked: one line naming it, before any work
    (tmp_path / "notes.txt").write_text("mine")
    for inputs, output, problem in (([one], "notes.txt", "exists and is not a folder"),
                                    ([clips / "no"], "all.png", "one PNG for 3 files; give a folder")):
        code, _, err = run_cli(capsys, "explain", "--model", model_dir, *inputs, "-o", tmp_path / output)
        assert code == 1 and err.count("\n") == 1 and f"{tmp_path / output}: {problem}" in err, err
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "all.png").exists()


@pytest.mark.parametrize("command, output, problem", [
    (["predict"], "folder", "is a folder; --output takes a file name"),
    (["embed"], "folder.npz", "is a folder; --output takes a file name"),
    (["evaluate", "--data"], "file.txt", "exists and is not a folder"),
    (["predict"], "file.txt/rows.csv", "cannot write there"),
    (["embed"], "file.txt/e.npz", "cannot write there"),
    (["evaluate", "--data"], "file.txt/eval", "cannot write there"),
])
def test_an_unwritable_output_fails_before_any_work(model_dir, clips, capsys, tmp_path, command, output, problem):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "file.txt").write_text("mine")
    code, out, err = run_cli(capsys, *command, clips, "--model", model_dir, "-o", tmp_path / output)
    assert code == 1 and err.count("\n") == 1 and f"{tmp_path / output}: {problem}" in err, err
    assert out == "" and (tmp_path / "file.txt").read_text() == "mine"


def test_outputs_through_links_windows_and_names_the_outputs_cannot_hold(model_dir, clips, capsys, tmp_path):
    (tmp_path / "kept.csv").write_text("old\n")
    (tmp_path / "link.csv").symlink_to("kept.csv")
    code, _, err = run_cli(capsys, "predict", "--model", model_dir, clips / "up", "-o", tmp_path / "link.csv",
                           "--format", "csv")
    assert code == 0, err
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "kept.csv").read_text().count("\n") == 4
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, clips / "up", "--window", "0.001")
    assert code == 1 and out == "" and err == "ast-jax predict: error: window 0.001 s is shorter than one 25 ms analysis frame\n"
    up = clips / "up" / "up1.wav"
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, up, "-o", up)
    assert code == 1 and err == f"ast-jax predict: error: {up}: is one of the inputs; the results would overwrite it\n"
    code, out, err = run_cli(capsys, "explain", "--model", model_dir, up, up, "-o", tmp_path / "maps")
    assert code == 0 and sorted(os.listdir(tmp_path / "maps")) == ["up1.wav.png"]
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "one\ntwo.wav").write_bytes((clips / "up" / "up1.wav").read_bytes())
    code, _, err = run_cli(capsys, "embed", "--model", model_dir, tmp_path / "odd", "-o", tmp_path / "e.npy")
    assert code == 1 and "a file name with a line break cannot be listed in" in err and err.count("\n") == 1
    assert not (tmp_path / "e.npy").exists()
    # a .npy written through a link: its file list goes beside the array it lists
    (tmp_path / "arrays").mkdir()
    (tmp_path / "linked.npy").symlink_to(tmp_path / "arrays" / "e.npy")
    code, _, err = run_cli(capsys, "embed", "--model", model_dir, up, "-o", tmp_path / "linked.npy")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "arrays")) == ["e.npy", "e.npy.files.txt"]
    assert not (tmp_path / "linked.npy.files.txt").exists()


def test_awkward_file_names_in_every_output(model_dir, clips, capsys, tmp_path):
    """Names with a carriage return, line break, tab, glob characters, dollar signs or bytes that are not UTF-8
    (held by Python as surrogate escapes) come back out as they are, one row each."""
    odd = tmp_path / "odd"
    odd.mkdir()
    names = ["cr\rname.wav", "new\nline.wav", "tab\tname.wav", "x[1].wav", "x1.wav", "two $_$.wav",
             os.fsdecode(b"caf\xe9.wav")]
    for name in names:
        (odd / name).write_bytes((clips / "up" / "up1.wav").read_bytes())
    files = sorted(str(odd / name) for name in names)

    code, _, err = run_cli(capsys, "predict", "--model", model_dir, odd, "-o", tmp_path / "out.csv")
    assert code == 0, err
    with open(tmp_path / "out.csv", newline="", errors="surrogateescape") as handle:
        assert [row["file"] for row in csv.DictReader(handle)] == files
    code, _, err = run_cli(capsys, "predict", "--model", model_dir, odd, "-o", tmp_path / "out.txt")
    assert code == 0, err
    table = (tmp_path / "out.txt").read_bytes().split(b"\n")
    assert len(table) == 1 + len(files) + 1 and table[-1] == b""  # a line per file, control characters shown
    assert any(b"cr\\rname.wav" in line for line in table) and any(b"new\\nline.wav" in line for line in table)
    assert b"caf\xe9.wav" in (tmp_path / "out.txt").read_bytes()  # the bytes the filesystem holds
    code, _, err = run_cli(capsys, "predict", "--model", model_dir, odd / "x[1].wav", "--format", "jsonl",
                           "-o", tmp_path / "one.jsonl")  # the file of that name, not the glob matching x1.wav
    assert code == 0 and json.loads((tmp_path / "one.jsonl").read_text())["file"] == str(odd / "x[1].wav")
    code, _, err = run_cli(capsys, "predict", "--model", model_dir, odd, "-o", tmp_path / "out.json")
    assert code == 1 and "JSON lines" in err and not (tmp_path / "out.json").exists()

    code, _, err = run_cli(capsys, "embed", "--model", model_dir, odd, "-o", tmp_path / "e.NPZ")
    assert code == 0, err
    assert list(np.load(tmp_path / "e.NPZ")["files"]) == files
    latin = str(odd / os.fsdecode(b"caf\xe9.wav"))
    code, _, err = run_cli(capsys, "embed", "--model", model_dir, latin, "-o", tmp_path / "e.npy")
    assert code == 0, err
    assert (tmp_path / "e.npy.files.txt").read_bytes() == os.fsencode(latin) + b"\n"

    code, _, err = run_cli(capsys, "explain", "--model", model_dir, odd, "-o", tmp_path / "maps")
    assert code == 0, err
    assert len(os.listdir(tmp_path / "maps")) == len(files)

    labelled = tmp_path / "labelled"
    for label in ("up", "no"):
        (labelled / label).mkdir(parents=True)
        (labelled / label / os.fsdecode(b"caf\xe9.wav")).write_bytes((clips / label / f"{label}1.wav").read_bytes())
    code, _, err = run_cli(capsys, "evaluate", "--model", model_dir, "--data", labelled, "--output-dir",
                           tmp_path / "eval")
    assert code == 0, err
    with open(tmp_path / "eval" / "misclassified.csv", newline="", errors="surrogateescape") as handle:
        assert all(row["file"].endswith(os.fsdecode(b"/caf\xe9.wav")) for row in csv.DictReader(handle))

    # standard output too, under a locale that would refuse to encode the name
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "AST_JAX_COMPILATION_CACHE": "off", "PYTHONIOENCODING": "utf-8:strict"}
    done = subprocess.run([sys.executable, "-m", "ast_jax", "predict", "--model", model_dir, "--format", "csv",
                           latin], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.splitlines()[1].startswith(os.fsencode(latin) + b",")


def test_embed_keeps_its_rows_on_disk_not_in_memory(model_dir, capsys, tmp_path, monkeypatch):
    """6,000 files' tokens (46 MB for the tiny model) go through embed in a few MB of memory, and come out whole."""
    import tracemalloc

    from ast_jax.inference import Pipeline
    from ast_jax.pretrained import load_model

    config = load_model(model_dir).config
    shape = (2 + config.num_patches, config.hidden_size)
    paths = [str(tmp_path / f"clip{i}.wav") for i in range(6000)]

    def predict_files(self, files, *, outputs, on_error, top_k=5):  # the model's outputs, made up
        for i, path in enumerate(files):
            tokens = np.random.default_rng(i).standard_normal(shape, dtype=np.float32)
            yield path, {"pooled": tokens[:2].mean(0), "tokens": tokens, "samples": CLIP}

    monkeypatch.setattr(Pipeline, "predict_files", predict_files)
    tracemalloc.start()
    try:
        code, _, err = run_cli(capsys, "embed", "--model", model_dir, "--tokens", "-o", tmp_path / "e.npz", *paths)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, err
    total = len(paths) * np.prod(shape) * 4
    assert peak < total / 4, (peak, total)
    saved = np.load(tmp_path / "e.npz")
    assert list(saved["files"]) == paths and saved["tokens"].shape == (len(paths), *shape)
    for i in (0, 2999, 5999):
        tokens = np.random.default_rng(i).standard_normal(shape, dtype=np.float32)
        np.testing.assert_array_equal(saved["tokens"][i], tokens)
        np.testing.assert_array_equal(saved["embeddings"][i], tokens[:2].mean(0))


def test_predict_as_a_program_splits_its_batches_across_two_cpu_devices(model_dir, clips):
    """The `ast-jax` program gives its inference commands two CPU devices (ast_jax/_cpu_devices.py) unless
    JAX_NUM_CPU_DEVICES says otherwise; the rows equal the one-device pipeline's."""
    program = ("import sys, jax\nfrom ast_jax.cli import main\ncode = main(sys.argv[1:], program=True)\n"
               "print('devices', jax.local_device_count(), file=sys.stderr)\nsys.exit(code)")
    paths = [str(p) for p in sorted(clips.rglob("*.wav"))]
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    env.update(JAX_PLATFORMS="cpu", AST_JAX_COMPILATION_CACHE="off", AST_JAX_HOST_MALLOC="system")
    expected = dict(pipeline(model_dir).predict_files(paths, top_k=3))
    for devices in ("", "1"):
        run_env = {**env, "JAX_NUM_CPU_DEVICES": devices} if devices else env
        result = subprocess.run([sys.executable, "-c", program, "predict", "--model", model_dir, "--format", "jsonl",
                                 "--top-k", "3", *paths], env=run_env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        split = devices == "" and len(os.sched_getaffinity(0)) >= 2
        assert result.stderr.splitlines()[-1] == f"devices {2 if split else 1}"
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [row["file"] for row in rows] == paths
        for row in rows:
            labels = expected[row["file"]]["labels"]
            assert [i["label"] for i in row["labels"]] == [i["label"] for i in labels]
            np.testing.assert_allclose([i["score"] for i in row["labels"]], [i["score"] for i in labels], atol=1e-6)


def test_the_number_of_cpu_devices_is_left_to_the_user_and_to_a_started_jax():
    """configure() changes nothing where the environment names a device count or another platform, nor in a
    process whose JAX has started (it would raise there): that process keeps its devices."""
    import jax

    from ast_jax import _cpu_devices

    devices = jax.local_device_count()
    for environ in ({"JAX_NUM_CPU_DEVICES": "1"}, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
                    {"JAX_PLATFORMS": "cuda"}, {"JAX_PLATFORMS": "cpu"}):
        assert _cpu_devices.configure(environ) is None
    assert jax.local_device_count() == devices
    # what decides it, without a started JAX: the user's count, the platform
    assert _cpu_devices.chosen_by_user({"JAX_NUM_CPU_DEVICES": "1"})
    assert _cpu_devices.chosen_by_user({"XLA_FLAGS": "--xla_dump_to=x --xla_force_host_platform_device_count=4"})
    assert not _cpu_devices.chosen_by_user({"XLA_FLAGS": "--xla_dump_to=x"})
    assert not _cpu_devices.computes_on_cpu({"JAX_PLATFORMS": "cuda,cpu"})
    assert _cpu_devices.computes_on_cpu({"JAX_PLATFORMS": "cpu"})
    # and in fresh processes (the 2-core machine this runs on): two devices unless the user chose a number
    script = ("import sys; from ast_jax import _cpu_devices; set_to = _cpu_devices.configure(); import jax; "
              "print(set_to, jax.local_device_count())")
    base = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    for extra, expected in (({}, "2 2"), ({"JAX_NUM_CPU_DEVICES": "1"}, "None 1"),
                            ({"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}, "None 3")):
        if not extra and len(os.sched_getaffinity(0)) < 2:
            continue  # one core: configure() asks for no split
        out = subprocess.run([sys.executable, "-c", script], env={**base, "JAX_PLATFORMS": "cpu", **extra},
                             capture_output=True, text=True, timeout=120)
        assert out.stdout.split() == expected.split(), out.stderr[-2000:]


def test_a_reader_that_goes_away_ends_predict_quietly(model_dir, clips):
    """`ast-jax predict ... | head -1`: no traceback or error line when the pipe closes, and status 141."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "AST_JAX_COMPILATION_CACHE": "off"}
    command = [sys.executable, "-m", "ast_jax", "predict", "--model", model_dir, "--format", "jsonl",
               "--batch-size", "1", *[str(p) for p in sorted(clips.rglob("*.wav"))] * 50]  # still writing at close
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert json.loads(process.stdout.readline())["file"]
        process.stdout.close()
        err = process.stderr.read().decode()
        assert process.wait(timeout=120) == 141, err
    assert "Error" not in err and "error" not in err, err


def test_explain_names_files_apart_when_basenames_repeat(model_dir, clips, capsys, tmp_path):
    # Speech Commands reuses file names in every word's folder: each input must get its own PNG.
    for label in ("up", "yes"):
        (tmp_path / "in" / label).mkdir(parents=True)
        (tmp_path / "in" / label / "take.wav").write_bytes((clips / label / f"{label}0.wav").read_bytes())
    code, _, err = run_cli(capsys, "explain", "--model", model_dir, tmp_path / "in", "-o", tmp_path / "out",
                           "--map", "last")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["up__take.wav.png", "yes__take.wav.png"]


def test_a_failed_run_keeps_the_output_file_and_overflowing_audio_is_named(model_dir, clips, capsys, tmp_path,
                                                                          monkeypatch):
    from ast_jax.inference import Pipeline

    kept = tmp_path / "results.csv"
    kept.write_text("earlier results\n")
    real = Pipeline.predict_files

    def fails_after_one(self, paths, **kwargs):
        yield next(real(self, paths, **kwargs))
        raise RuntimeError("a bug after the first file")

    monkeypatch.setattr(Pipeline, "predict_files", fails_after_one)
    with pytest.raises(RuntimeError, match="a bug after the first file"):
        main(["predict", "--model", model_dir, str(clips / "up"), "--format", "csv", "-o", str(kept)])
    assert kept.read_text() == "earlier results\n"  # only Ctrl-C or SIGTERM write what was done
    monkeypatch.undo()

    loud = tmp_path / "loud.wav"  # finite float samples so large that the filterbank overflows
    sf.write(loud, waveform(0.3) * 1e20, RATE, subtype="FLOAT")
    code, out, err = run_cli(capsys, "predict", "--model", model_dir, loud, clips / "up" / "up0.wav", "--format", "csv")
    assert code == 1 and "up0.wav" in out and "loud.wav" not in out
    assert f"{loud}: the features are not finite (samples far beyond full scale?)" in err


def test_a_full_disk_leaves_earlier_outputs_whole_and_names_the_output(model_dir, clips, capsys, tmp_path,
                                                                       monkeypatch):
    """Files that belong together (evaluate's report, embed's .npy and its file list) are replaced together or
    not at all; the error is one line naming the file (ENOSPC names none); a model folder that cannot fit is
    refused before Orbax starts writing."""
    import errno
    import shutil

    import jax

    import ast_jax._atomic
    import ast_jax.evaluation
    from ast_jax.pretrained import load_model

    monkeypatch.setenv("AST_JAX_CACHE", str(tmp_path / "cache"))
    evaluate = ["evaluate", "--model", model_dir, "--data", clips, "--output-dir", tmp_path / "eval"]
    assert run_cli(capsys, *evaluate)[0] == 0
    before = {path.name: path.read_bytes() for path in (tmp_path / "eval").iterdir()}
    assert set(before) == {"metrics.json", "per_class.csv", "misclassified.csv", "confusion_matrix.png", "scores.npz"}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ast_jax.evaluation, "plot_confusion_matrix", disk_full)  # written last
    code, _, err = run_cli(capsys, *evaluate, "--batch-size", 2)
    assert code == 1 and err.strip().splitlines()[-1] == (
        f"ast-jax evaluate: error: {tmp_path / 'eval' / 'confusion_matrix.png'}: cannot be written (No space left "
        f"on device)")
    assert {path.name: path.read_bytes() for path in (tmp_path / "eval").iterdir()} == before  # no temporaries

    files = sorted(str(p) for p in clips.rglob("*.wav"))
    assert run_cli(capsys, "embed", "--model", model_dir, "-o", tmp_path / "e.npy", *files[:2])[0] == 0
    real_open = open

    def list_fails(path, mode="r", *args, **kwargs):
        if "files.txt" in str(path) and "w" in mode:
            disk_full()
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", list_fails)
    code, _, err = run_cli(capsys, "embed", "--model", model_dir, "-o", tmp_path / "e.npy", *files)
    monkeypatch.setattr("builtins.open", real_open)
    assert code == 1 and f"{tmp_path / 'e.npy.files.txt'}: cannot be written (No space left on device)" in err
    assert np.load(tmp_path / "e.npy").shape[0] == 2  # the rows still match their list
    assert (tmp_path / "e.npy.files.txt").read_text().splitlines() == files[:2]

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 20, 10 << 20, 100_000))
    code, _, err = run_cli(capsys, "convert", model_dir, tmp_path / "copy")
    needed = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(load_model(model_dir).params)) + (1 << 20)
    assert code == 1 and err == (f"ast-jax convert: error: {tmp_path / 'copy'}: not enough space: "
                                 f"{needed / 1e6:.1f} MB to write, 0.1 MB free\n")
    assert not (tmp_path / "copy").exists() and ast_jax._atomic.check_free_space(tmp_path, 0) is None
    # a file system that has no size (/proc): not "0.0 MB free", but the writer's own reason
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(0, 0, 0))
    assert ast_jax._atomic.check_free_space(tmp_path, 1 << 20) is None


def test_outputs_into_pipes_and_streams_are_written_in_place(model_dir, clips, capsys, tmp_path):
    """`-o` naming a named pipe or one of the process's streams (/dev/fd/N, /dev/stdout) writes into it, as a
    shell's redirection would; renaming a file over it would replace the pipe (or, run as root, /dev/null)."""
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    code, _, err = run_cli(capsys, "predict", "--model", model_dir, clips / "up", "--format", "csv", "-o", fifo)
    if not received and fifo.is_fifo():  # should nothing have been written into the pipe, let the reader go
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(timeout=60)
    assert code == 0 and fifo.is_fifo(), err
    assert received and received[0].count("\n") == 4 and received[0].startswith("file,label_1")

    read_end, write_end = os.pipe()
    try:
        code, _, err = run_cli(capsys, "predict", "--model", model_dir, clips / "up", "--format", "jsonl",
                               "-o", f"/dev/fd/{write_end}")
        os.close(write_end)
        with os.fdopen(read_end) as handle:
            rows = [json.loads(line) for line in handle]
    finally:
        for end in (read_end, write_end):
            with contextlib.suppress(OSError):
                os.close(end)
    assert code == 0 and sorted(Path(row["file"]).name for row in rows) == ["up0.wav", "up1.wav", "up2.wav"], err

    # a stream standing for a log opened for appending (`>> log`), named through a link or with "//": written
    # through the descriptor, so the log keeps its lines; a descriptor that is not open is said to be so
    (tmp_path / "log").write_text("earlier line\n")
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_APPEND)
    (tmp_path / "out.csv").symlink_to(f"/dev/fd/{log}")
    try:
        for output in (tmp_path / "out.csv", f"//dev/fd/{log}"):
            code, _, err = run_cli(capsys, "predict", "--model", model_dir, clips / "up" / "up0.wav", "-o", output,
                                   "--format", "csv")
            assert code == 0, err
    finally:
        os.close(log)
    lines = (tmp_path / "log").read_text().splitlines()
    assert lines[0] == "earlier line" and len(lines) == 5 and lines[1] == lines[3]  # two headers, two rows
    assert (tmp_path / "out.csv").is_symlink()
    code, _, err = run_cli(capsys, "predict", "--model", model_dir, clips / "up", "-o", f"/dev/fd/{log}")
    assert code == 1 and err == f"ast-jax predict: error: /dev/fd/{log}: cannot write there (descriptor {log} is not open)\n"

    # numpy seeks as it writes a .npz: made aside, then written into the pipe
    npz = tmp_path / "e.npz"
    os.mkfifo(npz)
    received = []
    reader = threading.Thread(target=lambda: received.append(npz.read_bytes()), daemon=True)
    reader.start()
    code, _, err = run_cli(capsys, "embed", "--model", model_dir, clips / "up", "-o", npz)
    if not received:
        with contextlib.suppress(OSError):
            os.close(os.open(npz, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(timeout=60)
    assert code == 0 and npz.is_fifo(), err
    with np.load(io.BytesIO(received[0])) as saved:
        assert saved["embeddings"].shape[0] == 3 and len(saved["files"]) == 3


def test_a_run_without_results_leaves_the_output_alone(model_dir, clips, capsys, tmp_path):
    for command, output in (["predict", "p.csv"], ["embed", "e.npz"], ["embed", "e.npy"]):
        code, _, err = run_cli(capsys, command, "--model", model_dir, tmp_path / "missing.wav", "-o", tmp_path / output)
        assert code == 1 and f"{tmp_path / output} not written" in err and not (tmp_path / output).exists()
    (tmp_path / "p.csv").write_text("earlier results\n")
    code, _, err = run_cli(capsys, "predict", "--model", model_dir, tmp_path / "missing.wav", "-o", tmp_path / "p.csv")
    assert code == 1 and (tmp_path / "p.csv").read_text() == "earlier results\n"


def test_outputs_in_a_loop_of_links_or_with_a_folder_for_a_list_fail_before_any_work(model_dir, clips, capsys,
                                                                                     tmp_path):
    (tmp_path / "a.csv").symlink_to("b.csv")
    (tmp_path / "b.csv").symlink_to("a.csv")
    (tmp_path / "e.npy.files.txt").mkdir()
    for command, output, problem in ((["predict"], "a.csv", "is a loop of symbolic links"),
                                     (["embed"], "a.csv.npz", None), (["embed"], "e.npy", "is a folder")):
        if problem is None:
            (tmp_path / output).symlink_to(output)
            problem = "is a loop of symbolic links"
        code, out, err = run_cli(capsys, *command, "--model", model_dir, clips / "up", "-o", tmp_path / output)
        assert code == 1 and err.count("\n") == 1 and problem in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.csv.npz", "b.csv", "e.npy.files.txt"]


def test_files_that_belong_together_are_put_back_when_one_cannot_be_replaced(tmp_path, monkeypatch):
    import ast_jax._atomic as atomic

    rows, names = tmp_path / "e.npy", tmp_path / "e.npy.files.txt"
    rows.write_text("old rows")
    names.write_text("old names")
    real_replace = os.replace

    def refuse_the_list(source, target, *args, **kwargs):
        if str(target).endswith(".files.txt") and not str(source).endswith(".old"):
            raise PermissionError(1, "Operation not permitted")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "replace", refuse_the_list)
    write = lambda text: lambda path: Path(path).write_text(text)
    with pytest.raises(OSError, match=f"^{names}: cannot be replaced \\(Operation not permitted\\)$"):
        atomic.write_files_atomically({rows: write("new rows"), names: write("new names")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "e.npy.files.txt"]  # no temporaries, no links
    assert rows.read_text() == "old rows" and names.read_text() == "old names"
    def no_links(*args, **kwargs):  # a file system without hard links (vfat): the old file is moved aside
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", no_links)
    with pytest.raises(OSError, match=f"^{names}: cannot be replaced"):
        atomic.write_files_atomically({rows: write("new rows"), names: write("new names")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "e.npy.files.txt"]
    assert rows.read_text() == "old rows" and names.read_text() == "old names"
    names.unlink()
    rows.unlink()
    with pytest.raises(OSError, match="cannot be replaced"):
        atomic.write_files_atomically({rows: write("new rows"), names: write("new names")})
    assert list(tmp_path.iterdir()) == []  # the new file that went in first is taken out again


def test_a_folder_replaced_with_overwrite_is_never_half_there(tmp_path, monkeypatch):
    """The old folder moves aside before the new one moves in and is removed only after: a failed swap leaves the
    old folder whole, and a removal of the old copy that is cut short cannot touch the new one."""
    import shutil

    import ast_jax._atomic as atomic

    out = tmp_path / "model"
    out.mkdir()
    (out / "a").write_text("old a")
    (out / "b").write_text("old b")
    real_replace, removed = os.replace, []

    def refuse_the_new_folder(source, target, *args, **kwargs):
        if Path(target) == out and Path(source).name.startswith(".model.") and ".old." not in Path(source).name:
            raise PermissionError(1, "Operation not permitted")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "replace", refuse_the_new_folder)
    with pytest.raises(OSError, match=f"^{out}: cannot be replaced \\(Operation not permitted\\)$"):
        with atomic.staged_directory(out, overwrite=True) as staging:
            (staging / "a").write_text("new a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (out / "a").read_text() == "old a" and (out / "b").read_text() == "old b"
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    real_rmtree = shutil.rmtree

    def note_what_is_removed(path, *args, **kwargs):  # by the time the old copy goes, the new one is in place
        removed.append((Path(path).name, (out / "a").read_text(), (out / "b").exists()))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(atomic.shutil, "rmtree", note_what_is_removed)
    with atomic.staged_directory(out, overwrite=True) as staging:
        (staging / "a").write_text("new a")
    assert [(name.startswith(".model.old."), a, b) for name, a, b in removed] == [(True, "new a", False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and sorted(os.listdir(out)) == ["a"]
    monkeypatch.setattr(atomic.shutil, "rmtree", real_rmtree)

    # a second Ctrl-C (which comes through at once) before, between or after the two renames, or a folder that
    # cannot be moved (a mount point): the old folder or the new one is in place, whole, and nothing else is left
    calls = []

    def interrupted(at, after, error=KeyboardInterrupt):
        def replace(source, target, *args, **kwargs):
            calls.append(target)
            if len(calls) == at and not after:
                raise error
            real_replace(source, target, *args, **kwargs)
            if len(calls) == at and after:
                raise error
        return replace

    for at, after, error, kept in [(1, False, KeyboardInterrupt, "new a"), (2, False, KeyboardInterrupt, "new a"),
                                   (2, True, KeyboardInterrupt, "newer a"), (1, False, OSError(16, "busy"), "newer a")]:
        calls.clear()
        monkeypatch.setattr(atomic.os, "replace", interrupted(at, after, error))
        with pytest.raises(KeyboardInterrupt if error is KeyboardInterrupt else OSError) as raised:
            with atomic.staged_directory(out, overwrite=True) as staging:
                (staging / "a").write_text("newer a")
        monkeypatch.setattr(atomic.os, "replace", real_replace)
        assert (out / "a").read_text() == kept and os.listdir(out) == ["a"], (at, after, error)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], (at, after, error)
        if isinstance(error, OSError):
            assert str(raised.value) == f"{out}: cannot be replaced (busy)"


def test_a_damaged_model_folder_is_one_line_without_the_reports_of_reads_left_in_flight(model_dir, clips, tmp_path):
    """Cut-short parameter files fail the restore while other TensorStore reads are still running; they end
    into Orbax's closed event loop and Python printed their "Event loop is closed" tracebacks after the error
    (most runs), or asyncio logged their futures' errors as never retrieved. The program shows the one line;
    other reports, and the command's own exceptions, are still shown."""
    import shutil

    from ast_jax.cli import _quiet_once_stopped

    import threading

    shown = []
    hook = _quiet_once_stopped(lambda *args: shown.append(str(args[1])))
    report = lambda message: hook(RuntimeError, RuntimeError(message), None)
    for message in ("Event loop is closed", "something else"):
        thread = threading.Thread(target=report, args=(message,))
        thread.start()
        thread.join()
    report("Event loop is closed")  # the command's own, in the main thread, is shown
    assert shown == ["something else", "Event loop is closed"]
    import logging

    from ast_jax.cli import _not_left_behind

    record = lambda message: logging.makeLogRecord({"msg": message})
    assert not _not_left_behind(record("Future exception was never retrieved\nfuture: <Future finished ...>"))
    assert _not_left_behind(record("Executing <Task ...> took 0.2 seconds"))

    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    for part in (damaged / "params").rglob("ocdbt.process_0/d/*"):
        part.write_bytes(part.read_bytes()[:100])
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "AST_JAX_COMPILATION_CACHE": "off"}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "ast_jax", "predict", "--model", str(damaged),
                               str(clips / "up" / "up0.wav")], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and done.stdout == "", done.stderr
        assert done.stderr.startswith(f"ast-jax predict: error: {damaged / 'params'}: cannot restore parameters (")
        assert done.stderr.count("\n") == 1, done.stderr
