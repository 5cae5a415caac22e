"""The Speech Commands recipe on TensorFlow Datasets' `speech_commands` (12 classes: ten words, _silence_,
_unknown_), everything else as configs/speech_commands.py.

    python train.py --config configs/tfds_speech_commands.py --workdir runs/sc12 \\
        --config.data.data_dir=~/tensorflow_datasets --config.init.source=/models/deit_base_distilled_patch16_384.pth

TFDS's test split is the official 12-class test set (4,890 clips).
"""

from ast_jax.training.trainer import default_config


def get_config(arg=None):
    if arg not in (None, "", "runlocal"):
        raise ValueError(f"tfds_speech_commands.py takes no argument or :runlocal (a quick check), got {arg!r}")
    c = default_config()
    c.data.update(source="tfds", data_dir="", num_classes=12, clip_seconds=1.0)
    c.init.source = ""  # ImageNet DeiT-base-384, as in configs/speech_commands.py
    if arg == "runlocal":
        c.num_epochs, c.batch_size, c.eval_batch_size = 1, 8, 8
        c.model.update(model_size="tiny224", num_layers=2)
    return c
