"""Scoring a model on labelled images: the one scoring path. `scores` counts each image's
confusion matrix, derives its IoU by the one rule (absent classes and images without a
labelled pixel: docs/losses-and-metrics.md), and holds `Scoring`, the one accumulator that
feeds the metric plugins, sums the counts, keeps the worst images, the mean loss, and adds
them up across torchrun's processes. `split` runs a predictor over a labelled split image by
image; `validation` is its batch form, validation while training (batches at the training
size, with the loss). `segcli evaluate` (whose JSON report and mask files are
`json_report`), `segcli report` (a run's checkpoint evaluated again: `best_checkpoint`),
`segcli visualize predictions`, cross-validation and the post-processing a run learns
(`postprocess_search`) all score through it. It may import the data layer, models and
`segcli.building`, the plugins and errors, run files (`segcli.runs`) and inference
(`segcli.inference`, but not its `export` and `profile`, which sit above it); nothing that
trains, draws or parses a command line imports into it.
"""

from segcli.evaluation.scores import ImageRecord, Scoring, confusion_matrix, iou_scores
from segcli.evaluation.split import (
    SplitEvaluation,
    check_classes,
    evaluate_split,
    evenly_spaced,
    labelled_pairs,
)
from segcli.evaluation.validation import validate

__all__ = [
    "ImageRecord",
    "Scoring",
    "SplitEvaluation",
    "check_classes",
    "confusion_matrix",
    "evaluate_split",
    "evenly_spaced",
    "iou_scores",
    "labelled_pairs",
    "validate",
]
