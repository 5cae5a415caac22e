"""The released Speech Commands recipe (35 words, 98.1% test accuracy): AST-base384 from ImageNet DeiT,
10/10 strides, 128 frames, BCE, batch 128, 30 epochs at 2.5e-4 decayed by 0.85 per epoch after epoch 5,
mixup 0.5 (as the released run's log; its run_sc.sh says 0.6), frequency and time masks of up to 48, noise
and time roll; best model by validation accuracy.

    python train.py --config configs/speech_commands.py --workdir runs/sc \\
        --config.data.data_dir=/data/speech_commands_v0.02 \\
        --config.init.source=/models/deit_base_distilled_patch16_384.pth

`speech_commands.py:runlocal` shrinks everything for a quick check on a laptop.
"""

from ast_jax.training.trainer import default_config


def get_config(arg=None):
    if arg not in (None, "", "runlocal"):
        raise ValueError(f"speech_commands.py takes no argument or :runlocal (a quick check), got {arg!r}")
    c = default_config()  # the defaults are this recipe
    c.data.update(source="speech_commands", data_dir="", num_classes=35, clip_seconds=1.0)
    # ImageNet DeiT-base-384 (distilled), any file ast_jax.load_pretrained reads; the position table is adapted
    # to the 12x12 grid and a new 35-way head is created.
    c.init.source = ""
    if arg == "runlocal":
        c.num_epochs, c.batch_size, c.eval_batch_size = 1, 8, 8
        c.model.update(model_size="tiny224", num_layers=2)
    return c
