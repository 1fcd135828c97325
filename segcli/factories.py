"""Calling a plugin's factory with the user's options: unknown options and failures explained."""

from __future__ import annotations

import inspect
from typing import Any

from segcli.errors import ConfigError
from segcli.registry import Registry


def call_factory(registry: Registry[Any], name: str, *args: Any, **options: Any) -> Any:
    """Call `name`'s factory from `registry` after its positional `args`: an option it does
    not take is a ConfigError listing the ones it does; what it raises is blamed on the
    right party (`Registry.factory_errors`)."""
    factory = registry.get(name)
    accepted = option_names(factory, len(args))
    unknown = [key for key in options if accepted is not None and key not in accepted]
    if unknown:
        raise ConfigError(
            f"{registry.kind} {name!r} has no option {unknown[0]!r}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )
    with registry.factory_errors(name, options):
        return factory(*args, **options)


def option_names(factory: Any, positional: int) -> list[str] | None:
    """The keyword options a factory takes after its `positional` arguments; None if any."""
    parameters = list(inspect.signature(factory).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    given = [p for p in parameters if p.kind is not p.KEYWORD_ONLY][:positional]
    return [p.name for p in parameters if p not in given and p.kind is not p.VAR_POSITIONAL]
