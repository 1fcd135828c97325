"""The pretrained-encoder rule of the default planner: photographs get `unet-resnet` when
ImageNet weights are at hand (torch hub's cache, or `model.backbone_weights` requested) and the
budget affords it; otherwise the reason says what fetching them would gain, or why not.

Nothing is downloaded: each test has its own empty cache, and a cached file is a stand-in
(planning only looks whether the file is there)."""

from __future__ import annotations

from pathlib import Path

import pytest
from segcli_planners.pretrained import IMAGENET_MEAN, IMAGENET_STD, PRETRAINED_MIN_SIDE
from segcli_planners.rules import plan
from test_planner import CPU, FakeMachine, fingerprint, real

from segcli.config import build_config

RESNET18 = "resnet18-f37072fd.pth"  # torchvision's published file name
UNET_REASON = "segcli's U-Net: same-size output, any size, fast on CPU"
# car damage (394 photographs at 640 px) at the speed measured on the 2-core Xeon
CAR_SPEED = 0.385e6


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def cache_resnet18(folder: Path) -> Path:
    path = folder / RESNET18
    path.write_bytes(b"a stand-in: planning only looks whether the file is there")
    return path


def test_photographs_use_the_pretrained_encoder_whose_weights_are_cached(hub_cache):
    weights = cache_resnet18(hub_cache)
    timer = FakeMachine(CAR_SPEED)
    planned = plan(real("cardamage-coco"), CPU, 1800, timer=timer)
    layer, reasons = planned.layer, planned.reasons
    assert layer["model"] == {
        "name": "unet-resnet",
        "encoder": "resnet18",
        "backbone_weights": "imagenet",
    }
    assert f"in the local cache: {weights}" in reasons["model.name"]
    # timed like any candidate: the machine's own cost replaces the table's
    assert any(measured["model"]["name"] == "unet-resnet" for measured in timer.layers)
    assert "4.0x the U-Net's time per pixel (measured here)" in reasons["model.name"]
    assert layer["input"]["mean"] == IMAGENET_MEAN and layer["input"]["std"] == IMAGENET_STD
    assert layer["train"]["lr"] < 3e-3 and "pretrained" in reasons["train.lr"]
    side = min(layer["input"]["size"])
    assert side >= PRETRAINED_MIN_SIDE and side % 32 == 0  # the encoder's size divisor
    assert planned.estimates["epochs"] >= 0.5 * planned.estimates["target_epochs"]
    build_config(layer, recipe_source="plan")  # a valid configuration


def test_without_the_weights_the_reason_says_what_fetching_them_gains(hub_cache):
    fp = real("cardamage-coco")
    planned = plan(fp, CPU, 1800, timer=FakeMachine(CAR_SPEED))
    assert planned.layer["model"]["name"] == "unet"
    reason = planned.reasons["model.name"]
    assert f"not in {hub_cache}" in reason and "`segcli weights fetch resnet18`" in reason
    assert "1.28 M photographs" in reason
    assert planned.layer["input"]["mean"] == [round(v, 4) for v in fp.mean]


def test_grey_images_keep_the_unet_whatever_the_cache(hub_cache):
    cache_resnet18(hub_cache)
    tgs = plan(real("tgs-salt"), CPU, 1800, timer=FakeMachine(0.56e6))
    grey_as_rgb = fingerprint(256, channels=3)  # R = G = B: the same mean and std thrice
    for planned in (tgs, plan(grey_as_rgb, CPU, 1800, timer=FakeMachine(CAR_SPEED))):
        assert planned.layer["model"]["name"] == "unet"
        assert planned.reasons["model.name"] == UNET_REASON


def test_a_budget_too_short_for_the_encoder_keeps_the_unet_and_says_why(hub_cache):
    cache_resnet18(hub_cache)
    planned = plan(real("cardamage-coco"), CPU, 600, timer=FakeMachine(CAR_SPEED))
    assert planned.layer["model"]["name"] == "unet"
    reason = planned.reasons["model.name"]
    assert "are at hand" in reason and "a longer --time buys it" in reason
    assert f"at {PRETRAINED_MIN_SIDE} px, its smallest input" in reason


def test_weights_given_with_set_are_used_without_a_cache(hub_cache):
    requested = {"model.backbone_weights": "/weights/resnet18.pth"}
    car_damage = real("cardamage-coco")
    planned = plan(car_damage, CPU, 1800, timer=FakeMachine(CAR_SPEED), requested=requested)
    # the user's layer holds the weights: the plan names the model they fit
    assert planned.layer["model"] == {"name": "unet-resnet", "encoder": "resnet18"}
    assert "given as model.backbone_weights=/weights/resnet18.pth" in planned.reasons["model.name"]
    short = plan(car_damage, CPU, 600, timer=FakeMachine(CAR_SPEED), requested=requested)
    assert short.layer["model"]["name"] == "unet-resnet"
    assert "kept because the weights were asked for" in short.reasons["model.name"]


def test_a_model_the_user_chose_or_thin_structures_keep_the_unet(hub_cache):
    cache_resnet18(hub_cache)
    chosen = plan(real("cardamage-coco"), CPU, 1800, requested={"model.name": "unet"})
    assert chosen.layer["model"]["name"] == "unet" and chosen.reasons["model.name"] == UNET_REASON
    drive = plan(real("drive"), CPU, 600, timer=FakeMachine(CAR_SPEED))  # vessels 3.9 px thin
    assert drive.layer["model"]["name"] == "unet"
    assert "no pretrained encoder" in drive.reasons["model.name"]


def test_print_config_plans_around_weights_given_with_set(cli, shapes_dataset, tmp_path):
    weights = tmp_path / "resnet18.pth"
    result = cli(
        "train", "--data", shapes_dataset, "--time", "30m", "--print-config",
        "--set", f"model.backbone_weights={weights}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert 'name = "unet-resnet"' in result.stdout
    assert f'backbone_weights = "{weights}"' in result.stdout
