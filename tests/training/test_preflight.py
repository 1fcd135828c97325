"""Every configuration value is checked before a run folder exists (issue 13, defect 5)."""

from __future__ import annotations

import pytest
import torch

from segcli.config import build_config
from segcli.data.format import ClassInfo, DatasetInfo
from segcli.errors import ConfigError
from segcli.plugins import Plugins
from segcli.registry import Origin
from segcli.training.preflight import check_amp, check_device, check_monitor, check_run

INFO = DatasetInfo("d", [ClassInfo(0, "a", (0, 0, 0)), ClassInfo(1, "b", (9, 9, 9))], {})


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    "monitor", ["confusion/miou", "confusion/pixel_accuracy", "binary/f1", "tgs/score", "val/loss"]
)
def test_a_monitor_the_metrics_report_is_accepted(monitor):
    config = build_config(
        overrides=["metrics=['confusion','binary','tgs']", f"train.monitor={monitor}"]
    )
    check_monitor(config, INFO)


@pytest.mark.parametrize("monitor", ["confusion/mIoU", "confusion/iou", "confusion/matrix"])
def test_a_monitor_no_metric_reports_as_a_number_is_refused_with_the_valid_keys(monitor):
    config = build_config(overrides=[f"train.monitor={monitor}"])
    with pytest.raises(ConfigError) as caught:
        check_monitor(config, INFO)
    message = str(caught.value)
    assert message.startswith("train.monitor must be one of: train/loss, val/loss, ")
    assert "confusion/miou" in message and "confusion/mean_dice" in message
    assert "confusion/iou," not in message  # a list per class is no monitor
    assert f"got '{monitor}' (from --set train.monitor={monitor})" in message


def test_a_post_processing_guard_must_be_a_number_a_metric_reports():
    metrics = "metrics=['confusion','binary','tgs']"
    guarded = build_config(overrides=[metrics, "train.post_process_guard=['tgs/score']"])
    check_monitor(guarded, INFO)
    wrong = build_config(overrides=[metrics, "train.post_process_guard=['tgs/scores']"])
    with pytest.raises(ConfigError) as caught:
        check_monitor(wrong, INFO)
    message = str(caught.value)
    assert message.startswith("train.post_process_guard must be a list of: confusion/")
    assert "tgs/score" in message and "val/loss" not in message


def _third_party(*metrics):
    plugins = Plugins()
    for name, factory in metrics:
        plugins.metrics.add(name, factory, "", Origin("third", "segcli-third", "1.0"))
    return plugins


class Counter:
    """A third-party metric: it declares no keys, reports two numbers and a list."""

    def __init__(self, num_classes, ignore_index):
        self.pixels = 0

    def reset(self):
        self.pixels = 0

    def update(self, pred, target):
        self.pixels += target.numel()

    def compute(self):
        return {"pixels": self.pixels, "ratio": 1.0, "per_class": [0.5, 0.5]}


class Fussy(Counter):
    """A metric that cannot take the probe batch: its keys stay unknown."""

    def update(self, pred, target):
        raise RuntimeError("needs 32x32 images")


def test_a_third_party_metrics_keys_are_found_by_a_probe_batch():
    plugins = _third_party(("count", Counter))
    config = build_config(overrides=["metrics=['count']", "train.monitor=count/ratio"])
    check_monitor(config, INFO, plugins)
    config = build_config(overrides=["metrics=['count']", "train.monitor=count/per_class"])
    with pytest.raises(
        ConfigError, match=r"one of: train/loss, val/loss, count/pixels, count/ratio,"
    ):
        check_monitor(config, INFO, plugins)


def test_a_metric_the_probe_cannot_ask_is_trusted_under_its_own_name():
    plugins = _third_party(("fussy", Fussy), ("count", Counter))
    config = build_config(overrides=["metrics=['fussy','count']", "train.monitor=fussy/score"])
    check_monitor(config, INFO, plugins)
    config = build_config(overrides=["metrics=['fussy','count']", "train.monitor=count/score"])
    with pytest.raises(ConfigError, match=r"fussy/<key>, count/pixels, count/ratio"):
        check_monitor(config, INFO, plugins)


def test_fp16_needs_a_cuda_device():
    config = build_config(overrides=["train.amp=fp16"])
    with pytest.raises(
        ConfigError,
        match=r"^train.amp must be off or bf16 on cpu \(fp16 needs a CUDA device\), got 'fp16' "
        r"\(from --set train.amp=fp16\)",
    ):
        check_amp(config, torch.device("cpu"))
    check_amp(build_config(overrides=["train.amp=bf16"]), torch.device("cpu"))
    check_amp(config, torch.device("cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_device_this_machine_lacks_is_refused():
    config = build_config(overrides=["train.device=cuda:1"])
    with pytest.raises(ConfigError, match=r"^train.device must be one of: auto, cpu.* on this"):
        check_device(config)
    assert check_device(build_config(overrides=["train.device=auto"])).type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_index_beyond_this_machines_is_refused():
    config = build_config(overrides=[f"train.device=cuda:{torch.cuda.device_count()}"])
    with pytest.raises(ConfigError, match="train.device must be cuda or cuda:0 to cuda:"):
        check_device(config)


def test_tensorboard_logging_needs_the_package(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    config = build_config(overrides=["log.loggers=[tensorboard]"])
    with pytest.raises(
        ConfigError, match="log.loggers: logger 'tensorboard' needs the tensorboard package"
    ):
        check_run(config, INFO)


# The defect's cases: each gave a traceback or a run folder without a checkpoint.
BAD_RUNS = [
    ("input.size=[0,-5]", "input.size"),
    ("input.size=[32,32,3]", "input.size"),
    ("input.size=[32]", "input.size"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.lr=-1", "train.lr"),
    ("train.epochs=0", "train.epochs"),
    ("train.amp=fp8", "train.amp"),
    ("train.amp=fp16", "train.amp"),  # on the CPU (train.device=cpu below)
    ("train.monitor=confusion/mIoU", "train.monitor"),
    ("train.monitor=confusion/iou", "train.monitor"),
    ("train.monitor_mode=biggest", "train.monitor_mode"),
]


def _train(cli, tmp_path, dataset, *overrides):
    settings = [
        f'dataset.path="{dataset}"',
        f'runs_dir="{tmp_path / "runs"}"',
        "train.device=cpu",
        "train.workers=0",
        "train.epochs=1",
        "train.batch_size=16",
        "input.size=[32,32]",
        "model.base_width=4",
        "model.depth=2",
        *overrides,
    ]
    args = [arg for setting in settings for arg in ("--set", setting)]
    return cli("train", "--plugin", "shapes-unet", *args, "--max-steps", "1", cwd=tmp_path)


@pytest.mark.parametrize("override, key", BAD_RUNS)
def test_a_bad_value_stops_the_run_before_its_folder_exists(
    cli, tmp_path, shapes_dataset, override, key
):
    result = _train(cli, tmp_path, shapes_dataset, override)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: {key} must be ")
    assert f"(from --set {override})" in line
    assert not (tmp_path / "runs").exists()


def test_a_good_run_with_the_same_settings_gets_its_folder(cli, tmp_path, shapes_dataset):
    result = _train(cli, tmp_path, shapes_dataset, "train.monitor=confusion/mean_dice")
    assert result.exit_code == 0, result.stderr
    assert len(list((tmp_path / "runs").glob("*/last.safetensors"))) == 1


# (override, what the one-line error must say): each checked against the component's plugin
BAD_COMPONENTS = [
    ("train.optimizer=adm", "train.optimizer.name: unknown optimizer 'adm'; did you mean 'adam'"),
    ("train.scheduler=linear", "Valid schedulers: constant, cosine, none, onecycle, poly, step"),
    ("train.scheduler.warmup_epochs=-0.5", "warmup_epochs must be a float >= 0, got -0.5"),
    ("train.optimizer.momentum=0.5", "train.optimizer.momentum = 0.5 (from --set"),
    ("train.optimizer.weight_decay=-1e-4", "Invalid weight_decay value: -0.0001"),
    ("train.scheduler.pwer=2", "is not an option of scheduler 'none'; its options: warmup_epochs"),
    ("augment.hflip.p=1.5", "augment.hflip: transform 'hflip' rejected its options {'p': 1.5}"),
    ("augment.blur.sigma=1", "augment.blur: unknown transform 'blur'; valid transforms: "),
    ("augment.rotate.degrees=-10", "degrees must be in [0, 180], got -10"),
    ("augment.scale.range=[2.0,1.0]", "range must be [min, max] with 0 < min <= max"),
]


@pytest.mark.parametrize("override, expects", BAD_COMPONENTS)
def test_optimiser_scheduler_and_augmentations_are_checked_against_their_plugins(override, expects):
    from segcli.training.preflight import check_components

    config = build_config(overrides=[override])
    with pytest.raises(ConfigError) as caught:
        check_components(config)
    message = str(caught.value)
    assert expects in message and "\n" not in message
    assert f"(from --set {override})" in message


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.optimizer=sgd", "train.optimizer.momentum=0.5"],
        ["train.scheduler=step", "train.scheduler.step_epochs=2", "train.scheduler.gamma=0.5"],
        [
            "train.scheduler=onecycle",
            "augment.rotate.degrees=15",
            "augment.color_jitter.strength=0.1",
        ],
    ],
)
def test_valid_components_pass(overrides):
    from segcli.training.preflight import check_components

    check_components(build_config(overrides=overrides))


def test_a_bad_scheduler_option_leaves_no_run_folder(cli, shapes_dataset, tmp_path):
    runs = tmp_path / "runs"
    result = cli(
        "train",
        "--plugin",
        "shapes-unet",
        f"--set=dataset.path={shapes_dataset}",
        f"--set=runs_dir={runs}",
        "--set=train.scheduler=poly",
        "--set=train.scheduler.power=-1",
    )
    assert result.exit_code == 2, result.stdout
    assert "train.scheduler: scheduler 'poly' rejected its options {'power': -1}" in result.stderr
    assert not runs.exists()


def test_call_factory_refuses_an_option_named_like_a_positional_argument():
    from segcli.factories import call_factory
    from segcli.registry import Origin, Registry

    registry = Registry("optimizer")
    registry.add("plain", lambda parameters, lr, *, momentum=0.0: None, "", Origin("p"))
    with pytest.raises(ConfigError, match="optimizer 'plain' has no option 'lr'; its options: "):
        call_factory(registry, "plain", [], 0.1, lr=0.2)
    assert call_factory(registry, "plain", [], 0.1, momentum=0.9) is None
