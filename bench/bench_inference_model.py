"""Inference speed of the AST-base Speech Commands model: jitted ast-jax against transformers, same CPU.

Both run on the same random weights (converted from the transformers model) and the same input, with the same
number of threads and the same compute dtype (float32, or bfloat16 with --dtype: ast-jax's model dtype, and the
transformers model cast with .to(torch.bfloat16)); the table gives clips per second and the ratio
ast-jax / transformers. Each side's figure is its median call (after two warm-up calls), the sides taking turns in
four slices of --seconds / 4 each, each slice starting with an untimed call, so that a change in the machine's
load falls on both. transformers runs
eagerly, as its pipeline does; ast-jax asks for logits only, as `ast-jax predict` does, so its last block computes
just the two tokens the head reads (the same logits: the run fails if they differ by more than 1e-4 in float32,
0.05 in bfloat16). The random weights include the tokens and position table (bench/_models.py).

    python bench/bench_inference_model.py [--threads N] [--batches 1 8 32] [--seconds 5] [--dtype bfloat16]
                                          [--torch-compile] [--torch-onednn]

--torch-compile runs the transformers model through torch.compile (inductor) instead of eagerly.
--torch-onednn gives the transformers model oneDNN linear layers (float32 only; bench/_models.py, onednn_linears).
"""

import argparse
import os
import sys
import tempfile
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads (cores) for both frameworks")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per framework and batch")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="compute dtype of both")
    parser.add_argument("--torch-compile", action="store_true", help="torch.compile the transformers model")
    parser.add_argument("--torch-onednn", action="store_true",
                        help="the transformers model's linear layers multiplied by oneDNN instead of MKL (float32)")
    args = parser.parse_args()
    if args.torch_onednn and args.dtype != "float32":
        parser.error("--torch-onednn is for float32")
    cores = len(os.sched_getaffinity(0))
    if not 1 <= args.threads <= cores:  # more would give torch threads that XLA, pinned to the cores, cannot have
        parser.error(f"--threads must be between 1 and the {cores} cores this process may use, got {args.threads}")
    return args


args = parse_args()
# Same threads for both: XLA sizes its CPU thread pool from the cores this process may use, so the process is
# pinned to `threads` cores (before jax starts) and torch is told the same number.
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from _models import onednn_linears, random_ast  # noqa: E402
from ast_jax.convert import load_pretrained  # noqa: E402
from ast_jax.model import compute_copy  # noqa: E402


SLICES = 4


def timed_calls(run, seconds: float) -> list[float]:
    """One untimed call (the other side's threads wind down meanwhile), then the durations of the calls that
    `seconds` hold (at least one)."""
    run()
    spent = []
    deadline = time.perf_counter() + seconds
    while not spent or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        spent.append(time.perf_counter() - start)
    return spent


def clips_per_second(runs: dict, batch: int, seconds: float) -> dict:
    """Each side's clips per second at its median call, after two warm-up calls (compilation and caches), the
    sides taking turns in `SLICES` slices of their time (the median does not favour the side with more calls,
    as the fastest call would)."""
    for run in runs.values():
        for _ in range(2):
            run()
    spent = {name: [] for name in runs}
    for k in range(SLICES):
        for name in (list(runs) if k % 2 == 0 else list(runs)[::-1]):
            spent[name] += timed_calls(runs[name], seconds / SLICES)
    return {name: batch / float(np.median(times)) for name, times in spent.items()}


def main() -> int:
    torch.set_num_threads(args.threads)
    config = transformers.ASTConfig(max_length=128, num_labels=35)  # AST-base, Speech Commands geometry
    reference = random_ast(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        model = load_pretrained(folder, dtype=args.dtype)
    reference = reference.to(getattr(torch, args.dtype))
    if args.torch_onednn:
        onednn_linears(reference)
    if args.torch_compile:
        reference = torch.compile(reference)
    # Logits only, as `ast-jax predict` asks for them: the last block then computes just the two tokens the
    # classifier reads (return_tokens=False), work transformers always does in full.
    forward = jax.jit(lambda params, x: model.model.apply({"params": params}, x, return_tokens=False)[0])
    params = jax.device_put(compute_copy(model.params, model.config.compute_dtype))  # as the Predictor keeps them

    print(f"AST-base, Speech Commands geometry (128 frames x 128 mel bins, 35 labels), {args.dtype}, CPU, "
          f"{args.threads} threads (process pinned to them; torch.set_num_threads), jax {jax.__version__}, "
          f"torch {torch.__version__}, transformers {transformers.__version__} "
          f"(attention: {reference.config._attn_implementation}{', torch.compile' * args.torch_compile}"
          f"{', oneDNN linear layers' * args.torch_onednn}); "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'batch':>5}  {'transformers clips/s':>20}  {'ast-jax clips/s':>15}  {'ratio':>6}  {'max |dlogit|':>12}")
    for batch in args.batches:
        x = np.random.default_rng(batch).standard_normal((batch, 128, 128)).astype(np.float32)
        x_torch, x_jax = torch.from_numpy(x).to(reference.dtype), jax.device_put(x)

        def run_torch():
            with torch.inference_mode():
                return reference(x_torch).logits

        def run_jax():
            return forward(params, x_jax).block_until_ready()

        difference = np.abs(np.asarray(run_jax()) - run_torch().float().numpy()).max()
        if not difference <= (1e-4 if args.dtype == "float32" else 0.05):
            raise SystemExit(f"batch {batch}: the logits differ by {difference:.2e}: not the same computation")
        speed = clips_per_second({"theirs": run_torch, "ours": run_jax}, batch, args.seconds)
        theirs, ours = speed["theirs"], speed["ours"]
        print(f"{batch:>5}  {theirs:>20.1f}  {ours:>15.1f}  {ours / theirs:>5.2f}x  {difference:>12.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
