"""Mask encodings: reading label values from the many ways people store masks, and telling
which way a folder of masks uses.

Encodings (see docs/datasets.md, "My labels look wrong"):

- ``index``: single-channel 8- or 16-bit, each value is a class id (255 = ignore);
- ``binary``: any two levels (0/1, 0/255, 0/65535, 3/253 ...), the lower -> 0, the higher -> 1,
  decided for each mask by its own levels (grey values or palette indices);
- ``palette``: palette ("P" mode) PNG/GIF, the palette *indices* are the class ids;
- ``rgb``: colour-coded masks, colours -> ids through a class list with colours;
- JPEG masks (any of the above saved lossily): grey ones are thresholded, colour ones snapped
  to the nearest class colour; always reported as lossy.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segcli import IGNORE_INDEX, ClassInfo, DataError, UsageError, open_image, read_json

from .common import distinct_colors

ENCODINGS = ("auto", "index", "binary", "palette", "rgb")
JPEG_SUFFIXES = (".jpg", ".jpeg")
# Channel spread up to which a JPEG mask saved as RGB still counts as grey (JPEG chroma noise).
_JPEG_GREY_SPREAD = 24
# Without a class list, more distinct grey values than this are a picture, not class ids.
_MAX_GUESSED_CLASSES = 64
_SURVEYED_MASKS = 64


@dataclass(frozen=True)
class ClassSpec:
    """One entry of a user's classes.json."""

    id: int
    name: str
    color: tuple[int, int, int] | None = None


def load_classes_json(path: Path) -> list[ClassSpec]:
    """Read ``[{"name": ..., "color": [r, g, b]}, ...]`` (optionally ``"id"``, or wrapped in
    ``{"classes": [...]}``); ids default to the position in the list."""
    example = '[{"name": "background", "color": [0, 0, 0]}, ...]'
    hint = f"check --classes: it takes a JSON file like {example}"
    data = read_json(Path(path), "class list", UsageError, hint)
    entries = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path} holds no class list", hint=f"write {example}")
    classes = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise UsageError(f"{path}: class {position} has no name", hint=f"write {example}")
        color = entry.get("color")
        if color is not None:
            if not (
                isinstance(color, list | tuple)
                and len(color) == 3
                and all(isinstance(v, int) and 0 <= v <= 255 for v in color)
            ):
                raise UsageError(
                    f"{path}: class {entry['name']!r} has colour {color!r}",
                    hint="colours are [r, g, b] with integers 0..255",
                )
            color = tuple(color)
        classes.append(ClassSpec(int(entry.get("id", position)), entry["name"], color))
    ids = [c.id for c in classes]
    if sorted(ids) != list(range(len(ids))):
        raise UsageError(f"{path}: class ids {ids} are not 0..{len(ids) - 1}, each once")
    colors = [c.color for c in classes if c.color is not None]
    if len(set(colors)) != len(colors):
        raise UsageError(f"{path}: two classes share a colour", hint="give each class its own")
    return sorted(classes, key=lambda c: c.id)


def class_infos(specs: list[ClassSpec]) -> list[ClassInfo]:
    defaults = distinct_colors(len(specs))
    return [ClassInfo(s.id, s.name, s.color or defaults[s.id]) for s in specs]


def load_mask(path: Path) -> tuple[np.ndarray, str]:
    """The stored values of a mask (palette indices for palette images) and its PIL mode."""
    image = open_image(path)
    mode = image.mode
    if mode in ("F", "I;16S", "I;32F"):
        raise DataError(
            f"mask {path} holds floating-point or signed values (mode {mode})",
            hint="save masks as 8- or 16-bit integer PNG",
        )
    if mode == "1":
        return np.asarray(image, dtype=np.uint8), mode
    if mode in ("LA", "PA"):
        image = image.getchannel(0)
    elif mode not in ("L", "P", "RGB", "I", "I;16", "I;16B", "I;16L"):
        image = image.convert("RGB")
    return np.asarray(image), mode


def single_channel(array: np.ndarray, path: Path) -> np.ndarray:
    """A 2-D label array; grey stored as RGB is accepted, real colours are refused."""
    if array.ndim == 2:
        return array
    rgb = array[:, :, :3]
    if (rgb == rgb[:, :, :1]).all():
        return rgb[:, :, 0]
    raise DataError(
        f"mask {path} is colour-coded (RGB), not a single-channel label map",
        hint="convert it to class ids, or describe the colours in a classes.json",
    )


def read_label_values(path: Path) -> np.ndarray:
    """The raw label values of a single-channel mask file (8/16-bit, palette indices kept)."""
    array, _ = load_mask(path)
    return single_channel(array, path)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def unpack_rgb(code: int) -> tuple[int, int, int]:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def describe_colors(codes: Counter, limit: int = 8) -> str:
    shown = ", ".join(f"{unpack_rgb(c)} x{n}" for c, n in codes.most_common(limit))
    more = len(codes) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def decode_colors(
    rgb: np.ndarray,
    color_ids: tuple[tuple[tuple[int, int, int], int], ...],
    path: Path,
    *,
    snap: bool = False,
    stray_to_ignore: bool = False,
) -> np.ndarray:
    """Class ids of an (H, W, 3) colour mask: exact lookup, or nearest class colour if `snap`."""
    codes = pack_rgb(rgb[:, :, :3])
    unique, inverse = np.unique(codes, return_inverse=True)
    if snap:
        table = np.array([c for c, _ in color_ids], dtype=np.int32)
        found = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], 1)
        distance = ((found[:, None, :].astype(np.int32) - table[None]) ** 2).sum(-1)
        ids = np.array([i for _, i in color_ids], dtype=np.int64)[distance.argmin(1)]
    else:
        lookup = {int(pack_rgb(np.array(c))): i for c, i in color_ids}
        ids = np.array([lookup.get(int(c), -1) for c in unique], dtype=np.int64)
        if (ids < 0).any():
            if not stray_to_ignore:
                counts = np.bincount(inverse.ravel(), minlength=len(unique))
                strays = Counter({int(unique[k]): int(counts[k]) for k in np.flatnonzero(ids < 0)})
                raise DataError(
                    f"mask {path} has colours that are not in the class map: "
                    f"{describe_colors(strays, 4)}",
                    hint="add them to the class list, or pass --ignore-stray-values to ignore them",
                )
            ids[ids < 0] = IGNORE_INDEX
    return ids.astype(np.uint8)[inverse.reshape(codes.shape)]


@dataclass(frozen=True)
class MaskEncoding:
    """How to turn one mask file into raw label values; picklable for the worker processes.

    `levels` (binary only) are the folder's background and foreground values, those the value
    map sends to 0 and 1: a mask whose own two levels differ (palette indices 0/1 among grey
    0/255 masks) is mapped onto them, its lower level as background.
    """

    kind: str
    color_ids: tuple[tuple[tuple[int, int, int], int], ...] = ()
    stray_to_ignore: bool = False
    levels: tuple[int, int] = (0, 1)

    def decode(self, path: Path) -> np.ndarray:
        array, mode = load_mask(path)
        lossy = Path(path).suffix.lower() in JPEG_SUFFIXES
        if self.kind == "rgb":
            rgb = array if array.ndim == 3 else np.repeat(array[:, :, None], 3, axis=2)
            if rgb.dtype != np.uint8:
                raise DataError(f"mask {path} is {rgb.dtype}, colour masks must be 8-bit")
            return decode_colors(
                rgb, self.color_ids, path, snap=lossy, stray_to_ignore=self.stray_to_ignore
            )
        if self.kind == "palette" and mode != "P":
            raise DataError(
                f"mask {path} is mode {mode}, but the other masks are palette images",
                hint="save every mask the same way (or pass --encoding index)",
            )
        if lossy and array.ndim == 3:
            return array[:, :, :3].mean(axis=2).round().astype(np.uint8)
        values = single_channel(array, path)
        if self.kind == "binary" and not lossy:
            return self._onto_levels(values, path)
        return values

    def _onto_levels(self, values: np.ndarray, path: Path) -> np.ndarray:
        """This mask's own levels (grey values or palette indices) as the folder's levels."""
        background, foreground = self.levels
        found = np.unique(values).tolist()
        if set(found) <= {background, foreground}:
            return values
        if len(found) > 2:
            shown = ", ".join(map(str, found[:6])) + (", ..." if len(found) > 6 else "")
            raise DataError(
                f"mask {path} holds {len(found)} values ({shown}), not the two levels of a "
                f"binary mask",
                hint="fix that mask, or pass --encoding index if the values are class ids",
            )
        levels_type = np.min_scalar_type(max(self.levels))
        if len(found) == 2:
            return np.where(values == found[1], foreground, background).astype(levels_type)
        if found[0] == 0:
            return np.full(values.shape, background, levels_type)
        if found[0] in (1, np.iinfo(values.dtype).max):
            return np.full(values.shape, foreground, levels_type)
        raise DataError(
            f"mask {path} holds the single value {found[0]}: background or foreground?",
            hint="save it as 0 (background) or as the foreground value of the other masks",
        )


def read_encoded_mask(sample, encoding: MaskEncoding) -> np.ndarray:
    """`DatasetPlan.read_mask` for masks in a detected or chosen encoding."""
    return encoding.decode(sample.mask)


@dataclass
class Survey:
    """What a look at (a sample of) the masks found, the input of the encoding decision."""

    looked_at: int = 0
    unreadable: list[str] = field(default_factory=list)
    modes: Counter = field(default_factory=Counter)
    jpeg: int = 0
    grey_values: set[int] = field(default_factory=set)
    colors: Counter = field(default_factory=Counter)
    sixteen_bit: bool = False
    palette: list[int] | None = None


def survey_masks(paths: list[Path], limit: int = _SURVEYED_MASKS) -> Survey:
    """Read up to `limit` masks spread evenly over `paths` (unreadable ones are only listed:
    the prepare pipeline reports them with the rest)."""
    survey = Survey()
    if len(paths) > limit:
        paths = [paths[round(i * (len(paths) - 1) / (limit - 1))] for i in range(limit)]
    for path in paths:
        try:
            array, mode = load_mask(path)
        except DataError:
            survey.unreadable.append(str(path))
            continue
        survey.looked_at += 1
        survey.modes[mode] += 1
        is_jpeg = path.suffix.lower() in JPEG_SUFFIXES
        survey.jpeg += is_jpeg
        survey.sixteen_bit |= array.dtype.itemsize > 1
        if mode == "P" and survey.palette is None:
            with open_image(path) as image:
                survey.palette = image.getpalette()
        if array.ndim == 3:
            rgb = array[:, :, :3].astype(np.int16)
            spread = int((rgb.max(2) - rgb.min(2)).max())
            if spread == 0 or (is_jpeg and spread <= _JPEG_GREY_SPREAD):
                array = rgb.mean(axis=2).round().astype(np.uint8)
            else:
                codes, counts = np.unique(pack_rgb(rgb), return_counts=True)
                survey.colors.update(dict(zip(codes.tolist(), counts.tolist(), strict=True)))
                continue
        survey.grey_values.update(np.unique(array).tolist())
    return survey


@dataclass
class Choice:
    """The decision: how to decode, how raw values map to ids, the classes, and why."""

    encoding: MaskEncoding
    value_map: dict[int, int] | None
    classes: list[ClassInfo]
    notes: list[str]


def choose_encoding(
    paths: list[Path],
    *,
    encoding: str = "auto",
    classes: list[ClassSpec] | None = None,
    threshold: int = 128,
    stray_to_ignore: bool = False,
) -> Choice:
    """Pick the encoding of `paths` (or check the one asked for); refuse when unsure."""
    if encoding not in ENCODINGS:
        raise UsageError(
            f"unknown --encoding {encoding!r}", hint=f"use one of {', '.join(ENCODINGS)}"
        )
    if not 0 < threshold < 256:
        raise UsageError(f"--threshold {threshold} is out of range", hint="use 1..255")
    survey = survey_masks(paths)
    if survey.looked_at == 0:
        raise DataError(
            f"none of the {len(survey.unreadable)} masks looked at could be read, e.g. "
            f"{survey.unreadable[0]}",
            hint="check that --masks points at the mask images",
        )
    looked = (
        f"looked at {survey.looked_at} of {len(paths)} masks"
        if len(paths) > survey.looked_at
        else f"looked at all {survey.looked_at} masks"
    )
    decide = _auto if encoding == "auto" else _explicit
    choice = decide(survey, encoding, classes, threshold, stray_to_ignore)
    how = "detected" if encoding == "auto" else "chosen"
    choice.notes.insert(0, f"mask encoding {how}: {choice.encoding.kind} ({looked})")
    if survey.jpeg:
        choice.notes.append(
            f"{survey.jpeg} of the masks looked at are JPEG, which is lossy: "
            + (
                "colours were snapped to the nearest class colour"
                if choice.encoding.kind == "rgb"
                else f"grey values were thresholded at {threshold} (>= {threshold} -> 1)"
            )
            + "; save masks as PNG to keep labels exact"
        )
    return choice


def _auto(survey: Survey, _, classes, threshold, stray_to_ignore) -> Choice:
    modes = set(survey.modes)
    if "P" in modes and modes != {"P"}:
        raise DataError(
            f"masks mix palette images and others ({_modes(survey)})",
            hint="save all masks the same way, or pass --encoding to say how to read them",
        )
    if modes == {"P"}:
        return _palette(survey, classes, stray_to_ignore)
    if survey.colors:
        if classes is None or any(c.color is None for c in classes):
            raise DataError(
                f"masks are colour-coded ({len(survey.colors)} colours: "
                f"{describe_colors(survey.colors)}) and no class colours were given",
                hint="pass --classes classes.json with a name and a colour per class",
            )
        return _rgb(classes, stray_to_ignore)
    values = sorted(survey.grey_values)
    if survey.jpeg:
        if classes is not None and len(classes) > 2 and all(c.color for c in classes):
            return _rgb(classes, stray_to_ignore)
        return _binary(survey, classes, threshold, stray_to_ignore, thresholded=True)
    if len(values) == 1:
        raise DataError(
            f"every mask looked at holds the single value {values[0]}: nothing to learn from",
            hint="check --masks, or pass --encoding if the other masks differ",
        )
    if len(values) == 2:
        low, high = values
        if classes is not None and high < len(classes):
            return _index(survey, classes, stray_to_ignore)
        if classes is not None and len(classes) == 2 or low == 0 and high in (1, 255, 65535):
            return _binary(survey, classes, threshold, stray_to_ignore)
        raise DataError(
            f"masks hold two values {low} and {high}: a binary mask ({low} -> 0, {high} -> 1) "
            f"or the class ids {low} and {high}?",
            hint="pass --encoding binary or --encoding index (see docs/datasets.md)",
        )
    labels = [v for v in values if v != IGNORE_INDEX]
    if classes is None and max(labels) >= _MAX_GUESSED_CLASSES:
        raise DataError(
            f"masks hold {len(values)} values from {values[0]} to {values[-1]}, which do not look "
            f"like class ids 0..K-1 (a greyscale or anti-aliased mask?)",
            hint="pass --classes classes.json, or --encoding index if they are class ids",
        )
    return _index(survey, classes, stray_to_ignore)


def _explicit(survey: Survey, encoding, classes, threshold, stray_to_ignore) -> Choice:
    if encoding == "palette":
        if set(survey.modes) != {"P"}:
            raise DataError(
                f"--encoding palette, but not all masks are palette images ({_modes(survey)})"
            )
        return _palette(survey, classes, stray_to_ignore)
    if encoding == "rgb":
        if classes is None or any(c.color is None for c in classes):
            raise UsageError("--encoding rgb needs --classes classes.json with a colour per class")
        return _rgb(classes, stray_to_ignore)
    if survey.colors:
        raise DataError(
            f"--encoding {encoding}, but the masks are colour-coded "
            f"({describe_colors(survey.colors, 4)})",
            hint="pass --encoding rgb --classes classes.json",
        )
    if encoding == "binary":
        thresholded = survey.jpeg > 0
        return _binary(survey, classes, threshold, stray_to_ignore, thresholded=thresholded)
    return _index(survey, classes, stray_to_ignore)


def _modes(survey: Survey) -> str:
    return ", ".join(f"{n} {mode}" for mode, n in survey.modes.most_common())


def _palette(survey: Survey, classes, stray_to_ignore) -> Choice:
    labels = [v for v in survey.grey_values if v != IGNORE_INDEX]
    if classes is None:
        palette = survey.palette or []
        count = max(labels, default=0) + 1
        colors = [tuple(palette[3 * i : 3 * i + 3]) for i in range(count)]
        infos = [
            ClassInfo(i, f"class_{i}", c if len(c) == 3 else distinct_colors(count)[i])
            for i, c in enumerate(colors)
        ]
    else:
        infos = class_infos(classes)
    return Choice(
        MaskEncoding("palette", stray_to_ignore=stray_to_ignore),
        None,
        infos,
        [
            "palette masks: the palette indices are the class ids (their colours are only kept "
            "for display)"
        ],
    )


def _rgb(classes: list[ClassSpec], stray_to_ignore) -> Choice:
    color_ids = tuple((c.color, c.id) for c in classes)
    return Choice(
        MaskEncoding("rgb", color_ids, stray_to_ignore),
        None,
        class_infos(classes),
        [f"colours decoded with the {len(classes)} class colours given (exact match)"],
    )


def _binary(survey, classes, threshold, stray_to_ignore, *, thresholded=False) -> Choice:
    """Binary masks: JPEG ones thresholded, every other one by its own two levels."""
    if classes is not None and len(classes) != 2:
        raise UsageError(f"binary masks have two classes, but --classes lists {len(classes)}")
    infos = class_infos(classes or [ClassSpec(0, "background"), ClassSpec(1, "foreground")])
    values = sorted(survey.grey_values)
    own_levels = (
        "binary masks: in each mask, the lower value (grey level or palette index) -> 0 "
        f"({infos[0].name}), the higher -> 1 ({infos[1].name})"
    )
    if thresholded:
        top = 65536 if survey.sixteen_bit else 256
        value_map = {v: int(v >= threshold) for v in range(top)}
        levels = (0, top - 1)
        notes = [f"binary masks: values >= {threshold} -> 1, below -> 0"]
        if survey.jpeg < survey.looked_at:
            notes.append(own_levels.replace("binary masks: in each mask", "in each PNG mask"))
    else:
        low, high = values[0], values[-1]
        levels = (low, high) if low != high else (0, high or 1)
        value_map = {levels[0]: 0, levels[1]: 1}
        if len(values) == 2:
            notes = [f"binary masks: {low} -> 0 ({infos[0].name}), {high} -> 1 ({infos[1].name})"]
        else:
            notes = [own_levels]
    encoding = MaskEncoding("binary", stray_to_ignore=stray_to_ignore, levels=levels)
    return Choice(encoding, value_map, infos, notes)


def _index(survey, classes, stray_to_ignore) -> Choice:
    labels = [v for v in survey.grey_values if v != IGNORE_INDEX]
    if classes is None:
        if max(labels, default=0) >= IGNORE_INDEX:
            raise DataError(
                f"masks hold values up to {max(labels)}, too large for class ids (0..254)",
                hint="pass --encoding binary for two-level masks, or remap the values",
            )
        classes = [ClassSpec(i, f"class_{i}") for i in range(max(labels, default=0) + 1)]
    notes = [f"index masks: values are class ids 0..{len(classes) - 1}"]
    if IGNORE_INDEX in survey.grey_values:
        notes.append("value 255 is kept as ignore")
    if survey.sixteen_bit:
        notes.append("16-bit masks: values used as class ids unchanged")
    return Choice(
        MaskEncoding("index", stray_to_ignore=stray_to_ignore), None, class_infos(classes), notes
    )
