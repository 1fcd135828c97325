"""`segcli evaluate`: scores of a checkpoint on a prepared split, per class, saved as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from segcli.cli import options
from segcli.cli.output import console, error_console, print_warning


def evaluate(
    dataset_dir: Path = typer.Argument(..., help="A prepared dataset folder (with dataset.json)."),
    split: str = typer.Option(
        None, "--split", help="Labelled split to evaluate: val, test, ... [default: val]."
    ),
    checkpoint: options.Checkpoint = None,
    ensemble: options.Ensemble = None,
    cv: Path = typer.Option(
        None,
        "--cv",
        metavar="RUN",
        help="A cross-validation run: score its out-of-fold predictions (each image by the "
        "fold that did not train on it), per fold and pooled.",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="JSON report [default: <run>/eval-<split>.json]."
    ),
    save_predictions: bool = typer.Option(
        False,
        "--save-predictions",
        help="Also write each predicted mask (and colour) next to the report.",
    ),
    post_processing: bool = typer.Option(
        True,
        "--post-processing/--no-post-processing",
        help="Apply what training chose on the validation images, recorded in the "
        "checkpoint: test-time flips (--tta auto) and, for two-class models, the threshold, "
        "smallest region and empty-image rules.",
    ),
    tile: options.Tile = None,
    overlap: options.Overlap = None,
    tta: options.Tta = "auto",
    workers: options.Workers = None,
    device: options.Device = "auto",
    threads: options.Threads = None,
    runs_dir: options.RunsDir = Path("runs"),
    force: options.Force = False,
    max_image_pixels: options.MaxImagePixels = None,
) -> None:
    """Score the model's masks against a split's masks, at the images' own sizes.

    Existing files are replaced only where segcli wrote them (or with --force)."""
    from rich.progress import Progress
    from rich.table import Table

    from segcli.evaluation import labelled_pairs
    from segcli.evaluation.json_report import (
        claim_outputs,
        default_report_path,
        evaluation_report,
        write_json_atomic,
    )
    from segcli.inference.predictor import Predictor, reuse_freed_memory

    options.use_threads(threads)
    if cv is not None:
        if checkpoint is not None or ensemble is not None or split is not None:
            from segcli.errors import UsageError

            raise UsageError(
                "--cv scores each fold on the images it held out: drop --checkpoint, "
                "--ensemble and --split",
                hint=f"segcli evaluate {dataset_dir} --cv {cv}",
            )
        _evaluate_out_of_fold(
            cv, dataset_dir, out, save_predictions, post_processing, tile, overlap, tta,
            workers, device, force, max_image_pixels,
        )  # fmt: skip
        return
    split = split or "val"
    checkpoint_path = options.model_path(checkpoint, ensemble, runs_dir)
    if ensemble is not None:
        _warn_if_trained_on(ensemble, split)
    reuse_freed_memory()
    pairs = labelled_pairs(dataset_dir, split)
    total = len(pairs)
    report_path = out or default_report_path(checkpoint_path, split)
    predictions_dir = (
        report_path.with_name(f"{report_path.stem}-predictions") if save_predictions else None
    )
    ledger = claim_outputs(report_path, predictions_dir, dataset_dir, checkpoint_path, pairs, force)
    predictor = Predictor(checkpoint_path, device, tta=tta, post_processing=post_processing)
    console.print(f"{'ensemble' if ensemble else 'checkpoint'}: {checkpoint_path}")
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task(f"evaluating {split}", total=total)
        report = evaluation_report(
            predictor,
            dataset_dir,
            split,
            tile=tile,
            overlap=overlap,
            workers=workers,
            predictions_dir=predictions_dir,
            max_pixels=max_image_pixels,
            ledger=ledger,
            progress=lambda count: progress.advance(task, count),
        )
    report["checkpoint"] = str(checkpoint_path)
    write_json_atomic(report_path, report, ledger)

    names = [c["name"] for c in report["classes"]]
    per_class = {
        key: value
        for key, value in report["metrics"].items()
        if isinstance(value, list) and len(value) == len(names) and not isinstance(value[0], list)
    }
    table = Table(title=f"{dataset_dir.name} / {split}: {total} image(s)")
    table.add_column("class")
    for key in per_class:
        table.add_column(key, justify="right")
    for index, name in enumerate(names):
        table.add_row(name, *(_number(values[index]) for values in per_class.values()))
    console.print(table)
    for key, value in report["metrics"].items():
        if isinstance(value, float):
            console.print(f"{key}: [bold]{_number(value)}[/]")
    console.print(
        f"wrote {report_path}" + (f" and masks in {predictions_dir}" if predictions_dir else "")
    )


def _warn_if_trained_on(run: Path, split: str) -> None:
    """An ensemble scored on images its folds trained on: say that the score is not of
    unseen images."""
    from segcli.runs.cross_validation import FOLDS_FILE, read_folds

    if split in read_folds(run / FOLDS_FILE).splits:
        print_warning(
            f"the {split} images are in {run.name}'s folds: every fold but one trained on each, "
            "so this is no score on unseen images (`evaluate --cv` is; or make the folds "
            "with train --hold-out-val)"
        )


def _evaluate_out_of_fold(
    run: Path,
    dataset_dir: Path,
    out: Path | None,
    save_predictions: bool,
    post_processing: bool,
    tile: int | None,
    overlap: float | None,
    tta: str,
    workers: int | None,
    device: str,
    force: bool,
    max_image_pixels: int | None,
) -> None:
    """`--cv RUN`: out-of-fold scores, a row per fold and the pooled ones, saved as JSON."""
    from rich.progress import Progress
    from rich.table import Table

    from segcli.evaluation.cross_validation import (
        evaluate_out_of_fold,
        out_of_fold_pairs,
        out_of_fold_report,
    )
    from segcli.evaluation.json_report import (
        claim_outputs,
        prediction_files,
        write_json_atomic,
    )
    from segcli.files import write_png_atomic
    from segcli.inference.predictor import reuse_freed_memory
    from segcli.palette import colorize
    from segcli.runs.checkpoint_file import read_checkpoint_meta
    from segcli.runs.cross_validation import fold_checkpoints

    reuse_freed_memory()
    pairs = [pair for fold in out_of_fold_pairs(run, dataset_dir) for pair in fold]
    classes = read_checkpoint_meta(fold_checkpoints(run)[0])["classes"]
    palette = [tuple(c["color"]) for c in classes]
    report_path = out or run / "eval-cv.json"
    predictions_dir = (
        report_path.with_name(f"{report_path.stem}-predictions") if save_predictions else None
    )
    ledger = claim_outputs(report_path, predictions_dir, dataset_dir, run, pairs, force)
    console.print(f"cross-validation: {run}, {len(pairs)} out-of-fold image(s)")
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task("evaluating the folds", total=len(pairs))

        def each_image(record: Any) -> None:
            if predictions_dir is not None:
                for path, picture in zip(
                    prediction_files(predictions_dir, record.path),
                    (record.prediction, colorize(record.prediction, palette)),
                    strict=True,
                ):
                    write_png_atomic(path, picture, ledger)
            progress.advance(task, 1)

        evaluation = evaluate_out_of_fold(
            run, dataset_dir, device=device, tta=tta, post_processing=post_processing,
            tile=tile, overlap=overlap, workers=workers, max_pixels=max_image_pixels,
            on_image=each_image,
        )  # fmt: skip
    report = out_of_fold_report(run, dataset_dir, evaluation)
    write_json_atomic(report_path, report, ledger)
    scalars = [k for k, v in evaluation.metrics.items() if isinstance(v, float)]
    table = Table(title=f"{dataset_dir.name}: out-of-fold scores of {run.name}")
    table.add_column("fold")
    table.add_column("images", justify="right")
    for key in scalars:
        table.add_column(key, justify="right")
    for fold, scored in enumerate(evaluation.folds):
        row = [_number(scored.metrics.get(key, float("nan"))) for key in scalars]
        table.add_row(str(fold), str(scored.images), *row)
    table.add_row(
        "pooled", str(evaluation.images), *(_number(evaluation.metrics[k]) for k in scalars)
    )
    console.print(table)
    console.print(
        f"wrote {report_path}" + (f" and masks in {predictions_dir}" if predictions_dir else "")
    )


def _number(value: float) -> str:
    return "-" if value != value else f"{value:.4f}"  # NaN: class absent from truth and prediction


def add_to(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
