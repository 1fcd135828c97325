"""Local pretrained weights: whole models, backbones, and the errors for wrong files."""

from __future__ import annotations

import hashlib
import pickle

import pytest
import torch
from safetensors.torch import save_file
from segcli_models.fcn8s import build_fcn8s
from segcli_models.torchvision_models import build_lraspp_mobilenet_v3
from segcli_models.unet import build_unet
from segcli_recipes import LABPICS_DEEPLABV3
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet18, resnet50, vgg19
from torchvision.models.segmentation import deeplabv3_resnet50

from segcli.config import build_config
from segcli.data.format import ClassInfo, DatasetInfo
from segcli.errors import CheckpointError
from segcli.runs.checkpoint_file import save_checkpoint
from segcli.weights import load_backbone, load_weights_into, pretrained_record, read_state_dict


def _info(num_classes: int, channels: int = 3) -> DatasetInfo:
    classes = [ClassInfo(i, f"class{i}", (i, i, i)) for i in range(num_classes)]
    return DatasetInfo("fake", classes, {"train": 1}, image_channels=channels)


def _build_model(overrides: list[str], num_classes: int = 3):
    from segcli.building import build_model

    return build_model(build_config(LABPICS_DEEPLABV3, overrides=overrides), _info(num_classes))


def test_recipe_loads_an_imagenet_backbone_state_dict(tmp_path):
    source = resnet50(weights=None)
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(source.state_dict(), path)
    model = _build_model([f"model.backbone_weights={path}"])
    assert torch.equal(model.backbone.layer4[2].conv3.weight, source.layer4[2].conv3.weight)


@pytest.mark.slow
def test_recipe_loads_coco_weights_replacing_the_head(tmp_path):
    source = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    path = tmp_path / "deeplabv3-coco.pth"
    torch.save(source.state_dict(), path)
    model = _build_model([f"model.backbone_weights={path}"])
    assert torch.equal(
        model.classifier[0].project[0].weight, source.classifier[0].project[0].weight
    )
    assert model.classifier[4].weight.shape[0] == 3  # fresh head for the dataset's 3 classes


def test_recipe_rejects_a_backbone_of_another_architecture(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    expected = "does not fit the backbone of deeplabv3-resnet50: .* shapes differ, first: layer1"
    with pytest.raises(CheckpointError, match=expected):
        _build_model([f"model.backbone_weights={path}"])


def test_missing_weights_file_is_one_clear_line(tmp_path):
    with pytest.raises(CheckpointError, match="weights file .*nothing.pth does not exist") as error:
        read_state_dict(tmp_path / "nothing.pth")
    assert "\n" not in str(error.value)


def test_mobilenet_backbone_from_an_imagenet_classifier(tmp_path):
    source = mobilenet_v3_large(weights=None)
    path = tmp_path / "mobilenet.safetensors"
    save_file(source.state_dict(), str(path))
    model = build_lraspp_mobilenet_v3(2, backbone_weights=str(path))
    assert torch.equal(getattr(model.backbone, "16")[0].weight, source.features[16][0].weight)


def _save_vgg16_classifier_weights(path):
    """A file shaped like torchvision's vgg16 state dict, without building its 138 M weights."""
    features = build_fcn8s(2, head_width=8).features
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.6.weight"] = torch.zeros(1000, 8)
    torch.save(state, path)
    return features


@pytest.mark.slow
def test_fcn8s_features_match_torchvision_vgg_keys():
    ours = set(build_fcn8s(2, backbone="vgg19", head_width=8).features.state_dict())
    assert ours == set(vgg19(weights=None).features.state_dict())


def test_grey_input_keeps_pretrained_response(tmp_path):
    source = _save_vgg16_classifier_weights(tmp_path / "vgg16.pth")
    grey = build_fcn8s(2, 1, head_width=8, backbone_weights=str(tmp_path / "vgg16.pth"))
    image = torch.rand(1, 1, 32, 32)
    expected = source[0](image.expand(1, 3, 32, 32))
    assert torch.allclose(grey.features[0](image), expected, atol=1e-5)


def test_vgg16_file_into_vgg19_backbone_names_the_mismatch(tmp_path):
    _save_vgg16_classifier_weights(tmp_path / "vgg16.pth")
    with pytest.raises(CheckpointError, match="vgg19 features of fcn8s-vgg"):
        build_fcn8s(2, backbone="vgg19", head_width=8, backbone_weights=str(tmp_path / "vgg16.pth"))


def test_whole_model_weights_keep_a_fresh_head_for_another_class_count(tmp_path):
    trained = build_unet(3, depth=2, base_width=4)
    path = tmp_path / "unet.pt"
    wrapped = {f"module.{k}": v for k, v in trained.state_dict().items()}  # DataParallel
    torch.save({"epoch": 3, "state_dict": wrapped}, path)
    target = build_unet(5, depth=2, base_width=4)
    report = load_weights_into(target, path)
    assert torch.equal(target.stem[0].weight, trained.stem[0].weight)
    assert report.reinitialised == ["head.weight", "head.bias"]
    assert "head tensors kept fresh" in report.summary()


def test_wrong_depth_lists_the_first_keys(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file(build_unet(2, depth=3, base_width=4).state_dict(), str(path))
    with pytest.raises(CheckpointError, match=r"does not fit UNet: 24 shapes differ, first: merge"):
        load_weights_into(build_unet(2, depth=2, base_width=4), path)


def test_unrelated_file_is_called_another_architecture(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError, match="the file is for another architecture"):
        load_weights_into(build_unet(2, depth=1, base_width=4), path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(
        {"state_dict": build_unet(2, depth=1, base_width=4).state_dict(), "extra": _Pickled()},
        path,
        pickle_protocol=pickle.HIGHEST_PROTOCOL,
    )
    with pytest.raises(CheckpointError, match="re-save it with torch.save"):
        read_state_dict(path)


class _Pickled:
    pass


def test_unknown_suffix_and_segcli_checkpoint(tmp_path):
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown suffix"):
        read_state_dict(tmp_path / "weights.h5")
    model = build_unet(2, depth=1, base_width=4)
    path = tmp_path / "best.safetensors"
    save_checkpoint(path, model.state_dict(), {"epoch": 1}, {"x": torch.ones(1)})
    assert set(read_state_dict(path)) == set(model.state_dict())  # its model weights only


class _Tiny(nn.Module):
    """A backbone (`encoder`), a layer after it and a head whose width is the class count."""

    head_prefixes = ("head.",)

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.neck = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, num_classes, 1)


def _load_tiny_backbone(model: _Tiny, path, **options):
    return load_backbone(
        model,
        model.encoder,
        str(path),
        {},
        model_name="tiny",
        target="the tiny encoder",
        ignore_prefixes=("fc.",),
        **options,
    )


def test_load_backbone_loads_records_and_rejects_a_file_with_no_matching_keys(tmp_path):
    source = _Tiny().encoder
    path = tmp_path / "classifier.pth"
    torch.save({**source.state_dict(), "fc.weight": torch.zeros(10, 4)}, path)  # fc. ignored
    model = _Tiny()
    weights = _load_tiny_backbone(model, path)
    assert torch.equal(model.encoder[0].weight, source[0].weight)
    assert torch.equal(model.encoder[1].running_mean, source[1].running_mean)
    assert pretrained_record(model)["backbone_weights"] == {
        "name": None,
        "file": "classifier.pth",
        "url": None,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert weights.path == path

    unrelated = tmp_path / "other.safetensors"
    save_file({"decoder.weight": torch.zeros(2, 2)}, str(unrelated))
    fresh = _Tiny()
    expected = "none of the 1 tensors in .*other.safetensors fit the tiny encoder"
    with pytest.raises(CheckpointError, match=expected):
        _load_tiny_backbone(fresh, unrelated)
    assert pretrained_record(fresh) == {}


def test_load_backbone_loads_a_whole_model_file_into_the_model_keeping_a_fresh_head(tmp_path):
    trained = _Tiny(num_classes=5)
    path = tmp_path / "whole.safetensors"
    save_file(trained.state_dict(), str(path))
    model = _Tiny(num_classes=2)
    _load_tiny_backbone(model, path, whole_model_prefix="encoder.")
    assert torch.equal(model.encoder[0].weight, trained.encoder[0].weight)
    assert torch.equal(model.neck.weight, trained.neck.weight)  # beyond the backbone
    assert model.head.weight.shape[0] == 2
    assert pretrained_record(model)["backbone_weights"]["file"] == "whole.safetensors"
