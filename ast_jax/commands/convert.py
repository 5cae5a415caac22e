"""Port a PyTorch AST checkpoint to an ast-jax model folder.

SOURCE is an original .pth (with or without the `module.` prefix), a Hugging Face model folder, `hf:<repo id>`,
a timm DeiT distilled checkpoint (ImageNet start: a new head) or an ast-jax model folder. Geometry, label count,
LayerNorm eps and feature settings come from the source; the options below adapt it (new input length,
strides or mel bins: position table adapted as the original code does; --num-labels: a new head).

examples:
  ast-jax convert speechcommands_10_10_0.9812.pth models/sc
  ast-jax convert audioset_10_10_0.4593.pth models/audioset --labels class_labels_indices.csv
  ast-jax convert hf:MIT/ast-finetuned-audioset-10-10-0.4593 models/audioset
  ast-jax convert audioset_10_10_0.4593.pth models/esc50-start --max-length 512 --num-labels 50
"""

from __future__ import annotations

import argparse

from ast_jax.commands import non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help=".pth, Hugging Face folder, hf:<repo id>, or model folder")
    parser.add_argument("output", metavar="OUTPUT_DIR", help="ast-jax model folder to write")
    parser.add_argument("--labels", metavar="CSV", help="label file in the original format (index,mid,display_name)")
    parser.add_argument("--num-labels", type=positive_int, help="replace the head with a new one of this many outputs")
    parser.add_argument("--max-length", type=positive_int, help="input frames (128 Speech Commands, 1024 AudioSet)")
    parser.add_argument("--num-mel-bins", type=positive_int, help="mel bins per frame (128 in the released models)")
    parser.add_argument("--frequency-stride", type=positive_int, help="patch step along the mel axis")
    parser.add_argument("--time-stride", type=positive_int, help="patch step along the frame axis")
    parser.add_argument("--trained-geometry", action="store_true",
                        help="(original .pth) the four options above give the input the checkpoint was trained on, "
                             "not one to adapt it to; needed where that input has as many patches as a released "
                             "geometry (e.g. 96 mel bins x 166 frames, 9x16, against Speech Commands' 12x12)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of a new head's initialisation (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists")


def run(args: argparse.Namespace) -> int:
    from ast_jax._atomic import check_apart, check_output_folder
    from ast_jax.convert import convert_source
    from ast_jax.model import MODEL_SIZES, count_parameters
    from ast_jax.pretrained import save_model

    if not args.output.strip():
        raise ValueError("OUTPUT_DIR is empty: name the model folder to write")
    check_apart(args.output, args.source)
    check_output_folder(args.output, overwrite=args.overwrite)  # before a download or a conversion, not after
    conversion = convert_source(
        args.source, max_length=args.max_length, num_mel_bins=args.num_mel_bins,
        frequency_stride=args.frequency_stride, time_stride=args.time_stride, num_labels=args.num_labels,
        labels=args.labels, seed=args.seed, trained_geometry=args.trained_geometry)
    model = conversion.model
    output = save_model(args.output, model, overwrite=args.overwrite)
    cfg = model.config
    preset = f"{cfg.model_size}, " if MODEL_SIZES[cfg.model_size]["hidden_size"] == cfg.hidden_size else ""
    rows = [
        ("source", f"{args.source} ({conversion.source_format})"),
        ("written", str(output)),
        ("model", f"{preset}{cfg.num_layers} blocks, width {cfg.hidden_size}, {cfg.num_heads} heads, "
                  f"{count_parameters(model.params):,} parameters"),
        ("input", f"{cfg.max_length} frames x {cfg.num_mel_bins} mel bins, stride {cfg.frequency_stride}x"
                  f"{cfg.time_stride}, {cfg.frequency_patches}x{cfg.time_patches} patches"),
        ("LayerNorm eps", f"backbone {cfg.layer_norm_eps:g}, head {cfg.head_layer_norm_eps:g}"),
        ("features", f"{model.features.target_length} frames, mean {model.features.mean:g}, "
                     f"std {model.features.std:g}"),
        ("labels", f"{cfg.num_labels}: {', '.join(model.labels[:5])}{', ...' if cfg.num_labels > 5 else ''}"),
    ]
    if conversion.dropped:
        rows.append(("dropped", ", ".join(conversion.dropped) + " (unused DeiT heads)"))
    rows += [("adapted", note) for note in conversion.notes]
    width = max(len(key) for key, _ in rows)
    print("\n".join(f"{key:<{width}}  {value}" for key, value in rows))
    return 0
