"""Live keyword spotting: how long after the end of each window `ast-jax predict --window ... -` answers.

A writer thread plays a WAV stream into the command's standard input at real-time speed (0.1 s pieces, each
written when its audio would have been recorded), with the header a recorder writes to a pipe (unknown
length); the command classifies 1 s windows every 0.25 s and writes JSON lines. For every row the delay is
the time it arrived minus the time the piece holding the last sample of its window was written (a window that
ends mid-piece, at .25 or .75 s, waited up to 50 ms before that for its piece, as behind any recorder that
writes in pieces). AST-base with random weights
in the Speech Commands geometry (the weights do not change the time), compiled afresh (no compilation cache),
as on a first run. There is no peer to compare with: transformers' pipeline has no streaming input.

    .venv/bin/python bench/bench_stream_latency.py [--seconds 12] [--window 1.0] [--hop 0.25]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
PIECE = 0.1  # seconds of audio per write


def ast_base_folder(folder: Path) -> Path:
    """A converted AST-base (random weights, 128 frames, 35 labels) in `folder`."""
    import transformers

    from _models import random_ast
    from ast_jax.convert import load_pretrained

    model = random_ast(transformers.ASTConfig(max_length=128, num_labels=35))
    model.save_pretrained(folder / "hf")
    transformers.ASTFeatureExtractor(max_length=128).save_pretrained(folder / "hf")
    load_pretrained(folder / "hf").save(folder / "model")
    return folder / "model"


def recorder_stream(seconds: float) -> tuple[bytes, bytes]:
    """(header, samples) of a 16-bit WAV of noise whose header leaves the length open, as `arecord` writes."""
    buffer = io.BytesIO()
    noise = 0.1 * np.random.default_rng(0).standard_normal(int(seconds * RATE))
    sf.write(buffer, noise.astype(np.float32), RATE, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    start = data.find(b"data")
    data[4:8] = data[start + 4:start + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    return bytes(data[:start + 8]), bytes(data[start + 8:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12.0, help="length of the stream")
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--hop", type=float, default=0.25)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        model = ast_base_folder(Path(folder))
        header, samples = recorder_stream(args.seconds)
        command = [sys.executable, "-m", "ast_jax", "predict", "--model", str(model), "--window", str(args.window),
                   "--hop", str(args.hop), "--format", "jsonl", "-"]
        errors = open(Path(folder) / "predict.stderr", "w+")
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=errors, env={**os.environ, "AST_JAX_COMPILATION_CACHE": "off"})
        written = {}  # seconds of audio written -> when

        def play():
            try:
                process.stdin.write(header)
                process.stdin.flush()
                start = time.perf_counter()
                step = int(PIECE * RATE) * 2
                for begin in range(0, len(samples), step):
                    end = begin + step
                    time.sleep(max(0.0, start + end / 2 / RATE - time.perf_counter()))  # recorded by then
                    written[round(min(end, len(samples)) / 2 / RATE, 6)] = time.perf_counter()
                    process.stdin.write(samples[begin:end])
                    process.stdin.flush()
                process.stdin.close()
            except BrokenPipeError:  # predict stopped early: its exit status and message are reported below
                pass

        player = threading.Thread(target=play)
        player.start()
        delays = []
        for line in process.stdout:
            arrived = time.perf_counter()
            row = json.loads(line)
            # the piece that completed this window
            when = min(t for seconds, t in list(written.items()) if seconds >= row["end"] - 1e-6)
            delays.append(arrived - when)
        player.join()
        if process.wait() != 0:
            errors.seek(0)
            last = (errors.read().strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"ast-jax predict failed (exit status {process.returncode}): {last}")
        errors.close()

    delays = np.array(delays) * 1e3
    steady = delays[len(delays) // 2:]  # the first window's compilation caught up
    print(f"AST-base, {args.window:g} s windows every {args.hop:g} s, a {args.seconds:g} s stream played in real "
          f"time, {PIECE:g} s pieces")
    print("| window | delay after its last sample (ms) |")
    print("| ---: | ---: |")
    for index, delay in enumerate(delays):
        print(f"| {index} | {delay:.0f} |")
    print(f"first window (compiling): {delays[0]:.0f} ms; second half of the windows: median "
          f"{np.median(steady):.0f} ms, max {steady.max():.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
