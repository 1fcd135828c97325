"""What the annotation preparers (coco, labelme) share: their class, overlap and polygon
options, and the notes they collect while reading an export."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segcli import (
    DRAW_ORDERS,
    OTHERS,
    POLYGON_PROBLEMS,
    ClassChoice,
    ClassInfo,
    UsageError,
    choose_classes,
    polygon_problem,
    shortened,
)

from .common import make_classes

CLASSES_HELP = (
    'JSON {"names": ["background", ...], "map": {"source name": "class"}}: picks, orders, '
    "renames and merges the classes"
)
OTHERS_HELP = "where source names that --classes leaves out go: background or ignore"
DRAW_ORDER_HELP = (
    "which region is drawn on top where regions overlap: area (larger first, smaller on top), "
    "annotation (file order, the last on top) or classes (the order of --classes, the last on "
    "top)"
)


def check_draw_order(draw_order: str) -> None:
    if draw_order not in DRAW_ORDERS:
        raise UsageError(
            f"--draw-order {draw_order!r} is not one of {', '.join(DRAW_ORDERS)}",
            hint="area draws larger regions first and smaller ones on top",
        )


def check_others(others: str) -> None:
    if others not in OTHERS:
        raise UsageError(
            f"--others {others!r} is not one of {', '.join(OTHERS)}",
            hint="--others background sends names --classes leaves out to background, "
            "--others ignore makes them ignored (255)",
        )


def classes_for(
    found: Sequence[tuple[str, int]], classes_file: Path | None, others: str
) -> tuple[ClassChoice, list[ClassInfo]]:
    """The classes of the prepared dataset for the (label name, regions) an export uses."""
    choice = choose_classes(found, classes_file=classes_file, others=others)
    return choice, make_classes(list(choice.names))


def class_order(choice: ClassChoice, draw_order: str) -> tuple[int, ...] | None:
    """For `--draw-order classes`: class ids in the order their names are listed."""
    return tuple(range(len(choice.names))) if draw_order == "classes" else None


class Findings:
    """What reading an export met that is worth a note: kind -> where it was met."""

    def __init__(self) -> None:
        self.where: dict[str, list[str]] = {}

    def add(self, kind: str, source: str) -> None:
        self.where.setdefault(kind, []).append(source)

    def notes(self) -> list[str]:
        return [
            f"{len(sources)} {kind}: {shortened(sources)}" for kind, sources in self.where.items()
        ]


def drawable_polygons(
    polygons: Sequence[np.ndarray], source: str, height: int, width: int, findings: Findings
) -> list[np.ndarray]:
    """The polygons that can be drawn: degenerate ones are skipped and those reaching outside
    the image kept (drawing clips them), each with a note naming `source`."""
    kept = []
    for points in polygons:
        problem = polygon_problem(points, height, width)
        if problem == POLYGON_PROBLEMS[2]:
            findings.add(f"polygon(s) with {problem}: clipped", source)
        elif problem is not None:
            findings.add(f"polygon(s) with {problem}: skipped", source)
            continue
        kept.append(points)
    return kept
