"""Fixtures for prediction, export and visualisation: checkpoints and image folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def native_checkpoint(trained_run, tmp_path_factory) -> Path:
    """The trained run's best checkpoint, recorded as trained at native size (no resize)."""
    from segcli.runs.checkpoint_file import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(trained_run / "best.safetensors")
    meta = dict(checkpoint.meta)
    meta["config"] = {**meta["config"], "input": {**meta["config"]["input"], "size": []}}
    meta["preprocessing"] = {**meta["preprocessing"], "size": None}
    path = tmp_path_factory.mktemp("native") / "native.safetensors"
    save_checkpoint(path, checkpoint.model_state, meta)
    return path


@pytest.fixture
def image_tree(tmp_path, shapes_dataset) -> Path:
    """Nested folders with PNG, JPEG, 16-bit TIFF, a grey image, a rotated JPEG, a corrupt file."""
    sources = sorted((shapes_dataset / "val" / "images").iterdir())
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(sources[0], root / "a.png")
    Image.open(sources[1]).convert("RGB").resize((50, 37)).save(root / "sub" / "b.jpg")
    grey16 = np.asarray(Image.open(sources[2]).convert("L"), np.uint16) * 257
    Image.fromarray(grey16).save(root / "sub" / "deeper" / "c16.tif")
    Image.open(sources[3]).convert("L").resize((40, 64)).save(root / "sub" / "grey.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed: 30 wide x 20 high is shown 20 x 30
    Image.open(sources[4]).convert("RGB").resize((30, 20)).save(root / "rotated.jpg", exif=exif)
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "notes.txt").write_text("not an image")
    return root
