"""BestTracker: the one rule for which epoch is `best`."""

from __future__ import annotations

import math

import pytest

from segcli.training.loop import TrainingState
from segcli.training.resume import BestTracker


def follow(mode: str, values: list) -> tuple[list[bool], TrainingState]:
    state = TrainingState()
    tracker = BestTracker("m", mode, state)
    improved = [tracker.update({"epoch": epoch, "m": v}) for epoch, v in enumerate(values, 1)]
    return improved, state


def test_max_improves_only_on_a_strictly_higher_value():
    improved, state = follow("max", [0.5, 0.9, 0.7, 0.9, 0.95])
    assert improved == [True, True, False, False, True]
    assert (state.best, state.best_epoch) == (0.95, 5)


def test_min_improves_only_on_a_strictly_lower_value():
    improved, state = follow("min", [1.0, 0.4, 0.6, 0.4])
    assert improved == [True, True, False, False]
    assert (state.best, state.best_epoch, state.epochs_without_improvement) == (0.4, 2, 2)


@pytest.mark.parametrize("bad", [math.nan, None, "0.9", [0.9], True])
def test_nan_and_non_numbers_never_improve(bad):
    improved, state = follow("max", [0.5, bad])
    assert improved == [True, False] and state.best == 0.5


def test_an_epoch_without_the_monitor_changes_nothing():
    state = TrainingState(best=0.5, best_epoch=1)
    tracker = BestTracker("m", "max", state)
    assert not tracker.update({"epoch": 2, "train/loss": 0.1})
    assert state.epochs_without_improvement == 0 and state.best_epoch == 1


def test_a_resumed_tracker_compares_with_the_best_before_the_interruption():
    state = TrainingState(best=0.9, best_epoch=2)
    assert not BestTracker("m", "max", state).update({"epoch": 3, "m": 0.8})
