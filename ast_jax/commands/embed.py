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

from ast_jax.commands import check_not_an_input, check_output_file, partial_name, raise_if_interrupted
from ast_jax.commands.predict import Failures, add_model_arguments, progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders (searched recursively) or globs")
    add_model_arguments(parser)
    parser.add_argument("--output", "-o", required=True, help="output file, .npz or .npy")
    parser.add_argument("--tokens", action="store_true", help="also write every token's embedding")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ast_jax._atomic import write_atomically, write_files_atomically
    from ast_jax.inference import expand_inputs, pipeline

    if not args.output.endswith((".npz", ".npy")):
        raise ValueError(f"{args.output}: output must end in .npz or .npy")
    check_output_file(args.output)
    if args.output.endswith(".npy"):
        check_output_file(args.output + ".files.txt")
    files, unmatched = expand_inputs(args.inputs)
    check_not_an_input(args.output, files)
    if args.output.endswith(".npy"):
        lined = next((name for name in files if "\n" in name or "\r" in name), None)
        if lined is not None:  # the list beside a .npy has one name per line
            raise ValueError(f"{lined!r}: a file name with a line break cannot be listed in {args.output}.files.txt; "
                             f"write a .npz, which keeps the names in an array")
    failures = Failures("embed", unmatched)
    model = pipeline(args.model, batch_size=args.batch_size, dtype=args.dtype, workers=args.workers)
    outputs = ("pooled", "tokens") if args.tokens else ("pooled",)
    names, pooled, tokens = [], [], []

    interrupted: KeyboardInterrupt | None = None
    with progress(len(files), "embed") as bar:
        def on_error(name, error):
            failures(name, error)
            bar.update(1)

        try:
            for path, out in model.predict_files(files, outputs=outputs, on_error=on_error):
                raise_if_interrupted()
                pooled.append(out["pooled"])
                if args.tokens:
                    tokens.append(out["tokens"])
                names.append(path)
                bar.update(1)
        except KeyboardInterrupt as stop:  # keep what is done: written below, then the exit status says so
            interrupted = stop
            pooled, tokens = pooled[:len(names)], tokens[:len(names)]

    config = model.model.config
    stack = lambda rows, shape: np.stack(rows) if rows else np.zeros((0, *shape), np.float32)
    arrays = {"embeddings": stack(pooled, (config.hidden_size,)), "files": np.array(names, dtype=str)}
    if args.tokens:
        arrays["tokens"] = stack(tokens, (2 + config.num_patches, config.hidden_size))

    def write_npz(path):
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    def write_npy(path):
        with open(path, "wb") as handle:
            np.save(handle, arrays["tokens" if args.tokens else "embeddings"])

    def write_list(path):
        with open(path, "w") as handle:
            handle.writelines(name + "\n" for name in names)

    # Interrupted, the embeddings done go beside the output (e.npz -> e.partial.npz), which stays as it was
    # (into it, for a device or stream).
    output = args.output if interrupted is None else partial_name(args.output)
    if not names and interrupted is None:  # every input failed: an earlier output stays as it was
        print(f"ast-jax embed: no embeddings; {output} not written", file=sys.stderr)
    try:
        if names:
            if output.endswith(".npz"):
                write_atomically(output, write_npz)
            else:  # the rows and their file list: both or neither
                write_files_atomically({output: write_npy, output + ".files.txt": write_list})
            print(f"ast-jax embed: {len(names)} file{'s' * (len(names) != 1)} -> {output}"
                  + (" (interrupted)" if interrupted else ""), file=sys.stderr)
    except OSError as error:
        if interrupted is None:
            raise
        print(f"ast-jax embed: error: {error}", file=sys.stderr)  # and the exit status tells of the interrupt
    if interrupted:
        raise interrupted
    return failures.exit_code(len(files) + len(unmatched))
