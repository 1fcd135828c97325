"""What every check shares: how a broken property is reported, the tolerances, and how a
plugin's factory is named, given its test options and called (what it raises is its plugin's)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from segcli.errors import PluginError, SegcliError
from segcli.registry import one_line

IGNORE_INDEX = 255


def fail(kind: str, name: str, prop: str, detail: str) -> None:
    raise AssertionError(f"{kind} {name!r} breaks the contract [{prop}]: {detail}")


# float32 results agree with a float64 reference to a few units in the 7th digit
RELATIVE_TOLERANCE = 1e-5
ABSOLUTE_TOLERANCE = 1e-7


def component_name(factory: Callable[..., Any], name: str | None) -> str:
    return name or getattr(factory, "__qualname__", repr(factory))


def options_for(factory: Callable[..., Any], options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options to test with: the caller's, else those the factory declares."""
    return dict(options if options is not None else getattr(factory, "test_options", None) or {})


def build_component(
    kind: str, name: str, factory: Callable[..., Any], *args: Any, **options: Any
) -> Any:
    """Call a plugin's factory; what it raises that is not a segcli error is its plugin's."""
    try:
        return factory(*args, **options)
    except SegcliError:
        raise
    except Exception as exc:
        raise PluginError(
            f"{kind} {name!r} from plugin {plugin_of(factory)} failed to build with options "
            f"{options}: {one_line(exc)}",
            hint="report it to the plugin's authors; --debug shows the traceback",
        ) from exc


def plugin_of(factory: Callable[..., Any]) -> str:
    """The registered plugin a factory came from, else the package that defines it."""
    from segcli.plugins import get_plugins

    path = f"{getattr(factory, '__module__', '')}:{getattr(factory, '__qualname__', '')}"
    for registry in get_plugins().registries.values():
        for entry in registry:
            if entry.target is factory or entry.target == path:
                return str(entry.origin)
    return str(getattr(factory, "__module__", "?")).partition(".")[0]


def describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def few(names: Sequence[str], shown: int = 4) -> str:
    text = ", ".join(names[:shown])
    return text + (f" (+{len(names) - shown} more)" if len(names) > shown else "")
