"""Shell completion of option values: names from the plugin registries (recipes, planners,
...), configuration keys and run folders.

These run on every <TAB> press, inside the shell's wait: they import neither torch nor the
workflow packages (`segcli.runs.folders`, which finds run folders, loads torch), and a failure
of any kind (a broken plugin, an unreadable folder) completes nothing rather than printing a
traceback into the prompt.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import typer

logger = logging.getLogger("segcli")

Candidates = list[tuple[str, str]]  # (value, help), shown side by side by zsh and fish

# `--set KEY=` completes these keys' values with the names of the registry of that kind
_NAME_KEYS = {
    "dataset.name": "dataset",
    "model.name": "model",
    "loss.name": "loss",
    "train.optimizer.name": "optimizer",
    "train.scheduler.name": "scheduler",
    "recipe": "recipe",
}
_RUNS_DIR = Path("runs")
_HELP_WIDTH = 40  # with the name, within the 80 columns rich wraps at
_CHECKPOINT_NAMES = ("best.safetensors", "last.safetensors")


def _quietly(complete: Callable[..., Candidates]) -> Callable[..., Candidates]:
    """Any failure completes nothing: a half-typed command line must never crash the shell."""

    @functools.wraps(complete)
    def guarded(*args: Any, **kwargs: Any) -> Candidates:
        try:
            return complete(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (completion offers nothing instead)
            logger.debug("completion failed: %r", exc)
            return []

    return guarded


def _names(kind: str, incomplete: str) -> Candidates:
    from segcli.plugins import get_plugins

    return [
        (entry.name, _short(entry.description))
        for entry in get_plugins().registries[kind]
        if entry.name.startswith(incomplete)
    ]


def _short(description: str) -> str:
    """A description that fits beside its name on one line: Typer renders help through rich,
    which wraps a long one, and fish would read the wrapped part as another candidate."""
    line = " ".join(description.split())
    return line if len(line) <= _HELP_WIDTH else line[: _HELP_WIDTH - 1].rstrip() + "…"


@_quietly
def recipes(incomplete: str) -> Candidates:
    return _names("recipe", incomplete)


@_quietly
def planners(incomplete: str) -> Candidates:
    return _names("planner", incomplete)


@_quietly
def kinds(incomplete: str) -> Candidates:
    from segcli.plugins import KINDS
    from segcli.registry import plural

    return [(plural(kind), "") for kind in KINDS if plural(kind).startswith(incomplete)]


@_quietly
def settings(incomplete: str) -> Candidates:
    """`--set`: `KEY=` for every configuration key, then plugin names after a name key."""
    key, equals, value = incomplete.partition("=")
    if equals:
        kind = _NAME_KEYS.get(key)
        return [(f"{key}={name}", help) for name, help in _names(kind, value)] if kind else []
    return [(f"{each}=", "") for each in configuration_keys() if each.startswith(key)]


@functools.cache
def configuration_keys() -> list[str]:
    """Every key `--set` takes a value for, from the configuration schema (dotted)."""
    from pydantic import BaseModel

    from segcli.config import RunConfig

    def walk(schema: type[BaseModel], prefix: str) -> Iterable[str]:
        for name, field in schema.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield from walk(annotation, f"{prefix}{name}.")
            elif name != "options":  # a component's options are set by name: model.depth=3
                yield f"{prefix}{name}"

    return list(walk(RunConfig, ""))


def _runs(runs_dir: Path, checkpoints: tuple[str, ...], incomplete: str) -> Candidates:
    # the rule of segcli.runs.folders.newest_run, without importing it (and torch)
    found = [
        folder
        for folder in runs_dir.glob("*/")
        if (folder / "config.toml").is_file()
        and any((folder / name).is_file() for name in checkpoints)
    ]
    return [
        (str(folder), "run folder")
        for folder in sorted(found, key=lambda f: (f.stat().st_mtime, f.name), reverse=True)
        if str(folder).startswith(incomplete)
    ]


@_quietly
def checkpoints(ctx: typer.Context, incomplete: str) -> Candidates:
    """Run folders of `--runs-dir` (or runs/) with a checkpoint; other paths are left to the
    shell's own file completion, which it falls back to when nothing is offered."""
    runs_dir = Path(ctx.params.get("runs_dir") or _RUNS_DIR)
    return _runs(runs_dir, _CHECKPOINT_NAMES, incomplete)


@_quietly
def resume_targets(ctx: typer.Context, incomplete: str) -> Candidates:
    """`last`, then the run folders a run can continue from (they hold last.safetensors)."""
    runs_dir = Path(ctx.params.get("runs_dir") or _RUNS_DIR)
    newest = [("last", "the newest run")] if "last".startswith(incomplete) else []
    return newest + _runs(runs_dir, ("last.safetensors",), incomplete)
