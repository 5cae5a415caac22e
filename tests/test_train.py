"""The training loop end to end on the smoke config (tiny AST, synthetic tones, 2 epochs of 8 steps).

- one run: metrics, TensorBoard, results table, best/final model folders, the schedule it logs;
- the same run on 8 fake CPU devices (data parallel and FSDP) gives the same losses;
- interrupted by SIGTERM or kill -9 and started again, a run ends with exactly the parameters of an
  uninterrupted one;
- a non-finite loss stops the run and keeps the last good checkpoint;
- bad configurations fail before anything is compiled, with one-line errors.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from ast_jax.cli import main as cli_main
from ast_jax.pretrained import load_model

ROOT = Path(__file__).resolve().parents[1]
RATE_16K = 16000
SMOKE = str(ROOT / "configs" / "smoke.py")
QUIET = ["--config.progress_bar=False", "--config.log_every_steps=1"]


def train_losses(workdir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if row["split"] == "train"}


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for every training process of this file: they compile the same steps."""
    return tmp_path_factory.mktemp("xla_cache")


def run_training(workdir: Path, *overrides: str, cache: Path, devices: int = 1, wait: bool = True):
    """`python train.py` with the smoke config in a fresh process (JAX_NUM_CPU_DEVICES must precede jax)."""
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices), "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    command = [sys.executable, str(ROOT / "train.py"), "--config", SMOKE, "--workdir", str(workdir), *QUIET,
               *overrides]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    if not wait:
        return process
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return out


EPOCHS = 8  # 64 steps: long enough to interrupt in the middle


@pytest.fixture(scope="module")
def reference(tmp_path_factory, compilation_cache):
    """One uninterrupted single-device smoke run."""
    workdir = tmp_path_factory.mktemp("reference")
    out = run_training(workdir, f"--config.num_epochs={EPOCHS}", cache=compilation_cache)
    (workdir / "stdout.txt").write_text(out)
    return workdir


def test_run_logs_evaluates_and_keeps_models(reference, compilation_cache):
    rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    validation = [r for r in rows if r["split"] == "validation"]
    assert [r["step"] for r in train] == list(range(1, 8 * EPOCHS + 1))
    assert {"loss", "learning_rate", "grad_norm", "clips_per_second"} <= set(train[0])
    # smoke: lr 1e-3, first milestone after epoch 1, so epoch 2 (steps 9-16) runs at 0.85e-3, epoch 3 at 0.85^2
    assert [train[i]["learning_rate"] for i in (7, 8, 16)] == pytest.approx([1e-3, 8.5e-4, 7.225e-4])
    assert [r["step"] for r in validation] == list(range(8, 8 * EPOCHS + 1, 8))
    assert {"accuracy", "mAP", "mAUC", "loss"} <= set(validation[0])
    assert validation[-1]["loss"] < train[0]["loss"]  # it learns something

    results = json.loads((reference / "results.json").read_text())
    splits = {(r["model"].split(" ")[0], r["split"]) for r in results["results"]}
    assert {("final", "validation"), ("best", "validation"), ("best", "test")} <= splits
    # the best model is the first epoch of highest validation accuracy, and scores what it scored then
    accuracies = [r["accuracy"] for r in validation]
    assert results["best_epoch"] == accuracies.index(max(accuracies)) + 1
    best_row = next(r for r in results["results"] if r["model"].startswith("best") and r["split"] == "validation")
    assert best_row["accuracy"] == pytest.approx(max(accuracies), abs=1e-6)
    printed = (reference / "stdout.txt").read_text()
    assert "best (epoch" in printed  # the results table, then where the model and the results are
    assert printed.endswith(f"model: {reference / 'model'} (the best, epoch {results['best_epoch']}); results: "
                            f"{reference / 'results.json'}\n")
    assert "the run is complete" not in printed
    # without a progress bar the log lines are printed: each logged step and each validation
    assert printed.count("learning rate") == 8 * EPOCHS and printed.count("): validation ") == EPOCHS
    assert json.loads((reference / "config.json").read_text())["log_every_steps"] == 1
    assert any((reference / "tensorboard").iterdir())

    best, final = load_model(reference / "best"), load_model(reference / "final")
    assert best.labels == final.labels == ["tone0", "tone1", "tone2", "tone3"]
    assert (best.config.num_layers, best.config.max_length, best.features.target_length) == (1, 32, 32)


def test_evaluate_reports_what_training_logged(reference, tmp_path, capsys):
    """`ast-jax evaluate` on the best model and the config's test split gives the training log's figures."""
    logged = next(r for r in json.loads((reference / "results.json").read_text())["results"]
                  if r["model"].startswith("best") and r["split"] == "test")
    for data in (SMOKE, str(reference / "config.json")):  # the config file, or the run's own saved config
        code = cli_main(["evaluate", "--model", str(reference / "best"), "--data", data, "--output-dir", str(tmp_path)])
        assert code == 0, capsys.readouterr().err
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert metrics["examples"] == logged["examples"]
        for name in ("accuracy", "mAP", "mAUC"):
            assert metrics[name] == pytest.approx(logged[name], abs=1e-6), name
    # the run's folder itself is not data: the message points at its config.json
    code = cli_main(["evaluate", "--model", str(reference / "best"), "--data", str(reference), "--output-dir",
                     str(tmp_path / "x")])
    assert code == 1 and (f"{reference}: a training run's folder, not data; give {reference / 'config.json'} as "
                          f"--data") in capsys.readouterr().err


def test_eight_devices_match_one_device(reference, tmp_path, compilation_cache):
    expected = train_losses(reference)
    averaging = ["--config.weight_averaging.start_epoch=1", "--config.weight_averaging.end_epoch=2"]
    # an evaluation batch far beyond the data is cut to what the splits need (it was padded to a million rows)
    huge_eval = ["--config.eval_batch_size=1000000"]
    for name, overrides in (("data", huge_eval), ("fsdp", ["--config.mesh.fsdp=4", *averaging])):
        run_training(tmp_path / name, *overrides, "--config.num_epochs=2", devices=8, cache=compilation_cache)
        losses = train_losses(tmp_path / name)
        assert sorted(losses) == list(range(1, 17))
        np.testing.assert_allclose([losses[s] for s in losses], [expected[s] for s in losses], rtol=2e-5,
                                   err_msg=name)
    validation = lambda workdir: {row["step"]: row["loss"] for row in map(  # noqa: E731
        json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if row["split"] == "validation"}
    ours, theirs = validation(tmp_path / "data"), validation(reference)
    assert sorted(ours) == [8, 16]
    np.testing.assert_allclose([ours[s] for s in ours], [theirs[s] for s in ours], rtol=2e-5)
    # weight averaging (AudioSet recipe) on the FSDP run: the mean of the epoch-1 and epoch-2 parameters
    results = json.loads((tmp_path / "fsdp" / "results.json").read_text())["results"]
    assert {("averaged", "validation"), ("averaged", "test")} <= {(r["model"], r["split"]) for r in results}
    averaged, final = (load_model(tmp_path / "fsdp" / name).params for name in ("averaged", "final"))
    assert not np.array_equal(averaged["head"]["kernel"], final["head"]["kernel"])
    # the epoch-1 parameters: those of the same run stopped after one epoch (its schedule and shuffles do not
    # depend on the number of epochs)
    run_training(tmp_path / "fsdp-1", "--config.mesh.fsdp=4", "--config.num_epochs=1", devices=8,
                 cache=compilation_cache)
    epoch_one = load_model(tmp_path / "fsdp-1" / "final").params
    assert not np.array_equal(epoch_one["head"]["kernel"], final["head"]["kernel"])
    jax.tree_util.tree_map(lambda mean, one, two: np.testing.assert_allclose(mean, (one + two) / 2, atol=1e-6),
                           averaged, epoch_one, final)


def final_params(workdir: Path):
    return jax.tree_util.tree_leaves(load_model(workdir / "final").params)


def wait_for_checkpoint(workdir: Path, process, at_least: int) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
        if steps and max(steps) >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint >= {at_least} appeared (exit {process.poll()})")


def latest_checkpoint(workdir: Path) -> int:
    return max(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())


def tensorboard_steps(workdir: Path, tag: str) -> set[int]:
    """The steps TensorBoard shows for `tag`: event files read in the order written, each resumed session's
    start dropping the earlier sessions' events from its step on (tensorboardX's purge_step)."""
    from tensorboardX.proto.event_pb2 import Event

    steps: set[int] = set()
    for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*"), key=lambda p: p.name.split(".")[3]):
        data, offset = path.read_bytes(), 0
        while offset + 12 <= len(data):  # TFRecord: length (8 bytes), its CRC (4), the record, its CRC (4)
            length = int.from_bytes(data[offset:offset + 8], "little")
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                steps = {step for step in steps if step < event.step}
            if any(value.tag == tag for value in event.summary.value):
                steps.add(event.step)
    return steps


def test_interrupted_run_resumes_to_the_same_result(reference, tmp_path, compilation_cache):
    """SIGTERM (checkpoint and exit 143), Ctrl-C (the same, exit 130), then kill -9 (no warning: back to the last
    periodic checkpoint), then to the end: the parameters and every logged loss equal the uninterrupted run's,
    bit for bit; run once more when finished, the results are logged once."""
    interrupted, longer = tmp_path / "interrupted", f"--config.num_epochs={EPOCHS}"
    process = run_training(interrupted, longer, wait=False, cache=compilation_cache)
    wait_for_checkpoint(interrupted, process, 8)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM at step" in err
    first_stop = latest_checkpoint(interrupted)
    assert first_stop < 8 * EPOCHS

    process = run_training(interrupted, longer, wait=False, cache=compilation_cache)
    wait_for_checkpoint(interrupted, process, first_stop + 4)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "stopped by Ctrl-C at step" in err and "Traceback" not in err and "ERROR" not in err, err[-2000:]
    first_stop = latest_checkpoint(interrupted)
    assert first_stop < 8 * EPOCHS

    process = run_training(interrupted, longer, wait=False, cache=compilation_cache)
    wait_for_checkpoint(interrupted, process, first_stop + 4)
    process.kill()
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert first_stop < latest_checkpoint(interrupted) < 8 * EPOCHS

    run_training(interrupted, longer, cache=compilation_cache)
    for ours, whole in zip(final_params(interrupted), final_params(reference)):
        np.testing.assert_array_equal(ours, whole)  # same data order, same random numbers, same arithmetic
    assert train_losses(interrupted) == train_losses(reference)
    # TensorBoard too: the killed session's events up to its last checkpoint were written with the checkpoint
    assert tensorboard_steps(interrupted, "train/loss") == set(range(1, 8 * EPOCHS + 1))
    assert tensorboard_steps(interrupted, "validation/loss") == set(range(8, 8 * EPOCHS + 1, 8))

    again = run_training(interrupted, longer, cache=compilation_cache)
    first, second = again.splitlines()[:2]
    assert first.startswith("data: the synthetic source: 4 labels; clips: train "), again[:500]
    steps = 8 * EPOCHS
    assert second == f"{interrupted}: the run is complete ({steps} of {steps} steps); scoring its models again"
    results = lambda workdir: [line for line in (workdir / "metrics.jsonl").read_text().splitlines() if "result/" in line]
    assert len(results(interrupted)) == len(results(reference)) == 3


def test_damaged_checkpoints_are_passed_over_with_a_warning(reference, tmp_path, compilation_cache):
    """A truncated file in the newest checkpoint and a step folder with nothing in it (a copy cut short): the
    run warns about each, sets them aside, resumes from the newest checkpoint that restores and ends with the
    uninterrupted run's parameters. When no checkpoint restores: one line naming the newest, nothing renamed."""
    import shutil

    workdir = tmp_path / "damaged"
    shutil.copytree(reference, workdir, symlinks=True)
    (workdir / "results.json").unlink()
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
    assert steps == [8 * EPOCHS - 4, 8 * EPOCHS]
    newest = workdir / "checkpoints" / str(steps[-1])
    largest = max((newest / "state").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    with open(largest, "r+b") as file:
        file.truncate(100)
    (workdir / "checkpoints" / "900").mkdir()  # past the run's steps: not taken for a checkpoint it ran
    process = run_training(workdir, f"--config.num_epochs={EPOCHS}", wait=False, cache=compilation_cache)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    lines = [line for line in err.splitlines() if "checkpoint" in line]
    assert len(lines) == 2 and len(err.splitlines()) == 2, err[-3000:]  # no pages of Orbax's errors
    assert (f"{workdir}/checkpoints/900: checkpoint incomplete (no _CHECKPOINT_METADATA, state, meta); passed over "
            f"(the folder is kept, renamed 900.unreadable)") in lines[0]
    assert lines[1].startswith(f"ast-jax train: warning: {newest}: checkpoint cannot be restored (ValueError: "
                               f"OUT_OF_RANGE: Error reading")
    assert f"resuming from step {steps[0]}" in lines[1] and f"renamed {steps[-1]}.unreadable)" in lines[1]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == sorted(
        [str(steps[0]), str(steps[-1]), f"{steps[-1]}.unreadable", "900.unreadable"])
    for ours, whole in zip(final_params(workdir), final_params(reference)):
        np.testing.assert_array_equal(ours, whole)

    for step in steps:  # now every checkpoint is damaged
        (workdir / "checkpoints" / str(step) / "meta" / "metadata").write_text('{"best": nan, "hist')
    process = run_training(workdir, f"--config.num_epochs={EPOCHS}", wait=False, cache=compilation_cache)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1 and err.count("\n") == 1, err[-3000:]
    assert (f"ast-jax train: error: {newest}: checkpoint cannot be restored (JSONDecodeError: Expecting value: line 1 "
            f"column 10 (char 9)), and no older one restores; remove {workdir}/checkpoints to start again, or give a "
            f"new --workdir") in err
    assert (workdir / "checkpoints" / str(steps[0])).is_dir() and newest.is_dir()


def test_the_filter_for_a_failed_restores_leftovers_holds_until_the_program_exits(tmp_path):
    """A failed restore's leftover reads are often collected only as the interpreter exits: the filter a command
    adds for them (checkpoint.py) must outlast the command, or "coroutine ... was never awaited" follows its
    output (seen in the damaged-checkpoint test above, now and then)."""
    script = tmp_path / "leftover.py"
    script.write_text(
        "import sys\n"
        "import ast_jax.commands.predict as predict\n"
        "from ast_jax import cli\n"
        "from ast_jax.training import checkpoint\n"
        "async def _read_array_index_and_device_put():\n"
        "    pass\n"
        "def run(args):\n"
        "    checkpoint._drop_leftover_reads()  # as a failed restore does\n"
        "    run.left = _read_array_index_and_device_put()  # never awaited; collected as the interpreter exits\n"
        "    return 0\n"
        "predict.run = run\n"
        "sys.exit(cli.main(['predict', '--model', 'm', 'x.wav'], program=True))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert (done.returncode, done.stderr) == (0, "")


def test_a_metrics_line_cut_short_by_a_killed_run_does_not_stop_the_resume(tmp_path):
    """A run killed while writing metrics.jsonl leaves half a line; the resume keeps the whole rows up to the
    checkpoint's step and drops the rest (the cut line, later steps, and the results)."""
    from ast_jax.training.trainer import MetricWriter

    rows = [{"step": 4, "split": "train", "loss": 0.5}, {"step": 8, "split": "validation", "accuracy": 0.25},
            {"step": 8, "split": "result/test", "accuracy": 0.3}, {"step": 12, "split": "train", "loss": 0.4}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"step": 16, "spl')
    writer = MetricWriter(tmp_path, 8)
    writer.write(9, "train", {"loss": 0.45})
    writer.close()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == rows[:2] + [{"step": 9, "split": "train", "loss": 0.45}]


def test_stop_requests_stop_at_once_outside_the_steps_and_after_the_step_inside(capsys):
    from ast_jax.training.trainer import StopRequests

    previous = signal.getsignal(signal.SIGINT)
    with StopRequests() as stops:
        with pytest.raises(KeyboardInterrupt):  # reading data or compiling: at once, as usual
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        with pytest.raises(KeyboardInterrupt):  # and again at the next check, should that exception have been lost
            stops.check()
        stops.signals.clear()
        stops.after_step = True
        os.kill(os.getpid(), signal.SIGINT)  # in the loop: only recorded
        time.sleep(0.1)
        assert stops.signals == [signal.SIGINT] and stops.by_ctrl_c
        assert "stopping after this step with a checkpoint" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C: at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is previous


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    workdir = tmp_path / "diverged"
    code = cli_main(["train", "--config", SMOKE, "--workdir", str(workdir), *QUIET,
                     "--config.optim.learning_rate=1e30", "--config.checkpoint.every_steps=1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "non-finite training loss at step" in err and err.count("\n") == 1
    failed_at = int(err.split("at step ")[1].split(" ")[0])
    kept = sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())
    assert kept and max(kept) == failed_at - 1


@pytest.fixture
def no_jit(monkeypatch):
    """jax.jit raises from here on: nothing may be compiled (imported modules jit their helpers at import)."""
    import ast_jax.training.trainer  # noqa: F401  (its imports, optax's among them, call jax.jit at import)

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled before rejecting the config")

    monkeypatch.setattr(jax, "jit", no_compiling)


@pytest.mark.parametrize("overrides,message", [
    (["--config.optim.lerning_rate=1"], "unknown config field 'optim.lerning_rate'"),
    (["--config.data.data_dir=/no/such/folder"], "/no/such/folder: data.data_dir does not exist"),
    (["--config.data.num_classes=5", "--config.data.source=demo"], "data.num_classes is 5"),
    (["--config.loss=hinge"], "loss must be one of"),
    (["--config.batch_size=0"], "batch_size must be at least 1, got 0"),
    (["--config.num_epochs=-2", "--config.augment.mixup=3.0", "--config.features.std=0.0"],
     "num_epochs must be at least 1, got -2; features.std must be above 0, got 0.0; augment.mixup must be at most 1"),
    (["--config.data.clip_seconds=0"], "data.clip_seconds must be above 0, got 0.0"),
    (["--config.optim.lr_schedule=cosine", "--config.optim.warmup_steps=1000"],
     "optim.warmup_steps (1000) must be below the 16 training steps (num_epochs x steps per epoch): lower"),
    (["--config.checkpoint.every_steps=0"], "checkpoint.every_steps must be at least 1, got 0"),
    (["--config.validation_split="], "validation_split is empty: the run keeps the model that scores best on it"),
    (["--config.test_split=tset"], "test_split: synthetic source: no split 'tset'; it has train, validation, test"),
    (["--config.data.num_classes=1"], "the synthetic source has 1 class (tone0); a classifier needs at least two"),
    (["--config.data.source=folder", "--config.data.validaton_fraction=0.2"],
     "unknown config field 'data.validaton_fraction' (fields of data: balanced, cache_dir, clip_seconds, data_dir, "
     "labels, num_classes, prepared, sample_rate, source, test_fraction, validation_fraction)"),
    (["--num-processes", "2", "--process-id", "1"], "--num-processes and --process-id need --coordinator"),
    (["--config.data.balanced=True"], "data.balanced: the synthetic source gives no example weights to sample by"),
    (["--config.data.source=folder", "--config.data.validation_fraction=0.6", "--config.data.test_fraction=0.5"],
     "data.validation_fraction and data.test_fraction add up to 1.1, leaving nothing to train on"),
    (["--config.mesh.fsdp=3"], "mesh.fsdp = 3 does not divide the 1 devices"),
    (["--config.seed=-1"], "seed must be at least 0, got -1"),
    ([f"--config.seed={2 ** 64}"], f"seed must be below 2**63, got {2 ** 64}"),
    (["--config.optim.b1=-1.0", "--config.optim.b2=1.5", "--config.optim.eps=0.0"],
     "optim.b1 must be at least 0, got -1.0; optim.b2 must be below 1, got 1.5; optim.eps must be above 0, got 0.0"),
    (["--config.data.clip_seconds=0.01"], "data.clip_seconds must be at least one 25 ms analysis frame, got 0.01"),
    (["--config.optim.warmup_steps=10"], "optim.warmup_update_every (50) is beyond optim.warmup_steps (10)"),
])
def test_bad_config_fails_before_compiling(tmp_path, capsys, monkeypatch, no_jit, overrides, message):
    monkeypatch.setenv("AST_JAX_CACHE", str(tmp_path / "cache"))  # the demo set's prepared copies: not in ~/.cache
    code = cli_main(["train", "--config", SMOKE, "--workdir", str(tmp_path / "bad"), *QUIET, *overrides])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()  # nothing written for a run that never started


def test_split_folders_without_a_validation_folder_are_named(tmp_path, capsys, no_jit):
    """Split folders without validation/ leave that split empty: the message says which folder is missing,
    not the hash-split advice, which does not apply to split folders."""
    import soundfile

    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / "d" / split / label).mkdir(parents=True)
            soundfile.write(tmp_path / "d" / split / label / "x.wav", np.full(16000, 0.01, np.float32), 16000)
    code = cli_main(["train", "--config", SMOKE, "--workdir", str(tmp_path / "run"), *QUIET,
                     "--config.data.source=folder", f"--config.data.data_dir={tmp_path / 'd'}",
                     f"--config.data.cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert ("has no usable clips (the folder has split folders, train/, test/, but no validation/: give all three, or "
            "none, and then the clips are split by a hash)") in err and "fraction" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_data_field_no_source_reads_is_refused():
    from ml_collections import ConfigDict

    from ast_jax.training.trainer import check_fields, default_config

    config = default_config()
    config.data.source = "synthetic"
    with config.data.unlocked():
        config.data.validation_fraction = 0.2  # a folder source's field, set in a config file for another source
    with pytest.raises(ValueError, match="data.validation_fraction is not a field of the synthetic source"):
        check_fields(config)
    assert isinstance(config, ConfigDict)


def test_manifests_the_run_does_not_read_are_named():
    from ast_jax.training.config_io import apply_overrides, load_config
    from ast_jax.training.trainer import warn_of_unused_manifests

    config = apply_overrides(load_config(str(ROOT / "configs" / "esc50.py:1")),
                             ["data.json.test=eval.json", "data.json.tset=t.json"])
    with pytest.warns(UserWarning) as caught:
        warn_of_unused_manifests(config)
    assert [str(w.message) for w in caught] == [
        "data.json.test (eval.json): the run reads no split 'test' (it reads train, validation), so this manifest is "
        "left unused: set test_split='test' to report its scores",
        "data.json.tset (t.json): the run reads no split 'tset' (it reads train, validation), so this manifest is "
        "left unused: set test_split='tset' to report its scores"]


def test_own_data_is_described_and_labels_a_split_lacks_or_audio_the_model_cannot_hear_are_named(tmp_path):
    """configs/folder.py on a folder whose one `left` clip hashes into test: the run's first line counts each
    split's clips, and a warning says the model cannot learn `left`; clips longer than the input are named."""
    import soundfile

    from ast_jax.data import build_source
    from ast_jax.training.config_io import load_config
    from ast_jax.training.trainer import (describe_data, feature_config_from, warn_of_missing_labels,
                                          warn_of_unheard_audio)

    root = tmp_path / "mine"
    tone = 0.1 * np.sin(np.arange(16000) / 3.0)
    for label, numbers in (("go", range(12)), ("stop", range(12)), ("left", [2])):  # left/left2.wav hashes to test
        (root / label).mkdir(parents=True)
        for n in numbers:
            soundfile.write(root / label / f"{label}{n}.wav", tone, 16000)
    config = load_config(f"{ROOT / 'configs' / 'folder.py'}:{root}")
    config.data.cache_dir = str(tmp_path / "cache")
    source = build_source(config.data)
    counts = {split: source.num_examples(split) for split in ("train", "validation", "test")}
    assert sum(counts.values()) == 25 and source.labels == ["go", "left", "stop"]
    assert describe_data(config, source) == (
        f"data: the folder source ({root}): 3 labels; clips: train {counts['train']}, validation "
        f"{counts['validation']}, test {counts['test']}")
    assert source.targets("test")[:, 1].any()
    with pytest.warns(UserWarning) as caught:
        warn_of_missing_labels(config, source)
    messages = [str(w.message) for w in caught]
    assert messages[0] == (
        f"the folder source ({root}): no clips in the 'train' split for 1 of its 3 labels (left): the model cannot "
        "learn them; where clips are split by a hash (no split folders or split column), more clips of those labels, "
        "or their split given, put them there")
    assert messages[1].startswith(f"the folder source ({root}): no clips in the 'validation' split for 2 of its 3 "
                                  "labels (go, left): they are not scored there (their recall is undefined); where")
    assert len(messages) == 2

    config.data.clip_seconds = 3.0
    with pytest.warns(UserWarning, match=r"^data.clip_seconds \(3 s, 298 frames\) is longer than "
                                         r"features.target_length \(98 frames\): the model hears only the first "
                                         r"0.995 s of each clip; set features.target_length=298"):
        warn_of_unheard_audio(config, feature_config_from(config))


def test_the_programs_log_lines_are_in_the_commands_words(tmp_path):
    """A clip left out of the data is logged; `python train.py` (as `ast-jax train`) writes it as its other
    warnings, "ast-jax train: warning: ...", not as Python's root logger would ("WARNING:ast_jax.data:...")."""
    import soundfile

    for label in ("yes", "no"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for n in range(3):
            soundfile.write(tmp_path / "data" / label / f"{n}.wav", np.zeros(1600, np.float32), RATE_16K)
    (tmp_path / "data" / "no" / "x.wav").write_text("not audio")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "AST_JAX_HOST_MALLOC": "system"}
    recipe = f"{ROOT / 'configs' / 'folder.py'}:{tmp_path / 'data'},0.1"
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", recipe, "--workdir",
                           str(tmp_path / "run"), "--config.num_epochs=1",
                           f"--config.data.cache_dir={tmp_path / 'cache'}"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = done.stderr.splitlines()
    assert f"ast-jax train: warning: {tmp_path / 'data' / 'no' / 'x.wav'}: not an audio file" in done.stderr, lines
    assert not [line for line in lines if line.startswith(("WARNING:", "INFO:"))], lines
    assert done.returncode == 1 and lines[-1].startswith("ast-jax train: error: optim.warmup_steps (20) must be")


def test_train_and_evaluate_takes_a_config_and_a_folder():
    from ast_jax.training import train_and_evaluate

    with pytest.raises(TypeError, match="^config: a ConfigDict .* or a mapping, got list$"):
        train_and_evaluate([], "w")
    with pytest.raises(TypeError, match="^workdir: a folder path, got NoneType$"):
        train_and_evaluate({"batch_size": 8}, None)


def test_overrides_apply_in_the_order_typed_whichever_form():
    import argparse

    from ast_jax.commands import train as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = command.parse_args(parser, ["--config", SMOKE, "--workdir", "w", "--set", "batch_size=4",
                                       "--config.batch_size=8", "--config.seed", "3", "--set=seed=5"])
    assert args.set == ["batch_size=4", "batch_size=8", "seed=3", "seed=5"]  # the last of each wins


def test_source_fields_and_the_json_manifest_map_from_the_command_line():
    from ast_jax.training.config_io import add_source_fields, apply_overrides, load_config

    overrides = ["data.source=json", "data.json.train=t.json", "data.json.test=x.json", "data.label_csv=l.csv"]
    config = apply_overrides(add_source_fields(load_config(SMOKE), overrides), overrides)
    assert config.data.json.to_dict() == {"train": "t.json", "test": "x.json"} and config.data.label_csv == "l.csv"
    whole = ['data.json={"train": "a.json", "validation": "b.json"}']
    assert apply_overrides(config, whole).data.json.to_dict() == {"train": "a.json", "validation": "b.json"}
    with pytest.raises(ValueError, match="'data.json' is a group; set one of its fields .* or all of it as a dict"):
        apply_overrides(config, ["data.json=3"])
    with pytest.raises(ValueError, match=r"'optim' is a group; set one of its fields \(b1, .*\)$"):
        apply_overrides(config, ['optim={"learning_rate": 1.0}'])  # would drop the group's other fields
    for labels in ("('yes', 'no')", "yes, no", '["yes", "no"]'):
        overrides = ["data.source=folder", "data.validation_fraction=0.25", f"data.labels={labels}"]
        config = apply_overrides(add_source_fields(load_config(SMOKE), overrides), overrides)
        assert (config.data.validation_fraction, tuple(config.data.labels)) == (0.25, ("yes", "no")), labels
    # A recipe moved to another source: the AudioSet recipe's json fields give way to the manifest's.
    overrides = ["data.source=manifest", "data.data_dir=clips.csv"]
    config = apply_overrides(add_source_fields(load_config(str(ROOT / "configs" / "audioset.py")), overrides),
                             overrides)
    assert "json" not in config.data and "label_csv" not in config.data
    assert (config.data.validation_fraction, config.data.balanced, config.loss) == (0.1, True, "bce")


@pytest.mark.parametrize("recipe, good, bad", [
    ("audioset.py", "balanced", "balance"), ("esc50.py", "5", "6"), ("speech_commands.py", "runlocal", "runlocl"),
    ("tfds_speech_commands.py", "runlocal", "runlcoal"), ("demo.py", "", "fast"), ("smoke.py", "", "x"),
    ("folder.py", "data/mine.csv,2.5", "data/mine,fast")])
def test_recipe_arguments_are_checked(recipe, good, bad):
    from ast_jax.training.config_io import load_config

    assert load_config(str(ROOT / "configs" / f"{recipe}:{good}")).batch_size >= 1
    with pytest.raises(ValueError, match=repr(bad)):  # a typo does not quietly run another recipe
        load_config(str(ROOT / "configs" / f"{recipe}:{bad}"))


def test_the_demo_recipe_is_what_the_readme_says():
    """README, "The demo set": a two-layer tiny AST on 64 mel bins x 112 frames cut into 4 x 13 patches of 16x16
    (time stride 8), cross entropy, AdamW with weight decay 0.05, peak rate 2e-3 after 100 warmup steps and a cosine
    decay, no mixup or noise, 80 epochs of 21 steps of 32 clips."""
    from ast_jax.model import ASTConfig
    from ast_jax.training.config_io import load_config

    c = load_config(str(ROOT / "configs" / "demo.py"))
    model = ASTConfig.from_size(c.model.model_size, num_layers=c.model.num_layers, num_mel_bins=c.features.num_mel_bins,
                                max_length=c.features.target_length, frequency_stride=c.model.frequency_stride,
                                time_stride=c.model.time_stride, num_labels=12)
    assert (model.hidden_size, model.num_layers, model.patch_size) == (192, 2, 16)
    assert (model.num_mel_bins, model.max_length, model.frequency_patches, model.time_patches) == (64, 112, 4, 13)
    assert (c.loss, c.optim.decoupled_weight_decay, c.optim.weight_decay, c.optim.learning_rate) == ("ce", True, 0.05,
                                                                                                     2e-3)
    assert (c.optim.warmup_steps, c.optim.lr_schedule, c.augment.mixup, c.augment.noise) == (100, "cosine", 0, False)
    assert (c.num_epochs, c.batch_size, 672 // c.batch_size) == (80, 32, 21)


def test_resuming_under_another_config_is_refused(reference, capsys, no_jit):
    saved = (reference / "config.json").read_text()
    code = cli_main(["train", "--config", SMOKE, "--workdir", str(reference), *QUIET,
                     f"--config.num_epochs={EPOCHS}", "--config.batch_size=16", "--config.model.num_layers=2"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert (f"{reference}: holds checkpoints of a run with another config (batch_size: 8 -> 16; model.num_layers: "
            f"1 -> 2); resume it with --config {reference / 'config.json'}, or give a new --workdir") in err
    assert (reference / "config.json").read_text() == saved
    # what the message proposes is accepted: the saved config, read back, is the run's own
    from ast_jax.training.config_io import load_config
    from ast_jax.training.trainer import check_resumable

    check_resumable(load_config(str(reference / "config.json")), reference)
    # the parameters' layout over the devices may change (checkpoints restore onto any mesh)
    relaid = load_config(str(reference / "config.json"))
    relaid.mesh.fsdp = -1
    check_resumable(relaid, reference)
    # so may the json source's manifests and label CSV move (their clips and labels are checked apart)
    from ast_jax.training.config_io import save_config

    moved = reference.parent / "json-run"
    moved.mkdir(exist_ok=True)
    (moved / "checkpoints").unlink(missing_ok=True)
    (moved / "checkpoints").symlink_to(reference / "checkpoints")
    before = load_config(str(reference / "config.json"))
    with before.data.unlocked():
        before.data.update(source="json", json={"train": "/old/train.json"}, label_csv="/old/labels.csv")
    save_config(before, moved / "config.json")
    after = load_config(str(moved / "config.json"))
    after.data.json.train, after.data.label_csv = "/new/train.json", "/new/labels.csv"
    check_resumable(after, moved)
    after.data.balanced = not after.data.balanced
    with pytest.raises(ValueError, match="another config \\(data.balanced: "):
        check_resumable(after, moved)
    after.data.balanced = not after.data.balanced
    with before.optim.unlocked(), after.optim.unlocked():  # under a cosine schedule the run's length is fixed
        before.optim.lr_schedule = after.optim.lr_schedule = "cosine"
    save_config(before, moved / "config.json")
    after.num_epochs = before.num_epochs + 2
    with pytest.raises(ValueError, match=rf"another config \(num_epochs: {before.num_epochs} -> {after.num_epochs} "
                                         r"\(the cosine schedule spans the whole run\)\)"):
        check_resumable(after, moved)
    (moved / "config.json").unlink()  # checkpoints without their config cannot be checked: refused
    with pytest.raises(ValueError, match=rf"^{moved}: holds checkpoints but no config.json"):
        check_resumable(after, moved)
    (moved / "checkpoints").unlink()
    for data in ("yes/", "clip.wav", "results.json"):  # data (a mistyped path), or files a run would overwrite
        (moved / data).mkdir() if data.endswith("/") else (moved / data).write_bytes(b"")
        with pytest.raises(ValueError, match=rf"^{moved}: not an ast-jax run, and it holds (a folder, |audio, |)"
                                             rf"{data}(, which a run writes)?; "):
            check_resumable(after, moved)
        (moved / data).rmdir() if data.endswith("/") else (moved / data).unlink()
    for mine in (".DS_Store", "train.log", "slurm-7.out", "lost+found/"):  # what a new run's folder may start with
        (moved / mine).mkdir() if mine.endswith("/") else (moved / mine).write_text("")
    check_resumable(after, moved)
    (moved / "config.json").write_text('{"model_type": "audio-spectrogram-transformer"}')  # another program's
    with pytest.raises(ValueError, match=rf"^{moved}: its config.json is not an ast-jax run's"):
        check_resumable(after, moved)
    code = cli_main(["train", "--config", str(reference / "metrics.jsonl"), "--workdir", str(reference / "x")])
    assert code == 1 and "a config is a Python file (.py) defining get_config(), or a run's config.json" in capsys.readouterr().err


def test_resuming_on_other_data_or_for_fewer_steps_is_refused(reference, capsys, no_jit):
    """data.data_dir may move between sessions, but the checkpoints must meet the same training clips and labels
    (another count re-cuts the epochs and the schedule), and num_epochs may grow but not fall below what ran."""
    from ast_jax.training.trainer import check_same_data

    saved = {name: (reference / name).read_text() for name in ("config.json", "data.json")}
    facts = json.loads(saved["data.json"])
    assert facts == {"train_examples": 64, "labels": ["tone0", "tone1", "tone2", "tone3"]}
    check_same_data(reference, facts, 8 * EPOCHS, "the data")  # the same data: resumable
    for changed, said in (({"train_examples": 32}, "64 training clips, now 32"),
                          ({"labels": ["tone1", "tone0", "tone2", "tone3"]}, "the labels in another order"),
                          ({"labels": ["a", "b"]}, "labels ['tone0', 'tone1', 'tone2']... (4), now ['a', 'b']... (2)")):
        with pytest.raises(ValueError, match=re.escape(f"{reference}: its checkpoints were trained on other data "
                                                       f"than the data has ({said}); resume with the same data")):
            check_same_data(reference, {**facts, **changed}, 8 * EPOCHS, "the data")
    (reference / "data.json").write_text(json.dumps({**facts, "train_fingerprint": "a"}))
    check_same_data(reference, {**facts, "train_fingerprint": "a"}, 8 * EPOCHS, "the data")
    check_same_data(reference, facts, 8 * EPOCHS, "the data")  # a source without one (synthetic, TFDS)
    with pytest.raises(ValueError, match=re.escape("(as many training clips and the same labels, but other clips or "
                                                   "targets); resume with the same data")):
        check_same_data(reference, {**facts, "train_fingerprint": "b"}, 8 * EPOCHS, "the data")
    (reference / "data.json").write_text(saved["data.json"])  # a run from before fingerprints: not checked
    check_same_data(reference, {**facts, "train_fingerprint": "b"}, 8 * EPOCHS, "the data")
    with pytest.raises(ValueError, match="64 training clips, now 32"):  # half the clips, half the steps: the data
        check_same_data(reference, {**facts, "train_examples": 32}, 4 * EPOCHS, "the data")
    for damaged in ("[]", '{"labels": 3}', "{"):
        (reference / "data.json").write_text(damaged)
        with pytest.raises(ValueError, match=re.escape(f"{reference / 'data.json'}: cannot read what the run was "
                                                       f"trained on")):
            check_same_data(reference, facts, 8 * EPOCHS, "the data")
    (reference / "data.json").write_text(saved["data.json"])
    code = cli_main(["train", "--config", SMOKE, "--workdir", str(reference), *QUIET, "--config.num_epochs=4"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert (f"{reference}: its latest checkpoint is at step {8 * EPOCHS}, past the 32 steps that num_epochs asks "
            f"for now") in err
    assert {name: (reference / name).read_text() for name in saved} == saved


@pytest.mark.parametrize("source, message", [
    ("def get_config(:\n", "cfg.py:1: invalid syntax"),
    ("import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict({'a': b})\n",
     "cfg.py:4: NameError: name 'b' is not defined"),
    ("x = 1\n", "cfg.py: a config file must define get_config()"),
    ("def get_config():\n    return {'a': 1}\n", "cfg.py: get_config() must return an ml_collections.ConfigDict"),
    # a typo in a file trained at the default batch before; the same as an override was always refused
    ("from ast_jax.training.trainer import default_config\n\ndef get_config():\n    c = default_config()\n"
     "    c.batchsize = 16\n    c.optim.lr = 1e-3\n    return c\n",
     "cfg.py: unknown config field 'batchsize' (fields of the config: augment, batch_size, "),
    ("from ast_jax.training.trainer import default_config\n\ndef get_config():\n    c = default_config()\n"
     "    c.batch_size = None\n    return c\n", "cfg.py: bad config: batch_size must be a number, got None"),
    ("from ast_jax.training.trainer import default_config\n\ndef get_config():\n    c = default_config()\n"
     "    c.data.source = 'synthetic'\n    c.data.foo = 1\n    return c\n",
     "cfg.py: data.foo is not a field of the synthetic source (its fields: "),
])
def test_config_file_errors_are_one_line_with_the_place(tmp_path, capsys, no_jit, source, message):
    (tmp_path / "cfg.py").write_text(source)
    code = cli_main(["train", "--config", str(tmp_path / "cfg.py"), "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and f"{tmp_path / message}" in err and err.count("\n") == 1, err


def test_a_workdir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "runs").write_text("mine")
    code = cli_main(["train", "--config", SMOKE, "--workdir", str(tmp_path / "runs"), *QUIET])
    err = capsys.readouterr().err
    assert code == 1 and f"{tmp_path / 'runs'}: workdir exists and is not a folder" in err and err.count("\n") == 1
    assert (tmp_path / "runs").read_text() == "mine"
    code = cli_main(["train", "--config", SMOKE, "--workdir", str(tmp_path / "runs" / "one"), *QUIET])
    err = capsys.readouterr().err
    assert code == 1 and err == (f"ast-jax train: error: {tmp_path / 'runs' / 'one'}: workdir cannot be made "
                                 f"({tmp_path / 'runs'} is a file)\n")


def test_labels_must_match_a_kept_head(reference, tmp_path, capsys, no_jit):
    code = cli_main(["train", "--config", SMOKE, "--workdir", str(tmp_path / "bad"), *QUIET,
                     f"--config.init.source={reference / 'best'}", "--config.init.keep_head=True",
                     "--config.data.num_classes=3"])
    err = capsys.readouterr().err
    assert code == 1 and "labels are not the data set's 3 labels" in err, err


def test_batch_not_divisible_by_devices(tmp_path, compilation_cache):
    process = run_training(tmp_path, "--config.batch_size=12", devices=8, wait=False, cache=compilation_cache)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "batch_size 12 is not divisible by the 8 devices" in err and err.count("\n") == 1, err


def test_initialisation_from_a_trained_model_adapts_positions_and_makes_a_new_head(reference):
    from ast_jax.training.config_io import apply_overrides, load_config
    from ast_jax.training.trainer import load_initial_model, model_config_from

    config = apply_overrides(load_config(SMOKE), [f"init.source={reference / 'best'}", "features.target_length=48"])
    target = model_config_from(config, num_labels=4)
    model_config, params = load_initial_model(config, target, ["a", "b", "c", "d"])
    source = load_model(reference / "best")
    assert model_config.max_length == 48 and params["pos_embed"].shape == (1, 2 + 2 * 4, 192)
    np.testing.assert_array_equal(params["block0"]["mlp"]["fc1"]["kernel"], source.params["block0"]["mlp"]["fc1"]["kernel"])
    # the special tokens' rows are copied; the 2x2 patch grid is stretched along time to 2x4 as the original
    # code does it (F.interpolate, bilinear, align_corners=False)
    np.testing.assert_array_equal(params["pos_embed"][0, :2], source.params["pos_embed"][0, :2])
    torch = pytest.importorskip("torch")
    grid = torch.from_numpy(np.asarray(source.params["pos_embed"][0, 2:])).T.reshape(1, 192, 2, 2)
    stretched = torch.nn.functional.interpolate(grid, size=(2, 4), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(params["pos_embed"][0, 2:], stretched.reshape(192, 8).T.numpy(), atol=1e-6)
    assert not np.array_equal(params["head"]["kernel"], source.params["head"]["kernel"])  # a new head


def test_a_resume_does_not_read_the_start_weights_again(reference, tmp_path, compilation_cache):
    """The checkpoints hold the weights: init.source may be gone when the run resumes (the released recipes
    start from a 350 MB DeiT); the model as it began is kept in WORKDIR/model_config.json."""
    import shutil

    from ast_jax.model import ASTConfig

    start = tmp_path / "start"
    shutil.copytree(reference / "best", start)
    workdir = tmp_path / "run"
    run_training(workdir, f"--config.init.source={start}", cache=compilation_cache)
    kept = json.loads((workdir / "model_config.json").read_text())
    assert ASTConfig.from_dict(kept) == load_model(workdir / "final").config
    shutil.rmtree(start)
    (workdir / "results.json").unlink()
    run_training(workdir, f"--config.init.source={start}", cache=compilation_cache)  # the final results again
    assert json.loads((workdir / "results.json").read_text())["steps"] == 16


def test_bfloat16_compute_keeps_float32_parameters():
    import jax.numpy as jnp

    from ast_jax.model import AST, ASTConfig, init_params
    from ast_jax.training.optim import make_optimizer
    from ast_jax.training.trainer import default_config, make_train_step

    rng = np.random.default_rng(0)
    batch = {"audio": rng.standard_normal((4, 32, 32)).astype(np.float32),
             "targets": np.eye(4, dtype=np.float32), "valid": np.ones(4, bool)}
    optimizer, schedule = make_optimizer(default_config(), 10)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config = ASTConfig.from_size("tiny224", num_layers=1, max_length=32, num_mel_bins=32, num_labels=4, dtype=dtype)
        params = init_params(config.replace(dtype="float32"), 0)
        step = jax.jit(make_train_step(AST(config), optimizer, schedule, "bce", lambda _, b: (b["audio"], b["targets"]),
                                       jax.random.PRNGKey(0)))
        state, metrics = step({"params": params, "opt_state": optimizer.init(params),
                               "step": jnp.zeros((), jnp.int32)}, batch)
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state["params"])} == {jnp.dtype("float32")}
        losses[dtype] = float(metrics["loss"])
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=2e-2)


def test_ast_base_from_random_weights_warns(tmp_path, capsys, monkeypatch):
    """A recipe-sized model without config.init.source trains from scratch: the run says so in one line."""
    import ast_jax.training.trainer as trainer

    def stop(*args, **kwargs):
        raise OSError("stopped after the start-up checks")

    monkeypatch.setattr(trainer, "save_config", stop)
    code = cli_main(["train", "--config", SMOKE, "--workdir", str(tmp_path / "run"), *QUIET,
                     "--config.model.num_layers=12", "--config.model.model_size=base384"])
    err = capsys.readouterr().err
    assert code == 1 and "stopped after the start-up checks" in err
    assert ("ast-jax train: warning: a 12-layer, 768-wide AST starts from random weights (config.init.source is "
            "empty)") in err and err.count("\n") == 2, err


def test_cross_entropy_on_multi_label_data_warns(tmp_path, capsys, monkeypatch):
    """loss=ce on clips with several labels makes a softmax model whose labels compete: the run says so."""
    import soundfile

    import ast_jax.training.trainer as trainer

    rows = ["path,label,split"]
    for i, (labels, split) in enumerate([("a;b", "train"), ("a", "train"), ("a;b", "validation"), ("a;b", "test")]):
        soundfile.write(tmp_path / f"{i}.wav", np.full(1600, 0.1 * (i + 1), np.float32), 16000)
        rows.append(f"{i}.wav,{labels},{split}")
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")

    def stop(*args, **kwargs):
        raise OSError("stopped after the start-up checks")

    monkeypatch.setattr(trainer, "save_config", stop)
    common = ["train", "--config", SMOKE, *QUIET, "--config.data.source=manifest", "--config.data.num_classes=2",
              f"--config.data.data_dir={tmp_path / 'clips.csv'}", f"--config.data.cache_dir={tmp_path / 'cache'}"]
    assert cli_main([*common, "--workdir", str(tmp_path / "ce"), "--config.loss=ce"]) == 1
    err = capsys.readouterr().err
    assert "ast-jax train: warning: loss=ce on multi-label data" in err and "--config.loss=bce" in err, err
    assert cli_main([*common, "--workdir", str(tmp_path / "bce"), "--config.loss=bce"]) == 1
    assert "warning" not in capsys.readouterr().err


def test_a_source_field_left_out_counts_as_its_default_when_resuming(tmp_path):
    """A run started from Python (no folder-source fields in its config) resumes from the command line, which
    fills them in, and the other way round; a field really changed is still refused."""
    import ml_collections

    from ast_jax.training.config_io import add_source_fields, save_config
    from ast_jax.training.trainer import check_resumable, default_config

    bare = default_config()
    bare.data.source = "folder"
    filled = add_source_fields(ml_collections.ConfigDict(bare.to_dict()))
    assert "validation_fraction" in filled.data and "validation_fraction" not in bare.data
    for part in ("state", "meta"):  # a checkpoint as Orbax leaves one (the trainer checks its parts are there)
        (tmp_path / "checkpoints" / "5" / part).mkdir(parents=True)
    (tmp_path / "checkpoints" / "5" / "_CHECKPOINT_METADATA").write_text("{}")
    for saved, resumed in ((bare, filled), (filled, bare)):
        save_config(saved, tmp_path / "config.json")
        check_resumable(resumed, tmp_path)
    filled.data.validation_fraction = 0.2
    with pytest.raises(ValueError, match=r"data.validation_fraction: 0.1 -> 0.2"):
        check_resumable(filled, tmp_path)


def test_undefined_metrics_are_written_as_json_null_and_shown_as_n_a(tmp_path):
    """A split with one class has no mAUC: metrics.jsonl and results.json must stay JSON (null, not NaN), the
    table says n/a, and TensorBoard gets no NaN scalar."""
    from ast_jax.training.metrics import json_ready
    from ast_jax.training.trainer import MetricWriter, format_table

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text!r}"))

    writer = MetricWriter(tmp_path, 0)
    writer.write(3, "test", {"loss": 0.5, "mAUC": float("nan"), "mAP": float("inf")})
    writer.close()
    assert strict((tmp_path / "metrics.jsonl").read_text()) == {"step": 3, "split": "test", "loss": 0.5,
                                                                 "mAUC": None, "mAP": None}
    summary = {"best_validation": float("nan"), "results": [{"model": "best", "split": "test", "mAUC": float("nan")}]}
    assert strict(json.dumps(json_ready(summary), allow_nan=False))["results"][0]["mAUC"] is None
    table = format_table([{"model": "best", "split": "test", "loss": 0.25, "accuracy": 1.0, "mAUC": float("nan")}])
    assert table.splitlines()[-1].split() == ["best", "test", "0.2500", "1.0000", "n/a"]


def test_training_logs_do_not_import_torch(tmp_path):
    """tensorboardX imports torch where it is installed; the trainer's metric writer keeps it out (a second
    of start-up), and torch still imports normally afterwards."""
    script = ("import sys\nfrom pathlib import Path\nfrom ast_jax.training.trainer import MetricWriter\n"
              f"writer = MetricWriter(Path({str(tmp_path)!r}), 0)\nwriter.write(1, 'train', {{'loss': 0.5}})\n"
              "print('torch' in sys.modules)\nimport torch\nprint(torch.ones(2).sum().item())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["False", "2.0"], out.stderr
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "split": "train", "loss": 0.5}


def test_a_workdir_without_room_for_the_checkpoints_is_refused_before_anything_is_written(tmp_path, capsys,
                                                                                         monkeypatch, no_jit):
    import shutil

    from ast_jax.model import count_parameters, parameter_shapes
    from ast_jax.training.config_io import load_config
    from ast_jax.training.trainer import model_config_from

    config = load_config(SMOKE)
    parameters = count_parameters(parameter_shapes(model_config_from(config, config.data.num_classes)))
    state = 3 * 4 * parameters  # parameters and Adam's two moments, float32
    needed = state * (config.checkpoint.max_to_keep + 1) + 2 * 4 * parameters
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 30, 1 << 30, needed - 1))
    code = cli_main(["train", "--config", SMOKE, "--workdir", str(tmp_path / "run"), *QUIET])
    err = capsys.readouterr().err
    assert code == 1 and err == (
        f"ast-jax train: error: {tmp_path / 'run'}: not enough space: {needed / 1e6:.3f} MB to write, "
        f"{(needed - 1) / 1e6:.3f} MB free: {config.checkpoint.max_to_keep + 1} checkpoints of {state / 1e6:.1f} MB "
        f"at most, and the best and final models (checkpoint.max_to_keep lowers it)\n")
    assert not (tmp_path / "run").exists()


def test_a_ctrl_c_that_stops_at_once_goes_through_the_handler_that_was_there_before():
    """The command line's handler notes the signal (so that an interrupt a library turns into its own error still
    exits 130); in a plain Python process it is Python's own, which raises KeyboardInterrupt."""
    from ast_jax.training.trainer import StopRequests

    seen = []

    def before(number, frame):
        seen.append(number)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, before)
    try:
        with StopRequests() as stops, pytest.raises(KeyboardInterrupt):
            stops._handle(signal.SIGINT, None)  # outside the training steps: stop at once
    finally:
        signal.signal(signal.SIGINT, old)
    assert seen == [signal.SIGINT]
