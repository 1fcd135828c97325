"""From the label names an export uses to the classes of a prepared dataset.

Labelling tools export whatever their project held: categories no annotation uses (Roboflow's
parent category), the same name twice, names in another language. `choose_classes` turns the
names an export uses (with how often) into dense class ids, 0 being background, and says what
it decided. A `--classes FILE` picks, orders, renames and merges::

    {"names": ["background", "dent", "scratch"], "map": {"gocuk": "dent"}}

`names[0]` is the background class; `map` sends source names to one of `names`; a source name
that is listed in `names` keeps its class; every other source name goes to background or to
ignore (`--others background|ignore`). Every annotation preparer (COCO, labelme, VOC, ...)
uses this one function, so a user's classes file means the same thing for each of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcli.data.format import IGNORE_INDEX
from segcli.errors import UsageError, shortened
from segcli.json_files import parse_json

__all__ = ["OTHERS", "ClassChoice", "choose_classes", "read_classes_file"]

# Where the source names a classes file leaves out go (--others).
OTHERS = ("background", "ignore")
CLASSES_FILE_HINT = (
    'write {"names": ["background", "dent", "scratch"], "map": {"gocuk": "dent"}}: '
    "names[0] is the background, map sends source names to a listed name"
)


@dataclass(frozen=True)
class ClassChoice:
    """The classes of the prepared dataset and where each source name goes.

    `names[i]` is the name of class id i (0 = background). `ids` maps each source name in use
    to its class id, or to IGNORE_INDEX (255); names no annotation uses are not in it.
    `notes` say, one line each, what was dropped, merged, renamed or sent to background.
    """

    names: tuple[str, ...]
    ids: dict[str, int]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ClassesFile:
    """A parsed `--classes` file: the class names in order and the renaming map."""

    path: Path
    names: tuple[str, ...]
    map: dict[str, str]


def choose_classes(
    found: Sequence[tuple[str, int]],
    *,
    classes_file: Path | None = None,
    others: str = "background",
    background: str = "background",
) -> ClassChoice:
    """The classes for source names `found` ((name, annotation count) in the export's order;
    a name may appear more than once). Without `classes_file`: used names in first-seen order
    get ids 1, 2, ... (`background` itself is 0). See the module docstring for the file."""
    if others not in OTHERS:
        raise UsageError(
            f"--others {others!r} is not one of {', '.join(OTHERS)}",
            hint="--others background sends names the classes file leaves out to background, "
            "--others ignore makes them ignored (255)",
        )
    counts, notes = _merged_counts(found)
    used = {name: count for name, count in counts.items() if count > 0}
    for name, count in counts.items():
        if count == 0:
            notes.append(f"category {name!r} used by no annotation: dropped")
    if classes_file is None:
        names = (background, *(name for name in used if name != background))
        ids = {name: names.index(name) for name in used}
        if background in used:
            notes.append(f"{background!r} is the background class (0)")
        return ClassChoice(names, ids, tuple(notes))
    chosen = read_classes_file(classes_file)
    ids, choice_notes = _ids_from_file(chosen, used, others)
    return ClassChoice(chosen.names, ids, tuple(notes + choice_notes))


def _merged_counts(found: Sequence[tuple[str, int]]) -> tuple[dict[str, int], list[str]]:
    """Annotation count per distinct name, first-seen order; a note per name listed twice."""
    counts: dict[str, int] = {}
    listed: dict[str, int] = {}
    for name, count in found:
        counts[name] = counts.get(name, 0) + int(count)
        listed[name] = listed.get(name, 0) + 1
    notes = [
        f"{name!r} listed {'twice' if times == 2 else f'{times} times'}: merged"
        for name, times in listed.items()
        if times > 1
    ]
    return counts, notes


def _ids_from_file(
    chosen: ClassesFile, used: dict[str, int], others: str
) -> tuple[dict[str, int], list[str]]:
    path = chosen.path.name
    position = {name: index for index, name in enumerate(chosen.names)}
    ids: dict[str, int] = {}
    sources: dict[str, list[str]] = {}  # class name -> the source names that went into it
    left_out: dict[str, int] = {}
    for name in used:
        target = chosen.map.get(name, name)
        if target in position:
            ids[name] = position[target]
            sources.setdefault(target, []).append(name)
        else:
            ids[name] = 0 if others == "background" else IGNORE_INDEX
            left_out[name] = used[name]
    notes = []
    for target, names in sources.items():
        renamed = [name for name in names if name != target]
        if len(names) > 1:
            notes.append(f"{' and '.join(map(repr, names))} merged into {target!r} ({path})")
        elif renamed:
            notes.append(f"{renamed[0]!r} renamed {target!r} ({path})")
    for name in chosen.names[1:]:
        if name not in sources:
            notes.append(f"class {name!r} of {path} is used by no annotation")
    unmatched = [name for name in chosen.map if name not in used]
    if unmatched:
        notes.append(
            f"{path} maps {shortened([repr(n) for n in unmatched])}, which no annotation uses"
        )
    if left_out:
        where = "background (0)" if others == "background" else "ignore (255, --others ignore)"
        notes.append(
            f"{len(left_out)} name(s) not in {path} ({sum(left_out.values())} annotations) -> "
            f"{where}: {shortened([repr(n) for n in left_out])}"
        )
    return ids, notes


def read_classes_file(path: Path) -> ClassesFile:
    """Parse and check a `--classes` file; anything wrong is a UsageError naming the file."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"cannot read classes file {path}: {exc.strerror or exc}", hint="check --classes"
        ) from None
    data = parse_json(content, f"classes file {path}", UsageError, CLASSES_FILE_HINT)
    if not isinstance(data, dict):
        raise UsageError(f"classes file {path} must hold a JSON object", hint=CLASSES_FILE_HINT)
    unknown = sorted(set(data) - {"names", "map"})
    if unknown:
        raise UsageError(
            f"classes file {path} has unknown key(s) {', '.join(map(repr, unknown))}",
            hint=CLASSES_FILE_HINT,
        )
    names = data.get("names")
    if not _is_list_of_names(names) or len(names) < 2:
        raise UsageError(
            f'classes file {path}: "names" must list the background and at least one class, '
            f"as strings",
            hint=CLASSES_FILE_HINT,
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(
            f'classes file {path} lists {", ".join(map(repr, repeated))} more than once in "names"',
            hint='list each class once; send several source names to one class with "map"',
        )
    mapping = data.get("map", {})
    if not isinstance(mapping, dict) or not _is_list_of_names(list(mapping.values())):
        raise UsageError(
            f'classes file {path}: "map" must be an object of source name -> class name',
            hint=CLASSES_FILE_HINT,
        )
    repeated_keys = _repeated_map_keys(content)
    if repeated_keys:
        raise UsageError(
            f"classes file {path} maps {', '.join(map(repr, repeated_keys))} more than once",
            hint="give each source name one target",
        )
    strays = {source: target for source, target in mapping.items() if target not in names}
    if strays:
        source, target = next(iter(strays.items()))
        raise UsageError(
            f'classes file {path} maps {source!r} to {target!r}, which is not in "names"',
            hint=f"map to one of {', '.join(map(repr, names))}, or add {target!r} to names",
        )
    return ClassesFile(path, tuple(names), dict(mapping))


def _is_list_of_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _repeated_map_keys(content: bytes) -> list[str]:
    """Source names that "map" holds twice (JSON keeps only the last one, silently)."""
    repeated: list[str] = []

    def collect(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        repeated.extend(sorted({key for key in keys if keys.count(key) > 1}))
        return dict(pairs)

    json.loads(content, object_pairs_hook=collect)
    return repeated
