"""The `default` planner: a whole training chosen by rules from a fingerprint, the hardware
and a time budget.

Every rule is one line in docs/planning.md: what it sets, from which fingerprint value, and
why. The result is a configuration layer (the place of a recipe: `--config` and `--set`
still override any planned value) and one reason per planned key. It uses only segcli's
public API (`from segcli import NAME`), as any third-party planner would.

The rules are split by job: constants.py holds the numbers with the measurements behind them,
geometry.py sizes what the network sees (input size or crops, depth, batch, width),
settings.py writes every other key for a chosen geometry, and this module plans: the table's
plan, its measurement and re-planning, and the pretrained-encoder candidate.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from segcli import (
    Fingerprint,
    Hardware,
    Measurement,
    Plan,
    Timer,
    estimate_pixels_per_second,
    requirements,
)

from .constants import (
    FORWARD_SPEED_UP,
    MAX_REMEASUREMENTS,
    MEASURING_SHARE,
    MIN_MEASURED_BUDGET,
    SETTLED,
)
from .geometry import _activation_bytes, _foreground_thickness, _Geometry
from .pretrained import ENCODER_COST, PRETRAINED_MODEL, encoder_at_hand
from .settings import _Machine, _SettingRules


def plan(
    fingerprint: Fingerprint,
    hardware: Hardware,
    budget_seconds: float,
    *,
    timer: Timer | None = None,
    requested: Mapping[str, Any] | None = None,
) -> Plan:
    """Choose model, input size, batch, loss, schedule, augmentation and metrics; with a
    `timer`, from speeds measured on the machine, else from the built-in speed table.
    `requested`: what --config and --set ask for (they override the plan), by dotted key;
    `model.backbone_weights` there makes a plan of photographs use a pretrained encoder."""
    planner = _Planner(fingerprint, hardware, budget_seconds, timer, requested or {})
    planner.run()
    return Plan(planner.layer, planner.reasons, planner.estimates)


# Every name a plan of these rules may use, with the built-in plugin that provides it: a
# disabled or missing one is named before planning starts.
plan.needs = (  # type: ignore[attr-defined]
    *requirements("models", "segcli", model=["unet", PRETRAINED_MODEL]),
    *requirements("losses", "segcli", loss=["ce", "dice", "bce"]),
    *requirements("metrics", "segcli", metric=["confusion", "binary", "tgs"]),
    *requirements("optim", "segcli", optimizer=["adamw"], scheduler=["cosine"]),
    *requirements("transforms", "segcli", transform=["scale", "rotate", "crop", "hflip", "vflip"]),
)


class _Planner(_SettingRules):
    """The plan's orchestration: the table's plan, its measurement and re-planning, the
    pretrained-encoder candidate, and the whole plan written for the geometry chosen."""

    def run(self) -> None:
        machines = self._machines()
        machine = machines[0]
        self.train_speed = estimate_pixels_per_second(
            self.hw, self.base_width, channels_last=machine.channels_last, bf16=machine.bf16
        )
        self.val_speed = self.train_speed * FORWARD_SPEED_UP
        self.estimates["table_pixels_per_second"] = round(self.train_speed)
        geometry = self._geometry()
        if self.timer is not None and self.budget < MIN_MEASURED_BUDGET:
            self.timer = None
        if self.timer is not None:
            machine, geometry = self._measured(machines, geometry)
        geometry = self._with_pretrained_encoder(geometry, machine)
        self._apply(geometry, machine)
        self.estimates.update(
            pixels_per_second=round(self.train_speed),
            val_pixels_per_second=round(self.val_speed),
            speed_source="measured" if self.timer is not None else "table",
        )

    def _apply(self, geometry: _Geometry, machine: _Machine) -> None:
        """Write the whole plan for `geometry` and `machine` into the layer."""
        self.layer.clear()
        self.reasons.clear()
        self.estimates.update(
            target_epochs=round(geometry.target_epochs, 1),
            affordable_pixels_per_image=round(geometry.affordable),
        )
        self.set("input.size", geometry.size, geometry.why)
        if geometry.encoder is not None:
            self._pretrained_model(geometry)
        else:
            self._unet(geometry)
        activations = _activation_bytes(geometry.width, geometry.trained_pixels, self.fp.channels)
        self.set(
            "train.batch_size",
            geometry.batch,
            f"fits {self.hw.memory_bytes / 2**30:.1f} GiB of {self.hw.device} memory "
            f"(~{activations / 2**20:.0f} MiB of activations per image)"
            + (
                "; moderate on a CPU so the budget holds enough steps"
                if self.hw.device == "cpu"
                else ""
            ),
        )
        self._loss_and_metrics()
        self._optimisation(geometry)
        self._validation(geometry)
        self._augmentation(geometry)
        self._load_scale(geometry)
        self._normalisation(geometry)
        self._machine(machine)

    # -- speed: the table, or measurements -----------------------------------------------

    def _machines(self) -> list[_Machine]:
        """The ways of running the steps worth measuring, the table's favourite first."""
        hw = self.hw
        if hw.device == "mps":
            return [_Machine(False, False, 0)]
        if hw.device != "cpu":
            return [_Machine(True, hw.bf16, max(0, min(8, hw.cpu_cores - 1)))]
        workers = 1 if hw.cpu_cores <= 2 else min(4, hw.cpu_cores // 4)
        candidates = [_Machine(True, hw.bf16, workers)]
        if hw.bf16:  # emulated or slow bf16 kernels exist: fp32 may win on this CPU
            candidates.append(_Machine(True, False, workers))
        if hw.cpu_cores <= 2:  # a loader process may steal more from the model than it gives
            candidates.append(_Machine(True, hw.bf16, 0))
        return candidates

    def _measured(
        self, machines: list[_Machine], geometry: _Geometry
    ) -> tuple[_Machine, _Geometry]:
        """Measure each way of running on the table's plan, keep the fastest, then re-plan
        from the measured speed until the input size settles."""
        assert self.timer is not None
        geometry = self._at_base_width(geometry)
        results = []
        for machine in machines:
            if results and not self._another_measurement_fits():
                break
            self._apply(geometry, machine)
            results.append((self._timed(geometry, machine), machine))
        measurement, machine = max(results, key=lambda item: item[0].train_images_per_second)
        self.estimates["machines"] = {
            m.label(): round(r.train_images_per_second, 1) for r, m in results
        }
        self._use(measurement, geometry)
        for _ in range(MAX_REMEASUREMENTS):
            replanned = self._geometry()
            change = abs(replanned.trained_pixels / geometry.trained_pixels - 1)
            settled = (
                change < SETTLED
                and replanned.crop == geometry.crop
                and replanned.width == geometry.width
            )
            if settled or not self._another_measurement_fits():
                return machine, self._measured_width(replanned, geometry)
            geometry = replanned
            self._apply(geometry, machine)
            self._use(self._timed(geometry, machine), geometry)
        return machine, self._measured_width(self._geometry(), geometry)

    def _at_base_width(self, geometry: _Geometry) -> _Geometry:
        """`geometry` with the base width: the ways of running are compared there, and a
        wider net's cost is then measured against it."""
        if geometry.width == self.base_width or geometry.encoder is not None:
            return geometry
        batch = self._batch_size(geometry.trained_pixels, self.base_width)
        return dataclasses.replace(geometry, width=self.base_width, width_why="", batch=batch)

    def _measured_width(self, replanned: _Geometry, measured: _Geometry) -> _Geometry:
        """`replanned`, unless its width was never timed: the speed of a width is not width^2
        (a 2-core Xeon trains widths 20 and 24 at half the speed of 16, and 32 at 0.42 of it:
        its bf16 kernels want multiples of 16), so the last measured plan is kept."""
        if replanned.width in self.width_speeds or replanned.encoder is not None:
            return replanned
        return measured

    def _another_measurement_fits(self) -> bool:
        taken = len(self.estimates.get("measurements", ()))
        typical = self.measuring_seconds / max(1, taken)
        return self.measuring_seconds + typical <= MEASURING_SHARE * self.budget

    def _timed(self, geometry: _Geometry, machine: _Machine) -> Measurement:
        assert self.timer is not None
        measurement = self.timer(copy.deepcopy(self.layer))
        self.measuring_seconds += measurement.seconds
        self.estimates.setdefault("measurements", []).append(
            {
                "input": geometry.crop or geometry.size or [self.height, self.width],
                "batch": geometry.batch,
                "machine": machine.label(),
                "train_images_per_second": round(measurement.train_images_per_second, 2),
                "val_images_per_second": round(measurement.val_images_per_second, 2),
                "seconds": round(measurement.seconds, 2),
            }
        )
        return measurement

    def _use(self, measurement: Measurement, geometry: _Geometry) -> None:
        pixel_speed = measurement.train_images_per_second * geometry.trained_pixels
        if geometry.encoder is None:
            self.width_speeds[geometry.width] = pixel_speed
        cost = self._width_cost(geometry.width)  # back to the base width's speed
        self.train_speed = pixel_speed * cost
        if math.isfinite(measurement.val_images_per_second):
            self.val_speed = measurement.val_images_per_second * geometry.val_pixels * cost

    def _with_pretrained_encoder(self, geometry: _Geometry, machine: _Machine) -> _Geometry:
        """`geometry` of the U-Net, or of unet-resnet when the rule applies (photographs,
        ImageNet weights at hand) and the budget affords it enough passes (its input is never
        below PRETRAINED_MIN_SIDE, or the images' own size): timed like any candidate when the
        measuring share allows. Weights the user gave are used whatever the budget."""
        self.encoder, self.encoder_note = encoder_at_hand(
            self.fp, self.requested, _foreground_thickness(self.fp)
        )
        if self.encoder is None:
            return geometry
        name = self.encoder.name
        self.encoder_cost = ENCODER_COST[name] * (16 / self.base_width) ** 2
        self.encoder_cost_source = "segcli's table"
        candidate = self._geometry(name)
        if self.timer is not None and self._another_measurement_fits():
            self._apply(candidate, machine)
            measured = self._timed(candidate, machine)
            pixel_speed = measured.train_images_per_second * candidate.trained_pixels
            self.encoder_cost = self.train_speed / max(pixel_speed, 1e-9)
            self.encoder_cost_source = "measured here"
            candidate = self._geometry(name)
        side = min(candidate.crop or candidate.size)
        passes, enough = self._expected_passes(candidate), self._enough_passes(candidate)
        if passes >= enough or not self.encoder.planned_weights:
            return candidate
        self.encoder_note = (
            f"ImageNet weights for {name} are at hand ({self.encoder.where}), but "
            f"{PRETRAINED_MODEL} at ~{self.encoder_cost:.1f}x the U-Net's time per pixel "
            f"({self.encoder_cost_source}) would afford ~{passes:.0f} passes at {side} px, "
            f"its smallest input (it wants >= {enough:.0f}): a longer --time buys it"
        )
        self.encoder = None
        return geometry
