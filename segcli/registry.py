"""Name -> factory tables, one per kind, that remember where each name came from."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

from segcli.errors import ConfigError, PluginError, SegcliError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Origin:
    """Which plugin (and which installed distribution) registered a name."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.plugin} ({self.release})"
        return self.plugin

    @property
    def release(self) -> str:
        """What a user installs: "segcli-foo 1.2" (the plugin's name when no distribution)."""
        if not self.distribution:
            return f"plugin {self.plugin}"
        return f"{self.distribution} {self.version or ''}".rstrip()

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Origin:
        return cls(str(data["plugin"]), data.get("distribution"), data.get("version"))


def plural(kind: str) -> str:
    """ "model" -> "models", "loss" -> "losses": how `segcli list` names a kind."""
    return kind + ("es" if kind.endswith("s") else "s")


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
    """The names of one kind (datasets, models, ...) and the factories behind them.

    `accepts` tells a usable target from a broken one (by default: anything callable);
    `expected` says in words what it should have been, for the error message;
    `not_loaded` names the plugins that are disabled or failed (`"models (disabled)"`), which
    an unknown name's message lists: the name may be theirs.
    """

    def __init__(
        self,
        kind: str,
        accepts: Callable[[Any], bool] = callable,
        expected: str = "a callable factory",
        not_loaded: Callable[[], list[str]] = list,
    ) -> None:
        self.kind = kind
        self.accepts = accepts
        self.expected = expected
        self.not_loaded = not_loaded
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, target: T | str, description: str, origin: Origin) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {origin} registered a {self.kind} with an empty or non-text name"
            )
        if name in self._entries:
            first = self._entries[name].origin
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: first by {first}, then by {origin}, "
                "which is therefore not loaded",
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
        """The target registered as `name`, imported if lazy and checked to be usable."""
        entry = self.entry(name)
        target = entry.load()
        if not self.accepts(target):
            path = f" ({entry.target!r} resolves to it)" if isinstance(entry.target, str) else ""
            raise PluginError(
                f"plugin {entry.origin} registered {self.kind} {name!r} as "
                f"{_describe(target)}{path}, not {self.expected}",
                hint=f"fix that plugin or disable it: SEGCLI_DISABLE_PLUGINS={entry.origin.plugin}",
            )
        return target

    @contextmanager
    def factory_errors(self, name: str, options: Mapping[str, Any]) -> Iterator[None]:
        """Around a call of `name`'s factory: blame what it raises on the right party.

        A `TypeError` or `ValueError` means the user's `options` were wrong (a ConfigError
        naming them) when there were options to get wrong; anything else that is not a
        segcli error is the plugin's (see `plugin_errors`).
        """
        with self.plugin_errors(name):
            try:
                yield
            except (TypeError, ValueError) as exc:
                if not options:
                    raise
                raise ConfigError(
                    f"{self.kind} {name!r} rejected its options {dict(options)}: {exc}"
                ) from None

    @contextmanager
    def plugin_errors(self, name: str) -> Iterator[None]:
        """Around code of `name`'s plugin: an exception that is not a segcli error is a bug
        of the plugin, a PluginError naming it, the name and the original error."""
        try:
            yield
        except SegcliError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{self.kind} {name!r} from plugin {self.entry(name).origin} failed: "
                f"{one_line(exc)}",
                hint="report it to the plugin's authors; --debug shows the traceback",
            ) from exc

    def _unknown_message(self, name: str) -> str:
        valid = sorted(self._entries)
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        kinds = plural(self.kind)
        shown = ", ".join(valid) if valid else "none"
        listed = f"{kinds}: {shown} (see `segcli list {kinds}`)"
        if missing := self.not_loaded():
            listed += f"; plugins not loaded: {', '.join(missing)}"
        if close:  # a question ends its sentence: the list starts a new one
            guesses = " or ".join(repr(c) for c in close)
            return f"unknown {self.kind} {name!r}; did you mean {guesses}? Valid {listed}"
        return f"unknown {self.kind} {name!r}; valid {listed}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)


def _describe(target: Any) -> str:
    if target is None:
        return "None"
    text = repr(target)
    shown = text if len(text) <= 40 else text[:37] + "..."
    return f"{shown} ({type(target).__name__})"


def one_line(exc: BaseException) -> str:
    """ "KeyError: 'backbone'": an exception's type and the first line of its text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


Factory = Callable[..., Any]
