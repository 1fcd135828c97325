"""`check_loss`: the contract of a loss plugin."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.nn import functional as F

from segcli.errors import SegcliError
from segcli.testing.contract import (
    ABSOLUTE_TOLERANCE,
    IGNORE_INDEX,
    RELATIVE_TOLERANCE,
    build_component,
    component_name,
    describe,
    fail,
    options_for,
)


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
    name = component_name(factory, name)
    binary = bool(getattr(factory, "single_logit", False)) if binary is None else binary
    classes = 2 if binary else num_classes
    channels = 1 if binary else num_classes
    loss_fn = build_component(
        "loss", name, factory, classes, IGNORE_INDEX, **options_for(factory, options)
    )
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, classes, (2, 9, 11), generator=generator)
    ignored = torch.zeros_like(target, dtype=torch.bool)
    ignored[0, :3] = True
    ignored[1, :, :2] = True
    target_with_ignore = target.masked_fill(ignored, IGNORE_INDEX)
    logits = torch.randn(2, channels, 9, 11, generator=generator, requires_grad=True)

    value = loss_fn(logits, target_with_ignore)
    if not isinstance(value, torch.Tensor) or value.dim() != 0 or not value.is_floating_point():
        fail(
            "loss",
            name,
            "scalar output",
            f"returned {describe(value)}, expected a 0-d float tensor",
        )
    value.backward()
    if logits.grad is None or not torch.isfinite(logits.grad).all() or not torch.isfinite(value):
        fail(
            "loss", name, "finite gradients", f"value {float(value)} or its gradient is not finite"
        )
    if not logits.grad.any():
        fail("loss", name, "finite gradients", "the gradient is zero everywhere")

    perfect = _perfect_logits(target, channels)
    perfect_value = float(loss_fn(perfect, target))
    if not abs(perfect_value) < 1e-3:
        fail(
            "loss",
            name,
            "near-zero for a perfect prediction",
            f"confident correct logits give {perfect_value:.4g}",
        )

    if logits.grad[ignored.unsqueeze(1).expand_as(logits)].any():
        fail("loss", name, "ignore index honoured", "ignored pixels receive a gradient")
    changed = logits.detach().clone()
    changed[ignored.unsqueeze(1).expand_as(changed)] = 50.0
    if not torch.allclose(
        loss_fn(changed, target_with_ignore),
        value.detach(),
        RELATIVE_TOLERANCE,
        ABSOLUTE_TOLERANCE,
    ):
        fail("loss", name, "ignore index honoured", "the logits of ignored pixels change the value")
    all_ignored = torch.full_like(target, IGNORE_INDEX)
    if not torch.isfinite(loss_fn(logits.detach(), all_ignored)):
        fail(
            "loss", name, "ignore index honoured", "a batch with every pixel ignored gives NaN/inf"
        )

    wrong_target = torch.randint(0, classes, (2, 10, 11), generator=generator)
    try:
        loss_fn(logits.detach(), wrong_target)
    except (ValueError, SegcliError) as exc:
        if "shape" not in str(exc).lower():
            fail("loss", name, "shape validation", f"the error does not mention shapes: {exc}")
    except Exception as exc:  # noqa: BLE001 - e.g. torch's own broadcasting error
        fail(
            "loss",
            name,
            "shape validation",
            f"logits (2, {channels}, 9, 11) with target (2, 10, 11) raise an unclear "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        )
    else:
        fail(
            "loss",
            name,
            "shape validation",
            f"logits (2, {channels}, 9, 11) with target (2, 10, 11) raise no error",
        )


def _perfect_logits(target: torch.Tensor, channels: int, margin: float = 20.0) -> torch.Tensor:
    if channels == 1:
        return (margin * (2 * target.float() - 1)).unsqueeze(1)
    return margin * F.one_hot(target, channels).permute(0, 3, 1, 2).float()
