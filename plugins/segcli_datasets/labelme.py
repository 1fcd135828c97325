"""`labelme`: a folder (searched recursively) of labelme JSON files, one per image, as masks.

Each JSON names its image by `imagePath`, relative to the JSON; where that file is missing,
the image embedded as `imageData` is used. Shapes: polygon, rectangle, circle, line,
linestrip, point (lines and points `--line-width` pixels wide) and mask; shapes sharing a
`group_id` and label are one region. Label names become the classes (`segcli.data.class_map`);
shapes are drawn in file order, the last on top, unless `--draw-order` says otherwise.
Sub-folders named train/val/test are splits; otherwise `--val-fraction` of the images is val.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from PIL import Image

from segcli import (
    AnnotatedImage,
    DataError,
    DatasetPlan,
    Region,
    Sample,
    UsageError,
    as_points,
    circle_region,
    image_size,
    line_region,
    mask_region,
    point_region,
    polygon_region,
    read_annotated_mask,
    read_image,
    read_json,
    rectangle_region,
    union_region,
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
from .common import check_val_fraction, split_note, split_off_validation
from .folder import SPLIT_NAMES

SHAPE_TYPES = ("polygon", "rectangle", "circle", "line", "linestrip", "point", "mask")
LAYOUT_HINT = 'labelme writes one JSON per image with "shapes", "imagePath" and "imageData"'


def prepare(
    raw: Path | None,
    *,
    draw_order: Annotated[str, DRAW_ORDER_HELP] = "annotation",
    line_width: Annotated[int, "width in pixels of line and linestrip shapes, and of points"] = 3,
    classes: Annotated[Path | None, CLASSES_HELP] = None,
    others: Annotated[str, OTHERS_HELP] = "background",
    val_fraction: Annotated[float, "share of train held out for validation (seeded)"] = 0.15,
    seed: Annotated[int, "seed of the validation split"] = 0,
) -> DatasetPlan:
    """labelme JSON files (one per image): polygons, rectangles, circles, lines, points, masks."""
    raw = Path(raw)
    check_draw_order(draw_order)
    check_others(others)
    check_val_fraction(val_fraction)
    if line_width < 1:
        raise UsageError(f"--line-width must be at least 1, got {line_width}")
    files = sorted(path for path in raw.rglob("*.json") if not path.name.startswith("."))
    if not files:
        raise DataError(f"no labelme JSON files found in {raw}", hint=LAYOUT_HINT)
    documents = [_read_document(path, raw) for path in files]
    found = [(shape["label"], 1) for doc in documents for shape in doc.shapes]
    choice, class_infos = classes_for(found, classes, others)
    order = class_order(choice, draw_order)
    findings = Findings()
    samples: list[Sample] = []
    missing: list[str] = []
    embedded = 0
    for doc in documents:
        if doc.image is None and doc.image_data is None:
            missing.append(f"{doc.label}: image {doc.image_path!r} not found, none embedded")
            continue
        embedded += doc.image is None
        height, width = doc.shape()
        regions = _regions(doc, choice.ids, line_width, height, width, findings)
        mask = AnnotatedImage(doc.label, height, width, tuple(regions), draw_order, order)
        samples.append(Sample(doc.split, doc.stem, doc.image, mask, {"labelme": str(doc.path)}))
    _unique_stems(samples)
    notes = [f"read {len(documents)} labelme file(s)", *choice.notes, *findings.notes()]
    if embedded:
        notes.append(f"{embedded} image(s) taken from the imageData embedded in their JSON")
    if not any(sample.split == "val" for sample in samples):
        split_off_validation(samples, val_fraction, seed)
        notes.append(split_note(samples, val_fraction, seed))
    return DatasetPlan(
        name="labelme",
        classes=class_infos,
        samples=samples,
        read_mask=read_annotated_mask,
        # embedded images have no file to copy: every image is then decoded alike
        read_image=read_labelme_image if embedded else None,
        notes=notes,
        unpaired_masks=missing,
    )


class _Document:
    """One labelme file, checked: its image and its shapes."""

    def __init__(self, path: Path, raw: Path, data: dict[str, Any]) -> None:
        self.path = path
        relative = path.relative_to(raw)
        self.label = relative.as_posix()
        self.stem = path.stem
        self.split = (
            SPLIT_NAMES.get(relative.parts[0].lower(), "train")
            if len(relative.parts) > 1
            else "train"
        )
        self.image_path = data.get("imagePath")
        self.image_data = data.get("imageData") or None
        self.height, self.width = data.get("imageHeight"), data.get("imageWidth")
        self.shapes = data["shapes"]
        self.image = self._image_file()

    def _image_file(self) -> Path | None:
        if isinstance(self.image_path, str) and self.image_path:
            candidate = self.path.parent / self.image_path.replace("\\", "/")
            if candidate.is_file():
                return candidate
        return None

    def shape(self) -> tuple[int, int]:
        """(height, width) of the image: as the JSON says, else from the image."""
        if all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0
            for v in (self.height, self.width)
        ):
            return self.height, self.width
        if self.image is not None:
            width, height = image_size(self.image)
        else:
            width, height = _embedded(self.image_data, self.label).size
        return height, width


def _read_document(path: Path, raw: Path) -> _Document:
    data = read_json(path, "labelme file")
    label = path.relative_to(raw).as_posix()
    if not (isinstance(data, dict) and isinstance(data.get("shapes"), list)):
        raise DataError(
            f'{label} is not a labelme file: no "shapes" list',
            hint=f"{LAYOUT_HINT}; move other JSON files out of the folder",
        )
    for index, shape in enumerate(data["shapes"]):
        if not (isinstance(shape, dict) and isinstance(shape.get("label"), str)):
            raise DataError(f"{label}#shape {index} has no label", hint=LAYOUT_HINT)
    image_data = data.get("imageData")
    if image_data is not None and not isinstance(image_data, str):
        raise DataError(f"{label}: imageData must be base64 text", hint=LAYOUT_HINT)
    return _Document(path, raw, data)


def _regions(
    doc: _Document,
    ids: dict[str, int],
    line_width: int,
    height: int,
    width: int,
    findings: Findings,
) -> list[Region]:
    regions: list[Region] = []
    groups: dict[tuple[str, Any], list[Region]] = {}
    for order, shape in enumerate(doc.shapes):
        where = f"{doc.label}#shape {order}"
        kind = shape.get("shape_type") or "polygon"
        if kind not in SHAPE_TYPES:
            findings.add(f"shape(s) of a type segcli does not draw ({kind!r}): left out", where)
            continue
        region = _region(
            kind, shape, ids[shape["label"]], order, where, line_width, height, width, findings
        )
        if region is None:
            continue
        group = shape.get("group_id")
        if group is None:
            regions.append(region)
        else:
            groups.setdefault((shape["label"], group), []).append(region)
    for (label, group), parts in groups.items():
        source = f"{doc.label}#group {group} ({label})"
        regions.append(union_region(parts, source) if len(parts) > 1 else parts[0])
    return regions


def _region(
    kind: str,
    shape: dict[str, Any],
    class_id: int,
    order: int,
    where: str,
    line_width: int,
    height: int,
    width: int,
    findings: Findings,
) -> Region | None:
    points = shape.get("points")
    if kind == "polygon":
        kept = drawable_polygons([as_points(points, where)], where, height, width, findings)
        return polygon_region(kept, class_id, order, where, height, width) if kept else None
    if kind == "rectangle":
        return rectangle_region(points, class_id, order, where, height, width)
    if kind == "circle":
        return circle_region(points, class_id, order, where, height, width)
    if kind in ("line", "linestrip"):
        return line_region(points, class_id, order, where, height, width, line_width)
    if kind == "point":
        return point_region(points, class_id, order, where, height, width, line_width)
    (left, top), _ = as_points(points, where, count=2)
    bitmap = np.asarray(_embedded(shape.get("mask"), where, what="mask").convert("L"))
    return mask_region(bitmap, round(left), round(top), class_id, order, where)


def _embedded(data: Any, where: str, what: str = "imageData") -> Image.Image:
    if not isinstance(data, str) or not data:
        raise DataError(f"{where}: no {what} to decode", hint=LAYOUT_HINT)
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=False))) as image:
            image.load()
            return image
    except (binascii.Error, OSError, ValueError) as exc:
        raise DataError(f"{where}: {what} is not a base64 image: {exc}", hint=LAYOUT_HINT) from None


def read_labelme_image(sample: Sample) -> np.ndarray:
    """`read_image` of a plan with embedded images: the image file, else its imageData."""
    if sample.image is not None:
        return read_image(sample.image, channels=3)
    path = Path(sample.meta["labelme"])
    image = _embedded(read_json(path, "labelme file").get("imageData"), str(path))
    return np.asarray(image.convert("RGB"))


def _unique_stems(samples: list[Sample]) -> None:
    """Where two files of a split share a name, their folders join the stem."""
    seen: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        seen.setdefault((sample.split, sample.stem), []).append(sample)
    for alike in seen.values():
        if len(alike) > 1:
            for sample in alike:
                json_path = Path(sample.meta["labelme"]).with_suffix("")
                sample.stem = "_".join(json_path.parts[-3:])
