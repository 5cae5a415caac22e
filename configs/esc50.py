"""ESC-50 (50 classes, 5 s clips, 5 folds) as the original recipe: AudioSet-pretrained AST, 512 frames, CE loss,
lr 1e-5, batch 48, 25 epochs with 0.85 per-epoch decay after epoch 5, frequency masks up to 24 and time masks
up to 96, no mixup, no noise. The config argument is the held-out fold (1-5); run all five and average.

    for fold in 1 2 3 4 5; do
      python train.py --config configs/esc50.py:$fold --workdir runs/esc50/fold$fold \\
          --config.data.json.train=data/esc_train_data_$fold.json --config.data.json.validation=data/esc_eval_data_$fold.json \\
          --config.data.label_csv=data/esc_class_labels_indices.csv --config.init.source=/models/audioset_10_10_0.4593.pth
    done

The original evaluated each fold on its held-out fold only (validation = test); so does this config. It reported
all five folds at one epoch, the best of their mean validation accuracy (egs/esc50/get_esc_result.py), not each
fold at its own best epoch, which it called over-optimistic: take each run's validation accuracy per epoch from
its metrics.jsonl, average over the folds, and report the best epoch's mean.
"""

import ml_collections

from ast_jax.features import DATASET_STATS
from ast_jax.training.trainer import default_config


def get_config(arg=None):
    if str(arg or 1) not in ("1", "2", "3", "4", "5"):
        raise ValueError(f"the held-out fold (esc50.py:FOLD) is one of 1-5, got {arg!r}")
    fold = int(arg or 1)
    c = default_config()
    c.num_epochs = 25
    c.batch_size = 48
    c.eval_batch_size = 96
    c.loss = "ce"
    c.test_split = ""  # the held-out fold is the only evaluation set
    c.features.update(target_length=512, mean=DATASET_STATS["esc50"][0], std=DATASET_STATS["esc50"][1])
    c.data.update(source="json", num_classes=50, clip_seconds=5.0, label_csv="")
    c.data.json = ml_collections.ConfigDict(dict(train=f"esc_train_data_{fold}.json",
                                                 validation=f"esc_eval_data_{fold}.json"))
    c.augment.update(mixup=0.0, freqm=24, timem=96, noise=False, roll=0)
    c.optim.update(learning_rate=1e-5)
    c.init.source = ""  # an AudioSet checkpoint, e.g. audioset_10_10_0.4593.pth
    return c
