"""`segcli export --format openvino`: parity with PyTorch, re-scored like a quantised export,
and `predict --checkpoint model.xml`; a one-line error where openvino is not installed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from segcli.testing.tools import require_module


@pytest.fixture(autouse=True)
def _onnx_installed():
    """ONNX is the test extra's (CI must have it); OpenVINO is optional and skips."""
    require_module("onnxruntime")
    require_module("onnxscript")


def test_openvino_export_matches_pytorch_and_predicts_like_the_checkpoint(
    cli, trained_run, shapes_dataset, tmp_path
):
    pytest.importorskip("openvino")
    model = tmp_path / "model.xml"
    result = cli(
        "export", "--checkpoint", str(trained_run), "--format", "openvino", "--out", str(model)
    )
    assert result.exit_code == 0, result.stderr
    assert float(re.search(r"max abs difference (\S+)", result.stdout).group(1)) <= 1e-4
    assert sorted(path.name for path in tmp_path.iterdir() if path.name[0] != ".") == [
        "model.bin",
        "model.xml",
        "model.xml.json",
    ]
    sidecar = json.loads((tmp_path / "model.xml.json").read_text())
    assert sidecar["format"] == "openvino" and "OpenVINO" in sidecar["exporter"]
    check = sidecar["accuracy_check"]
    assert check["exported"]["runtime"] == "openvino float32" and check["drop"] <= 0.01
    masks = {}
    images = sorted((shapes_dataset / "test" / "images").iterdir())[:2]
    for name, checkpoint in (("torch", trained_run), ("openvino", model)):
        out = tmp_path / f"masks-{name}"
        result = cli(
            "predict", *map(str, images), "--checkpoint", str(checkpoint), "--out", str(out)
        )
        assert result.exit_code == 0, result.stderr
        masks[name] = [np.asarray(Image.open(out / f"{image.stem}.png")) for image in images]
    for expected, actual in zip(masks["torch"], masks["openvino"], strict=True):
        assert (expected == actual).mean() > 0.999


def test_without_openvino_the_export_is_one_line_naming_the_extra(
    cli, trained_run, tmp_path, monkeypatch
):
    from segcli.inference import exported_models

    installed = exported_models._importable
    monkeypatch.setattr(
        exported_models, "_importable", lambda name: name != "openvino" and installed(name)
    )
    result = cli(
        "export",
        "--checkpoint",
        str(trained_run),
        "--format",
        "openvino",
        "--out",
        str(tmp_path / "m.xml"),
    )
    assert result.exit_code == 2
    assert 'pip install "segcli[openvino]"' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_quantize_is_refused_with_openvino(cli, trained_run):
    result = cli(
        "export", "--checkpoint", str(trained_run), "--format", "openvino", "--quantize", "int8"
    )
    assert result.exit_code == 2
    assert "--quantize applies to --format onnx, not openvino" in result.stderr
