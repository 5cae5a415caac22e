"""Draw what the model listens to: attention rollout and the last block's cls/dist attention over the
spectrogram of each audio file, one PNG per file (see ast_jax.explain for how the maps are made).

examples:
  ast-jax explain --model runs/demo/model clip.wav --output clip.png
  ast-jax explain --model runs/demo/model clips/ --output explained/     (one PNG per file)
"""

from __future__ import annotations

import argparse
import os
import sys

from ast_jax.commands import (check_not_an_input, check_output_file, check_writable_folder, raise_if_interrupted,
                             refuse_standard_input)
from ast_jax.commands.predict import Failures, add_model_arguments


# Other image formats an output name may end in by mistake: not taken for a folder's name.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".svg", ".pdf", ".eps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="audio files, folders (searched recursively) or globs")
    add_model_arguments(parser, batch_help="clips per jitted batch (default and at most 8: each clip keeps every "
                                           "block's attention maps)")
    parser.add_argument("--output", "-o", required=True,
                        help="PNG path for one file, or a folder (one FILE_NAME.png per file, e.g. clip.wav.png; "
                             "where names repeat, the path below the common folder: a__clip.wav.png)")
    parser.add_argument("--map", choices=["both", "rollout", "last"], default="both",
                        help="which attention maps to draw (default both)")


def output_names(files: list[str]) -> dict[str, str]:
    """A PNG name per file: its basename, or, where basenames repeat (Speech Commands reuses them in every
    word's folder), its path below the inputs' common folder with separators as "__"."""
    names = [os.path.basename(f) for f in files]
    if len(set(names)) < len(names):
        root = os.path.commonpath([os.path.abspath(f) for f in files])
        names = [os.path.relpath(os.path.abspath(f), root).replace(os.sep, "__") for f in files]
    return {f: name + ".png" for f, name in zip(files, names)}


def output_path(output: str, name: str, many: bool) -> str:
    if not many and output.lower().endswith(".png"):
        return output
    return os.path.join(output, name)


def shown(name: str) -> str:
    """`name` with bytes that are not UTF-8 (held by Python as surrogate escapes) as \\xNN, for messages and
    titles: a font has no glyph for a surrogate, and a strict stream cannot encode it."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def plain_text(name: str) -> str:
    """`name` as matplotlib draws it literally: `shown`, with dollar signs escaped (two would start TeX math)."""
    return shown(name).replace("$", r"\$")


def run(args: argparse.Namespace) -> int:
    from ast_jax.explain import grid_to_spectrogram, patch_grid, plot_explanation
    from ast_jax._atomic import write_atomically
    from ast_jax.inference import expand_inputs, pipeline

    refuse_standard_input("explain", args.inputs)
    files, unmatched = expand_inputs(args.inputs)
    # One PNG per file: a file named twice (or by overlapping globs) is drawn once.
    unique: dict[str, str] = {}
    for name in files:
        unique.setdefault(os.path.realpath(name), name)
    files = list(unique.values())
    check_not_an_input(args.output, files)
    failures = Failures("explain", unmatched)
    if args.batch_size is not None and args.batch_size > 8:
        raise ValueError(f"--batch-size {args.batch_size}: explain takes at most 8 clips a batch (each keeps every "
                         f"block's attention maps)")
    one_png = args.output.lower().endswith(".png") and not os.path.isdir(args.output)
    if not one_png and os.path.splitext(args.output)[1].lower() in IMAGE_SUFFIXES and not os.path.isdir(args.output):
        raise ValueError(f"{args.output}: explain writes PNG images; name a .png file, or a folder for one PNG per "
                         f"file")
    if one_png and len(files) > 1:
        raise ValueError(f"{args.output}: one PNG for {len(files)} files; give a folder")
    (check_output_file if one_png else check_writable_folder)(args.output)
    model = pipeline(args.model, batch_size=args.batch_size or 8, dtype=args.dtype, workers=args.workers)
    config, feats = model.model.config, model.model.features
    wanted = {"both": ("rollout", "last_attention"), "rollout": ("rollout",), "last": ("last_attention",)}[args.map]
    titles = {"rollout": "attention rollout of cls + dist", "last_attention": "last block: cls + dist attention"}

    outputs = ("input_values", "scores") + wanted
    names = output_names(files)
    for path, out in model.predict_files(files, top_k=1, outputs=outputs, on_error=failures):
        raise_if_interrupted()
        failures.heard(out["samples"], model.predictor)
        # The cls and dist rows are averaged: the pooled embedding the head reads is their mean.
        maps = {titles[name]: grid_to_spectrogram(patch_grid(out[name].mean(axis=0), config), config)
                for name in wanted}
        best = out["labels"][0]
        target = output_path(args.output, names[path], len(files) > 1 or os.path.isdir(args.output))
        frames = min(max(1, feats.num_frames(out["samples"])), config.max_length)
        write_atomically(target, lambda temporary: plot_explanation(
            out["input_values"], maps, temporary, title=f"{plain_text(os.path.basename(path))}: "
            f"{plain_text(best['label'])} ({best['score']:.3f})", frame_shift_ms=feats.frame_shift_ms, frames=frames))
        print(f"{shown(str(path))} -> {shown(str(target))}", file=sys.stderr)
    return failures.exit_code(len(files) + len(unmatched))
