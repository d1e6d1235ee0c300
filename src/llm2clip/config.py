"""Typed YAML configs: dataclasses filled from YAML, with overrides and clear errors.

Every recipe is a dataclass tree. `load_config(Stage1Config, "configs/stage1/paper.yaml",
overrides=["train.lr=1e-4"])` reads the file, applies `key=value` overrides, and refuses
any key that the dataclass does not define, naming it and listing the valid ones.

Values are checked too, in one place: a field declares what it accepts next to its
default, `batch_size: int = setting(32, at_least=1)`, `device: str = setting("auto",
choices=DEVICES)`, and `check_config` refuses the first value outside that, naming its
key (`train.max_steps must be >= 1 (or null: ...), got -3`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says where and why."""


CHECK = "llm2clip.check"  # the dataclass field metadata key `setting` stores a Check under


@dataclass(frozen=True)
class Check:
    """The values a setting accepts: a range (bounds inclusive `at_least`/`at_most` or
    exclusive `above`/`below`) or a list of `choices`. `null` says what null means where the
    field's type allows it (e.g. "use train.epochs")."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    choices: tuple[str, ...] | None = None
    null: str | None = None

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` (the message after the key), or None."""
        if self.choices is not None:
            return None if value in self.choices else f"{value!r} is not one of {', '.join(self.choices)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        ok = ((self.at_least is None or value >= self.at_least) and (self.above is None or value > self.above)
              and (self.at_most is None or value <= self.at_most) and (self.below is None or value < self.below))
        return None if ok else f"must be {self.describe()}, got {value!r}"

    def describe(self) -> str:
        low = f"[{_number_text(self.at_least)}" if self.at_least is not None else (
            f"({_number_text(self.above)}" if self.above is not None else None)
        high = f"{_number_text(self.at_most)}]" if self.at_most is not None else (
            f"{_number_text(self.below)})" if self.below is not None else None)
        if low and high:
            text = f"in {low}, {high}"
        elif low:
            text = (">= " if low[0] == "[" else "> ") + low[1:]
        else:
            text = ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return text + (f" (or null: {self.null})" if self.null else "")


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **check: Any) -> Any:
    """A dataclass field with the values it accepts: `setting(1, at_least=1)`,
    `setting("auto", choices=DEVICES)`, `setting(None, at_least=1, null="use train.epochs")`."""
    return dataclasses.field(default=default, default_factory=factory, metadata={CHECK: Check(**check)})


def check_config(cfg: Any, source: str | None = None) -> None:
    """Raise ConfigError naming the first setting of `cfg` (a dataclass tree) that is
    outside what its field declares; `source` (the file) prefixes the message."""
    for key, value, check, nullable in _declared_settings(cfg, ""):
        if value is None:
            problem = None if nullable else "must be set, got null"
        else:
            problem = check.problem(value)
        if problem:
            raise ConfigError(f"{source + ': ' if source else ''}{key} {problem}")


def _declared_settings(cfg: Any, prefix: str):
    """(key, value, Check, whether null is allowed) of every checked field, depth first."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _declared_settings(value, key + ".")
        elif isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            for i, item in enumerate(value):
                yield from _declared_settings(item, f"{key}[{i}].")
        elif CHECK in f.metadata or float in (hints[f.name], *typing.get_args(hints[f.name])):
            # every float must at least be finite (YAML reads .nan / .inf, and `nan` from --set)
            yield key, value, f.metadata.get(CHECK, Check()), type(None) in typing.get_args(hints[f.name])


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass `cls` from a (nested) dict, refusing unknown keys."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type (nested dataclasses, numbers from strings)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping ({{key: value, ...}}), got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        return _number(tp, value, where)
    if tp is str and not isinstance(value, str):
        if value is None:
            return None
        return str(value)
    return value


def _number(tp: type, value: Any, where: str) -> int | float:
    """YAML reads `1e-4` as a string and `2048.0` as a float: accept both where sensible."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    if tp is int:
        if not number.is_integer():
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return int(number)
    return number


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a nested dict."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=1e-4")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    """Read `path` (optional), apply overrides, and build `cls`, naming any bad key."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    cfg = from_dict(cls, data, where=str(path) if path else "config")
    check_config(cfg, str(path) if path else None)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def packaged_config(name: str) -> Path:
    """A recipe shipped with the package, e.g. packaged_config("stage1/demo.yaml").

    The repository's top-level `configs/` is a link to the same folder.
    """
    path = Path(__file__).parent / "configs" / name
    if not path.is_file():
        raise ConfigError(f"no packaged config {name!r} (looked in {path.parent})")
    return path
