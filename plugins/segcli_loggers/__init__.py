"""Built-in experiment trackers, registered like any third-party logger plugin.

Only names and import paths live here: tensorboard and mlflow are imported when a run uses
them. The contract every logger keeps is in ``segcli.hookspecs`` (``register_loggers`` and
``Logger``) and docs/loggers.md. The metrics files are not here: every run writes them.
"""

import segcli

_LOGGERS = [
    (
        "tensorboard",
        "segcli_loggers.tensorboard_logger:TensorBoardLogger",
        "Every epoch's numbers as TensorBoard scalars in RUN/tensorboard (needs tensorboard)",
    ),
    (
        "mlflow",
        "segcli_loggers.mlflow_logger:MLflowLogger",
        "An MLflow run: the configuration as params, every epoch's numbers as metrics, the "
        "run folder as artifacts (needs mlflow-skinny or mlflow)",
    ),
]


@segcli.hookimpl
def register_loggers(register):
    for name, target, description in _LOGGERS:
        register(name, target, description)
