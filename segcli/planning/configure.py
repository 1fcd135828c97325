"""From `segcli train --data DIR` to a configuration: a plan, or a recipe, on a prepared dataset.

The plan takes the place of a recipe among the configuration layers, so `--config` and
`--set` override any planned value; what the plan chose, why, and what overrode it is kept
(`PlannedRun.record`, saved as the run folder's plan.json).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcli.config import RunConfig, build_config, load_toml, parse_duration, parse_override
from segcli.data.format import DatasetInfo, read_dataset_info
from segcli.errors import DataError, UsageError
from segcli.planning.hardware import Hardware, detect_hardware
from segcli.planning.measure import Measurement
from segcli.planning.planners import (
    DEFAULT_BUDGET_SECONDS,
    DEFAULT_PLANNER,
    PLAN_SOURCE,
    Plan,
    check_needs,
    check_plan,
    render_plan,
)

_UNSET = object()


@dataclass
class PlannedRun:
    config: RunConfig
    plan: Plan
    hardware: Hardware
    data: Path
    planner: str = DEFAULT_PLANNER

    def render(self) -> str:
        """The configuration as TOML with a `# reason` after each planned key."""
        from segcli.config import to_toml

        measured = self.plan.estimates.get("speed_source") == "measured"
        header = (
            f"# planned by segcli's {self.planner!r} planner for {self.data} on "
            f"{self.hardware.device} "
            f"({self.hardware.name}, {self.hardware.cpu_cores} cores)\n"
            + (
                ""
                if measured
                else "# speeds from segcli's table, not measured here (so that printing stays "
                "instant); `segcli train --data` times real steps first and may plan otherwise\n"
            )
        )
        return header + render_plan(to_toml(self.config), self.plan.reasons, self._changed_by)

    def record(self) -> dict[str, Any]:
        """What plan.json holds: the plan, what it was made for, and what overrode it."""
        overridden = {
            key: source
            for key in self.plan.reasons
            if (source := self._changed_by(key)) != PLAN_SOURCE
        }
        return {
            "data": str(self.data),
            "planner": self.planner,
            "hardware": self.hardware.to_dict(),
            **self.plan.to_dict(),
            "overridden": overridden,
        }

    def _changed_by(self, key: str) -> str:
        """The layer that changed a planned key, or the plan when the value is as planned
        (`--time 8m` sets train.max_time to the budget the plan was made for)."""
        source = self.config.source_of(key)
        if source == "defaults":  # a component table: its name says who chose it
            source = self.config.source_of(f"{key}.name")
        if source == PLAN_SOURCE:
            return source
        planned, resolved = _lookup(self.plan.layer, key), _lookup(self.config.to_dict(), key)
        return PLAN_SOURCE if planned is not _UNSET and planned == resolved else source


def _lookup(table: dict[str, Any], key: str) -> Any:
    """A dotted key's value; model and loss options are looked up under `options` too."""
    parts = key.split(".")
    for path in (parts, [*parts[:-1], "options", parts[-1]]):
        value: Any = table
        for part in path:
            value = value.get(part, _UNSET) if isinstance(value, dict) else _UNSET
        if value is not _UNSET:
            return value
    return _UNSET


def prepared_dataset(data: Path) -> DatasetInfo:
    """The dataset.json of `--data DIR`, or a one-line error saying how to prepare one."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(
            f"--data {data}: no such folder",
            hint="prepare one first: `segcli prepare NAME RAW --out DIR`; "
            "`segcli list datasets` lists the preparers",
        )
    if not (data / "dataset.json").is_file():
        raise DataError(
            f"--data {data} is not a prepared dataset (it has no dataset.json)",
            hint=f"prepare it first: `segcli prepare folder IMAGES --masks MASKS --out "
            f"data/{data.name}`, or `segcli prepare NAME {data}` for a dataset segcli knows",
        )
    return read_dataset_info(data)


def recipe_on_dataset(recipe: dict[str, Any], data: Path) -> dict[str, Any]:
    """A recipe's layer with its dataset replaced by the prepared dataset at `data`."""
    info = prepared_dataset(data)
    layer = copy.deepcopy(recipe)
    layer["dataset"] = {**layer.get("dataset", {}), "name": info.name, "path": str(data)}
    return layer


def planned_run(
    data: Path,
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    measure: bool = True,
    planner: str = DEFAULT_PLANNER,
) -> PlannedRun:
    """Plan a training of the prepared dataset at `data` with the planner plugin named
    `planner`, for the budget and device that `config_file` and `overrides` ask for
    (default: 10 minutes, `train.device=auto`), then lay the file and the overrides over the
    plan. With `measure`, the candidate plans are timed on the machine at hand (a few
    seconds, part of the budget); without, the speed table is used.

    The planner is looked up and the plugins it needs are checked before anything else, so
    an unknown planner or a disabled plugin is a one-line error, not a late failure."""
    from segcli.data.fingerprint import load_fingerprint
    from segcli.plugins import get_plugins

    plugins = get_plugins()
    planners = plugins.planners
    make_plan = planners.get(planner)
    check_needs(planner, make_plan, plugins)
    info = prepared_dataset(data)
    budget, budget_source = _budget(config_file, overrides)
    hardware = detect_hardware(str(_early_value(config_file, overrides, "train.device")))
    timer = _StepTimer(Path(data), info, config_file, tuple(overrides)) if measure else None
    fingerprint = load_fingerprint(data)
    # only a planner that takes `requested` is given it: planners written before it still work
    asks = _takes_keyword(make_plan, "requested")
    extra = {"requested": _requested(config_file, overrides)} if asks else {}
    with planners.plugin_errors(planner):
        planned = check_plan(
            planner, make_plan(fingerprint, hardware, budget, timer=timer, **extra)
        )
    planned.layer.setdefault("dataset", {}).update(name=info.name, path=str(data))
    planned.reasons["dataset.name"] = f"the name in {Path(data) / 'dataset.json'}"
    planned.reasons["dataset.path"] = "--data"
    if "train.max_time" in planned.reasons:
        planned.reasons["train.max_time"] += f"; {budget_source}"
    config = build_config(planned.layer, config_file, overrides, recipe_source=PLAN_SOURCE)
    return PlannedRun(config, planned, hardware, Path(data), planner)


@dataclass
class _StepTimer:
    """Times a candidate plan's real training steps and validation on the dataset at `data`,
    with the configuration file and overrides laid over it as the run will have them."""

    data: Path
    info: DatasetInfo
    config_file: Path | None
    overrides: tuple[str, ...]

    def __call__(self, layer: dict[str, Any]) -> Measurement:
        from segcli.planning.measure import measure

        layer.setdefault("dataset", {}).update(name=self.info.name, path=str(self.data))
        config = build_config(layer, self.config_file, self.overrides, recipe_source=PLAN_SOURCE)
        return measure(config, self.data, self.info)


def _budget(config_file: Path | None, overrides: list[str] | tuple[str, ...]) -> tuple[float, str]:
    value = _early_value(config_file, overrides, "train.max_time")
    if value is _UNSET:
        return DEFAULT_BUDGET_SECONDS, "no --time given, so the default"
    if value is None:
        raise UsageError(
            "a planned run needs a time budget: train.max_time=none leaves it none",
            hint="give one with --time 10m, or drop --set train.max_time=none",
        )
    try:
        return parse_duration(value), "given by --time or train.max_time"
    except ValueError:
        # build_config reports the bad value with its key and source
        return DEFAULT_BUDGET_SECONDS, "no valid budget given"


def _takes_keyword(function: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature takes no such keyword
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


def _requested(config_file: Path | None, overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """What the configuration file and --set give, by dotted key (the last one wins): they
    override the plan, and a planner may plan around them."""
    requested: dict[str, Any] = {}
    if config_file is not None:
        requested.update(_dotted(load_toml(config_file)))
    for override in overrides:
        key, value = parse_override(override)
        requested[key] = value
    return requested


def _dotted(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and value:
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _early_value(config_file: Path | None, overrides: list[str] | tuple[str, ...], key: str) -> Any:
    """A key's value in the file or the overrides (the last one wins), before any planning:
    the plan depends on it. `_UNSET` when neither gives it, "auto" for an unset device."""
    section, _, name = key.partition(".")
    value: Any = _UNSET
    if config_file is not None:
        table = load_toml(config_file).get(section)
        if isinstance(table, dict) and name in table:
            value = table[name]
    for override in overrides:
        found, found_value = parse_override(override)
        if found == key:
            value = found_value
    if key == "train.device" and (value is _UNSET or value is None):
        return "auto"
    return value
