"""`segcli profile`: counts checked against a hand count, and the command's output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn


class TinyUNet(nn.Module):
    """One level of a plain U-Net: conv, pool, conv, upsample, concatenate, conv, head."""

    size_divisor = 2

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.merge = nn.Conv2d(12, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = torch.relu(self.stem(x))
        low = torch.relu(self.down(nn.functional.max_pool2d(skip, 2)))
        merged = torch.relu(self.merge(torch.cat([skip, self.up(low)], 1)))
        return self.head(merged)


def conv_flops(c_in: int, c_out: int, kernel: int, height: int, width: int) -> int:
    """A convolution's multiply-adds, each counted as two FLOPs (bias not counted)."""
    return 2 * c_in * c_out * kernel * kernel * height * width


def test_flops_of_a_plain_unet_match_a_hand_count():
    from segcli.inference.profile import count_flops, count_parameters

    model = TinyUNet().eval()
    images = torch.zeros(1, 3, 32, 48)
    expected = (
        conv_flops(3, 4, 3, 32, 48)
        + conv_flops(4, 8, 3, 16, 24)
        + conv_flops(12, 4, 3, 32, 48)
        + conv_flops(4, 2, 1, 32, 48)
    )
    assert count_flops(model, images) == expected
    weights = 3 * 4 * 9 + 4 + 4 * 8 * 9 + 8 + 12 * 4 * 9 + 4 + 4 * 2 + 2
    assert count_parameters(model) == weights


def test_peak_activation_memory_counts_the_largest_live_tensors():
    """Two 1x1 convolutions on 8x8: the input (not counted) -> 16 channels -> 1 channel; at the
    peak the 16-channel map and the 1-channel output are alive together."""
    from segcli.inference.profile import peak_activation_bytes

    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.Conv2d(16, 1, 1)).eval()
    peak = peak_activation_bytes(model, torch.zeros(1, 3, 8, 8))
    assert peak == (16 + 1) * 8 * 8 * 4


def test_profile_measures_each_runtime_or_says_why_not():
    from segcli.inference.profile import profile_model

    result = profile_model(
        TinyUNet(), (30, 30), 3, batch=2, runs=2, runtimes=("eager", "channels_last")
    )
    assert result.input_size == (30, 30)  # already a multiple of the size divisor 2
    assert result.flops > 0 and result.parameters > 0
    for speed in result.speeds:
        assert speed.skipped is None
        assert speed.latency_ms > 0 and speed.throughput_img_s > 0


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    """The shared tiny shapes run, copied: profiling a run writes into its folder."""
    return Path(shutil.copytree(trained_run, tmp_path / trained_run.name))


def test_profile_command_prints_json_for_a_run_and_saves_it_there(cli, run):
    result = cli("profile", str(run), "--runs", "2", "--batch", "2", "--json")
    assert result.exit_code == 0, result.stderr
    profile = json.loads(result.stdout)
    assert json.loads((run / "profile.json").read_text()) == profile
    assert profile["input_size"] == [32, 32] and profile["model"] == "unet"
    assert profile["flops"] > 0 and profile["peak_activation_bytes"] > 0
    runtimes = {speed["runtime"]: speed for speed in profile["speeds"]}
    assert list(runtimes) == [
        "eager",
        "channels_last",
        "torchscript",
        "onnxruntime",
        "openvino",
    ]
    assert runtimes["eager"]["latency_ms"] > 0
    if runtimes["openvino"]["skipped"]:
        assert "segcli[openvino]" in runtimes["openvino"]["skipped"]


@pytest.mark.parametrize("size, message", [("12xx4", "not HxW"), ("0x4", "not HxW")])
def test_profile_refuses_a_size_that_is_not_hxw(cli, size, message):
    result = cli("profile", "--model", "unet", "--size", size)
    assert result.exit_code == 2
    assert message in result.stderr


def test_the_run_report_shows_the_profile_or_the_command_that_makes_it(cli, run):
    from segcli.report import write_report

    def section() -> str:
        page = write_report([run]).read_text()
        return page.split("<h3>Cost to run (segcli profile)</h3>")[1].split("<h3>")[0]

    assert f"Not profiled yet: run <code>segcli profile {run}</code>" in section()
    result = cli("profile", str(run), "--runs", "1", "--batch", "2")
    assert result.exit_code == 0, result.stderr
    assert f"saved to {run / 'profile.json'}" in "".join(result.stdout.split("\n"))  # wrapped
    profile = json.loads((run / "profile.json").read_text())
    shown = section()
    assert f"unet at 32x32: {profile['parameters']:,} parameters" in shown
    assert f"{profile['flops'] / 1e9:.3f} GFLOPs" in shown
    assert "throughput, batch 2 (img/s)" in shown
    eager = profile["speeds"][0]
    assert f"<th>eager</th><td>{eager['latency_ms']:.2f} ± " in shown
    (run / "profile.json").write_text("{")
    assert "profile.json cannot be read" in section()


def test_a_checkpoint_outside_a_run_is_profiled_without_saving(cli, run, tmp_path):
    alone = tmp_path / "alone" / "model.safetensors"
    alone.parent.mkdir()
    shutil.copy(run / "best.safetensors", alone)
    result = cli("profile", str(alone), "--runs", "1", "--batch", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(path.name for path in alone.parent.iterdir()) == ["model.safetensors"]
