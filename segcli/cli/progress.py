"""The live training display: a progress bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segcli.cli.output import console, error_console


class RichReporter:
    """Progress bar per run: epoch, step, loss, images/s, ETA and the best metric so far."""

    def __init__(self, monitor: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.monitor = monitor
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]} img/s"),
            TextColumn("best {task.fields[best]}"),
            TimeRemainingColumn(),
            console=error_console,
            transient=True,
        )
        self.task: Any = None
        self.best = "-"

    def start(self, run_dir: Path, epochs: int, steps_per_epoch: int) -> None:
        console.print(f"run folder: [bold]{run_dir}[/]")
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=epochs * steps_per_epoch, epoch=1, loss="-", speed="-", best="-"
        )
        self.steps_per_epoch = steps_per_epoch

    def step(self, epoch: int, step: int, loss: float, images_per_second: float) -> None:
        self.progress.update(
            self.task,
            completed=epoch * self.steps_per_epoch + step,
            epoch=epoch + 1,
            loss=f"{loss:.4f}",
            speed=f"{images_per_second:.1f}",
        )

    def epoch_end(self, record: dict[str, Any], best: float | None) -> None:
        value = record.get(self.monitor)
        shown = f"{value:.4f}" if isinstance(value, float) else "-"
        best_text = f"{best:.4f}" if best is not None else "-"
        self.progress.update(self.task, best=best_text)
        self.progress.console.print(
            f"epoch {record['epoch']}: train loss {record['train/loss']:.4f}"
            + (f", val loss {record['val/loss']:.4f}" if "val/loss" in record else "")
            + f", {self.monitor} {shown} (best {best_text}), {record['seconds']:.1f} s",
            highlight=False,
        )

    def run_end(self, run_dir: Path) -> None:
        """The end-of-run picture: the engine writes numbers, the command line draws them."""
        from segcli.visualize import curves, save_picture

        save_picture(curves([run_dir]), run_dir / "curves.png")

    def stop(self) -> None:
        self.progress.stop()
