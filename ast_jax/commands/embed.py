"""Write the pooled embedding of each audio file (the mean of the cls and dist tokens after the final
LayerNorm, what the classifier head reads), and optionally every token, to .npz or .npy.

.npz holds "embeddings" (files, width), "files" (the file list, in row order) and with --tokens "tokens"
(files, tokens, width; cls, dist, then patches frequency-major). .npy holds the embeddings (or with --tokens
the tokens) and the file list goes to OUTPUT.files.txt, one path per line. Unreadable files are reported on
stderr and left out; the exit status is then 1.

example:
  ast-jax embed --model runs/demo/model clips/ --output clips.npz
"""

from __future__ import annotations

import argparse
import sys

from ast_jax.commands.predict import add_model_arguments, progress, report_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders (searched recursively) or globs")
    add_model_arguments(parser)
    parser.add_argument("--output", "-o", required=True, help="output file, .npz or .npy")
    parser.add_argument("--tokens", action="store_true", help="also write every token's embedding")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ast_jax.inference import expand_inputs, pipeline, write_atomically

    if not args.output.endswith((".npz", ".npy")):
        raise ValueError(f"{args.output}: output must end in .npz or .npy")
    files, unmatched = expand_inputs(args.inputs)
    for pattern in unmatched:
        print(f"{pattern}: no audio files match", file=sys.stderr)
    failed = len(unmatched)
    model = pipeline(args.model, batch_size=args.batch_size, dtype=args.dtype, workers=args.workers)
    outputs = ("pooled", "tokens") if args.tokens else ("pooled",)
    names, pooled, tokens = [], [], []

    with progress(len(files), "embed") as bar:
        def on_error(name, error):
            nonlocal failed
            failed += 1
            report_error(name, error)
            bar.update(1)

        for path, out in model.predict_files(files, outputs=outputs, on_error=on_error):
            names.append(path)
            pooled.append(out["pooled"].astype(np.float32))
            if args.tokens:
                tokens.append(out["tokens"].astype(np.float32))
            bar.update(1)

    width = model.model.config.hidden_size
    embeddings = np.stack(pooled) if pooled else np.zeros((0, width), np.float32)
    file_list = np.array(names, dtype=str)
    if args.output.endswith(".npz"):
        arrays = {"embeddings": embeddings, "files": file_list}
        if args.tokens:
            arrays["tokens"] = np.stack(tokens) if tokens else np.zeros((0, 2, width), np.float32)

        def write(path):
            with open(path, "wb") as handle:
                np.savez(handle, **arrays)

        write_atomically(args.output, write)
    else:
        array = (np.stack(tokens) if tokens else np.zeros((0, 2, width), np.float32)) if args.tokens else embeddings

        def write(path):
            with open(path, "wb") as handle:
                np.save(handle, array)

        def write_list(path):
            with open(path, "w") as handle:
                handle.writelines(name + "\n" for name in names)

        write_atomically(args.output, write)
        write_atomically(args.output + ".files.txt", write_list)
    print(f"ast-jax embed: {len(names)} files -> {args.output}", file=sys.stderr)
    if failed:
        print(f"ast-jax embed: {failed} of {len(files) + len(unmatched)} inputs failed", file=sys.stderr)
    return 1 if failed else 0
