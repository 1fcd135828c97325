"""Finding the images a prediction reads, and the output paths that mirror them."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from segcli.data.format import IMAGE_SUFFIXES
from segcli.errors import DataError


def discover_inputs(
    inputs: Iterable[Path | str], recursive: bool = False
) -> list[tuple[Path, Path]]:
    """(image, path relative to its input root) for files, folders and glob patterns; a file
    reached twice (named twice, or through a link) is listed once, where first found."""
    found: list[tuple[Path, Path]] = []
    inputs = list(inputs)
    for item in inputs:
        text = str(item)
        if glob.has_magic(text):
            matches = sorted(m for m in expand_glob(text) if m.is_file())
            if not matches:
                raise DataError(f"no files match {text!r}")
            root = glob_root(text)
            found += [
                (m, m.relative_to(root) if is_inside(m, root) else Path(m.name)) for m in matches
            ]
            continue
        path = Path(item)
        if path.is_file():
            found.append((path, Path(path.name)))
        elif path.is_dir():
            pattern = "**/*" if recursive else "*"
            images = sorted(
                p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            found += [(p, p.relative_to(path)) for p in images]
        else:
            raise DataError(f"input {path} does not exist")
    if not found:
        raise DataError(
            f"no images found in {', '.join(str(i) for i in inputs)}",
            hint=f"supported: {', '.join(IMAGE_SUFFIXES)}; use --recursive for subfolders",
        )
    unique: dict[str, tuple[Path, Path]] = {}
    for path, relative in found:
        unique.setdefault(path_key(path), (path, relative))
    return list(unique.values())


def expand_glob(pattern: str) -> Iterator[Path]:
    """The paths `glob.glob(pattern, recursive=True)` finds, except that `**` descends into
    real folders only: through a link to a folder above, `glob` would list the same images
    again and again (40 times for one link, without end for three). A link the pattern names
    itself (`data/*/images/*.png` with `data/b` a link) is still followed."""
    root = glob_root(pattern)
    yield from _expand(root, list(Path(pattern).parts[len(root.parts) :]))


def _expand(folder: Path, parts: list[str]) -> Iterator[Path]:
    if not parts:
        yield folder
        return
    part, rest = parts[0], parts[1:]
    if part == "**":
        yield from _expand(folder, rest)  # zero folders
        for entry in _entries(folder, "*"):
            if entry.is_dir(follow_symlinks=False):
                yield from _expand(folder / entry.name, parts)
            elif not rest:
                yield folder / entry.name
    elif not glob.has_magic(part):
        if rest or os.path.lexists(folder / part):
            yield from _expand(folder / part, rest)
    else:
        for entry in _entries(folder, part):
            if not rest or entry.is_dir():
                yield from _expand(folder / entry.name, rest)


def _entries(folder: Path, pattern: str) -> list[os.DirEntry]:
    """The entries of `folder` whose names match `pattern`, hidden ones only if the pattern
    starts with a dot (as `glob` does)."""
    try:
        with os.scandir(folder) as entries:
            return [
                entry
                for entry in entries
                if fnmatch.fnmatch(entry.name, pattern)
                and (pattern.startswith(".") or not entry.name.startswith("."))
            ]
    except OSError:
        return []


def glob_root(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard: outputs mirror below it."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def input_root(item: Path | str) -> Path:
    """The folder (or file) an input names: a glob pattern's fixed part, else itself."""
    return glob_root(str(item)) if glob.has_magic(str(item)) else Path(item)


def output_stems(files: list[tuple[Path, Path]]) -> list[Path]:
    """`<rel>/<stem>` per input, or `<rel>/<name>` where two share a stem (a.png, a.jpg)."""
    stems = [relative.with_suffix("") for _, relative in files]
    seen: dict[str, int] = {}
    for stem in stems:
        seen[str(stem).lower()] = seen.get(str(stem).lower(), 0) + 1
    return [
        relative if seen[str(stem).lower()] > 1 else stem
        for (_, relative), stem in zip(files, stems, strict=True)
    ]


def default_output_dir(inputs: list[Path | str]) -> Path:
    first = input_root(inputs[0])
    base = first if first.is_dir() else first.parent
    return base.parent / f"{base.resolve().name}-pred"


def is_inside(child: Path, parent: Path) -> bool:
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def path_key(path: Path) -> str:
    """Equal for two paths naming the same file (links resolved, case folded where the OS does)."""
    return os.path.normcase(os.path.realpath(path))
