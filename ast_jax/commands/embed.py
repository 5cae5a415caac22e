"""Write the pooled embedding of each audio file (the mean of the cls and dist tokens after the final
LayerNorm, what the classifier head reads), and optionally every token, to .npz or .npy.

.npz holds "embeddings" (files, width), "files" (the file list, in row order) and with --tokens "tokens"
(files, tokens, width; cls, dist, then patches frequency-major). .npy holds the embeddings (or with --tokens
the tokens) and the file list goes to OUTPUT.files.txt, one path per line. Unreadable files are reported on
stderr and left out; the exit status is then 1. Until the last file is done the rows wait in an unnamed
temporary file beside the output, not in memory: the disk needs room for the output twice over.

example:
  ast-jax embed --model runs/demo/model clips/ --output clips.npz
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile

from ast_jax.commands import (check_not_an_input, check_output_file, partial_name, raise_if_interrupted,
                             refuse_standard_input)
from ast_jax.commands.predict import Failures, add_model_arguments, progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="audio files, folders (searched recursively) or globs")
    add_model_arguments(parser)
    parser.add_argument("--output", "-o", required=True, help="output file, .npz or .npy")
    parser.add_argument("--tokens", action="store_true", help="also write every token's embedding")


class RowFile:
    """Rows of one shape, float32, kept in an unnamed temporary file (gone when closed, or when the process
    dies) rather than in memory, so that embedding many files, tokens and all, needs no more memory than one
    batch: 10,000 clips of AST-base at AudioSet's 1,024 frames are 37 GB of tokens."""

    def __init__(self, shape: tuple[int, ...], folder: str | None):
        import numpy as np

        self.shape = tuple(shape)
        self.row_bytes = int(np.prod(self.shape)) * 4
        self.file = tempfile.TemporaryFile(dir=folder, prefix=".ast_jax-embed-")

    def append(self, row) -> None:
        import numpy as np

        self.file.write(np.ascontiguousarray(row, dtype="<f4").reshape(self.shape).tobytes())

    def write_npy(self, handle, rows: int) -> None:
        """The first `rows` rows as a .npy array (rows, *shape) into the binary file `handle`."""
        import numpy as np

        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": (rows, *self.shape)})
        self.file.seek(0)
        left = rows * self.row_bytes
        while left:
            chunk = self.file.read(min(left, 1 << 20))
            if not chunk:
                raise OSError(f"{self.file.name}: temporary rows cut short")
            handle.write(chunk)
            left -= len(chunk)

    def close(self) -> None:
        self.file.close()


def run(args: argparse.Namespace) -> int:
    from ast_jax._atomic import is_special_file, resolve_output
    from ast_jax.inference import expand_inputs, pipeline

    kind = os.path.splitext(args.output)[1].lower()
    if kind not in (".npz", ".npy"):
        raise ValueError(f"{args.output}: output must end in .npz or .npy")
    check_output_file(args.output)
    special = is_special_file(args.output)
    # The file list goes beside the array, through a link to it.
    list_path = None if kind != ".npy" else f"{args.output if special else resolve_output(args.output)}.files.txt"
    if list_path is not None:
        check_output_file(list_path)
    refuse_standard_input("embed", args.inputs)
    files, unmatched = expand_inputs(args.inputs)
    check_not_an_input(args.output, files)
    if list_path is not None:
        lined = next((name for name in files if "\n" in name or "\r" in name), None)
        if lined is not None:  # the list beside a .npy has one name per line
            raise ValueError(f"{lined!r}: a file name with a line break cannot be listed in {list_path}; "
                             f"write a .npz, which keeps the names in an array")
    failures = Failures("embed", unmatched)
    model = pipeline(args.model, batch_size=args.batch_size, dtype=args.dtype, workers=args.workers)
    config = model.model.config
    outputs = ("pooled", "tokens") if args.tokens else ("pooled",)
    # Rows wait beside the output (on the disk that will hold it; the folders it needs are made at the end).
    folder = None if special else resolve_output(args.output).parent.resolve()
    while folder is not None and not folder.is_dir():
        folder = folder.parent
    rows = {"embeddings": RowFile((config.hidden_size,), folder)}
    if args.tokens:
        rows["tokens"] = RowFile((2 + config.num_patches, config.hidden_size), folder)
    names = []

    interrupted: KeyboardInterrupt | None = None
    try:
        with progress(len(files), "embed") as bar:
            def on_error(name, error):
                failures(name, error)
                bar.update(1)

            try:
                for path, out in model.predict_files(files, outputs=outputs, on_error=on_error):
                    raise_if_interrupted()
                    failures.heard(out["samples"], model.predictor)
                    rows["embeddings"].append(out["pooled"])
                    if args.tokens:
                        rows["tokens"].append(out["tokens"])
                    names.append(path)  # last: a row counts once every array has it
                    bar.update(1)
            except KeyboardInterrupt as stop:  # keep what is done: written below, then the exit status says so
                interrupted = stop
        write_outputs(args.output, list_path, rows, names, interrupted)
    finally:
        for row_file in rows.values():
            row_file.close()
    if interrupted:
        raise interrupted
    return failures.exit_code(len(files) + len(unmatched))


def write_outputs(output: str, list_path: str | None, rows: dict[str, RowFile], names: list[str],
                  interrupted: KeyboardInterrupt | None) -> None:
    """The rows of `names` to `output` (a .npz, or a .npy with its file list at `list_path`), atomically; when
    interrupted, beside them (`partial_name`)."""
    import numpy as np

    from ast_jax._atomic import write_atomically, write_files_atomically

    count = len(names)

    def write_npz(path):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:  # as np.savez writes
            with archive.open("files.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.array(names, dtype=str))
            for key, row_file in rows.items():
                with archive.open(f"{key}.npy", "w", force_zip64=True) as entry:
                    row_file.write_npy(entry, count)

    def write_npy(path):
        with open(path, "wb") as handle:
            rows["tokens" if "tokens" in rows else "embeddings"].write_npy(handle, count)

    def write_list(path):
        with open(path, "w", errors="surrogateescape") as handle:  # names as the filesystem gave them
            handle.writelines(name + "\n" for name in names)

    # Interrupted, the embeddings done go beside the output (e.npz -> e.partial.npz), which stays as it was
    # (into it, for a device or stream).
    target = output if interrupted is None else partial_name(output)
    if not names and interrupted is None:  # every input failed: an earlier output stays as it was
        print(f"ast-jax embed: no embeddings; {target} not written", file=sys.stderr)
    try:
        if names:
            if list_path is None:
                write_atomically(target, write_npz)
            else:  # the rows and their file list: both or neither
                listed = list_path if interrupted is None else target + ".files.txt"
                write_files_atomically({target: write_npy, listed: write_list})
            print(f"ast-jax embed: {count} file{'s' * (count != 1)} -> {target}"
                  + (" (interrupted)" if interrupted else ""), file=sys.stderr)
    except OSError as error:
        if interrupted is None:
            raise
        print(f"ast-jax embed: error: {error}", file=sys.stderr)  # and the exit status tells of the interrupt
