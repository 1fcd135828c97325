"""`folder`: a user's own images and masks, paired by file name, in any common mask encoding."""

from __future__ import annotations

import difflib
import re
from functools import partial
from pathlib import Path
from typing import Annotated

from segcli import DataError, DatasetPlan, Sample, UsageError

from .common import STRAY_HELP, check_val_fraction, held_out, image_files, require_dir
from .encodings import choose_encoding, load_classes_json, read_encoded_mask

# Sub-folder names accepted for each split with --split-dirs.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def prepare(
    raw: Path | None,
    *,
    masks: Annotated[Path | None, "folder of masks, paired with the images by file name"] = None,
    mask_suffix: Annotated[str, "end of a mask's name after the shared part, e.g. _mask"] = "",
    image_suffix: Annotated[str, "end of an image's name after the shared part"] = "",
    key: Annotated[
        str,
        "regular expression picking the shared part of both names, e.g. "
        r"'^\d+' (overrides the suffixes)",
    ] = "",
    split_dirs: Annotated[bool, "images and masks are in train/val/test sub-folders"] = False,
    val_fraction: Annotated[float, "share of train held out for validation (seeded)"] = 0.15,
    seed: Annotated[int, "seed of the validation split"] = 0,
    encoding: Annotated[str, "mask encoding: auto, index, binary, palette or rgb"] = "auto",
    classes: Annotated[Path | None, "classes.json: name (and colour) of each class"] = None,
    threshold: Annotated[int, "grey level from which a JPEG binary mask is foreground"] = 128,
    ignore_stray_values: Annotated[bool, STRAY_HELP] = False,
) -> DatasetPlan:
    """Prepare your own images and masks: `segcli prepare folder IMAGES --masks MASKS`."""
    if masks is None:
        raise UsageError(
            "folder needs the mask folder", hint="segcli prepare folder IMAGES --masks MASKS"
        )
    require_dir(Path(masks), "mask folder", "check --masks")
    check_val_fraction(val_fraction)
    pattern = _compile(key)
    class_specs = load_classes_json(classes) if classes is not None else None
    naming = _Naming(pattern, image_suffix, mask_suffix)
    notes = []
    if split_dirs:
        splits = _split_folders(Path(raw), Path(masks))
    else:
        splits = [("train", Path(raw), Path(masks), True)]
    samples: list[Sample] = []
    unpaired_images: list[str] = []
    unpaired_masks: list[str] = []
    for split, image_dir, mask_dir, labelled in splits:
        paired, lonely_images, lonely_masks = _pair(image_dir, mask_dir, naming, labelled)
        if labelled and not paired:
            raise _no_pairs(image_dir, mask_dir, naming)
        samples += [Sample(split, stem, image, mask) for stem, image, mask in paired]
        unpaired_images += lonely_images
        unpaired_masks += lonely_masks
    if not any(s.split == "val" for s in samples):
        chosen = held_out((s.stem for s in samples if s.split == "train"), val_fraction, seed)
        for sample in samples:
            if sample.split == "train" and sample.stem in chosen:
                sample.split = "val"
        notes.append(
            f"validation split: {len(chosen)} of the train pairs "
            f"(--val-fraction {val_fraction}, seed {seed})"
        )
    mask_paths = [s.mask for s in samples if s.mask is not None]
    choice = choose_encoding(
        mask_paths,
        encoding=encoding,
        classes=class_specs,
        threshold=threshold,
        stray_to_ignore=ignore_stray_values,
    )
    return DatasetPlan(
        name="folder",
        classes=choice.classes,
        samples=samples,
        read_mask=partial(read_encoded_mask, encoding=choice.encoding),
        value_map=choice.value_map,
        notes=choice.notes + notes,
        unpaired_images=unpaired_images,
        unpaired_masks=unpaired_masks,
        stray_to_ignore=ignore_stray_values,
    )


class _Naming:
    """The shared part of an image's and a mask's name: the pairing key."""

    def __init__(self, pattern: re.Pattern | None, image_suffix: str, mask_suffix: str) -> None:
        self.pattern, self.image_suffix, self.mask_suffix = pattern, image_suffix, mask_suffix

    def key(self, path: Path, root: Path, suffix: str) -> str | None:
        stem = path.stem
        if self.pattern is not None:
            found = self.pattern.search(stem)
            if found is None:
                return None
            stem = found.group(1) if found.groups() else found.group(0)
        elif suffix:
            if not stem.endswith(suffix):
                return None
            stem = stem[: -len(suffix)]
        relative = path.parent.relative_to(root)
        return "_".join((*relative.parts, stem))


def _compile(key: str) -> re.Pattern | None:
    if not key:
        return None
    try:
        return re.compile(key)
    except re.error as exc:
        raise UsageError(f"--key {key!r} is not a valid regular expression: {exc}") from None


def _pair(image_dir: Path, mask_dir: Path | None, naming: _Naming, labelled: bool):
    image_paths = image_files(image_dir, recursive=True)
    if not image_paths:
        raise DataError(
            f"no images found in {image_dir}",
            hint="pass the folder that holds the images (PNG, JPEG, TIFF, ...) as IMAGES",
        )
    images = _keyed(image_paths, image_dir, naming, naming.image_suffix)
    if not images:
        rule = f"--key {naming.pattern.pattern!r}" if naming.pattern else "--image-suffix"
        raise DataError(
            f"no image name in {image_dir} fits {rule}, e.g. {image_paths[0].name}",
            hint=f"check {rule}",
        )
    if not labelled or mask_dir is None:
        return [(stem, path, None) for stem, path in sorted(images.items())], [], []
    mask_paths = image_files(mask_dir, recursive=True)
    if not mask_paths:
        raise DataError(
            f"no masks found in {mask_dir}",
            hint="pass the folder that holds the mask images (PNG, TIFF, ...) as --masks",
        )
    masks = _keyed(mask_paths, mask_dir, naming, naming.mask_suffix)
    paired = [(k, images[k], masks[k]) for k in sorted(images.keys() & masks.keys())]
    lonely_images = [str(images[k]) for k in sorted(images.keys() - masks.keys())]
    lonely_masks = [str(masks[k]) for k in sorted(masks.keys() - images.keys())]
    return paired, lonely_images, lonely_masks


def _keyed(paths: list[Path], root: Path, naming: _Naming, suffix: str) -> dict[str, Path]:
    keyed: dict[str, Path] = {}
    for path in paths:
        key = naming.key(path, root, suffix)
        if key is None:
            continue
        if key in keyed:
            raise DataError(
                f"{keyed[key]} and {path} have the same name (pairing key {key!r})",
                hint="remove one, or choose a --key that tells them apart",
            )
        keyed[key] = path
    return keyed


def _split_folders(images: Path, masks: Path) -> list[tuple[str, Path, Path | None, bool]]:
    """(split, image folder, mask folder, labelled) for each split sub-folder."""
    found = []
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        split = SPLIT_NAMES.get(folder.name.lower())
        if split is None:
            continue
        mask_folder = masks / folder.name
        labelled = mask_folder.is_dir() or split != "test"
        if not mask_folder.is_dir() and labelled:
            raise DataError(
                f"split folder {folder} has no mask folder {mask_folder}",
                hint="only test may come without masks",
            )
        found.append((split, folder, mask_folder if labelled else None, labelled))
    if not any(split == "train" for split, *_ in found):
        raise DataError(
            f"--split-dirs: {images} has no train sub-folder "
            f"(sub-folders: {', '.join(p.name for p in images.iterdir() if p.is_dir()) or 'none'})",
            hint="name them train, val and test, or leave out --split-dirs",
        )
    return found


def _no_pairs(image_dir: Path, mask_dir: Path, naming: _Naming) -> DataError:
    """Why not even one image found its mask: what the first image's mask would be called, and
    the mask names closest to that."""
    image, key = next(
        (path, key)
        for path in image_files(image_dir, recursive=True)
        if (key := naming.key(path, image_dir, naming.image_suffix)) is not None
    )
    relative = image.relative_to(image_dir)
    if naming.pattern is not None:
        wanted = f"a mask whose name --key matches as {key!r}"
        expected = key
    else:
        stem = image.stem[: len(image.stem) - len(naming.image_suffix)]
        expected = str(relative.parent / f"{stem}{naming.mask_suffix}")
        wanted = f"a mask named {expected}.<png|tif|...>"
    names = [str(m.relative_to(mask_dir)) for m in image_files(mask_dir, recursive=True)]
    closest = difflib.get_close_matches(expected, names, n=3, cutoff=0)
    return DataError(
        f"no image in {image_dir} has a mask in {mask_dir}: {relative} would need {wanted}, "
        f"but the closest mask names are {', '.join(closest)}",
        hint="pair the names with --mask-suffix/--image-suffix (e.g. --mask-suffix _mask for "
        "img1.png and img1_mask.png) or --key",
    )
