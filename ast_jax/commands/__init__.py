"""Subcommands of the `ast-jax` command line (see `ast_jax.cli`)."""

import argparse
import math
import os


def _number(kind, accept, description: str):
    """An argparse `type`: `kind(text)` when `accept` takes it, else argparse's usage error naming the option."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


positive_int = _number(int, lambda n: n > 0, "a positive integer")
non_negative_int = _number(int, lambda n: n >= 0, "an integer >= 0")
positive_float = _number(float, lambda x: math.isfinite(x) and x > 0, "a positive number")


def check_output_file(path: str | None) -> None:
    """Before any work: a ValueError naming `path` when a file cannot be written there (it is a folder)."""
    if path is not None and os.path.isdir(path):
        raise ValueError(f"{path}: is a folder; --output takes a file name")


def check_output_folder(path: str | None) -> None:
    """Before any work: a ValueError naming `path` when it exists and is not a folder."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path}: exists and is not a folder")
