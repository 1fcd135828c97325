"""Planning a training from a dataset's fingerprint, the machine and a time budget.

The core keeps what every planner uses: `detect_hardware` says what the machine offers,
`segcli.planning.measure` times a candidate configuration on it (a `Timer` hands that to a
planner), and `segcli.planning.configure` lays the `Plan` a planner returns among the
configuration layers. The rules themselves are planner plugins (`register_planners`); the
built-in `default` one is plugins/segcli_planners (docs/planning.md lists its rules).

The names a planner plugin uses are gathered here for segcli's one public API list
(`segcli.__all__`); plugins import them from there, as `from segcli import Plan`.
"""

from segcli.data.fingerprint import ClassStats, Fingerprint, SizeStats
from segcli.planning.hardware import Hardware, detect_hardware, estimate_pixels_per_second
from segcli.planning.measure import Measurement
from segcli.planning.planners import (
    DEFAULT_BUDGET_SECONDS,
    DEFAULT_PLANNER,
    PLAN_SOURCE,
    Plan,
    Planner,
    Requirement,
    Timer,
    render_plan,
    requirements,
)

__all__ = [
    "DEFAULT_BUDGET_SECONDS",
    "DEFAULT_PLANNER",
    "PLAN_SOURCE",
    "ClassStats",
    "Fingerprint",
    "Hardware",
    "Measurement",
    "Plan",
    "Planner",
    "Requirement",
    "SizeStats",
    "Timer",
    "detect_hardware",
    "estimate_pixels_per_second",
    "render_plan",
    "requirements",
]
