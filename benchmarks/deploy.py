"""Every deployment format of a run on its validation images: images per second of `segcli
predict` and of bare forward passes for PyTorch eager, TorchScript, float ONNX, INT8 ONNX and
OpenVINO (when installed); the monitored metric of each re-scored export; INT8 against float.

    python benchmarks/deploy.py RUN [--dataset DIR] [--calibration 200] [--batch-size 4]
    python benchmarks/deploy.py --quick     # a tiny shapes run trained here: a smoke test

RUN is a run folder or checkpoint; each export is made exactly as `segcli export --dynamic`
makes it (INT8: `--quantize int8`, calibrated on the run's train images) and kept whatever it
scores. Three speeds: `predict` is `segcli predict` on the validation images (decoding,
resizing, the model at --batch-size, resizing back, writing the masks), `forward` the bare
forward passes on the same images already preprocessed, at --batch-size; `end to end` is
the pass that re-scored an export (as `segcli evaluate` predicts: reading images and masks,
batches of 4, each mask at its image's own size, scoring; after one untimed batch, the same
images for float and INT8). Every format runs on PyTorch's threads. Run it alone on the
machine.
Target (issue 21): INT8 at least 1.5x the float end-to-end images/s, the metric within 0.01.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from segcli.building import forward
from segcli.data.images import read_image
from segcli.evaluation import labelled_pairs
from segcli.inference.export import export_checkpoint
from segcli.inference.exported_models import openvino_installed
from segcli.inference.predict_files import predict_paths
from segcli.inference.predictor import Predictor, reuse_freed_memory
from segcli.inference.quantization import SCORING_SPLIT
from segcli.runs.folders import find_checkpoint

# (name, --format, --quantize, file name) of each export compared with the checkpoint
EXPORTS = [
    ("torchscript", "torchscript", None, "model.pt"),
    ("onnx float", "onnx", None, "float.onnx"),
    ("onnx int8", "onnx", "int8", "int8.onnx"),
    ("openvino", "openvino", None, "model.xml"),
]


def quick_run(folder: Path) -> tuple[Path, Path]:
    """(run folder, dataset) of a U-Net trained for one epoch on a small shapes dataset."""
    from segcli_recipes import SHAPES_UNET
    from segcli_shapes.generate import prepare

    from segcli.config import build_config
    from segcli.data.prepare import build_dataset
    from segcli.training.fit import fit

    dataset = folder / "shapes"
    build_dataset(prepare(None, train=16, val=8, test=0, size=64), dataset, workers=1)
    config = build_config(
        SHAPES_UNET,
        overrides=[
            f'dataset.path="{dataset}"',
            f'runs_dir="{folder / "runs"}"',
            "train.epochs=1",
            "train.workers=0",
            "input.size=[32,32]",
            "model.base_width=4",
            "model.depth=2",
        ],
    )
    return fit(config), dataset


def forward_images_per_second(model: Any, images: list[torch.Tensor], batch_size: int) -> float:
    """Images per second of bare forward passes over `images` (one warm-up batch untimed)."""
    batches = [torch.stack(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    with torch.no_grad():
        forward(model, batches[0])
        start = time.perf_counter()
        for batch in batches:
            forward(model, batch)
    return len(images) / (time.perf_counter() - start)


def predict_images_per_second(model: Path, images: list[Path], out: Path, batch: int) -> float:
    """Images per second of `segcli predict` (in process) on `images`, the quicker of two
    passes after an untimed one (the machine may be shared)."""
    predict_paths(model, images[:batch], out, batch_size=batch, device="cpu", force=True)
    speeds = []
    for _ in range(2):
        start = time.perf_counter()
        predict_paths(model, images, out, batch_size=batch, device="cpu", force=True)
        speeds.append(len(images) / (time.perf_counter() - start))
    return max(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="run folder or checkpoint")
    parser.add_argument("--dataset", type=Path, help="prepared dataset [default: the run's]")
    parser.add_argument("--calibration", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="a tiny shapes run: a smoke test")
    args = parser.parse_args()
    if not args.quick and args.run is None:
        parser.error("give a RUN (or --quick)")
    reuse_freed_memory()  # as `segcli predict` and `segcli evaluate` do
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if args.quick:
            args.run, args.dataset = quick_run(folder)
            args.calibration, args.batch_size = 8, 2
        checkpoint = find_checkpoint(args.run)
        models = {"pytorch eager": checkpoint}
        checks = {}
        for name, fmt, quantize, file_name in EXPORTS:
            if fmt == "openvino" and not openvino_installed():
                continue
            models[name] = folder / file_name
            report = export_checkpoint(
                checkpoint,
                fmt,
                models[name],
                dynamic=True,
                quantize=quantize,
                calibration=args.calibration,
                keep_anyway=True,
                dataset=args.dataset,
            )
            if report.accuracy is not None:
                checks[name] = report.accuracy
        check = checks["onnx int8"]
        pairs = labelled_pairs(Path(check["dataset"]), SCORING_SPLIT)
        image_files = [image for image, _ in pairs]
        for name, model in models.items():
            predictor = Predictor(model, "cpu", amp="off", tta="none")
            tensors = [predictor.preprocess(read_image(p, predictor.channels)) for p in image_files]
            rows[name] = {
                "predict": predict_images_per_second(
                    model, image_files, folder / "masks", args.batch_size
                ),
                "forward": forward_images_per_second(predictor.model, tensors, args.batch_size),
            }
    # every re-scored export is compared with the float ONNX model: the INT8 pass's figures
    for name, record in [("onnx float", {"exported": check["reference"]}), *checks.items()]:
        rows[name]["score"] = record["exported"]["score"]
        rows[name]["end_to_end"] = record["exported"]["images_per_second"]
    print(f"{checkpoint}: {check['images']} {check['split']} image(s) of {check['dataset']}")
    print(
        f"batch {args.batch_size}, {torch.get_num_threads()} thread(s); images per second, and "
        "each one's ratio to PyTorch eager"
    )
    eager = rows["pytorch eager"]
    print(f"{'format':14} {check['metric']:>16} {'predict':>14} {'forward':>14} {'end to end':>11}")
    for name, row in rows.items():
        score = f"{row['score']:.4f}" if "score" in row else "-"
        end_to_end = f"{row['end_to_end']:.1f}" if "end_to_end" in row else "-"
        print(
            f"{name:14} {score:>16} {row['predict']:8.1f} {row['predict'] / eager['predict']:4.2f}x"
            f" {row['forward']:8.1f} {row['forward'] / eager['forward']:4.2f}x {end_to_end:>11}"
        )
    print(
        f"int8/float: end to end {check['speedup']:.2f}x, predict "
        f"{rows['onnx int8']['predict'] / rows['onnx float']['predict']:.2f}x, forward "
        f"{rows['onnx int8']['forward'] / rows['onnx float']['forward']:.2f}x; "
        f"{check['metric']} drop {check['drop']:.4f} "
        f"(calibrated on {args.calibration} train image(s))"
    )


if __name__ == "__main__":
    main()
