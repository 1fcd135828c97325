"""Discovering plugins through entry points, isolating broken ones, and keeping the registries.

Built-in plugins are found exactly like third-party ones: through the ``segcli``
entry-point group of installed distributions. Each entry point is imported and each of
its hooks called on its own, so one broken plugin is reported and skipped rather than
taking the command line down with it.

Plugins load in a fixed order: segcli's own first, then third-party ones by entry-point
name and distribution. A name registered twice fails the plugin that came second, so no
third-party plugin can take over (or knock out) a built-in name whatever it is called; the
same holds for commands, which may not shadow segcli's own or another plugin's. The command
line sits above this module, so it lends what commands need (`host_commands`: an app to add
them to, the names of its own commands); plugins loaded without it (segcli used as a library)
add no commands, which nothing would run.

Plugin code (its import and its hooks) runs isolated: `SystemExit`, `os._exit` and any other
exception but Ctrl-C fail that plugin alone, what it prints goes to stderr (never into
`--json` output), and the time it takes to load is recorded, so `segcli plugins` names a
slow one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any, NoReturn, TypeVar

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
    "planner",
)
_HOOK_OF_KIND = {kind: f"register_{plural(kind)}" for kind in KINDS}
# A plugin taking longer than this to import and register is named in `segcli plugins`:
# every command that loads plugins waits for it.
SLOW_PLUGIN_SECONDS = 1.0

T = TypeVar("T")


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
    load_seconds: float = 0.0  # importing the module and running its registration hooks

    @property
    def slow(self) -> bool:
        return self.load_seconds > SLOW_PLUGIN_SECONDS

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
            "load_seconds": round(self.load_seconds, 3),
            "slow": self.slow,
        }


class _PluginExited(BaseException):
    """Plugin code called `os._exit` while segcli was loading it."""

    def __init__(self, code: int) -> None:
        super().__init__(f"called os._exit({code}) while loading")


def _refuse_exit(code: int) -> NoReturn:
    raise _PluginExited(code)


def _run_plugin_code(call: Callable[[], T]) -> T:
    """Run a plugin's import or hook so that nothing it does escapes as anything but an
    exception: what it prints goes to stderr (stdout carries `--json` output), and
    `os._exit` raises instead of ending the process without a word. `os._exit` is replaced
    only while plugin code runs (segcli starts no threads before loading plugins), and put
    back whatever happens; Ctrl-C passes through, everything else is the caller's to catch.
    """
    real_exit = os._exit
    os._exit = _refuse_exit
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return call()
    finally:
        os._exit = real_exit


def _failure(exc: BaseException) -> str:
    """What `segcli plugins` says of a plugin that failed with `exc`."""
    if isinstance(exc, SystemExit):
        return f"raised SystemExit({exc.code!r}) while loading"
    if isinstance(exc, _PluginExited):
        return str(exc)
    return one_line(exc)


@dataclass(frozen=True)
class CommandHost:
    """What the command line lends the plugin manager so that plugins can add commands: a new
    app for one plugin's `register_commands(app)`, and the names of segcli's own commands,
    which no plugin command may shadow."""

    new_app: Callable[[], Any]
    built_in: frozenset[str]


class Plugins:
    """All loaded plugins and the registries they filled."""

    def __init__(self, commands: CommandHost | None = None) -> None:
        self.commands = commands
        self.manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.manager.add_hookspecs(hookspecs)
        self.statuses: list[PluginStatus] = []
        self.registries: dict[str, Registry[Any]] = {
            kind: Registry(kind, not_loaded=self._not_loaded)
            if kind != "recipe"
            else Registry(
                kind,
                lambda target: isinstance(target, Mapping),
                "a dict of configuration",
                self._not_loaded,
            )
            for kind in KINDS
        }
        # each plugin that adds commands -> a Typer app holding just its commands
        self._commands: dict[Origin, Any] = {}

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

    @property
    def planners(self) -> Registry[Any]:
        return self.registries["planner"]

    def add(self, module: ModuleType, status: PluginStatus) -> None:
        """Register one plugin module and run its registration hooks, isolating failures."""
        try:
            self.manager.register(module, name=status.name)
        except Exception as exc:  # pluggy rejects unknown hooks or wrong signatures
            self._fail(status, exc)
            return
        status.hooks = sorted(hook.name for hook in self.manager.get_hookcallers(module) or [])
        origin = Origin(status.name, status.distribution, status.version)
        try:
            for kind, hook_name in _HOOK_OF_KIND.items():
                implementation = getattr(module, hook_name, None)
                if hook_name not in status.hooks or implementation is None:
                    continue
                registry = self.registries[kind]

                def register(name: str, target: Any, description: str = "", _r=registry) -> None:
                    _r.add(name, target, description, origin)

                _run_plugin_code(functools.partial(implementation, register=register))
                names = [e.name for e in registry if e.origin.plugin == status.name]
                if names:
                    status.registered[kind] = names
            if (
                "register_commands" in status.hooks
                and self.commands is not None
                and (commands := self._add_plugin_commands(module, origin, self.commands))
            ):
                status.registered["command"] = commands
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a plugin may exit or raise anything: it alone fails
            for each in self.registries.values():
                each.remove_from(status.name)
            self.manager.unregister(module)
            self._fail(status, exc)
            return
        self.statuses.append(status)

    def _add_plugin_commands(
        self, module: ModuleType, origin: Origin, host: CommandHost
    ) -> list[str]:
        """Run the plugin's `register_commands` on an app of its own and keep its commands,
        unless one shadows a built-in command or an earlier plugin's: then the plugin fails,
        as it does for any other name registered twice. Returns the commands' names."""
        own = host.new_app()
        _run_plugin_code(functools.partial(module.register_commands, app=own))
        taken = dict.fromkeys(host.built_in, "a built-in command of segcli")
        for earlier, app in self._commands.items():
            taken.update(dict.fromkeys(command_names(app), f"a command of plugin {earlier}"))
        names = sorted(command_names(own))
        for name in names:
            if name in taken:
                raise PluginError(
                    f"plugin {origin} adds the command {name!r}, which is already "
                    f"{taken[name]}; the plugin is therefore not loaded",
                    hint="rename the plugin's command, or disable the plugin with "
                    f"SEGCLI_DISABLE_PLUGINS={origin.plugin}",
                )
        self._commands[origin] = own
        return names

    def _fail(self, status: PluginStatus, exc: BaseException) -> None:
        status.status = "failed"
        status.error = _failure(exc)
        status.registered = {}
        if os.environ.get("SEGCLI_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)
        self.statuses.append(status)

    def add_commands(self, app: Any) -> None:
        """Add the commands of the loaded plugins to a Typer app (the plugins' hooks ran, and
        clashes were refused, when they were loaded); adding them twice adds nothing."""
        for own in self._commands.values():
            for info in own.registered_commands:
                if info not in app.registered_commands:
                    app.registered_commands.append(info)
            for info in own.registered_groups:
                if info not in app.registered_groups:
                    app.registered_groups.append(info)

    def _not_loaded(self) -> list[str]:
        """The plugins whose names are missing: "models (disabled)", "foo (failed)"."""
        return [f"{s.name} ({s.status})" for s in self.statuses if s.status != "ok"]

    def status_of(self, name: str) -> PluginStatus:
        for status in self.statuses:
            if status.name == name:
                return status
        raise PluginError(f"no plugin named {name!r} is installed")


def command_names(app: Any) -> set[str]:
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


def load_plugins(commands: CommandHost | None = None) -> Plugins:
    """Load every installed plugin (honouring SEGCLI_DISABLE_PLUGINS / SEGCLI_LOAD_PLUGINS),
    with their commands when `commands` hosts them."""
    plugins = Plugins(commands)
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
        started = time.perf_counter()
        try:
            module = _run_plugin_code(entry_point.load)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a broken plugin must never take the CLI down
            plugins._fail(status, exc)
        else:
            plugins.add(module, status)
        status.load_seconds = time.perf_counter() - started
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
_command_host: CommandHost | None = None


def host_commands(host: CommandHost) -> None:
    """Called by the command line as it builds its app, before it loads any plugin: from then
    on `get_plugins()` loads plugin commands too, on apps `host` makes."""
    global _command_host
    _command_host = host


def get_plugins() -> Plugins:
    """The plugins of this process, loaded on first use."""
    global _loaded
    if _loaded is None:
        _loaded = load_plugins(_command_host)
    return _loaded


def reset_plugins() -> None:
    """Forget the loaded plugins, so the next `get_plugins()` discovers them again (tests)."""
    global _loaded
    _loaded = None
