"""Built-in metrics, registered like any third-party metric plugin.

Only names and import paths live here: torch is imported when a metric is built.
"""

import segcli

_METRICS = [
    (
        "confusion",
        "segcli_metrics.confusion:ConfusionMatrixMetric",
        "One confusion matrix: pixel_accuracy, mean_class_accuracy, iou/miou, dice/mean_dice "
        "per class (absent classes left out of means), matrix",
    ),
    (
        "binary",
        "segcli_metrics.binary:BinaryMetric",
        "Foreground class scores: precision, recall, f1, iou, accuracy (option: positive_class=1)",
    ),
    (
        "tgs",
        "segcli_metrics.tgs:TGSMetric",
        "TGS Salt competition score: per-image precision over IoU thresholds 0.50:0.05:0.95",
    ),
]


@segcli.hookimpl
def register_metrics(register):
    for name, target, description in _METRICS:
        register(name, target, description)
