"""Planning a training from a dataset's fingerprint, the machine and a time budget.

`detect_hardware` says what the machine offers, `plan` turns it and a `Fingerprint` into a
configuration layer with a reason per choice (docs/planning.md lists the rules).
"""

from segcli.planning.hardware import Hardware, detect_hardware
from segcli.planning.planner import DEFAULT_BUDGET_SECONDS, Plan, plan, render_plan

__all__ = [
    "DEFAULT_BUDGET_SECONDS",
    "Hardware",
    "Plan",
    "detect_hardware",
    "plan",
    "render_plan",
]
