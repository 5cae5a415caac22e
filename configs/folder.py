"""Your own labelled audio: a folder of label folders, or a CSV manifest, trained from scratch like the demo.

    ast-jax train --config configs/folder.py:data/my_sounds --workdir runs/mine
    ast-jax train --config configs/folder.py:data/my_sounds.csv,5 --workdir runs/mine    # 5 s clips

The argument is the data (a folder: `<root>/<label>/*.wav`, or `<root>/{train,validation,test}/<label>/...`; a
`.csv` file: a manifest with columns path,label[,split][,group]; see the README's Data section), then, after a
comma, the clip length in seconds (default 1): longer clips keep their start, shorter ones are padded, and the
model's input is sized to the clip (about 100 frames a second). The labels and their count come from the data.
Without split folders or a split column, a tenth of the clips (by speaker or group where the names tell) go
to validation and a tenth to test; the run prints how many clips every split got, and warns of labels a split
has none of. The path is stored absolute, so that `ast-jax evaluate --data WORKDIR/config.json` works from
anywhere; a path that exists as given may hold commas.

This is the demo's recipe (configs/demo.py), written out so that a copy of this file stands alone: a two-layer
tiny AST from random weights, quick on a CPU and enough to check that the data and labels are right. It differs
in the data, the input length, 20 warmup steps instead of 100 (a small data set may have few steps in all), and
the default logging and checkpoint intervals (the demo's are sized to its 672 clips). For accuracy on a real
task, fine-tune a released checkpoint instead, as configs/esc50.py does from the AudioSet model.
"""

import os

from ast_jax.features import FeatureConfig
from ast_jax.training.trainer import default_config


def get_config(arg=None):
    if not arg:
        raise ValueError("folder.py needs the data: configs/folder.py:PATH (a folder or a .csv manifest)"
                         "[,SECONDS]")
    path, seconds = str(arg), ""
    if "," in path and not os.path.exists(path):  # the clip length follows the last comma
        path, _, seconds = path.rpartition(",")
    try:
        seconds = float(seconds or 1.0)
    except ValueError:
        seconds = float("nan")
    if not 0.1 <= seconds <= 60:
        raise ValueError(f"folder.py:PATH,SECONDS: the clip length is a number of seconds from 0.1 to 60, got {arg!r}")
    c = default_config()
    c.num_epochs = 80
    c.batch_size = 32
    c.eval_batch_size = 48
    c.loss = "ce"
    c.model.update(model_size="tiny224", num_layers=2, frequency_stride=16, time_stride=8)
    # the clip's frames (25 ms windows every 10 ms), at least one patch long
    frames = FeatureConfig().num_frames(round(seconds * c.data.sample_rate))
    c.features.update(num_mel_bins=64, target_length=max(16, frames))
    manifest = path.lower().endswith(".csv") or os.path.isfile(path)
    c.data.update(source="manifest" if manifest else "folder", data_dir=os.path.abspath(path),
                  num_classes=0, clip_seconds=seconds)
    c.augment.update(mixup=0.0, freqm=12, timem=20, noise=False, roll=10)
    c.optim.update(learning_rate=2e-3, b1=0.9, b2=0.999, weight_decay=0.05, decoupled_weight_decay=True,
                   lr_schedule="cosine", min_lr_ratio=0.01, warmup_steps=20, warmup_update_every=1)
    return c
