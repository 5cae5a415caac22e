"""Train-step throughput: the ast-jax update step against the PyTorch reference step, same model and batch.

Both sides take precomputed input_values (features and augmentation off) and do forward, BCE loss, backward
and an Adam(weight_decay=5e-7, betas=(0.95, 0.999)) update of every parameter:
  ast-jax   `ast_jax.training.trainer.make_train_step`, jitted, state donated
  PyTorch   transformers ASTForAudioClassification + torch.optim.Adam (the original recipe's step)
Default geometry: AST-base on Speech Commands (768 wide, 12 layers, 128 frames x 128 bins, 146 tokens, 35 labels).

    python bench/bench_train_step.py [--batch 8] [--steps 6] [--layers 12]

The two take turns in blocks of steps (twice) and each reports its median step time.

It also prints the FLOPs XLA counts for the step and what they imply for one H200 (no GPU was used here).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

H200_BF16_DENSE_FLOPS = 989e12  # datasheet dense bf16
H200_BF16_MEASURED_FLOPS = 790e12  # what a large bf16 matrix product reaches in practice


def time_in_blocks(steps: int, *runs, rounds: int = 2):
    """Median seconds per step of each run. The runs take turns in blocks of steps, `rounds` times, so that a change
    in the machine's load falls on all alike; the first step of each block is left out of the median, because it
    shares the CPU with the other framework's worker threads as they wind down (torch's OpenMP threads keep
    spinning a while after a step)."""
    times = [[] for _ in runs]
    per_block = max(1, -(-steps // rounds))
    for _ in range(rounds):
        for run, spent in zip(runs, times):
            run()  # compile / warm up, and the step that overlaps the other framework's threads
            for _ in range(per_block):
                start = time.perf_counter()
                run()
                spent.append(time.perf_counter() - start)
    return [float(np.median(spent)) for spent in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per framework (after one warm-up)")
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()

    import torch
    from transformers import ASTConfig as HFConfig, ASTForAudioClassification

    from ast_jax.model import AST, ASTConfig, count_parameters, init_params
    from ast_jax.training.trainer import default_config, make_train_step
    from ast_jax.training.optim import make_optimizer

    torch.set_num_threads(os.cpu_count())
    labels, frames, bins, batch = 35, 128, 128, args.batch
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((batch, frames, bins)).astype(np.float32)
    targets = (rng.uniform(size=(batch, labels)) < 0.1).astype(np.float32)

    # ast-jax
    config = ASTConfig.from_size("base384", num_layers=args.layers, max_length=frames, num_mel_bins=bins,
                                 num_labels=labels)
    params = init_params(config, 0)
    optimizer, schedule = make_optimizer(default_config(), steps_per_epoch=1000)
    step_fn = make_train_step(AST(config), optimizer, schedule, "bce", lambda _, b: (b["audio"], b["targets"]),
                              jax.random.PRNGKey(0))
    jitted = jax.jit(step_fn, donate_argnums=0)
    batch_arrays = {"audio": jnp.asarray(inputs), "targets": jnp.asarray(targets), "valid": jnp.ones(batch, bool)}
    state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
    compiled = jitted.lower(state, batch_arrays).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops_per_clip = float(cost.get("flops", 0.0)) / batch

    def jax_step():
        nonlocal state
        state, metrics = jitted(state, batch_arrays)
        metrics["loss"].block_until_ready()

    # PyTorch reference
    hf = HFConfig(hidden_size=768, num_hidden_layers=args.layers, num_attention_heads=12, intermediate_size=3072,
                  max_length=frames, num_mel_bins=bins, num_labels=labels, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    model = ASTForAudioClassification(hf).train()
    torch_opt = torch.optim.Adam(model.parameters(), lr=2.5e-4, weight_decay=5e-7, betas=(0.95, 0.999))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    torch_inputs, torch_targets = torch.tensor(inputs), torch.tensor(targets)

    def torch_step():
        torch_opt.zero_grad()
        loss = loss_fn(model(torch_inputs).logits, torch_targets)
        loss.backward()
        torch_opt.step()

    jax_seconds, torch_seconds = time_in_blocks(args.steps, jax_step, torch_step)

    print(f"AST-base train step, {args.layers} layers, {count_parameters(params):,} parameters, "
          f"batch {batch}, input {frames}x{bins}, float32, {os.cpu_count()} CPU cores, jax {jax.__version__}, "
          f"torch {torch.__version__}")
    print(f"{'implementation (median step, blocks taking turns)':<50}{'s/step':>10}{'clips/s':>10}")
    print(f"{'ast-jax (jit, donated state)':<50}{jax_seconds:>10.3f}{batch / jax_seconds:>10.2f}")
    print(f"{'transformers + torch.optim.Adam':<50}{torch_seconds:>10.3f}{batch / torch_seconds:>10.2f}")
    print(f"speed-up ast-jax / PyTorch: {torch_seconds / jax_seconds:.2f}x (goal >= 1.1x)")
    if flops_per_clip:
        datasheet, measured = (0.45 * peak / flops_per_clip
                               for peak in (H200_BF16_DENSE_FLOPS, H200_BF16_MEASURED_FLOPS))
        print(f"XLA counts {flops_per_clip / 1e9:.1f} GFLOP per clip for this step (about 3 x 24.1 expected for 12 "
              f"layers: a forward whose last block computes only the two tokens the head reads). At 45% of one "
              f"H200's bf16 peak (model.dtype=bfloat16) that is "
              f"{datasheet:,.0f} clips/s against the 989 TFLOP/s datasheet figure, {measured:,.0f} against the "
              f"790 TFLOP/s a matrix product reaches; expected, not measured: no GPU was lent for this run.")


if __name__ == "__main__":
    main()
