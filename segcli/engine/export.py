"""Exporting a checkpoint to ONNX or TorchScript, checked against PyTorch, with a sidecar JSON.

The exported graph maps normalised images (N, C, H, W) to logits (N, K, H, W). What happens
around it is described in the sidecar `<model file>.json`: classes and palette, the input
preprocessing (size, mean, std, channels), the size divisor inputs are padded to, and the
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

import numpy as np
import torch
from torch import nn

from segcli.data.io import OutputLedger, atomic_write, publish_file, temporary_file, write_error
from segcli.engine.build import recorded_head
from segcli.errors import CheckpointError, ConfigError, PluginError, UsageError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
SIDECAR_VERSION = 1


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


def sidecar_path(model_path: Path) -> Path:
    return Path(model_path).with_name(Path(model_path).name + ".json")


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

    Existing files are replaced only where segcli wrote them, or with `force`."""
    from segcli.engine.predict import Predictor

    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx("export to ONNX", need_script=True)
    checkpoint = Path(checkpoint)
    predictor = Predictor(checkpoint, "cpu", amp="off")
    model = LogitsOnly(predictor.model).eval()
    divisor = int(getattr(predictor.model, "size_divisor", 1) or 1)
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
    if checkpoint.resolve() in (path.resolve(), sidecar.resolve()):
        raise UsageError(f"--out {path} would replace the checkpoint", hint="choose another --out")
    ledger = OutputLedger(path.parent)
    ledger.check_replaceable([path, sidecar], force)
    try:
        handle, temporary = temporary_file(path.parent)
        os.close(handle)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        if fmt == "onnx":
            exporter = _export_onnx(model, samples[0], temporary, dynamic, opset)
            run = _OnnxModel(temporary, divisor, torch.device("cpu"))
        else:
            exporter = _export_torchscript(model, samples[0], temporary)
            run = _load_torchscript(temporary, torch.device("cpu"))
        difference = parity(model, run, samples)
        if difference > tolerance:
            raise PluginError(
                f"the {fmt} export of {predictor.config.model.name!r} differs from PyTorch by "
                f"up to {difference:.3g} (tolerance {tolerance:g}); nothing was written",
                hint="pass a larger --tolerance to keep it anyway",
            )
        publish_file(temporary, path, ledger)
    finally:
        temporary.unlink(missing_ok=True)
    with atomic_write(sidecar, ledger=ledger) as stream:
        description = describe(predictor, fmt, dynamic, divisor, (height, width), checkpoint)
        stream.write(json.dumps(description, indent=2).encode())
    return ExportReport(path, sidecar, exporter, difference, [tuple(s.shape) for s in samples])


@torch.no_grad()
def parity(model: nn.Module, exported: Any, samples: list[torch.Tensor]) -> float:
    """Largest absolute difference of the logits over all samples."""
    worst = 0.0
    for sample in samples:
        expected = model(sample)
        worst = max(worst, float((exported(sample).float() - expected).abs().max()))
    return worst


def describe(
    predictor: Any, fmt: str, dynamic: bool, divisor: int, size: tuple[int, int], checkpoint: Path
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
        if recorded_head(config, predictor.meta, source=checkpoint).single_logit
        else "class logits (argmax)",
        "threshold": config.train.threshold,
        "preprocessing": {
            "resize": list(predictor.size) if predictor.size else None,
            "resize_mode": "bilinear, antialiased; logits resized back to the image size"
            if predictor.size
            else "none: native size",
            "scale": "pixel / 255 (16-bit images: / 65535)",
            "mean": predictor.mean,
            "std": predictor.std,
            "pad_to_multiple_of": divisor,
            "pad_mode": "reflect, bottom/right; logits cropped back",
        },
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
    model: nn.Module, sample: torch.Tensor, path: Path, dynamic: bool, opset: int | None
) -> str:
    dynamic_shapes = None
    if dynamic:
        dim = torch.export.Dim
        dynamic_shapes = {"images": {0: dim("batch"), 2: dim("height"), 3: dim("width")}}
    chatter = io.StringIO()  # the exporter prints its progress; keep the CLI output ours
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (sample,),
                str(path),
                dynamo=True,
                external_data=False,
                input_names=["images"],
                output_names=["logits"],
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported the same way
        raise PluginError(
            f"torch.onnx could not export this model: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            hint="try --format torchscript, or without --dynamic",
        ) from None
    return f"torch.onnx.export(dynamo=True), torch {torch.__version__}"


def _export_torchscript(model: nn.Module, sample: torch.Tensor, path: Path) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, sample)
            torch.jit.save(traced, str(path))
    except Exception as exc:  # noqa: BLE001 - any tracer failure is reported the same way
        raise PluginError(
            f"torch.jit.trace could not trace this model: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            hint="try --format onnx",
        ) from None
    return f"torch.jit.trace, torch {torch.__version__}"


def _require_onnx(purpose: str, need_script: bool = False) -> None:
    missing = [
        name
        for name in ("onnx", "onnxruntime", *(("onnxscript",) if need_script else ()))
        if not _importable(name)
    ]
    if missing:
        raise ConfigError(
            f"to {purpose}, segcli needs {' and '.join(missing)}, which are not installed",
            hint="pip install 'segcli[onnx]'",
        )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class _OnnxModel:
    """An onnxruntime session called like a model; `size_divisor` tells the engine how to pad."""

    def __init__(self, path: Path, size_divisor: int, device: torch.device) -> None:
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise CheckpointError(
                f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}"
            ) from None
        self.input = self.session.get_inputs()[0]
        self.size_divisor = size_divisor
        self.path = path
        dims = [d if isinstance(d, int) else None for d in self.input.shape]
        self.static_batch = dims[0] is not None
        self.fixed_size = tuple(dims[2:]) if None not in dims[2:] else None

    def check_size(self, height: int, width: int) -> None:
        if self.fixed_size and (height, width) != self.fixed_size:
            raise UsageError(
                f"{self.path} was exported for {self.fixed_size[0]}x{self.fixed_size[1]} inputs, "
                f"not {height}x{width}",
                hint="export again with --dynamic to predict with --tile or at native sizes",
            )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.check_size(*images.shape[2:])
        array = images.detach().cpu().float().numpy()
        if self.static_batch:  # one image per run
            outputs = [
                self.session.run(None, {self.input.name: array[i : i + 1]})[0]
                for i in range(array.shape[0])
            ]
            return torch.from_numpy(np.concatenate(outputs))
        return torch.from_numpy(self.session.run(None, {self.input.name: array})[0])


class _ScriptedModel(nn.Module):
    def __init__(self, module: torch.jit.ScriptModule, size_divisor: int) -> None:
        super().__init__()
        self.module_ = module
        self.size_divisor = size_divisor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module_(images)


def load_exported(path: Path, device: torch.device) -> tuple[dict[str, Any], Any]:
    """(metadata as in a checkpoint, callable model) for an `.onnx` or TorchScript `.pt` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"exported model {path} does not exist")
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise CheckpointError(
            f"{path} has no sidecar {sidecar.name} with its classes and preprocessing",
            hint="export with `segcli export`, which writes both files; keep them together",
        )
    try:
        meta = json.loads(sidecar.read_text())
        divisor = int(meta["preprocessing"]["pad_to_multiple_of"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{sidecar} is not a segcli export sidecar ({exc})") from None
    if path.suffix == ".onnx":
        _require_onnx(f"predict with {path.name}")
        return meta, _OnnxModel(path, divisor, device)
    return meta, _ScriptedModel(_load_torchscript(path, device), divisor).eval()


def _load_torchscript(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of torch.export
            return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a TorchScript model: {str(exc).strip().splitlines()[0]}"
        ) from None
