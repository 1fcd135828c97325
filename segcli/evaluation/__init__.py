"""Scoring a model on labelled images: the one place that runs a predictor over a labelled
split, counts each image's confusion matrix, derives its IoU by the one rule (absent classes
and images without a labelled pixel: docs/losses-and-metrics.md), feeds the metric plugins
and keeps the worst images (`split`, `scores`). Validation while training
(`segcli.training.loop.evaluate`), `segcli evaluate` (whose JSON report and mask files are
`json_report`), `segcli report` (a run's checkpoint evaluated again: `best_checkpoint`),
`segcli visualize predictions` and the post-processing a run learns (`postprocess_search`) all
score through it. It may import the data layer, models and
`segcli.building`, the plugins and errors, run files (`segcli.runs`) and inference
(`segcli.inference`, but not its `export` and `profile`, which sit above it); nothing that
trains, draws or parses a command line imports into it.
"""

from segcli.evaluation.scores import (
    confusion_matrix,
    iou_scores,
    metric_scores,
    reset_metrics,
    update_metrics,
)
from segcli.evaluation.split import (
    ImageRecord,
    SplitEvaluation,
    check_classes,
    evaluate_split,
    evenly_spaced,
    labelled_pairs,
)

__all__ = [
    "ImageRecord",
    "SplitEvaluation",
    "check_classes",
    "confusion_matrix",
    "evaluate_split",
    "evenly_spaced",
    "iou_scores",
    "labelled_pairs",
    "metric_scores",
    "reset_metrics",
    "update_metrics",
]
