"""segcli-smp as a user gets it: its wheel built, installed beside segcli, used by the CLI.

The wheel of plugins/segcli-smp is built from a copy of its source (no network, no build
isolation: the installed setuptools builds it) and installed with ``pip install --target``
into a folder that the segcli subprocesses get on ``PYTHONPATH``, so segcli finds the
plugin by its entry point exactly as after ``pip install segcli-smp``. Then: ``segcli list
models``, a two-step training of ``smp-unet`` on a tiny shapes dataset, ``predict``,
``export --format onnx``, and ``predict`` again without the plugin. Skipped when
segmentation_models_pytorch, pip or setuptools is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from wheel_building import can_build_plugin_wheels

from segcli.testing.tools import require_module, skip_missing_tool

require_module("segmentation_models_pytorch")
require_module("onnxruntime")
if not can_build_plugin_wheels():
    skip_missing_tool("building the wheel needs pip and setuptools>=77")

pytestmark = pytest.mark.slow

PLUGIN_SOURCE = Path(__file__).resolve().parents[2] / "plugins" / "segcli-smp"
SMP_MODELS = {
    "smp-unet",
    "smp-unetplusplus",
    "smp-fpn",
    "smp-pspnet",
    "smp-deeplabv3plus",
    "smp-linknet",
    "smp-manet",
    "smp-pan",
    "smp-upernet",
    "smp-segformer",
}


def run(*args: str, cwd: Path, site: Path | None, check: bool = True):
    """`python -m ARGS` in `cwd`, with `site` (the installed wheel) on the import path."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if check:
        assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder segcli-smp's wheel was installed into."""
    work = tmp_path_factory.mktemp("segcli-smp")
    source = work / "source"
    shutil.copytree(
        PLUGIN_SOURCE,
        source,
        ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"),
    )
    wheels, site = work / "wheels", work / "site"
    pip = ("pip", "--disable-pip-version-check", "--no-input", "--no-cache-dir")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), ".", cwd=source,
        site=None)  # fmt: skip
    [wheel] = wheels.glob("segcli_smp-*.whl")
    run(*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=work,
        site=None)  # fmt: skip
    return site


def test_list_models_shows_the_smp_models_from_their_distribution(installed, tmp_path):
    listed = json.loads(
        run("segcli", "list", "models", "--json", cwd=tmp_path, site=installed).stdout
    )
    smp = {entry["name"]: entry for entry in listed if entry["name"].startswith("smp-")}
    assert set(smp) == SMP_MODELS
    assert {entry["distribution"] for entry in smp.values()} == {"segcli-smp"}
    assert all("encoder=" in entry["description"] for entry in smp.values())
    without = run("segcli", "list", "models", "--json", cwd=tmp_path, site=None).stdout
    assert "smp-unet" not in without  # the wheel, not the checkout, provides them


def test_train_predict_export_through_the_installed_plugin(installed, tmp_path):
    def segcli(*args: str, site: Path | None = installed, check: bool = True):
        return run("segcli", *args, cwd=tmp_path, site=site, check=check)

    segcli("prepare", "shapes", "--train", "8", "--val", "4", "--size", "32", "--workers", "1")
    segcli(
        "train", "--data", "data/shapes", "--set", "model.name=smp-unet",
        "--set", "model.encoder=resnet18", "--set", "loss.name=ce+smp-dice",
        "--set", "train.batch_size=4",
        "--set", "train.workers=0", "--max-steps", "2", "--runs-dir", "runs",
    )  # fmt: skip
    [run_dir] = (tmp_path / "runs").iterdir()
    assert (run_dir / "best.safetensors").is_file()
    assert "segcli-smp" in (run_dir / "environment.json").read_text()

    segcli("predict", "data/shapes/val/images", "--out", "masks")
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert len(masks) == 4

    exported = segcli("export", "--format", "onnx")
    assert (run_dir / "best.onnx").is_file()
    assert "parity" in exported.stdout

    missing = segcli("predict", "data/shapes/val/images", "--out", "again", site=None, check=False)
    assert missing.returncode == 4
    assert "install segcli-smp" in missing.stderr
