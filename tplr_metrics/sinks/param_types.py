"""A sink's params checked against its factory's annotations, before the factory runs.

``open_log_store("jsonl", log_dir=3)`` is one line naming the param, what it got and what it
takes (``sink 'jsonl': param log_dir must be a string or a path, or None; got 3 (int)``), not a
TypeError from deep inside ``pathlib``. Only plain annotations are checked: ``str``, ``int``,
``float`` (an int is one too; ``bool`` is neither), ``bool``, ``None``, ``os.PathLike``,
mappings and sequences (the container, not its items), and unions of these; anything else (a
class of the user's, ``Any``, an annotation that cannot be evaluated) lets the value through.
"""

from __future__ import annotations

import collections.abc
import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from ..config.errors import ConfigurationError

_UNKNOWN = object()

_NAMES: dict[object, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    os.PathLike: "a path",
    collections.abc.Mapping: "a mapping",
    dict: "a mapping",
    collections.abc.Sequence: "a list",
    list: "a list",
    tuple: "a list",
}


def _annotations(factory: Callable[..., Any]) -> dict[str, object]:
    """Each param's annotation, evaluated one by one (one that cannot be is left out)."""
    target: Any = inspect.unwrap(factory)
    if inspect.isclass(target):
        target = target.__init__
    raw = getattr(target, "__annotations__", None)
    if not isinstance(raw, Mapping):
        return {}
    namespace = getattr(target, "__globals__", {})
    evaluated: dict[str, object] = {}
    for name, annotation in raw.items():
        if name == "return":
            continue
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - the factory's own source text
            except Exception:
                continue
        evaluated[name] = annotation
    return evaluated


def _options(annotation: object) -> list[object]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [option for part in typing.get_args(annotation) for option in _options(part)]
    return [annotation]


def _fits(option: object, value: object) -> bool | None:
    """Whether ``value`` is of the type ``option``; None when this module cannot tell."""
    if option is type(None) or option is None:
        return value is None
    if option is bool:
        return isinstance(value, bool)
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if option is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if option is str:
        return isinstance(value, str)
    base = typing.get_origin(option) or option
    if base is os.PathLike:
        return isinstance(value, os.PathLike)
    if base in (collections.abc.Mapping, dict):
        return isinstance(value, Mapping)
    if base in (collections.abc.Sequence, list, tuple):
        return isinstance(value, collections.abc.Sequence) and not isinstance(value, (str, bytes))
    return None


def _expected(options: list[object]) -> str:
    names = list(dict.fromkeys(_NAMES.get(typing.get_origin(o) or o, str(o)) for o in options if o is not type(None)))
    text = " or ".join(names)
    return f"{text}, or None" if type(None) in options else text


def check_param_types(kind: str, factory: Callable[..., Any], params: Mapping[str, Any]) -> None:
    """A param whose value its factory's annotation rules out is a ConfigurationError naming it."""
    annotations = _annotations(factory)
    for name, value in params.items():
        annotation = annotations.get(name, _UNKNOWN)
        if annotation is _UNKNOWN or annotation is Any:
            continue
        options = _options(annotation)
        verdicts = [_fits(option, value) for option in options]
        if any(verdict is not False for verdict in verdicts):
            continue  # it fits, or some option is one this module does not judge
        raise ConfigurationError(
            f"sink {kind!r}: param {name} must be {_expected(options)}; got {value!r} ({type(value).__name__})"
        )


__all__ = ["check_param_types"]
