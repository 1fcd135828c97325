"""Quantising an ONNX export and re-scoring an export against the float model.

A quantised (`--quantize int8|dynamic|fp16`) or OpenVINO export is calibrated on the run's
training images and scored on its labelled validation split next to the float ONNX model,
with segcli's own metrics and `segcli.evaluation.evaluate_split`, so that `segcli export`
can refuse one that scores worse than `--max-drop` allows. It sits in the export layer, above
evaluation (docs/architecture.md).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcli.data.format import read_dataset_info, split_files
from segcli.data.images import max_image_pixels, read_image
from segcli.errors import DataError, PluginError, UsageError
from segcli.evaluation import SplitEvaluation, check_classes, evaluate_split, labelled_pairs
from segcli.inference.predictor import Predictor
from segcli.inference.preprocessing import pad_to_multiple
from segcli.registry import one_line

QUANTIZATIONS = ("int8", "dynamic", "fp16")
DEFAULT_CALIBRATION = 200
DEFAULT_MAX_DROP = 0.01
CALIBRATION_SPLIT, SCORING_SPLIT = "train", "val"
WARM_UP_IMAGES = 4  # one batch of `evaluate_split`'s, untimed, before each timed pass


@dataclass
class ScoringData:
    """The prepared dataset an export is calibrated and re-scored on."""

    dataset: Path
    calibration_images: list[Path]


def rescoring_dataset(predictor: Predictor, dataset: Path | None) -> ScoringData:
    """The run's prepared dataset (or `dataset`), checked before any long work: its classes
    are the model's, it has a labelled validation split and a training split to calibrate on."""
    chosen = Path(dataset) if dataset is not None else Path(predictor.config.dataset.path)
    if not (chosen / "dataset.json").is_file():
        raise DataError(
            f"quantised and OpenVINO exports are re-scored on the run's prepared dataset, "
            f"but {chosen} holds none",
            hint="pass the prepared dataset with --dataset DIR",
        )
    check_classes(predictor, chosen)
    labelled_pairs(chosen, SCORING_SPLIT)
    info = read_dataset_info(chosen)
    split = CALIBRATION_SPLIT if CALIBRATION_SPLIT in info.splits else SCORING_SPLIT
    return ScoringData(chosen, [image for image, _ in split_files(chosen, split)])


def quantization_record(mode: str, calibration: int) -> dict[str, Any]:
    record: dict[str, Any] = {"mode": mode}
    if mode == "int8":
        record.update(
            method="onnxruntime quantize_static: QDQ, int8 weights per channel, uint8 "
            "activations, MinMax calibration",
            calibration_images=calibration,
            calibration_split=CALIBRATION_SPLIT,
        )
    elif mode == "dynamic":
        record["method"] = "onnxruntime quantize_dynamic: int8 weights, activations at run time"
    else:
        record["method"] = "float16 weights and arithmetic, float32 inputs and outputs"
    return record


def quantized_onnx(
    float_onnx: bytes,
    mode: str,
    predictor: Predictor,
    data: ScoringData,
    calibration: int,
    exporter: str,
) -> tuple[str, bytes]:
    """(exporter description, the quantised ONNX model) made from the float one."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        converted = convert_float_to_float16(onnx.load_from_string(float_onnx), keep_io_types=True)
        return f"{exporter}, float16", converted.SerializeToString()
    if calibration < 1:
        raise UsageError(f"--calibration {calibration} must be at least 1")
    with tempfile.TemporaryDirectory(prefix="segcli-quantize-") as folder:
        raw, source = Path(folder) / "exported.onnx", Path(folder) / "float.onnx"
        target = Path(folder) / "quantized.onnx"
        raw.write_bytes(float_onnx)
        try:
            # shapes inferred and the graph optimised first, as onnxruntime recommends
            quant_pre_process(raw, source, skip_symbolic_shape=True)
            if mode == "dynamic":
                quantize_dynamic(source, target, weight_type=QuantType.QInt8)
            else:
                quantize_static(
                    source,
                    target,
                    CalibrationImages(predictor, data.calibration_images[:calibration]),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                )
        except Exception as exc:  # noqa: BLE001 - any quantiser failure is reported the same way
            raise PluginError(
                f"onnxruntime could not quantise this model ({mode}): {one_line(exc)}",
                hint="try another --quantize, or export without it",
            ) from None
        return f"{exporter}, onnxruntime quantize_{mode if mode == 'dynamic' else 'static'}", (
            target.read_bytes()
        )


class CalibrationImages:
    """onnxruntime's CalibrationDataReader: the images preprocessed exactly as `predict`
    preprocesses them (resized, normalised, padded to the size divisor), one at a time."""

    def __init__(self, predictor: Predictor, images: list[Path]) -> None:
        self.predictor = predictor
        self.images = iter(images)

    def get_next(self) -> dict[str, Any] | None:
        image_path = next(self.images, None)
        if image_path is None:
            return None
        image = read_image(image_path, self.predictor.channels, max_image_pixels(None))
        batch, _, _ = pad_to_multiple(
            self.predictor.preprocess(image)[None], self.predictor.preprocessing.size_divisor
        )
        return {"images": batch.numpy()}


def compare_scores(
    predictor: Predictor,
    data: ScoringData,
    *,
    reference: tuple[str, Any],
    exported: tuple[str, Any],
    max_drop: float,
) -> dict[str, Any]:
    """Both runners scored on the validation split with segcli's own metrics, predicting as
    `predict` does; the monitored metric of each, its drop, and each one's speed: of the
    same images, after one untimed batch (a runtime's first call sets up its buffers)."""
    pairs = labelled_pairs(data.dataset, SCORING_SPLIT)
    results = {}
    for role, (runtime, runner) in (("reference", reference), ("exported", exported)):
        scored = copy.copy(predictor)
        scored.model = runner
        warm_up = pairs[:WARM_UP_IMAGES]
        evaluate_split(scored, data.dataset, SCORING_SPLIT, pairs=warm_up, workers=0, metrics={})
        start = time.perf_counter()
        evaluation = evaluate_split(scored, data.dataset, SCORING_SPLIT, pairs=pairs, workers=0)
        seconds = time.perf_counter() - start
        results[role] = {"runtime": runtime, "evaluation": evaluation, "seconds": seconds}
    metric, higher_is_better = monitored_metric(predictor, results["reference"]["evaluation"])
    record: dict[str, Any] = {
        "dataset": str(data.dataset),
        "split": SCORING_SPLIT,
        "images": results["reference"]["evaluation"].images,
        "metric": metric,
    }
    for role, result in results.items():
        evaluation = result["evaluation"]
        record[role] = {
            "runtime": result["runtime"],
            "score": float(evaluation.metrics[metric]),
            "images_per_second": evaluation.images / result["seconds"],
        }
    change = record["exported"]["score"] - record["reference"]["score"]
    record["drop"] = (-change if higher_is_better else change) + 0.0  # + 0.0: never -0.0
    record["max_drop"] = max_drop
    record["speedup"] = (
        record["exported"]["images_per_second"] / record["reference"]["images_per_second"]
    )
    return record


def monitored_metric(predictor: Predictor, evaluation: SplitEvaluation) -> tuple[str, bool]:
    """(metric key, higher is better): the run's `train.monitor`, or where that is a loss
    (which evaluation does not compute), the first single-number score."""
    monitor = predictor.config.train.monitor
    scores = evaluation.metrics
    if monitor in scores:
        return monitor, predictor.config.train.monitor_mode == "max"
    for key, value in scores.items():
        if isinstance(value, int | float):
            return key, True
    raise PluginError(f"the metrics of {predictor.config.model.name!r} give no single score")
