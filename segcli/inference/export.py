"""Exporting a checkpoint to ONNX or TorchScript, checked against PyTorch, with a sidecar JSON.

The exported graph maps normalised images (N, C, H, W) to logits (N, K, H, W). What happens
around it is described in the sidecar `<model file>.json`: classes and palette, the
checkpoint's preprocessing record (size, mean, std, channels, pixel scale, the resize and pad
policies of `segcli.inference.preprocessing`, the size divisor inputs are padded to), and the
binary threshold; `segcli predict --checkpoint model.onnx` reads it back and does the same
pre- and postprocessing as for a checkpoint. ONNX goes through torch's dynamo exporter
(`torch.onnx.export(..., dynamo=True)`, needs `onnxscript`), TorchScript through
`torch.jit.trace`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segcli.building import recorded_head
from segcli.data.format import read_dataset_info, split_files
from segcli.data.images import max_image_pixels, read_image
from segcli.errors import DataError, PluginError, UsageError
from segcli.evaluation import (
    SplitEvaluation,
    check_classes,
    evaluate_split,
    labelled_pairs,
)
from segcli.files import publish_file, temporary_file, write_error
from segcli.inference.exported_models import (
    FORMATS,
    SIDECAR_VERSION,
    OnnxModel,
    OpenVinoModel,
    load_torchscript,
    require_onnx,
    require_openvino,
    sidecar_path,
)
from segcli.inference.predictor import Predictor
from segcli.inference.preprocessing import pad_to_multiple
from segcli.ledger import claim_outputs
from segcli.registry import one_line


class LogitsOnly(nn.Module):
    """The model with a plain tensor output (torchvision's dict outputs unwrapped)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        return logits["out"] if isinstance(logits, dict) else logits


QUANTIZATIONS = ("int8", "dynamic", "fp16")
DEFAULT_CALIBRATION = 200
DEFAULT_MAX_DROP = 0.01
CALIBRATION_SPLIT, SCORING_SPLIT = "train", "val"


@dataclass
class ExportReport:
    path: Path
    sidecar: Path
    exporter: str
    max_abs_diff: float
    checked_shapes: list[tuple[int, ...]] = field(default_factory=list)
    # the float and the exported model scored on the validation split (quantised, OpenVINO)
    accuracy: dict[str, Any] | None = None
    extra_files: list[Path] = field(default_factory=list)


def export_checkpoint(
    checkpoint: Path,
    fmt: str,
    out: Path | None = None,
    *,
    dynamic: bool = False,
    opset: int | None = None,
    tolerance: float = 1e-3,
    force: bool = False,
    quantize: str | None = None,
    calibration: int = DEFAULT_CALIBRATION,
    max_drop: float = DEFAULT_MAX_DROP,
    keep_anyway: bool = False,
    dataset: Path | None = None,
) -> ExportReport:
    """Export, check parity on sample inputs, then move the files into place (never half).

    A quantised (`quantize`) or OpenVINO export is also scored on the validation split of
    the run's prepared dataset (or `dataset`) next to the float ONNX model, and refused
    (PluginError, nothing written) when the monitored metric drops by more than `max_drop`,
    unless `keep_anyway`. Existing files are replaced only where segcli wrote them, or with
    `force`; the checkpoint never. The model is serialised in memory and all files are
    written to temporaries before any is renamed into place."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise UsageError(f"unknown --quantize {quantize!r}; valid: {', '.join(QUANTIZATIONS)}")
    if quantize is not None and fmt != "onnx":
        raise UsageError(
            f"--quantize applies to --format onnx, not {fmt}",
            hint="OpenVINO runs the float model; quantise with --format onnx --quantize int8",
        )
    if fmt in ("onnx", "openvino"):
        require_onnx(f"export to {fmt}", need_script=True)
    if fmt == "openvino":
        require_openvino("export to OpenVINO")
    checkpoint = Path(checkpoint)
    predictor = Predictor(checkpoint, "cpu", amp="off")
    model = LogitsOnly(predictor.model).eval()
    divisor = predictor.preprocessing.size_divisor
    if predictor.size:
        height, width = (-(-side // divisor) * divisor for side in predictor.size)
    elif dynamic:
        height = width = -(-64 // divisor) * divisor
    else:
        raise UsageError(
            f"{checkpoint} was trained at native image sizes, so there is no fixed input size",
            hint="export with --dynamic",
        )
    generator = torch.Generator().manual_seed(0)
    samples = [torch.randn(1, predictor.channels, height, width, generator=generator)]
    # another batch size (and with --dynamic, image size) proves the axes really are dynamic
    grow = (divisor, 2 * divisor) if dynamic else (0, 0)
    samples.append(
        torch.randn(2, predictor.channels, height + grow[0], width + grow[1], generator=generator)
    )
    path = Path(out) if out else checkpoint.with_suffix(FORMATS[fmt])
    if path.suffix != FORMATS[fmt]:
        raise UsageError(f"--out {path} should end in {FORMATS[fmt]} for --format {fmt}")
    sidecar = sidecar_path(path)
    # an OpenVINO model is two files: the graph (.xml) and its weights (.bin)
    outputs = [path, *([path.with_suffix(".bin")] if fmt == "openvino" else []), sidecar]
    rescored = quantize is not None or fmt == "openvino"
    scoring_data = rescoring_dataset(predictor, dataset) if rescored else None
    ledger = claim_outputs(outputs, inputs=[checkpoint], force=force)
    if fmt == "torchscript":
        exporter, serialised = export_torchscript_bytes(model, samples[0])
        files = {path: serialised}
    else:
        exporter, float_onnx = export_onnx_bytes(model, samples[0], dynamic, opset)
        float_runner = OnnxModel(float_onnx, divisor, torch.device("cpu"))
        difference = parity(model, float_runner, samples)
        _check_parity(difference, tolerance, "onnx", predictor)
        files = {path: float_onnx}
    description = describe(predictor, fmt, dynamic, (height, width), checkpoint)
    accuracy = None
    if scoring_data is not None:
        if quantize is not None:
            exporter, files[path] = quantized_onnx(
                float_onnx, quantize, predictor, scoring_data, calibration, exporter
            )
            calibrated = len(scoring_data.calibration_images[:calibration])
            description["quantization"] = quantization_record(quantize, calibrated)
            exported_runner: Any = OnnxModel(files[path], divisor, torch.device("cpu"))
            runtime = f"onnxruntime {quantize}"
        else:
            exporter, graph, graph_weights = openvino_ir(float_onnx, exporter)
            files = {path: graph, path.with_suffix(".bin"): graph_weights}
            exported_runner = None  # loaded below from the staged files, as predict loads them
            runtime = "openvino float32"
    description["exporter"] = exporter
    ledger.open_folder()
    staged: dict[Path, Path] = {}
    try:
        for destination, data in files.items():
            staged[destination] = _stage(destination, data)
        if fmt == "openvino":
            # OpenVINO reads the weights from the file beside the graph, named like it
            weights, beside = path.with_suffix(".bin"), staged[path].with_suffix(".bin")
            os.replace(staged[weights], beside)
            staged[weights] = beside
            exported_runner = OpenVinoModel(staged[path], divisor)
        elif fmt == "torchscript":
            exported_runner = load_torchscript(staged[path], torch.device("cpu"))
        if fmt in ("torchscript", "openvino"):
            difference = parity(model, exported_runner, samples)
            _check_parity(difference, tolerance, fmt, predictor)
        if scoring_data is not None:
            accuracy = compare_scores(
                predictor,
                scoring_data,
                reference=("onnxruntime float32", float_runner),
                exported=(runtime, exported_runner),
                max_drop=max_drop,
            )
            accuracy["kept_anyway"] = keep_anyway and accuracy["drop"] > max_drop
            if accuracy["drop"] > max_drop and not keep_anyway:
                raise PluginError(
                    f"the {runtime} export of {predictor.config.model.name!r} scores "
                    f"{accuracy['metric']} {accuracy['exported']['score']:.4f} on "
                    f"{accuracy['images']} {SCORING_SPLIT} image(s), against "
                    f"{accuracy['reference']['score']:.4f} for the float model: a drop of "
                    f"{accuracy['drop']:.4f}, above --max-drop {max_drop:g}; nothing was written",
                    hint="keep it with --keep-anyway, allow more with --max-drop, or export "
                    + ("without --quantize" if quantize else "with --format onnx"),
                )
            description["accuracy_check"] = accuracy
        staged[sidecar] = _stage(sidecar, json.dumps(description, indent=2).encode())
        # every file is complete before any takes its final name
        for destination, temporary in staged.items():
            publish_file(temporary, destination, ledger)
    finally:
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)
    return ExportReport(
        path,
        sidecar,
        exporter,
        difference,
        [tuple(s.shape) for s in samples],
        accuracy,
        [destination for destination in files if destination != path],
    )


def _check_parity(difference: float, tolerance: float, fmt: str, predictor: Predictor) -> None:
    if difference > tolerance:
        raise PluginError(
            f"the {fmt} export of {predictor.config.model.name!r} differs from PyTorch by "
            f"up to {difference:.3g} (tolerance {tolerance:g}); nothing was written",
            hint="pass a larger --tolerance to keep it anyway",
        )


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


def openvino_ir(float_onnx: bytes, exporter: str) -> tuple[str, bytes, bytes]:
    """(exporter description, the IR graph .xml, its weights .bin) converted from ONNX."""
    import tempfile

    import openvino

    with tempfile.TemporaryDirectory(prefix="segcli-openvino-") as folder:
        graph = Path(folder) / "model.xml"
        try:
            converted = openvino.Core().read_model(float_onnx)
            openvino.save_model(converted, graph, compress_to_fp16=False)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own untyped errors
            raise PluginError(
                f"OpenVINO cannot convert this model: {one_line(exc)}",
                hint="export it with --format onnx instead",
            ) from None
        return (
            f"{exporter}, OpenVINO {openvino.get_version()}",
            graph.read_bytes(),
            graph.with_suffix(".bin").read_bytes(),
        )


def compare_scores(
    predictor: Predictor,
    data: ScoringData,
    *,
    reference: tuple[str, Any],
    exported: tuple[str, Any],
    max_drop: float,
) -> dict[str, Any]:
    """Both runners scored on the validation split with segcli's own metrics, predicting as
    `predict` does; the monitored metric of each, its drop, and each one's speed."""
    results = {}
    for role, (runtime, runner) in (("reference", reference), ("exported", exported)):
        scored = copy.copy(predictor)
        scored.model = runner
        start = time.perf_counter()
        evaluation = evaluate_split(scored, data.dataset, SCORING_SPLIT, workers=0)
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


def _stage(path: Path, data: bytes) -> Path:
    """A temporary file next to `path` holding `data`; a failed write (a full disk) removes
    it and is a ResourceError (or an OutputError) naming `path`."""
    try:
        handle, temporary = temporary_file(path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
    except BaseException as exc:  # a full disk, or Ctrl-C: no partial temporary is kept
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    return temporary


@torch.no_grad()
def parity(model: nn.Module, exported: Any, samples: list[torch.Tensor]) -> float:
    """Largest absolute difference of the logits over all samples."""
    worst = 0.0
    for sample in samples:
        expected = model(sample)
        worst = max(worst, float((exported(sample).float() - expected).abs().max()))
    return worst


def describe(
    predictor: Predictor,
    fmt: str,
    dynamic: bool,
    size: tuple[int, int],
    checkpoint: Path,
) -> dict[str, Any]:
    """The sidecar: everything needed to use the exported graph, in segcli or elsewhere."""
    config = predictor.config
    return {
        "segcli_export": SIDECAR_VERSION,
        "format": fmt,
        "model": config.model.name,
        "source_checkpoint": str(checkpoint),
        "dataset": predictor.meta.get("dataset"),
        "classes": predictor.meta["classes"],
        "palette": [list(color) for color in predictor.palette],
        "image_channels": predictor.channels,
        "outputs": "one logit (sigmoid > threshold)"
        if recorded_head(predictor.meta, source=checkpoint).single_logit
        else "class logits (argmax)",
        "threshold": config.train.threshold,
        # learned on the validation images; the Predictor that reads the sidecar applies it
        "post_processing": predictor.meta.get("post_processing"),
        "preprocessing": predictor.preprocessing.record(),
        "input": {
            "name": "images",
            "shape": ["batch", predictor.channels, *(("height", "width") if dynamic else size)],
            "dynamic": dynamic,
        },
        "config": predictor.meta["config"],
    }


def export_onnx_bytes(
    model: nn.Module, sample: torch.Tensor, dynamic: bool, opset: int | None
) -> tuple[str, bytes]:
    """The exporter's description and the ONNX model: its batch axis is always dynamic (so
    `predict --batch-size` batches), its height and width with `dynamic`.

    The graph is built in memory (no file name given to the exporter), so an exporter
    failure is a PluginError and a failed write (a full disk) an error of the write."""
    dim = torch.export.Dim
    axes = {0: dim("batch")}
    if dynamic:
        axes.update({2: dim("height"), 3: dim("width")})
    dynamic_shapes = {"images": axes}
    chatter = io.StringIO()  # the exporter prints its progress; keep the CLI output ours
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (sample,),
                dynamo=True,
                input_names=["images"],
                output_names=["logits"],
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
            )
            serialised = program.model_proto.SerializeToString()
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported the same way
        raise PluginError(
            f"torch.onnx could not export this model: {one_line(exc)}",
            hint="try --format torchscript, or without --dynamic",
        ) from None
    return f"torch.onnx.export(dynamo=True), torch {torch.__version__}", serialised


def export_torchscript_bytes(model: nn.Module, sample: torch.Tensor) -> tuple[str, bytes]:
    """The exporter's description and the TorchScript archive.

    torch.jit.save is given a memory buffer, never a file: its C++ zip writer throws from a
    destructor when a write fails, which aborts the process (exit 134) on a full disk and
    leaves a partial file. The archive is written by Python instead, whose errors are
    ordinary exceptions."""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, sample)
            torch.jit.save(traced, buffer)
    except Exception as exc:  # noqa: BLE001 - any tracer failure is reported the same way
        raise PluginError(
            f"torch.jit.trace could not trace this model: {one_line(exc)}",
            hint="try --format onnx",
        ) from None
    return f"torch.jit.trace, torch {torch.__version__}", buffer.getvalue()
