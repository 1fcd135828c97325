"""Pretrained weights by name (`backbone_weights=imagenet|coco`) through torch hub's cache.

Nothing is downloaded: TORCH_HOME points into tmp_path, stand-in files are placed under the
exact published names, and "the network" is torch hub's `urlopen` made to fail (offline) or
a file:// address (a download that checks the hash without leaving the machine).
"""

from __future__ import annotations

import hashlib
import logging
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from segcli_models.erfnet import build_erfnet
from segcli_models.torchvision_models import build_lraspp_mobilenet_v3
from torch import nn
from torchvision.models.segmentation import LRASPP_MobileNet_V3_Large_Weights

from segcli.config import build_config
from segcli.data.format import ClassInfo, DatasetInfo
from segcli.errors import CheckpointError, ConfigError, WeightsUnavailable
from segcli.runs.checkpoint_file import read_checkpoint_meta
from segcli.weights import pretrained_record, resolve_weights, weights_cache_dir

COCO_LRASPP = "lraspp_mobilenet_v3_large-d234d4ea.pth"
IMAGENET_MOBILENET = "mobilenet_v3_large-8738ca79.pth"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache of this test's own (TORCH_HOME), its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    assert weights_cache_dir() == folder
    return folder


@pytest.fixture
def offline(monkeypatch):
    """No network: torch hub's downloads fail the way they do without a connection."""

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", unreachable)


@pytest.fixture
def no_download(monkeypatch):
    def download(*args, **kwargs):
        raise AssertionError("a cached file must be used without downloading")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


def _save_tiny(path: Path) -> dict[str, torch.Tensor]:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = nn.Linear(3, 2).state_dict()
    torch.save(state, path)
    return state


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_cached_file_is_used_without_the_network(cache, no_download, caplog):
    _save_tiny(cache / "tiny-0123abcd.pth")
    weights = resolve_weights(
        "tiny", {"tiny": "https://example.invalid/models/tiny-0123abcd.pth"}, target="net"
    )
    assert weights.path == cache / "tiny-0123abcd.pth"
    assert weights.record() == {
        "name": "tiny",
        "file": "tiny-0123abcd.pth",
        "url": "https://example.invalid/models/tiny-0123abcd.pth",
        "sha256": _sha256(weights.path),
    }
    # a stand-in is not the published file: used as torch hub would, with a warning
    assert "is not the published file (its SHA-256 does not start with 0123abcd)" in caplog.text


def test_offline_without_the_file_is_one_line_naming_file_folder_and_address(cache, offline):
    url = "https://download.example/models/tiny-0123abcd.pth"
    with pytest.raises(WeightsUnavailable) as error:
        resolve_weights("tiny", {"tiny": url}, target="net")
    message = str(error.value)
    assert "\n" not in message and error.value.exit_code == 5
    assert f"put it in {cache}" in message
    assert "fetch tiny-0123abcd.pth from that address" in message
    assert url in message and "Temporary failure in name resolution" in message
    assert list(cache.iterdir()) == []  # no partial file left behind


def test_a_download_is_checked_against_the_hash_in_its_name(cache, tmp_path):
    served = tmp_path / "served"
    _save_tiny(served / "tiny.pth")
    digest = _sha256(served / "tiny.pth")
    good, bad = served / f"tiny-{digest[:8]}.pth", served / f"tiny-{'0' * 8}.pth"
    (served / "tiny.pth").rename(good)
    bad.write_bytes(good.read_bytes())
    with pytest.raises(CheckpointError, match="does not have the published content"):
        resolve_weights("tiny", {"tiny": bad.as_uri()}, target="net")
    assert list(cache.iterdir()) == []
    weights = resolve_weights("tiny", {"tiny": good.as_uri()}, target="net")
    assert weights.path == cache / good.name and weights.sha256 == digest


def test_unknown_names_list_the_valid_ones_and_paths_still_work(cache, tmp_path):
    with pytest.raises(ConfigError, match="net has no published weights named 'imagnet'; "
                       "valid names: coco, imagenet"):  # fmt: skip
        resolve_weights("imagnet", {"imagenet": "x", "coco": "y"}, target="net")
    with pytest.raises(ConfigError, match="erfnet has no published weights named 'imagenet'"):
        build_erfnet(2, backbone_weights="imagenet")
    local = tmp_path / "imagenet"  # a file that happens to be called like a name
    _save_tiny(local)
    assert resolve_weights(str(local), {"imagenet": "x"}, target="net").name is None
    with pytest.raises(CheckpointError, match="weights file .*encoder.pth does not exist"):
        build_erfnet(2, backbone_weights=str(tmp_path / "encoder.pth"))


def _coco_stand_in(cache: Path) -> dict[str, torch.Tensor]:
    """A file shaped like torchvision's COCO LR-ASPP (21 classes), random values."""
    assert LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.url.endswith(COCO_LRASPP)
    state = build_lraspp_mobilenet_v3(21).state_dict()
    cache.mkdir(parents=True)
    torch.save(state, cache / COCO_LRASPP)
    return state


def _info(num_classes: int) -> DatasetInfo:
    classes = [ClassInfo(i, f"class{i}", (i, i, i)) for i in range(num_classes)]
    return DatasetInfo("fake", classes, {"train": 1}, image_channels=3)


def test_coco_by_name_builds_the_model_from_the_cached_file(cache, no_download):
    from segcli.building import build_model

    stand_in = _coco_stand_in(cache)
    config = build_config(
        overrides=["model.name=lraspp-mobilenet-v3", "model.backbone_weights=coco"]
    )
    model = build_model(config, _info(3))
    built = model.state_dict()
    for key in ("backbone.0.0.weight", "backbone.16.0.weight", "classifier.cbr.0.weight"):
        assert torch.equal(built[key], stand_in[key]), key
    assert built["classifier.high_classifier.weight"].shape[0] == 3  # a fresh head
    record = pretrained_record(model)["backbone_weights"]
    assert record["name"] == "coco" and record["file"] == COCO_LRASPP
    assert record["sha256"] == _sha256(cache / COCO_LRASPP)


LRASPP_TRAIN = [
    "--set", "model.name=lraspp-mobilenet-v3", "--set", "train.workers=0",
    "--set", "input.size=[32,32]", "--set", "train.batch_size=8", "--set", "train.epochs=1",
]  # fmt: skip


def test_cli_offline_names_the_file_and_folder(cli, tmp_path, cache, offline, shapes_dataset):
    result = cli(
        "train", "--plugin", "shapes-unet", "--set", f"dataset.path={shapes_dataset}",
        *LRASPP_TRAIN, "--set", "model.backbone_weights=imagenet", "--max-steps", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 5
    line = one_error_line(result.stderr)
    assert IMAGENET_MOBILENET in line and str(cache) in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cli_training_starts_from_the_cached_file(
    cli, tmp_path, cache, no_download, shapes_dataset, caplog
):
    stand_in = _coco_stand_in(cache)
    with caplog.at_level(logging.WARNING):
        result = cli(
            "train", "--plugin", "shapes-unet", "--set", f"dataset.path={shapes_dataset}",
            *LRASPP_TRAIN, "--set", "model.backbone_weights=coco", "--set", "train.lr=0",
            "--max-steps", "1", cwd=tmp_path,
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [run] = (tmp_path / "runs").iterdir()
    trained = load_file(str(run / "last.safetensors"))
    # lr 0 freezes the weights: the checkpoint holds the stand-in's backbone as it was
    for key in ("backbone.0.0.weight", "backbone.16.0.weight", "classifier.cbr.0.weight"):
        assert torch.equal(trained[f"model/{key}"], stand_in[key]), key
    # the run records which file its backbone started from
    recorded = read_checkpoint_meta(run / "last.safetensors")["pretrained"]["backbone_weights"]
    assert recorded["sha256"] == _sha256(cache / COCO_LRASPP)
