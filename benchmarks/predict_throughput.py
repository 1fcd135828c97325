"""Images per second of `segcli predict` against a bare `model(x)` loop on the same images.

The bare loop gets every image already decoded, resized and normalised in memory and only
times the forward passes, with the same allocator setting as segcli (`reuse_freed_memory`).
`segcli predict` is timed in process (`predict_paths`: decoding in background workers,
prediction, resizing back, PNG writing) and end to end as a user runs it (process start,
imports and model load included, and once more without them).

    python benchmarks/predict_throughput.py [--images 96] [--size 256] [--batch-size 4]
    python benchmarks/predict_throughput.py --quick     # 4 small images: a smoke test

Target: ratio >= 0.9 (see docs/predict.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from synthetic import synthetic_checkpoint

from segcli.building import forward
from segcli.data.images import read_image
from segcli.inference.predict_files import Predictor, predict_paths, reuse_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="4 small images: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.images, args.size, args.batch_size = 4, 64, 2
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        checkpoint = folder / "model.safetensors"
        synthetic_checkpoint(checkpoint, size=args.size, base_width=32, depth=4)
        (folder / "in").mkdir()
        for index in range(args.images):
            pixels = rng.integers(0, 256, (args.size // 8, args.size // 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((args.size, args.size)).save(
                folder / "in" / f"{index:04d}.png"
            )

        files = sorted((folder / "in").iterdir())
        reuse_freed_memory()  # as `segcli predict` does: the bare loop gets the same allocator
        predictor = Predictor(checkpoint, "cpu", amp="off", tta="none")
        tensors = [predictor.preprocess(read_image(path, 3)) for path in files]
        size = args.batch_size
        batches = [torch.stack(tensors[i : i + size]) for i in range(0, len(tensors), size)]

        def bare_loop() -> float:
            started = time.perf_counter()
            with torch.no_grad():
                for batch in batches:
                    forward(predictor.model, batch)
            return args.images / (time.perf_counter() - started)

        def pipeline() -> float:
            started = time.perf_counter()
            predict_paths(
                checkpoint, [folder / "in"], folder / "out", batch_size=size, device="cpu"
            )
            return args.images / (time.perf_counter() - started)

        def command(inputs: Path) -> float:
            started = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "segcli",
                    "predict",
                    str(inputs),
                    "--checkpoint",
                    str(checkpoint),
                    "--out",
                    str(folder / "cli"),
                    "--batch-size",
                    str(size),
                    "--device",
                    "cpu",
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                sys.exit(f"segcli predict failed:\n{result.stdout}{result.stderr}")
            return time.perf_counter() - started

        bare_loop()  # warm-up
        # interleaved, best of two: the machine may be shared, so take each one's quietest run
        bare = max(bare_loop(), bare_loop())
        in_process = max(pipeline(), pipeline())
        startup = command(files[0])  # process start, imports, model load, one image
        end_to_end = args.images / command(folder / "in")
        steady = (args.images - 1) / (args.images / end_to_end - startup)
        assert len(list((folder / "cli").glob("*.png"))) == args.images
    print(
        f"{args.images} images {args.size}x{args.size}, unet base_width=32 depth=4, "
        f"batch {args.batch_size}, {torch.get_num_threads()} torch threads"
    )
    print(f"bare model(x) loop on preprocessed tensors: {bare:.2f} images/s")
    print(
        f"predict_paths in process (decode, predict, write PNGs): {in_process:.2f} images/s, "
        f"ratio {in_process / bare:.2f}"
    )
    print(
        f"segcli predict end to end: {end_to_end:.2f} images/s, ratio {end_to_end / bare:.2f}; "
        f"without the {startup:.1f} s start-up (one-image run): {steady:.2f} images/s, "
        f"ratio {steady / bare:.2f}"
    )


if __name__ == "__main__":
    main()
