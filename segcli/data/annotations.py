"""From annotations (polygons, RLE, labelme shapes) to an index mask: the one rasteriser.

Every annotation preparer (COCO, labelme, ...) only reads its format into `Region`s; this
module turns them into the class-id mask of one image. Regions overlap (a window inside a
facade), and a semantic mask holds one class per pixel, so the order in which they are drawn
decides, on purpose (`DRAW_ORDERS`):

- `area`: larger regions first, smaller ones on top (a window in a facade stays a window);
- `annotation`: the order of the source file (the last one drawn ends on top);
- `classes`: the order of the classes (a later class on top), larger first within a class.

`rasterise` also counts the contested pixels: per (class drawn under, class on top), the
pixels that a region of the first class covers but that show the second.

Polygons and COCO RLE are decoded with pycocotools, the COCO reference: a polygon covers the
pixels its area covers (a 10x10 square, 100 pixels), as COCO's own `area` and its evaluation
count them. Circles, lines and points are drawn as the polygons they cover, the same way.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from segcli.data.plan import DrawnMask, Sample
from segcli.errors import DataError

__all__ = [
    "DRAW_ORDERS",
    "POLYGON_PROBLEMS",
    "AnnotatedImage",
    "Region",
    "as_points",
    "circle_region",
    "line_region",
    "mask_region",
    "point_region",
    "polygon_area",
    "polygon_problem",
    "polygon_region",
    "read_annotated_mask",
    "rasterise",
    "rectangle_region",
    "rle_region",
    "sort_regions",
    "union_region",
]

DRAW_ORDERS = ("area", "annotation", "classes")
POLYGON_PROBLEMS = ("fewer than 3 points", "zero area", "points outside the image")
# Corners of the polygon a circle is drawn as: finer than a pixel for any radius below ~400.
_CIRCLE_CORNERS = 128


@dataclass(frozen=True)
class Region:
    """One annotated region of one image, ready to draw.

    `draw(mask, value)` paints `value` into an HxW uint8 mask in place (module-level
    functions and partials only: regions travel to the prepare worker processes).
    """

    class_id: int  # after choose_classes (IGNORE_INDEX for ignore regions)
    area: float  # pixels, for the draw order
    order: int  # position in the source (annotation order)
    draw: Callable[[np.ndarray, int], None]
    source: str  # "file.json#annotation 17", for messages


def rasterise(
    height: int,
    width: int,
    regions: Sequence[Region],
    draw_order: str,
    class_order: Sequence[int] | None = None,
) -> tuple[np.ndarray, Counter]:
    """The HxW class-id mask (0 where no region is) and the contested pixels per
    (class drawn under, class on top)."""
    mask = np.zeros((height, width), np.uint8)
    ordered = sort_regions(regions, draw_order, class_order)
    for region in ordered:
        region.draw(mask, region.class_id)
    return mask, _contested(mask, ordered)


def sort_regions(
    regions: Sequence[Region], draw_order: str, class_order: Sequence[int] | None = None
) -> list[Region]:
    """`regions` in the order they are drawn (the last one ends on top)."""
    if draw_order == "area":
        return sorted(regions, key=lambda r: (-r.area, r.order))
    if draw_order == "annotation":
        return sorted(regions, key=lambda r: r.order)
    if draw_order == "classes":
        # Ignore regions (and any class the order leaves out) go on top: unknown stays unknown.
        rank = {class_id: i for i, class_id in enumerate(class_order or ())}
        return sorted(regions, key=lambda r: (rank.get(r.class_id, len(rank)), -r.area, r.order))
    raise ValueError(f"unknown draw order {draw_order!r}")


def _contested(mask: np.ndarray, regions: Sequence[Region]) -> Counter:
    """Pixels per (loser, winner): covered by a region of class `loser`, showing `winner`.
    A pixel counts once per pair, however many regions of the loser's class cover it."""
    contested: Counter = Counter()
    classes = dict.fromkeys(r.class_id for r in regions)
    if len(classes) < 2:
        return contested
    for loser in classes:
        covered = np.zeros_like(mask)
        for region in regions:
            if region.class_id == loser:
                region.draw(covered, 1)
        shown = mask[(covered == 1) & (mask != loser)]
        if shown.size:
            for winner, pixels in enumerate(np.bincount(shown, minlength=256)):
                if pixels:
                    contested[(loser, winner)] += int(pixels)
    return contested


@dataclass(frozen=True, repr=False)
class AnnotatedImage:
    """A sample's mask source for `read_annotated_mask`: the image's size and regions, and
    how to draw them. Its repr (kept in samples.jsonl) names where the annotations came from."""

    source: str
    height: int
    width: int
    regions: tuple[Region, ...]
    draw_order: str
    class_order: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return self.source


def read_annotated_mask(sample: Sample) -> DrawnMask:
    """A `DatasetPlan.read_mask` for samples whose `mask` is an `AnnotatedImage`."""
    image: AnnotatedImage = sample.mask
    mask, contested = rasterise(
        image.height, image.width, image.regions, image.draw_order, image.class_order
    )
    return DrawnMask(mask, dict(contested))


# Region makers. Each checks its input: a malformed one is a DataError naming `source`.


def polygon_region(
    polygons: Sequence[Sequence[float]] | Sequence[np.ndarray],
    class_id: int,
    order: int,
    source: str,
    height: int,
    width: int,
) -> Region:
    """A region of one or more polygons (their union), each flat `[x1, y1, x2, y2, ...]` or
    (N, 2), in pixel coordinates (0, 0 is the top-left corner of the first pixel).

    The caller drops degenerate polygons first (see `polygon_problem`)."""
    flat = [as_points(polygon, source).ravel().tolist() for polygon in polygons]
    area = float(sum(polygon_area(np.asarray(p).reshape(-1, 2)) for p in flat))
    return Region(class_id, area, order, partial(_draw_polygons, flat, height, width), source)


def polygon_problem(points: np.ndarray, height: int, width: int) -> str | None:
    """What is wrong with a polygon ((N, 2) finite points): None, or one of
    `POLYGON_PROBLEMS`: "fewer than 3 points" and "zero area" cannot be drawn; "points outside
    the image" are clipped when drawn."""
    if len(points) < 3:
        return POLYGON_PROBLEMS[0]
    if polygon_area(points) == 0:
        return POLYGON_PROBLEMS[1]
    xs, ys = points[:, 0], points[:, 1]
    if xs.min() < 0 or ys.min() < 0 or xs.max() > width or ys.max() > height:
        return POLYGON_PROBLEMS[2]
    return None


def polygon_area(points: np.ndarray) -> float:
    """The shoelace area of an (N, 2) polygon."""
    x, y = points[:, 0], points[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def _draw_polygons(flat: list[list[float]], height: int, width: int, mask, value) -> None:
    """Decode the polygons inside their bounding box only: a whole-image decode per region
    made `prepare coco` of 1024x1024 images with 30 polygons 1.85x as slow as `prepare
    folder`. Shifting by whole pixels leaves pycocotools' rasterisation unchanged."""
    from pycocotools import mask as coco_mask

    points = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in flat])
    left = max(0, math.floor(points[:, 0].min()))
    top = max(0, math.floor(points[:, 1].min()))
    right = min(width, math.ceil(points[:, 0].max()))
    bottom = min(height, math.ceil(points[:, 1].max()))
    if right <= left or bottom <= top:
        return  # wholly outside the image
    shift = np.array([left, top], np.float64)
    shifted = [(np.asarray(p, np.float64).reshape(-1, 2) - shift).ravel().tolist() for p in flat]
    rles = coco_mask.frPyObjects(shifted, bottom - top, right - left)
    window = mask[top:bottom, left:right]
    window[_decoded(coco_mask.merge(rles))] = value


def rle_region(
    rle: dict[str, Any], class_id: int, order: int, source: str, height: int, width: int
) -> Region:
    """A COCO run-length region: `{"size": [h, w], "counts": [..]}` (uncompressed) or with
    `counts` a string (compressed), column by column as COCO stores them."""
    size = rle.get("size")
    counts = rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise DataError(f"{source}: RLE size {size!r} is not [height, width]")
    if list(size) != [height, width]:
        raise DataError(
            f"{source}: RLE size {size[0]}x{size[1]} (height x width) differs from its image's "
            f"{height}x{width}"
        )
    if isinstance(counts, list):
        if not all(_is_int(v) and v >= 0 for v in counts):
            raise DataError(f"{source}: RLE counts must be whole numbers of at least 0")
        if sum(counts) != height * width:
            raise DataError(
                f"{source}: RLE counts add up to {sum(counts)} pixels, its image has "
                f"{height * width}"
            )
        area = float(sum(counts[1::2]))
        encoded = _compressed(counts, height, width)
    elif isinstance(counts, str):
        encoded = {"size": [height, width], "counts": counts.encode()}
        area = _rle_area(encoded, source)
    else:
        raise DataError(f"{source}: RLE counts must be a list of numbers or a string")
    return Region(class_id, area, order, partial(_draw_rle, encoded), source)


def _compressed(counts: list[int], height: int, width: int) -> dict[str, Any]:
    from pycocotools import mask as coco_mask

    return coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)


def _rle_area(encoded: dict[str, Any], source: str) -> float:
    from pycocotools import mask as coco_mask

    height, width = encoded["size"]
    # pycocotools reads a malformed string without complaint: check the runs' total here.
    total = _decoded_length(encoded["counts"])
    if total != height * width:
        raise DataError(
            f"{source}: compressed RLE counts add up to {total} pixels, its image has "
            f"{height * width}"
        )
    return float(coco_mask.area(encoded))


def _decoded_length(counts: bytes) -> int:
    """The sum of the runs in a compressed COCO RLE string (its decoder, without the mask)."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                return -1
            char = counts[position] - 48
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            position += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return -1
        runs.append(value)
    return sum(runs)


def _draw_rle(encoded: dict[str, Any], mask, value) -> None:
    mask[_decoded(encoded)] = value


def _decoded(encoded: dict[str, Any]) -> np.ndarray:
    """The HxW boolean mask of a compressed RLE."""
    from pycocotools import mask as coco_mask

    with warnings.catch_warnings():
        # pycocotools 2.0.x asks NumPy 2 for an array in a way it deprecates (harmless)
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(encoded).astype(bool)


def rectangle_region(
    corners: Sequence[Sequence[float]],
    class_id: int,
    order: int,
    source: str,
    height: int,
    width: int,
) -> Region:
    """A rectangle from two opposite corners, drawn as the polygon it is."""
    (x1, y1), (x2, y2) = as_points(corners, source, count=2)
    polygon = [x1, y1, x2, y1, x2, y2, x1, y2]
    return polygon_region([polygon], class_id, order, source, height, width)


def circle_region(
    centre_and_rim: Sequence[Sequence[float]],
    class_id: int,
    order: int,
    source: str,
    height: int,
    width: int,
) -> Region:
    """A disc from its centre and a point on its rim (labelme's two points)."""
    (cx, cy), (rx, ry) = as_points(centre_and_rim, source, count=2)
    radius = math.hypot(rx - cx, ry - cy)
    region = polygon_region([_disc(cx, cy, radius)], class_id, order, source, height, width)
    return Region(class_id, math.pi * radius**2, order, region.draw, source)


def line_region(
    points: Sequence[Sequence[float]],
    class_id: int,
    order: int,
    source: str,
    height: int,
    width: int,
    line_width: float,
) -> Region:
    """An open line through `points`, `line_width` pixels wide with round ends and joints,
    drawn as the polygons it covers (so its pixels are counted as a polygon's are)."""
    corners = as_points(points, source)
    half = line_width / 2
    parts = [_disc(x, y, half) for x, y in corners]
    for (x0, y0), (x1, y1) in zip(corners[:-1], corners[1:], strict=True):
        length = math.hypot(x1 - x0, y1 - y0)
        if length == 0:
            continue
        nx, ny = (y0 - y1) / length * half, (x1 - x0) / length * half
        parts.append(
            np.array(
                [[x0 + nx, y0 + ny], [x1 + nx, y1 + ny], [x1 - nx, y1 - ny], [x0 - nx, y0 - ny]]
            )
        )
    region = polygon_region(parts, class_id, order, source, height, width)
    length = float(np.linalg.norm(np.diff(corners, axis=0), axis=1).sum())
    area = length * line_width + math.pi * half**2
    return Region(class_id, area, order, region.draw, source)


def point_region(
    point: Sequence[Sequence[float]],
    class_id: int,
    order: int,
    source: str,
    height: int,
    width: int,
    line_width: float,
) -> Region:
    """A dot `line_width` pixels across."""
    (x, y), *_ = as_points(point, source)
    return line_region([[x, y]], class_id, order, source, height, width, line_width)


def _disc(cx: float, cy: float, radius: float) -> np.ndarray:
    """A circle as a polygon of `_CIRCLE_CORNERS` corners."""
    angles = np.linspace(0, 2 * np.pi, _CIRCLE_CORNERS, endpoint=False)
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def mask_region(
    pixels: np.ndarray, left: int, top: int, class_id: int, order: int, source: str
) -> Region:
    """A bitmap region (labelme's `mask` shape): `pixels` (non-zero = inside) placed with its
    top-left corner at (left, top); the part outside the image is cut off."""
    inside = np.asarray(pixels) != 0
    if inside.ndim != 2:
        raise DataError(f"{source}: mask has shape {inside.shape}, expected a 2-D bitmap")
    draw = partial(_draw_bitmap, inside, int(left), int(top))
    return Region(class_id, float(inside.sum()), order, draw, source)


def union_region(parts: Sequence[Region], source: str) -> Region:
    """One region of several (labelme shapes of one group): drawn together, at the place of
    the first, with their areas added up."""
    first = parts[0]
    draw = partial(_draw_all, tuple(part.draw for part in parts))
    return Region(first.class_id, sum(p.area for p in parts), first.order, draw, source)


def _draw_all(draws: tuple[Callable[[np.ndarray, int], None], ...], mask, value) -> None:
    for draw in draws:
        draw(mask, value)


def _draw_bitmap(inside: np.ndarray, left: int, top: int, mask, value) -> None:
    height, width = mask.shape
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + inside.shape[1]), min(height, top + inside.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    part = inside[y0 - top : y1 - top, x0 - left : x1 - left]
    mask[y0:y1, x0:x1][part] = value


def as_points(value: Any, source: str, count: int | None = None) -> np.ndarray:
    """`value` as an (N, 2) float array of finite points; anything else is a DataError."""
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{source}: points must be numbers") from None
    if points.ndim == 1 and points.size % 2 == 0:
        points = points.reshape(-1, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise DataError(f"{source}: points must be x, y pairs")
    if not np.isfinite(points).all():
        raise DataError(f"{source}: a point is not a finite number (NaN or infinity)")
    if count is not None and len(points) != count:
        raise DataError(f"{source}: {len(points)} points given, {count} expected")
    return points


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
