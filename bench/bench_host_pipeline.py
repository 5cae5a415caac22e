"""Host input pipeline: one-second clips per second delivered as training batches, decoding vs prepared copy.

    .venv/bin/python bench/bench_host_pipeline.py [--clips 4000] [--batch-size 128] [--seconds 5]

Builds a raw folder of 16 kHz 16-bit WAV clips (the demo set's clips, repeated) in a temporary directory,
then times `DataSource.batches` (shuffled, as in training) three ways: decoding the files for every batch,
reading the prepared int16 copy (a memory map), and the same through the background `prefetch` thread.
The goal is 10,000 clips/s: enough for one host to feed one GPU running the Speech Commands recipe. There is
no outside peer: the slow row is ast-jax's own decoding path. The files were just written, so they are read
from the page cache: disk reads are not timed (a cold copy of 4,000 clips is 128 MB, read once per epoch).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
from ml_collections import ConfigDict

from ast_jax.data import build_source, prefetch
from ast_jax.data.demo import demo_dir

GOAL = 10_000


def make_wav_folder(root: Path, clips: int) -> None:
    sources = sorted(demo_dir().glob("train/*/*.flac"))
    for n in range(clips):
        path = sources[n % len(sources)]
        target = root / path.parent.name / f"{n:06d}_{path.stem}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        samples, rate = soundfile.read(path, dtype="int16")
        soundfile.write(target, samples, rate, subtype="PCM_16")


def clips_per_second(batches, seconds: float) -> tuple[float, int]:
    delivered, start = 0, time.perf_counter()
    for batch in batches:
        delivered += int(batch["valid"].sum())
        if time.perf_counter() - start > seconds:
            break
    return delivered / (time.perf_counter() - start), delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if not 1 <= args.batch_size <= args.clips or args.seconds <= 0:
        parser.error(f"need 1 <= --batch-size <= --clips and --seconds > 0 (got batch {args.batch_size}, "
                     f"{args.clips} clips, {args.seconds} s): an epoch keeps only whole batches")

    work = Path(tempfile.mkdtemp(prefix="ast_jax_bench_"))
    try:
        make_wav_folder(work / "wav", args.clips)
        config = dict(source="folder", data_dir=str(work / "wav"), cache_dir=str(work / "cache"),
                      validation_fraction=0.0, test_fraction=0.0)
        decoding = build_source(ConfigDict({**config, "prepared": False}))
        prepared = build_source(ConfigDict(config))
        start = time.perf_counter()
        prepared.prepare("train")
        prepare_seconds = time.perf_counter() - start

        def epochs(source):
            for epoch in range(10 ** 6):
                yield from source.batches("train", batch_size=args.batch_size, shuffle=True, epoch=epoch,
                                          drop_remainder=True)

        rows = [
            ("decode WAV files per batch", *clips_per_second(epochs(decoding), args.seconds)),
            ("prepared copy (memory map)", *clips_per_second(epochs(prepared), args.seconds)),
            ("prepared copy + prefetch thread", *clips_per_second(prefetch(epochs(prepared)), args.seconds)),
        ]
        print(f"host pipeline, {os.cpu_count()} CPU cores, batch {args.batch_size}, 1 s clips at 16 kHz "
              f"({args.clips} clips; preparing them took {prepare_seconds:.1f} s, "
              f"{args.clips / prepare_seconds:,.0f} clips/s)")
        print(f"| pipeline | clips/s | clips timed | goal {GOAL:,} |")
        print("| --- | ---: | ---: | --- |")
        for name, rate, count in rows:
            print(f"| {name} | {rate:,.0f} | {count:,} | {'met' if rate >= GOAL else 'not met'} |")
        audio = next(prepared.batches("train", batch_size=args.batch_size))["audio"]
        assert audio.shape == (args.batch_size, 16000) and np.abs(audio).max() <= 1.0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
