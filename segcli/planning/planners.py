"""The planner seam: what a `register_planners` plugin is given, what it returns, and what it
declares it needs.

A planner is a function ``plan(fingerprint, hardware, budget_seconds, *, timer=None) -> Plan``:
the dataset's `Fingerprint`, the `Hardware` a run will use and the time budget in, a
configuration layer with one reason per planned key out. It may time candidate layers with
`timer` (segcli passes one that runs real steps, `segcli.planning.measure`; tests pass a
fake). A planner that takes a ``requested`` keyword is also given what the configuration
file and ``--set`` request, by dotted key (``{"model.backbone_weights": "w.pth"}``): those
values override the plan, so it may plan around them. Its ``needs`` attribute lists the plugin
names its plans may use (`Requirement`), so that a missing plugin is named before anything
is measured or trained (`check_needs`).
The built-in rules are the `default` planner of the `planners` plugin (plugins/segcli_planners).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from segcli.errors import PluginError

if TYPE_CHECKING:
    from segcli.data.fingerprint import Fingerprint
    from segcli.planning.hardware import Hardware
    from segcli.planning.measure import Measurement
    from segcli.plugins import Plugins, PluginStatus

# the planner `segcli train --data DIR` uses without --planner
DEFAULT_PLANNER = "default"
DEFAULT_BUDGET_SECONDS = 600.0
# where a planned value comes from, in the configuration's record of sources
PLAN_SOURCE = "plan"


class Timer(Protocol):
    """Measures a candidate plan on the machine at hand: its configuration layer in, its
    speeds out (`segcli.planning.configure` times real steps with
    `segcli.planning.measure.measure`; tests pass a fake)."""

    def __call__(self, layer: dict[str, Any]) -> Measurement: ...


@dataclass
class Plan:
    """A configuration layer and, per planned key (dotted), the one-line reason for it."""

    layer: dict[str, Any]
    reasons: dict[str, str]
    # the estimates the rules worked from, saved with the plan
    estimates: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "reasons": self.reasons, "estimates": self.estimates}


@dataclass(frozen=True)
class Requirement:
    """A name a planner's plans may use, and the plugin that provides it: `kind` is one of
    `segcli list`'s kinds in the singular ("model", "loss", "metric", "optimizer",
    "scheduler", "transform"), `plugin` the providing entry-point name (as `segcli plugins`
    shows it), `distribution` the package that installs it."""

    kind: str
    name: str
    plugin: str
    distribution: str | None = None


def requirements(
    plugin: str, distribution: str | None, **names: Sequence[str]
) -> tuple[Requirement, ...]:
    """`requirements("models", "segcli", model=["unet"])`: one `Requirement` per name."""
    return tuple(
        Requirement(kind, name, plugin, distribution)
        for kind, each in names.items()
        for name in each
    )


class Planner(Protocol):
    """What `register_planners` registers (see `segcli.hookspecs.register_planners`)."""

    needs: Sequence[Requirement]

    def __call__(
        self,
        fingerprint: Fingerprint,
        hardware: Hardware,
        budget_seconds: float,
        *,
        timer: Timer | None = None,
        requested: Mapping[str, Any] = ...,  # optional: a planner may leave it out
    ) -> Plan: ...


def check_needs(name: str, planner: Any, plugins: Plugins) -> None:
    """Raise a PluginError naming each plugin whose names planner `name` needs and no loaded
    plugin registers, saying why it is missing (disabled, failed, not installed) and how to
    get it back: before any planning, measuring or training."""
    needs: Iterable[Requirement] = getattr(planner, "needs", ())
    missing: dict[str, list[Requirement]] = {}
    for need in needs:
        if need.name not in plugins.registries[need.kind]:
            missing.setdefault(need.plugin, []).append(need)
    if not missing:
        return
    parts, fixes = [], []
    for plugin, wanted in missing.items():
        status = _status(plugins, plugin, wanted[0].distribution)
        why, fix = _why_missing(status, wanted[0])
        names = ", ".join(f"{need.kind} {need.name!r}" for need in wanted[:3])
        more = f" and {len(wanted) - 3} more" if len(wanted) > 3 else ""
        parts.append(f"{names}{more} of plugin {plugin!r}, which {why}")
        fixes.append(fix)
    raise PluginError(
        f"planner {name!r} needs {'; and '.join(parts)}",
        hint="; ".join(fixes) + ", or choose another planner: --planner NAME, from "
        "`segcli list planners`",
    )


def _status(plugins: Plugins, plugin: str, distribution: str | None) -> PluginStatus | None:
    for status in plugins.statuses:
        if status.name == plugin and distribution in (None, status.distribution):
            return status
    return None


def _why_missing(status: PluginStatus | None, need: Requirement) -> tuple[str, str]:
    """(why the plugin provides nothing now, how to fix it), for the one-line error."""
    if status is None:
        package = need.distribution or f"the package of plugin {need.plugin!r}"
        return "is not installed", f"install {package}"
    if status.status == "disabled":
        return "is disabled", (
            f"leave {need.plugin!r} out of SEGCLI_DISABLE_PLUGINS / SEGCLI_LOAD_PLUGINS"
        )
    if status.status == "failed":
        return f"failed to load: {status.error}", "`segcli plugins` says why"
    release = f"{status.distribution} {status.version or ''}".rstrip()
    return f"is loaded ({release}) but registers no {need.kind} {need.name!r}", (
        f"upgrade {status.distribution or need.plugin}"
    )


def check_plan(name: str, planned: Any) -> Plan:
    """The planner's result, or a PluginError naming the planner when it is not a `Plan`."""
    if not isinstance(planned, Plan):
        raise PluginError(
            f"planner {name!r} returned {type(planned).__name__}, not a segcli.planning.Plan",
            hint="report it to the planner's authors, or choose another with --planner NAME",
        )
    return planned


_HEADER = re.compile(r"^\[([^\]]+)\]\s*$")
_KEY = re.compile(r'^("[^"]+"|[A-Za-z0-9_-]+)\s*=')


def render_plan(toml_text: str, reasons: dict[str, str], source_of: Callable[[str], str]) -> str:
    """The resolved configuration's TOML with `# reason` after each planned key.

    `source_of`: the layer that set a key last (`RunConfig.source_of`); a planned key that a
    file or --set overrode says where it came from instead. The text stays a valid --config
    file."""
    lines = []
    table = ""
    for line in toml_text.splitlines():
        header = _HEADER.match(line)
        if header:
            table = header.group(1)
            key = table
        else:
            match = _KEY.match(line)
            key = None
            if match:
                name = match.group(1).strip('"')
                # model/loss options are saved under `options` but planned as model.<option>
                owner = table.removesuffix(".options") if table.endswith(".options") else table
                key = f"{owner}.{name}" if owner else name
        reason = reasons.get(key) if key else None
        if reason is not None:
            source = source_of(key)
            if source != PLAN_SOURCE:
                reason = f"from {source} (planned: {reason})"
            line = f"{line}  # {reason}"
        lines.append(line)
    return "\n".join(lines) + "\n"
