"""Learning-rate schedules: `(total_steps, steps_per_epoch, **options) -> factor(step)`.

Each factor is a plain function of the optimizer step, so a resumed run has exactly the
learning rate an uninterrupted one would. Every schedule starts with an optional linear
warm-up of `warmup_epochs`. No torch here: a schedule is arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[int], float]


def constant(total_steps: int, steps_per_epoch: int, *, warmup_epochs: float = 0.0) -> Schedule:
    return _warmed_up(lambda index: 1.0, _steps(warmup_epochs, steps_per_epoch))


def poly(
    total_steps: int, steps_per_epoch: int, *, power: float = 0.9, warmup_epochs: float = 0.0
) -> Schedule:
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    warmup = _steps(warmup_epochs, steps_per_epoch)
    return _warmed_up(lambda index: (1 - _progress(index, warmup, total_steps)) ** power, warmup)


def cosine(total_steps: int, steps_per_epoch: int, *, warmup_epochs: float = 0.0) -> Schedule:
    warmup = _steps(warmup_epochs, steps_per_epoch)
    return _warmed_up(lambda index: _half_cosine(_progress(index, warmup, total_steps)), warmup)


def step(
    total_steps: int,
    steps_per_epoch: int,
    *,
    step_epochs: int = 30,
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
) -> Schedule:
    if isinstance(step_epochs, bool) or not isinstance(step_epochs, int) or step_epochs < 1:
        raise ValueError(f"step_epochs must be an int >= 1, got {step_epochs!r}")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    period = step_epochs * steps_per_epoch
    return _warmed_up(
        lambda index: gamma ** (index // period), _steps(warmup_epochs, steps_per_epoch)
    )


def onecycle(total_steps: int, steps_per_epoch: int, *, warmup_epochs: float = 0.0) -> Schedule:
    """A rise from 4 % of lr, then cosine decay; warmup_epochs = 0 rises over the first 30 %."""
    warmup = _steps(warmup_epochs, steps_per_epoch) or int(0.3 * total_steps)
    return _warmed_up(
        lambda index: _half_cosine(_progress(index, warmup, total_steps)), warmup, start=0.04
    )


def _half_cosine(progress: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * progress))


def _progress(index: int, warmup: int, total_steps: int) -> float:
    """How far past the warm-up `index` is, from 0 to 1."""
    return min(1.0, (index - warmup) / max(1, total_steps - warmup))


def _steps(epochs: float, steps_per_epoch: int) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs < 0:
        raise ValueError(f"warmup_epochs must be a float >= 0, got {epochs!r}")
    return int(epochs * steps_per_epoch)


def _warmed_up(after: Schedule, warmup: int, start: float = 0.0) -> Schedule:
    """A linear rise from `start` over the first `warmup` steps, then `after`."""

    def factor(index: int) -> float:
        if index < warmup:
            return start + (1 - start) * (index + 1) / (warmup + 1)
        return after(index)

    return factor
