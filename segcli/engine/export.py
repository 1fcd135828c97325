"""Exporting a checkpoint to ONNX or TorchScript, checked against PyTorch, with a sidecar JSON.

The exported graph maps normalised images (N, C, H, W) to logits (N, K, H, W). What happens
around it is described in the sidecar `<model file>.json`: classes and palette, the
checkpoint's preprocessing record (size, mean, std, channels, pixel scale, the resize and pad
policies of `segcli.engine.preprocess`, the size divisor inputs are padded to), and the
binary threshold; `segcli predict --checkpoint model.onnx` reads it back and does the same
pre- and postprocessing as for a checkpoint. ONNX goes through torch's dynamo exporter
(`torch.onnx.export(..., dynamo=True)`, needs `onnxscript`), TorchScript through
`torch.jit.trace`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segcli.engine.build import recorded_head
from segcli.engine.exported import (
    FORMATS,
    SIDECAR_VERSION,
    OnnxModel,
    load_torchscript,
    require_onnx,
    sidecar_path,
)
from segcli.engine.predictor import Predictor
from segcli.errors import PluginError, UsageError
from segcli.files import publish_file, temporary_file, write_error
from segcli.ledger import claim_outputs


class LogitsOnly(nn.Module):
    """The model with a plain tensor output (torchvision's dict outputs unwrapped)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        return logits["out"] if isinstance(logits, dict) else logits


@dataclass
class ExportReport:
    path: Path
    sidecar: Path
    exporter: str
    max_abs_diff: float
    checked_shapes: list[tuple[int, ...]] = field(default_factory=list)


def export_checkpoint(
    checkpoint: Path,
    fmt: str,
    out: Path | None = None,
    *,
    dynamic: bool = False,
    opset: int | None = None,
    tolerance: float = 1e-3,
    force: bool = False,
) -> ExportReport:
    """Export, check parity on sample inputs, then move the files into place (never half).

    Existing files are replaced only where segcli wrote them, or with `force`; the
    checkpoint never. The model is serialised in memory and both files are written to
    temporaries before either is renamed into place."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "onnx":
        require_onnx("export to ONNX", need_script=True)
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
    if dynamic:  # another batch size and image size prove the axes really are dynamic
        samples.append(
            torch.randn(
                2, predictor.channels, height + divisor, width + 2 * divisor, generator=generator
            )
        )
    path = Path(out) if out else checkpoint.with_suffix(FORMATS[fmt])
    if path.suffix != FORMATS[fmt]:
        raise UsageError(f"--out {path} should end in {FORMATS[fmt]} for --format {fmt}")
    sidecar = sidecar_path(path)
    ledger = claim_outputs([path, sidecar], inputs=[checkpoint], force=force)
    if fmt == "onnx":
        exporter, serialised = _export_onnx(model, samples[0], dynamic, opset)
    else:
        exporter, serialised = _export_torchscript(model, samples[0])
    description = describe(predictor, fmt, dynamic, (height, width), checkpoint)
    ledger.open_folder()
    staged: list[Path] = []
    try:
        staged.append(_stage(path, serialised))
        if fmt == "onnx":
            run = OnnxModel(staged[0], divisor, torch.device("cpu"))
        else:
            run = load_torchscript(staged[0], torch.device("cpu"))
        difference = parity(model, run, samples)
        if difference > tolerance:
            raise PluginError(
                f"the {fmt} export of {predictor.config.model.name!r} differs from PyTorch by "
                f"up to {difference:.3g} (tolerance {tolerance:g}); nothing was written",
                hint="pass a larger --tolerance to keep it anyway",
            )
        staged.append(_stage(sidecar, json.dumps(description, indent=2).encode()))
        # both files are complete before either takes its final name
        publish_file(staged[0], path, ledger)
        publish_file(staged[1], sidecar, ledger)
    finally:
        for temporary in staged:
            temporary.unlink(missing_ok=True)
    return ExportReport(path, sidecar, exporter, difference, [tuple(s.shape) for s in samples])


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
        "preprocessing": predictor.preprocessing.record(),
        "input": {
            "name": "images",
            "shape": ["batch", predictor.channels, "height", "width"]
            if dynamic
            else [1, predictor.channels, *size],
            "dynamic": dynamic,
        },
        "config": predictor.meta["config"],
    }


def _export_onnx(
    model: nn.Module, sample: torch.Tensor, dynamic: bool, opset: int | None
) -> tuple[str, bytes]:
    """The exporter's description and the ONNX model.

    The graph is built in memory (no file name given to the exporter), so an exporter
    failure is a PluginError and a failed write (a full disk) an error of the write."""
    dynamic_shapes = None
    if dynamic:
        dim = torch.export.Dim
        dynamic_shapes = {"images": {0: dim("batch"), 2: dim("height"), 3: dim("width")}}
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
            f"torch.onnx could not export this model: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            hint="try --format torchscript, or without --dynamic",
        ) from None
    return f"torch.onnx.export(dynamo=True), torch {torch.__version__}", serialised


def _export_torchscript(model: nn.Module, sample: torch.Tensor) -> tuple[str, bytes]:
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
            f"torch.jit.trace could not trace this model: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            hint="try --format onnx",
        ) from None
    return f"torch.jit.trace, torch {torch.__version__}", buffer.getvalue()
