"""The built-in planner, registered like any third-party plugin: `default`, segcli's rules
(docs/planning.md), chosen by `segcli train --data DIR` unless `--planner NAME` says otherwise.

Only the name and the import path live here: the rules are imported when a run is planned.
"""

import segcli


@segcli.hookimpl
def register_planners(register):
    register(
        "default",
        "segcli_planners.rules:plan",
        "segcli's rules: U-Net, input size, batch, loss and schedule from the dataset's "
        "fingerprint, timed on this machine within the budget",
    )
