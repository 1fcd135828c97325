"""The training display: a bar redrawn on a timer on a terminal, plain epoch lines elsewhere."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from segcli.cli.progress import REFRESHES_PER_SECOND, RichReporter

CONTROL_CODES = re.compile(r"\x1b|\r")


def display(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=160, color_system=None), out


def record(epoch: int, miou: float) -> dict:
    return {
        "epoch": epoch,
        "train/loss": 0.5,
        "val/loss": 0.25,
        "confusion/miou": miou,
        "seconds": 1.5,
    }


def wait_for_refresh() -> None:
    time.sleep(3 / REFRESHES_PER_SECOND)


def test_not_a_terminal_gets_one_plain_line_per_epoch(tmp_path):
    console, out = display(terminal=False)
    reporter = RichReporter("confusion/miou", console)
    reporter.start(tmp_path, epochs=3, steps_per_epoch=4)
    for epoch, miou in ((0, 0.4), (1, 0.6)):
        for step in range(1, 5):
            reporter.step(epoch, step, 0.5 if step % 2 == 0 else None, 100.0)
        reporter.epoch_end(record(epoch + 1, miou), best=miou)
    reporter.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert not CONTROL_CODES.search(out.getvalue())
    assert lines[1].startswith("epoch 2/3: train loss 0.5000, val loss 0.2500")
    assert "confusion/miou 0.6000 (best 0.6000)" in lines[1]
    assert "100.0 img/s" in lines[1] and "ETA 0:00:0" in lines[1]


def test_the_bar_is_redrawn_on_a_timer_with_every_field(tmp_path):
    console, out = display(terminal=True)
    reporter = RichReporter("confusion/miou", console)
    reporter.start(tmp_path, epochs=2, steps_per_epoch=20)
    try:
        reporter.step(0, 1, 0.75, 48.0)
        reporter.step(0, 2, None, 48.0)  # a step whose loss was not read: the last one stays
        reporter.epoch_end(record(1, 0.5), best=0.5)
        reporter.step(1, 3, None, 48.0)
        wait_for_refresh()  # no further call: only a timer can draw what these steps said
        drawn = out.getvalue()
    finally:
        reporter.stop()
    assert "epoch 2/2" in drawn and "23/40 steps" in drawn
    assert "loss 0.7500" in drawn and "48.0 img/s" in drawn and "best 0.5000" in drawn
    assert re.search(r"\d:\d\d:\d\d", drawn)  # the ETA


def test_a_time_bounded_run_shows_time_used_against_its_budget(tmp_path):
    console, out = display(terminal=True)
    reporter = RichReporter("confusion/miou", console)
    reporter.start(tmp_path, epochs=1000, steps_per_epoch=20, max_time=600.0, spent=65.0)
    try:
        reporter.step(0, 1, 0.75, 48.0)
        wait_for_refresh()
        drawn = out.getvalue()
    finally:
        reporter.stop()
    assert "0:01:05 / 0:10:00" in drawn
    assert "/1000" not in drawn and "steps" not in drawn  # epochs are only an upper bound


def test_a_time_bounded_run_says_time_used_in_its_epoch_lines(tmp_path):
    console, out = display(terminal=False)
    reporter = RichReporter("confusion/miou", console)
    reporter.start(tmp_path, epochs=1000, steps_per_epoch=2, max_time=90.0, spent=30.0)
    reporter.step(0, 1, 0.5, 10.0)
    reporter.epoch_end(record(1, 0.5), best=0.5)
    assert out.getvalue().startswith("epoch 1: ")
    assert out.getvalue().rstrip().endswith("0:00:30 of 0:01:30 used")


def test_images_per_second_is_smoothed(tmp_path):
    console, _ = display(terminal=False)
    reporter = RichReporter("confusion/miou", console)
    reporter.start(tmp_path, epochs=1, steps_per_epoch=3)
    for speed in (100.0, 10.0, 100.0):
        reporter.step(0, 1, 0.5, speed)
    assert 50 < reporter.speed < 100


def test_training_into_a_log_writes_plain_epoch_lines(cli, shapes_dataset, tmp_path):
    """Through `segcli train`: stderr captured here is no terminal, as in CI or a log file."""
    result = cli(
        "train",
        "--plugin",
        "shapes-unet",
        "--set",
        f'dataset.path="{shapes_dataset}"',
        "--set",
        "train.epochs=2",
        "--set",
        "input.size=[32,32]",
        "--set",
        "model.base_width=4",
        "--set",
        "model.depth=2",
        "--set",
        "train.workers=0",
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert result.exit_code == 0, result.stderr
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
    assert not CONTROL_CODES.search(result.stderr)
