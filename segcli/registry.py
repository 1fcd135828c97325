"""Name -> factory tables, one per kind, that remember where each name came from."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from segcli.errors import PluginError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Origin:
    """Which plugin (and which installed distribution) registered a name."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.plugin} ({self.distribution} {self.version or ''})".replace(" )", ")")
        return self.plugin


@dataclass
class Entry(Generic[T]):
    """One registered name. `target` is the object itself or a lazy "module:attribute" path."""

    name: str
    target: T | str
    description: str
    origin: Origin
    _loaded: Any = field(default=None, repr=False)

    def load(self) -> T:
        """Import a lazy target on first use; later calls return the same object."""
        if self._loaded is None:
            self._loaded = (
                _resolve(self.target, self) if isinstance(self.target, str) else self.target
            )
        return self._loaded


def _resolve(path: str, entry: Entry) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else []:
            obj = getattr(obj, part)
    except Exception as exc:  # any import failure belongs to the plugin, not to us
        raise PluginError(
            f"{entry.name!r} from plugin {entry.origin} could not be loaded from {path!r}: "
            f"{type(exc).__name__}: {exc}",
            hint="reinstall or disable that plugin with SEGCLI_DISABLE_PLUGINS",
        ) from exc
    return obj


class Registry(Generic[T]):
    """The names of one kind (datasets, models, ...) and the factories behind them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, target: T | str, description: str, origin: Origin) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {origin} registered a {self.kind} with an empty or non-text name"
            )
        if name in self._entries:
            first = self._entries[name].origin
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by {first} and by {origin}",
                hint=f"uninstall or disable one of them (SEGCLI_DISABLE_PLUGINS={origin.plugin})",
            )
        self._entries[name] = Entry(name, target, (description or "").strip(), origin)

    def remove_from(self, plugin: str) -> None:
        """Forget every name a plugin registered (used when its hook fails half-way)."""
        self._entries = {k: e for k, e in self._entries.items() if e.origin.plugin != plugin}

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def get(self, name: str) -> T:
        return self.entry(name).load()

    def _unknown_message(self, name: str) -> str:
        valid = sorted(self._entries)
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        message = f"unknown {self.kind} {name!r}"
        if close:
            message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        shown = ", ".join(valid) if valid else "none (is a plugin disabled?)"
        return f"{message} Valid {self.kind}s: {shown} (see `segcli list {self.kind}s`)"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)


Factory = Callable[..., Any]
