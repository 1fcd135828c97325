"""Float ONNX against INT8 ONNX on a run's validation images: images per second and the
monitored metric of each, and the ratio of their speeds.

    python benchmarks/deploy.py RUN [--dataset DIR] [--calibration 200] [--batch-size 4]
    python benchmarks/deploy.py --quick     # a tiny shapes run trained here: a smoke test

RUN is a run folder or checkpoint; the INT8 model is made exactly as `segcli export --format
onnx --quantize int8` makes it (calibrated on the run's train images) and kept whatever it
scores. Two speeds are given for each model: end to end as `segcli evaluate` predicts the
validation split (decoding, resizing, resizing back included), and the bare forward passes
on the same images already preprocessed, at --batch-size. Run it alone on the machine.
Target (issue 21): INT8 at least 1.5x the float end-to-end images/s, the metric within 0.01.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from segcli.data.images import read_image
from segcli.evaluation import labelled_pairs
from segcli.inference.export import export_checkpoint
from segcli.inference.exported_models import OnnxModel
from segcli.inference.predictor import Predictor, reuse_freed_memory
from segcli.inference.preprocessing import pad_to_multiple
from segcli.inference.quantization import SCORING_SPLIT
from segcli.runs.folders import find_checkpoint


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


def forward_images_per_second(
    runner: OnnxModel, images: list[torch.Tensor], batch_size: int
) -> float:
    """Images per second of bare forward passes over `images` (one warm-up batch untimed)."""
    batches = [torch.cat(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    runner(batches[0])
    start = time.perf_counter()
    for batch in batches:
        runner(batch)
    return len(images) / (time.perf_counter() - start)


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
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if args.quick:
            args.run, args.dataset = quick_run(folder)
            args.calibration, args.batch_size = 8, 2
        checkpoint = find_checkpoint(args.run)
        models = {}
        for name, quantize in (("float", None), ("int8", "int8")):
            models[name] = folder / f"{name}.onnx"
            report = export_checkpoint(
                checkpoint,
                "onnx",
                models[name],
                dynamic=True,
                quantize=quantize,
                calibration=args.calibration,
                keep_anyway=True,
                dataset=args.dataset,
            )
        check = report.accuracy
        assert check is not None
        predictor = Predictor(checkpoint, "cpu", amp="off")
        divisor = predictor.preprocessing.size_divisor
        pairs = labelled_pairs(Path(check["dataset"]), SCORING_SPLIT)
        images = [
            pad_to_multiple(
                predictor.preprocess(read_image(image, predictor.channels))[None], divisor
            )[0]
            for image, _ in pairs
        ]
        bare = {
            name: forward_images_per_second(
                OnnxModel(path, divisor, torch.device("cpu")), images, args.batch_size
            )
            for name, path in models.items()
        }
    reference, exported = check["reference"], check["exported"]
    print(f"{checkpoint}: {check['images']} {check['split']} image(s) of {check['dataset']}")
    print(f"{'model':8} {check['metric']:>16} {'end-to-end img/s':>17} {'forward img/s':>14}")
    for name, record in (("float", reference), ("int8", exported)):
        print(
            f"{name:8} {record['score']:16.4f} {record['images_per_second']:17.1f} "
            f"{bare[name]:14.1f}"
        )
    print(
        f"int8/float: end to end {check['speedup']:.2f}x, forward "
        f"{bare['int8'] / bare['float']:.2f}x; {check['metric']} drop {check['drop']:.4f} "
        f"(calibrated on {args.calibration} train image(s))"
    )


if __name__ == "__main__":
    main()
