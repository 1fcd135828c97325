"""Generated raw datasets, in exactly the layouts the preparers read (all under tmp_path)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from raw_images import blob, noise, rle, save


@pytest.fixture
def run_cli(monkeypatch, capsys, tmp_path):
    """Run `segcli ARGS` in-process; returns (exit code, stdout, stderr)."""
    from segcli.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["segcli", *map(str, args)])
        monkeypatch.setenv("COLUMNS", "200")
        monkeypatch.chdir(tmp_path)
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def labpics_raw(tmp_path) -> Path:
    """Simple/{Train,Test}: 3 + 1 images; one image lacks its 16_Filled mask."""
    root = tmp_path / "LabPics"
    for folder, names in (("Train", ["a", "b", "c"]), ("Test", ["d"])):
        for index, name in enumerate(names):
            base = root / "Simple" / folder
            save(base / "Image" / f"{name}.jpg", noise(24, 32, index))
            vessel = np.zeros((24, 32), np.uint8)
            vessel[4:20, 4:28] = 1
            save(base / "Semantic" / "1_Vessel" / f"{name}.png", vessel)
            if name != "b":
                filled = np.zeros((24, 32), np.uint8)
                filled[12:20, 4:28] = 1
                save(base / "Semantic" / "16_Filled" / f"{name}.png", filled)
    return root


@pytest.fixture
def isbi_png_raw(tmp_path) -> Path:
    root = tmp_path / "isbi"
    for i in range(4):
        save(root / "train" / "image" / f"{i}.png", noise(32, 32, i, 1))
        label = np.where(blob(32, 32, i), 0, 255).astype(np.uint8)
        save(root / "train" / "label" / f"{i}.png", label)
        save(root / "test" / f"{i}.png", noise(32, 32, 10 + i, 1))
    return root


@pytest.fixture
def isbi_tif_raw(tmp_path) -> Path:
    """The challenge layout: three multi-page TIFF volumes of 5 slices."""
    root = tmp_path / "isbi-tif"
    root.mkdir()

    def volume(name: str, pages: list[np.ndarray]) -> None:
        frames = [Image.fromarray(p) for p in pages]
        frames[0].save(root / name, save_all=True, append_images=frames[1:])

    volume("train-volume.tif", [noise(32, 32, i, 1) for i in range(5)])
    labels = [np.where(blob(32, 32, i), 0, 255).astype(np.uint8) for i in range(5)]
    volume("train-labels.tif", labels)
    volume("test-volume.tif", [noise(32, 32, 20 + i, 1) for i in range(5)])
    return root


@pytest.fixture
def idd_raw(tmp_path) -> Path:
    root = tmp_path / "idd" / "idd20k_lite"
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        for i in range(count):
            seq, name = str(i * 100), f"frame{i:04d}"
            save(root / "leftImg8bit" / split / seq / f"{name}_image.jpg", noise(27, 32, i))
            if split != "test":
                label = (np.arange(27 * 32).reshape(27, 32) % 7).astype(np.uint8)
                label[0, :4] = 255
                save(root / "gtFine" / split / seq / f"{name}_label.png", label)
    return root.parent


@pytest.fixture
def tgs_raw(tmp_path) -> Path:
    """10 tiles of 11x11: masks alternate 16-bit 0/65535 and 8-bit (empty ones 8-bit, as in the
    real set), train.csv with the matching run-length masks, depths.csv, 2 test images."""
    root = tmp_path / "tgs"
    rows, depths = ["id,rle_mask"], ["id,z"]
    for i in range(10):
        stem = f"{i:010x}"
        grey_as_rgb = np.repeat(noise(11, 11, i, 1)[..., None], 3, 2)
        save(root / "train" / "images" / f"{stem}.png", grey_as_rgb)
        salt = blob(11, 11, i) if i % 3 else np.zeros((11, 11), bool)
        path = root / "train" / "masks" / f"{stem}.png"
        if salt.any() and i % 2:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(salt.astype(np.uint16) * 65535).save(path)
        else:
            save(path, salt.astype(np.uint8) * 255)
        rows.append(f"{stem},{rle(salt)}")
        depths.append(f"{stem},{100 + i}")
    for i in range(2):
        save(root / "test" / "images" / f"f{i:09x}.png", noise(11, 11, 50 + i))
        depths.append(f"f{i:09x},{500 + i}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "depths.csv").write_text("\n".join(depths) + "\n")
    return root


@pytest.fixture
def nyuv2_raw(tmp_path) -> Path:
    root = tmp_path / "nyu"
    names = {"train": ["0001", "0002", "0003"], "val": ["0004"]}
    for split, stems in names.items():
        (root / "ImageSet").mkdir(parents=True, exist_ok=True)
        (root / "ImageSet" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        for i, stem in enumerate(stems):
            save(root / "JPEGImages" / f"{stem}.jpg", noise(16, 20, i))
            ids = ((np.arange(16 * 20).reshape(16, 20) + i) % 41).astype(np.uint8)
            save(root / "Segmentation_40" / f"{stem}.png", np.repeat(ids[..., None], 3, 2))
    return root
