"""Classify audio files, folders or globs: the top-k labels of each file, as a table, JSON lines or CSV.

With --window (and --hop) each file is a long recording classified window by window, with each window's
start and end time: keyword spotting over a stream. INPUT "-" reads standard input: with --window, as a live
stream (WAV, AIFF or AU, e.g. from a recorder), each window's labels written as soon as it is classified
(one window per call unless --batch-size says otherwise); without, as one file of any format. Files that
cannot be read are reported one line each on stderr; the others are still classified, and the exit status is 1.

examples:
  ast-jax predict --model runs/demo/model clips/ *.wav
  ast-jax predict --model hf:MIT/ast-finetuned-speech-commands-v2 --output out.jsonl clips/
  ast-jax predict --model model/ --window 1.0 --hop 0.25 --top-k 3 recording.wav
  arecord -f S16_LE -r 16000 -t wav | ast-jax predict --model model/ --window 1.0 --hop 0.25 -
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

from ast_jax.commands import (check_not_an_input, check_output_file, partial_name, positive_float, positive_int,
                              raise_if_interrupted)

STDIN = "-"  # the input name that reads standard input
FORMATS = ("table", "jsonl", "csv")


def output_format(chosen: str | None, output: str | None) -> str:
    """--format when given, else what --output's extension names (.csv, .jsonl), else a table. A .json name
    is refused: the rows are JSON lines, which a JSON reader would not take."""
    if chosen is not None:
        return chosen
    suffix = os.path.splitext(str(output or ""))[1].lower().lstrip(".")
    if suffix == "json":
        raise ValueError(f"{output}: predict writes JSON lines, not one JSON document; name the file .jsonl, or "
                         "give --format")
    return suffix if suffix in ("csv", "jsonl") else "table"


def add_model_arguments(parser: argparse.ArgumentParser, *, workers: bool = True,
                        batch_help: str = "clips per jitted batch (default 6 on CPU, 64 on GPU/TPU)") -> None:
    """--model, --batch-size, --dtype and (for commands that read files) --workers."""
    parser.add_argument("--model", required=True,
                        help="ast-jax model folder, .pth checkpoint, Hugging Face folder or hf:<repo>")
    parser.add_argument("--batch-size", type=positive_int, default=None, help=batch_help)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="compute dtype (default: an ast-jax folder's config, float32 for a converted "
                             "checkpoint; bfloat16 is fast on GPUs and on CPUs with AVX512-BF16 or AMX, and close "
                             "to float32 rather than equal)")
    if workers:
        parser.add_argument("--workers", type=positive_int, default=4, help="threads decoding audio (default 4)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="audio files, folders (searched recursively), globs, or - for standard input")
    add_model_arguments(parser)
    parser.add_argument("--top-k", type=positive_int, default=5, help="labels per file or window (default 5)")
    parser.add_argument("--activation", choices=["sigmoid", "softmax", "none"], default=None,
                        help="how scores are made from logits, none for the logits themselves (default: what "
                             "the model was trained with)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format (default: csv or jsonl when --output ends in .csv or .jsonl, else table)")
    parser.add_argument("--output", "-o", default=None, help="write here (atomically) instead of stdout")
    parser.add_argument("--window", type=positive_float, default=None, metavar="SECONDS",
                        help="classify each file window by window, windows this long (at most the model's "
                             "input: 1.295 s for the released Speech Commands geometry, 10.255 s for AudioSet's); the "
                             "last window holds what is left, if at least one 25 ms frame")
    parser.add_argument("--hop", type=positive_float, default=None, metavar="SECONDS",
                        help="step between windows (default: the window length)")


def report_error(name: str, error: Exception) -> None:
    """One line per bad input on stderr: the reader's message already starts with the file name."""
    from ast_jax.data.files import decode_problem

    message = decode_problem(error).strip()
    message = message.splitlines()[0] if message else type(error).__name__
    print(message if message.startswith(str(name)) else f"{name}: {message}", file=sys.stderr)


class Failures:
    """Counts bad inputs and reports each in one line on stderr; `exit_code` gives the closing lines and exit code.
    Also counts the files longer than the model's input (`heard`), whose end the model never hears: one note
    at the end, as a recording given without --window is most likely a mistake."""

    def __init__(self, command: str, unmatched: list[str]):
        self.command, self.count, self.unmatched = command, 0, len(unmatched)
        self.long, self.input_seconds = 0, 0.0
        for pattern in unmatched:
            found = "no audio files in it" if os.path.isdir(pattern) else "no audio files match"
            self(pattern, ValueError(f"{pattern}: {found}"))

    def __call__(self, name: str, error: Exception) -> None:
        self.count += 1
        report_error(name, error)

    def heard(self, samples: int, predictor) -> None:
        """Note a file of `samples` decoded samples, cut to the predictor's input where it has more analysis frames
        (samples short of one more frame are no loss: they make none)."""
        features = predictor.model.features
        if features.num_frames(samples) > features.target_length:
            self.long += 1
            self.input_seconds = predictor.clip_samples / predictor.model.features.sample_rate

    def exit_code(self, total: int) -> int:
        if self.long:
            hint = "; --window classifies a recording window by window" if self.command == "predict" else ""
            print(f"ast-jax {self.command}: {self.long} file{'s' * (self.long != 1)} longer than the model's input "
                  f"({self.input_seconds:g} s): only {'its' if self.long == 1 else 'their'} start was heard{hint}",
                  file=sys.stderr)
        if self.count:
            what = "inputs" if self.unmatched else "files"
            print(f"ast-jax {self.command}: {self.count} of {total} {what} failed", file=sys.stderr)
        return 1 if self.count else 0


def progress(total: int, description: str):
    """A tqdm bar on stderr for long runs (hidden for a handful of files or when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="file", file=sys.stderr,
                disable=total < 16 or not sys.stderr.isatty())


def _format_labels(labels: list[dict]) -> str:
    return ", ".join(f"{_table_cell(item['label'])} ({item['score']:.3f})" for item in labels)


# Control characters (line breaks, tabs, escape sequences) as Python writes them in a string literal.
_CONTROL = {code: repr(chr(code))[1:-1] for code in (*range(32), *range(127, 160))}


def _table_cell(text: str) -> str:
    """`text` for a table cell: a line break or tab in a file name or label would break the table's rows."""
    return text.translate(_CONTROL)


def _csv_rows(buffer: io.StringIO, rows: list[list[str]]) -> None:
    """CSV rows with "\n" line ends. Python's csv module quotes fields holding a character of the line end,
    so a bare carriage return would be written unquoted and read back as a line break: rows that hold one are
    written fully quoted."""
    plain = csv.writer(buffer, lineterminator="\n")
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        (quoted if any("\r" in field for field in row) else plain).writerow(row)


def seconds(value: float) -> str:
    """A window's start or end for a table or CSV: to the microsecond, without trailing zeros (0.0625, 12)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def format_rows(rows: list[dict], output_format: str, top_k: int, windowed: bool = False, *,
                header: bool = True, widths: list[int] | None = None, score_title: str = "score") -> str:
    """Rows {"file", ["start", "end"], "labels"} as a table, JSON lines or CSV; `top_k` labels a row (the
    header's count, also when no file could be read). A table's columns fit its rows unless `widths` fixes
    them (for rows written as they come). `score_title`: "logit" where the scores are the logits."""
    if output_format == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    if output_format == "csv":
        buffer = io.StringIO()
        titles = ["file"] + (["start", "end"] if windowed else []) + [
            f"{kind}_{i + 1}" for i in range(top_k) for kind in ("label", score_title)]
        _csv_rows(buffer, ([titles] if header else []) + [
            [row["file"]] + ([seconds(row["start"]), seconds(row["end"])] if windowed else [])
            + [v for item in row["labels"] for v in (item["label"], f"{item['score']:.6f}")] for row in rows])
        return buffer.getvalue()
    titles = ["file"] + (["start", "end"] if windowed else []) + ["label", score_title, f"top {top_k}"]
    table = ([titles] if header else []) + [
        [_table_cell(row["file"])] + ([seconds(row["start"]), seconds(row["end"])] if windowed else [])
        + [_table_cell(row["labels"][0]["label"]), f"{row['labels'][0]['score']:.3f}", _format_labels(row["labels"])]
        for row in rows]
    widths = widths or [max(len(line[i]) for line in table) for i in range(len(titles) - 1)]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1] + "\n"
                   for line in table)


def write_text(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from ast_jax._atomic import write_text_atomically

    write_text_atomically(output, text)


def standard_input(live: bool):
    """Standard input named "-": as a live stream (read as it arrives) or, whole, as the bytes of a file."""
    if sys.stdin is None or sys.stdin.isatty():
        raise ValueError("-: standard input is a terminal; pipe audio into it (e.g. arecord -t wav | ...)")
    if live:
        from ast_jax.audio import WholeStream

        stream = WholeStream(sys.stdin.fileno(), "rb", closefd=False)
    else:
        stream = io.BytesIO(sys.stdin.buffer.read())
    stream.name = STDIN
    return stream


def stream_rows(rows, output_format: str, top_k: int, labels: list[str], windowed: bool, score_title: str = "score"):
    """Text for each row as it comes, the header first. A table's columns are as wide as the longest label
    can need, since the rows to come are not known."""
    widths = None
    if output_format == "table":
        times = [12, 12] if windowed else []  # up to 99999.999938 s, about a day
        label_width = max(len("label"), *(len(_table_cell(label)) for label in labels))
        widths = [max(len("file"), len(STDIN)), *times, label_width, max(len(score_title), 6)]
    yield format_rows([], output_format, top_k, windowed, widths=widths, score_title=score_title)
    for row in rows:
        yield format_rows([row], output_format, top_k, windowed, header=False, widths=widths, score_title=score_title)


def write_rows(rows, args: argparse.Namespace, top_k: int, labels: list[str], *, windowed: bool,
               live: bool = False) -> None:
    """Rows to stdout as they come where the format allows (JSON lines and CSV; a table too for a live
    stream), else, and to --output (atomically), once all are in; with no rows at all, --output is left as it
    was. Interrupted, what has come so far is still written: to stdout, or beside --output (`partial_name`)."""
    title = "logit" if getattr(args, "activation", None) == "none" else "score"
    formatted = lambda kept: format_rows(kept, args.format, top_k, windowed=windowed, score_title=title)  # noqa: E731
    if args.output is None and (args.format != "table" or live):
        for text in stream_rows(rows, args.format, top_k, labels, windowed, title):
            sys.stdout.write(text)
            sys.stdout.flush()
        return
    kept = []
    try:
        kept.extend(rows)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep what is done; any other failure writes nothing
        if args.output is None and kept:  # (a table to stdout: the other formats streamed above)
            write_text(formatted(kept), None)
        elif kept:
            partial = partial_name(args.output)
            try:
                write_text(formatted(kept), partial)
                print(f"ast-jax predict: interrupted; the {len(kept)} row{'s' * (len(kept) != 1)} done are in "
                      f"{partial}", file=sys.stderr)
            except OSError as error:  # said, and the exit status still tells of the interrupt
                print(f"ast-jax predict: error: {error}", file=sys.stderr)
        raise
    if not kept and args.output is not None:  # every input failed: an earlier output stays as it was
        print(f"ast-jax predict: no results; {args.output} not written", file=sys.stderr)
        return
    if not kept and args.format == "table":  # a table's header over no rows says nothing the errors did not
        return
    write_text(formatted(kept), args.output)
    if args.output is not None:
        print(f"ast-jax predict: {len(kept)} row{'s' * (len(kept) != 1)} -> {args.output}", file=sys.stderr)


def check_windows(classify, args: argparse.Namespace) -> None:
    """--window and --hop checked against the model (an error), and a hop that skips audio named (a note)."""
    classify.check_window(args.window, args.hop)
    if args.hop is not None and args.hop > args.window:
        print(f"ast-jax predict: --hop {args.hop:g} s is longer than --window {args.window:g} s: "
              f"{args.hop - args.window:g} s of every {args.hop:g} s is not classified", file=sys.stderr)


def run_stream(args: argparse.Namespace, failures: Failures) -> int:
    """`--window` over standard input: each window's labels are written as soon as it is classified (with
    --output, the file is written when the stream ends or is interrupted)."""
    from ast_jax.inference import pipeline

    source = standard_input(live=True)
    # One window per call: a batch would wait for windows that have not been recorded yet.
    classify = pipeline(args.model, batch_size=args.batch_size or 1, activation=args.activation,
                        dtype=args.dtype, workers=args.workers)
    check_windows(classify, args)
    top_k = min(args.top_k, len(classify.labels))
    rows = ({"file": STDIN, **window}
            for window in classify.iter_windows(source, args.window, args.hop, top_k=top_k, live=True))
    try:
        write_rows(rows, args, top_k, classify.labels, windowed=True, live=True)
    except BrokenPipeError:
        raise  # our reader went away, not the stream: the command line ends quietly
    except (OSError, ValueError) as error:
        failures(STDIN, error)
    return failures.exit_code(1)


def run(args: argparse.Namespace) -> int:
    from ast_jax.inference import expand_inputs, pipeline

    check_output_file(args.output)
    args.format = output_format(args.format, args.output)
    if STDIN in args.inputs and len(args.inputs) > 1:
        raise ValueError(f"{STDIN}: standard input cannot be combined with other inputs")
    if args.hop is not None and args.window is None:
        raise ValueError("--hop needs --window")
    if args.inputs == [STDIN] and args.window is not None:
        return run_stream(args, Failures("predict", []))
    files, unmatched = expand_inputs(args.inputs)
    check_not_an_input(args.output, files)
    if files == [STDIN]:
        files = [standard_input(live=False)]
    failures = Failures("predict", unmatched)
    classify = pipeline(args.model, batch_size=args.batch_size, activation=args.activation, dtype=args.dtype,
                        workers=args.workers)
    if args.window is not None:
        check_windows(classify, args)

    def rows():
        with progress(len(files), "predict") as bar:
            if args.window is None:
                def on_error(name, error):
                    failures(getattr(name, "name", name), error)
                    bar.update(1)

                for path, out in classify.predict_files(files, top_k=args.top_k, on_error=on_error):
                    raise_if_interrupted()
                    failures.heard(out["samples"], classify.predictor)
                    yield {"file": getattr(path, "name", path), "labels": out["labels"]}
                    bar.update(1)
                return
            for path in files:
                try:
                    for window in classify.iter_windows(path, args.window, args.hop, top_k=args.top_k):
                        raise_if_interrupted()
                        yield {"file": path, **window}
                except (OSError, ValueError) as error:  # the windows before the damage are kept
                    failures(path, error)
                bar.update(1)

    write_rows(rows(), args, min(args.top_k, len(classify.labels)), classify.labels,
               windowed=args.window is not None)
    return failures.exit_code(len(files) + len(unmatched))
