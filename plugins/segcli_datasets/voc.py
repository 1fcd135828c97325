"""`voc`: the Pascal VOC segmentation layout, as VOC itself and CVAT ("Segmentation mask 1.1")
write it::

    JPEGImages/<name>.jpg
    SegmentationClass/<name>.png        palette (VOC) or colour (CVAT) masks; 255 / (224, 224,
                                        192) = the "difficult" borders, kept as ignore
    ImageSets/Segmentation/train.txt    one name a line (val.txt, trainval.txt, test.txt, ...)
    labelmap.txt                        CVAT: `name:r,g,b::` a line, `#` comments

Masks are read by colour when a labelmap.txt names the colours (a palette mask's indices go
through its own palette), else palette indices are the class ids: named after VOC's 21 classes
when the palette is VOC's, else after the `--classes` file's names, else `class_<i>`. Either
way the names then go through `choose_classes`, so `--classes` picks, renames and merges.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np

from segcli import (
    IGNORE_INDEX,
    ClassInfo,
    DataError,
    DatasetPlan,
    Sample,
    choose_classes,
    open_image,
    read_classes_file,
)

from .common import (
    STRAY_HELP,
    check_val_fraction,
    distinct_colors,
    image_files,
    require_dir,
    split_off_validation,
)
from .encodings import describe_colors, load_mask, pack_rgb, survey_masks, unpack_rgb

VOC_NAMES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
VOC_NAMES_TUPLE = tuple(VOC_NAMES)
VOC_COLORS = distinct_colors(len(VOC_NAMES))
# VOC's colour of palette index 255: the borders around objects, left out of scoring.
BORDER_COLOR = distinct_colors(256)[IGNORE_INDEX]
MASK_FOLDERS = ("SegmentationClass", "SegmentationClassPNG", "SegmentationClassRaw")
SPLITS = ("train", "val", "test")
LAYOUT_HINT = (
    "expected JPEGImages/<name>.jpg, SegmentationClass/<name>.png and optionally "
    "ImageSets/Segmentation/{train,val}.txt and labelmap.txt (--images-dir/--masks-dir for "
    "other folder names)"
)
LABELMAP_HINT = "write one class a line as name:r,g,b:: (lines starting with # are comments)"


@dataclass(frozen=True)
class Source:
    """One label of the raw masks: its value in what `VocMasks` returns, name and colour."""

    name: str
    color: tuple[int, int, int] | None


def prepare(
    raw: Path | None,
    *,
    images_dir: Annotated[
        str, "image folder in RAW (or in its VOCdevkit/VOC* folder); default JPEGImages"
    ] = "",
    masks_dir: Annotated[
        str, "mask folder beside the images; default SegmentationClass or SegmentationClassPNG"
    ] = "",
    classes: Annotated[
        Path | None, "classes file: picks, orders, renames and merges classes (docs/annotations.md)"
    ] = None,
    others: Annotated[
        str, "where the names the classes file leaves out go: background or ignore"
    ] = "background",
    val_fraction: Annotated[
        float, "share of train held out for validation when there is no val list (seeded)"
    ] = 0.15,
    seed: Annotated[int, "seed of the validation split"] = 0,
    ignore_stray_values: Annotated[bool, STRAY_HELP + " (colours too)"] = False,
) -> DatasetPlan:
    """Pascal VOC / CVAT segmentation masks: JPEGImages + SegmentationClass (+ labelmap.txt)."""
    check_val_fraction(val_fraction)
    root = _find_root(Path(raw), images_dir)
    images_folder = root / (images_dir or "JPEGImages")
    masks_folder = _masks_folder(root, masks_dir)
    images = _by_stem(image_files(images_folder), images_folder)
    masks = _by_stem(image_files(masks_folder), masks_folder)
    if not masks:
        raise DataError(f"no masks found in {masks_folder}", hint=LAYOUT_HINT)
    samples, unpaired_images, unpaired_masks, notes = _pair(root, images, masks)
    if not any(s.split == "val" for s in samples):
        split_off_validation(samples, val_fraction, seed)
        held = sum(s.split == "val" for s in samples)
        notes.append(
            f"validation split: {held} of the train pairs (--val-fraction {val_fraction}, "
            f"seed {seed})"
        )
    labelmap = root / "labelmap.txt"
    sources, reader, source_note = _sources(
        sorted(masks.values()),
        read_labelmap(labelmap) if labelmap.is_file() else None,
        classes,
        ignore_stray_values,
    )
    names = [source.name for source in sources]
    choice = choose_classes(
        [(name, 1) for name in names],
        classes_file=classes,
        others=others,
        background=_background_name(sources),
    )
    value_map = {index: choice.ids[name] for index, name in enumerate(names)}
    value_map[IGNORE_INDEX] = IGNORE_INDEX
    return DatasetPlan(
        name="voc",
        classes=_class_infos(choice.names, sources, value_map),
        samples=samples,
        read_mask=reader,
        value_map=value_map,
        notes=[source_note, "255 (VOC's object borders) kept as ignore", *choice.notes, *notes],
        unpaired_images=unpaired_images,
        unpaired_masks=unpaired_masks,
        stray_to_ignore=ignore_stray_values,
    )


def _find_root(raw: Path, images_dir: str) -> Path:
    """RAW, or the VOC folder inside it (VOCdevkit/VOC2012 as the archive unpacks): the first
    that holds the images folder."""
    candidates = [raw, *sorted(raw.glob("VOC*")), *sorted(raw.glob("VOCdevkit/VOC*"))]
    for candidate in candidates:
        if (candidate / (images_dir or "JPEGImages")).is_dir():
            return candidate
    folders = ", ".join(sorted(p.name for p in raw.iterdir() if p.is_dir())) or "none"
    raise DataError(
        f"{raw} is not a VOC folder: no {images_dir or 'JPEGImages'} in it (its folders: "
        f"{folders})",
        hint="pass --images-dir NAME when the images are in another folder; " + LAYOUT_HINT,
    )


def _masks_folder(root: Path, masks_dir: str) -> Path:
    if masks_dir:
        return require_dir(root / masks_dir, "VOC mask folder", "check --masks-dir")
    for name in MASK_FOLDERS:
        if (root / name).is_dir():
            return root / name
    folders = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "none"
    raise DataError(
        f"{root} has none of the mask folders {', '.join(MASK_FOLDERS)} (its folders: {folders})",
        hint="pass --masks-dir NAME for the folder that holds the masks",
    )


def _by_stem(paths: list[Path], folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        if path.stem in found:
            raise DataError(
                f"{found[path.stem]} and {path} have the same name in {folder}",
                hint="keep one file per name",
            )
        found[path.stem] = path
    return found


def _pair(
    root: Path, images: dict[str, Path], masks: dict[str, Path]
) -> tuple[list[Sample], list[str], list[str], list[str]]:
    """Samples from the ImageSets lists (train, val, test), else every mask's image in train."""
    lists_dir = root / "ImageSets" / "Segmentation"
    lists = {p.stem: p for p in sorted(lists_dir.glob("*.txt"))} if lists_dir.is_dir() else {}
    notes: list[str] = []
    if "train" in lists or "val" in lists:
        chosen = {split: _read_list(lists[split]) for split in SPLITS if split in lists}
        _check_disjoint({lists[split]: stems for split, stems in chosen.items()})
        unused = [p.name for name, p in lists.items() if name not in SPLITS]
        if unused:
            notes.append(f"split lists {', '.join(unused)} not used (train/val/test lists are)")
    elif lists:
        names = ", ".join(p.name for p in lists.values())
        chosen = {"train": list(dict.fromkeys(s for p in lists.values() for s in _read_list(p)))}
        notes.append(f"no train or val list: the images of {names} go to train")
    else:
        chosen = {"train": sorted(masks)}
        notes.append("no ImageSets/Segmentation lists: every image with a mask goes to train")
    samples: list[Sample] = []
    unpaired_images: list[str] = []
    unpaired_masks: list[str] = []
    for split, stems in chosen.items():
        for stem in stems:
            image, mask = images.get(stem), masks.get(stem)
            if image is None and mask is None:
                raise DataError(
                    f"{lists.get(split, lists_dir)} lists {stem!r}, which has neither an image "
                    "nor a mask",
                    hint="fix the list, or pass --images-dir/--masks-dir",
                )
            if image is None:
                unpaired_masks.append(str(mask))
            elif mask is not None or split == "test":
                samples.append(Sample(split, stem, image, mask))
            else:
                unpaired_images.append(str(image))
    listed = {stem for stems in chosen.values() for stem in stems}
    left_out = sum(stem not in listed for stem in masks)
    if left_out:
        notes.append(f"{left_out} masks are in no split list and were left out")
    without_mask = sum(stem not in masks and stem not in listed for stem in images)
    if without_mask:
        notes.append(
            f"{without_mask} images have no mask and are in no list: left out (VOC keeps its "
            "detection-only images in the same folder)"
        )
    return samples, unpaired_images, unpaired_masks, notes


def _check_disjoint(lists: dict[Path, list[str]]) -> None:
    """A name in two split lists would be trained on and validated on: refused."""
    seen: dict[str, Path] = {}
    for path, stems in lists.items():
        for stem in dict.fromkeys(stems):
            if stem in seen:
                raise DataError(
                    f"{stem!r} is listed in both {seen[stem]} and {path}",
                    hint="each image belongs to one split: remove it from one list",
                )
            seen[stem] = path


def _read_list(path: Path) -> list[str]:
    """Names in a split list, one a line (VOC's lists hold names; extensions are tolerated)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split list {path}: {exc}") from None
    return [Path(line.split()[0]).stem for line in lines if line.strip()]


def read_labelmap(path: Path) -> list[Source]:
    """CVAT's labelmap.txt: `name:r,g,b:parts:actions` a line, `#` comment lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint=LABELMAP_HINT) from None
    sources: list[Source] = []
    seen: dict[tuple[int, int, int], str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        text = rest.split(":")[0].strip()
        try:
            color = tuple(int(v) for v in text.split(","))
        except ValueError:
            color = ()
        if not name.strip() or len(color) != 3 or not all(0 <= v <= 255 for v in color):
            raise DataError(
                f"{path} line {number}: {line.strip()!r} is not name:r,g,b::", hint=LABELMAP_HINT
            )
        if color in seen:
            raise DataError(
                f"{path} line {number}: {name.strip()!r} has the colour {color} of {seen[color]!r}",
                hint="give each label its own colour (same name twice is fine: merged)",
            )
        seen[color] = name.strip()
        sources.append(Source(name.strip(), color))  # type: ignore[arg-type]
    if not sources:
        raise DataError(f"{path} names no label", hint=LABELMAP_HINT)
    if len(sources) >= IGNORE_INDEX:
        raise DataError(f"{path} names {len(sources)} labels; at most 254 fit 8-bit masks")
    return sources


def _sources(
    masks: list[Path],
    labelmap: list[Source] | None,
    classes: Path | None,
    stray_to_ignore: bool,
) -> tuple[list[Source], VocMasks, str]:
    """The raw labels (value i of what the reader returns is sources[i]), the reader, a note."""
    survey = survey_masks(masks)
    if survey.looked_at == 0:
        raise DataError(
            f"none of the masks looked at could be read, e.g. {survey.unreadable[0]}",
            hint="check --masks-dir",
        )
    if labelmap is not None:
        colors = tuple((s.color, i) for i, s in enumerate(labelmap))
        names = tuple(s.name for s in labelmap)
        reader = VocMasks(colors, names, "labelmap.txt", True, stray_to_ignore)
        return labelmap, reader, f"classes and colours from labelmap.txt ({len(labelmap)} labels)"
    voc_colors = tuple((c, i) for i, c in enumerate(VOC_COLORS))
    if survey.colors:
        known = {int(pack_rgb(np.array(c))) for c in (*VOC_COLORS, BORDER_COLOR)}
        strays = {code: n for code, n in survey.colors.items() if code not in known}
        if strays:
            raise DataError(
                f"masks are colour-coded with colours that are not VOC's "
                f"({describe_colors(Counter(strays))}) and there is no "
                "labelmap.txt",
                hint="put a labelmap.txt (name:r,g,b:: a line) next to the mask folder",
            )
        sources = [Source(n, c) for n, c in zip(VOC_NAMES, VOC_COLORS, strict=True)]
        reader = VocMasks(voc_colors, VOC_NAMES_TUPLE, "the VOC colour map", False, stray_to_ignore)
        return sources, reader, "colour masks in VOC's colours: the 21 VOC classes"
    labels = [v for v in survey.grey_values if v != IGNORE_INDEX]
    count = max(labels, default=0) + 1
    palette = survey.palette or []
    reader = VocMasks(voc_colors, VOC_NAMES_TUPLE, "the VOC colour map", False, stray_to_ignore)
    if _is_voc_palette(palette) and count <= len(VOC_NAMES):
        sources = [Source(n, c) for n, c in zip(VOC_NAMES, VOC_COLORS, strict=True)]
        return sources, reader, "VOC palette: the 21 VOC classes"
    colors = [tuple(palette[3 * i : 3 * i + 3]) or None for i in range(count)]
    if classes is not None:
        listed = read_classes_file(classes).names
        names = [listed[i] if i < len(listed) else f"class_{i}" for i in range(count)]
        note = f"mask value i is class i of {Path(classes).name}"
    else:
        names = [f"class_{i}" for i in range(count)]
        note = (
            "mask values are class ids, named class_<i> (no labelmap.txt, not VOC's palette: "
            "name them with --classes)"
        )
    sources = [Source(n, c) for n, c in zip(names, colors, strict=True)]  # type: ignore[misc]
    return sources, reader, note


def _is_voc_palette(palette: list[int]) -> bool:
    wanted = [v for color in VOC_COLORS for v in color]
    return palette[: len(wanted)] == wanted


def _background_name(sources: list[Source]) -> str:
    """The label that is class 0: the black one (CVAT's "background"), else the first."""
    return next((s.name for s in sources if s.color == (0, 0, 0)), sources[0].name)


def _class_infos(names, sources: list[Source], value_map: dict[int, int]) -> list[ClassInfo]:
    """Each class with the colour of its first source label (a default colour if none)."""
    defaults = distinct_colors(len(names))
    colors: dict[int, tuple[int, int, int]] = {}
    for index, source in enumerate(sources):
        if source.color is not None:
            colors.setdefault(value_map[index], source.color)
    return [ClassInfo(i, name, colors.get(i, defaults[i])) for i, name in enumerate(names)]


@dataclass(frozen=True)
class VocMasks:
    """`DatasetPlan.read_mask`: a mask's raw label values (its source index per pixel, 255 =
    ignore). Colour masks are looked up in `colors`; palette masks too when `palette_by_color`
    (a labelmap names colours, not indices), else their indices are the values. A class, not a
    closure: it goes to the worker processes."""

    colors: tuple[tuple[tuple[int, int, int], int], ...]
    names: tuple[str, ...]
    colors_from: str
    palette_by_color: bool
    stray_to_ignore: bool

    def __call__(self, sample: Sample) -> np.ndarray:
        path = sample.mask
        array, mode = load_mask(path)
        if mode == "P" and self.palette_by_color:
            with open_image(path) as image:
                palette = (image.getpalette() or []) + [0] * 768
            indices, inverse = np.unique(array, return_inverse=True)
            used = np.array([palette[3 * i : 3 * i + 3] for i in indices.tolist()], dtype=np.uint8)
            values = self._lookup(used, path)
            values[indices == IGNORE_INDEX] = IGNORE_INDEX
            return values[inverse.reshape(array.shape)]
        if array.ndim == 2:
            return array
        if array.dtype != np.uint8:
            raise DataError(f"mask {path} is {array.dtype}, colour masks must be 8-bit")
        codes, inverse = np.unique(pack_rgb(array[:, :, :3]), return_inverse=True)
        used = np.array([unpack_rgb(int(c)) for c in codes], dtype=np.uint8)
        return self._lookup(used, path)[inverse.reshape(array.shape[:2])]

    def _lookup(self, used: np.ndarray, path: Path) -> np.ndarray:
        """The source index of each colour in `used` (N x 3); VOC's border colour -> 255."""
        table = {color: index for color, index in self.colors}
        values = np.empty(len(used), dtype=np.uint8)
        for position, color in enumerate(map(tuple, used.tolist())):
            if color in table:
                values[position] = table[color]
            elif color == BORDER_COLOR or self.stray_to_ignore:
                values[position] = IGNORE_INDEX
            else:
                raise self._unknown(color, path)
        return values

    def _unknown(self, color: tuple[int, int, int], path: Path) -> DataError:
        known = np.array([c for c, _ in self.colors], dtype=np.int64)
        nearest = int(((known - np.array(color)) ** 2).sum(1).argmin())
        nearest_color, index = self.colors[nearest]
        return DataError(
            f"mask {path} has the colour {color}, which {self.colors_from} does not list "
            f"(nearest: {self.names[index]!r} {nearest_color})",
            hint=f"add that colour to {self.colors_from}, repaint it, or pass "
            "--ignore-stray-values to ignore it",
        )
