"""Predicting with an exported model as with its checkpoint: the same probabilities with
test-time flips and with sliding windows in every format, batches of any size, and the
threads of PyTorch (issue 21, item 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segcli.testing.tools import require_module

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "openvino": ".xml"}


def _require(fmt: str) -> None:
    if fmt != "torchscript":
        require_module("onnxruntime")
        require_module("onnxscript")
    if fmt == "openvino":
        pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory) -> dict[str, Path]:
    """The trained run exported with --dynamic, once per format installed here."""
    from segcli.inference.export import export_checkpoint

    folder = tmp_path_factory.mktemp("exports")
    made = {}
    for fmt, suffix in FORMATS.items():
        try:
            _require(fmt)
        except pytest.skip.Exception:
            continue
        made[fmt] = folder / f"model{suffix}"
        export_checkpoint(trained_run / "best.safetensors", fmt, made[fmt], dynamic=True)
    return made


def _probabilities(predictor, image: np.ndarray, **tiling) -> np.ndarray:
    """(K, H, W) class probabilities of one image, assembled from the emitted strips."""
    result = np.zeros((predictor.num_classes, *image.shape[:2]), np.float32)

    def keep(top: int, probs: torch.Tensor) -> None:
        result[:, top : top + probs.shape[1]] = probs.numpy()

    predictor.predict_image(image, keep, **tiling)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize(
    "tta, tiling",
    [
        ("flip-hv", {}),
        ("none", {"tile": 24, "overlap": 0.25, "batch_size": 4}),
        ("flip", {"tile": 32, "overlap": 0.5, "batch_size": 3}),
    ],
    ids=["tta", "tiles", "tta-and-tiles"],
)
def test_an_export_predicts_the_probabilities_of_its_checkpoint(
    trained_run, shapes_dataset, exports, fmt, tta, tiling
):
    _require(fmt)
    from segcli.inference.predictor import Predictor

    source = sorted((shapes_dataset / "val" / "images").iterdir())[0]
    # not square, not a multiple of the tile: the last windows overlap more, as in real use
    image = np.array(Image.open(source).convert("RGB").resize((61, 50)))
    expected = _probabilities(
        Predictor(trained_run / "best.safetensors", "cpu", tta=tta), image, **tiling
    )
    actual = _probabilities(Predictor(exports[fmt], "cpu", tta=tta), image, **tiling)
    assert np.abs(actual - expected).max() < 1e-4


def _fixed_batch_onnx(model: torch.nn.Module, sample: torch.Tensor, batch: int) -> bytes:
    """An ONNX graph of `model` whose batch axis is fixed at `batch`, as other exporters
    (or older segcli versions, batch 1) wrote them."""
    import onnx

    from segcli.inference.export import export_onnx_bytes

    graph = onnx.load_from_string(export_onnx_bytes(model, sample, False, None)[1])
    for value in (*graph.graph.input, *graph.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    return graph.SerializeToString()


@pytest.mark.parametrize("fixed", [1, 2])
def test_a_graph_of_a_fixed_batch_runs_any_number_of_images(trained_run, fixed):
    _require("onnx")
    from segcli.inference.export import LogitsOnly
    from segcli.inference.exported_models import OnnxModel
    from segcli.inference.predictor import Predictor

    model = LogitsOnly(Predictor(trained_run / "best.safetensors", "cpu").model).eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    runner = OnnxModel(_fixed_batch_onnx(model, images[:1], fixed), 4, torch.device("cpu"))
    assert runner.fixed_batch == fixed
    with torch.no_grad():
        expected = model(images)
    for count in (1, 3):
        assert (runner(images[:count]) - expected[:count]).abs().max() < 1e-4


def test_an_onnx_export_without_dynamic_still_takes_any_batch(trained_run, tmp_path):
    """`--dynamic` frees height and width; the batch axis is always free, so `predict
    --batch-size` runs whole batches through the graph."""
    _require("onnx")
    import json

    import onnx

    from segcli.inference.export import export_checkpoint
    from segcli.inference.exported_models import OnnxModel

    path = tmp_path / "model.onnx"
    report = export_checkpoint(trained_run / "best.safetensors", "onnx", path)
    assert report.checked_shapes == [(1, 3, 32, 32), (2, 3, 32, 32)]
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    runner = OnnxModel(path, 4, torch.device("cpu"))
    assert runner.fixed_batch is None and runner.fixed_size == (32, 32)
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["input"]["shape"] == ["batch", 3, 32, 32]


@pytest.fixture
def one_thread():
    """PyTorch limited to one thread for the test, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_onnx_runtime_and_openvino_run_on_the_threads_of_pytorch(
    trained_run, exports, fmt, one_thread
):
    _require(fmt)
    from segcli.inference.exported_models import load_exported

    _, runner = load_exported(exports[fmt], torch.device("cpu"))
    if fmt == "onnx":
        options = runner.session.get_session_options()
        assert options.intra_op_num_threads == 1
        # idle threads sleep: spinning, they took the cores from the torch work between runs
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    else:
        assert runner.compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_predict_threads_sets_the_threads_of_every_format(cli, exports, image_tree, tmp_path):
    before = torch.get_num_threads()
    try:
        result = cli(
            "predict",
            str(image_tree / "a.png"),
            "--checkpoint",
            str(exports["torchscript"]),
            "--threads",
            "1",
            "--out",
            str(tmp_path / "out"),
        )
        assert result.exit_code == 0, result.stderr
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "out" / "a.png").is_file()
