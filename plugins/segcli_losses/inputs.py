"""Checks and helpers shared by the built-in losses."""

from __future__ import annotations

import torch

from segcli import DataError


def check_inputs(name: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    """Logits (N, K, H, W) float and target (N, H, W) integer, with matching N, H, W."""
    if (
        logits.dim() != 4
        or target.dim() != 3
        or logits.shape[0] != target.shape[0]
        or logits.shape[2:] != target.shape[1:]
    ):
        raise DataError(
            f"loss {name}: logits of shape {tuple(logits.shape)} do not match target of shape "
            f"{tuple(target.shape)}; expected (N, K, H, W) and (N, H, W)",
            hint="a model whose output size differs must be called through the engine, which "
            "resizes its logits",
        )
    if not logits.is_floating_point():
        raise DataError(f"loss {name}: logits must be floating point, got {logits.dtype}")
    if target.is_floating_point():
        raise DataError(f"loss {name}: target must hold integer class ids, got {target.dtype}")


def check_multiclass(name: str, logits: torch.Tensor, num_classes: int) -> None:
    if logits.shape[1] != num_classes:
        raise DataError(
            f"loss {name}: logits have {logits.shape[1]} channels for {num_classes} classes",
            hint="use bce for a single-logit binary model"
            if logits.shape[1] == 1
            else "the model must output one channel per class",
        )


def valid_mask(target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Float (N, H, W) mask: 1 where the pixel counts, 0 where it is `ignore_index`."""
    return (target != ignore_index).to(torch.float32)


def class_probabilities(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Probabilities (N, C, H, W), one-hot truth (N, C, H, W) and the valid mask (N, 1, H, W).

    One logit means binary: sigmoid, with class 1 as the only channel. Several logits:
    softmax over classes. Ignored pixels are zero in all three, so sums skip them.
    """
    valid = valid_mask(target, ignore_index).unsqueeze(1)
    safe_target = torch.where(target == ignore_index, torch.zeros_like(target), target)
    logits = logits.float()
    if logits.shape[1] == 1:
        probabilities = torch.sigmoid(logits)
        truth = (safe_target == 1).unsqueeze(1).to(probabilities.dtype)
    else:
        probabilities = torch.softmax(logits, dim=1)
        truth = torch.nn.functional.one_hot(safe_target, logits.shape[1])
        truth = truth.permute(0, 3, 1, 2).to(probabilities.dtype)
    return probabilities * valid, truth * valid, valid


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid pixels; 0 (with a gradient path) when none is valid, never NaN."""
    return (values * valid).sum() / valid.sum().clamp(min=1.0)
