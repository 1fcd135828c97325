"""Validation while training and `evaluate_split` are one scoring path: the same predictions
get the same scores from both."""

from __future__ import annotations

import json

from segcli.config import build_config
from segcli.evaluation import evaluate_split
from segcli.inference.predictor import Predictor
from segcli.training.fit import fit


def test_validation_and_evaluate_split_score_the_same_predictions_alike(tmp_path):
    """Images at the training size, no augmentation: the run's last validation and
    `segcli evaluate`'s loop see the same inputs and the same weights (`best`), so every
    metric, the confusion matrix included, must agree exactly."""
    from segcli_shapes.generate import prepare

    from segcli.data.prepare import build_dataset

    dataset = tmp_path / "shapes"
    build_dataset(prepare(None, train=8, val=6, test=0, size=32), dataset, workers=1)
    config = build_config(
        {"model": {"name": "unet"}, "metrics": ["confusion", "binary"]},
        overrides=[
            f'dataset.path="{dataset}"',
            f'runs_dir="{tmp_path / "runs"}"',
            "model.base_width=4",
            "model.depth=2",
            "input.size=[32,32]",
            "train.batch_size=4",  # batches of 4 and 2: validation's batch form, not per image
            "train.workers=0",
            "train.epochs=12",  # enough to predict shapes, not background everywhere
            "train.val_every=100",  # the last epoch's validation only: the one of `best`
            "train.lr=0.01",
            "augment=none",
        ],
    )
    run = fit(config)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    validated = {k: v for k, v in row.items() if k.startswith(("confusion/", "binary/"))}
    predictor = Predictor(run / "best.safetensors", "cpu", post_processing=False)
    evaluated = evaluate_split(predictor, dataset, "val").metrics
    matrix = validated["confusion/matrix"]
    predicted = [k for k in range(len(matrix)) if any(row[k] for row in matrix)]
    assert len(predicted) > 1  # predictions that vary: agreeing is not a given
    # as JSON text: NaN (a score without a case, e.g. a precision) then equals NaN
    assert json.dumps(evaluated, sort_keys=True) == json.dumps(validated, sort_keys=True)
