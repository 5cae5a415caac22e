"""Files to results: `ast-jax predict`'s code path against transformers' audio-classification pipeline.

Both classify the same real Speech Commands clips (../shared/data/speech_commands_test_v0.02_dev) with the same
random weights in the released Speech Commands geometry (AST-base, 128 frames, 35 labels), on the same CPU:
  ast-jax       ast_jax.pipeline(model).predict_files(paths), what `ast-jax predict` runs: threads decode
                while the device computes; features, model and softmax in one jitted function; the time
                includes compiling it
  transformers  pipeline("audio-classification", model=folder, device="cpu")(waveforms, batch_size=B), the
                files read with soundfile inside the timed region (this machine has no ffmpeg, which the
                pipeline would otherwise use to read paths)
It prints clips per second of each, their ratio, and how far the two agree (top-1 label, max score difference).

    .venv/bin/python bench/bench_predict.py [--clips 1000] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "speech_commands_test_v0.02_dev"
# The released Speech Commands head's label order (AST_FACTS.md, section 5).
SPEECH_COMMANDS_LABELS = (
    "backward follow five bed zero on learn two house tree dog stop seven eight down six forward cat right visual "
    "four wow no nine off three left marvin yes up sheila happy bird go one").split()


def clip_paths(count: int) -> list[str]:
    """`count` clips spread evenly over the sorted file list (every class and speaker group represented)."""
    files = sorted(str(p) for p in DATA.resolve().rglob("*.wav"))
    if len(files) < count:
        raise SystemExit(f"{DATA}: {len(files)} clips, fewer than {count}")
    return [files[i] for i in np.linspace(0, len(files) - 1, count).round().astype(int)]


def write_hf_model(folder: Path) -> None:
    """A transformers AST in the Speech Commands geometry with random weights, and its feature extractor."""
    import torch
    import transformers

    from ast_jax.features import FeatureConfig

    torch.manual_seed(0)
    config = transformers.ASTConfig(max_length=128, num_mel_bins=128, id2label=dict(enumerate(SPEECH_COMMANDS_LABELS)),
                                    label2id={name: i for i, name in enumerate(SPEECH_COMMANDS_LABELS)})
    transformers.ASTForAudioClassification(config).eval().save_pretrained(folder)
    features = FeatureConfig.for_dataset("speech_commands")
    transformers.ASTFeatureExtractor(max_length=128, num_mel_bins=128, mean=features.mean,
                                     std=features.std).save_pretrained(folder)


def run_ast_jax(folder: Path, paths: list[str], batch_size: int, workers: int):
    from ast_jax.convert import load_pretrained
    from ast_jax.inference import pipeline

    start = time.perf_counter()
    classify = pipeline(load_pretrained(str(folder)), batch_size=batch_size, activation="softmax", workers=workers)
    loaded = time.perf_counter()
    results = [out["labels"] for _, out in classify.predict_files(paths, top_k=5)]
    return results, {"load": loaded - start, "total": time.perf_counter() - loaded}


def run_transformers(folder: Path, paths: list[str], batch_size: int):
    import transformers

    start = time.perf_counter()
    classify = transformers.pipeline("audio-classification", model=str(folder), device="cpu")
    loaded = time.perf_counter()
    waveforms = [sf.read(path, dtype="float32")[0] for path in paths]
    results = classify(waveforms, batch_size=batch_size, top_k=5)
    return results, {"load": loaded - start, "total": time.perf_counter() - loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4, help="ast-jax decoding threads")
    args = parser.parse_args()

    import jax
    import torch

    paths = clip_paths(args.clips)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ast-sc-random"
        write_hf_model(folder)
        ours, ours_time = run_ast_jax(folder, paths, args.batch_size, args.workers)
        theirs, theirs_time = run_transformers(folder, paths, args.batch_size)

    top1 = np.mean([a[0]["label"] == b[0]["label"] for a, b in zip(ours, theirs)])
    score_diff = max(abs(x["score"] - y["score"]) for a, b in zip(ours, theirs) for x, y in zip(a, b)
                     if x["label"] == y["label"])
    n = len(paths)
    print(f"{n} clips, batch {args.batch_size}, CPU: {os.cpu_count()} cores; jax {jax.__version__} "
          f"({jax.devices()[0].platform}), torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print("| files -> results | load model (s) | classify (s) | clips/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, t in (("ast-jax predict", ours_time), ("transformers pipeline", theirs_time)):
        print(f"| {name} | {t['load']:.1f} | {t['total']:.1f} | {n / t['total']:.2f} |")
    print(f"| speed-up of ast-jax | | | {theirs_time['total'] / ours_time['total']:.2f}x |")
    print(f"agreement: top-1 label {top1:.1%}, max score difference {score_diff:.2e}")


if __name__ == "__main__":
    main()
