"""Two processes with four CPU devices each, joined by jax.distributed, train like one process.

Each process reads its own half of every global batch; the losses it logs must equal a single-process run's.
Processes that do not share the workdir, or run different configs, stop at once with one line.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from ast_jax.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.py")
QUIET = ["--config.progress_bar=False", "--config.log_every_steps=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged_losses(workdir: Path) -> dict[tuple[str, int], float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {(row["split"], row["step"]): row["loss"] for row in rows if row["split"] in ("train", "validation")}


def test_two_processes_match_one(tmp_path):
    port = free_port()
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4", "JAX_PLATFORMS": "cpu"}
    workdir = tmp_path / "two"
    processes = [subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--config", SMOKE, "--workdir", str(workdir), *QUIET,
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=400) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    assert "best (epoch" in outputs[0][0] and "best (epoch" not in outputs[1][0]  # process 0 reports

    single = tmp_path / "one"
    assert cli_main(["train", "--config", SMOKE, "--workdir", str(single), *QUIET]) == 0
    ours, expected = logged_losses(workdir), logged_losses(single)
    assert sorted(ours) == sorted(expected) and len(ours) == 16 + 2  # 16 steps, 2 validations
    np.testing.assert_allclose([ours[k] for k in sorted(ours)], [expected[k] for k in sorted(ours)], rtol=2e-5)
    results = json.loads((workdir / "results.json").read_text())
    assert any(r["split"] == "test" for r in results["results"])


def run_two(workdirs, extra=((), ()), devices="2", counts=(2, 2), folders=(ROOT, ROOT)):
    """Both processes of a 2-process run to their end: [(exit status, stderr)]. `devices`: each process's CPU
    device count, or one for both; `counts`: the --num-processes each is given; `folders`: where each runs."""
    port = free_port()
    devices = (devices, devices) if isinstance(devices, str) else devices
    processes = [subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--config", SMOKE, "--workdir", str(workdirs[i]), *QUIET,
         *extra[i], "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(counts[i]), "--process-id", str(i)],
        env={**os.environ, "JAX_NUM_CPU_DEVICES": devices[i], "JAX_PLATFORMS": "cpu"}, cwd=folders[i],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = []
    for process in processes:
        _, err = process.communicate(timeout=200)
        results.append((process.returncode, err))
    return results


def test_processes_must_share_the_workdir_and_the_config(tmp_path):
    """Separate workdirs made Orbax wait forever at the first checkpoint, and a config that differs on one process
    trained a wrong run or failed in a collective: both are one line on every process, before anything is written."""
    for (status, err), i in zip(run_two([tmp_path / "a", tmp_path / "b"]), range(2)):
        assert status == 1, err[-2000:]
        assert f"{tmp_path / ('a', 'b')[i]}: process 1 cannot see process 0's workdir" in err, err[-2000:]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    shared = tmp_path / "shared"
    for status, err in run_two([shared, shared], extra=((), ("--config.seed=1",))):
        assert status == 1 and "process 1 runs another config than process 0" in err, err[-2000:]
    assert not shared.exists()
    # processes with different device counts: one line each, not numpy's reshape error from inside JAX (nor,
    # with 3 devices in all, that the batch of 8 does not divide them)
    for i, (status, err) in enumerate(run_two([shared, shared], devices=("2", "1"))):
        assert status == 1 and (f"process {i} has {('2', '1')[i]} of the 3 devices of the 2 processes; every "
                                f"process needs the same number of devices") in err, err[-2000:]
    assert not shared.exists()


def test_processes_must_read_the_same_data_and_agree_on_their_number(tmp_path):
    """Each host reads its own copy of the data: a copy with a clip missing cut the epochs (or the evaluations)
    into different numbers of batches and the processes waited on each other for ever. And a process told
    another --num-processes trained on in the run process 0 set up. All are one line on every process now."""
    import soundfile

    for host, clips in (("host0", 8), ("host1", 7)):  # the same relative path, data/, on each host
        for split, count in (("train", clips), ("validation", 2), ("test", 2)):
            for label in ("high", "low"):
                folder = tmp_path / host / "data" / split / label
                folder.mkdir(parents=True)
                for n in range(count if label == "high" else 4):
                    tone = np.sin(np.arange(4800) * (0.3 if label == "high" else 0.05) * (1 + n / 50))
                    soundfile.write(folder / f"{split}{n}.wav", 0.5 * tone, 16000)
    data = ["--config.data.source=folder", "--config.data.data_dir=data", "--config.data.num_classes=2",
            f"--config.data.cache_dir={tmp_path / 'cache'}"]
    shared = tmp_path / "shared"
    results = run_two([shared, shared], extra=(data, data), folders=(tmp_path / "host0", tmp_path / "host1"))
    for status, err in results:
        assert status == 1 and err.count("error:") == 1, err[-2000:]
        assert ("process 1 reads other training data than process 0 (11 training clips against 12, or other clips "
                "or labels); give every process the same data") in err, err[-2000:]
    assert not shared.exists()  # nothing written
    # the same training clips, but a validation clip missing on host 1: the evaluations waited on each other
    host0, host1 = (tmp_path / host / "data" for host in ("host0", "host1"))
    (host1 / "train" / "high" / "train7.wav").write_bytes((host0 / "train" / "high" / "train7.wav").read_bytes())
    (host1 / "validation" / "high" / "validation1.wav").unlink()
    results = run_two([shared, shared], extra=(data, data), folders=(tmp_path / "host0", tmp_path / "host1"))
    for status, err in results:
        assert status == 1 and ("process 1 reads other validation data than process 0 (5 validation clips against "
                                "6, or other clips or labels)") in err, err[-2000:]
    assert not shared.exists()
    for status, err in run_two([shared, shared], counts=(2, 3)):
        assert status == 1, err[-2000:]
        assert "--num-processes differs between the processes (process 0: 2, process 1: 3); 2 joined" in err, err[-2000:]


def test_joining_waits_as_long_as_asked(tmp_path, capsys):
    """A process whose coordinator never answers stops after --join-timeout with one line (not after JAX's five
    minutes with a stack trace), before anything is written; a coordinator whose peers never come gives up as
    soon too (jax.distributed itself stops it)."""
    port, workdir = free_port(), tmp_path / "run"
    joining = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--join-timeout", "2"]
    assert cli_main(["train", "--config", SMOKE, "--workdir", str(workdir), *joining, "--process-id", "1"]) == 1
    err = capsys.readouterr().err
    assert f"process 1 of 2 joining at 127.0.0.1:{port} (waiting up to 2 s" in err
    assert f"--coordinator 127.0.0.1:{port}: no coordinator answered in 2 s (is process 0 running there?)" in err
    assert not workdir.exists()

    coordinator = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", SMOKE, "--workdir", str(workdir), *joining,
         "--process-id", "0"], env={**os.environ, "JAX_PLATFORMS": "cpu"}, cwd=ROOT, capture_output=True, text=True,
        timeout=120)
    assert coordinator.returncode != 0 and "DEADLINE_EXCEEDED" in coordinator.stderr, coordinator.stderr[-2000:]
    assert not workdir.exists()


def test_a_signal_to_one_process_stops_all_at_the_same_step(tmp_path):
    """SIGTERM to process 1 alone: both processes stop after the same step, save it and exit with 143, process 0
    saying that another process was signalled. The processes agree on a stop only at steps that wait anyway (here
    each epoch's end, every 8 steps) and every trainer.STOP_POLL_STEPS (10) steps."""
    import re
    import signal
    import time

    from ast_jax.training.trainer import STOP_POLL_STEPS

    port, workdir = free_port(), tmp_path / "run"
    long_run = ["--config.progress_bar=False", "--config.log_every_steps=1000", "--config.num_epochs=40",
                "--config.eval_every_steps=1000", "--config.checkpoint.every_steps=1000"]
    processes = [subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--config", SMOKE, "--workdir", str(workdir), *long_run,
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
        env={**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 200
    while time.time() < deadline and not list((workdir / "checkpoints").glob("8")):
        if processes[0].poll() is not None or processes[1].poll() is not None:  # one ended: stop the other too
            for process in processes:
                process.kill()
            raise AssertionError("\n".join(process.communicate()[1][-2000:] for process in processes))
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=200) for p in processes]
    stopped_at = []
    for i, (process, (_, err)) in enumerate(zip(processes, outputs)):
        cause = "a signal to another process" if i == 0 else "SIGTERM"
        found = re.search(f"stopped by {cause} at step (\\d+); checkpoint saved", err)
        assert process.returncode == 143 and found, err[-2000:]
        stopped_at.append(int(found.group(1)))
    step = stopped_at[0]
    assert stopped_at == [step, step] and step < 320
    assert step % 8 == 0 or step % STOP_POLL_STEPS == 0, step
    assert (workdir / "checkpoints" / str(step)).is_dir()
