"""What a configuration key must be, in words, and which layer set it: the pieces every
configuration error is made of (`must_be`, `unknown_key`), so that errors found by the schema,
by the layers and by pre-flight read alike."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo


class InvalidKey(ValueError):
    """A check across sections, naming the key it is about."""

    def __init__(self, key: str, expects: str) -> None:
        super().__init__(expects)
        self.key = key
        self.expects = expects


def must_be(key: str, expects: str, value: Any, source: str) -> str:
    return f"{key} must be {expects}, got {value!r} (from {source})"


def layer_of(parts: list[str], sources: dict[str, str]) -> str:
    """The layer that set the key `parts` or, failing that, the nearest table holding it."""
    for end in range(len(parts), 0, -1):
        source = sources.get(".".join(parts[:end]))
        if source is not None:
            return source
    return "defaults"


def unknown_key(path: str, schema: type[BaseModel], source: str) -> str:
    valid = ", ".join(sorted(schema.model_fields))
    return f"unknown configuration key {path!r} (from {source}); valid keys here: {valid}"


_TYPE_NAMES = {int: "int", float: "float", str: "a string", bool: "true or false"}
_PLURAL = {int: "ints", float: "floats", str: "strings", bool: "booleans"}
_BOUNDS = {
    annotated_types.Ge: (">=", "ge"),
    annotated_types.Gt: (">", "gt"),
    annotated_types.Le: ("<=", "le"),
    annotated_types.Lt: ("<", "lt"),
}


def expects_in_words(
    annotation: Any, metadata: list[Any], description: str | None = None, plural: bool = False
) -> str:
    """What a key's annotation asks for, in words: "int >= 1", "one of: off, bf16, fp16"."""
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        # a Field(...) inside Annotated (a list item's range) carries its own constraints
        unpacked = [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])]
        return expects_in_words(base, [*metadata, *unpacked], description, plural)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        text = "one of: " + ", ".join(str(a) for a in args)
    elif origin in (typing.Union, types.UnionType):
        choices = [expects_in_words(a, metadata) for a in args if a is not type(None)]
        text = " or ".join(choices) + (" or none" if type(None) in args else "")
    elif origin is list:
        lengths = [m.min_length for m in metadata if isinstance(m, annotated_types.MinLen)]
        fixed = [m.max_length for m in metadata if isinstance(m, annotated_types.MaxLen)]
        items = expects_in_words(args[0], [], plural=True)
        if fixed and lengths == fixed:
            text = f"a list of {fixed[0]} {items}"
        else:
            text = f"a {'non-empty ' if lengths and lengths[0] else ''}list of {items}"
    elif origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        text = "a table"
    else:
        names = _PLURAL if plural else _TYPE_NAMES
        text = names.get(annotation, getattr(annotation, "__name__", str(annotation)))
        bounds = [
            f"{symbol} {getattr(m, attribute)}"
            for m in metadata
            for kind, (symbol, attribute) in _BOUNDS.items()
            if isinstance(m, kind)
        ]
        if bounds:
            text += " " + " and ".join(bounds)
        elif annotation is str and any(isinstance(m, annotated_types.MinLen) for m in metadata):
            text = "non-empty " + ("strings" if plural else "string")
            text = text if plural else "a " + text
    return f"{description}, {text}" if description else text
