"""Score a model on a labelled data set: accuracy, mAP, mAUC, per-class precision and recall, a confusion
matrix PNG and a CSV of the misclassified files.

SOURCE is any source of the data layer (ast_jax.data):
  FOLDER                    <root>/<label>/*.wav (a folder without train/validation/test folders is scored whole);
                            a raw Speech Commands v0.02 folder (with testing_list.txt) gives its test split
  FILE.csv                  a manifest with columns path,label[,split][,group] (scored whole without a split column;
                            rows with a blank split fall where training's default hash split put them)
  demo                      the Speech Commands demo set shipped with the project
  tfds:speech_commands      TFDS speech_commands (12 classes; --tfds-data-dir for a local copy)
  CONFIG.py[:arg]           the data section of a training config, or of a run's WORKDIR/config.json (the split
                            the run held out, e.g. --split test of a folder it split by hash; relative paths in
                            it are read from the current folder)
Data-set labels are matched to the model's labels by name; --label-map renames the ones that differ.
Accuracy takes the model's best label (right when it is the clip's label, or one of them for multi-label data);
per-class precision and recall take the best label too for single-label data, and every label scoring at least
0.5 for multi-label data. mAP and mAUC rank the examples by each label's logit, in the order of its sigmoid,
by which the original code and `ast-jax train` rank (and without the float32 sigmoid's ties at 1.0 above a
logit of 17), so they equal the training log's figures. The best label, too, is the one with the largest logit.
Clips longer than --clip-seconds are cut (default: the model's input length, 1.295 s for 128 frames); shorter
ones are scored as they are, exactly as `ast-jax predict` scores them.

Writes to --output-dir: metrics.json, per_class.csv, confusion_matrix.png, misclassified.csv and scores.npz
(every clip's scores, logits and targets). A folder (labelled or raw Speech Commands) or CSV given directly is
decoded batch by batch, as predict decodes its files, and leaves nothing in the prepared-copy cache (a
training config's data is read as training reads it: from its prepared copies in its cache_dir, 16-bit, unless
it sets prepared=False).

examples:
  ast-jax evaluate --model runs/demo/model --data demo --output-dir eval/
  ast-jax evaluate --model runs/sc/model --data /data/speech_commands_v0.02 --output-dir eval/
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ast_jax.commands import check_writable_folder, positive_float, raise_if_interrupted
from ast_jax.commands.predict import add_model_arguments, progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, workers=False)  # the data layer reads the clips
    parser.add_argument("--data", required=True, metavar="SOURCE", help="data set to score (see above)")
    parser.add_argument("--split", default=None,
                        help="split to score (default test, or for a training config the split its run held out: its "
                             "test_split, else its validation_split; a folder or CSV without splits is scored whole)")
    parser.add_argument("--output-dir", "-o", default=None,
                        help="folder for metrics.json, the CSVs, scores.npz and the confusion-matrix PNG (without "
                             "it, only the table is printed)")
    parser.add_argument("--label-map", default=None, metavar="DATASET=MODEL,...",
                        help="data-set label -> model label, for names that differ (or a JSON file of that dict)")
    parser.add_argument("--clip-seconds", type=positive_float, default=None, help="longer clips are cut to this many seconds (default: the model's input length)")
    parser.add_argument("--num-classes", type=int, choices=[35, 12], default=None,
                        help="Speech Commands task for a raw folder: 35 or 12 (default: 35 if the model has 35 labels)")
    parser.add_argument("--tfds-data-dir", default=None, help="TFDS data_dir for tfds: sources")
    parser.add_argument("--activation", choices=["sigmoid", "softmax"], default=None,
                        help="how scores are made from logits (default: what the model was trained with)")


def is_config_file(source: str) -> bool:
    return source.endswith((".py", ".json")) or ".py:" in source


WHOLE = "all clips"  # how the report names data scored whole


def is_tfds(source: str) -> bool:
    return source == "tfds" or source.startswith("tfds:")


def is_keyword(source: str) -> bool:
    return source == "demo" or is_tfds(source)


def without_splits(source: str) -> bool:
    """Whether `source` is a folder without split folders or a CSV manifest without a split column: data that
    evaluate scores whole."""
    import csv

    from ast_jax.data.folder import SPLITS

    if is_keyword(source) or is_config_file(source):  # never a folder of that name in the current folder
        return False
    path = Path(source)
    if path.is_dir():
        speech_commands = (path / "testing_list.txt").is_file() or (path / "validation_list.txt").is_file()
        return not speech_commands and not any((path / split).is_dir() for split in SPLITS)
    if path.suffix.lower() == ".csv" and path.is_file():
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                header = next(csv.reader(handle), [])
        except (UnicodeDecodeError, csv.Error):
            return False  # the data layer names the problem
        return "split" not in {name.strip().lower() for name in header}
    return False


def data_config(source: str, *, clip_seconds: float, num_classes: int, tfds_data_dir: str | None, whole: bool):
    """`(the data layer's ConfigDict for SOURCE, the split to score by default)` (see the module docstring):
    "test", or for a training config the split its run held out. `whole`: SOURCE is `without_splits`, all of it
    scored (a manifest's rows with a blank split otherwise fall where training's hash split put them)."""
    import ml_collections

    path = Path(source)
    if is_config_file(source):
        from ast_jax.training.config_io import load_config

        training = load_config(source)
        config = training.data
        if "clip_seconds" not in config:
            config.clip_seconds = clip_seconds
        data_dir = config.get("data_dir")
        if data_dir and not os.path.isabs(data_dir) and not os.path.exists(data_dir):
            raise FileNotFoundError(f"{source}: data_dir {data_dir!r} is relative and not found from the current "
                                    f"folder ({os.getcwd()}); run evaluate from where the training ran, or give an "
                                    f"absolute path with --data (the folder or CSV)")
        return config, held_out_split(training)
    values = {"clip_seconds": clip_seconds, "sample_rate": 16000}
    if source == "demo":
        values.update(source="demo")
    elif is_tfds(source):
        values.update(source="tfds", tfds_name=source.partition(":")[2] or "speech_commands", data_dir=tfds_data_dir)
    elif path.suffix.lower() == ".csv":
        values.update(source="manifest", data_dir=str(path))
    elif path.is_dir() and ((path / "testing_list.txt").is_file() or (path / "validation_list.txt").is_file()):
        values.update(source="speech_commands", data_dir=str(path), num_classes=num_classes)
    elif path.is_dir():
        values.update(source="folder", data_dir=str(path))
    elif not os.path.lexists(path):
        raise FileNotFoundError(f"{source}: not found (--data takes a folder, a .csv manifest, a config .py or "
                                f".json, 'demo' or 'tfds:speech_commands')")
    else:
        raise ValueError(f"{source}: not a folder, .csv manifest, config .py or .json, 'demo' or "
                         f"'tfds:speech_commands'")
    if whole:
        values.update(validation_fraction=0.0, test_fraction=1.0)
    return ml_collections.ConfigDict({k: v for k, v in values.items() if v is not None}), "test"


def write_scores(path: str, names, dataset_labels, model_labels, targets, scores, logits) -> None:
    """Every scored clip's scores, for metrics of one's own: `files` (n,), `targets` (n, data-set labels),
    `scores` and `logits` (n, model labels), and both label lists."""
    import numpy as np

    with open(path, "wb") as handle:  # (a file object: np.savez would add .npz to the temporary name)
        np.savez(handle, files=np.asarray(names, dtype=str), dataset_labels=np.asarray(dataset_labels, dtype=str),
                 model_labels=np.asarray(model_labels, dtype=str), targets=targets, scores=scores, logits=logits)


def held_out_split(config) -> str:
    """The split a training config's run held out: its test split, or its validation split where it has no test
    split (the ESC-50 and AudioSet recipes score their held-out fold or evaluation set as validation)."""
    return config.get("test_split") or config.get("validation_split") or "test"


def parse_label_map(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    if text.endswith(".json"):
        import json

        with open(text) as handle:
            return {str(k): str(v) for k, v in json.load(handle).items()}
    items = [item.strip() for item in text.split(",") if item.strip()]
    pairs = [[side.strip() for side in item.split("=", 1)] for item in items]
    bad = [item for item, pair in zip(items, pairs) if len(pair) != 2 or not all(pair)]
    if bad:
        raise ValueError(f"--label-map: expected DATASET=MODEL pairs, got {', '.join(bad)}")
    return dict(pairs)


def example_names(source, split: str) -> tuple[list[str], list[tuple[str, str]]]:
    """A name per example of the split (the clip's file where the source has files, else split[index]), and
    the (clip, problem) of each file the data layer could not read and left out."""
    from ast_jax.data.files import FileSource

    if isinstance(source, FileSource):
        clips = source.split_files(split).clips
        if not source.prepared:
            return [clip.describe() for clip in clips], []
        prepared = source.prepare(split)
        return [clips[i].describe() for i in prepared.kept], list(prepared.skipped)
    return [f"{split}[{i}]" for i in range(source.num_examples(split))], []


def run(args: argparse.Namespace) -> int:
    # Each clip the data layer leaves out is reported below, once, in the command's own words; its log
    # would say the same again.
    data_log = logging.getLogger("ast_jax.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)
    try:
        return evaluate(args)
    finally:
        data_log.setLevel(level)


def evaluate(args: argparse.Namespace) -> int:
    from ast_jax.data import build_source
    from ast_jax.inference import Predictor, load_model_source

    check_writable_folder(args.output_dir)
    from ast_jax.convert import is_training_run

    run = Path(args.data).expanduser()
    if is_training_run(run):
        raise ValueError(f"{args.data}: a training run's folder, not data; give {run / 'config.json'} as --data to "
                         f"score the data it trained on (its test split by default)")
    model = load_model_source(args.model, args.dtype)
    predictor = Predictor(model, batch_size=args.batch_size, activation=args.activation)
    clip_seconds = args.clip_seconds or predictor.clip_samples / model.features.sample_rate  # argparse: None or > 0
    num_classes = args.num_classes or (35 if len(model.labels) == 35 else 12)
    whole = without_splits(args.data)
    config, held_out = data_config(args.data, clip_seconds=clip_seconds, num_classes=num_classes,
                                   tfds_data_dir=args.tfds_data_dir, whole=whole)
    if whole and args.split is not None:
        raise ValueError(f"{args.data}: has no split {'column' if args.data.lower().endswith('.csv') else 'folders'}"
                         f", so it is scored whole; leave out --split, or give the training run's "
                         f"WORKDIR/config.json as --data to score the split it held out")
    # options the data does not read: refused rather than silently ignored
    if args.num_classes is not None and (config.source != "speech_commands" or is_config_file(args.data)):
        raise ValueError(f"--num-classes applies to a raw Speech Commands folder (with testing_list.txt), not to "
                         f"{args.data}")
    if args.tfds_data_dir is not None and (config.source != "tfds" or is_config_file(args.data)):
        raise ValueError(f"--tfds-data-dir applies to --data tfds:NAME, not to {args.data}")
    split = args.split or held_out  # data scored whole is all in its test split
    if config.source in ("folder", "manifest", "speech_commands") and not is_config_file(args.data):
        # Read once: decoded batch by batch as predict decodes (float32, nothing clipped), with no prepared copy,
        # whose 16 bits would clip float samples beyond full scale and round 24-bit and float audio.
        config.prepared = False
    return score(args, model, predictor, build_source(config), split, WHOLE if whole else split)


def _which(shown_split: str) -> str:
    """How errors name the clips scored: "split 'test'", or "the data" when it is scored whole."""
    return "the data" if shown_split == WHOLE else f"split {shown_split!r}"


def score(args: argparse.Namespace, model, predictor, source, split: str, shown_split: str) -> int:
    """Score `model` on `split` of `source`, print the report and write the output files; the exit status."""
    import numpy as np

    from ast_jax._atomic import write_files_atomically
    from ast_jax.evaluation import Evaluation, map_labels, plot_confusion_matrix, write_csv, write_json

    label_indices = map_labels(source.labels, model.labels, parse_label_map(args.label_map))

    names, skipped = example_names(source, split)
    for clip, problem in skipped:
        print(problem if problem.startswith(clip) else f"{clip}: {problem}", file=sys.stderr)
    total = source.num_examples(split)
    if total == 0:
        raise ValueError(f"{args.data}: {_which(shown_split)} has no examples")
    scores = np.zeros((total, len(model.labels)), np.float32)
    logits = np.zeros_like(scores)
    targets = np.zeros((total, source.num_classes), np.float32)
    scored = np.zeros(total, bool)

    def examples():
        for batch in source.batches(split, batch_size=predictor.batch_size):
            for row in np.flatnonzero(batch["valid"]):
                index = int(batch["index"][row])
                targets[index] = batch["targets"][row]
                yield index, batch["audio"][row, :batch["length"][row]]  # the clip as read, unpadded

    with progress(total, "evaluate") as bar:
        for index, out in predictor.run(examples(), ("scores", "logits"), count=total):
            raise_if_interrupted()
            scores[index], logits[index], scored[index] = out["scores"], out["logits"], True
            bar.update(1)
    # Clips found unreadable only now (data decoded per batch, prepared=False) were served as padding: named
    # here and left out, as the prepared copy leaves them out.
    for index in np.flatnonzero(~scored):
        problem = getattr(source, "unreadable", {}).get(names[index], "could not be read")
        print(f"{names[index]}: {problem}", file=sys.stderr)
        skipped.append((names[index], problem))
    if not scored.all():
        if not scored.any():
            raise ValueError(f"{args.data}: no clip of {_which(shown_split)} could be read")
        scores, logits, targets = scores[scored], logits[scored], targets[scored]
        names = [name for name, kept in zip(names, scored) if kept]

    result = Evaluation(scores=scores, targets=targets, dataset_labels=list(source.labels),
                        model_labels=list(model.labels), label_indices=label_indices, names=names,
                        multilabel=source.multilabel, ranking=logits)
    report = result.report()
    per_class = report["per_class"]
    shown = lambda value, width=0: "n/a".rjust(width) if value is None else f"{value:{width}.4f}"
    print(f"{args.data} [{shown_split}]: {report['examples']} examples  accuracy {shown(report['accuracy'])}  "
          f"mAP {shown(report['mAP'])}  mAUC {shown(report['mAUC'])}")
    width = max(len("label"), *(len(row["label"]) for row in per_class))
    print(f"{'label'.ljust(width)}  precision  recall  support")
    for row in per_class:
        print(f"{row['label'].ljust(width)}  {shown(row['precision'], 9)}  {shown(row['recall'], 6)}  "
              f"{row['support']:7d}")

    if args.output_dir:
        # the clips the figures leave out (unreadable), so that the saved figures say what they are of
        left_out = [{"file": name, "problem": problem.removeprefix(f"{name}: ")} for name, problem in skipped]
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        writers = {
            out / "metrics.json": lambda p: write_json(p, {"model": str(args.model), "data": str(args.data),
                                                           "split": shown_split, "dtype": model.config.dtype,
                                                           **report, "left_out": left_out}),
            out / "per_class.csv": lambda p: write_csv(p, per_class, ["label", "precision", "recall", "support",
                                                                      "ap", "auc"]),
            out / "misclassified.csv": lambda p: write_csv(p, result.misclassified(), [
                "file", "label", "predicted", "predicted_score", "label_score"]),
            out / "scores.npz": lambda p: write_scores(p, names, source.labels, model.labels, targets, scores, logits),
        }
        if not source.multilabel:
            matrix, columns = result.confusion_matrix()
            writers[out / "confusion_matrix.png"] = lambda p: plot_confusion_matrix(matrix, source.labels, columns, p)
        write_files_atomically(writers)  # one set: a failure (a full disk) leaves the folder's earlier set whole
        if source.multilabel:  # an earlier single-label evaluation's matrix would pass for this one's
            (out / "confusion_matrix.png").unlink(missing_ok=True)
        written = [path.name for path in writers]
        print(f"wrote {', '.join(written)} to {out}", file=sys.stderr)
    if skipped:
        print(f"ast-jax evaluate: {len(skipped)} file{'s' * (len(skipped) != 1)} could not be read and "
              f"{'were' if len(skipped) != 1 else 'was'} left out", file=sys.stderr)
    return 1 if skipped else 0
