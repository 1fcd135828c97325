"""The contract suite: checks any model, loss or metric plugin can run against itself.

Plain functions that raise ``AssertionError`` naming the broken property, so they work in
any test runner::

    from segcli.testing import check_loss, check_metric, check_model
    from my_plugin import build_my_net

    def test_my_net_keeps_the_contract():
        check_model(build_my_net, options={"width": 8})

segcli's own tests run them over everything registered
(tests/plugins/test_plugin_contracts.py), so a plugin is checked the moment it registers.
A plugin tunes that run with attributes, read when the check's own argument is left out:
``factory.test_options`` (a dict: the options to test with, e.g. small widths) on any
factory, and ``min_input_size`` (an int or ``(height, width)``) on a model. A factory that
raises anything but a segcli error is reported as a ``PluginError`` naming the plugin.
What each check asserts is documented in its docstring and in docs/testing-plugins.md.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from segcli.engine.preprocess import crop_padding, pad_to_multiple, size_divisor
from segcli.errors import PluginError, SegcliError
from segcli.registry import one_line

__all__ = [
    "check_loss",
    "check_metric",
    "check_model",
    "check_optimizer",
    "check_scheduler",
    "check_transform",
    "padded_forward",
    "pixels_from_matrix",
]

IGNORE_INDEX = 255


def _fail(kind: str, name: str, prop: str, detail: str) -> None:
    raise AssertionError(f"{kind} {name!r} breaks the contract [{prop}]: {detail}")


# float32 results agree with a float64 reference to a few units in the 7th digit
RELATIVE_TOLERANCE = 1e-5
ABSOLUTE_TOLERANCE = 1e-7


def _name(factory: Callable[..., Any], name: str | None) -> str:
    return name or getattr(factory, "__qualname__", repr(factory))


def _options(factory: Callable[..., Any], options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options to test with: the caller's, else those the factory declares."""
    return dict(options if options is not None else getattr(factory, "test_options", None) or {})


def _build(kind: str, name: str, factory: Callable[..., Any], *args: Any, **options: Any) -> Any:
    """Call a plugin's factory; what it raises that is not a segcli error is its plugin's."""
    try:
        return factory(*args, **options)
    except SegcliError:
        raise
    except Exception as exc:
        raise PluginError(
            f"{kind} {name!r} from plugin {_plugin_of(factory)} failed to build with options "
            f"{options}: {one_line(exc)}",
            hint="report it to the plugin's authors; --debug shows the traceback",
        ) from exc


def _plugin_of(factory: Callable[..., Any]) -> str:
    """The registered plugin a factory came from, else the package that defines it."""
    from segcli.plugins import get_plugins

    path = f"{getattr(factory, '__module__', '')}:{getattr(factory, '__qualname__', '')}"
    for registry in get_plugins().registries.values():
        for entry in registry:
            if entry.target is factory or entry.target == path:
                return str(entry.origin)
    return str(getattr(factory, "__module__", "?")).partition(".")[0]


# ---------------------------------------------------------------------------------- models


def padded_forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run `model` as the engine does, without the final resize: pad the input to a multiple
    of the model's `size_divisor` and crop the logits back, by the engine's pad policy
    (`segcli.engine.preprocess`: reflection, bottom/right)."""
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
    name = _name(factory, name)
    options = _options(factory, options)

    def build() -> nn.Module:
        model = _build("model", name, factory, num_classes, in_channels, **options)
        if not isinstance(model, nn.Module):
            _fail(
                "model", name, "factory result", f"returned {type(model).__name__}, not nn.Module"
            )
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
        _fail(
            "model", name, "output shape", f"expected a 4-D logits tensor, got {_describe(logits)}"
        )
    batch, channels, out_h, out_w = logits.shape
    where = f"for input 2x?x{height}x{width}"
    if batch != 2 or channels != num_classes:
        _fail(
            "model",
            name,
            "output shape",
            f"{where} got {tuple(logits.shape)}, expected (2, {num_classes}, ...)",
        )
    if getattr(model, "shrinks_output", False):
        if not (0 < out_h <= height and 0 < out_w <= width):
            _fail(
                "model",
                name,
                "output shape",
                f"{where} got {out_h}x{out_w}; a shrinks_output model must not grow the input",
            )
    elif (out_h, out_w) != (height, width):
        _fail(
            "model",
            name,
            "output shape",
            f"{where} got {out_h}x{out_w}; set size_divisor if the model needs padding, or "
            "shrinks_output = True for valid convolutions",
        )
    if not logits.is_floating_point() or not torch.isfinite(logits).all():
        _fail("model", name, "output shape", f"{where} logits are not finite floats")


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
            _fail(
                "model",
                name,
                "gradients reach every parameter",
                f"{len(names)} parameters {problem}: {_few(names)}",
            )
    model.zero_grad(set_to_none=True)


def _check_single_image_batch(model: nn.Module, name: str, image: torch.Tensor) -> None:
    model.train()
    try:
        logits = padded_forward(model, image)
        logits.float().mean().backward()
    except Exception as exc:  # noqa: BLE001 - any failure here is the finding
        _fail("model", name, "batch of 1 in train mode", f"{type(exc).__name__}: {exc}")
    if not torch.isfinite(logits).all():
        _fail("model", name, "batch of 1 in train mode", "logits are not finite")
    model.zero_grad(set_to_none=True)


def _check_eval_determinism(model: nn.Module, name: str, images: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        first = padded_forward(model, images)
        second = padded_forward(model, images)
    if not torch.equal(first, second):
        _fail(
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
            _fail("model", name, "state-dict round trip", f"{type(exc).__name__}: {exc}")
    if report.reinitialised:
        _fail(
            "model",
            name,
            "state-dict round trip",
            f"tensors not restored: {_few(report.reinitialised)}",
        )
    with torch.no_grad():
        restored = padded_forward(fresh, images)
    if not torch.allclose(expected, restored, RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE):
        _fail(
            "model",
            name,
            "state-dict round trip",
            f"outputs differ by {float((expected - restored).abs().max()):.3g} after reloading "
            "(is some state kept outside parameters and buffers?)",
        )


# ---------------------------------------------------------------------------------- losses


def check_loss(
    factory: Callable[..., Callable],
    *,
    num_classes: int = 3,
    binary: bool | None = None,
    options: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> None:
    """Check a loss factory ``(num_classes, ignore_index, **options) -> loss``.

    `binary` (default: the factory's ``single_logit`` attribute) feeds one logit channel and
    targets in {0, 1} with ``num_classes=2``. Properties: *scalar output*; *finite
    gradients* that are not all zero; *near-zero for a perfect prediction*; *ignore index
    honoured* (ignored pixels change neither value nor gradient, an all-ignored batch gives
    a finite value); *shape validation* (mismatched target raises ValueError or a segcli
    error that mentions the shapes).
    """
    name = _name(factory, name)
    binary = bool(getattr(factory, "single_logit", False)) if binary is None else binary
    classes = 2 if binary else num_classes
    channels = 1 if binary else num_classes
    loss_fn = _build("loss", name, factory, classes, IGNORE_INDEX, **_options(factory, options))
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, classes, (2, 9, 11), generator=generator)
    ignored = torch.zeros_like(target, dtype=torch.bool)
    ignored[0, :3] = True
    ignored[1, :, :2] = True
    target_with_ignore = target.masked_fill(ignored, IGNORE_INDEX)
    logits = torch.randn(2, channels, 9, 11, generator=generator, requires_grad=True)

    value = loss_fn(logits, target_with_ignore)
    if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.is_floating_point():
        _fail(
            "loss",
            name,
            "scalar output",
            f"returned {_describe(value)}, expected a 0-d float tensor",
        )
    value.backward()
    if logits.grad is None or not torch.isfinite(logits.grad).all() or not torch.isfinite(value):
        _fail(
            "loss", name, "finite gradients", f"value {float(value)} or its gradient is not finite"
        )
    if not logits.grad.any():
        _fail("loss", name, "finite gradients", "the gradient is zero everywhere")

    perfect = _perfect_logits(target, channels)
    perfect_value = float(loss_fn(perfect, target))
    if not abs(perfect_value) < 1e-3:
        _fail(
            "loss",
            name,
            "near-zero for a perfect prediction",
            f"confident correct logits give {perfect_value:.4g}",
        )

    if logits.grad[ignored.unsqueeze(1).expand_as(logits)].any():
        _fail("loss", name, "ignore index honoured", "ignored pixels receive a gradient")
    changed = logits.detach().clone()
    changed[ignored.unsqueeze(1).expand_as(changed)] = 50.0
    if not torch.allclose(
        loss_fn(changed, target_with_ignore),
        value.detach(),
        RELATIVE_TOLERANCE,
        ABSOLUTE_TOLERANCE,
    ):
        _fail(
            "loss", name, "ignore index honoured", "the logits of ignored pixels change the value"
        )
    all_ignored = torch.full_like(target, IGNORE_INDEX)
    if not torch.isfinite(loss_fn(logits.detach(), all_ignored)):
        _fail(
            "loss", name, "ignore index honoured", "a batch with every pixel ignored gives NaN/inf"
        )

    wrong_target = torch.randint(0, classes, (2, 10, 11), generator=generator)
    try:
        loss_fn(logits.detach(), wrong_target)
    except (ValueError, SegcliError) as exc:
        if "shape" not in str(exc).lower():
            _fail("loss", name, "shape validation", f"the error does not mention shapes: {exc}")
    except Exception as exc:  # noqa: BLE001 - e.g. torch's own broadcasting error
        _fail(
            "loss",
            name,
            "shape validation",
            f"logits (2, {channels}, 9, 11) with target (2, 10, 11) raise an unclear "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        )
    else:
        _fail(
            "loss",
            name,
            "shape validation",
            f"logits (2, {channels}, 9, 11) with target (2, 10, 11) raise no error",
        )


def _perfect_logits(target: torch.Tensor, channels: int, margin: float = 20.0) -> torch.Tensor:
    if channels == 1:
        return (margin * (2 * target.float() - 1)).unsqueeze(1)
    return margin * F.one_hot(target, channels).permute(0, 3, 1, 2).float()


# --------------------------------------------------------------------------------- metrics


def pixels_from_matrix(matrix: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) of shape (1, 1, P) holding exactly `matrix[t][p]` pixels of truth t
    predicted as p: feeds a hand-made confusion matrix to any metric."""
    truth, predicted = [], []
    for t, row in enumerate(matrix):
        for p, count in enumerate(row):
            truth += [t] * int(count)
            predicted += [p] * int(count)
    return (
        torch.tensor(predicted, dtype=torch.int64).view(1, 1, -1),
        torch.tensor(truth, dtype=torch.int64).view(1, 1, -1),
    )


def check_metric(
    factory: Callable[..., Any],
    *,
    num_classes: int = 3,
    options: Mapping[str, Any] | None = None,
    known: Iterable[tuple[torch.Tensor, torch.Tensor, Mapping[str, Any]]] = (),
    name: str | None = None,
) -> None:
    """Check a metric factory ``(num_classes, ignore_index, **options) -> metric``.

    Properties: *interface* (reset, update, compute -> dict of str to float or lists);
    *no host sync in update* (no .item(), .tolist(), .cpu(), boolean-mask indexing,
    nonzero, unique or bincount); *accumulation* (two updates equal one with both
    batches); *reset*; *ignore index honoured* (neither predictions at ignored pixels nor
    an extra, wholly ignored image change anything); *known values*: each (pred, target,
    expected) of `known` -- see `pixels_from_matrix` -- gives the expected values (to a
    relative 1e-5, so float32 arithmetic passes; NaN matches NaN).
    """
    name = _name(factory, name)
    options = _options(factory, options)

    def build():
        return _build("metric", name, factory, num_classes, IGNORE_INDEX, **options)

    metric = build()
    for method in ("reset", "update", "compute"):
        if not callable(getattr(metric, method, None)):
            _fail("metric", name, "interface", f"it has no {method}() method")
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, num_classes, (4, 9, 11), generator=generator)
    target[0, :3] = IGNORE_INDEX
    pred = torch.randint(0, num_classes, (4, 9, 11), generator=generator)

    metric.reset()
    with _NoHostSync(name):
        metric.update(pred[:2], target[:2])
        metric.update(pred[2:], target[2:])
    twice = metric.compute()
    _check_result_types(name, twice)
    once = build()
    once.reset()
    once.update(pred, target)
    _compare(name, "accumulation", once.compute(), twice, "two updates differ from one update")

    metric.reset()
    metric.update(pred[2:], target[2:])
    fresh = build()
    fresh.reset()
    fresh.update(pred[2:], target[2:])
    _compare(name, "reset", fresh.compute(), metric.compute(), "reset() does not clear the state")

    shuffled = pred.clone()
    ignored = target == IGNORE_INDEX
    shuffled[ignored] = (shuffled[ignored] + 1) % num_classes
    other = build()
    other.reset()
    other.update(shuffled, target)
    _compare(
        name,
        "ignore index honoured",
        once.compute(),
        other.compute(),
        "predictions at ignored pixels change the result",
    )
    other.reset()
    all_ignored = torch.full_like(target[:1], IGNORE_INDEX)
    other.update(torch.cat([pred, pred[:1]]), torch.cat([target, all_ignored]))
    _compare(
        name,
        "ignore index honoured",
        once.compute(),
        other.compute(),
        "an extra image whose pixels are all ignored changes the result",
    )

    for index, (case_pred, case_target, expected) in enumerate(known):
        metric = build()
        metric.reset()
        metric.update(case_pred, case_target)
        result = metric.compute()
        for key, value in expected.items():
            if key not in result:
                _fail("metric", name, "known values", f"case {index}: no key {key!r}")
            if not _same(result[key], value):
                _fail(
                    "metric",
                    name,
                    "known values",
                    f"case {index}: {key} is {result[key]!r}, expected {value!r}",
                )


def _check_result_types(name: str, result: Any) -> None:
    if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
        _fail("metric", name, "interface", f"compute() returned {_describe(result)}, not a dict")
    for key, value in result.items():
        if not _plain(value):
            _fail(
                "metric",
                name,
                "interface",
                f"compute()[{key!r}] is {type(value).__name__}; use float or lists of floats",
            )


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compare(name: str, prop: str, expected: dict, actual: dict, detail: str) -> None:
    if expected.keys() != actual.keys():
        _fail("metric", name, prop, f"{detail}: keys {sorted(actual)} vs {sorted(expected)}")
    for key in expected:
        if not _same(actual[key], expected[key]):
            _fail("metric", name, prop, f"{detail} ({key}: {actual[key]!r} vs {expected[key]!r})")


def _same(actual: Any, expected: Any) -> bool:
    """Equal up to float32 rounding (relative), NaN matching NaN."""
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(expected)
            and all(_same(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    return isinstance(actual, (int, float)) and math.isclose(
        actual, expected, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE
    )


class _NoHostSync(TorchFunctionMode):
    """Fails on the tensor operations that make the host wait for the device."""

    _SYNCING = {
        torch.Tensor.item,
        torch.Tensor.tolist,
        torch.Tensor.numpy,
        torch.Tensor.cpu,
        torch.Tensor.__bool__,
        torch.Tensor.__int__,
        torch.Tensor.__float__,
        torch.Tensor.nonzero,
        torch.nonzero,
        torch.Tensor.masked_select,
        torch.masked_select,
        torch.unique,
        torch.Tensor.unique,
        torch.bincount,
        torch.Tensor.bincount,
        torch.argwhere,
    }

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        syncing = func in self._SYNCING
        if func is torch.Tensor.__getitem__ and _has_boolean_index(args[1]):
            syncing = True
        if func is torch.where and len(args) + len(kwargs) == 1:
            syncing = True
        if syncing:
            _fail(
                "metric",
                self.name,
                "no host sync in update",
                f"update() calls {getattr(func, '__qualname__', func)}, which waits for the "
                "device; keep counts in tensors (torch.where, scatter_add_, sum)",
            )
        return func(*args, **kwargs)


def _has_boolean_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


# ------------------------------------------------------------------------------ transforms

# mask classes of a test sample; none is 0, so a transform that fills with 0 shows
_MASK_VALUES = (3, 7, 9)


def check_transform(
    factory: Callable[..., Callable],
    *,
    options: Mapping[str, Any] | None = None,
    channels: Sequence[int] = (1, 3),
    seeds: int = 8,
    name: str | None = None,
) -> None:
    """Check a transform factory ``(**options) -> transform``, the transform mapping
    ``(image: tv_tensors.Image uint8 (C, H, W), mask: tv_tensors.Mask uint8 (H, W))`` to
    ``(image, mask)``. `options` default to ``factory.test_options``.

    Properties, for images of each channel count in `channels` and `seeds` random draws:
    *types and shapes* (an Image and a Mask back, dtypes and channels kept, image and mask
    the same height and width); *mask values preserved* (every output mask value is an
    input value or the ignore index 255: masks resample nearest-neighbour and fill with
    255); *image and mask move together* (a geometric change moves both alike); *seeded
    determinism* (the same torch seed gives the same output whatever Python's and NumPy's
    random states: torch's generator is the only source of randomness).
    """
    import random

    import numpy as np
    from torchvision import tv_tensors

    name = _name(factory, name)
    transform = _build("transform", name, factory, **_options(factory, options))
    if not callable(transform):
        _fail("transform", name, "factory result", f"returned {_describe(transform)}")
    for count in channels:
        image, mask = _transform_sample(count)
        for seed in range(seeds):
            outputs = []
            for other_seed in (seed + 1, seed + 2):
                random.seed(other_seed)
                np.random.seed(other_seed)
                torch.manual_seed(seed)
                outputs.append(transform(tv_tensors.Image(image), tv_tensors.Mask(mask)))
            _check_transform_output(name, outputs[0], count)
            (image_out, mask_out), (again_image, again_mask) = outputs
            if not (torch.equal(image_out, again_image) and torch.equal(mask_out, again_mask)):
                _fail(
                    "transform",
                    name,
                    "seeded determinism",
                    f"torch seed {seed} gives two different results: draw random numbers from "
                    "torch only (not Python's random or NumPy)",
                )
            _check_mask_values(name, mask_out)
            _check_alignment(name, image_out, mask_out, seed)


def _transform_sample(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An odd-sized sample whose image brightness encodes its mask class, with regions off
    the centre so that any flip, rotation or zoom visibly moves them."""
    mask = torch.full((61, 83), _MASK_VALUES[0], dtype=torch.uint8)
    mask[5:35, 4:44] = _MASK_VALUES[1]
    mask[38:58, 52:77] = _MASK_VALUES[2]
    brightness = torch.zeros(256, dtype=torch.uint8)
    # dim enough that brightening by 90 % still tells the classes apart below 255
    brightness[list(_MASK_VALUES)] = torch.tensor([40, 80, 120], dtype=torch.uint8)
    image = brightness[mask.long()].expand(channels, -1, -1).clone()
    return image, mask


def _check_transform_output(name: str, output: Any, channels: int) -> None:
    from torchvision import tv_tensors

    prop = "types and shapes"
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        _fail("transform", name, prop, f"returned {_describe(output)}, not (image, mask)")
    image, mask = output
    if not isinstance(image, tv_tensors.Image) or not isinstance(mask, tv_tensors.Mask):
        _fail(
            "transform",
            name,
            prop,
            f"returned ({type(image).__name__}, {type(mask).__name__}), not (Image, Mask): "
            "later steps tell the mask from the image by these types",
        )
    if image.dtype != torch.uint8 or mask.dtype != torch.uint8:
        _fail("transform", name, prop, f"dtypes became {image.dtype} and {mask.dtype}, not uint8")
    if image.dim() != 3 or image.shape[0] != channels or mask.shape != image.shape[1:]:
        _fail(
            "transform",
            name,
            prop,
            f"a {channels}-channel image came back {tuple(image.shape)} with a mask of "
            f"{tuple(mask.shape)}",
        )


def _check_mask_values(name: str, mask: torch.Tensor) -> None:
    new = sorted(set(torch.unique(mask).tolist()) - {*_MASK_VALUES, IGNORE_INDEX})
    if new:
        _fail(
            "transform",
            name,
            "mask values preserved",
            f"the mask gained values {new} (input {list(_MASK_VALUES)}): resample masks "
            f"nearest-neighbour and fill uncovered pixels with the ignore index {IGNORE_INDEX}",
        )


def _check_alignment(name: str, image: torch.Tensor, mask: torch.Tensor, seed: int) -> None:
    """Each class's pixels keep their own brightness: told apart by the nearest class median,
    at least 3 in 4 of every class's pixels (the rest: edges the image blends) land in their
    own class. A mask left in place, or moved differently, mixes the classes and breaks it."""
    brightness = image.float().mean(0)
    present = [value for value in _MASK_VALUES if (mask == value).any()]
    medians = torch.stack([brightness[mask == value].median() for value in present])
    separated = bool((medians[1:] > medians[:-1]).all())
    for value in present:
        pixels = brightness[mask == value]
        nearest = (pixels[:, None] - medians[None, :]).abs().argmin(1)
        recall = float((nearest == present.index(value)).float().mean())
        if not separated or recall < 0.75:
            _fail(
                "transform",
                name,
                "image and mask move together",
                f"with torch seed {seed} the image's regions no longer match the mask's "
                f"(class {value}: {recall:.0%} of its pixels look like it); apply the same "
                "geometric change, from the same random draw, to both",
            )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def _few(names: Sequence[str], shown: int = 4) -> str:
    text = ", ".join(names[:shown])
    return text + (f" (+{len(names) - shown} more)" if len(names) > shown else "")


# ------------------------------------------------------------------- optimisers, schedules


def check_optimizer(
    factory: Callable[..., torch.optim.Optimizer],
    *,
    options: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> None:
    """Check an optimiser factory ``(parameters, lr, **options) -> torch.optim.Optimizer``.
    `options` default to ``factory.test_options``.

    Properties: *an optimiser* (a ``torch.optim.Optimizer`` over the given parameters at the
    given lr); *descends* (steps on a quadratic lower it); *lr 0 freezes* (``train.lr = 0``
    leaves the weights as they are); *resumable* (an optimiser loaded from another's
    ``state_dict`` takes exactly the same next steps, as a resumed run must).
    """
    name = _name(factory, name)
    options = _options(factory, options)

    def run(lr: float, steps: int, resume_at: int | None = None) -> torch.Tensor:
        weights = nn.Parameter(torch.tensor([3.0, -2.0], dtype=torch.float64))
        optimizer = _build("optimizer", name, factory, [weights], lr, **options)
        for index in range(steps):
            if index == resume_at:
                saved = optimizer.state_dict()
                optimizer = _build("optimizer", name, factory, [weights], lr, **options)
                optimizer.load_state_dict(saved)
            optimizer.zero_grad()
            (weights**2).sum().backward()
            optimizer.step()
        return weights.detach()

    probe = _build("optimizer", name, factory, [nn.Parameter(torch.zeros(1))], 0.01, **options)
    if not isinstance(probe, torch.optim.Optimizer):
        _fail("optimizer", name, "an optimiser", f"returned {_describe(probe)}")
    if probe.param_groups[0].get("lr") != 0.01:
        _fail("optimizer", name, "an optimiser", "the lr given is not the param group's lr")
    start = torch.tensor([3.0, -2.0], dtype=torch.float64)
    descended = run(0.05, 20)
    if not (descended**2).sum() < (start**2).sum():
        _fail(
            "optimizer",
            name,
            "descends",
            f"20 steps on |w|^2 from {start.tolist()} ended at {descended.tolist()}",
        )
    if not torch.equal(run(0.0, 3), start):
        _fail("optimizer", name, "lr 0 freezes", "weights moved with lr = 0")
    if not torch.equal(run(0.05, 6, resume_at=3), run(0.05, 6)):
        _fail(
            "optimizer",
            name,
            "resumable",
            "loading state_dict() into a new optimiser does not continue the same steps",
        )


def check_scheduler(
    factory: Callable[..., Callable[[int], float]],
    *,
    options: Mapping[str, Any] | None = None,
    total_steps: int = 40,
    steps_per_epoch: int = 10,
    name: str | None = None,
) -> None:
    """Check a schedule factory ``(total_steps, steps_per_epoch, **options) -> factor``, where
    ``factor(step)`` multiplies the lr at each optimizer step. `options` default to
    ``factory.test_options``.

    Properties: *finite factors* (a float >= 0 at every step of the run); *a function of
    the step* (the same factor whatever steps were asked before, so a resumed run continues
    on the same curve); *resumable* (``LambdaLR`` restored from a ``state_dict`` gives the
    same lrs as one that ran through).
    """
    name = _name(factory, name)
    options = _options(factory, options)
    factor = _build("scheduler", name, factory, total_steps, steps_per_epoch, **options)
    if not callable(factor):
        _fail("scheduler", name, "factory result", f"returned {_describe(factor)}")
    steps = range(total_steps + 1)
    forwards = [factor(step) for step in steps]
    for step, value in zip(steps, forwards, strict=True):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            _fail("scheduler", name, "finite factors", f"factor({step}) = {value!r}")
        if value == float("inf"):
            _fail("scheduler", name, "finite factors", f"factor({step}) is infinite")
    fresh = _build("scheduler", name, factory, total_steps, steps_per_epoch, **options)
    backwards = [fresh(step) for step in reversed(steps)][::-1]
    if backwards != forwards:
        _fail(
            "scheduler",
            name,
            "a function of the step",
            "asking for the steps in another order changes the factors: keep no state",
        )

    def lrs(resume_at: int | None) -> list[float]:
        weights = nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([weights], lr=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        seen = []
        for step in range(total_steps):
            if step == resume_at:  # as segcli resumes: optimiser and scheduler state
                saved = optimizer.state_dict(), schedule.state_dict()
                optimizer = torch.optim.SGD([weights], lr=0.1)
                fresh = _build("scheduler", name, factory, total_steps, steps_per_epoch, **options)
                schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, fresh)
                optimizer.load_state_dict(saved[0])
                schedule.load_state_dict(saved[1])
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return seen

    if lrs(resume_at=total_steps // 2) != lrs(resume_at=None):
        _fail("scheduler", name, "resumable", "a LambdaLR restored mid-run gives other lrs")
