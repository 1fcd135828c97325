"""Discovering plugins through entry points, isolating broken ones, and keeping the registries.

Built-in plugins are found exactly like third-party ones: through the ``segcli``
entry-point group of installed distributions. Each entry point is imported and each of
its hooks called on its own, so one broken plugin is reported and skipped rather than
taking the command line down with it.

Plugins load in a fixed order: segcli's own first, then third-party ones by entry-point
name and distribution. A name registered twice fails the plugin that came second, so no
third-party plugin can take over (or knock out) a built-in name whatever it is called.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from segcli import hookspecs
from segcli.errors import PluginError
from segcli.registry import Origin, Registry, one_line, plural

ENTRY_POINT_GROUP = "segcli"
BUILT_IN_DISTRIBUTION = "segcli"
KINDS = (
    "dataset",
    "model",
    "loss",
    "metric",
    "optimizer",
    "scheduler",
    "transform",
    "logger",
    "recipe",
)
_HOOK_OF_KIND = {kind: f"register_{plural(kind)}" for kind in KINDS}


@dataclass
class PluginStatus:
    """What `segcli plugins` shows for one plugin."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    status: str = "ok"  # ok | failed | disabled
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "hooks": self.hooks,
            "registered": self.registered,
        }


class Plugins:
    """All loaded plugins and the registries they filled."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.manager.add_hookspecs(hookspecs)
        self.statuses: list[PluginStatus] = []
        self.registries: dict[str, Registry[Any]] = {
            kind: Registry(kind)
            if kind != "recipe"
            else Registry(
                kind, lambda target: isinstance(target, Mapping), "a dict of configuration"
            )
            for kind in KINDS
        }

    @property
    def datasets(self) -> Registry[Any]:
        return self.registries["dataset"]

    @property
    def models(self) -> Registry[Any]:
        return self.registries["model"]

    @property
    def losses(self) -> Registry[Any]:
        return self.registries["loss"]

    @property
    def metrics(self) -> Registry[Any]:
        return self.registries["metric"]

    @property
    def optimizers(self) -> Registry[Any]:
        return self.registries["optimizer"]

    @property
    def schedulers(self) -> Registry[Any]:
        return self.registries["scheduler"]

    @property
    def transforms(self) -> Registry[Any]:
        return self.registries["transform"]

    @property
    def loggers(self) -> Registry[Any]:
        return self.registries["logger"]

    @property
    def recipes(self) -> Registry[Any]:
        return self.registries["recipe"]

    def add(self, module: ModuleType, status: PluginStatus) -> None:
        """Register one plugin module and run its registration hooks, isolating failures."""
        try:
            self.manager.register(module, name=status.name)
        except Exception as exc:  # pluggy rejects unknown hooks or wrong signatures
            self._fail(status, exc)
            return
        status.hooks = sorted(hook.name for hook in self.manager.get_hookcallers(module) or [])
        origin = Origin(status.name, status.distribution, status.version)
        for kind, hook_name in _HOOK_OF_KIND.items():
            implementation = getattr(module, hook_name, None)
            if hook_name not in status.hooks or implementation is None:
                continue
            registry = self.registries[kind]

            def register(name: str, target: Any, description: str = "", _r=registry) -> None:
                _r.add(name, target, description, origin)

            try:
                implementation(register=register)
            except Exception as exc:
                for each in self.registries.values():
                    each.remove_from(status.name)
                self.manager.unregister(module)
                self._fail(status, exc)
                return
            names = [e.name for e in registry if e.origin.plugin == status.name]
            if names:
                status.registered[kind] = names
        self.statuses.append(status)

    def _fail(self, status: PluginStatus, exc: BaseException) -> None:
        status.status = "failed"
        status.error = one_line(exc)
        status.registered = {}
        if os.environ.get("SEGCLI_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)
        self.statuses.append(status)

    def add_commands(self, app: Any) -> None:
        """Let plugins add CLI commands; a failing one is marked failed, the CLI goes on."""
        for status in self.statuses:
            if status.status != "ok" or "register_commands" not in status.hooks:
                continue
            module = self.manager.get_plugin(status.name)
            before = _command_names(app)
            try:
                module.register_commands(app=app)
            except Exception as exc:
                status.status, status.error = "failed", one_line(exc)
                continue
            added = sorted(_command_names(app) - before)
            if added:
                status.registered["command"] = added

    def status_of(self, name: str) -> PluginStatus:
        for status in self.statuses:
            if status.name == name:
                return status
        raise PluginError(f"no plugin named {name!r} is installed")


def _command_names(app: Any) -> set[str]:
    """The names of a Typer app's commands and command groups, as typed on the command line."""
    commands = {
        info.name or info.callback.__name__.replace("_", "-") for info in app.registered_commands
    }
    return commands | {info.name for info in app.registered_groups}


def _name_list(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def load_plugins() -> Plugins:
    """Load every installed plugin (honouring SEGCLI_DISABLE_PLUGINS / SEGCLI_LOAD_PLUGINS)."""
    plugins = Plugins()
    disabled = _name_list("SEGCLI_DISABLE_PLUGINS") or set()
    only = _name_list("SEGCLI_LOAD_PLUGINS")
    seen: dict[str, PluginStatus] = {}
    for entry_point, status in _in_load_order(metadata.entry_points(group=ENTRY_POINT_GROUP)):
        first = seen.get(entry_point.name)
        if first is not None:
            if first.distribution == status.distribution:
                continue  # the same distribution visible twice on sys.path
            plugins._fail(
                status,
                PluginError(
                    f"plugin name {status.name!r} of {status.distribution} is already taken by "
                    f"{Origin(first.name, first.distribution, first.version)}"
                ),
            )
            continue
        seen[entry_point.name] = status
        if entry_point.name in disabled or (only is not None and entry_point.name not in only):
            status.status = "disabled"
            plugins.statuses.append(status)
            continue
        try:
            module = entry_point.load()
        except Exception as exc:  # a broken plugin must never take the CLI down
            plugins._fail(status, exc)
            continue
        plugins.add(module, status)
    return plugins


def _in_load_order(
    entry_points: metadata.EntryPoints,
) -> list[tuple[metadata.EntryPoint, PluginStatus]]:
    """segcli's own plugins first, then third-party ones by entry-point name and distribution:
    the same order on every machine, whatever the names or the order of sys.path."""
    found = []
    for entry_point in entry_points:
        dist = getattr(entry_point, "dist", None)
        status = PluginStatus(
            name=entry_point.name,
            module=entry_point.value,
            distribution=dist.metadata["Name"] if dist is not None else None,
            version=dist.version if dist is not None else None,
        )
        third_party = status.distribution != BUILT_IN_DISTRIBUTION
        found.append(((third_party, status.name, status.distribution or ""), entry_point, status))
    found.sort(key=lambda item: item[0])
    return [(entry_point, status) for _, entry_point, status in found]


_loaded: Plugins | None = None


def get_plugins() -> Plugins:
    """The plugins of this process, loaded on first use."""
    global _loaded
    if _loaded is None:
        _loaded = load_plugins()
    return _loaded


def reset_plugins() -> None:
    """Forget the loaded plugins, so the next `get_plugins()` discovers them again (tests)."""
    global _loaded
    _loaded = None
