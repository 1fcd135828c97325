"""Threads reading images at once (the fingerprint, `decode_all`), each with its own pixel
limit: every read is judged by its own limit, and no process-wide setting is left changed
(issue 17: Pillow's module-wide MAX_IMAGE_PIXELS and warnings filters were set per read)."""

from __future__ import annotations

import io as bytes_io
import subprocess
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcli.data import images
from segcli.errors import DataError

ROUNDS = 150


def _outcomes(path: Path, limit: int, start: threading.Barrier) -> set[str]:
    start.wait()
    seen = set()
    for _ in range(ROUNDS):
        try:
            images.read_image(path, max_pixels=limit)
            seen.add("read")
        except DataError as exc:
            seen.add("refused" if f"over the limit of {limit:,} pixels" in str(exc) else str(exc))
    return seen


@pytest.fixture
def frequent_switches():
    """Threads switched as often as the interpreter allows, so that reads interleave."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_each_thread_reads_by_its_own_pixel_limit(tmp_path, frequent_switches):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(small)  # 64 pixels
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(large)  # 256 pixels
    # (file, limit, what every read of it must give)
    readers = [(large, 1_000, {"read"}), (small, 64, {"read"}), (large, 255, {"refused"})] * 3
    pillow_limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    start = threading.Barrier(len(readers))
    with ThreadPoolExecutor(len(readers)) as pool:
        futures = [pool.submit(_outcomes, path, limit, start) for path, limit, _ in readers]
        results = [future.result() for future in futures]
    for (path, limit, expected), seen in zip(readers, results, strict=True):
        assert seen == expected, (path.name, limit)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit
    assert warnings.filters == filters


def test_reads_outside_segcli_keep_pillows_own_limit(tmp_path, monkeypatch):
    """Only segcli's reads are judged by segcli's limit: other code opening an image in the
    same process still gets Pillow's check, by Pillow's setting."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert images.read_image(image).shape == (16, 16, 3)
    with pytest.raises(Image.DecompressionBombError), Image.open(image):
        pass


def test_damaged_metadata_warnings_are_not_printed(tmp_path):
    """Pillow warns about a truncated EXIF block and still decodes the image: in a fresh
    process (no test runner's warning capture) segcli's read prints nothing."""
    exif = Image.Exif()
    exif[0x010E] = "a description that is long enough"
    encoded = bytes_io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(encoded, "JPEG", exif=exif.tobytes()[:-12])
    path = tmp_path / "exif.jpg"
    path.write_bytes(encoded.getvalue())

    def stderr_of(code: str) -> str:
        run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True)
        assert run.returncode == 0, run.stderr
        return run.stderr.decode()

    pillow = (
        "import sys; from PIL import Image, ImageOps; "
        "ImageOps.exif_transpose(Image.open(sys.argv[1]))"
    )
    assert "UserWarning" in stderr_of(pillow)  # the damage is real
    assert (
        stderr_of("import sys; from segcli.data.images import read_image; read_image(sys.argv[1])")
        == ""
    )
