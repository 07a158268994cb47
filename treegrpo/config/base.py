"""Strict loading of `params.yaml` sections into frozen dataclasses.

Every section is a frozen dataclass. `build(cls, mapping, where)` rejects unknown keys, missing keys and values of
the wrong type, naming the dotted key (`sampler.branching`), the bad value and what is allowed. Range checks live in
each section's `__post_init__` and go through `check` so every message has the same shape.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ParamsError(ValueError):
    """A bad value in params.yaml: the message names the key, the value and the fix."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widened to float where a float is wanted)."""
    origin = get_origin(tp)
    bad = ParamsError(f"{where}={value!r}: expected {_type_name(tp)}, got {type(value).__name__}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is Literal:
        if value not in get_args(tp):
            raise ParamsError(f"{where}={value!r}: must be one of {', '.join(repr(a) for a in get_args(tp))}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ParamsError:
                continue
        raise bad
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item,) = get_args(tp)
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad
        item = get_args(tp)[0]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise bad
        key_t, val_t = get_args(tp)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ParamsError(f"{where}: key {k!r} must be a string")
            out[k] = _convert(val_t, v, f"{where}.{k}")
        return types.MappingProxyType(out)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if tp is Any:
        return value
    raise TypeError(f"{where}: unsupported annotation {tp!r}")  # a bug in a section class, not in params.yaml


def build(cls: type[T], mapping: Any, where: str) -> T:
    """Build the frozen dataclass `cls` from `mapping`, strictly.

    Args:
        cls: a dataclass whose fields all have annotations supported by `_convert`.
        mapping: the parsed YAML section.
        where: the dotted path of the section, for messages (e.g. "sampler").
    Returns:
        an instance of `cls`; its `__post_init__` has run its range checks.
    """
    if not isinstance(mapping, dict):
        got = f"{type(mapping).__name__} {mapping!r}"
        raise ParamsError(f"{where or 'the file'}: expected a mapping of keys, got {got}")
    def key(name: str) -> str:
        return f"{where}.{name}" if where else name

    hints = get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise ParamsError(
            f"unknown key(s) {', '.join(key(k) for k in unknown)}; "
            f"allowed keys are {', '.join(sorted(names))}"
        )
    missing = [f.name for f in fields if f.name not in mapping]
    if missing:
        raise ParamsError(f"missing key(s) {', '.join(key(k) for k in missing)}; add them to params.yaml")
    kwargs = {f.name: _convert(hints[f.name], mapping[f.name], key(f.name)) for f in fields}
    return cls(**kwargs)


def check(ok: bool, where: str, value: Any, allowed: str) -> None:
    """Raise a ParamsError naming `where`, `value` and `allowed` unless `ok`."""
    if not ok:
        raise ParamsError(f"{where}={value!r}: {allowed}")


def to_dict(obj: Any) -> Any:
    """The plain (YAML/JSON-ready) form of a section: tuples become lists, mappings dicts."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, typing.Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def set_dotted(raw: dict[str, Any], dotted: str, value: Any, where: str = "override") -> None:
    """Set `raw`'s value at `dotted` ('train.iterations') in place: the one setter of a dotted key in a plain params
    mapping (benchmarks' and tests' overrides; a file's text is edited by `treegrpo.config.edit`).

    Raises:
        KeyError: a section or key `raw` does not have (a typo would otherwise add a key that nothing reads).
    """
    *path, last = dotted.split(".")
    node = raw
    for key in path:
        if not isinstance(node.get(key), dict):
            raise KeyError(f"{where} {dotted}: params.yaml has no section {key!r}")
        node = node[key]
    if last not in node:
        raise KeyError(f"{where} {dotted}: params.yaml has no key {last!r}")
    node[last] = value
