"""Training never ends silently wrong or half-written (issue 17, items 3 to 6 for `train`).

A diverging run stops with exit 9 and saves nothing non-finite; options that can only give
NaN or overflow are refused up front; a budget too short for one step is an error; a run
folder is locked while a process trains in it; a prepared dataset whose files no longer match
its dataset.json is refused; a model that cannot fit is refused before it is built; plugin
models and losses that break their contract are named; a full disk leaves no half-made run.
"""

from __future__ import annotations

import itertools
import math
import resource
import shutil
from pathlib import Path

import pytest
import torch
from reliability_helpers import TINY_TRAIN, run_segcli
from torch import nn

from segcli.registry import Origin
from segcli.runs.checkpoint_file import load_checkpoint, read_checkpoint_meta

ORIGIN = Origin("guard-test", "segcli-guard-test", "0.1")


def train(run, dataset: Path, cwd: Path, *settings: str):
    """`segcli train --plugin shapes-unet` on `dataset`, tiny, with `--set` settings."""
    extra = [arg for setting in settings for arg in ("--set", setting)]
    return run(
        "train", "--plugin", "shapes-unet", "--set", f'dataset.path="{dataset}"',
        *TINY_TRAIN, "--set", "train.epochs=3", *extra, cwd=cwd,
    )  # fmt: skip


def one_error_line(stderr: str) -> str:
    """The one `error:` line, last, without a traceback (training's progress lines may come
    before it)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"want one last error line: {stderr!r}"
    return errors[0]


def run_folders(cwd: Path) -> list[Path]:
    runs = cwd / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


@pytest.fixture
def registered():
    """Register test plugins' names (kind, name, factory) for one test, removed after it."""
    from segcli.plugins import get_plugins

    plugins = get_plugins()
    added = []

    def add(kind: str, name: str, factory) -> None:
        registry = getattr(plugins, kind)
        registry.add(name, factory, "", ORIGIN)
        added.append(registry)

    yield add
    for registry in added:
        registry.remove_from(ORIGIN.plugin)


def poisoning_optimizer(at_step: int):
    """An optimiser plugin (SGD) whose step `at_step` turns the weights into NaN, as a
    learning rate far too high does, from finite options."""
    steps = itertools.count(1)

    def poison(parameters, lr):
        class Poisoning(torch.optim.SGD):
            @torch.no_grad()
            def step(self, closure=None):
                result = super().step(closure)
                if next(steps) == at_step:
                    for group in self.param_groups:
                        for parameter in group["params"]:
                            parameter.fill_(math.nan)
                return result

        return Poisoning(parameters, lr)

    return poison


def all_finite(path: Path) -> bool:
    return all(t.isfinite().all() for t in load_checkpoint(path).model_state.values())


# ------------------------------------------------------------------------------ divergence


def test_a_run_that_diverges_stops_with_exit_9_and_keeps_only_finite_checkpoints(
    segcli_in_process, tiny_dataset, tmp_path, registered
):
    # 4 training images in batches of 2: 2 steps per epoch; step 3 is in epoch 2
    registered("optimizers", "poisoning", poisoning_optimizer(at_step=3))
    result = train(segcli_in_process, tiny_dataset, tmp_path, "train.optimizer=poisoning")
    assert result.exit_code == 9, result
    line = one_error_line(result.stderr)
    assert "diverged in epoch 2" in line and "train.lr" in line, line
    [run] = run_folders(tmp_path)
    assert read_checkpoint_meta(run / "last.safetensors")["epoch"] == 1
    assert all_finite(run / "last.safetensors") and all_finite(run / "best.safetensors")
    assert not (run / "summary.json").exists()


def test_weights_turned_nan_mid_epoch_stop_the_run_at_that_step_and_leave_no_run(
    segcli_in_process, tiny_dataset, tmp_path, registered
):
    registered("optimizers", "poisoning", poisoning_optimizer(at_step=1))
    result = train(
        segcli_in_process,
        tiny_dataset,
        tmp_path,
        "train.optimizer=poisoning",
        "train.log_every=1",
        "train.epochs=1000",
    )
    assert result.exit_code == 9, result
    line = one_error_line(result.stderr)
    assert "epoch 1 (by step 1)" in line and "weights" in line, line
    assert run_folders(tmp_path) == []  # nothing was kept: no run folder without checkpoint


def test_a_nan_loss_from_finite_options_stops_the_run(
    segcli_in_process, tiny_dataset, tmp_path, registered
):
    def nan_loss(num_classes, ignore_index=255):
        return lambda logits, target: logits.mean() * math.nan

    registered("losses", "nan-loss", nan_loss)
    result = train(segcli_in_process, tiny_dataset, tmp_path, "loss.name=nan-loss")
    assert result.exit_code == 9, result
    assert "training loss is nan" in one_error_line(result.stderr)
    assert run_folders(tmp_path) == []


def test_a_nan_or_infinite_monitor_value_is_never_the_best():
    from segcli.training.loop import TrainingState
    from segcli.training.resume import BestTracker

    tracker = BestTracker("val/loss", "min", TrainingState())
    assert not tracker.update({"epoch": 1, "val/loss": -math.inf})
    assert not tracker.update({"epoch": 2, "val/loss": math.nan})
    assert tracker.update({"epoch": 3, "val/loss": 0.5})


# ------------------------------------------------------------------- options at the edge


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("train.lr=inf", "train.lr"),
        ("input.mean=[nan,nan,nan]", "input.mean"),
        ("train.epochs=100000000000000000000000", "train.epochs"),
        ("train.max_time=inf", "train.max_time"),
        ("train.max_time=0.0001", "train.max_time"),
        ("train.max_time=1000h", "train.max_time"),
    ],
)
def test_options_that_can_only_give_nan_or_overflow_are_refused_before_a_run_folder(
    segcli_in_process, tiny_dataset, tmp_path, setting, key
):
    result = train(segcli_in_process, tiny_dataset, tmp_path, setting)
    assert result.exit_code == 2, result
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: {key} must be"), line
    assert run_folders(tmp_path) == []


def test_a_time_budget_below_a_second_is_refused(segcli_in_process, tiny_dataset, tmp_path):
    result = segcli_in_process(
        "train", "--plugin", "shapes-unet", "--set", f'dataset.path="{tiny_dataset}"',
        *TINY_TRAIN, "--time", "0.0001s", cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 2, result
    assert "train.max_time must be" in one_error_line(result.stderr)
    assert run_folders(tmp_path) == []


def test_a_resume_adding_time_beyond_the_longest_budget_is_refused(
    segcli_in_process, tiny_run, tmp_path
):
    run = Path(shutil.copytree(tiny_run, tmp_path / "runs" / tiny_run.name))
    result = segcli_in_process("train", "--resume", run, "--time", "+9999h", cwd=tmp_path)
    assert result.exit_code == 2, result
    assert "train.max_time is at most 2592000 s" in one_error_line(result.stderr)


def test_a_budget_used_up_before_the_first_step_is_an_error_not_an_untrained_best(
    tiny_dataset, tmp_path
):
    from segcli.config import build_config
    from segcli.errors import UsageError
    from segcli.training.fit import fit

    config = build_config(
        {"model": {"name": "unet", "depth": 1, "base_width": 2}, "metrics": ["confusion"]},
        overrides=[
            f'dataset.path="{tiny_dataset}"',
            f'runs_dir="{tmp_path / "runs"}"',
            "train.workers=0",
            "input.size=[16,16]",
            "train.max_time=2",
        ],
    )
    seconds = itertools.count(0, 5)  # a clock on which setup alone takes longer than 2 s
    with pytest.raises(UsageError, match="used up before a training step"):
        fit(config, clock=lambda: float(next(seconds)))
    assert run_folders(tmp_path) == []


# --------------------------------------------------------------------------- run folder lock


def test_a_run_folder_being_trained_cannot_be_trained_by_a_second_process(
    segcli_in_process, tiny_dataset, tiny_run, tmp_path
):
    from segcli.runs.folders import run_lock

    run = Path(shutil.copytree(tiny_run, tmp_path / "runs" / tiny_run.name))
    metrics = (run / "metrics.jsonl").read_bytes()
    with run_lock(run):  # flock: another open file description conflicts, as a process would
        second = segcli_in_process(
            "train", "--resume", run, "--set", "train.epochs=2", cwd=tmp_path
        )
        assert second.exit_code == 6, second
        line = one_error_line(second.stderr)
        assert str(run) in line and "being trained by another process (PID " in line, line
        assert (run / "metrics.jsonl").read_bytes() == metrics
        # reading a run that is being trained is fine
        predicted = segcli_in_process(
            "predict", tiny_dataset / "test" / "images",
            "--checkpoint", run, "--out", tmp_path / "predicted", cwd=tmp_path,
        )  # fmt: skip
        assert predicted.exit_code == 0, predicted


def test_fit_holds_the_lock_of_its_run_folder_while_it_trains(tiny_dataset, tmp_path):
    from segcli.config import build_config
    from segcli.errors import OutputError
    from segcli.runs.folders import run_lock
    from segcli.training.fit import fit

    refused = []

    class TryTheLock:
        def start(self, run_dir, epochs, steps_per_epoch, **budget):
            self.run_dir = run_dir

        def step(self, epoch, step, loss, images_per_second):
            with pytest.raises(OutputError, match="being trained") as caught:
                with run_lock(self.run_dir):
                    pass
            refused.append(caught.value)

        def epoch_end(self, record, best):
            pass

        def run_end(self, run_dir):
            pass

    config = build_config(
        {"model": {"name": "unet", "depth": 1, "base_width": 2}, "metrics": ["confusion"]},
        overrides=[
            f'dataset.path="{tiny_dataset}"',
            f'runs_dir="{tmp_path / "runs"}"',
            "train.workers=0",
            "input.size=[16,16]",
            "train.epochs=1",
        ],
    )
    run = fit(config, max_steps=1, reporter=TryTheLock())
    assert refused, "the reporter was never called"
    with run_lock(run):  # released when fit ended
        pass


# ---------------------------------------------------------------- dataset files vs its record


@pytest.mark.parametrize(
    ("removed", "command"),
    [
        ("val/masks", "train"),
        ("val/masks", "evaluate"),
        ("train/images", "train"),
    ],
)
def test_a_dataset_whose_files_no_longer_match_dataset_json_is_refused(
    segcli_in_process, tiny_dataset, tiny_run, tmp_path, removed, command
):
    dataset = Path(shutil.copytree(tiny_dataset, tmp_path / "tiny"))
    victim = sorted((dataset / removed).iterdir())[0]
    victim.unlink()
    if command == "train":
        result = train(segcli_in_process, dataset, tmp_path)
    else:
        result = segcli_in_process(
            "evaluate", dataset, "--checkpoint", tiny_run, "--out", tmp_path / "e.json",
            cwd=tmp_path,
        )  # fmt: skip
    assert result.exit_code == 3, result
    line = one_error_line(result.stderr)
    split = removed.split("/")[0]
    recorded = {"train": 4, "val": 2}[split]
    assert f"split {split!r}" in line and f"records {recorded}" in line, line
    assert "segcli prepare" in line and "--force" in line, line
    assert run_folders(tmp_path) == []


# ------------------------------------------------------------------ models that cannot fit


def test_a_unet_deeper_than_the_input_allows_is_refused_naming_the_deepest(
    segcli_in_process, tiny_dataset, tmp_path
):
    result = train(segcli_in_process, tiny_dataset, tmp_path, "model.depth=12")
    assert result.exit_code == 2, result
    line = one_error_line(result.stderr)
    assert "below 1 px" in line and "model.options.depth=4 at most" in line, line  # 16 px
    assert run_folders(tmp_path) == []


def test_a_model_beyond_the_free_memory_is_refused_with_the_numbers_before_it_is_built(
    segcli_in_process, tiny_dataset, tmp_path, monkeypatch
):
    import segcli.training.preflight as preflight

    monkeypatch.setattr(preflight, "available_memory", lambda: 1000)
    monkeypatch.setattr(preflight, "_free_memory", lambda device: 1000)
    result = train(segcli_in_process, tiny_dataset, tmp_path, "train.device=cpu")
    assert result.exit_code == 7, result
    line = one_error_line(result.stderr)
    assert "M parameters" in line and "of activations" in line, line
    assert "has 0.0 MB free" in line, line
    assert run_folders(tmp_path) == []


# --------------------------------------------------------------- plugin model/loss contracts


class TupleNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x):
        logits = self.conv(x)
        return logits, x


def _ce(logits, target):
    return nn.functional.cross_entropy(logits, target, ignore_index=255)


def _raising(logits, target):
    raise KeyError("weights")


def _text(logits, target):
    return "0.5"


def _detached(logits, target):
    return _ce(logits, target).detach()


@pytest.mark.parametrize(
    ("model", "loss", "said"),
    [
        (TupleNet, _ce, "model 'guard-model' from plugin guard-test (segcli-guard-test 0.1) "
         "returned a tuple"),
        (None, _raising, "loss 'guard-loss' from plugin guard-test (segcli-guard-test 0.1) "
         "failed: KeyError: 'weights'"),
        # the weighted sum of loss parts multiplies the string: the part's plugin is named
        (None, _text, "loss 'guard-loss' from plugin guard-test (segcli-guard-test 0.1) "
         "failed: TypeError"),
        (None, _detached, "gradients do not flow"),
    ],
    ids=["model-tuple", "loss-raises", "loss-string", "loss-detached"],
)  # fmt: skip
def test_a_plugin_model_or_loss_breaking_its_contract_is_named_with_exit_4(
    segcli_in_process, tiny_dataset, tmp_path, registered, model, loss, said
):
    settings = []
    if model is not None:
        registered("models", "guard-model", model)
        settings.append("model.name=guard-model")
    registered("losses", "guard-loss", lambda num_classes, ignore_index=255: loss)
    settings.append("loss.name=guard-loss")
    result = train(segcli_in_process, tiny_dataset, tmp_path, *settings)
    assert result.exit_code == 4, result
    assert said in one_error_line(result.stderr)
    assert run_folders(tmp_path) == []


# ---------------------------------------------------------------------------------- full disk


def test_a_full_disk_when_the_run_folder_is_made_leaves_no_half_made_run(tiny_dataset, tmp_path):
    def limit() -> None:  # room for the lock file's PID, not for the run's records
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))

    result = run_segcli(
        "train", "--plugin", "shapes-unet", "--set", f'dataset.path="{tiny_dataset}"',
        *TINY_TRAIN, cwd=tmp_path, preexec_fn=limit,
    )  # fmt: skip
    assert result.exit_code == 7, result
    assert "file too large writing" in one_error_line(result.stderr)
    assert run_folders(tmp_path) == []
