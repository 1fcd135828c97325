"""`segcli train`: run a recipe or configuration, with a live progress display."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from segcli.cli.output import console
from segcli.cli.progress import RichReporter


def train(
    plugin: str = typer.Option(
        None, "--plugin", "-p", help="Recipe to train (see `segcli list recipes`)."
    ),
    config_file: Path = typer.Option(
        None, "--config", "-c", help="TOML configuration (e.g. a run's config.toml)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", "-s", help="Override one key: --set train.lr=1e-3 (repeatable)."
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved configuration and exit."
    ),
    resume: str = typer.Option(
        None, "--resume", help="Continue a run: its folder, or 'last' for the newest."
    ),
    max_steps: int = typer.Option(
        None, "--max-steps", help="Stop after this many optimizer steps (smoke tests)."
    ),
    runs_dir: Path = typer.Option(
        None,
        "--runs-dir",
        help="Where runs are: --resume last looks here [default: runs]; a new run is "
        "written here (same as --set runs_dir=DIR).",
    ),
) -> None:
    """Train a model. `segcli train --plugin shapes-unet` trains the quick-start recipe."""
    from segcli.config import build_config, to_toml
    from segcli.errors import UsageError
    from segcli.plugins import get_plugins

    if resume:
        if plugin or config_file or overrides:
            raise UsageError(
                "--resume continues a run with its saved configuration; "
                "drop --plugin/--config/--set"
            )
        _train(None, max_steps, _resume_target(resume, runs_dir))
        return
    if not plugin and not config_file:
        raise UsageError(
            "say what to train: --plugin RECIPE or --config FILE",
            hint="`segcli list recipes` shows the recipes",
        )
    if runs_dir is not None:
        overrides = [*overrides, f"runs_dir={json.dumps(str(runs_dir))}"]
    recipe = None
    if plugin:
        recipe = get_plugins().recipes.get(plugin)
    config = build_config(recipe, config_file, overrides)
    if plugin:
        config.recipe = plugin
    if print_config:
        typer.echo(to_toml(config), nl=False)
        return
    _train(config, max_steps, None)


def _resume_target(resume: str, runs_dir: Path | None) -> Path:
    from segcli.engine.runs import newest_run
    from segcli.errors import UsageError

    if resume == "last":
        return newest_run(runs_dir or Path("runs"), checkpoints=("last",))
    if runs_dir is not None:
        raise UsageError(
            "--runs-dir is where --resume last looks; with --resume RUN_DIR drop it",
        )
    return Path(resume)


def _train(config: Any, max_steps: int | None, resume: Path | None) -> None:
    from segcli.engine.train import fit

    monitor = config.train.monitor if config else "confusion/miou"
    reporter = RichReporter(monitor)
    try:
        run_dir = fit(config, max_steps=max_steps, resume=resume, reporter=reporter)
    finally:
        reporter.stop()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, only the first process reports
        print_summary(run_dir)


def print_summary(run_dir: Path) -> None:
    from rich.table import Table

    from segcli.engine.metrics_log import read_metrics

    summary = json.loads((run_dir / "summary.json").read_text())
    records = read_metrics(run_dir)
    best = next((r for r in records if r["epoch"] == summary["best_epoch"]), records[-1])
    console.print(
        f"[bold green]done[/]: {summary['epochs_run']} epoch(s), best {summary['monitor']} = "
        f"{summary['best']:.4f} at epoch {summary['best_epoch']}"
        if summary["best"] is not None
        else "[bold green]done[/]"
    )
    iou = best.get("confusion/iou")
    if iou:
        from segcli.engine.checkpoint import read_checkpoint_meta

        classes = [c["name"] for c in read_checkpoint_meta(run_dir / "best.safetensors")["classes"]]
        table = Table(title="per-class IoU of the best checkpoint")
        table.add_column("class")
        table.add_column("IoU", justify="right")
        for name, value in zip(classes, iou, strict=False):
            table.add_row(name, "-" if value != value else f"{value:.4f}")
        console.print(table)
    console.print(f"checkpoints: {run_dir}/best.safetensors, {run_dir}/last.safetensors")
    console.print(f"curves: {run_dir}/curves.png")
    console.print(f"next: segcli predict --colorize FOLDER   (uses {run_dir}/best.safetensors)")


def add_to(app: typer.Typer) -> None:
    app.command("train")(train)
