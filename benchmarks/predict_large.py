"""Peak memory of `segcli predict --tile` on one very large image (default 8000x8000).

Writes a random-weight 4-class unet checkpoint and a synthetic RGB PNG, runs the CLI in a
subprocess and samples the resident memory (RSS) of its whole process tree every 20 ms.

    python benchmarks/predict_large.py [--size 8000] [--tile 512] [--overlap 0.25]
    python benchmarks/predict_large.py --quick      # 600x600, 128-pixel tiles: a smoke test

Target: peak RSS below 2 GiB for 8000x8000 (see docs/predict.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_image(path: Path, size: int) -> None:
    rows = np.linspace(0, 255, size, dtype=np.float32)
    image = np.empty((size, size, 3), np.uint8)
    for top in range(0, size, 1000):  # bands keep the generator's own memory small
        band = rows[top : top + 1000, None]
        image[top : top + 1000, :, 0] = (band + rows[None, :]) / 2
        image[top : top + 1000, :, 1] = np.abs(band - rows[None, :])
        image[top : top + 1000, :, 2] = ((band // 97 + rows[None, :] // 89) % 2) * 255
    Image.fromarray(image).save(path, compress_level=1)


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += (
                int(
                    next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[
                        1
                    ]
                )
                * 1024
            )
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, StopIteration):
            continue
        pending += [int(child) for child in children]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--extra", nargs="*", default=[], help="more `segcli predict` arguments")
    parser.add_argument("--quick", action="store_true", help="600x600, 128-pixel tiles")
    args = parser.parse_args()
    if args.quick:
        args.size, args.tile = 600, 128
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        checkpoint = folder / "model.safetensors"
        from synthetic import synthetic_checkpoint

        synthetic_checkpoint(checkpoint, size=512, base_width=8, depth=2)
        (folder / "in").mkdir()
        image = folder / "in" / "large.png"
        make_image(image, args.size)
        command = [
            sys.executable,
            "-m",
            "segcli",
            "predict",
            str(image),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(folder / "out"),
            "--tile",
            str(args.tile),
            "--overlap",
            str(args.overlap),
            "--batch-size",
            str(args.batch_size),
            *args.extra,
        ]
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        peak = 0
        while process.poll() is None:
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        output = process.stdout.read()
        if process.returncode != 0:
            sys.exit(f"segcli predict failed ({process.returncode}):\n{output}")
        mask = Image.open(folder / "out" / "large.png")
        assert mask.size == (args.size, args.size), mask.size
    print(
        f"image {args.size}x{args.size}, 4 classes, --tile {args.tile} --overlap {args.overlap} "
        f"{' '.join(args.extra)}"
    )
    print(f"peak RSS (process tree): {peak / 2**30:.2f} GiB; wall time {seconds:.1f} s")


if __name__ == "__main__":
    main()
