"""`segcli evaluate`'s side of evaluation: the JSON report of a checkpoint on a split, the
predicted masks written next to it, and which outputs it may write. The predicting and
scoring itself is `segcli.evaluation.evaluate_split`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segcli.errors import UsageError
from segcli.evaluation import ImageRecord, evaluate_split
from segcli.files import atomic_write, write_png_atomic
from segcli.inference.input_files import is_inside
from segcli.inference.predictor import Predictor
from segcli.ledger import OutputLedger
from segcli.palette import colorize


def evaluation_report(
    predictor: Predictor,
    dataset_dir: Path,
    split: str,
    *,
    tile: int | None = None,
    overlap: float | None = None,
    batch_size: int = 4,
    workers: int | None = None,
    predictions_dir: Path | None = None,
    max_pixels: int | None = None,
    ledger: OutputLedger | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Scores of every metric plugin of the checkpoint's config, plus each image's mean IoU
    (NaN for an image without a labelled pixel), as the JSON report holds them.

    Predicted masks go to `predictions_dir` when given, recorded in `ledger` (see
    `claim_outputs`, which should have vetted them first)."""

    def each_image(record: ImageRecord) -> None:
        if predictions_dir is not None:
            for path, picture in zip(
                prediction_files(predictions_dir, record.path),
                (record.prediction, colorize(record.prediction, predictor.palette)),
                strict=True,
            ):
                write_png_atomic(path, picture, ledger)
        if progress:
            progress(1)

    evaluation = evaluate_split(
        predictor,
        dataset_dir,
        split,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        workers=workers,
        max_pixels=max_pixels,
        on_image=each_image,
    )
    return {
        "dataset": str(dataset_dir),
        "split": split,
        "images": evaluation.images,
        "classes": [
            {"id": c.id, "name": c.name, "color": list(c.color)} for c in predictor.classes
        ],
        "metrics": evaluation.metrics,
        "per_image": [{"image": name, "miou": iou} for name, iou in evaluation.per_image],
    }


def default_report_path(checkpoint: Path, split: str) -> Path:
    """`<run>/eval-<split>.json` for a checkpoint in a run folder, else next to the file;
    `<run>/eval-ensemble-<split>.json` for the ensemble of a cross-validation run's folds."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        return checkpoint / f"eval-ensemble-{split}.json"
    if (checkpoint.parent / "config.toml").is_file():
        return checkpoint.parent / f"eval-{split}.json"
    return checkpoint.with_name(f"{checkpoint.stem}-eval-{split}.json")


def prediction_files(predictions_dir: Path, image: Path) -> tuple[Path, Path]:
    """(mask, colour mask) written for one evaluated image."""
    return predictions_dir / f"{image.stem}.png", predictions_dir / f"{image.stem}.color.png"


def claim_outputs(
    report_path: Path,
    predictions_dir: Path | None,
    dataset_dir: Path,
    checkpoint: Path,
    pairs: list[tuple[Path, Path]],
    force: bool,
) -> OutputLedger:
    """The ledger of the report's folder, opened once it is sure that no output lies inside the
    dataset or replaces the checkpoint, and (unless `force`) that none replaces a file
    segcli did not write there. Called before the (long) evaluation."""
    for path in (report_path, predictions_dir):
        if path is not None and is_inside(path, dataset_dir):
            raise UsageError(
                f"output {path} is inside the dataset {dataset_dir}",
                hint="choose an --out outside the dataset folder",
            )
    ledger = OutputLedger(report_path.parent)
    outputs = [report_path]
    if predictions_dir is not None:
        outputs += [path for image, _ in pairs for path in prediction_files(predictions_dir, image)]
    ledger.check_replaceable(outputs, force, inputs=[checkpoint])
    ledger.open_folder()
    return ledger


def write_json_atomic(path: Path, data: Any, ledger: OutputLedger | None = None) -> None:
    with atomic_write(path, ledger=ledger) as stream:
        stream.write(json.dumps(data, indent=2).encode())
