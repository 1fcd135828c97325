"""The time budget (`train.max_time`): where a run's seconds go, when it must stop so that the
final validation and checkpoints still fit, and so how many steps its schedule has left.

Everything here reads an injectable clock, so the rules are tested without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segcli.training.loop import TrainingState
    from segcli.training.optimisation import ScheduleLayout

Clock = Callable[[], float]
PHASES = ("setup", "training", "validation", "checkpoints", "post-processing")
# A checkpoint write before one was timed: best + last (weights, optimiser moments) at a
# pessimistic disk speed, plus the fsync.
_GUESSED_WRITE_BYTES_PER_SECOND = 50e6
_GUESSED_CHECKPOINT_COPIES = 4
_GUESSED_SYNC_SECONDS = 0.05
# What work after the run (the report) takes beyond its validation passes: loading the
# checkpoint, drawing, writing the page.
_FINISHING_SECONDS = 3.0
_FINISHING_SHARE = 0.01  # of the budget, for budgets too short to spare 3 s


class Stopwatch:
    """Each second since `started` (default: now) belongs to exactly one phase; the totals
    include the earlier sessions of a resumed run (`carry`), so its budget is what is left of
    it."""

    def __init__(self, clock: Clock = time.monotonic, started: float | None = None) -> None:
        self.clock = clock
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.phase = "setup"
        self.since = clock() if started is None else started

    def carry(self, earlier: dict[str, float]) -> None:
        for phase, seconds in earlier.items():
            if phase in self.totals:
                self.totals[phase] += float(seconds)

    def switch(self, phase: str) -> float:
        """Start `phase`; returns the seconds the phase that ends took."""
        now = self.clock()
        lap = now - self.since
        self.totals[self.phase] += lap
        self.phase, self.since = phase, now
        return lap

    def spent(self) -> dict[str, float]:
        """Seconds per phase, the running one included."""
        spent = dict(self.totals)
        spent[self.phase] += self.clock() - self.since
        return spent

    def elapsed(self) -> float:
        return sum(self.spent().values())


class TimeBudget:
    """When a run with a budget stops, and the last step its schedule must reach.

    A run stops before a step that would leave too little time for the final validation and
    checkpoint writes (`reserve`). Step, validation and checkpoint times are measured in this
    session; before the first validation it is estimated as its batches x the mean training
    step (an upper bound: a forward pass costs less than a training step).
    """

    def __init__(
        self,
        seconds: float,
        watch: Stopwatch,
        *,
        steps_per_epoch: int,
        validation_batches: int,
        val_every: int,
        checkpoint_bytes: int,
        finishing_validations: float = 0.0,
        finishing_seconds: float = 0.0,
    ) -> None:
        self.seconds = seconds
        self.watch = watch
        self.steps_per_epoch = steps_per_epoch
        self.validation_batches = validation_batches
        self.val_every = max(1, val_every)
        self.checkpoint_seconds = (
            _GUESSED_CHECKPOINT_COPIES * checkpoint_bytes / _GUESSED_WRITE_BYTES_PER_SECOND
            + _GUESSED_SYNC_SECONDS
        )
        self.checkpoints_timed = False  # until then, `checkpoint_seconds` is a guess
        # validation passes' worth of work after the run ends (the report), inside the budget
        self.finishing_validations = finishing_validations
        self.finishing_seconds = finishing_seconds  # and seconds of it beyond those passes
        self.validation_seconds: float | None = None
        self.validations_timed = 0
        self.steps_taken = 0
        self.training_after_first_step = 0.0

    def count_step(self) -> None:
        self.steps_taken += 1
        if self.steps_taken == 1:
            self.training_after_first_step = self.watch.spent()["training"]

    def step_seconds(self) -> float | None:
        """The mean training step of this session (data loading included), without its first
        step, which pays one-time costs (loader start, memory allocation); None before."""
        if self.steps_taken < 2:
            return None
        training = self.watch.spent()["training"] - self.training_after_first_step
        return training / (self.steps_taken - 1)

    def timed_validation(self, seconds: float) -> None:
        """The slowest validation measured after this session's first (on a busy machine the
        final one may be slow too); the first alone until then. The first pays one-time costs,
        as the first step does: ISBI's took ~4.7 s, the next nineteen ~1.3-3.0 s, and kept
        ~20 s of an 8-minute budget unused at 11 passes' reserve (2-core AMD EPYC, fp32)."""
        self.validations_timed += 1
        if self.validations_timed == 2:
            self.validation_seconds = seconds
        else:
            self.validation_seconds = max(seconds, self.validation_seconds or 0.0)

    def timed_checkpoints(self, seconds: float) -> None:
        timed = self.checkpoint_seconds if self.checkpoints_timed else 0.0
        self.checkpoint_seconds, self.checkpoints_timed = max(seconds, timed), True

    def expected_validation(self) -> float:
        if self.validation_batches == 0:
            return 0.0
        if self.validation_seconds is not None:
            return self.validation_seconds
        return self.validation_batches * (self.step_seconds() or 0.0)

    def reserve(self) -> float:
        """What the end of the run needs: the final validation and checkpoint writes, and the
        work after it (the report) when there is some."""
        finishing = (
            self.finishing_validations * self.expected_validation()
            + self.finishing_seconds
            + min(_FINISHING_SECONDS, _FINISHING_SHARE * self.seconds)
            if self.finishing_validations or self.finishing_seconds
            else 0.0
        )
        return self.expected_validation() + self.checkpoint_seconds + finishing

    def available(self) -> float:
        """Seconds left for training steps and the epoch ends before the final one."""
        return self.seconds - self.watch.elapsed() - self.reserve()

    def steps_that_fit(self, steps_left_in_epoch: int) -> int | None:
        """How many more steps fit, counting the validation and checkpoints of each epoch end
        on the way (each validation 1/val_every of the time, as `train.val_every` says);
        None while the step time is not measured."""
        step = self.step_seconds()
        if step is None:
            return None
        available = self.available()
        step = max(step, 1e-9)
        available -= step  # a margin: one step may well be slower than the mean
        in_this_epoch = min(steps_left_in_epoch, math.floor(available / step))
        if in_this_epoch < steps_left_in_epoch:
            return max(0, in_this_epoch)
        available -= in_this_epoch * step + self.epoch_end_seconds()
        epoch = self.steps_per_epoch * step + self.epoch_end_seconds()
        whole_epochs = max(0, math.floor(available / epoch))
        available -= whole_epochs * epoch
        last_part = min(self.steps_per_epoch, max(0, math.floor(available / step)))
        return in_this_epoch + whole_epochs * self.steps_per_epoch + last_part

    def epoch_end_seconds(self, validating: bool | None = None) -> float:
        """An epoch end before the final one: its checkpoints and, when due, a validation
        (None: the average over `val_every` epochs)."""
        validation = self.expected_validation()
        if validating is None:
            validation /= self.val_every
        elif not validating:
            validation = 0.0
        return self.checkpoint_seconds + validation

    def another_epoch_fits(self, validating: bool) -> bool:
        """After an epoch's training: is there time for this epoch end and one more step?"""
        step = self.step_seconds() or 0.0
        return self.available() - self.epoch_end_seconds(validating) >= step


class BudgetPacer:
    """The step loop's side of a budget: no step that does not fit, and the schedule's segment
    ending at the last step that does (also the last of `train.epochs`, if that comes first).

    `agree` makes processes under torchrun take the same decision (the smallest count)."""

    def __init__(
        self,
        budget: TimeBudget,
        layout: ScheduleLayout,
        state: TrainingState,
        epochs: int,
        agree: Callable[[int], int] = lambda count: count,
    ) -> None:
        self.budget = budget
        self.layout = layout
        self.state = state
        self.epochs = epochs
        self.agree = agree
        self.stopped = False

    def out_of_time(self) -> bool:
        if self.budget.step_seconds() is None:  # not measured: stop only when nothing is left
            self.stopped = self.agree(int(self.budget.available() > 0)) == 0
        return self.stopped

    def after_step(self, steps_left_in_epoch: int) -> None:
        self.budget.count_step()
        measured = self.budget.steps_that_fit(steps_left_in_epoch)
        fitting = self.agree(-1 if measured is None else measured)
        if fitting < 0:
            return  # the schedule keeps its plan until a step time is known
        epochs_after = self.epochs - self.state.epoch - 1
        limit = steps_left_in_epoch + epochs_after * self.layout.steps_per_epoch
        self.stopped = fitting <= 0
        self.layout.end_at(self.state.step + min(max(0, fitting), limit) - 1)

    def another_epoch_fits(self, validating: bool) -> bool:
        return self.agree(int(self.budget.another_epoch_fits(validating))) == 1
