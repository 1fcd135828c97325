"""Optimiser factories: `(parameters, lr, **options) -> torch.optim.Optimizer`.

torch checks the ranges itself (a negative momentum is a ValueError, which segcli reports
as a configuration error naming the options).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def sgd(
    parameters: list[torch.nn.Parameter],
    lr: float,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


def adam(
    parameters: list[torch.nn.Parameter],
    lr: float,
    *,
    weight_decay: float = 0.0,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        parameters, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps
    )


def adamw(
    parameters: list[torch.nn.Parameter],
    lr: float,
    *,
    weight_decay: float = 0.0,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        parameters, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps
    )


def rmsprop(
    parameters: list[torch.nn.Parameter],
    lr: float,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    alpha: float = 0.99,
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, alpha=alpha, eps=eps
    )


def _pair(betas: Sequence[float]) -> tuple[float, float]:
    if len(betas) != 2:
        raise ValueError(f"betas must be a list of 2 floats in [0, 1), got {list(betas)}")
    return float(betas[0]), float(betas[1])
