"""The time budget (train.max_time): where it stops, the schedule over it, resume and extension."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from segcli.config import build_config
from segcli.errors import UsageError
from segcli.evaluation.postprocess_search import ChoiceImages
from segcli.training.budget import BudgetPacer, Stopwatch, TimeBudget
from segcli.training.fit import (
    OWN_SIZE_IMAGE_SECONDS,
    OWN_SIZE_PASS_VALIDATIONS,
    OWN_SIZE_PIXEL_SECONDS,
    SEARCH_IMAGE_SECONDS,
    SEARCH_PIXEL_SECONDS,
    Reserve,
    fit,
    post_processing_reserve,
)
from segcli.training.loop import TrainingState
from segcli.training.optimisation import ScheduleLayout

TINY = [
    "model.base_width=4",
    "model.depth=2",
    "input.size=[32,32]",
    "train.batch_size=16",
    "train.workers=0",
    "train.scheduler=cosine",
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(budget_seconds, *, step, validation, steps_per_epoch, epochs=1000, warmup=0.0):
    """Drive a pacer as `train_one_epoch` and `fit` do, on a fake clock; the factor each step
    used, the time at the end, and the final reserve the budget kept."""
    clock, state = FakeClock(), TrainingState()
    watch = Stopwatch(clock)
    clock.now += 2.0  # setup
    watch.switch("training")
    config = build_config(
        overrides=[
            f"train.epochs={epochs}",
            "train.scheduler=cosine",
            f"train.scheduler.warmup_epochs={warmup}",
        ]
    )
    layout = ScheduleLayout(config, steps_per_epoch)
    budget = TimeBudget(
        budget_seconds,
        watch,
        steps_per_epoch=steps_per_epoch,
        validation_batches=4,
        val_every=1,
        checkpoint_bytes=0,
    )
    pacer = BudgetPacer(budget, layout, state, epochs)
    factors = []
    next_factor = layout.factor(0)
    while state.epoch < epochs:
        for index in range(steps_per_epoch):
            if pacer.out_of_time():
                break
            factors.append(next_factor)
            clock.now += step * (3 if not factors[1:] else 1)  # the first step is slow
            state.step += 1
            pacer.after_step(steps_per_epoch - index - 1)
            next_factor = layout.factor(state.step)
        final = pacer.stopped or not pacer.another_epoch_fits(True)
        watch.switch("validation")
        clock.now += validation
        budget.timed_validation(watch.switch("checkpoints"))
        clock.now += 0.1
        budget.timed_checkpoints(watch.switch("training"))
        state.epoch += 1
        if final:
            break
    return factors, clock.now


def test_the_budget_stops_in_time_and_the_schedule_ends_at_its_last_step():
    factors, end = simulate(100.0, step=0.5, validation=3.0, steps_per_epoch=20)
    assert 95.0 <= end <= 100.0  # within the budget, and little of it left unused
    assert factors[-1] == 0.0  # cosine's end value, at the last step taken
    assert factors[0] == 1.0 and all(a >= b for a, b in zip(factors[1:], factors[2:], strict=False))


def test_the_first_validation_s_one_time_costs_leave_the_reserve_once_another_is_timed():
    budget = TimeBudget(
        480.0, Stopwatch(FakeClock()), steps_per_epoch=2, validation_batches=5, val_every=13,
        checkpoint_bytes=0,
    )  # fmt: skip
    budget.timed_validation(4.7)  # ISBI's first, at full size, on a fresh process
    assert budget.expected_validation() == 4.7
    for seconds in (2.0, 3.0, 1.3):
        budget.timed_validation(seconds)
    assert budget.expected_validation() == 3.0  # the slowest after the first


def test_warm_up_in_epochs_counts_real_steps_per_epoch_under_a_budget():
    factors, _ = simulate(60.0, step=0.5, validation=1.0, steps_per_epoch=10, warmup=1.0)
    assert factors[:10] == sorted(factors[:10]) and factors[9] < 1.0 <= max(factors)
    assert factors[10] == pytest.approx(1.0, abs=0.02) and factors[-1] == 0.0


def test_the_epoch_limit_ends_the_schedule_when_it_comes_before_the_budget():
    factors, end = simulate(1000.0, step=0.5, validation=1.0, steps_per_epoch=10, epochs=3)
    assert len(factors) == 30 and end < 100 and factors[-1] == 0.0


def test_a_resumed_run_counts_the_time_spent_before():
    clock = FakeClock()
    watch = Stopwatch(clock)
    watch.carry({"training": 40.0, "validation": 5.0})
    clock.now += 1.0
    assert watch.elapsed() == pytest.approx(46.0)
    budget = TimeBudget(
        50.0,
        watch,
        steps_per_epoch=10,
        validation_batches=0,
        val_every=1,
        checkpoint_bytes=0,
    )
    assert budget.available() < 4.0


def test_the_budget_counts_from_the_commands_start_and_keeps_time_for_the_report():
    clock = FakeClock()
    clock.now = 30.0  # the command began at 0: start-up and planning took 30 s
    watch = Stopwatch(clock, started=0.0)
    assert watch.elapsed() == pytest.approx(30.0)
    assert watch.spent()["setup"] == pytest.approx(30.0)

    def budget(finishing: float) -> TimeBudget:
        made = TimeBudget(
            100.0,
            watch,
            steps_per_epoch=10,
            validation_batches=4,
            val_every=1,
            checkpoint_bytes=0,
            finishing_validations=finishing,
        )
        made.timed_validation(4.0)
        return made

    # the report after the run: 1.5 validation passes (6 s) and 1 % of the budget (at most
    # 3 s) of drawing, reserved
    assert budget(0.0).available() - budget(1.5).available() == pytest.approx(7.0)


def test_choosing_post_processing_keeps_time_for_each_view_and_for_a_folds_ensemble(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    single = tiny_config(data, runs)  # trained with horizontal flips: "flip" is tried too
    unmirrored = tiny_config(data, runs, "augment={}")
    fold = tiny_config(
        data, runs, f'dataset.folds="{tmp_path / "folds.json"}"', "dataset.fold=2"
    )  # fmt: skip
    tgs = ChoiceImages(600, 600 * 101 * 101)
    assert post_processing_reserve(single, False, tgs) == Reserve()
    assert post_processing_reserve(fold, False, tgs) == Reserve()
    # each pass at the images' own size: a validation's model work, and reading, predicting
    # and resizing every image; the search: scoring every image and pixel
    per_pass = 600 * OWN_SIZE_IMAGE_SECONDS + tgs.pixels * OWN_SIZE_PIXEL_SECONDS
    search = 600 * SEARCH_IMAGE_SECONDS + tgs.pixels * SEARCH_PIXEL_SECONDS
    plain = post_processing_reserve(unmirrored, True, tgs)
    assert plain == Reserve(OWN_SIZE_PASS_VALIDATIONS, pytest.approx(per_pass + search))
    # then the mirrored view (the plain one is not predicted again)
    own = post_processing_reserve(single, True, tgs)
    assert own == Reserve(2 * OWN_SIZE_PASS_VALIDATIONS, pytest.approx(2 * per_pass + search))
    # after the last fold the ensemble chooses again on every fold's held-out images
    assert post_processing_reserve(fold, True, tgs) == Reserve(
        2 * own.validations, pytest.approx(2 * own.seconds)
    )


def test_the_post_processing_reserve_follows_the_images_count_and_size(tmp_path):
    """A few large images cost their model work, already measured in validation passes (ISBI:
    5 slices of 512x512); 600 small ones cost reading each (TGS: ~9 s a pass on the 2-core
    Xeon); larger photographs, the search over their pixels (~550x690: 10.8 s)."""
    config = tiny_config(tmp_path / "data", tmp_path / "runs")  # mirrored: two passes
    isbi = post_processing_reserve(config, True, ChoiceImages(5, 5 * 512 * 512))
    tgs = post_processing_reserve(config, True, ChoiceImages(600, 600 * 101 * 101))
    photographs = post_processing_reserve(config, True, ChoiceImages(200, 200 * 550 * 690))
    assert isbi.validations == tgs.validations == photographs.validations == 2.0
    assert isbi.seconds < 1.0
    assert 2 * 7.0 < tgs.seconds + 2 * 1.8 < 25.0
    assert 10.8 + 2 * 4.9 < photographs.seconds + 2 * 1.3 < 40.0


def test_the_reserve_reads_the_images_post_processing_is_chosen_on(shapes_dataset, tmp_path):
    from segcli.data.format import read_dataset_info
    from segcli.evaluation.split import labelled_pairs
    from segcli.training.fit import _choice_images

    info = read_dataset_info(shapes_dataset)
    budgeted = tiny_config(shapes_dataset, tmp_path / "runs", "train.max_time=60")
    validation = len(labelled_pairs(shapes_dataset, "val"))
    chosen = _choice_images(budgeted, shapes_dataset, info)
    assert chosen == ChoiceImages(validation, validation * 64 * 64)  # 64x64 images
    unbudgeted = tiny_config(shapes_dataset, tmp_path / "runs")
    assert _choice_images(unbudgeted, shapes_dataset, info) is None  # nothing to keep time from


def tiny_config(dataset: Path, runs: Path, *extra: str):
    return build_config(
        {"model": {"name": "unet"}, "metrics": ["confusion"]},
        overrides=[f'dataset.path="{dataset}"', f'runs_dir="{runs}"', *TINY, *extra],
    )


@pytest.fixture
def recorded_lrs():
    """An optimiser plugin "recorded" (SGD) that notes the learning rate of every step."""
    import torch

    from segcli.plugins import get_plugins
    from segcli.registry import Origin

    seen: list[float] = []

    def recorded(parameters, lr):
        class Recorded(torch.optim.SGD):
            def step(self, closure=None):
                seen.append(self.param_groups[0]["lr"])
                return super().step(closure)

        return Recorded(parameters, lr)

    plugins = get_plugins()
    plugins.optimizers.add("recorded", recorded, "", Origin("test", "segcli-test", "0.1"))
    yield seen
    plugins.optimizers.remove_from("test")


def allowance(run: Path) -> float:
    """What a run may spend beyond its budget: one validation (the issue's allowance) and one
    training step (a step taken because the mean said it fit may run slower on a shared CPU)."""
    summary = json.loads((run / "summary.json").read_text())
    validations = sum("val/loss" in json.loads(line) for line in open(run / "metrics.jsonl"))
    seconds = summary["seconds"]
    return seconds["validation"] / max(1, validations) + seconds["training"] / summary["steps"]


def test_shapes_with_time_20s_stops_in_time_keeps_the_best_and_ends_decayed(
    cli, shapes_dataset, tmp_path, recorded_lrs
):
    from segcli.inference.predictor import Predictor

    args = [f"--set={o}" for o in TINY + ["train.epochs=1000", "train.optimizer=recorded"]]
    result = cli(
        "train", "--plugin", "shapes-unet", "--set", f"dataset.path={shapes_dataset}", *args,
        "--set", "train.lr=0.05", "--time", "20s", "--runs-dir", tmp_path / "runs", cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [run] = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "budget" and summary["seconds"]["budget"] == 20.0
    assert summary["seconds"]["total"] <= 20.0 + allowance(run)
    assert "stopped: budget" in result.stdout and "of a 20 s budget" in result.stdout
    assert Predictor(run / "best.safetensors", "cpu").model is not None  # a usable best
    # the last step was planned as the last: cosine's end, 0. The end is predicted from the
    # mean step time, so a hiccup near it (a slow validation, the OS: up to a second) may stop
    # the run the steps of that second early (a CI run ended 34 of 814 steps early)
    steps = len(recorded_lrs)
    early = max(1.0, steps / summary["seconds"]["training"])
    assert steps > 3 and recorded_lrs[-1] <= 0.05 * 0.5 * (
        1 + math.cos(math.pi * (1 - early / steps))
    )


def test_a_resumed_run_gets_the_rest_of_its_budget_and_a_finished_one_can_be_extended(
    cli, shapes_dataset, tmp_path
):
    run = fit(
        tiny_config(shapes_dataset, tmp_path, "train.epochs=1000", "train.max_time=8"), max_steps=2
    )
    first = json.loads((run / "summary.json").read_text())
    assert first["stopped"] == "max-steps"
    fit(None, resume=run)
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["stopped"] == "budget"
    assert resumed["seconds"]["training"] > first["seconds"]["training"]
    assert first["seconds"]["total"] < resumed["seconds"]["total"] <= 8 + allowance(run)

    refused = cli("train", "--resume", run, cwd=tmp_path)
    assert refused.exit_code == 2 and "finished" in refused.stderr
    steps_before = resumed["steps"]
    extended = cli("train", "--resume", run, "--time", "+3s", cwd=tmp_path)
    assert extended.exit_code == 0, extended.stderr
    after = json.loads((run / "summary.json").read_text())
    assert after["seconds"]["budget"] == pytest.approx(11.0)
    assert after["steps"] > steps_before and after["stopped"] == "budget"
    assert "max_time = 11.0" in (run / "config.toml").read_text()


def test_more_epochs_continue_a_finished_run_and_other_settings_are_refused(
    cli, shapes_dataset, tmp_path
):
    run = fit(tiny_config(shapes_dataset, tmp_path, "train.epochs=1"))
    with pytest.raises(UsageError, match="finished"):
        fit(None, resume=run)
    changed = cli("train", "--resume", run, "--set", "train.lr=0.1", cwd=tmp_path)
    assert changed.exit_code == 2 and "train.lr" in changed.stderr
    fewer = cli("train", "--resume", run, "--set", "train.epochs=1", cwd=tmp_path)
    assert fewer.exit_code == 2 and "train.epochs=N" in fewer.stderr
    more = cli("train", "--resume", run, "--set", "train.epochs=2", cwd=tmp_path)
    assert more.exit_code == 0, more.stderr
    epochs = [json.loads(line)["epoch"] for line in open(run / "metrics.jsonl")]
    assert epochs == [1, 2]
    assert json.loads((run / "summary.json").read_text())["stopped"] == "epochs"


def test_under_a_budget_last_is_written_at_validations_and_every_30_seconds():
    from segcli.training.fit import LAST_EVERY_SECONDS, _last_due

    budgeted = build_config(overrides=["train.max_time=480"])
    unbounded = build_config()
    validated = {"epoch": 3, "train/loss": 0.5, budgeted.train.monitor: 0.7}
    trained_only = {"epoch": 3, "train/loss": 0.5}
    state = TrainingState()
    assert not _last_due(budgeted, trained_only, False, state, 1.0)
    assert _last_due(budgeted, trained_only, False, state, LAST_EVERY_SECONDS)
    assert _last_due(budgeted, validated, False, state, 1.0)
    assert _last_due(budgeted, trained_only, True, state, 1.0)  # a new best
    assert _last_due(unbounded, trained_only, False, state, 1.0)
    state.stopped = "budget"
    assert _last_due(budgeted, trained_only, False, state, 1.0)  # the run's end
