"""`segcli export`: a checkpoint as ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

from segcli.cli import options
from segcli.cli.output import console


def export(
    checkpoint: Path = typer.Option(
        None, "--checkpoint", help="Checkpoint file or run folder [default: newest run's best]."
    ),
    fmt: str = typer.Option(..., "--format", help="onnx or torchscript."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Model file [default: next to the checkpoint, .onnx or .pt]."
    ),
    dynamic: bool = typer.Option(
        False,
        "--dynamic",
        help="Any batch size and image size (needed for --tile and native sizes).",
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
    runs_dir: options.RunsDir = Path("runs"),
    force: options.Force = False,
) -> None:
    """Export a model plus a sidecar JSON (classes, palette, preprocessing).

    The export is run on sample inputs next to the PyTorch model and the largest logit
    difference is reported; above --tolerance nothing is written. Existing files are
    replaced only where segcli wrote them (or with --force).
    """
    from segcli.engine.export import export_checkpoint
    from segcli.engine.runs import find_checkpoint
    from segcli.errors import UsageError

    if opset is not None and fmt != "onnx":
        raise UsageError(f"--opset {opset} applies to --format onnx only, not {fmt}")

    checkpoint_path = find_checkpoint(checkpoint, runs_dir)
    console.print(f"checkpoint: {checkpoint_path}")
    with console.status(f"exporting to {fmt}"):
        report = export_checkpoint(
            checkpoint_path,
            fmt,
            out,
            dynamic=dynamic,
            opset=opset,
            tolerance=tolerance,
            force=force,
        )
    shapes = ", ".join("x".join(map(str, shape)) for shape in report.checked_shapes)
    console.print(f"wrote [bold]{report.path}[/] and {report.sidecar.name} ({report.exporter})")
    console.print(f"parity with PyTorch on {shapes}: max abs difference {report.max_abs_diff:.3g}")


def add_to(app: typer.Typer) -> None:
    app.command("export")(export)
