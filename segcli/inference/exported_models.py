"""Running a model exported by `segcli export`: ONNX through onnxruntime, TorchScript through
torch.jit, OpenVINO IR through openvino, each called like a PyTorch model and described by
its sidecar JSON.

Both `segcli.inference.export` (to check an export against PyTorch) and prediction (to predict
with one) use this module; it imports neither of them.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segcli.errors import CheckpointError, ConfigError, UsageError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "openvino": ".xml"}
# 2: `preprocessing` is the checkpoint's preprocessing record (1: a description of it)
SIDECAR_VERSION = 2


def sidecar_path(model_path: Path) -> Path:
    return Path(model_path).with_name(Path(model_path).name + ".json")


def require_onnx(purpose: str, need_script: bool = False) -> None:
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


def runtime_threads() -> int:
    """CPU threads of ONNX Runtime and OpenVINO: PyTorch's own (`torch.get_num_threads()`:
    the physical cores, OMP_NUM_THREADS or `predict --threads`), so that every format of a
    model runs on the same cores and one setting governs them all."""
    return torch.get_num_threads()


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


class _ExportedGraph:
    """An exported graph called like a model on (N, C, H, W) tensors: the size checks and the
    batching shared by the ONNX Runtime and OpenVINO runners, which supply `_infer`."""

    path: Path
    size_divisor: int
    fixed_batch: int | None  # a graph exported for one batch size (segcli's have none)
    fixed_size: tuple[int, ...] | None

    def _set_input_shape(self, dims: list[int | None]) -> None:
        self.fixed_batch = dims[0]
        self.fixed_size = tuple(dims[2:]) if None not in dims[2:] else None

    def _infer(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def check_size(self, height: int, width: int) -> None:
        if self.fixed_size and (height, width) != self.fixed_size:
            raise UsageError(
                f"{self.path} was exported for {self.fixed_size[0]}x{self.fixed_size[1]} inputs, "
                f"not {height}x{width}",
                hint="export again with --dynamic to predict with --tile or at native sizes",
            )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.check_size(*images.shape[2:])
        array = np.ascontiguousarray(images.detach().cpu().float().numpy())
        batch = self.fixed_batch
        if batch is None or batch == len(array):
            return torch.from_numpy(self._infer(array))
        # a graph of a fixed batch runs the images in chunks of that batch, the last chunk
        # filled up with zeros whose outputs are dropped
        outputs = []
        for first in range(0, len(array), batch):
            chunk = array[first : first + batch]
            filled = np.concatenate(
                [chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)]
            )
            outputs.append(self._infer(filled)[: len(chunk)])
        return torch.from_numpy(np.concatenate(outputs))


class OnnxModel(_ExportedGraph):
    """An onnxruntime session called like a model; `size_divisor` tells the engine how to pad.

    `model` is an `.onnx` file or the serialised model itself (profiling, re-scoring)."""

    def __init__(self, model: Path | bytes, size_divisor: int, device: torch.device) -> None:
        import onnxruntime  # optional dependency (segcli[onnx]), checked by require_onnx

        self.path = Path("<ONNX model in memory>") if isinstance(model, bytes) else Path(model)
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        source = model if isinstance(model, bytes) else str(model)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = runtime_threads()
        # Busy-waiting for the next run, onnxruntime's threads would take the cores from the
        # torch operations between runs (normalising, softmax, resizing back): on 2 cores
        # those ran up to 100x slower and `predict` at a third of the bare session's speed.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(source, options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise CheckpointError(
                f"onnxruntime cannot load {self.path}: {str(exc).splitlines()[0]}"
            ) from None
        self.input = self.session.get_inputs()[0]
        self.size_divisor = size_divisor
        self._set_input_shape([d if isinstance(d, int) else None for d in self.input.shape])

    def _infer(self, array: np.ndarray) -> np.ndarray:
        feed = {self.input.name: array.astype(self.input_dtype, copy=False)}
        logits = self.session.run(None, feed)[0]
        return logits.astype(np.float32, copy=False)

    @property
    def input_dtype(self) -> type:
        """float16 for an fp16 export (`--quantize fp16`), else float32."""
        return np.float16 if self.input.type == "tensor(float16)" else np.float32


class OpenVinoModel(_ExportedGraph):
    """An OpenVINO model compiled for the CPU, called like a model.

    `model` is an OpenVINO IR `.xml` file (its weights in the `.bin` beside it) or a
    serialised ONNX model. Inference runs in float32: on CPUs with bf16 units OpenVINO would
    otherwise pick bf16 and the results would no longer match PyTorch."""

    def __init__(self, model: Path | bytes, size_divisor: int) -> None:
        require_openvino("run an OpenVINO model")
        import openvino  # optional dependency (segcli[openvino]), checked just above

        self.path = Path("<ONNX model in memory>") if isinstance(model, bytes) else Path(model)
        try:
            core = openvino.Core()
            read = core.read_model(model if isinstance(model, bytes) else str(model))
            self.compiled = core.compile_model(
                read,
                "CPU",
                {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": runtime_threads()},
            )
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own untyped errors
            raise CheckpointError(
                f"OpenVINO cannot load {self.path}: {str(exc).strip().splitlines()[0]}"
            ) from None
        self.request = self.compiled.create_infer_request()
        self.size_divisor = size_divisor
        shape = self.compiled.inputs[0].get_partial_shape()
        self._set_input_shape([d.get_length() if d.is_static else None for d in shape])

    def _infer(self, array: np.ndarray) -> np.ndarray:
        return np.array(self.request.infer([array])[0], dtype=np.float32)


def openvino_installed() -> bool:
    return _importable("openvino")


def require_openvino(purpose: str) -> None:
    if not openvino_installed():
        raise ConfigError(
            f"to {purpose}, segcli needs openvino, which is not installed",
            hint='pip install "segcli[openvino]"',
        )


class ScriptedModel(nn.Module):
    def __init__(self, module: torch.jit.ScriptModule, size_divisor: int) -> None:
        super().__init__()
        self.module_ = module
        self.size_divisor = size_divisor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module_(images)


def load_exported(path: Path, device: torch.device) -> tuple[dict[str, Any], Any]:
    """(metadata as in a checkpoint, callable model) for an `.onnx`, TorchScript `.pt` or
    OpenVINO `.xml` file."""
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
        _check_sidecar_version(path, sidecar, meta.get("segcli_export"))
        divisor = int(meta["preprocessing"]["size_divisor"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{sidecar} is not a segcli export sidecar ({exc})") from None
    if path.suffix == ".onnx":
        require_onnx(f"predict with {path.name}")
        return meta, OnnxModel(path, divisor, device)
    if path.suffix == ".xml":  # run on the CPU whatever --device says; inputs are moved there
        return meta, OpenVinoModel(path, divisor)
    return meta, ScriptedModel(load_torchscript(path, device), divisor).eval()


def _check_sidecar_version(path: Path, sidecar: Path, recorded: Any) -> None:
    """A CheckpointError unless the sidecar is of the one version this segcli reads: an older
    one describes its preprocessing otherwise, so the export is made again rather than read
    by a guess. A version that is not a number is a TypeError (not a sidecar at all)."""
    if recorded == SIDECAR_VERSION:
        return
    if recorded is not None and (isinstance(recorded, bool) or not isinstance(recorded, int)):
        raise TypeError(f"its segcli_export is {recorded!r}, not a version number")
    reads = f"this segcli reads version {SIDECAR_VERSION}"
    if recorded is not None and recorded > SIDECAR_VERSION:
        raise CheckpointError(
            f"export sidecar {sidecar} has version {recorded}, newer than this segcli; {reads}",
            hint="upgrade segcli (pip install --upgrade segcli) to predict with it",
        )
    fmt = next((name for name, suffix in FORMATS.items() if suffix == path.suffix), "onnx")
    raise CheckpointError(
        f"export sidecar {sidecar} is of version {recorded or 1}, written by an earlier segcli; "
        f"{reads}",
        hint=f"export the run again: segcli export --checkpoint RUN --format {fmt}",
    )


def load_torchscript(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of torch.export
            return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a TorchScript model: {str(exc).strip().splitlines()[0]}"
        ) from None
