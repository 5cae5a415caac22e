"""Files to results: `ast-jax predict`'s code path against transformers' audio-classification pipeline.

Both classify the same real Speech Commands clips (../shared/data/speech_commands_test_v0.02_dev) with the same
random weights in the released Speech Commands geometry (AST-base, 128 frames, 35 labels), on the same CPU:
  ast-jax       ast_jax.pipeline(model).predict_files(paths), what `ast-jax predict` runs, at its default batch
                (6 on CPU), split across two CPU devices as the command splits it (ast_jax/_cpu_devices.py; set
                JAX_NUM_CPU_DEVICES=1 for one): threads decode while the device computes; features, model and
                softmax in one jitted function; the time includes compiling it
  transformers  pipeline("audio-classification", model=folder, device="cpu")(waveforms, batch_size=16), its
                best batch on this CPU (192 clips, two runs each: 6.1 clips/s at 8, 6.1-6.5 at 12, 6.3-6.5 at
                16, 6.3-6.5 at 24, 6.2 at 32); the files read with soundfile inside the timed region (this
                machine has no ffmpeg, which the pipeline would otherwise use to read paths)
It prints clips per second of each, their ratio, and how far the two agree (top-1 label, max score difference),
and fails, before printing a speed-up, when they do not agree (float32: the same top label on 99% of clips,
scores within 1e-4; bfloat16: 90% and 4e-3). The random weights include the tokens and position table
(bench/_models.py), so that a model reading its patches in another order would not agree. The sides
take turns going first in the rounds. Without torchaudio (which does not install here), ASTFeatureExtractor
computes the pipeline's features with numpy frame by frame, a few ms a clip; with it, torchaudio's vectorised
Kaldi fbank would make the pipeline a few per cent faster.
With --dtype bfloat16 both compute in bfloat16 (ast-jax predict --dtype bfloat16; the transformers pipeline with
dtype=torch.bfloat16, which casts the features too): fast on CPUs with AVX512-BF16 or AMX, and close to float32
rather than equal, so the two then agree less closely.
With --theirs-onednn the pipeline's model has oneDNN linear layers in place of PyTorch's (float32 only;
bench/_models.py, onednn_linears): a hand tuning that transformers does not make, which doubles PyTorch's matrix
products on AMD CPUs with 512-bit multiply-add units (Zen 5), where MKL's products run at the rate of 256-bit ones.

    .venv/bin/python bench/bench_predict.py [--clips 1000] [--batch-size B] [--theirs-batch-size 16] [--rounds 5]
                                            [--dtype float32|bfloat16] [--theirs-onednn]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "speech_commands_test_v0.02_dev"


def clip_paths(count: int) -> list[str]:
    """`count` clips spread evenly over the sorted file list (every class and speaker group represented)."""
    files = sorted(str(p) for p in DATA.resolve().rglob("*.wav"))
    if len(files) < count:
        raise SystemExit(f"{DATA}: {len(files)} clips, fewer than {count}")
    return [files[i] for i in np.linspace(0, len(files) - 1, count).round().astype(int)]


def rounds(paths: list[str], count: int, unit: int) -> list[list[str]]:
    """`paths` cut into `count` consecutive parts whose sizes (all but the last) are multiples of `unit`.

    With `unit` a multiple of both batch sizes, no part ends in a padded batch that one call over all the files
    would not have: ast-jax pads its last batch to the compiled size, and 200-clip parts at batch 6 would add
    four padded rows a part (2% of the work) that a single run of 1,000 files does not do.
    """
    edges = (np.linspace(0, len(paths) // unit, count + 1).round().astype(int) * unit).tolist()
    edges[-1] = len(paths)
    return [paths[start:stop] for start, stop in zip(edges[:-1], edges[1:]) if stop > start]


def largest_score_difference(ours: list[list[dict]], theirs: list[list[dict]]) -> float:
    """The largest difference in a label's score between the sides, over the labels both put in a clip's top 5
    (compared by name; inf where a clip's two top 5 share no label)."""
    largest = 0.0
    for a, b in zip(ours, theirs):
        scores = {y["label"]: y["score"] for y in b}
        largest = max(largest, max((abs(x["score"] - scores[x["label"]]) for x in a if x["label"] in scores),
                                   default=math.inf))
    return largest


def write_hf_model(folder: Path) -> None:
    """A transformers AST in the Speech Commands geometry with random weights, and its feature extractor."""
    import transformers

    from _models import random_ast
    from ast_jax.data.speech_commands import LABELS_35
    from ast_jax.features import FeatureConfig

    config = transformers.ASTConfig(max_length=128, num_mel_bins=128, id2label=dict(enumerate(LABELS_35)),
                                    label2id={name: i for i, name in enumerate(LABELS_35)})
    random_ast(config).eval().save_pretrained(folder)
    features = FeatureConfig.for_dataset("speech_commands")
    transformers.ASTFeatureExtractor(max_length=128, num_mel_bins=128, mean=features.mean,
                                     std=features.std).save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=None, help="ast-jax's (default: ast-jax predict's)")
    parser.add_argument("--theirs-batch-size", type=int, default=16, help="the transformers pipeline's")
    parser.add_argument("--rounds", type=int, default=5,
                        help="the clips are cut into this many parts (at multiples of both batch sizes), each "
                             "classified by one side then the other, so that a change in the machine's load falls on "
                             "both alike")
    parser.add_argument("--workers", type=int, default=4, help="ast-jax decoding threads")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="both sides' compute dtype")
    parser.add_argument("--theirs-onednn", action="store_true",
                        help="the pipeline's linear layers multiplied by oneDNN instead of MKL (float32)")
    args = parser.parse_args()
    if args.theirs_onednn and args.dtype != "float32":
        parser.error("--theirs-onednn is for float32")

    from ast_jax import _cpu_devices

    _cpu_devices.configure()  # before JAX starts: the CPU devices `ast-jax predict` computes on

    import jax
    import torch
    import transformers

    from ast_jax.convert import load_pretrained
    from ast_jax.inference import pipeline

    paths = clip_paths(args.clips)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ast-sc-random"
        write_hf_model(folder)
        start = time.perf_counter()
        ours = pipeline(load_pretrained(str(folder)), batch_size=args.batch_size, activation="softmax",
                        dtype=args.dtype, workers=args.workers)
        ours_load = time.perf_counter() - start
        start = time.perf_counter()
        theirs = transformers.pipeline("audio-classification", model=str(folder), device="cpu",
                                       dtype=getattr(torch, args.dtype))
        if args.theirs_onednn:
            from _models import onednn_linears

            onednn_linears(theirs.model)
        theirs_load = time.perf_counter() - start

    ours_results, theirs_results = [], []
    ours_time = theirs_time = 0.0
    parts = rounds(paths, args.rounds, math.lcm(ours.predictor.batch_size, args.theirs_batch_size))
    if len(parts) < args.rounds:
        print(f"{len(paths)} clips make {len(parts)} rounds of whole batches of both sides, not {args.rounds}")

    def run_ours(chunk):  # the first part includes compiling ast-jax's function
        return [out["labels"] for _, out in ours.predict_files(chunk, top_k=5)]

    def run_theirs(chunk):
        return theirs([sf.read(path, dtype="float32")[0] for path in chunk], batch_size=args.theirs_batch_size,
                      top_k=5)

    for round_index, chunk in enumerate(parts):
        spent = {}
        # the sides take turns going first, so that what one leaves behind (warm caches, threads winding
        # down) does not always fall on the same side
        for side in ((run_ours, run_theirs) if round_index % 2 == 0 else (run_theirs, run_ours)):
            start = time.perf_counter()
            result = side(chunk)
            spent[side] = time.perf_counter() - start, result
        (ours_round, ours_part), (theirs_round, theirs_part) = spent[run_ours], spent[run_theirs]
        ours_results += ours_part
        theirs_results += theirs_part
        ours_time, theirs_time = ours_time + ours_round, theirs_time + theirs_round
        print(f"round {round_index + 1}/{len(parts)}: {len(chunk)} clips, ast-jax {ours_round:.1f} s, "
              f"transformers {theirs_round:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)

    top1 = np.mean([a[0]["label"] == b[0]["label"] for a, b in zip(ours_results, theirs_results)])
    score_diff = largest_score_difference(ours_results, theirs_results)
    print(f"agreement: top-1 label {top1:.1%}, max score difference {score_diff:.2e}")
    # Checked before any speed-up is printed. The weights are random, so the softmax is near uniform (about 1/35
    # a label): float32 must agree closely on every clip; bfloat16 rounds the logits (up to about 0.02), which
    # can swap near-tied labels and moves scores by about 1e-3.
    least_top1, most_diff = (0.99, 1e-4) if args.dtype == "float32" else (0.9, 4e-3)
    if top1 < least_top1 or score_diff > most_diff:
        raise SystemExit(f"the two sides disagree (top-1 {top1:.1%}, at least {least_top1:.0%} needed; score "
                         f"difference {score_diff:.2e}, at most {most_diff} allowed): the timing compares "
                         "different computations")
    n = len(paths)
    print(f"{n} clips, {args.dtype}, batch {ours.predictor.batch_size} over {len(ours.predictor.devices)} device(s) "
          f"(ast-jax) / {args.theirs_batch_size} (transformers), "
          f"{len(parts)} alternating rounds, CPU: {os.cpu_count()} cores "
          f"(load average {os.getloadavg()[0]:.1f}); jax {jax.__version__} ({jax.devices()[0].platform}), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    print("| files -> results | load model (s) | classify (s) | clips/s |")
    print("| --- | ---: | ---: | ---: |")
    theirs_name = "transformers pipeline" + " (oneDNN linear layers)" * args.theirs_onednn
    for name, load, total in (("ast-jax predict", ours_load, ours_time), (theirs_name, theirs_load, theirs_time)):
        print(f"| {name} | {load:.1f} | {total:.1f} | {n / total:.2f} |")
    print(f"| speed-up of ast-jax | | | {theirs_time / ours_time:.2f}x |")

if __name__ == "__main__":
    main()
