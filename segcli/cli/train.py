"""`segcli train`: run a recipe or configuration, with a live progress display."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from segcli.cli import command_started, completion, options
from segcli.cli.output import console
from segcli.cli.progress import RichReporter

# The report written after training predicts (part of) the validation split image by image:
# about one and a half validation passes, kept inside the budget.
REPORT_VALIDATIONS = 1.5


def train(
    plugin: str = typer.Option(
        None,
        "--plugin",
        "-p",
        metavar="RECIPE",
        help="Recipe to train (see `segcli list recipes`).",
        autocompletion=completion.recipes,
    ),
    config_file: Path = typer.Option(
        None, "--config", "-c", help="TOML configuration (e.g. a run's config.toml)."
    ),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override one key: --set train.lr=1e-3 (repeatable).",
        autocompletion=completion.settings,
    ),
    data: Path = typer.Option(
        None,
        "--data",
        help="A prepared dataset folder: planned from its fingerprint, or with --plugin the "
        "recipe trained on it.",
    ),
    planner: str = typer.Option(
        None,
        "--planner",
        metavar="PLANNER",
        help="The planner of a --data run (see `segcli list planners`) [default: default].",
        autocompletion=completion.planners,
    ),
    print_config: bool = typer.Option(
        False,
        "--print-config",
        help="Print the resolved configuration (a plan with a reason per choice) and exit.",
    ),
    resume: str = typer.Option(
        None,
        "--resume",
        help="Continue a run: its folder, or 'last' for the newest.",
        autocompletion=completion.resume_targets,
    ),
    time_budget: str = typer.Option(
        None,
        "--time",
        help="Time for the whole training, validation included: 90s, 10m, 1h30m (same as "
        "--set train.max_time=10m). With --resume: a new budget, or +5m to add 5 minutes.",
    ),
    max_steps: int = typer.Option(
        None,
        "--max-steps",
        help="Stop after this many optimizer steps (smoke tests).",
        callback=options.in_range("--max-steps", low=1),
    ),
    runs_dir: Path = typer.Option(
        None,
        "--runs-dir",
        help="Where runs are: --resume last looks here [default: runs]; a new run is "
        "written here (same as --set runs_dir=DIR).",
    ),
    folds: int = typer.Option(
        None,
        "--folds",
        metavar="K",
        help="Cross-validate: K seeded folds of the train and val images, one run each in "
        "RUN/fold-k/; --time is shared out evenly among them.",
    ),
    fold: int = typer.Option(
        None,
        "--fold",
        metavar="FOLD",
        help="Train only this fold (0 to K-1): of a new --folds K run, or of the "
        "cross-validation run given to --resume.",
    ),
    hold_out_val: bool = typer.Option(
        False,
        "--hold-out-val",
        help="With --folds: make the folds of the train images alone, so that the val split "
        "judges the folds and their ensemble on images none of them trained on.",
    ),
) -> None:
    """Train a model. `segcli train --data data/shapes` plans a training for a prepared
    dataset; `segcli train --plugin shapes-unet` trains the quick-start recipe."""
    from segcli.config import build_config, to_toml
    from segcli.errors import UsageError
    from segcli.plugins import get_plugins
    from segcli.runs.cross_validation import (
        check_fold,
        check_fold_count,
        cross_validation_of,
        is_cross_validation,
    )

    if folds is not None:
        check_fold_count(folds)
        if resume:
            raise UsageError(
                "--folds starts a new cross-validation; --resume continues one with its folds",
                hint="segcli train --resume CV_RUN [--fold k]",
            )
        if os.environ.get("WORLD_SIZE", "1") != "1":
            raise UsageError(
                "a cross-validation trains its folds one after another in one process",
                hint="run it without torchrun, or train a fold alone under torchrun with "
                "--set dataset.folds=RUN/folds.json --set dataset.fold=k",
            )
    if fold is not None and folds is None and not resume:
        raise UsageError(
            "--fold k trains one fold of a cross-validation",
            hint="give the folds too (--folds 5 --fold 0), or the run: --resume CV_RUN --fold 0",
        )
    if fold is not None and folds is not None:
        check_fold(folds, fold)
    if hold_out_val and folds is None:
        raise UsageError(
            "--hold-out-val says which images a new cross-validation's folds are made of",
            hint="give --folds K too",
        )
    if resume:
        if print_config:
            raise UsageError(
                "--print-config shows a new run's configuration; a run's own is its config.toml",
                hint="cat RUN/config.toml",
            )
        if plugin or config_file or data or planner:
            raise UsageError(
                "--resume continues a run with its saved configuration; "
                "drop --plugin/--config/--data/--planner",
                hint="--time +5m or --set train.epochs=N extends it",
            )
        target = _resume_target(resume, runs_dir)
        if is_cross_validation(target):
            _resume_cross_validation(target, fold, time_budget, overrides, max_steps)
            return
        if fold is not None:
            raise UsageError(
                f"--fold picks a fold of a cross-validation run; {target} is a single run",
                hint=f"segcli train --resume {target}",
            )
        run_dir = _train(None, max_steps, target, extension=_extension(time_budget, overrides))
        parent = cross_validation_of(run_dir)
        if parent is not None and _reports():  # a fold resumed: its parent's scores follow
            print_folds_summary(parent)
        return
    if time_budget is not None:
        seconds = _seconds(time_budget)
        if folds is not None:  # the whole command's budget, shared out among the folds
            from segcli.training.cross_validation import fold_budget

            seconds = fold_budget(seconds, folds)
        overrides = [*overrides, f"train.max_time={seconds}"]
    if not plugin and not config_file and data is None:
        raise UsageError(
            "say what to train: --data DATASET_DIR, --plugin RECIPE or --config FILE",
            hint="`segcli train --data data/shapes` plans a training for a prepared dataset; "
            "`segcli list recipes` shows the recipes",
        )
    if runs_dir is not None:
        overrides = [*overrides, f"runs_dir={json.dumps(str(runs_dir))}"]
    if planner is not None and (data is None or plugin):
        raise UsageError(
            "--planner plans a --data run; a recipe or a --config file is not planned",
            hint="segcli train --data DATASET_DIR --planner NAME",
        )
    if data is not None and not plugin:
        from segcli.planning.configure import planned_run
        from segcli.planning.planners import DEFAULT_PLANNER

        planned = planned_run(
            data,
            config_file,
            overrides,
            measure=not print_config,
            planner=planner or DEFAULT_PLANNER,
        )
        if print_config:
            typer.echo(planned.render(), nl=False)
            return
        _start(planned.config, max_steps, planned.record(), folds, fold, hold_out_val)
        return
    recipe = None
    if plugin:
        recipe = get_plugins().recipes.get(plugin)
        if data is not None:
            from segcli.planning.configure import recipe_on_dataset

            recipe = recipe_on_dataset(recipe, data)
    config = build_config(recipe, config_file, overrides)
    if plugin:
        config.recipe = plugin
    if print_config:
        typer.echo(to_toml(config), nl=False)
        return
    _start(config, max_steps, None, folds, fold, hold_out_val)


def _start(
    config: Any,
    max_steps: int | None,
    plan: dict[str, Any] | None,
    folds: int | None,
    fold: int | None,
    hold_out_val: bool,
) -> None:
    """Train a new run, or start a cross-validation of `folds` folds (all, or `fold` alone)."""
    if folds is None:
        _train(config, max_steps, None, plan=plan)
        return
    from segcli.training.cross_validation import start_cross_validation

    parent = start_cross_validation(config, folds, plan, hold_out_val=hold_out_val)
    console.print(f"cross-validation: {folds} folds in {parent} (folds.json)")
    _train_folds(parent, config, fold, max_steps)


def _resume_cross_validation(
    parent: Path,
    fold: int | None,
    time_budget: str | None,
    overrides: list[str],
    max_steps: int | None,
) -> None:
    from segcli.errors import UsageError
    from segcli.training.cross_validation import shared_config

    if time_budget is not None or overrides:
        raise UsageError(
            f"{parent} is a cross-validation: its folds keep the configuration and time they "
            "were given",
            hint=f"give one fold more: segcli train --resume {parent}/fold-0 --time +5m",
        )
    _train_folds(parent, shared_config(parent), fold, max_steps)


def _train_folds(parent: Path, config: Any, only: int | None, max_steps: int | None) -> None:
    """Train the folds of `parent` still to train, one after another, each an ordinary run
    (which updates the parent's summary.json); the summary is shown at the end."""
    from segcli.training.cross_validation import folds_to_train

    for position, todo in enumerate(folds_to_train(parent, config, only)):
        console.print(f"[bold]fold {todo.fold}[/]: {todo.run_dir}", highlight=False)
        if todo.config is None:  # stopped before its end: continued like any run
            _train(None, max_steps, todo.run_dir, first=position == 0)
        else:
            _train(
                todo.config,
                max_steps,
                None,
                plan=todo.plan,
                run_dir=todo.run_dir,
                first=position == 0,
            )
    if _reports():
        print_folds_summary(parent)


def _reports() -> bool:
    """Whether this process reports: under torchrun only the first one does."""
    return os.environ.get("RANK", "0") == "0"


def _seconds(text: str, *, added: bool = False) -> float:
    from segcli.config import parse_duration
    from segcli.errors import UsageError

    if text.startswith("+") and not added:
        raise UsageError(
            f"--time {text} adds to a resumed run's budget", hint="for a new run: --time 10m"
        )
    try:
        seconds = parse_duration(text.removeprefix("+") if added else text)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise UsageError(
            f"--time {text!r} is not a duration", hint="e.g. --time 90s, 10m, 1h30m, or +5m"
        )
    return seconds


def _extension(time_budget: str | None, overrides: list[str]) -> Any:
    """What --time and --set change in a resumed run (checked by the engine)."""
    from segcli.training.resume import Extension

    if time_budget is None:
        return Extension(tuple(overrides))
    if time_budget.startswith("+"):
        return Extension(tuple(overrides), added_seconds=_seconds(time_budget, added=True))
    return Extension((*overrides, f"train.max_time={_seconds(time_budget)}"))


def _resume_target(resume: str, runs_dir: Path | None) -> Path:
    from segcli.errors import UsageError
    from segcli.runs.folders import newest_run

    if resume == "last":
        return newest_run(runs_dir or Path("runs"), checkpoints=("last",))
    if runs_dir is not None:
        raise UsageError(
            "--runs-dir is where --resume last looks; with --resume RUN_DIR drop it",
        )
    return Path(resume)


def _train(
    config: Any,
    max_steps: int | None,
    resume: Path | None,
    plan: dict[str, Any] | None = None,
    extension: Any = None,
    run_dir: Path | None = None,
    first: bool = True,
) -> Path:
    """`fit` with the live display, then the summary and the report, and for a fold of a
    cross-validation (trained anew or resumed) its parent's summary; the run folder. The
    time budget counts from the command's start for its `first` run (planning included),
    else from here."""
    from segcli.runs.cross_validation import cross_validation_of
    from segcli.training.cross_validation import update_folds_summary
    from segcli.training.fit import fit

    monitor = config.train.monitor if config else "confusion/miou"
    reporter = RichReporter(monitor)
    try:
        run_dir = fit(
            config,
            max_steps=max_steps,
            resume=resume,
            reporter=reporter,
            plan=plan,
            extension=extension,
            started=command_started() if first else None,
            finishing_validations=REPORT_VALIDATIONS,
            run_dir=run_dir,
        )
    finally:
        reporter.stop()
    if _reports():
        print_summary(run_dir)
        from segcli.cli.report import write_after_training

        write_after_training(run_dir)
        parent = cross_validation_of(run_dir)
        if parent is not None:
            update_folds_summary(parent)
    return run_dir


def print_summary(run_dir: Path) -> None:
    from rich.table import Table

    from segcli.runs.metrics import best_record, read_metrics

    summary = json.loads((run_dir / "summary.json").read_text())
    records = read_metrics(run_dir)
    best = best_record(records, summary["best_epoch"])
    console.print(
        f"[bold green]done[/]: {summary['epochs_run']} epoch(s), best {summary['monitor']} = "
        f"{summary['best']:.4f} at epoch {summary['best_epoch']}"
        if summary["best"] is not None
        else "[bold green]done[/]"
    )
    iou = best.get("confusion/iou")
    if iou:
        from segcli.runs.checkpoint_file import read_checkpoint_meta

        classes = [c["name"] for c in read_checkpoint_meta(run_dir / "best.safetensors")["classes"]]
        table = Table(title="per-class IoU of the best checkpoint")
        table.add_column("class")
        table.add_column("IoU", justify="right")
        for name, value in zip(classes, iou, strict=False):
            table.add_row(name, "-" if value != value else f"{value:.4f}")
        console.print(table)
    _print_post_processing("post-processing", "at the images' own size", summary)
    console.print(time_line(summary), highlight=False)
    console.print(f"checkpoints: {run_dir}/best.safetensors, {run_dir}/last.safetensors")
    console.print(f"curves: {run_dir}/curves.png")
    console.print(f"next: segcli predict --colorize FOLDER   (uses {run_dir}/best.safetensors)")


def _print_post_processing(what: str, scored: str, summary: dict[str, Any]) -> None:
    """The learned post-processing in `summary` (a run's or a cross-validation's), if any,
    with the monitored score before and after it."""
    chosen = summary.get("post_processing")
    if chosen:
        console.print(
            f"{what}: {chosen['description']} ({chosen['monitor']} {scored} "
            f"{chosen['before']:.4f} -> {chosen['after']:.4f})",
            highlight=False,
        )


def print_folds_summary(parent: Path) -> None:
    """From the parent's summary.json: each fold's best monitored score, their mean ± sd,
    and what to do next."""
    from rich.table import Table

    summary = json.loads((parent / "summary.json").read_text())
    monitor = summary.get("monitor") or "score"
    table = Table(title=f"cross-validation: best {monitor} per fold")
    for column in ("fold", "train", "val", monitor, "epoch"):
        table.add_column(column, justify="left" if column == "fold" else "right")
    for row in summary["folds"]:
        best = row["best"]
        table.add_row(
            str(row["fold"]),
            str(row["images"]["train"]),
            str(row["images"]["val"]),
            "not trained" if best is None else f"{best:.4f}",
            "-" if row["best_epoch"] is None else str(row["best_epoch"]),
        )
    console.print(table)
    if summary["mean"] is not None:
        sd = "" if summary["sd"] is None else f" ± {summary['sd']:.4f}"
        console.print(
            f"{monitor}: [bold]{summary['mean']:.4f}{sd}[/] (mean ± sd of {summary['trained']} "
            f"fold(s) of {len(summary['folds'])})",
            highlight=False,
        )
    _print_post_processing("ensemble post-processing", "out of fold", summary)
    console.print(f"summary: {parent}/summary.json", highlight=False)
    console.print(
        f"next: segcli predict --ensemble {parent} IMAGES...; "
        f"segcli evaluate DATASET --cv {parent}",
        highlight=False,
    )


def time_line(summary: dict[str, Any]) -> str:
    """How the run's time was spent and why it stopped, in one line."""
    seconds = summary["seconds"]
    budget = seconds.get("budget")
    of_budget = f" of a {budget:g} s budget" if budget else ""
    phases = ", ".join(
        f"{phase} {seconds.get(phase, 0.0):.1f}"
        for phase in ("setup", "training", "validation", "checkpoints", "post-processing")
    )
    return (
        f"time: {seconds['total']:.1f} s{of_budget} ({phases}); "
        f"stopped: {summary.get('stopped') or '-'}"
    )


def add_to(app: typer.Typer) -> None:
    app.command("train")(train)
