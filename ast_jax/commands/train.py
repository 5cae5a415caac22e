"""Train or fine-tune an AST from a config file (the same as `python train.py`).

  ast-jax train --config configs/demo.py --workdir runs/demo
  ast-jax train --config configs/speech_commands.py --workdir runs/sc \\
      --config.data.data_dir=/data/speech_commands_v0.02 --config.batch_size=64 --set optim.learning_rate=1e-4

A config is a Python file whose get_config() returns an ml_collections ConfigDict (`path.py:arg` passes an
argument, e.g. configs/speech_commands.py:runlocal). `--config.FIELD=VALUE` and `--set FIELD=VALUE` override
any field; unknown fields are errors. The resolved config is saved as WORKDIR/config.json. Running the same
command again in the same workdir resumes from the latest checkpoint (a changed config is refused, except
num_epochs with the step schedule, the data location, logging, how often and at what batch it validates, the
test split, checkpoint settings and mesh.fsdp); a folder of data or another program's is refused. Ctrl-C or
SIGTERM stops after the current step with a checkpoint (exit 130 or 143); a second Ctrl-C stops at once.
Several processes (hosts) train together when each is started with --coordinator HOST:PORT --num-processes N
--process-id I (or --distributed on a cluster that jax.distributed detects by itself), with the same config
and one workdir they all share; each waits --join-timeout seconds (default 300) for the others.
"""

from __future__ import annotations

import argparse
import math
import time

from ast_jax.commands import non_negative_int, positive_int

OVERRIDE_PREFIX = "--config."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH.py[:ARG]",
                        help="training config file, or a run's WORKDIR/config.json to resume or repeat it")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and model folders go here")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field (repeatable); same as --config.FIELD=VALUE")
    parser.add_argument("--coordinator", metavar="HOST:PORT", help="jax.distributed coordinator address")
    parser.add_argument("--num-processes", type=positive_int, help="processes taking part (with --coordinator)")
    parser.add_argument("--process-id", type=non_negative_int, help="this process's index (with --coordinator)")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() with the cluster's own settings (SLURM, TPU, ...)")
    parser.add_argument("--join-timeout", type=positive_int, default=300, metavar="SECONDS",
                        help="how long a process waits for the coordinator and the others to join (default 300)")


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """argparse, plus `--config.FIELD=VALUE` / `--config.FIELD VALUE` collected as overrides, in the order given
    together with `--set FIELD=VALUE` (so the last one typed for a field wins, whichever form it takes)."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        item = argv[i]
        if item.startswith(OVERRIDE_PREFIX) or item == "--set":
            field = item[len(OVERRIDE_PREFIX):] if item != "--set" else ""
            if "=" not in field:
                if i + 1 >= len(argv):
                    parser.error(f"{item} needs a value")
                field, i = f"{field}={argv[i + 1]}" if field else argv[i + 1], i + 1
            overrides.append(field)
        elif item.startswith("--set="):
            overrides.append(item[len("--set="):])
        else:
            rest.append(item)
        i += 1
    args = parser.parse_args(rest)
    args.set = overrides
    return args


def wait_for_coordinator(address: str, timeout: float) -> None:
    """Return once something listens at `address` (HOST:PORT), or raise a one-line error after `timeout` s."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator {address}: expected HOST:PORT")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ConnectionError(f"--coordinator {address}: no coordinator answered in {timeout:g} s "
                                      f"(is process 0 running there?): {error}") from None
        time.sleep(0.5)


def check_process_counts(told: int) -> None:
    """Refuse, on every process, a run whose processes were given different --num-processes: the coordinator
    takes process 0's and the others would train on without a word."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    counts = np.asarray(multihost_utils.process_allgather(np.int32(told))).ravel()
    if (counts != jax.process_count()).any():
        said = ", ".join(f"process {i}: {n}" for i, n in enumerate(counts))
        raise ValueError(f"--num-processes differs between the processes ({said}); {jax.process_count()} joined")


def run(args: argparse.Namespace) -> int:
    import sys

    import jax

    if (args.num_processes is not None or args.process_id is not None) and not args.coordinator:
        raise ValueError("--num-processes and --process-id need --coordinator HOST:PORT (or use --distributed)")
    if args.coordinator and (args.num_processes is None or args.process_id is None):
        raise ValueError("--coordinator needs --num-processes and --process-id")
    if args.coordinator and args.process_id >= args.num_processes:
        raise ValueError(f"--process-id {args.process_id} is not below --num-processes {args.num_processes}")

    from ast_jax.training.config_io import add_source_fields, apply_overrides, load_config
    from ast_jax.training.trainer import (Preempted, TrainingDiverged, check_device_counts, check_fields, check_numbers,
                                         train_and_evaluate)

    # The config is read and checked before joining other processes, so that a typo fails at once.
    config = apply_overrides(add_source_fields(load_config(args.config), args.set), args.set)
    try:
        check_fields(config)
        check_numbers(config)
    except ValueError as error:
        raise ValueError(f"{args.config}: {error}") from None
    if args.coordinator:
        print(f"ast-jax train: process {args.process_id} of {args.num_processes} joining at {args.coordinator} "
              f"(waiting up to {args.join_timeout} s for the others, --join-timeout)", file=sys.stderr, flush=True)
        deadline = time.monotonic() + args.join_timeout
        if args.process_id != 0:  # jax.distributed aborts the process with a stack trace when nobody answers
            wait_for_coordinator(args.coordinator, args.join_timeout)
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                   initialization_timeout=max(1, math.ceil(deadline - time.monotonic())))
        check_device_counts()  # (the gathering below needs as many devices on every process)
        check_process_counts(args.num_processes)
    elif args.distributed:
        jax.distributed.initialize(initialization_timeout=args.join_timeout)
    try:
        train_and_evaluate(config, args.workdir)
    except Preempted as stop:
        print(f"ast-jax train: {stop}", file=sys.stderr)
        return stop.exit_code
    except TrainingDiverged as error:
        print(f"ast-jax train: error: {error}", file=sys.stderr)
        return 1
    return 0
