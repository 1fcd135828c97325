"""Training engine: exact resume after SIGKILL, accumulation, early stopping, best, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segcli.config import build_config
from segcli.runs.checkpoint_file import load_checkpoint
from segcli.training.fit import fit

TINY = [
    "model.base_width=4",
    "model.depth=2",
    "input.size=[32,32]",
    "train.batch_size=8",
    "train.workers=0",
    "train.deterministic=true",
    "augment.hflip.p=0.5",
    "augment.rotate.degrees=10.0",
]


def tiny_config(dataset: Path, runs: Path, *extra: str):
    return build_config(
        {"model": {"name": "unet"}, "metrics": ["confusion"]},
        overrides=[f'dataset.path="{dataset}"', f'runs_dir="{runs}"', *TINY, *extra],
    )


def records(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
    return rows


class StopAtStep:
    """A reporter that kills the run at an exact optimizer step (as a SIGKILL would: nothing
    after that step is written), with no timing involved."""

    class Killed(BaseException):
        pass

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step_in_epoch = epoch, step
        self.steps_per_epoch = 0

    def start(self, run_dir, epochs, steps_per_epoch, **budget):
        self.steps_per_epoch = steps_per_epoch

    def step(self, epoch, step, loss, images_per_second):
        if (epoch, step) == (self.epoch, self.step_in_epoch):
            raise self.Killed

    def epoch_end(self, record, best):
        pass

    def run_end(self, run_dir):
        pass


def test_resume_mid_epoch_matches_an_uninterrupted_run(shapes_dataset, tmp_path):
    settings = [
        "train.epochs=3",
        "train.scheduler=cosine",
        "train.scheduler.warmup_epochs=0.5",
        "train.ema=0.9",
        "train.log_every=1",  # the reporter hears of every step
    ]
    reference = fit(tiny_config(shapes_dataset, tmp_path / "reference", *settings))

    killer = StopAtStep(epoch=1, step=2)
    with pytest.raises(StopAtStep.Killed):
        fit(tiny_config(shapes_dataset, tmp_path / "killed", *settings), reporter=killer)
    assert killer.steps_per_epoch > 2, "the kill must fall inside the second epoch"
    [run_dir] = (tmp_path / "killed").iterdir()
    assert load_checkpoint(run_dir / "last.safetensors").meta["epoch"] == 1

    resumed = fit(None, resume=run_dir)
    assert resumed == run_dir
    assert records(resumed) == records(reference)
    final, expected = (
        load_checkpoint(resumed / "last.safetensors"),
        load_checkpoint(reference / "last.safetensors"),
    )
    for key, value in expected.model_state.items():
        assert torch.equal(final.model_state[key], value), key


def test_gradient_accumulation_matches_the_larger_batch(shapes_dataset, tmp_path):
    from segcli.building import build_loss, build_model
    from segcli.data.dataset import EpochSampler, SegmentationDataset, build_transforms
    from segcli.data.format import read_dataset_info
    from segcli.training.fit import TrainingState, make_loader, train_one_epoch

    info = read_dataset_info(shapes_dataset)
    weights = []
    for batch, accumulate in ((16, 1), (4, 4)):
        config = tiny_config(
            shapes_dataset,
            tmp_path,
            "model.batch_norm=false",
            "augment=none",
            f"train.batch_size={batch}",
            f"train.accumulate={accumulate}",
            "train.optimizer=sgd",
            "train.optimizer.momentum=0.0",
            "train.lr=0.5",
        )
        torch.manual_seed(0)
        model = build_model(config, info)
        dataset = SegmentationDataset(
            shapes_dataset, "train", build_transforms(config.input, None, 3), 0, info
        )
        dataset.pairs = dataset.pairs[:16]
        loader = make_loader(dataset, EpochSampler(16, shuffle=True), config, torch.device("cpu"))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        state = TrainingState()
        train_one_epoch(
            model,
            loader,
            build_loss(config, info),
            optimizer,
            scheduler,
            config,
            torch.device("cpu"),
            state,
        )
        assert state.step == 1
        weights.append([p.detach().clone() for p in model.parameters()])
    for big, accumulated in zip(*weights, strict=True):
        torch.testing.assert_close(accumulated, big, rtol=1e-4, atol=1e-6)


def test_early_stopping_and_best_checkpoint(shapes_dataset, tmp_path):
    run = fit(
        tiny_config(
            shapes_dataset,
            tmp_path,
            "train.epochs=6",
            "train.lr=0.0",
            "train.early_stop_patience=2",
            "train.monitor=val/loss",
            "train.monitor_mode=min",
        )
    )
    rows = records(run)
    assert len(rows) == 3  # the first epoch sets the best, two more without improvement stop it
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 1 and summary["epochs_run"] == 3


@pytest.fixture
def in_process_plugin():
    """Register names on the loaded plugins as a plugin called "test" would, then forget them."""
    from segcli.plugins import get_plugins
    from segcli.registry import Origin

    plugins = get_plugins()
    origin = Origin("test", "segcli-test", "0.1")
    yield lambda registry, name, target: registry.add(name, target, "", origin)
    for registry in plugins.registries.values():
        registry.remove_from("test")


class ScriptedScore:
    """A metric whose score goes up, then down: 0.5, 0.9, 0.7 (one value per evaluation)."""

    SCORES = (0.5, 0.9, 0.7)

    def __init__(self, num_classes, ignore_index):
        self.evaluations = 0

    def reset(self):
        pass

    def update(self, predicted, target):
        pass

    def compute(self):
        score = self.SCORES[min(self.evaluations, len(self.SCORES) - 1)]
        self.evaluations += 1
        return {"score": score}


def test_best_checkpoint_is_the_best_epoch_when_the_metric_goes_up_then_down(
    shapes_dataset, tmp_path, in_process_plugin
):
    from segcli.plugins import get_plugins

    in_process_plugin(get_plugins().metrics, "scripted", ScriptedScore)
    config = tiny_config(
        shapes_dataset,
        tmp_path,
        "train.epochs=3",
        "train.lr=0.0",
        "metrics=['scripted']",
        "train.monitor=scripted/score",
    )
    run = fit(config)
    assert [r["scripted/score"] for r in records(run)] == [0.5, 0.9, 0.7]
    assert load_checkpoint(run / "best.safetensors").meta["epoch"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["best"], summary["best_epoch"]) == (0.9, 2)


def test_a_plugin_scheduler_drives_the_learning_rate(shapes_dataset, tmp_path, in_process_plugin):
    from segcli.plugins import get_plugins

    def halving(total_steps, steps_per_epoch, *, every_epochs=1):
        return lambda step: 0.5 ** (step // (every_epochs * steps_per_epoch))

    in_process_plugin(get_plugins().schedulers, "halving", halving)
    config = tiny_config(
        shapes_dataset,
        tmp_path,
        "train.epochs=3",
        "train.lr=0.01",
        "train.scheduler=halving",
        "train.scheduler.every_epochs=1",
    )
    run = fit(config)
    # the lr recorded after each epoch is the one the next epoch's first step uses
    assert [r["lr"] for r in records(run)] == pytest.approx([0.005, 0.0025, 0.00125])


def test_best_checkpoint_is_the_epoch_with_the_best_monitored_value(shapes_dataset, tmp_path):
    run = fit(tiny_config(shapes_dataset, tmp_path, "train.epochs=3", "train.lr=0.01"))
    rows = records(run)
    best_row = max(rows, key=lambda r: r["confusion/miou"])
    assert load_checkpoint(run / "best.safetensors").meta["epoch"] == best_row["epoch"]
    assert json.loads((run / "summary.json").read_text())["best"] == pytest.approx(
        best_row["confusion/miou"]
    )
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train/loss", "val/loss", "confusion/miou"} <= set(header)


def test_a_run_ends_with_a_curve_picture(shapes_dataset, tmp_path):
    import numpy as np
    from PIL import Image

    from segcli.cli.train import RichReporter

    reporter = RichReporter("confusion/miou")
    try:
        run = fit(tiny_config(shapes_dataset, tmp_path, "train.epochs=2"), reporter=reporter)
    finally:
        reporter.stop()
    picture = np.asarray(Image.open(run / "curves.png").convert("RGB"))
    assert picture.shape[0] > 100 and picture.shape[1] > 200
    assert picture.std() > 5  # lines and labels, not a blank canvas


def test_schedules_warm_up_and_decay():
    from segcli.training.optimisation import ScheduleLayout

    def build_schedule(config, steps_per_epoch):
        return ScheduleLayout(config, steps_per_epoch).factor

    config = build_config(
        overrides=["train.epochs=10", "train.scheduler=poly", "train.scheduler.warmup_epochs=1"]
    )
    factor = build_schedule(config, steps_per_epoch=10)
    assert factor(0) < factor(5) < factor(9) <= 1.0
    assert factor(99) < 0.05
    onecycle = build_schedule(
        build_config(overrides=["train.epochs=10", "train.scheduler=onecycle"]), 10
    )
    assert onecycle(0) < onecycle(29) and onecycle(29) > onecycle(99)
    step = build_schedule(
        build_config(overrides=["train.scheduler=step", "train.scheduler.step_epochs=2"]), 10
    )
    assert step(19) == 1.0 and step(20) == pytest.approx(0.1)
