"""Property-based fuzzing of what segcli reads from users: image and mask files, split files
and dataset.json. Whatever the bytes, segcli's readers return a value or raise a segcli
error (images: a DataError naming the file), never a library's exception.

Fixed seed (`derandomize`) and a bounded number of examples, so CI runs the same cases every
time in a few seconds; no example database is written.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, TiffTags

from segcli.data.format import ClassInfo, read_dataset_info
from segcli.data.images import image_size, open_image, read_image, read_mask
from segcli.data.plan import DatasetPlan, Sample
from segcli.data.split_file import apply_split_file, read_split_file
from segcli.errors import DataError, SegcliError

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=120,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SUFFIXES = [".png", ".jpg", ".tif", ".webp", ".gif", ".bmp"]

# ------------------------------------------------------------------------------ images


def _valid_files() -> dict[str, bytes]:
    """One small image per format, with EXIF (a quarter turn and a text) where it holds one:
    the bytes the fuzzer truncates and damages."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010E] = "a description"
    exif[0x0112] = 6
    files = {}
    for fmt, suffix, options in [
        ("PNG", ".png", {"exif": exif}),
        ("JPEG", ".jpg", {"exif": exif}),
        ("TIFF", ".tif", {"exif": exif}),
        ("WEBP", ".webp", {"exif": exif}),
        ("GIF", ".gif", {}),
        ("BMP", ".bmp", {}),
    ]:
        buffer = io.BytesIO()
        rgb.save(buffer, format=fmt, **options)
        files[suffix] = buffer.getvalue()
    grey16 = io.BytesIO()
    Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16)).save(grey16, format="PNG")
    files["-16.png"] = grey16.getvalue()
    floats = io.BytesIO()
    Image.fromarray(rng.random((9, 7), dtype=np.float32)).save(floats, format="TIFF")
    files["-float.tif"] = floats.getvalue()
    return files


VALID_FILES = _valid_files()


def _ifd_fields(data: bytes) -> list[tuple[int, str, str]]:
    """(offset, field, byte order) of each field of the first TIFF IFD in `data` (a TIFF file,
    or the EXIF block of a JPEG, PNG or WebP): its entry count, and each entry's tag, type,
    count and value."""
    starts = [data.find(header) for header in (b"II*\x00", b"MM\x00*")]
    base = min((start for start in starts if start >= 0), default=-1)
    if base < 0:
        return []
    order = "<" if data[base : base + 2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[base + 4 : base + 8])
    (count,) = struct.unpack(order + "H", data[base + ifd : base + ifd + 2])
    fields = [(base + ifd, "entries", order)]
    for entry in range(base + ifd + 2, base + ifd + 2 + 12 * count, 12):
        fields += [(entry, "tag", order), (entry + 2, "type", order)]
        fields += [(entry + 4, "count", order), (entry + 8, "value", order)]
    return fields


# Garbage that parsers meet: a tag Pillow knows (so that it interprets the value), any type
# number, any count or offset.
FIELD_VALUES = {
    "entries": (2, st.integers(0, 2**16 - 1)),
    "tag": (2, st.sampled_from(sorted(TiffTags.TAGS_V2))),
    "type": (2, st.integers(0, 16)),
    "count": (4, st.integers(0, 2**32 - 1) | st.integers(0, 16)),
    "value": (4, st.integers(0, 2**32 - 1) | st.integers(0, 400)),
}


IFD_FIELDS = {name: _ifd_fields(data) for name, data in VALID_FILES.items()}


def _read_every_way(path: Path) -> None:
    """Every reader of images and masks on `path`: a value, or a DataError naming the file."""
    for read in (
        lambda: read_image(path, 3),
        lambda: read_image(path, 1),
        lambda: open_image(path),
        lambda: image_size(path),
        lambda: read_mask(path),
    ):
        try:
            read()
        except DataError as error:
            assert str(path) in str(error)


@FUZZ
@given(content=st.binary(max_size=600), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_are_an_image_or_a_data_error(tmp_path, content, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    _read_every_way(path)


@st.composite
def damaged_metadata(draw) -> tuple[str, bytes]:
    """A valid file with garbage in one to three fields of its EXIF block or TIFF tags."""
    name = draw(st.sampled_from(sorted(name for name, fields in IFD_FIELDS.items() if fields)))
    data = bytearray(VALID_FILES[name])
    for _ in range(draw(st.integers(1, 3))):
        offset, field, order = draw(st.sampled_from(IFD_FIELDS[name]))
        size, values = FIELD_VALUES[field]
        value = draw(values)
        data[offset : offset + size] = value.to_bytes(size, "little" if order == "<" else "big")
    return name.rsplit(".", 1)[-1], bytes(data)


@settings(FUZZ, max_examples=300)
@given(damaged=damaged_metadata())
def test_damaged_exif_and_tiff_tags_are_an_image_or_a_data_error(tmp_path, damaged):
    suffix, content = damaged
    path = tmp_path / f"damaged.{suffix}"
    path.write_bytes(content)
    _read_every_way(path)


@st.composite
def damaged_files(draw) -> tuple[str, bytes]:
    """A valid file with bytes overwritten, truncated, or both: headers sit in the first few
    hundred bytes, so that is where most damage goes."""
    name = draw(st.sampled_from(sorted(VALID_FILES)))
    data = bytearray(VALID_FILES[name])
    for _ in range(draw(st.integers(0, 4))):
        limit = len(data) - 1 if draw(st.booleans()) else min(len(data) - 1, 300)
        data[draw(st.integers(0, limit))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return name.rsplit(".", 1)[-1], bytes(data)


@FUZZ
@given(damaged=damaged_files())
def test_damaged_valid_files_are_an_image_or_a_data_error(tmp_path, damaged):
    suffix, content = damaged
    path = tmp_path / f"damaged.{suffix}"
    path.write_bytes(content)
    _read_every_way(path)


PIXEL_TYPES = [np.uint8, np.uint16, np.int32, np.float32, np.bool_]


@st.composite
def pixel_arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(PIXEL_TYPES)))
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    if dtype == np.uint8 and draw(st.booleans()):
        shape += (3,)
    if dtype.kind == "f":
        elements = st.floats(width=32, allow_nan=True, allow_infinity=True)
        elements = st.one_of(elements, st.floats(0, 1, width=32), st.floats(0, 255, width=32))
        return draw(arrays(dtype, shape, elements=elements))
    return draw(arrays(dtype, shape))


def _expected(array: np.ndarray) -> np.ndarray | None:
    """What the documented rule reads `array` as (grey), or None where it is refused."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind in "iu":
        info = np.iinfo(array.dtype)
        scaled = (array.astype(np.float64) - info.min) * 255 / (int(info.max) - info.min)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        return None
    return np.rint(array * (255.0 if array.max() <= 1 else 1.0)).astype(np.uint8)


@FUZZ
@given(array=pixel_arrays(), fmt=st.sampled_from(["PNG", "TIFF"]))
def test_any_pixel_type_is_read_by_the_one_rule(tmp_path, array, fmt):
    path = tmp_path / f"pixels.{fmt.lower()}"
    try:
        Image.fromarray(array).save(path, format=fmt)
    except (OSError, TypeError, ValueError):
        return  # a type this format cannot hold (float or int32 as PNG)
    expected = _expected(array)
    try:
        grey = read_image(path, 1)[..., 0]
    except DataError as error:
        assert expected is None, error
        assert str(path) in str(error)
        return
    assert expected is not None, f"{array.dtype} {array.tolist()} was not refused"
    if array.ndim == 2:
        # float32 arithmetic may round a value sitting on .5 the other way
        assert np.abs(grey.astype(int) - expected.astype(int)).max() <= 1
    assert read_image(path, 3).shape == (*array.shape[:2], 3)


# ------------------------------------------------------------------------------- JSON

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
STEMS = ["a", "b", "c"]
split_like = st.dictionaries(
    st.sampled_from(["train", "val", "test", "dataset.json", "../up", "", "x" * 70, "v.2"]),
    st.lists(st.sampled_from([*STEMS, "zz", 1, True, None, ""]), max_size=4) | json_values,
    max_size=4,
)


def _deep(levels: int) -> str:
    return '{"train": ' + "[" * levels + "]" * levels + "}"


json_texts = st.one_of(
    json_values.map(json.dumps),
    split_like.map(json.dumps),
    st.text(max_size=80),
    st.binary(max_size=80).map(lambda data: data.decode("latin-1")),
    st.integers(1, 3000).map(_deep),
)


def _plan() -> DatasetPlan:
    samples = [
        Sample("train", stem, Path(f"{stem}.png"), Path(f"{stem}-mask.png")) for stem in STEMS
    ]
    return DatasetPlan("fuzz", [ClassInfo(0, "background", (0, 0, 0))], samples)


@FUZZ
@given(text=json_texts, raw=st.binary(max_size=40))
def test_split_files_are_read_or_refused_with_a_segcli_error(tmp_path, text, raw):
    path = tmp_path / "split.json"
    for content in (text.encode("utf-8", "surrogatepass"), raw):
        path.write_bytes(content)
        try:
            apply_split_file(_plan(), read_split_file(path))
        except SegcliError as error:
            assert error.exit_code == 2, error


VALID_INFO = {
    "format_version": 1,
    "name": "fuzz",
    "classes": [{"id": 0, "name": "background", "color": [0, 0, 0]}],
    "splits": {"train": 3},
}


@FUZZ
@given(
    text=json_texts,
    key=st.sampled_from([*VALID_INFO, "image_channels", "class_pixels", "labelled_splits"]),
    value=json_values,
)
def test_dataset_json_is_read_or_refused_with_a_data_error(tmp_path, text, key, value):
    path = tmp_path / "dataset.json"
    for content in (text, json.dumps({**VALID_INFO, key: value})):
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            read_dataset_info(tmp_path)
        except DataError as error:
            assert "dataset.json" in str(error)


@pytest.mark.parametrize("levels", [100, 1000, 100_000])
def test_nesting_at_any_depth_is_handled(tmp_path, levels):
    """The depths around the bound and Python's recursion limit, always tried."""
    path = tmp_path / "split.json"
    path.write_text(_deep(levels))
    try:
        read_split_file(path)
    except SegcliError as error:
        assert error.exit_code == 2
