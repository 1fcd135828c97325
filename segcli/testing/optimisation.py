"""`check_optimizer` and `check_scheduler`: the contracts of optimiser and learning-rate
schedule plugins."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from segcli.testing.contract import build_component, component_name, describe, fail, options_for


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
    name = component_name(factory, name)
    options = options_for(factory, options)

    def run(lr: float, steps: int, resume_at: int | None = None) -> torch.Tensor:
        weights = nn.Parameter(torch.tensor([3.0, -2.0], dtype=torch.float64))
        optimizer = build_component("optimizer", name, factory, [weights], lr, **options)
        for index in range(steps):
            if index == resume_at:
                saved = optimizer.state_dict()
                optimizer = build_component("optimizer", name, factory, [weights], lr, **options)
                optimizer.load_state_dict(saved)
            optimizer.zero_grad()
            (weights**2).sum().backward()
            optimizer.step()
        return weights.detach()

    probe = build_component(
        "optimizer", name, factory, [nn.Parameter(torch.zeros(1))], 0.01, **options
    )
    if not isinstance(probe, torch.optim.Optimizer):
        fail("optimizer", name, "an optimiser", f"returned {describe(probe)}")
    if probe.param_groups[0].get("lr") != 0.01:
        fail("optimizer", name, "an optimiser", "the lr given is not the param group's lr")
    start = torch.tensor([3.0, -2.0], dtype=torch.float64)
    descended = run(0.05, 20)
    if not (descended**2).sum() < (start**2).sum():
        fail(
            "optimizer",
            name,
            "descends",
            f"20 steps on |w|^2 from {start.tolist()} ended at {descended.tolist()}",
        )
    if not torch.equal(run(0.0, 3), start):
        fail("optimizer", name, "lr 0 freezes", "weights moved with lr = 0")
    if not torch.equal(run(0.05, 6, resume_at=3), run(0.05, 6)):
        fail(
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
    name = component_name(factory, name)
    options = options_for(factory, options)
    factor = build_component("scheduler", name, factory, total_steps, steps_per_epoch, **options)
    if not callable(factor):
        fail("scheduler", name, "factory result", f"returned {describe(factor)}")
    steps = range(total_steps + 1)
    forwards = [factor(step) for step in steps]
    for step, value in zip(steps, forwards, strict=True):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            fail("scheduler", name, "finite factors", f"factor({step}) = {value!r}")
        if value == float("inf"):
            fail("scheduler", name, "finite factors", f"factor({step}) is infinite")
    fresh = build_component("scheduler", name, factory, total_steps, steps_per_epoch, **options)
    backwards = [fresh(step) for step in reversed(steps)][::-1]
    if backwards != forwards:
        fail(
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
                fresh = build_component(
                    "scheduler", name, factory, total_steps, steps_per_epoch, **options
                )
                schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, fresh)
                optimizer.load_state_dict(saved[0])
                schedule.load_state_dict(saved[1])
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return seen

    if lrs(resume_at=total_steps // 2) != lrs(resume_at=None):
        fail("scheduler", name, "resumable", "a LambdaLR restored mid-run gives other lrs")
