"""A checkpoint of an untrained 4-class U-Net, for benchmarks that time prediction."""

from __future__ import annotations

from pathlib import Path

import torch

from segcli.building import build_model
from segcli.config import build_config
from segcli.data.format import ClassInfo, DatasetInfo
from segcli.palette import default_palette
from segcli.runs.checkpoint_file import save_checkpoint
from segcli.training.fit import checkpoint_meta


def synthetic_checkpoint(path: Path, *, size: int, base_width: int, depth: int) -> None:
    torch.manual_seed(0)
    config = build_config(
        {
            "model": {"name": "unet", "base_width": base_width, "depth": depth},
            "input": {"size": [size, size]},
        }
    )
    classes = [ClassInfo(i, f"class{i}", c) for i, c in enumerate(default_palette(4))]
    info = DatasetInfo(name="synthetic", classes=classes, splits={}, image_channels=3)
    model = build_model(config, info).eval()
    save_checkpoint(path, model.state_dict(), checkpoint_meta(config, info, model))
