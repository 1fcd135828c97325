"""Built-in metrics, registered like any third-party metric plugin."""

import segcli


@segcli.hookimpl
def register_metrics(register):
    register(
        "confusion",
        "segcli_metrics.confusion:ConfusionMatrixMetric",
        "Confusion-matrix metrics: pixel accuracy, per-class IoU, mIoU",
    )
