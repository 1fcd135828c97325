"""The planner's rules on synthetic fingerprints: each test names the rule it guards."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from segcli.config import build_config, to_toml
from segcli.data.fingerprint import ClassStats, Fingerprint, SizeStats
from segcli.planning import Hardware, plan, render_plan

GiB = 2**30
CPU = Hardware("cpu", "2-core test CPU", 8 * GiB, cpu_cores=2, bf16=True)
OLD_CPU = Hardware("cpu", "CPU without bf16", 8 * GiB, cpu_cores=2, bf16=False)
GPU = Hardware("cuda", "test GPU", 80 * GiB, cpu_cores=16, bf16=True)
SMALL_GPU = Hardware("cuda", "small GPU", 2 * GiB, cpu_cores=16, bf16=True)


def cls(index, name, share, *, images=1.0, area=0.1, top=0.5, left=0.5) -> ClassStats:
    return ClassStats(index, name, share, images, area, top, left)


def fingerprint(
    side: int = 101,
    *,
    channels: int = 1,
    train: int = 3400,
    val: int = 600,
    classes: tuple[ClassStats, ...] | None = None,
) -> Fingerprint:
    classes = classes or (
        cls(0, "sediment", 0.75, area=0.88, top=0.507),
        cls(1, "salt", 0.25, images=0.6, area=0.3, top=0.481),  # TGS: salt sits a little low
    )
    return Fingerprint(
        version=1,
        splits={"train": train, "val": val},
        height=SizeStats(side, side, side),
        width=SizeStats(side, side, side),
        channels=channels,
        mean=(0.47,) * channels,
        std=(0.16,) * channels,
        classes=classes,
        images_measured=min(train, 2000),
    )


def tgs_like() -> Fingerprint:
    return fingerprint()


def isbi_like() -> Fingerprint:
    """512x512 grey, 25 images, thin membranes (class 0) around small cells, no orientation."""
    return fingerprint(
        512,
        train=25,
        val=5,
        classes=(
            cls(0, "membrane", 0.22, area=0.0017, top=0.502, left=0.47),
            cls(1, "cell", 0.78, area=0.0024, top=0.4995, left=0.51),
        ),
    )


def leaves(layer: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += leaves(value, f"{path}.")
        else:
            keys.append(path)
    return keys


@pytest.mark.parametrize(
    "case",
    [tgs_like(), isbi_like(), fingerprint(1024, channels=3, train=5000), fingerprint(48, train=8)],
    ids=["tgs", "isbi", "huge-rgb", "tiny"],
)
@pytest.mark.parametrize("hardware", [CPU, OLD_CPU, GPU, SMALL_GPU], ids=lambda h: h.name)
def test_every_plan_builds_and_every_planned_key_has_a_reason(case, hardware):
    planned = plan(case, hardware, 480)
    config = build_config(planned.layer, recipe_source="plan")
    for key in leaves(planned.layer):
        parts = key.split(".")
        assert any(".".join(parts[:end]) in planned.reasons for end in range(1, len(parts) + 1)), (
            key
        )
    assert all(reason.strip() and "\n" not in reason for reason in planned.reasons.values())
    rendered = render_plan(to_toml(config), planned.reasons, config.source_of)
    assert build_config(config_file=None, recipe=tomllib.loads(rendered)) == config


def test_small_images_are_kept_whole_and_rounded_up_to_the_size_divisor():
    planned = plan(tgs_like(), CPU, 480)
    assert planned.layer["model"]["depth"] == 4
    assert planned.layer["input"]["size"] == [112, 112]  # 101 up to a multiple of 2**4
    assert "augment" not in planned.layer or "crop" not in planned.layer["augment"]


def test_huge_images_with_small_objects_are_cropped_at_native_resolution():
    planned = plan(isbi_like(), CPU, 480)
    assert planned.layer["input"]["size"] == []
    crop = planned.layer["augment"]["crop"]["size"]
    divisor = 2 ** planned.layer["model"]["depth"]
    assert crop[0] < 512 and crop[0] % divisor == 0
    assert "native resolution" in planned.reasons["augment.crop"]


def test_huge_images_of_varying_size_are_resized_even_with_small_objects():
    varying = isbi_like()
    varying = Fingerprint(
        **{
            **varying.__dict__,
            "height": SizeStats(512, 400, 600),
            "width": SizeStats(512, 500, 512),
        }
    )
    planned = plan(varying, CPU, 480)
    assert planned.layer["input"]["size"] != [] and "crop" not in planned.layer["augment"]
    assert "varying size" in planned.reasons["input.size"]


def test_huge_images_with_large_objects_are_downscaled():
    large = fingerprint(
        2048, classes=(cls(0, "background", 0.6, area=0.6), cls(1, "blob", 0.4, area=0.2))
    )
    planned = plan(large, CPU, 480)
    height, width = planned.layer["input"]["size"]
    divisor = 2 ** planned.layer["model"]["depth"]
    assert height < 2048 and height == width and height % divisor == 0
    assert "crop" not in planned.layer.get("augment", {})
    assert "downscaled" in planned.reasons["input.size"]


def test_a_longer_budget_affords_more_pixels():
    short = plan(isbi_like(), CPU, 120).layer["augment"]["crop"]["size"]
    long = plan(isbi_like(), CPU, 1800).layer
    assert long["input"]["size"] == [512, 512] or long["augment"]["crop"]["size"] > short


def test_a_gpu_gets_a_wider_net_bf16_and_more_workers():
    cpu, gpu = plan(tgs_like(), CPU, 480).layer, plan(tgs_like(), GPU, 480).layer
    assert cpu["model"]["base_width"] == 16 and gpu["model"]["base_width"] > 16
    assert cpu["train"]["workers"] == 0 and gpu["train"]["workers"] > 0
    assert gpu["train"]["amp"] == "bf16" and gpu["train"]["channels_last"]


def test_bf16_only_where_the_device_runs_it_natively():
    assert plan(tgs_like(), CPU, 480).layer["train"]["amp"] == "bf16"
    assert plan(tgs_like(), OLD_CPU, 480).layer["train"]["amp"] == "off"
    no_bf16_gpu = Hardware("cuda", "old GPU", 16 * GiB, 8, bf16=False)
    assert plan(tgs_like(), no_bf16_gpu, 480).layer["train"]["amp"] == "fp16"


def test_batch_size_fits_the_device_memory():
    big = plan(isbi_like(), GPU, 480).layer["train"]["batch_size"]
    small = plan(isbi_like(), SMALL_GPU, 480).layer["train"]["batch_size"]
    assert 1 <= small < big
    assert plan(tgs_like(), CPU, 480).layer["train"]["batch_size"] <= 16


def test_binary_with_a_minority_foreground_is_single_logit_bce_dice_with_binary_metrics():
    planned = plan(tgs_like(), CPU, 480)
    assert planned.layer["loss"]["name"] == "bce+dice"
    assert planned.layer["train"]["monitor"] == "binary/iou"
    # 40 % of the images hold no salt: the per-image competition score applies
    assert planned.layer["metrics"] == ["confusion", "binary", "tgs"]


def test_binary_with_class_1_the_majority_scores_the_minority_with_two_logits():
    planned = plan(isbi_like(), CPU, 480)
    assert planned.layer["loss"]["name"] == "ce+dice"
    assert planned.layer["metrics"] == ["confusion"]
    assert planned.layer["train"]["monitor"] == "confusion/miou"


def test_a_rare_class_adds_dice_to_cross_entropy():
    rare = (cls(0, "road", 0.6), cls(1, "car", 0.35), cls(2, "person", 0.05))
    common = (cls(0, "road", 0.4), cls(1, "car", 0.35), cls(2, "person", 0.25))
    assert plan(fingerprint(classes=rare), CPU, 480).layer["loss"]["name"] == "ce+dice"
    assert plan(fingerprint(classes=common), CPU, 480).layer["loss"]["name"] == "ce"
    assert "'person' 5.0%" in plan(fingerprint(classes=rare), CPU, 480).reasons["loss.name"]


def test_orientation_free_grey_data_get_vertical_flips_and_rotation():
    isbi = plan(isbi_like(), CPU, 480).layer["augment"]
    assert {"hflip", "vflip", "rotate"} <= set(isbi)
    tgs = plan(tgs_like(), CPU, 480).layer["augment"]  # salt sits low
    assert "hflip" in tgs and "vflip" not in tgs and "rotate" not in tgs
    colour = fingerprint(channels=3, classes=(cls(0, "a", 0.5, top=0.5), cls(1, "b", 0.5, top=0.5)))
    assert "vflip" not in plan(colour, CPU, 480).layer["augment"]  # photographs stay upright


def test_small_datasets_get_scale_augmentation():
    assert "scale" in plan(isbi_like(), CPU, 480).layer["augment"]
    assert "scale" not in plan(tgs_like(), CPU, 480).layer["augment"]


def test_normalisation_comes_from_the_fingerprint():
    rgb = fingerprint(channels=3)
    layer = plan(rgb, CPU, 480).layer
    assert layer["input"]["mean"] == [0.47] * 3 and layer["input"]["std"] == [0.16] * 3


def test_the_budget_bounds_the_run_and_the_schedule_warms_up_then_decays():
    layer = plan(tgs_like(), CPU, 480).layer
    assert layer["train"]["max_time"] == 480
    assert layer["train"]["epochs"] >= 1000  # the budget binds, not the epochs
    assert layer["train"]["scheduler"]["name"] == "cosine"
    assert layer["train"]["scheduler"]["warmup_epochs"] > 0
    assert layer["train"]["optimizer"] == {"name": "adamw", "weight_decay": 1e-4}


def test_validation_is_spaced_to_cost_at_most_a_tenth_of_the_time():
    # a big validation split next to a small training split: validate less often
    lopsided = fingerprint(train=200, val=4000)
    assert plan(lopsided, CPU, 480).layer["train"]["val_every"] > 1
    assert plan(tgs_like(), CPU, 480).layer["train"]["val_every"] == 1


def test_a_timer_replaces_the_built_in_speed_estimate():
    calls = []

    def slow(hardware, base_width, *, channels_last, bf16):
        calls.append((hardware.device, base_width, channels_last, bf16))
        return 50_000.0  # pixels per second: a very slow device

    fast = plan(isbi_like(), CPU, 480).layer["augment"]["crop"]["size"]
    slowed = plan(isbi_like(), CPU, 480, timer=slow).layer["augment"]["crop"]["size"]
    assert calls == [("cpu", 16, True, True)]
    assert slowed < fast


def test_render_marks_overridden_keys_and_stays_valid_toml():
    planned = plan(tgs_like(), CPU, 480)
    config = build_config(planned.layer, overrides=["train.lr=0.01"], recipe_source="plan")
    text = render_plan(to_toml(config), planned.reasons, config.source_of)
    lr_line = next(line for line in text.splitlines() if line.startswith("lr ="))
    assert "from --set train.lr=0.01 (planned: AdamW" in lr_line
    depth_line = next(line for line in text.splitlines() if line.startswith("depth ="))
    assert depth_line.endswith(f"# {planned.reasons['model.depth']}")
    assert tomllib.loads(text)["train"]["lr"] == 0.01


def test_the_step_timer_measures_real_training_steps():
    from segcli.planning.hardware import measure_pixels_per_second

    def tiny(hardware, base_width, *, channels_last, bf16):
        return measure_pixels_per_second(
            hardware, 4, channels_last=channels_last, bf16=False, side=32, batch_size=2, steps=1
        )

    speed = tiny(OLD_CPU, 16, channels_last=True, bf16=False)
    assert speed > 0
    assert plan(isbi_like(), OLD_CPU, 480, timer=tiny).estimates["pixels_per_second"] > 0
