"""The live training display: a progress bar on a terminal, one plain line per epoch otherwise.

The bar is redrawn on a timer (rich's auto refresh), not when the engine reports, so the
elapsed time, the ETA and a time budget's bar move even while a long step runs; the engine's
calls only store numbers, which keeps them cheap enough to make at every optimizer step.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segcli.cli.output import console, error_console

if TYPE_CHECKING:
    from rich.console import Console

REFRESHES_PER_SECOND = 8
# weight of the newest images/s reading: steady enough to read while it updates 8 times a second
_SPEED_SMOOTHING = 0.2


def clock(seconds: float) -> str:
    """0:03:12, as rich's own time columns show durations."""
    return str(timedelta(seconds=max(0, int(seconds))))


class RichReporter:
    """Training's display: epoch, step, loss, images/s, ETA and the best metric so far.

    A time-bounded run (`max_time`) shows time used against its budget instead of steps
    against epochs. When the display is not a terminal (a log file, CI), no bar is drawn:
    each epoch ends with one plain line, free of control codes.
    """

    def __init__(self, monitor: str, display: Console | None = None) -> None:
        self.monitor = monitor
        self.display = display or error_console
        self.live = self.display.is_terminal
        self.progress: Any = None
        self.task: Any = None
        self.loss: float | None = None
        self.speed: float | None = None

    def start(
        self,
        run_dir: Path,
        epochs: int,
        steps_per_epoch: int,
        *,
        max_time: float | None = None,
        spent: float = 0.0,
    ) -> None:
        """`max_time`: the run's time budget in seconds; `spent`: how much of it was used
        before this call (setup, an earlier session of a resumed run)."""
        console.print(f"run folder: [bold]{run_dir}[/]")
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.max_time, self.started = max_time, time.monotonic() - spent
        self.epochs_started_at: dict[int, float] = {}
        if not self.live:
            return
        from rich.progress import Progress

        self.progress = Progress(
            *self._columns(),
            console=self.display,
            transient=True,
            auto_refresh=True,
            refresh_per_second=REFRESHES_PER_SECOND,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train",
            total=max_time if max_time is not None else epochs * steps_per_epoch,
            epoch=1,
            loss="-",
            speed="-",
            best="-",
        )

    def _columns(self) -> list[Any]:
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

        fields = [
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]} img/s"),
            TextColumn("best {task.fields[best]}"),
        ]
        epoch = TextColumn(f"[bold]epoch {{task.fields[epoch]}}{self._of_epochs()}")
        if self.max_time is None:
            steps = TextColumn("{task.completed}/{task.total} steps")
            return [epoch, BarColumn(), steps, *fields, TimeRemainingColumn()]
        return [epoch, *_budget_columns(self), *fields]

    def _of_epochs(self) -> str:
        # under a time budget the epoch count is only an upper bound, often set high
        return "" if self.max_time is not None else f"/{self.epochs}"

    def used(self) -> float:
        """Seconds of the run so far, including what `spent` said was used before `start`."""
        return time.monotonic() - self.started

    def step(self, epoch: int, step: int, loss: float | None, images_per_second: float) -> None:
        """Called at every optimizer step; `loss` is None on the steps where the engine did not
        read it (reading it waits for the device)."""
        self.epochs_started_at.setdefault(epoch, time.monotonic())
        if loss is not None:
            self.loss = loss
        self.speed = (
            images_per_second
            if self.speed is None
            else self.speed + _SPEED_SMOOTHING * (images_per_second - self.speed)
        )
        if self.progress is None:
            return
        position = None if self.max_time is not None else epoch * self.steps_per_epoch + step
        self.progress.update(
            self.task,
            completed=position,
            epoch=epoch + 1,
            loss="-" if self.loss is None else f"{self.loss:.4f}",
            speed=f"{self.speed:.1f}",
        )

    def epoch_end(self, record: dict[str, Any], best: float | None) -> None:
        value = record.get(self.monitor)
        shown = f"{value:.4f}" if isinstance(value, float) else "-"
        best_text = f"{best:.4f}" if best is not None else "-"
        line = (
            f"epoch {record['epoch']}{self._of_epochs()}: train loss {record['train/loss']:.4f}"
            + (f", val loss {record['val/loss']:.4f}" if "val/loss" in record else "")
            + f", {self.monitor} {shown} (best {best_text}), {record['seconds']:.1f} s"
            + (f", {self.speed:.1f} img/s" if self.speed is not None else "")
            + f", {self._time_left(record['epoch'])}"
        )
        if self.progress is not None:
            self.progress.update(self.task, best=best_text)
        self.display.print(line, markup=False, highlight=False, soft_wrap=True)

    def _time_left(self, epochs_done: int) -> str:
        if self.max_time is not None:
            return f"{clock(self.used())} of {clock(self.max_time)} used"
        first = min(self.epochs_started_at, default=epochs_done - 1)
        done_here = epochs_done - first  # epochs run by this session (a resumed run starts late)
        elapsed = time.monotonic() - self.epochs_started_at.get(first, time.monotonic())
        left = elapsed / max(1, done_here) * (self.epochs - epochs_done)
        return f"ETA {clock(left)}"

    def run_end(self, run_dir: Path) -> None:
        """The end-of-run picture: the engine writes numbers, the command line draws them."""
        from segcli.visualize import curves, save_picture

        save_picture(curves([run_dir]), run_dir / "curves.png")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _budget_columns(reporter: RichReporter) -> list[Any]:
    """A bar and a clock drawn from the time at each refresh, so a budget's bar moves on its
    own. Defined here: rich.progress is imported only when a bar is drawn."""
    from rich.progress import BarColumn, ProgressBar, ProgressColumn
    from rich.text import Text

    class BudgetBar(BarColumn):
        def render(self, task: Any) -> ProgressBar:
            budget = reporter.max_time or 1.0
            return ProgressBar(
                total=budget,
                completed=min(reporter.used(), budget),
                width=self.bar_width,
                style=self.style,
                complete_style=self.complete_style,
                finished_style=self.finished_style,
                pulse_style=self.pulse_style,
            )

    class BudgetClock(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{clock(reporter.used())} / {clock(reporter.max_time or 0)}")

    return [BudgetBar(), BudgetClock()]
