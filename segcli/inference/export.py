"""`export_checkpoint`: a checkpoint exported to ONNX, TorchScript or OpenVINO, checked
against PyTorch, with a sidecar JSON, and every file moved into place only when all are right.

The exported graph maps normalised images (N, C, H, W) to logits (N, K, H, W); how it is made
is `segcli.inference.graphs`. What happens around it is described in the sidecar
`<model file>.json`: classes and palette, the checkpoint's preprocessing record (size, mean,
std, channels, pixel scale, the resize and pad policies of `segcli.inference.preprocessing`,
the size divisor inputs are padded to), and the binary threshold; `segcli predict
--checkpoint model.onnx` reads it back and does the same pre- and postprocessing as for a
checkpoint. A quantised or OpenVINO export is re-scored against the float model
(`segcli.inference.quantization`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segcli.building import recorded_head
from segcli.errors import PluginError, UsageError
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
from segcli.inference.graphs import (
    LogitsOnly,
    export_onnx_bytes,
    export_torchscript_bytes,
    openvino_ir,
)
from segcli.inference.predictor import Predictor
from segcli.inference.quantization import (
    DEFAULT_CALIBRATION,
    DEFAULT_MAX_DROP,
    QUANTIZATIONS,
    SCORING_SPLIT,
    compare_scores,
    quantization_record,
    quantized_onnx,
    rescoring_dataset,
)
from segcli.ledger import claim_outputs


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
        # learned on the validation images; the Predictor that reads the sidecar applies them
        "post_processing": predictor.meta.get("post_processing"),
        "tta": predictor.meta.get("tta"),
        "preprocessing": predictor.preprocessing.record(),
        "input": {
            "name": "images",
            "shape": ["batch", predictor.channels, *(("height", "width") if dynamic else size)],
            "dynamic": dynamic,
        },
        "config": predictor.meta["config"],
    }
