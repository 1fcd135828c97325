"""`folder`: pairing, splits, every mask encoding, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from raw_images import blob, folder_pairs, noise, save
from segcli_datasets.folder import prepare

from segcli.data.format import read_dataset_info
from segcli.data.prepare import build_dataset
from segcli.errors import DataError


def labels(seed: int, classes: int = 3, shape=(12, 16)) -> np.ndarray:
    return (np.random.default_rng(seed).integers(0, classes, shape)).astype(np.uint8)


def build(tmp_path: Path, images: Path, masks: Path, **options):
    options.setdefault("val_fraction", 0.0)
    plan = prepare(images, masks=masks, **options)
    return plan, build_dataset(plan, tmp_path / "out")


def written(tmp_path: Path, stem: str = "img0") -> np.ndarray:
    return np.asarray(Image.open(tmp_path / "out" / "train" / "masks" / f"{stem}.png"))


def classes_json(tmp_path: Path, colours: list[tuple[int, int, int]]) -> Path:
    path = tmp_path / "classes.json"
    names = ["background", "road", "car", "tree"]
    entries = [{"name": n, "color": list(c)} for n, c in zip(names, colours, strict=False)]
    path.write_text(json.dumps(entries))
    return path


def test_index_png(tmp_path):
    images, masks = folder_pairs(tmp_path, [labels(i) for i in range(3)])
    plan, report = build(tmp_path, images, masks)
    assert plan.notes[0] == "mask encoding detected: index (looked at all 3 masks)"
    assert [c.name for c in plan.classes] == ["class_0", "class_1", "class_2"]
    assert np.array_equal(written(tmp_path), labels(0))
    assert report.pairs == {"train": 3}


@pytest.mark.parametrize("levels", [(0, 255), (0, 1)])
def test_binary_png(tmp_path, levels):
    masks = [np.where(blob(12, 16, i), levels[1], levels[0]).astype(np.uint8) for i in range(2)]
    images, mask_dir = folder_pairs(tmp_path, masks)
    plan, report = build(tmp_path, images, mask_dir)
    assert "detected: binary" in plan.notes[0]
    low, high = levels
    assert f"binary masks: {low} -> 0 (background), {high} -> 1 (foreground)" in plan.notes
    assert np.array_equal(written(tmp_path), blob(12, 16, 0).astype(np.uint8))
    assert report.raw_values["train"] == list(levels)


def test_two_levels_other_than_0_and_full_scale_are_ambiguous(tmp_path):
    masks = [np.where(blob(12, 16, i), 253, 3).astype(np.uint8) for i in range(2)]
    images, mask_dir = folder_pairs(tmp_path, masks)
    with pytest.raises(DataError, match="two values 3 and 253: a binary mask"):
        prepare(images, masks=mask_dir)
    plan, _ = build(tmp_path, images, mask_dir, encoding="binary")
    assert "binary masks: 3 -> 0 (background), 253 -> 1 (foreground)" in plan.notes
    assert np.array_equal(written(tmp_path), blob(12, 16, 0).astype(np.uint8))


def test_palette_png_uses_indices_not_colours(tmp_path):
    palette = [0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * (256 * 3 - 9)
    masks = []
    for i in range(2):
        image = Image.fromarray(labels(i))
        image.putpalette(palette)
        masks.append(image)
    images, mask_dir = folder_pairs(tmp_path, masks)
    plan, _ = build(tmp_path, images, mask_dir)
    assert "detected: palette" in plan.notes[0]
    assert [c.color for c in plan.classes] == [(0, 0, 0), (200, 10, 10), (10, 200, 10)]
    assert np.array_equal(written(tmp_path), labels(0))


def colour_masks(count: int, colours) -> list[np.ndarray]:
    return [np.array(colours, np.uint8)[labels(i, len(colours))] for i in range(count)]


COLOURS = [(0, 0, 0), (128, 64, 128), (0, 0, 142)]


def test_rgb_needs_classes_and_lists_the_colours(tmp_path):
    images, mask_dir = folder_pairs(tmp_path, colour_masks(2, COLOURS))
    with pytest.raises(DataError, match=r"colour-coded \(3 colours: .*\(128, 64, 128\)"):
        prepare(images, masks=mask_dir)
    plan, _ = build(tmp_path, images, mask_dir, classes=classes_json(tmp_path, COLOURS))
    assert "detected: rgb" in plan.notes[0]
    assert [c.name for c in plan.classes] == ["background", "road", "car"]
    assert np.array_equal(written(tmp_path), labels(0))


def test_rgb_colour_not_in_class_map(tmp_path):
    images, mask_dir = folder_pairs(tmp_path, colour_masks(2, COLOURS))
    classes = classes_json(tmp_path, COLOURS[:2])
    with pytest.raises(DataError, match=r"not in the class map: \(0, 0, 142\)"):
        build(tmp_path, images, mask_dir, classes=classes)
    assert not (tmp_path / "out").exists()
    _, report = build(tmp_path, images, mask_dir, classes=classes, ignore_stray_values=True)
    assert report.class_share["train"]["(ignore)"] > 0.2


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_two_levels_are_binary(tmp_path, suffix):
    masks = [Image.fromarray(blob(12, 16, i).astype(np.uint16) * 65535) for i in range(2)]
    images, mask_dir = folder_pairs(tmp_path, masks, suffix=suffix)
    plan, report = build(tmp_path, images, mask_dir)
    assert "detected: binary" in plan.notes[0] and report.raw_values["train"] == [0, 65535]
    assert np.array_equal(written(tmp_path), blob(12, 16, 0).astype(np.uint8))


def test_sixteen_bit_index(tmp_path):
    masks = [Image.fromarray(labels(i, 4).astype(np.uint16)) for i in range(2)]
    images, mask_dir = folder_pairs(tmp_path, masks)
    plan, _ = build(tmp_path, images, mask_dir)
    assert "detected: index" in plan.notes[0] and "16-bit masks" in " ".join(plan.notes)
    assert np.array_equal(written(tmp_path), labels(0, 4))


def test_grey_picture_is_not_taken_for_labels(tmp_path):
    images, mask_dir = folder_pairs(tmp_path, [noise(12, 16, i, 1) for i in range(2)])
    with pytest.raises(DataError, match="do not look like class ids"):
        prepare(images, masks=mask_dir)


def test_jpeg_binary_is_thresholded_and_reported_lossy(tmp_path):
    masks = [np.where(blob(32, 32, i), 255, 0).astype(np.uint8) for i in range(2)]
    images, mask_dir = folder_pairs(tmp_path, masks, suffix=".jpg", quality=70)
    plan, report = build(tmp_path, images, mask_dir)
    assert "detected: binary" in plan.notes[0]
    lossy = [note for note in plan.notes if "JPEG, which is lossy" in note]
    assert lossy and "thresholded at 128" in lossy[0]
    assert len(report.raw_values["train"]) > 2  # JPEG noise was there before mapping
    agreement = (written(tmp_path) == blob(32, 32, 0)).mean()
    assert agreement > 0.97


def test_jpeg_colour_is_snapped_to_nearest_class_colour(tmp_path):
    colours = [(0, 0, 0), (220, 30, 30), (30, 30, 220)]
    masks = [
        np.array(colours, np.uint8)[np.repeat(np.repeat(labels(i), 4, 0), 4, 1)] for i in range(2)
    ]
    images, mask_dir = folder_pairs(tmp_path, masks, suffix=".jpg", quality=90)
    plan, _ = build(tmp_path, images, mask_dir, classes=classes_json(tmp_path, colours))
    assert any("snapped to the nearest class colour" in note for note in plan.notes)
    expected = np.repeat(np.repeat(labels(0), 4, 0), 4, 1)
    assert (written(tmp_path) == expected).mean() > 0.9


def test_mask_suffix_and_key(tmp_path):
    images, mask_dir = folder_pairs(tmp_path, [labels(i) for i in range(2)], mask_suffix="_mask")
    plan, _ = build(tmp_path, images, mask_dir, mask_suffix="_mask")
    assert sorted(s.stem for s in plan.samples) == ["img0", "img1"]
    plan = prepare(images, masks=mask_dir, key=r"img(\d+)", val_fraction=0.0)
    assert sorted(s.stem for s in plan.samples) == ["0", "1"]


def test_split_dirs(tmp_path):
    for split, count in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(count):
            save(tmp_path / "images" / split / f"{split}{i}.png", noise(12, 16, i))
            if split != "test":
                save(tmp_path / "masks" / split / f"{split}{i}.png", labels(i))
    plan = prepare(tmp_path / "images", masks=tmp_path / "masks", split_dirs=True)
    report = build_dataset(plan, tmp_path / "out")
    assert report.pairs == {"train": 3, "val": 1} and report.unlabelled == {"test": 2}


def test_seeded_val_fraction(tmp_path):
    images, mask_dir = folder_pairs(tmp_path, [labels(i) for i in range(10)])
    plan = prepare(images, masks=mask_dir, val_fraction=0.2, seed=3)
    again = prepare(images, masks=mask_dir, val_fraction=0.2, seed=3)
    val = [s.stem for s in plan.samples if s.split == "val"]
    assert len(val) == 2 and val == [s.stem for s in again.samples if s.split == "val"]


def test_source_paths_are_recorded_and_images_copied_losslessly(tmp_path):
    images, mask_dir = folder_pairs(tmp_path, [labels(i) for i in range(2)])
    build(tmp_path, images, mask_dir)
    record = json.loads((tmp_path / "out" / "samples.jsonl").read_text().splitlines()[0])
    assert record["source_image"] == str(images / "img0.png")
    assert record["source_mask"] == str(mask_dir / "img0.png")
    assert (tmp_path / "out" / record["image"]).read_bytes() == (images / "img0.png").read_bytes()
    assert read_dataset_info(tmp_path / "out").splits == {"train": 2}


# Each failure: exit code 3, the error as one line, no output folder left behind.
def corrupt_image(tmp_path, images, masks):
    (images / "img1.png").write_bytes(b"not a png")


def mismatched_size(tmp_path, images, masks):
    save(masks / "img1.png", labels(1, shape=(10, 16)))


def unpaired_mask(tmp_path, images, masks):
    save(masks / "orphan.png", labels(5))


def unpaired_image(tmp_path, images, masks):
    save(images / "lonely.png", noise(12, 16, 9))


def ambiguous(tmp_path, images, masks):
    for i in range(3):
        save(masks / f"img{i}.png", np.where(blob(12, 16, i), 7, 2).astype(np.uint8))


def stray_value(tmp_path, images, masks):
    mask = labels(1)
    mask[0, 0] = 9
    save(masks / "img1.png", mask)
    return ["--classes", classes_json(tmp_path, COLOURS)]


def colour_not_in_map(tmp_path, images, masks):
    for i, mask in enumerate(colour_masks(3, COLOURS)):
        save(masks / f"img{i}.png", mask)
    return ["--classes", classes_json(tmp_path, COLOURS[:2])]


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (corrupt_image, "cannot read image"),
        (mismatched_size, "mask is 16x10 but its image"),
        (unpaired_mask, "0 images without masks and 1 masks without images"),
        (unpaired_image, "1 images without masks"),
        (ambiguous, "two values 2 and 7"),
        (stray_value, "values [9] are not in the class map"),
        (colour_not_in_map, "colours that are not in the class map: (0, 0, 142)"),
    ],
)
def test_cli_failures(run_cli, tmp_path, break_it, message):
    images, masks = folder_pairs(tmp_path, [labels(i) for i in range(3)])
    extra = break_it(tmp_path, images, masks) or []
    out = tmp_path / "prepared"
    code, _, err = run_cli("prepare", "folder", images, "--masks", masks, "--out", out, *extra)
    assert code == 3, err
    error_line = err.strip().splitlines()[-1]
    assert error_line.startswith("error:") and message in error_line
    assert not out.exists()
    assert not list(tmp_path.glob(".prepared*"))


def test_cli_usage_errors(run_cli, tmp_path):
    images, masks = folder_pairs(tmp_path, [labels(i) for i in range(2)])
    code, _, err = run_cli("prepare", "folder", images)
    assert code == 2 and "--masks" in err
    code, _, err = run_cli("prepare", "folder", images, "--masks", masks, "--encoding", "hsv")
    assert code == 2 and "unknown --encoding 'hsv'" in err
    code, _, err = run_cli("prepare", "folder", images, "--masks", masks, "--val-fraction", "1")
    assert code == 2 and "--val-fraction" in err
