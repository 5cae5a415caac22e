"""Train-step throughput: the ast-jax update step against the PyTorch reference step, same model and batch.

Both sides take precomputed input_values (features and augmentation off) and do forward, BCE loss, backward
and an Adam(lr=2.5e-4, weight_decay=5e-7, betas=(0.95, 0.999)) update of every parameter, from the same start
weights (a random transformers model, saved and read by both):
  ast-jax   `ast_jax.training.trainer.make_train_step`, jitted as the trainer does (state donated, its XLA options)
  PyTorch   transformers ASTForAudioClassification + torch.optim.Adam, as the original recipe steps (eager; Adam's
            default on CPU updates the parameters one by one), and with Adam(fused=True), PyTorch's fastest on CPU
Default geometry: AST-base on Speech Commands (768 wide, 12 layers, 128 frames x 128 bins, 146 tokens, 35 labels).
The losses of the first three steps (before any update, after one and after two, so that Adam's moments count)
are compared across the sides before any timing: a step that computed something else would not be a faster
step. The benchmark fails when they differ by more than 1e-4. The start weights are random everywhere, the
tokens and position table included (bench/_models.py). The sides take turns in a different order each round.

    python bench/bench_train_step.py [--batch 8] [--steps 6] [--layers 12] [--rounds 2]

Each side runs in its own process, in the environment its users run it in (bench/_turns.py): ast-jax as
train.py / `ast-jax train` run it (glibc's hugetlb malloc tunable on CPU, ast_jax/_host_memory.py), PyTorch as
the environment is. A third row, ast-jax without the tunable, shows what the tunable is worth. The sides take
turns in blocks of steps, `--rounds` times; each reports its median step time.

It also prints the FLOPs XLA counts for the step and what they imply for one H200 (no GPU was used here).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from _turns import AST_JAX_ENV, PLAIN_ENV, Worker, serve

H200_BF16_DENSE_FLOPS = 989e12  # datasheet dense bf16
H200_BF16_MEASURED_FLOPS = 790e12  # what a large bf16 matrix product reaches in practice
LABELS, FRAMES, BINS = 35, 128, 128
SIDES = (  # worker name, environment, row label
    ("ast-jax", AST_JAX_ENV, "ast-jax (jit, donated state)"),
    ("ast-jax-plain", PLAIN_ENV, "ast-jax, without the malloc tunable"),
    ("pytorch", PLAIN_ENV, "transformers + torch.optim.Adam"),
    ("pytorch-fused", PLAIN_ENV, "transformers + Adam(fused=True)"),
)
LOSS_TOLERANCE = 1e-4


def batch_arrays(batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((batch, FRAMES, BINS)).astype(np.float32)
    targets = (rng.uniform(size=(batch, LABELS)) < 0.1).astype(np.float32)
    return inputs, targets


def hf_config(layers: int):
    from transformers import ASTConfig as HFConfig

    return HFConfig(hidden_size=768, num_hidden_layers=layers, num_attention_heads=12, intermediate_size=3072,
                    max_length=FRAMES, num_mel_bins=BINS, num_labels=LABELS, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)


def write_start(folder: str, layers: int) -> None:
    """The start weights of every side: a random transformers model (seed 0) as a Hugging Face folder."""
    from transformers import ASTFeatureExtractor

    from _models import random_ast

    random_ast(hf_config(layers)).save_pretrained(folder)
    ASTFeatureExtractor(max_length=FRAMES, num_mel_bins=BINS).save_pretrained(folder)


def jax_side(args):
    """The ast-jax step; info: parameter count, FLOPs per clip, versions."""
    import jax
    import jax.numpy as jnp

    from ast_jax.convert import load_pretrained
    from ast_jax.model import AST, count_parameters
    from ast_jax.training.optim import make_optimizer
    from ast_jax.training.trainer import default_config, make_train_step, step_compiler_options

    inputs, targets = batch_arrays(args.batch)
    start = load_pretrained(args.start)
    config, params = start.config, start.params
    optimizer, schedule = make_optimizer(default_config(), steps_per_epoch=1000)
    step_fn = make_train_step(AST(config), optimizer, schedule, "bce", lambda _, b: (b["audio"], b["targets"]),
                              jax.random.PRNGKey(0))
    jitted = jax.jit(step_fn, donate_argnums=0, compiler_options=step_compiler_options(jax.default_backend()))
    batch = {"audio": jnp.asarray(inputs), "targets": jnp.asarray(targets), "valid": jnp.ones(args.batch, bool)}
    state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
    compiled = jitted.lower(state, batch).compile()  # compiled once: the step runs this executable
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    info = {"parameters": count_parameters(params), "flops_per_clip": float(cost.get("flops", 0.0)) / args.batch,
            "version": f"jax {jax.__version__}"}

    def step():
        nonlocal state
        state, metrics = compiled(state, batch)
        return metrics["loss"].block_until_ready()

    return info, step


def torch_side(args):
    """The PyTorch reference step."""
    import torch
    from transformers import ASTForAudioClassification

    torch.set_num_threads(os.cpu_count())
    inputs, targets = (torch.tensor(a) for a in batch_arrays(args.batch))
    model = ASTForAudioClassification.from_pretrained(args.start).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2.5e-4, weight_decay=5e-7, betas=(0.95, 0.999),
                                 fused=args.worker == "pytorch-fused")
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(inputs).logits, targets)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return {"version": f"torch {torch.__version__}"}, step


def worker(args) -> None:
    def setup():
        info, step = (torch_side if args.worker.startswith("pytorch") else jax_side)(args)
        info["losses"] = [float(step()) for _ in range(3)]  # compile / warm up; before and after one, two updates

        def run_block(steps: int) -> list[float]:
            # The first step of a block is not timed: it shares the CPU with the other side's worker threads as
            # they wind down (torch's OpenMP threads keep spinning a while after a step).
            step()
            spent = []
            for _ in range(steps):
                start = time.perf_counter()
                step()
                spent.append(time.perf_counter() - start)
            return spent

        return info, run_block

    serve(setup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per side, over all rounds")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="turns each side takes")
    parser.add_argument("--worker", choices=[name for name, _, _ in SIDES], help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)  # the start weights' folder, for a worker
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    with tempfile.TemporaryDirectory(prefix="bench-train-start-") as start:
        write_start(start, args.layers)
        passed = ["--batch", str(args.batch), "--layers", str(args.layers), "--start", start]
        workers = [Worker(__file__, name, passed, env) for name, env, _ in SIDES]
    losses = {w.name: w.info["losses"] for w in workers}
    gap = max(abs(a - b) for side in losses.values() for a, b in zip(side, losses["pytorch"]))
    print("losses of the first three steps: " + "; ".join(
        f"{name} " + " ".join(f"{loss:.6f}" for loss in side) for name, side in losses.items())
        + f"; largest difference {gap:.1e}", flush=True)
    if gap > LOSS_TOLERANCE:
        for w in workers:
            w.close()
        raise SystemExit(f"the sides' losses differ by {gap:.1e} (more than {LOSS_TOLERANCE}): not the same step")
    per_block = max(1, -(-args.steps // args.rounds))
    times = {w.name: [] for w in workers}
    for round_index in range(args.rounds):
        for w in (workers if round_index % 2 == 0 else workers[::-1]):
            times[w.name] += w(per_block)
    for w in workers:
        w.close()
    seconds = {name: float(np.median(spent)) for name, spent in times.items()}

    jax_info, torch_info = workers[0].info, workers[-1].info
    print(f"AST-base train step, {args.layers} layers, {jax_info['parameters']:,} parameters, batch {args.batch}, "
          f"input {FRAMES}x{BINS}, float32, {os.cpu_count()} CPU cores, {jax_info['version']}, "
          f"{torch_info['version']}; {args.rounds} turns of {per_block} steps each")
    print(f"{'implementation (median step)':<42}{'GLIBC_TUNABLES':<26}{'s/step':>8}{'clips/s':>9}")
    for (name, _, label), w in zip(SIDES, workers):
        print(f"{label:<42}{w.tunables:<26}{seconds[name]:>8.3f}{args.batch / seconds[name]:>9.2f}")
    best_torch = min(seconds["pytorch"], seconds["pytorch-fused"])
    print(f"speed-up ast-jax / PyTorch at its best: {best_torch / seconds['ast-jax']:.2f}x (goal >= 1.1x; "
          f"against the default Adam {seconds['pytorch'] / seconds['ast-jax']:.2f}x); without the malloc tunable "
          f"{best_torch / seconds['ast-jax-plain']:.2f}x")
    flops_per_clip = jax_info["flops_per_clip"]
    if flops_per_clip:
        datasheet, measured = (0.45 * peak / flops_per_clip
                               for peak in (H200_BF16_DENSE_FLOPS, H200_BF16_MEASURED_FLOPS))
        print(f"XLA counts {flops_per_clip / 1e9:.1f} GFLOP per clip for this step (about 3 x 23.6 expected for 12 "
              f"layers: a forward whose last block computes only the two tokens the head reads). At 45% of one "
              f"H200's bf16 peak (model.dtype=bfloat16) that is "
              f"{datasheet:,.0f} clips/s against the 989 TFLOP/s datasheet figure, {measured:,.0f} against the "
              f"790 TFLOP/s a matrix product reaches; expected, not measured: no GPU was lent for this run.")


if __name__ == "__main__":
    sys.exit(main())
