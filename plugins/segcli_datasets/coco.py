"""`coco`: COCO instance annotations (polygons, RLE) from any labelling tool, as masks.

Layouts read (docs/annotations.md):

- Roboflow: one folder per split (`train/ valid/ test/`), each with `_annotations.coco.json`
  and its images; `valid` becomes `val`, `test` stays a split;
- CVAT, Label Studio: one JSON (`annotations/instances_default.json`, `result.json`) and an
  images folder;
- COCO itself: `annotations/instances_<split>2017.json` with `<split>2017/` image folders;
- any JSON named with `--annotations FILE` (repeat it for several).

Images are found by `file_name` next to their JSON, in an images folder, or anywhere below
RAW by a unique name. Regions become one class each (`segcli.data.class_map`), crowd regions
ignore; overlaps are drawn by `--draw-order` (`segcli.data.annotations`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import numpy as np

from segcli import (
    IGNORE_INDEX,
    AnnotatedImage,
    DataError,
    DatasetPlan,
    Region,
    Sample,
    UsageError,
    as_points,
    image_size,
    polygon_region,
    read_annotated_mask,
    read_json,
    rle_region,
    shortened,
)

from .annotated import (
    CLASSES_HELP,
    DRAW_ORDER_HELP,
    OTHERS_HELP,
    Findings,
    check_draw_order,
    check_others,
    class_order,
    classes_for,
    drawable_polygons,
)
from .common import check_val_fraction, held_out, image_files
from .folder import SPLIT_NAMES

CROWD_CHOICES = ("ignore", "class", "skip")
# Annotation files found without --annotations: Roboflow's, COCO's and CVAT's names.
KNOWN_NAMES = ("_annotations.coco.json", "instances_*.json")
LAYOUT_HINT = (
    "pass the export's folder (Roboflow: train/ valid/ test/ with _annotations.coco.json; "
    "COCO and CVAT: annotations/instances_*.json), or name the JSON with --annotations FILE"
)
DEFAULT_VAL_FRACTION = 0.15


def prepare(
    raw: Path | None,
    *,
    annotations: Annotated[
        list[Path] | None,
        "a COCO instance JSON to read (repeat for several); default: every "
        "_annotations.coco.json and instances_*.json below RAW",
    ] = None,
    images: Annotated[
        Path | None, "folder holding the images, when they are not next to their JSON or in RAW"
    ] = None,
    crowd: Annotated[
        str, "iscrowd regions: ignore (255, not trained on), class (their category) or skip"
    ] = "ignore",
    draw_order: Annotated[str, DRAW_ORDER_HELP] = "area",
    classes: Annotated[Path | None, CLASSES_HELP] = None,
    others: Annotated[str, OTHERS_HELP] = "background",
    val_fraction: Annotated[
        float | None,
        "share held out for validation: given, the export's train and valid images are "
        "pooled and split anew (test kept); left out, the export's valid split is val, or "
        f"{DEFAULT_VAL_FRACTION} of train when it has none",
    ] = None,
    seed: Annotated[int, "seed of the validation split"] = 0,
) -> DatasetPlan:
    """COCO instance annotations (Roboflow, CVAT, Label Studio, COCO): polygons and RLE."""
    raw = Path(raw)
    if crowd not in CROWD_CHOICES:
        raise UsageError(
            f"--crowd {crowd!r} is not one of {', '.join(CROWD_CHOICES)}",
            hint="ignore leaves crowd regions out of training, class trains them as their "
            "category, skip draws nothing for them",
        )
    check_draw_order(draw_order)
    check_others(others)
    if val_fraction is not None:
        check_val_fraction(val_fraction)
    if images is not None and not Path(images).is_dir():
        raise DataError(f"images folder {images} does not exist", hint="check --images")
    files = [Path(f) for f in annotations] if annotations else _find_annotation_files(raw)
    exports = [_read_export(path, raw) for path in files]
    findings = Findings()
    finder = _ImageFinder(raw, Path(images) if images is not None else None)
    choice, class_infos = classes_for(_category_use(exports, crowd), classes, others)
    order = class_order(choice, draw_order)
    samples: list[Sample] = []
    missing: list[str] = []
    for export in exports:
        ids = {cat_id: choice.ids.get(name) for cat_id, name in export.categories.items()}
        for image in export.images:
            where = f"{export.label}#image {image['id']}"
            path = finder.find(image["file_name"], export.path, where)
            if path is None:
                missing.append(f"{where} ({image['file_name']}): image file not found")
                continue
            height, width = _image_shape(image, path, where)
            regions = _regions(export, image, ids, crowd, height, width, findings)
            if not export.by_image.get(image["id"]):
                findings.add("image(s) without annotations kept as background", where)
            mask = AnnotatedImage(where, height, width, tuple(regions), draw_order, order)
            samples.append(Sample(export.split, "", path, mask, {"image_id": image["id"]}))
    _name_samples(samples)
    notes = [f"read {', '.join(export.label for export in exports)}", *choice.notes]
    notes += findings.notes()
    notes.append(_split_samples(samples, val_fraction, seed))
    if crowd != "class" and any(export.crowd_count for export in exports):
        crowds = sum(export.crowd_count for export in exports)
        notes.append(f"{crowds} crowd region(s): {'ignore (255)' if crowd == 'ignore' else crowd}")
    return DatasetPlan(
        name="coco",
        classes=class_infos,
        samples=samples,
        read_mask=read_annotated_mask,
        notes=notes,
        unpaired_masks=missing,
    )


class _Export:
    """One COCO file, checked: its images, categories and annotations per image."""

    def __init__(self, path: Path, label: str, split: str, data: dict[str, Any]) -> None:
        self.path, self.label, self.split = path, label, split
        self.images: list[dict[str, Any]] = data["images"]
        self.categories: dict[Any, str] = {}
        self.by_image: dict[Any, list[dict[str, Any]]] = {}
        self.crowd_count = 0
        self._read(data)

    def where(self, annotation: dict[str, Any]) -> str:
        return f"{self.label}#annotation {annotation.get('id', '?')}"

    def _read(self, data: dict[str, Any]) -> None:
        for category in data["categories"]:
            if not (isinstance(category, dict) and isinstance(category.get("name"), str)):
                raise DataError(
                    f"{self.label}: category {str(category)[:60]} has no name", hint=LAYOUT_HINT
                )
            if not _is_id(category.get("id")):
                raise DataError(f"{self.label}: category {category['name']!r} has no id")
            if category.get("id") in self.categories:
                raise DataError(f"{self.label}: category id {category.get('id')!r} is listed twice")
            self.categories[category.get("id")] = category["name"]
        image_ids = set()
        for image in self.images:
            if not (isinstance(image, dict) and isinstance(image.get("file_name"), str)):
                raise DataError(
                    f"{self.label}: image {str(image)[:60]} has no file_name", hint=LAYOUT_HINT
                )
            if not _is_id(image.get("id")):
                raise DataError(f"{self.label}: image {image['file_name']!r} has no id")
            if image.get("id") in image_ids:
                raise DataError(f"{self.label}: image id {image.get('id')!r} is listed twice")
            image_ids.add(image.get("id"))
        for annotation in data["annotations"]:
            if not isinstance(annotation, dict):
                raise DataError(f"{self.label}: annotation {str(annotation)[:60]} is no object")
            if not _is_id(annotation.get("image_id")) or annotation["image_id"] not in image_ids:
                raise DataError(
                    f"{self.where(annotation)} points at image {annotation.get('image_id')!r}, "
                    "which its images do not list",
                    hint="fix or remove that annotation",
                )
            category = annotation.get("category_id")
            if not _is_id(category) or category not in self.categories:
                raise DataError(
                    f"{self.where(annotation)} has category {annotation.get('category_id')!r}, "
                    "which its categories do not list",
                    hint="fix or remove that annotation",
                )
            self.crowd_count += bool(annotation.get("iscrowd"))
            self.by_image.setdefault(annotation["image_id"], []).append(annotation)


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _find_annotation_files(raw: Path) -> list[Path]:
    named = sorted({path for pattern in KNOWN_NAMES for path in raw.rglob(pattern)})
    if named:
        return named
    # Label Studio's result.json and other tools' own names: any COCO-shaped JSON near the top
    guessed = [
        path
        for folder in (raw, raw / "annotations")
        if folder.is_dir()
        for path in sorted(folder.glob("*.json"))
        if _looks_like_coco(path)
    ]
    if not guessed:
        raise DataError(f"no COCO annotation file found in {raw}", hint=LAYOUT_HINT)
    return guessed


def _looks_like_coco(path: Path) -> bool:
    try:
        data = read_json(path)
    except DataError:
        return False
    return isinstance(data, dict) and {"images", "annotations"} <= data.keys()


def _read_export(path: Path, raw: Path) -> _Export:
    label = _label(path, raw)
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist", hint="check --annotations")
    data = read_json(path, "annotation file")
    missing = [
        key
        for key in ("images", "annotations", "categories")
        if not (isinstance(data, dict) and isinstance(data.get(key), list))
    ]
    if missing:
        raise DataError(
            f"{label} is not a COCO instance file: no {' or '.join(map(repr, missing))} list",
            hint=LAYOUT_HINT,
        )
    return _Export(path, label, _split_of(path), data)


def _label(path: Path, raw: Path) -> str:
    """The file's name in messages: relative to RAW where it is inside."""
    try:
        return path.resolve().relative_to(raw.resolve()).as_posix()
    except ValueError:
        return str(path)


def _split_of(path: Path) -> str:
    """Roboflow's folder (`valid/_annotations.coco.json`), COCO's file name
    (`instances_val2017.json`), else train."""
    folder = SPLIT_NAMES.get(path.parent.name.lower())
    if folder is not None:
        return folder
    named = re.fullmatch(r"instances_([a-z]+)\d*", path.stem.lower())
    return SPLIT_NAMES.get(named.group(1), "train") if named else "train"


def _category_use(exports: list[_Export], crowd: str) -> list[tuple[str, int]]:
    """(name, regions) per category, in the export's order. A category that several files
    list alike (Roboflow repeats them per split) is one category; a name listed under two ids
    is two, and `choose_classes` merges them with a note."""
    counts: dict[tuple[Any, str], int] = {}
    for export in exports:
        for key in export.categories.items():
            counts.setdefault(key, 0)
        for listed in export.by_image.values():
            for annotation in listed:
                if annotation.get("iscrowd") and crowd != "class":
                    continue
                category = annotation["category_id"]
                counts[(category, export.categories[category])] += 1
    return [(name, count) for (_, name), count in counts.items()]


class _ImageFinder:
    """Finds an image by its `file_name`: next to the JSON, in an images folder, else by a
    unique name anywhere below RAW (or --images)."""

    def __init__(self, raw: Path, images: Path | None) -> None:
        self.raw, self.images = raw, images
        self._by_name: dict[str, list[Path]] | None = None

    def find(self, file_name: str, json_path: Path, where: str) -> Path | None:
        relative = PurePosixPath(file_name.replace("\\", "/"))
        folders = [json_path.parent, json_path.parent / "images"]
        # COCO: annotations/instances_val2017.json -> val2017/
        folders.append(json_path.parent.parent / json_path.stem.removeprefix("instances_"))
        folders += [self.raw, self.raw / "images", json_path.parent.parent / "images"]
        if self.images is not None:
            folders.insert(0, self.images)
        for folder in dict.fromkeys(folders):
            for candidate in (folder / relative, folder / relative.name):
                if candidate.is_file():
                    return candidate
        found = self._index().get(relative.name, [])
        if len(found) > 1:
            near = [path for path in found if path.is_relative_to(json_path.parent)]
            if len(near) != 1:
                raise DataError(
                    f"{where}: {len(found)} images are named {relative.name!r}: "
                    f"{shortened([str(p) for p in found])}",
                    hint="keep one of them, or name the images folder with --images",
                )
            found = near
        return found[0] if found else None

    def _index(self) -> dict[str, list[Path]]:
        if self._by_name is None:
            self._by_name = {}
            for root in dict.fromkeys(r for r in (self.images, self.raw) if r is not None):
                for path in image_files(root, recursive=True):
                    self._by_name.setdefault(path.name, []).append(path)
        return self._by_name


def _image_shape(image: dict[str, Any], path: Path, where: str) -> tuple[int, int]:
    height, width = image.get("height"), image.get("width")
    if _positive_int(height) and _positive_int(width):
        return height, width
    if height is not None or width is not None:
        raise DataError(f"{where}: height {height!r} and width {width!r} must be whole numbers")
    width, height = image_size(path)  # CVAT and Label Studio write them; others may not
    return height, width


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _regions(
    export: _Export,
    image: dict[str, Any],
    ids: dict[Any, int | None],
    crowd: str,
    height: int,
    width: int,
    findings: Findings,
) -> list[Region]:
    regions = []
    for order, annotation in enumerate(export.by_image.get(image["id"], [])):
        where = export.where(annotation)
        is_crowd = bool(annotation.get("iscrowd"))
        if is_crowd and crowd == "skip":
            continue
        class_id = ids[annotation["category_id"]]
        if is_crowd and crowd == "ignore":
            class_id = IGNORE_INDEX
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, dict):
            regions.append(rle_region(segmentation, class_id, order, where, height, width))
            continue
        if not isinstance(segmentation, list) or not segmentation:
            findings.add("annotation(s) without a segmentation (boxes only?): left out", where)
            continue
        polygons = [_polygon(part, where) for part in segmentation]
        kept = drawable_polygons(polygons, where, height, width, findings)
        if kept:
            regions.append(polygon_region(kept, class_id, order, where, height, width))
    return regions


def _polygon(part: Any, where: str) -> np.ndarray:
    if not isinstance(part, list) or len(part) % 2 or not all(_is_number(v) for v in part):
        raise DataError(
            f"{where}: a polygon must be a flat list of x, y numbers, got {str(part)[:60]}",
            hint="fix or remove that annotation",
        )
    return as_points(part, where)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _name_samples(samples: list[Sample]) -> None:
    """Stems from the file names; where two images of a split share one, their folders too."""
    for sample in samples:
        sample.stem = sample.image.stem
    seen: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        seen.setdefault((sample.split, sample.stem), []).append(sample)
    for alike in seen.values():
        if len(alike) > 1:
            for sample in alike:
                parts = sample.image.with_suffix("").parts[-3:]
                sample.stem = "_".join(parts)


def _split_samples(samples: list[Sample], val_fraction: float | None, seed: int) -> str:
    """Keep the export's splits, or pool train and val and split them anew; the note."""
    splits = {sample.split for sample in samples}
    if val_fraction is None and ("val" in splits or "train" not in splits):
        counts = _counts(samples)
        return (
            "splits of the export: "
            + counts
            + ("" if "train" in splits else " (no train split: pass --val-fraction to make one)")
        )
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    pooled = [s for s in samples if s.split in ("train", "val")]
    chosen = held_out((s.stem for s in pooled), fraction, seed)
    if len({s.stem for s in pooled}) != len(pooled):
        raise DataError(
            "train and val of the export share image names, so they cannot be pooled",
            hint="leave out --val-fraction to keep the export's own splits",
        )
    for sample in pooled:
        sample.split = "val" if sample.stem in chosen else "train"
    return f"validation split: {len(chosen)} of {len(pooled)} images (--val-fraction " + (
        f"{fraction}, seed {seed}); " + _counts(samples)
    )


def _counts(samples: Iterable[Sample]) -> str:
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample.split] = counts.get(sample.split, 0) + 1
    return ", ".join(f"{split} {count}" for split, count in sorted(counts.items()))
