"""Smoke test: a one-layer tiny AST on synthetic tones, two epochs in well under a minute on a CPU.

    python train.py --config configs/smoke.py --workdir /tmp/ast_smoke

Used by the tests (single device, fake devices, several processes, interruption and resume).
"""

from ast_jax.training.trainer import default_config


def get_config(arg=None):
    if arg:
        raise ValueError(f"smoke.py takes no argument, got {arg!r}")
    c = default_config()
    c.num_epochs = 2
    c.batch_size = 8
    c.eval_batch_size = 8
    c.log_every_steps = 4
    c.model.update(model_size="tiny224", num_layers=1)
    c.features.update(num_mel_bins=32, target_length=32)  # 0.3 s gives 28 frames, padded to 32
    c.data.update(source="synthetic", num_classes=4, clip_seconds=0.3)
    c.augment.update(mixup=0.5, freqm=8, timem=8, noise=True, roll=3)
    c.optim.update(learning_rate=1e-3, lr_decay_start=1)
    c.checkpoint.update(every_steps=4, max_to_keep=2)
    return c
