"""Time `segcli prepare coco` against `segcli prepare folder` on the same images (issue 19).

    python benchmarks/prepare_annotations.py [--images 1000] [--size 1024] [--polygons 30]
                                             [--workers N] [--quick]

Generates, in a temporary folder that is removed afterwards, N JPEG images of SIZE x SIZE
with about POLYGONS polygons each (5 categories), as a CVAT-style COCO export
(`annotations.json` + `images/`) and as ready index masks drawn from the same polygons
(larger first, smaller on top). Then runs both preparers through the command line, as a
user would, and prints both times, their ratio and how many pixels the two datasets agree
on. Target: `prepare coco` takes at most 1.5 times as long as `prepare folder` (exit code 1
above that). `--quick` is a few tiny images, a check that the script runs (seconds; its
times say nothing: start-up dominates).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TARGET_RATIO = 1.5
CATEGORIES = ["dent", "scratch", "crack", "glass", "lamp"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--polygons", type=int, default=30)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="8 images of 128 px, 5 polygons")
    args = parser.parse_args()
    if args.quick:
        args.images, args.size, args.polygons = 8, 128, 5
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        generate(root, args.images, args.size, args.polygons)
        print(
            f"generated {args.images} images of {args.size}x{args.size} with {args.polygons} "
            f"polygons each in {time.perf_counter() - started:.1f} s; {args.workers} workers on "
            f"{os.cpu_count()} cores"
        )
        workers = ["--workers", str(args.workers)]
        folder = run_prepare(
            ["folder", root / "coco" / "images", "--masks", root / "masks", *workers],
            root / "out-folder",
        )
        coco = run_prepare(["coco", root / "coco", *workers], root / "out-coco")
        agreement = agree(root / "out-folder", root / "out-coco")
    ratio = coco / folder
    print(f"prepare folder: {folder:.2f} s")
    print(f"prepare coco:   {coco:.2f} s")
    print(f"ratio coco/folder: {ratio:.2f} (target <= {TARGET_RATIO})")
    print(f"pixels on which the two datasets agree: {100 * agreement:.3f} %")
    if args.quick:
        return 0
    return 0 if ratio <= TARGET_RATIO else 1


def generate(root: Path, count: int, size: int, polygons: int) -> None:
    """coco/images/*.jpg, coco/annotations.json and masks/*.png from the same polygons."""
    rng = np.random.default_rng(0)
    images_dir, masks_dir = root / "coco" / "images", root / "masks"
    images_dir.mkdir(parents=True)
    masks_dir.mkdir()
    images, annotations = [], []
    for index in range(count):
        name = f"img{index:05d}"
        pixels = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        picture = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)
        picture.save(images_dir / f"{name}.jpg", quality=90)
        images.append({"id": index + 1, "file_name": f"{name}.jpg", "width": size, "height": size})
        shapes = [random_polygon(rng, size) for _ in range(polygons)]
        categories = rng.integers(1, len(CATEGORIES) + 1, polygons)
        mask = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask)
        # larger regions first, smaller on top: the default draw order of prepare coco
        for points, category in sorted(
            zip(shapes, categories, strict=True), key=lambda pair: -polygon_area(pair[0])
        ):
            draw.polygon([tuple(p) for p in points.tolist()], fill=int(category))
        mask.save(masks_dir / f"{name}.png")
        for points, category in zip(shapes, categories, strict=True):
            x, y = points[:, 0], points[:, 1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": int(category),
                    "segmentation": [points.ravel().tolist()],
                    "area": polygon_area(points),
                    "bbox": [x.min(), y.min(), x.max() - x.min(), y.max() - y.min()],
                    "iscrowd": 0,
                }
            )
    export = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(CATEGORIES)],
    }
    (root / "coco" / "annotations.json").write_text(json.dumps(export))


def random_polygon(rng: np.random.Generator, size: int) -> np.ndarray:
    """A star-shaped polygon of 6-16 points (never self-crossing), in integer pixels."""
    points = int(rng.integers(6, 17))
    radius = rng.uniform(0.02, 0.2) * size
    centre = rng.uniform(0.1 * size, 0.9 * size, 2)
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    radii = radius * rng.uniform(0.5, 1.0, points)
    xy = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
    return np.clip(np.round(xy), 0, size - 1)


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def run_prepare(arguments: list, out: Path) -> float:
    """Seconds `segcli prepare ARGS --out OUT` takes, start-up included, as a user sees it."""
    command = [sys.executable, "-m", "segcli", "prepare", *map(str, arguments), "--out", str(out)]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({finished.returncode}):\n{finished.stderr}")
    return seconds


def agree(folder_out: Path, coco_out: Path) -> float:
    """Share of pixels with the same class in both prepared datasets (splits may differ)."""
    found = {p.stem: p for p in folder_out.glob("*/masks/*.png")}
    same = total = 0
    for path in coco_out.glob("*/masks/*.png"):
        coco = np.asarray(Image.open(path))
        folder = np.asarray(Image.open(found[path.stem]))
        same += int((coco == folder).sum())
        total += coco.size
    return same / max(1, total)


if __name__ == "__main__":
    sys.exit(main())
