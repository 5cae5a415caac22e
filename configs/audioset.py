"""Full AudioSet (527 labels, 10 s clips) as the original recipe: 1024 frames, BCE, lr 1e-5, batch 12, 5 epochs,
1000-step warmup, decay 0.5 per epoch from epoch 3 (MultiStepLR milestones 2, 3, ...), frequency masks up to 48,
time masks up to 192, mixup 0.5, balanced sampling, and the parameters of epochs 1-5 averaged at the end
(the released 0.459-mAP model). Best model by validation mAP.

    python train.py --config configs/audioset.py --workdir runs/audioset \\
        --config.data.json.train=whole_train_data.json --config.data.json.validation=eval_data.json \\
        --config.data.label_csv=class_labels_indices.csv --config.init.source=/models/deit_base_distilled_patch16_384.pth

`audioset.py:balanced` is the balanced-subset recipe (lr 5e-5, 25 epochs, decay 0.5 every 5 epochs from
epoch 11 (milestones 10, 15, ...), no balanced sampling, epochs 6-25 averaged).
"""

import ml_collections

from ast_jax.features import DATASET_STATS
from ast_jax.training.trainer import default_config


def get_config(arg=None):
    if arg not in (None, "", "balanced"):
        raise ValueError(f"audioset.py takes no argument or :balanced (the balanced subset), got {arg!r}")
    c = default_config()
    c.batch_size = 12
    c.eval_batch_size = 24
    c.best_metric = "mAP"
    c.test_split = ""  # the original reports the AudioSet evaluation set, used here as validation
    c.features.update(target_length=1024, mean=DATASET_STATS["audioset"][0], std=DATASET_STATS["audioset"][1])
    c.data.update(source="json", num_classes=527, clip_seconds=10.0, label_csv="", balanced=True)
    c.data.json = ml_collections.ConfigDict(dict(train="whole_train_data.json", validation="eval_data.json"))
    c.augment.update(mixup=0.5, freqm=48, timem=192, noise=False, roll=0)
    c.optim.update(learning_rate=1e-5, lr_decay_start=2, lr_decay_every=1, lr_decay_rate=0.5, warmup_steps=1000)
    c.num_epochs = 5
    c.weight_averaging.update(start_epoch=1, end_epoch=5)
    c.init.source = ""  # ImageNet DeiT-base-384
    if arg == "balanced":
        c.num_epochs = 25
        c.data.balanced = False
        c.data.json.train = "balanced_train_data.json"
        c.optim.update(learning_rate=5e-5, lr_decay_start=10, lr_decay_every=5)
        c.weight_averaging.update(start_epoch=6, end_epoch=25)
    return c
