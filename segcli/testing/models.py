"""`check_model`: the contract of a model plugin (output shape, gradients, batches of one,
eval-mode determinism, state-dict round trip), and `padded_forward`."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segcli.errors import SegcliError
from segcli.inference.preprocessing import crop_padding, pad_to_multiple, size_divisor
from segcli.testing.contract import (
    ABSOLUTE_TOLERANCE,
    RELATIVE_TOLERANCE,
    build_component,
    component_name,
    describe,
    fail,
    few,
    options_for,
)


def padded_forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run `model` as the engine does, without the final resize: pad the input to a multiple
    of the model's `size_divisor` and crop the logits back, by the engine's pad policy
    (`segcli.inference.preprocessing`: reflection, bottom/right)."""
    images, pad_h, pad_w = pad_to_multiple(images, size_divisor(model))
    logits = model(images)
    if isinstance(logits, dict):
        logits = logits["out"]
    return crop_padding(logits, pad_h, pad_w)


def check_model(
    factory: Callable[..., nn.Module],
    *,
    num_classes: int = 3,
    in_channels: int = 3,
    options: Mapping[str, Any] | None = None,
    sizes: Sequence[tuple[int, int]] | None = None,
    name: str | None = None,
) -> None:
    """Check a model factory ``(num_classes, in_channels, **options) -> nn.Module``.

    `options` default to ``factory.test_options``; `sizes` to 33x47, raised to the model's
    ``min_input_size`` (kept odd) when it declares one.

    Properties: *output shape* (N, K, H, W) at each size in `sizes`, after the engine's
    padding to `size_divisor` -- or smaller in both sides when the model declares
    ``shrinks_output = True``; *gradients reach every parameter* (non-zero and finite);
    *batch of 1 in train mode* works; *eval-mode determinism*; *state-dict round trip*
    through a safetensors file into a freshly built model gives the same outputs.
    """
    name = component_name(factory, name)
    options = options_for(factory, options)

    def build() -> nn.Module:
        model = build_component("model", name, factory, num_classes, in_channels, **options)
        if not isinstance(model, nn.Module):
            fail("model", name, "factory result", f"returned {type(model).__name__}, not nn.Module")
        return model

    torch.manual_seed(0)
    model = build()
    model.eval()
    sizes = sizes or (_least_odd_size(model, (33, 47)),)
    for height, width in sizes:
        images = torch.randn(2, in_channels, height, width)
        with torch.no_grad():
            logits = padded_forward(model, images)
        _check_output_shape(model, name, logits, num_classes, height, width)
    height, width = sizes[0]
    images = torch.randn(2, in_channels, height, width)
    _check_gradients(model, name, images)
    _check_single_image_batch(model, name, images[:1])
    _check_eval_determinism(model, name, images)
    _check_round_trip(model, build, name, images)


def _least_odd_size(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """`size`, each side raised to the model's declared minimum and then to an odd number."""
    minimum = getattr(model, "min_input_size", None) or 1
    least = (minimum, minimum) if isinstance(minimum, int) else tuple(minimum)
    return tuple(max(side, int(low)) | 1 for side, low in zip(size, least, strict=True))


def _check_output_shape(model, name, logits, num_classes, height, width) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        fail("model", name, "output shape", f"expected a 4-D logits tensor, got {describe(logits)}")
    batch, channels, out_h, out_w = logits.shape
    where = f"for input 2x?x{height}x{width}"
    if batch != 2 or channels != num_classes:
        fail(
            "model",
            name,
            "output shape",
            f"{where} got {tuple(logits.shape)}, expected (2, {num_classes}, ...)",
        )
    if getattr(model, "shrinks_output", False):
        if not (0 < out_h <= height and 0 < out_w <= width):
            fail(
                "model",
                name,
                "output shape",
                f"{where} got {out_h}x{out_w}; a shrinks_output model must not grow the input",
            )
    elif (out_h, out_w) != (height, width):
        fail(
            "model",
            name,
            "output shape",
            f"{where} got {out_h}x{out_w}; set size_divisor if the model needs padding, or "
            "shrinks_output = True for valid convolutions",
        )
    if not logits.is_floating_point() or not torch.isfinite(logits).all():
        fail("model", name, "output shape", f"{where} logits are not finite floats")


def _check_gradients(model: nn.Module, name: str, images: torch.Tensor) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    logits = padded_forward(model, images)
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    (logits * weights).mean().backward()
    missing, zero, not_finite = [], [], []
    for parameter_name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.grad is None:
            missing.append(parameter_name)
        elif not torch.isfinite(parameter.grad).all():
            not_finite.append(parameter_name)
        elif not parameter.grad.any():
            zero.append(parameter_name)
    for problem, names in (
        ("get no gradient", missing),
        ("get a zero gradient", zero),
        ("get non-finite gradients", not_finite),
    ):
        if names:
            fail(
                "model",
                name,
                "gradients reach every parameter",
                f"{len(names)} parameters {problem}: {few(names)}",
            )
    model.zero_grad(set_to_none=True)


def _check_single_image_batch(model: nn.Module, name: str, image: torch.Tensor) -> None:
    model.train()
    try:
        logits = padded_forward(model, image)
        logits.float().mean().backward()
    except Exception as exc:  # noqa: BLE001 - any failure here is the finding
        fail("model", name, "batch of 1 in train mode", f"{type(exc).__name__}: {exc}")
    if not torch.isfinite(logits).all():
        fail("model", name, "batch of 1 in train mode", "logits are not finite")
    model.zero_grad(set_to_none=True)


def _check_eval_determinism(model: nn.Module, name: str, images: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        first = padded_forward(model, images)
        second = padded_forward(model, images)
    if not torch.equal(first, second):
        fail(
            "model",
            name,
            "eval-mode determinism",
            f"two eval-mode passes differ by up to {float((first - second).abs().max()):.3g} "
            "(dropout or batch statistics active in eval mode?)",
        )


def _check_round_trip(model, build, name, images) -> None:
    from segcli.weights import load_weights_into, save_state_dict

    model.eval()
    with torch.no_grad():
        expected = padded_forward(model, images)
    torch.manual_seed(12345)  # a fresh model whose initial weights differ
    fresh = build().eval()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.safetensors"
        try:
            save_state_dict(model, path)
            report = load_weights_into(fresh, path)
        except (SegcliError, RuntimeError, ValueError) as exc:
            fail("model", name, "state-dict round trip", f"{type(exc).__name__}: {exc}")
    if report.reinitialised:
        fail(
            "model",
            name,
            "state-dict round trip",
            f"tensors not restored: {few(report.reinitialised)}",
        )
    with torch.no_grad():
        restored = padded_forward(fresh, images)
    if not torch.allclose(expected, restored, RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE):
        fail(
            "model",
            name,
            "state-dict round trip",
            f"outputs differ by {float((expected - restored).abs().max()):.3g} after reloading "
            "(is some state kept outside parameters and buffers?)",
        )
