"""The main job: train a small AST on the Speech Commands demo set shipped with the project (12 classes,
672 training clips), evaluate on its test split and keep the model. About ten minutes on a 2-core CPU.

    ast-jax train --config configs/demo.py --workdir runs/demo      (or: make demo)
    ast-jax predict --model runs/demo/best clip.wav

The recipe is Speech Commands' (BCE, Adam with coupled L2, per-epoch decay, SpecAugment, noise, roll) on a
four-layer tiny AST with non-overlapping 16x16 patches (64 patches per clip) trained from scratch; the
features are the released model's (128 mel bins, 128 frames). A from-scratch transformer on 56 clips per
class underfits rather than overfits, so mixup is off and the masks are half as wide (with the full recipe's
augmentation it stayed near chance for the first five epochs). Accuracy is far from 98%: that needs the
ImageNet start and the full data set.
"""

from ast_jax.training.trainer import default_config


def get_config(arg=None):
    c = default_config()
    c.num_epochs = 25
    c.batch_size = 32
    c.eval_batch_size = 48
    c.log_every_steps = 7
    c.model.update(model_size="tiny224", num_layers=4, frequency_stride=16, time_stride=16)
    c.data.update(source="demo", num_classes=12, clip_seconds=1.0)
    c.augment.update(mixup=0.0, freqm=24, timem=24)
    c.optim.update(learning_rate=1e-3, lr_decay_start=10)
    c.checkpoint.update(every_steps=100, max_to_keep=2)
    return c
