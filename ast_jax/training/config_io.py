"""Training configs as Python files, and command-line overrides of their fields.

A config file defines `get_config(arg=None)` returning an `ml_collections.ConfigDict`; `path.py:arg` passes
`arg` (for example `configs/speech_commands.py:runlocal`); a run's saved WORKDIR/config.json is read as it is,
to resume or repeat that run. Overrides are `field.sub=value` strings: the value is
read as a Python literal where it parses as one (numbers, True/False, None, tuples, quoted strings) and as plain
text otherwise, then checked against the type of the field it replaces. An unknown field is an error, so a typo
can never be silently ignored.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import traceback
from pathlib import Path
from typing import Iterable

import ml_collections

from ast_jax._atomic import write_text_atomically


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The ConfigDict of `path.py` or `path.py:arg`, or of a resolved config a run saved (WORKDIR/config.json)."""
    if spec.endswith(".json"):
        return _load_saved_config(Path(spec))
    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    if Path(path).suffix != ".py":
        raise ValueError(f"{path}: a config is a Python file (.py) defining get_config(), or a run's config.json")
    module_spec = importlib.util.spec_from_file_location(f"ast_jax_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
    except SyntaxError as error:
        raise ValueError(f"{path}:{error.lineno}: {error.msg}") from None
    except AttributeError as error:
        if not hasattr(module, "get_config"):
            raise ValueError(f"{path}: a config file must define get_config()") from None
        raise ValueError(f"{_where(path, error)}: AttributeError: {error}") from None
    except Exception as error:  # the config's own code failed: say where, in its file, in one line
        raise ValueError(f"{_where(path, error)}: {type(error).__name__}: {error}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    return config


def _load_saved_config(path: Path) -> ml_collections.ConfigDict:
    """A config as `save_config` wrote it, for resuming or repeating that run."""
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: config file not found") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable config ({error})") from None
    if not isinstance(values, dict) or not {"data", "model", "optim"} <= set(values):
        raise ValueError(f"{path}: not a training config saved by a run (no data, model and optim sections)")
    return ml_collections.ConfigDict(values)


def _where(path: str, error: BaseException) -> str:
    """`path:line` of the innermost line of the config file in the error's traceback (`path` if none)."""
    line = next((frame.lineno for frame in reversed(traceback.extract_tb(error.__traceback__))
                 if Path(frame.filename).resolve() == Path(path).resolve()), None)
    return f"{path}:{line}" if line else path


# Groups whose entries are names the user picks (the json source's split -> manifest map): overrides may add
# entries to them.
OPEN_GROUPS = ("data.json",)


def _literal(text: str):
    """`text` as a Python literal where it is one, else as it is."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_value(text: str, current, name: str):
    value = _literal(text)
    if current is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if str(text).lower() in ("true", "false", "yes", "no", "1", "0"):
            return str(text).lower() in ("true", "yes", "1")
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(current, str):
        return text if not isinstance(value, str) else value
    elif isinstance(current, (tuple, list)):
        if isinstance(value, (tuple, list)):
            return type(current)(value)
        if isinstance(value, str):  # yes,no,up: the items, as a shell user writes a list
            return type(current)(item.strip() for item in value.split(",") if item.strip())
        if isinstance(value, (int, float)):
            return type(current)([value])
    elif isinstance(value, type(current)):
        return value
    raise ValueError(f"config field {name!r} is {type(current).__name__}, cannot set it to {text!r}")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Set each `dotted.name=value` in `config` (in place, and returned), refusing unknown fields."""
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"override {item!r} is not of the form field=value")
        path = name.split(".")
        parent = node = config
        for depth, key in enumerate(path):
            group = ".".join(path[:depth])
            if isinstance(node, ml_collections.ConfigDict) and key not in node and group in OPEN_GROUPS \
                    and depth == len(path) - 1:
                parent, node = node, ""  # a new entry of a free-form group: a text value
                break
            if not isinstance(node, ml_collections.ConfigDict) or key not in node:
                known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
                raise ValueError(f"unknown config field {name!r} (fields of {group or 'the config'}: {known})")
            parent, node = node, node[key]
        if isinstance(node, ml_collections.ConfigDict):
            value = _literal(text)
            if name not in OPEN_GROUPS or not isinstance(value, dict):
                whole = " or all of it as a dict" if name in OPEN_GROUPS else ""
                raise ValueError(f"config field {name!r} is a group; set one of its fields "
                                 f"({', '.join(sorted(node.keys()))}){whole}")
            with parent.unlocked():
                parent[path[-1]] = ml_collections.ConfigDict(value)
            continue
        with parent.unlocked():
            parent[path[-1]] = _parse_value(text, node, name)
    return config


def add_source_fields(config: ml_collections.ConfigDict, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Give `config.data` the fields its source reads beyond the common ones (`ast_jax.data.SOURCE_FIELDS`), at
    their defaults where the config does not set them, so that overrides can reach them. The source is the one
    the overrides name last, else the config's; where the overrides name another source than the config's, the
    fields only the config's source reads are dropped (configs/audioset.py on a CSV manifest has no data.json)."""
    from ast_jax.data import SOURCE_FIELDS

    configured = source = config.data.get("source")
    for item in overrides:
        name, _, text = item.partition("=")
        if name.strip() == "data.source":
            source = _parse_value(text, "", "data.source")
    with config.data.unlocked():
        if source != configured:  # a recipe moved to another source: drop the fields only its own source reads
            for name in set(SOURCE_FIELDS.get(configured, {})) - set(SOURCE_FIELDS.get(source, {})):
                if name in config.data:
                    del config.data[name]
        for name, default in SOURCE_FIELDS.get(source, {}).items():
            if name not in config.data:
                config.data[name] = default
    return config


# Fields that hold file or folder names (and data.json's split -> manifest entries): a leading "~" in them
# is the user's home folder, as the shell would have read it outside a --config.field=value word.
PATH_FIELDS = ("data.data_dir", "data.cache_dir", "data.label_csv", "data.json", "init.source")


def expand_user_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with `~` and `~user` expanded at the start of its PATH_FIELDS."""
    config = config.copy_and_resolve_references()
    for name in PATH_FIELDS:
        group, _, field = name.rpartition(".")
        parent = config.get(group)
        if parent is None or field not in parent:
            continue
        value = parent[field]
        with parent.unlocked():
            if isinstance(value, str):
                parent[field] = os.path.expanduser(value)
            elif isinstance(value, ml_collections.ConfigDict):
                for key, entry in value.items():
                    if isinstance(entry, str):
                        value[key] = os.path.expanduser(entry)
    return config


def config_values(config: ml_collections.ConfigDict) -> dict:
    """The config as plain JSON values: what `save_config` writes and a saved config.json reads back as."""
    return json.loads(json.dumps(config.to_dict(), default=str))


def save_config(config: ml_collections.ConfigDict, path: str | os.PathLike) -> None:
    """Write the resolved config as JSON, atomically."""
    text = json.dumps(config_values(config), indent=2, sort_keys=True) + "\n"
    write_text_atomically(path, text)
