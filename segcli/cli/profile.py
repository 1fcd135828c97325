"""`segcli profile`: what a model costs to run, counted and measured in each runtime."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from segcli.cli import options
from segcli.cli.output import console, error_console


def profile(
    target: Path = typer.Argument(
        None, help="Run folder or checkpoint [default: the newest run's best]."
    ),
    model: str = typer.Option(
        None, "--model", help="Profile a freshly built registered model instead (e.g. unet)."
    ),
    size: str = typer.Option(
        None, "--size", help="Input size HxW [default: the run's input size, 128x128 for --model]."
    ),
    batch: int = typer.Option(
        8,
        "--batch",
        help="Batch of the throughput measurement.",
        callback=options.in_range("--batch", low=1),
    ),
    runs: int = typer.Option(
        10,
        "--runs",
        help="Timed runs per measurement (after 2 untimed warm-up runs).",
        callback=options.in_range("--runs", low=1),
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON."),
    device: options.Device = "cpu",
    runs_dir: options.RunsDir = Path("runs"),
) -> None:
    """Parameters, FLOPs, peak activation memory, and latency and throughput in PyTorch eager,
    channels_last, TorchScript, ONNX Runtime and OpenVINO (those installed).

    Latency is measured at batch 1, throughput at --batch; each is the median (and the
    interquartile range) of --runs timed runs on random inputs."""
    from segcli.devices import resolve_device
    from segcli.inference.profile import (
        model_to_profile,
        parse_size,
        profile_model,
        save_run_profile,
    )

    chosen_size = parse_size(size) if size is not None else None
    target_model, name, source, input_size, channels = model_to_profile(
        target, model, chosen_size, runs_dir
    )
    with error_console.status("profiling") as status:
        result = profile_model(
            target_model,
            input_size,
            channels,
            name=name,
            source=source,
            batch=batch,
            runs=runs,
            device=resolve_device(device, "--device"),
            on_runtime=lambda runtime: status.update(f"timing {runtime}"),
        )
    saved = save_run_profile(result, Path(source)) if model is None else None
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
        return
    from rich.table import Table

    height, width = result.input_size
    console.print(f"{result.model} ({result.source}) at {height}x{width}, {channels} channel(s)")
    console.print(
        f"parameters {result.parameters:,}; {result.flops / 1e9:.3f} GFLOPs per image; "
        f"peak activations {result.peak_activation_bytes / 2**20:.1f} MiB per image"
    )
    table = Table(title=f"speed on {result.device} (median ± IQR of {result.runs} runs)")
    table.add_column("runtime")
    table.add_column("latency, batch 1 (ms)", justify="right")
    table.add_column(f"throughput, batch {result.batch} (img/s)", justify="right")
    for speed in result.speeds:
        if speed.skipped:
            table.add_row(speed.runtime, f"[dim]skipped: {speed.skipped}[/]", "")
            continue
        table.add_row(
            speed.runtime,
            f"{speed.latency_ms:.2f} ± {speed.latency_iqr_ms:.2f}",
            f"{speed.throughput_img_s:.1f} ± {speed.throughput_iqr_img_s:.1f}",
        )
    console.print(table)
    if saved:
        console.print(f"saved to {saved}: `segcli report` shows it")


def add_to(app: typer.Typer) -> None:
    app.command("profile")(profile)
