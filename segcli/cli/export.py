"""`segcli export`: a checkpoint as ONNX, TorchScript or OpenVINO, checked against PyTorch;
quantised ONNX and OpenVINO exports also re-scored on the validation split."""

from __future__ import annotations

from pathlib import Path

import typer

from segcli.cli import options
from segcli.cli.output import console, print_warning


def export(
    checkpoint: Path = typer.Option(
        None, "--checkpoint", help="Checkpoint file or run folder [default: newest run's best]."
    ),
    fmt: str = typer.Option(..., "--format", help="onnx, torchscript or openvino."),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Model file [default: next to the checkpoint, .onnx, .pt or .xml].",
    ),
    dynamic: bool = typer.Option(
        False,
        "--dynamic",
        help="Any image size (needed for --tile and native sizes); the batch is always free.",
    ),
    opset: int = typer.Option(
        None,
        "--opset",
        help="ONNX opset, one the installed exporter writes [default: the exporter's].",
        callback=options.onnx_opset,
    ),
    tolerance: float = typer.Option(
        1e-3,
        "--tolerance",
        help="Largest accepted |exported - PyTorch| logit difference (above 0).",
        callback=options.in_range(
            "--tolerance",
            low=0,
            low_open=True,
            hint="the parity check cannot be switched off; e.g. --tolerance 0.01",
        ),
    ),
    quantize: str = typer.Option(
        None,
        "--quantize",
        help="With --format onnx: int8 (static, calibrated on the run's train images), "
        "dynamic (int8 weights) or fp16.",
    ),
    calibration: int = typer.Option(
        200,
        "--calibration",
        help="Train images that calibrate --quantize int8.",
        callback=options.in_range("--calibration", low=1),
    ),
    max_drop: float = typer.Option(
        0.01,
        "--max-drop",
        help="Largest accepted drop of the monitored metric on the validation split "
        "(quantised and OpenVINO exports).",
        callback=options.in_range("--max-drop", low=0),
    ),
    keep_anyway: bool = typer.Option(
        False, "--keep-anyway", help="Keep an export whose score dropped by more than --max-drop."
    ),
    dataset: Path = typer.Option(
        None,
        "--dataset",
        help="Prepared dataset to calibrate and re-score on [default: the run's].",
    ),
    runs_dir: options.RunsDir = Path("runs"),
    force: options.Force = False,
) -> None:
    """Export a model plus a sidecar JSON (classes, palette, preprocessing).

    The export is run on sample inputs next to the PyTorch model and the largest logit
    difference is reported; above --tolerance nothing is written. A quantised ONNX or an
    OpenVINO export is also scored on the validation split next to the float ONNX model;
    when the monitored metric drops by more than --max-drop nothing is written (unless
    --keep-anyway). Existing files are replaced only where segcli wrote them (or with
    --force).
    """
    from segcli.errors import UsageError
    from segcli.inference.export import export_checkpoint
    from segcli.runs.folders import find_checkpoint

    if opset is not None and fmt != "onnx":
        raise UsageError(f"--opset {opset} applies to --format onnx only, not {fmt}")

    checkpoint_path = find_checkpoint(checkpoint, runs_dir)
    console.print(f"checkpoint: {checkpoint_path}")
    with console.status(f"exporting to {fmt}" + (f" ({quantize})" if quantize else "")):
        report = export_checkpoint(
            checkpoint_path,
            fmt,
            out,
            dynamic=dynamic,
            opset=opset,
            tolerance=tolerance,
            force=force,
            quantize=quantize,
            calibration=calibration,
            max_drop=max_drop,
            keep_anyway=keep_anyway,
            dataset=dataset,
        )
    shapes = ", ".join("x".join(map(str, shape)) for shape in report.checked_shapes)
    written = ", ".join(path.name for path in (*report.extra_files, report.sidecar))
    console.print(f"wrote [bold]{report.path}[/] and {written} ({report.exporter})")
    checked = "the float graph's parity" if quantize else "parity"
    console.print(
        f"{checked} with PyTorch on {shapes}: max abs difference {report.max_abs_diff:.3g}"
    )
    if report.accuracy:
        accuracy = report.accuracy
        reference, exported = accuracy["reference"], accuracy["exported"]
        console.print(
            f"{accuracy['metric']} on {accuracy['images']} {accuracy['split']} image(s): "
            f"{exported['score']:.4f} ({exported['runtime']}, "
            f"{exported['images_per_second']:.1f} img/s) vs {reference['score']:.4f} "
            f"({reference['runtime']}, {reference['images_per_second']:.1f} img/s), "
            f"drop {accuracy['drop']:.4f} (--max-drop {accuracy['max_drop']:g})"
        )
        if accuracy["kept_anyway"]:
            print_warning("kept with --keep-anyway although the drop is above --max-drop")


def add_to(app: typer.Typer) -> None:
    app.command("export")(export)
