"""A PyTorch model serialised in memory to a deployable graph: ONNX through torch's dynamo
exporter, TorchScript through `torch.jit.trace`, OpenVINO IR converted from the ONNX graph.

Nothing here writes a file the user sees: each function returns bytes (and a description of
the exporter), so that `segcli export` can check them before any file takes its name and
`segcli profile` can time them without writing at all. Every exporter failure is a
PluginError.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from segcli.errors import PluginError
from segcli.registry import one_line


class LogitsOnly(nn.Module):
    """The model with a plain tensor output (torchvision's dict outputs unwrapped)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        return logits["out"] if isinstance(logits, dict) else logits


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
