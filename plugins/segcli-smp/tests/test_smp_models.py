"""segcli-smp's models against segcli's contract suite, its options and its weights."""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("segmentation_models_pytorch")

import segcli_smp  # noqa: E402
import torch  # noqa: E402
from huggingface_hub import constants as hub_constants  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from segcli_smp import models  # noqa: E402

from segcli import (
    CheckpointError,
    ConfigError,
    WeightsUnavailable,
    check_loss,
    check_model,
    pretrained_record,
)

ARCHITECTURES = [
    "unet",
    "unetplusplus",
    "fpn",
    "pspnet",
    "deeplabv3plus",
    "linknet",
    "manet",
    "pan",
    "upernet",
    "segformer",
]


def registered(hook=segcli_smp.register_models) -> dict[str, tuple[str, str]]:
    """name -> (target, description), as segcli's plugin manager receives them."""
    names = {}
    hook(lambda name, target, text: names.update({name: (target, text)}))
    return names


def resolve(target: str):
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def test_every_architecture_is_registered_with_its_options():
    names = registered()
    assert sorted(names) == sorted(f"smp-{arch}" for arch in ARCHITECTURES)
    for target, description in names.values():
        assert callable(resolve(target))
        for option in ("encoder=resnet34", "encoder_depth=", "backbone_weights"):
            assert option in description


@pytest.mark.parametrize("name", sorted(registered()))
def test_contract(name):
    target, _ = registered()[name]
    check_model(resolve(target), name=name)


def test_contract_grey_single_logit():
    check_model(models.unet, num_classes=1, in_channels=1, name="smp-unet")


def test_size_divisor_is_the_encoder_stride():
    assert models.fpn(2, encoder="resnet18").size_divisor == 32
    assert models.pspnet(2, encoder="resnet18").size_divisor == 8  # depth 3


def test_unused_encoder_stages_are_frozen_but_kept():
    model = models.pspnet(2, encoder="resnet18", encoder_depth=3)
    assert not any(p.requires_grad for p in model.encoder.layer4.parameters())
    assert all(p.requires_grad for p in model.encoder.layer2.parameters())
    assert "encoder.layer4.0.conv1.weight" in model.state_dict()


def test_a_misspelt_encoder_is_a_config_error_with_suggestions():
    with pytest.raises(ConfigError, match="unknown smp encoder 'resnet19'; did you mean resnet18"):
        models.unet(2, encoder="resnet19")
    with pytest.raises(ConfigError, match="unknown smp encoder 'tu-resnet1'"):
        models.unet(2, encoder="tu-resnet1")


def test_unknown_weights_name_lists_the_published_ones():
    with pytest.raises(ConfigError, match=r"published: imagenet, ssl, swsl"):
        models.unet(2, encoder="resnet18", backbone_weights="coco")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache under tmp_path and no network."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def published_folder(hub, encoder: str, name: str):
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders[encoder]["pretrained_settings"][name]
    repo = settings["repo_id"].replace("/", "--")
    return hub / f"models--{repo}" / "snapshots" / settings["revision"]


def test_offline_and_not_cached_names_the_file_and_folder(offline_hub):
    folder = published_folder(offline_hub, "resnet18", "imagenet")
    with pytest.raises(WeightsUnavailable) as caught:
        models.unet(2, encoder="resnet18", backbone_weights="imagenet")
    message = str(caught.value)
    assert "\n" not in message
    assert f"put model.safetensors in {folder}" in message


def stand_in_encoder_weights() -> dict[str, torch.Tensor]:
    """resnet18 encoder weights whose values no initialisation gives."""
    import segmentation_models_pytorch as smp

    encoder = smp.encoders.get_encoder("resnet18")
    return {key: torch.full_like(value, 0.25) for key, value in encoder.state_dict().items()}


def test_published_weights_are_read_from_the_cache(offline_hub):
    folder = published_folder(offline_hub, "resnet18", "imagenet")
    folder.mkdir(parents=True)
    save_file(stand_in_encoder_weights(), folder / "model.safetensors")
    model = models.fpn(2, encoder="resnet18", backbone_weights="imagenet")
    assert torch.all(model.encoder.layer4[1].conv2.weight == 0.25)
    assert torch.all(model.encoder.conv1.weight == 0.25)
    record = pretrained_record(model)["backbone_weights"]
    assert record["name"] == "imagenet" and record["file"] == "model.safetensors"
    assert (
        record["sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    )


def test_a_local_file_loads_and_adapts_to_grey_input(tmp_path):
    path = tmp_path / "encoder.safetensors"
    save_file(stand_in_encoder_weights(), path)
    model = models.unet(2, in_channels=1, encoder="resnet18", backbone_weights=str(path))
    assert torch.all(model.encoder.layer1[0].conv1.weight == 0.25)
    # smp's adaptation: the RGB kernels summed into the one grey channel
    assert model.encoder.conv1.weight.shape[1] == 1
    assert torch.allclose(model.encoder.conv1.weight, torch.tensor(0.75))


def test_a_file_for_another_encoder_is_a_config_error(tmp_path):
    path = tmp_path / "encoder.safetensors"
    save_file(stand_in_encoder_weights(), path)
    with pytest.raises(CheckpointError, match="do not fit the encoder"):
        models.unet(2, encoder="resnet34", backbone_weights=str(path))


def test_dice_loss_is_registered_and_keeps_the_contract():
    [(target, description)] = registered(segcli_smp.register_losses).values()
    assert "log_loss" in description
    check_loss(resolve(target), name="smp-dice")
    check_loss(resolve(target), num_classes=2, options={"log_loss": True}, name="smp-dice")


def test_registration_imports_neither_torch_nor_smp():
    code = (
        "import sys, segcli_smp; "
        "print(sorted({'torch', 'segmentation_models_pytorch'} & {*sys.modules}))"
    )
    source = Path(segcli_smp.__file__).parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(source)},
    )  # fmt: skip
    assert result.stdout.strip() == "[]"
