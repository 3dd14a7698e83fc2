"""YAML into typed, frozen dataclasses, strictly: the machinery behind params.py.

Every field is checked against its type hint, no key may be unknown or missing, and each
dataclass's own `check` runs; any problem is one ParamsError naming the dotted key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import reprlib
import types
import typing
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Literal, Union

import yaml

from agegender.errors import UserError


class ParamsError(UserError):
    """A key or value in params.yaml is wrong."""


def need(ok: bool, key: str, problem: str | Callable[[], str]) -> None:
    """Stop with `key: problem` unless ok; a callable problem is formatted only on failure."""
    if not ok:
        raise ParamsError(f"{key}: {problem() if callable(problem) else problem}")


def shown(value: object) -> str:
    """A value as a message shows it: its repr, cut to 80 characters."""
    short = reprlib.Repr()
    short.maxstring, short.maxlist, short.maxdict, short.maxlevel = 60, 6, 6, 3
    text = short.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a duplicate key is an error, not the last one winning,
    and an alias (`*name`) is refused: nine nested aliases expand to a billion values."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                problem=f"alias *{event.anchor}; write the value out instead",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may override keys
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):  # super() reports it
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {key!r}; keep one", problem_mark=key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _convert(hint: object, value: object, key: str) -> object:
    """Check `value` against the type hint `hint` and return it in that type."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is Literal:
        options = typing.get_args(hint)
        need(value in options, key, lambda: f"must be one of {list(options)}, got {shown(value)}")
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        if isinstance(value, dict):  # the one mapping whose keys it uses: that one's message
            named = [o for o in options if dataclasses.is_dataclass(o)]
            named = [o for o in named if set(value) & {f.name for f in dataclasses.fields(o)}]
            if len(named) == 1:
                return _convert(named[0], value, key)
        problems = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except ParamsError as error:
                problems.append(str(error).split(": ", 1)[1])
        raise ParamsError(f"{key}: {' or '.join(problems)}")
    if hint is typing.Any:  # checked where it is used (a search's choices: by the trial's load)
        return value
    if origin is dict:
        need(isinstance(value, dict), key, lambda: f"must be a mapping, got {shown(value)}")
        _, item = typing.get_args(hint)
        return {str(k): _convert(item, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        need(isinstance(value, list), key, lambda: f"must be a list, got {shown(value)}")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        need(isinstance(value, bool), key, lambda: f"must be true or false, got {shown(value)}")
        return value
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        need(ok, key, lambda: f"must be an integer, got {shown(value)}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        need(ok, key, lambda: f"must be a number, got {shown(value)}")
        with contextlib.suppress(OverflowError):  # an int too big for a float stays an int
            value = float(value)
        ok = isinstance(value, float) and math.isfinite(value)
        need(ok, key, lambda: f"must be a finite number, got {shown(value)}")
        return value
    if hint is str:
        need(isinstance(value, str), key, lambda: f"must be a string, got {shown(value)}")
        return value
    raise TypeError(f"{key}: unsupported type hint {hint!r}")  # a bug here, not in the YAML


def build(cls: type, raw: object, at: str = "") -> object:
    """Build dataclass `cls` from a YAML mapping, strictly: no unknown, no missing keys."""
    where = at or "params.yaml"
    need(isinstance(raw, dict), where, lambda: f"must be a mapping, got {shown(raw)}")
    assert isinstance(raw, dict)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        need(
            key in names,
            f"{at}.{key}" if at else str(key),
            f"unknown key (expected one of {names})",
        )
    values = {}
    for name in names:
        key = f"{at}.{name}" if at else name
        need(name in raw, key, "missing")
        values[name] = _convert(hints[name], raw[name], key)
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(at)
    return obj


def set_at(raw: dict, key: str, value: object) -> None:
    """Set the value of a dotted key (`model_a.fit.epochs`) in a params mapping."""
    *path, last = key.split(".")
    for part in path:
        raw = raw[part]
    raw[last] = value


def set_dotted(raw: dict, assignment: str) -> None:
    """Apply one `key.path=value` override (value parsed as YAML), like `dvc exp run -S`."""
    key, value = assignment.split("=", 1)
    set_at(raw, key, yaml.safe_load(value))


def read_yaml(path: Path) -> object:
    """Parse a YAML file; a broken one is one line naming the file, line and column."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError as error:
        raise ParamsError(
            f"{path}: not a text file (byte {error.start} is not UTF-8); restore it from git"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ParamsError(f"{path}{where}: not valid YAML ({problem})") from None
    except RecursionError:  # [[[[...]]]] hundreds deep: params are a few levels at most
        raise ParamsError(f"{path}: nested too deeply to be params; restore it from git") from None
