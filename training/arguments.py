"""Settings of the training scripts: one dataclass, ``transformers.HfArgumentParser``, one-line errors.

A script declares its settings as one dataclass whose fields all have a default and carry their own
help (``field(default=..., metadata={"help": "..."})``), and optionally a ``validate()`` method that
raises ``ValueError`` naming the first bad setting. :func:`parse_config` reads ``--config FILE``
(YAML or JSON, through ``HfArgumentParser.parse_yaml_file`` / ``parse_json_file``), then the
command line, which overrides the file; :func:`run_cli` turns every :class:`ConfigError` into one
line on stderr and exit code 2. ``training/train.py`` and ``training/pretrain_dna.py`` use both.

Beyond ``HfArgumentParser`` (each for a reason a user hits):
- ``none`` / ``null`` on the command line sets an optional setting back to ``None`` (a file may set it);
- a mapping setting takes YAML on the command line (``--model_config_overrides '{dna_pooling: masked_mean}'``);
- file values are type-checked and name the file (``parse_dict`` would pass ``"ten"`` to an int field);
- a negative number is a value, also in scientific notation (``--learning_rate -1e-3``);
- flag abbreviations are off (``--learning`` must not silently mean ``--learning_rate``), and no
  ``<script>.args`` file is read behind the user's back.

Example:
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Settings:
    ...     steps: int = field(default=10, metadata={"help": "Optimiser steps."})
    >>> parse_config(Settings, ["--steps", "3"]).steps
    3
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from transformers import HfArgumentParser

T = TypeVar("T")
_NONE_WORDS = ("none", "null")


class ConfigError(ValueError):
    """A setting or input the user must fix; :func:`run_cli` prints it as one line and exits 2."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    args = typing.get_args(hint)
    if (typing.get_origin(hint) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def _yaml_mapping(text: str) -> dict[str, Any]:
    """A mapping setting given on the command line, as YAML (JSON is YAML too)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"not YAML: {one_line(err)}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expects a mapping such as '{{key: value}}', got {text!r}")
    return value


def _accept_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.strip().lower() in _NONE_WORDS else convert(text)

    # argparse names the type in "invalid <name> value" messages.
    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


class _SettingsParser(HfArgumentParser):
    """HfArgumentParser whose errors raise :class:`ConfigError` and whose per-field converters
    accept ``none`` for optional settings and YAML for mappings."""

    def __init__(self, config_class: type, **kwargs: Any):
        self._hints = typing.get_type_hints(config_class)
        self.converters: dict[str, Callable[[str], Any]] = {}
        super().__init__(config_class, **kwargs)

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        dest = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
        hint = getattr(self, "_hints", {}).get(dest)
        if kwargs.get("action") == "store_false" and hint is not None:
            # HfArgumentParser's --no_X complement of a true-by-default flag would repeat X's help.
            kwargs["help"] = f"Same as --{dest} false."
        if isinstance(kwargs.get("help"), str):
            kwargs["help"] = kwargs["help"].replace("%", "%%")  # argparse %-formats help texts
        if hint is not None and "type" in kwargs and kwargs.get("action") is None:
            inner, optional = _unwrap_optional(hint)
            if typing.get_origin(inner) is dict or inner is dict:
                kwargs["type"] = _yaml_mapping
            if optional and inner is not bool and "choices" not in kwargs:
                kwargs["type"] = _accept_none(kwargs["type"])
            self.converters[dest] = kwargs["type"]
        return super().add_argument(*names, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        # "argument --a_b/--a-b: invalid int value" -> "--a_b: invalid int value"
        raise ConfigError(re.sub(r"argument (--[\w]+)(?:/--[\w-]+)*", r"\1", one_line(message)))


def _describe(hint: Any) -> str:
    """The expected type in words, for messages ("an integer or null")."""
    inner, optional = _unwrap_optional(hint)
    origin = typing.get_origin(inner)
    if origin is Literal:
        text = "one of " + ", ".join(map(str, typing.get_args(inner)))
    elif origin is list:
        item = _describe(typing.get_args(inner)[0])
        text = "a list of " + {"a string": "strings", "an integer": "integers", "a number": "numbers"}.get(item, item)
    elif origin is dict or inner is dict:
        text = "a mapping"
    else:
        text = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(inner, str(inner))
    return text + (" or null" if optional else "")


def _matches(value: Any, hint: Any) -> bool:
    """Whether a value read from a file has the field's annotated type (ints count as numbers)."""
    inner, optional = _unwrap_optional(hint)
    if value is None:
        return optional
    origin = typing.get_origin(inner)
    if origin is Literal:
        return value in typing.get_args(inner)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, typing.get_args(inner)[0]) for v in value)
    if origin is dict or inner is dict:
        return isinstance(value, dict)
    if inner is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if inner is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, inner) if isinstance(inner, type) else True


def _closest(name: str, names: Sequence[str]) -> str:
    """The suffix ' (did you mean X?)' for a near miss, else an empty string."""
    match = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def _file_settings(parser: _SettingsParser, config_class: type, path: Path) -> dict[str, Any]:
    """The settings a YAML/JSON file gives, converted and checked against the field types."""
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"--config {path}: expected a .yaml, .yml or .json file")
    try:
        read = parser.parse_json_file if suffix == ".json" else parser.parse_yaml_file
        (from_file,) = read(path)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid {'JSON' if suffix == '.json' else 'YAML'}: {one_line(err)}") from None
    except (ValueError, AttributeError, TypeError):
        # parse_dict rejects unknown keys (and cannot take a non-mapping): re-read to name them.
        raw = json.loads(path.read_text()) if suffix == ".json" else yaml.safe_load(path.read_text())
        if not isinstance(raw, dict):
            got = "an empty file" if raw is None else type(raw).__name__
            raise ConfigError(f"{path}: expected a mapping of settings, got {got}") from None
        names = [f.name for f in dataclasses.fields(config_class)]
        unknown = [k for k in raw if k not in names]
        raise ConfigError(
            f"{path}: unknown setting {unknown[0]!r}{_closest(str(unknown[0]), names)}; --help lists them"
        ) from None
    defaults = config_class()
    settings = {}
    for f in dataclasses.fields(config_class):
        value = getattr(from_file, f.name)
        if value == getattr(defaults, f.name) and type(value) is type(getattr(defaults, f.name)):
            continue
        hint = parser._hints[f.name]
        convert = parser.converters.get(f.name)
        if isinstance(value, str) and convert is not None and not _matches(value, hint):
            try:
                value = convert(value)
            except (ValueError, TypeError, argparse.ArgumentTypeError):
                pass  # reported below with the expected type
        if isinstance(value, int) and not isinstance(value, bool) and _unwrap_optional(hint)[0] is float:
            value = float(value)
        if not _matches(value, hint):
            raise ConfigError(f"{path}: setting {f.name!r} expects {_describe(hint)}, got {value!r}")
        settings[f.name] = value
    return settings


def _attach_negative_numbers(argv: Sequence[str]) -> list[str]:
    """``--flag -1e-3`` -> ``--flag=-1e-3``: argparse reads ``-1e-3`` as an unknown option."""
    out: list[str] = []
    for token in argv:
        if out and token.startswith("-") and out[-1].startswith("--") and "=" not in out[-1]:
            try:
                float(token)
            except ValueError:
                pass
            else:
                out[-1] = f"{out[-1]}={token}"
                continue
        out.append(token)
    return out


def parse_config(
    config_class: type[T],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
) -> T:
    """Parse ``[--config FILE.yaml|json] [--setting value ...]`` into ``config_class``.

    The file sets any field; flags override it; then ``validate()`` runs if the class has one.
    ``--help`` prints every setting with its own help and default and exits 0.

    Raises:
        ConfigError: one line naming the flag, file or setting that is wrong (unknown flag or key,
            wrong type, a ``validate()`` failure).
    """
    argv = _attach_negative_numbers(sys.argv[1:] if argv is None else argv)
    parser = _SettingsParser(
        config_class,
        prog=prog,
        description=description,
        allow_abbrev=False,
        usage="%(prog)s [--config FILE.yaml|FILE.json] [--SETTING VALUE ...]",
    )
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="YAML or JSON file of settings; settings given as flags override it")
    finder = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    finder.add_argument("--config", type=Path)
    finder.error = parser.error  # type: ignore[method-assign]
    config_file = finder.parse_known_args(argv)[0].config
    if config_file is not None:
        parser.set_defaults(**_file_settings(parser, config_class, config_file))
    cfg, _, remaining = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True, look_for_args_file=False)
    if remaining:
        flags = [a for a in remaining if a.startswith("-")]
        names = [f"--{f.name}" for f in dataclasses.fields(config_class)]
        if flags:
            flag = flags[0].split("=")[0]
            raise ConfigError(f"unknown setting {flag}{_closest(flag, names)}; --help lists them")
        raise ConfigError(f"unexpected argument {remaining[0]!r}: settings are given as --SETTING VALUE")
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as err:
            raise ConfigError(one_line(err)) from None
    return cfg


def run_cli(
    main: Callable[[list[str] | None], Any],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """Run ``main(argv)``; a :class:`ConfigError` (or one of ``expected``) becomes one line on
    stderr (``PROG: error: ...``) and exit code 2, with no traceback. Returns 0 on success.

    Example (the end of a training script):
        >>> if __name__ == "__main__":  # doctest: +SKIP
        ...     raise SystemExit(run_cli(main, prog="train.py"))
    """
    try:
        main(None if argv is None else list(argv))
    except (ConfigError, *expected) as err:
        print(f"{prog or Path(sys.argv[0]).name}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0
