"""`check_metric`: the contract of a metric plugin (exact on known confusion matrices, no
host synchronisation while updating), and `pixels_from_matrix`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

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
    name = component_name(factory, name)
    options = options_for(factory, options)

    def build():
        return build_component("metric", name, factory, num_classes, IGNORE_INDEX, **options)

    metric = build()
    for method in ("reset", "update", "compute"):
        if not callable(getattr(metric, method, None)):
            fail("metric", name, "interface", f"it has no {method}() method")
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
                fail("metric", name, "known values", f"case {index}: no key {key!r}")
            if not _same(result[key], value):
                fail(
                    "metric",
                    name,
                    "known values",
                    f"case {index}: {key} is {result[key]!r}, expected {value!r}",
                )


def _check_result_types(name: str, result: Any) -> None:
    if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
        fail("metric", name, "interface", f"compute() returned {describe(result)}, not a dict")
    for key, value in result.items():
        if not _plain(value):
            fail(
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
        fail("metric", name, prop, f"{detail}: keys {sorted(actual)} vs {sorted(expected)}")
    for key in expected:
        if not _same(actual[key], expected[key]):
            fail("metric", name, prop, f"{detail} ({key}: {actual[key]!r} vs {expected[key]!r})")


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
            fail(
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
