"""Cross-validation: seeded folds, one ordinary run per fold sharing the budget, the parent's
mean ± sd, `--fold k`, the folds' ensemble and the out-of-fold scores, and the refusals."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from segcli.runs.cross_validation import FOLDS_FILE, assign_folds, read_folds

FOLDS = 3
TINY = [
    "--set", "train.epochs=1", "--set", "input.size=[32,32]", "--set", "model.base_width=4",
    "--set", "model.depth=2", "--set", "train.workers=0", "--set", "train.batch_size=8",
]  # fmt: skip


def segcli(*args: str) -> int:
    """`segcli ARGS` in this process (for module fixtures); its exit code."""
    from segcli.cli import main

    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as done:
        patch.setattr("sys.argv", ["segcli", *map(str, args)])
        main()
    return done.value.code or 0


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A prepared shapes dataset of 12 train, 6 val and 2 test images of 32x32."""
    from segcli_shapes.generate import prepare

    from segcli.data.prepare import build_dataset

    out = tmp_path_factory.mktemp("cv") / "shapes"
    build_dataset(prepare(None, train=12, val=6, test=2, size=32), out, workers=1)
    return out


def train_folds(data: Path, runs: Path, *extra: str) -> Path:
    """A new cross-validation of the shapes recipe on `data`; its parent run folder."""
    code = segcli("train", "--plugin", "shapes-unet", "--data", data, "--runs-dir", runs, *TINY,
                  *extra)  # fmt: skip
    assert code == 0
    [parent] = runs.iterdir()
    return parent


@pytest.fixture(scope="module")
def parent(data, tmp_path_factory) -> Path:
    """Three folds trained with a 30 s budget for the whole cross-validation."""
    return train_folds(data, tmp_path_factory.mktemp("runs"), "--folds", FOLDS, "--time", "30s")


def ids_of(data: Path, split: str) -> set[str]:
    return {f"{split}/{p.stem}" for p in (data / split / "images").iterdir()}


def test_folds_are_disjoint_cover_the_images_and_depend_on_the_seed_only():
    ids = [f"train/{i:03d}" for i in range(23)]
    folds = assign_folds(ids, 5, seed=7, splits=("train",))
    held = [set(folds.validation_ids(k)) for k in range(5)]
    assert set().union(*held) == set(ids) and sum(map(len, held)) == len(ids)
    assert max(map(len, held)) - min(map(len, held)) <= 1
    for k in range(5):
        assert set(folds.training_ids(k)) == set(ids) - held[k]
    assert assign_folds(list(reversed(ids)), 5, seed=7, splits=("train",)) == folds
    assert assign_folds(ids, 5, seed=8, splits=("train",)) != folds
    assert held != [set(ids[k::5]) for k in range(5)]  # shuffled, not dealt in name order


def test_the_folds_file_holds_the_seed_and_the_train_and_val_images(parent, data):
    folds = read_folds(parent / FOLDS_FILE)
    stored = json.loads((parent / FOLDS_FILE).read_text())
    assert stored["seed"] == folds.seed == 0 and folds.count == FOLDS
    every = ids_of(data, "train") | ids_of(data, "val")
    assert {i for k in range(FOLDS) for i in folds.validation_ids(k)} == every
    for entry in stored["folds"]:
        assert set(entry["train"]) == every - set(entry["val"])


def names(pairs) -> set[str]:
    """`split/stem` of (image, mask) files of a prepared dataset."""
    return {f"{image.parent.parent.name}/{image.stem}" for image, _ in pairs}


def test_each_fold_is_an_ordinary_run_on_its_own_images_with_its_share_of_the_budget(parent, data):
    from segcli.config import build_config
    from segcli.data.format import read_dataset_info
    from segcli.evaluation.best_checkpoint import evaluate_best
    from segcli.plugins import get_plugins
    from segcli.report import read_run
    from segcli.training import distributed
    from segcli.training.setup import build_parts

    folds = read_folds(parent / FOLDS_FILE)
    info = read_dataset_info(data)
    for k in range(FOLDS):
        run = parent / f"fold-{k}"
        assert (run / "best.safetensors").is_file() and (run / "summary.json").is_file()
        config = build_config(config_file=run / "config.toml")
        assert config.train.max_time == pytest.approx(30 / FOLDS)
        assert config.dataset.fold == k
        # what training reads, and what the run's report predicts
        parts = build_parts(config, data, info, distributed.start("cpu"), get_plugins())
        assert names(parts.train_loader.dataset.pairs) == set(folds.training_ids(k))
        assert names(parts.val_loader.dataset.pairs) == set(folds.validation_ids(k))
        record = read_run(run)
        shown = evaluate_best(
            record.path, record.checkpoint, record.dataset, worst=20, max_images=0
        )
        assert shown.total == len(folds.validation_ids(k))
        assert {f"{r.path.parent.parent.name}/{r.path.stem}" for r in shown.worst} <= set(
            folds.validation_ids(k)
        )


def test_a_planned_cross_validation_is_planned_for_each_folds_share(data, cli):
    result = cli("train", "--data", data, "--folds", "4", "--time", "8m", "--print-config")
    assert result.exit_code == 0, result.stderr
    assert "max_time = 120.0" in result.stdout


def test_the_parent_summary_has_each_folds_score_and_their_mean_and_sd(parent):
    summary = json.loads((parent / "summary.json").read_text())
    scores = [json.loads((parent / f"fold-{k}/summary.json").read_text())["best"]
              for k in range(FOLDS)]  # fmt: skip
    assert [row["best"] for row in summary["folds"]] == scores
    assert summary["monitor"] == "confusion/miou" and summary["trained"] == FOLDS
    assert summary["mean"] == pytest.approx(statistics.fmean(scores))
    assert summary["sd"] == pytest.approx(statistics.stdev(scores))


def test_fold_k_trains_only_that_fold_and_resume_trains_the_others(data, tmp_path, cli):
    runs = tmp_path / "runs"
    result = cli("train", "--plugin", "shapes-unet", "--data", data, "--runs-dir", runs, *TINY,
                 "--folds", FOLDS, "--fold", "1")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [parent] = runs.iterdir()
    assert sorted(p.name for p in parent.glob("fold-*")) == ["fold-1"]
    summary = json.loads((parent / "summary.json").read_text())
    assert [row["best"] is None for row in summary["folds"]] == [True, False, True]
    assert "1 fold(s) of 3" in result.stdout.replace("\n", " ")
    assert cli("train", "--resume", parent, "--fold", "0").exit_code == 0
    assert sorted(p.name for p in parent.glob("fold-*")) == ["fold-0", "fold-1"]
    again = cli("train", "--resume", parent, "--fold", "0")
    assert (
        again.exit_code == 2 and "fold 0 of" in again.stderr and "trained already" in again.stderr
    )
    assert cli("train", "--resume", parent).exit_code == 0
    assert json.loads((parent / "summary.json").read_text())["trained"] == FOLDS


def folds_of_summary(parent: Path) -> list[dict]:
    """The parent summary's row of each fold, as each fold's own summary.json has it now."""
    rows = []
    for k in range(len(json.loads((parent / "summary.json").read_text())["folds"])):
        own = json.loads((parent / f"fold-{k}" / "summary.json").read_text())
        rows.append({"best": own["best"], "best_epoch": own["best_epoch"],
                     "seconds": own["seconds"]["total"]})  # fmt: skip
    return rows


def test_a_fold_finished_by_resume_updates_the_parents_summary_and_ensemble(
    data, tmp_path, cli, monkeypatch
):
    from segcli.cli.progress import RichReporter
    from segcli.evaluation.postprocess_search import Choice
    from segcli.inference.postprocessing import PostProcessing
    from segcli.training import cross_validation

    class CtrlCInFoldOne(RichReporter):  # Ctrl-C after fold 1's first epoch (its `last` kept)
        def start(self, run_dir, *args, **options):
            self.fold = Path(run_dir).name
            super().start(run_dir, *args, **options)

        def epoch_end(self, record, best):
            super().epoch_end(record, best)
            if self.fold == "fold-1":
                raise KeyboardInterrupt

    chosen: list[Path] = []  # the ensemble's post-processing, chosen as for a two-class run

    def learn(run, *args, **options):
        chosen.append(Path(run))
        return Choice(PostProcessing(threshold=0.7), before=0.4, after=0.5)

    monkeypatch.setattr(cross_validation, "learn_ensemble_post_processing", learn)
    runs = tmp_path / "runs"
    with monkeypatch.context() as patch:
        patch.setattr("segcli.cli.train.RichReporter", CtrlCInFoldOne)
        result = cli("train", "--plugin", "shapes-unet", "--data", data, "--runs-dir", runs,
                     *TINY, "--set", "train.epochs=2", "--folds", 2)  # fmt: skip
    assert result.exit_code == 130, result.stderr
    [parent] = runs.iterdir()
    assert not (parent / "fold-1" / "summary.json").is_file() and not chosen

    result = cli("train", "--resume", parent / "fold-1")  # the last fold left: now finished
    assert result.exit_code == 0, result.stderr
    summary = json.loads((parent / "summary.json").read_text())
    assert summary["trained"] == 2 and chosen == [parent]
    assert [{key: row[key] for key in ("best", "best_epoch", "seconds")}
            for row in summary["folds"]] == folds_of_summary(parent)  # fmt: skip
    assert summary["post_processing"]["rules"]["threshold"] == 0.7
    assert (parent / "post_processing.json").is_file()
    assert "2 fold(s) of 2" in result.stdout.replace("\n", " ")

    # a finished fold extended: its new scores and time, the ensemble's rules chosen again
    assert cli("train", "--resume", parent / "fold-0", "--set", "train.epochs=3").exit_code == 0
    summary = json.loads((parent / "summary.json").read_text())
    assert [{key: row[key] for key in ("best", "best_epoch", "seconds")}
            for row in summary["folds"]] == folds_of_summary(parent)  # fmt: skip
    assert chosen == [parent, parent]


def test_a_cross_validation_run_moved_elsewhere_still_works(data, tmp_path, cli):
    import shutil

    trained = train_folds(data, tmp_path / "runs", "--folds", 2)
    parent = tmp_path / "elsewhere" / "cv"
    parent.parent.mkdir()
    shutil.move(trained, parent)
    assert not trained.exists()
    scored = cli("evaluate", data, "--cv", parent)
    assert scored.exit_code == 0, scored.stderr
    assert json.loads((parent / "eval-cv.json").read_text())["images"] == 18
    out = tmp_path / "pred"
    predicted = cli("predict", "--ensemble", parent, data / "test" / "images", "--out", out)
    assert predicted.exit_code == 0, predicted.stderr
    assert len(list(out.glob("*.png"))) == 2
    # what reads a fold's images again: its report, and training it further
    reported = cli("report", parent)
    assert reported.exit_code == 0, reported.stderr
    extended = cli("train", "--resume", parent / "fold-1", "--set", "train.epochs=2")
    assert extended.exit_code == 0, extended.stderr
    assert json.loads((parent / "fold-1" / "summary.json").read_text())["epochs_run"] == 2


def test_the_ensemble_averages_the_folds_probabilities(parent, data):
    from segcli.data.images import read_image
    from segcli.inference.predictor import Predictor

    image = read_image(next((data / "test" / "images").iterdir()), 3)
    for tta in ("none", "flip"):
        ensemble = Predictor(parent, "cpu", tta=tta)
        folds = [Predictor(parent / f"fold-{k}" / "best.safetensors", "cpu", tta=tta)
                 for k in range(FOLDS)]  # fmt: skip
        batch = ensemble.preprocess(image)[None]
        expected = torch.stack([fold.probabilities(batch) for fold in folds]).mean(0)
        assert torch.allclose(ensemble.probabilities(batch), expected, atol=1e-6)
        assert not torch.allclose(folds[0].probabilities(batch), expected, atol=1e-6)
    tiled = ensemble.predict_mask(image, tile=16, overlap=0.25)  # tiles: the same one path
    assert tiled.shape == image.shape[:2]


def test_predict_and_evaluate_take_the_ensemble(parent, data, tmp_path, cli):
    out = tmp_path / "pred"
    result = cli("predict", "--ensemble", parent, data / "test" / "images", "--out", out,
                 "--tta", "flip")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert len(list(out.glob("*.png"))) == 2
    scored = cli("evaluate", data, "--ensemble", parent)
    assert scored.exit_code == 0, scored.stderr
    assert json.loads((parent / "eval-ensemble-val.json").read_text())["images"] == 6
    assert "warning: the val images are in" in scored.stderr  # its folds trained on them


def test_hold_out_val_makes_the_folds_of_the_train_images_alone(data, tmp_path, cli):
    parent = train_folds(data, tmp_path / "runs", "--folds", 2, "--hold-out-val")
    folds = read_folds(parent / FOLDS_FILE)
    assert folds.splits == ("train",)
    assert {i for k in range(2) for i in folds.validation_ids(k)} == ids_of(data, "train")
    scored = cli("evaluate", data, "--ensemble", parent)
    assert scored.exit_code == 0 and "warning" not in scored.stderr


def test_out_of_fold_scores_use_each_image_once_with_the_fold_that_held_it_out(
    parent, data, monkeypatch
):
    from segcli.evaluation import cross_validation as cv
    from segcli.evaluation import evaluate_split
    from segcli.inference.predictor import Predictor

    loaded: list[Path] = []  # the checkpoint of each Predictor made, in order

    class Spy(Predictor):
        def __init__(self, checkpoint, *args, **options):
            loaded.append(Path(checkpoint))
            super().__init__(checkpoint, *args, **options)

    monkeypatch.setattr(cv, "Predictor", Spy)
    predicted_by: dict[str, str] = {}  # image id -> the fold folder whose model predicted it

    def note(record) -> None:
        image_id = f"{record.path.parent.parent.name}/{record.path.stem}"
        assert image_id not in predicted_by  # each image once
        predicted_by[image_id] = loaded[-1].parent.name

    folds = read_folds(parent / FOLDS_FILE)
    evaluation = cv.evaluate_out_of_fold(parent, data, device="cpu", on_image=note)
    assert predicted_by == {
        image_id: f"fold-{k}" for k in range(FOLDS) for image_id in folds.validation_ids(k)
    }
    assert evaluation.images == 18
    pairs = cv.out_of_fold_pairs(parent, data)
    for k in range(FOLDS):
        alone = evaluate_split(
            Predictor(parent / f"fold-{k}" / "best.safetensors", "cpu"), data, "val",
            pairs=pairs[k],
        )  # fmt: skip
        assert evaluation.folds[k].metrics == alone.metrics
    # the pooled scores are those of every out-of-fold image together
    pooled = sum(e.confusion for e in evaluation.folds)
    assert np.array_equal(evaluation.confusion, pooled)
    accuracy = np.trace(pooled) / pooled.sum()
    assert evaluation.metrics["confusion/pixel_accuracy"] == pytest.approx(accuracy)


def test_evaluate_cv_prints_and_saves_per_fold_and_pooled_scores(parent, data, cli):
    result = cli("evaluate", data, "--cv", parent)
    assert result.exit_code == 0, result.stderr
    assert "pooled" in result.stdout and "fold-" not in result.stderr
    report = json.loads((parent / "eval-cv.json").read_text())
    assert [f["images"] for f in report["folds"]] == [6, 6, 6] and report["images"] == 18
    assert {"confusion/miou"} <= report["metrics"].keys()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--folds", "1"], "at least 2 folds"),
        (["--folds", "19"], "more folds than the 18 labelled image(s)"),
        (["--folds", "3", "--fold", "3"], "fold 3 is out of range"),
        (["--fold", "0"], "--fold k trains one fold of a cross-validation"),
        (["--hold-out-val"], "give --folds K too"),
    ],
)
def test_train_refuses_folds_it_cannot_make(data, tmp_path, cli, args, says):
    runs = tmp_path / "runs"
    result = cli("train", "--plugin", "shapes-unet", "--data", data, "--runs-dir", runs, *TINY,
                 *args)  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not runs.exists() or not any(runs.iterdir())


def test_the_other_refusals_are_one_line_usage_errors(parent, tmp_path, cli, data):
    cases = [
        (["train", "--resume", parent, "--folds", "3"], "--resume continues one"),
        (["train", "--resume", parent, "--time", "+5m"], "keep the configuration and time"),
        (["train", "--resume", parent / "fold-0", "--fold", "1"], "is a single run"),
        (["predict", "--ensemble", parent, "--checkpoint", parent / "fold-0", data],
         "both name the model"),
        (["predict", "--ensemble", parent / "fold-0", data], "not a cross-validation run"),
        (["evaluate", data, "--cv", parent, "--split", "val"], "drop --checkpoint"),
        (["predict", "--checkpoint", parent, data], "use --ensemble"),
    ]  # fmt: skip
    for args, says in cases:
        result = cli(*args)
        assert result.exit_code in (2, 5), (args, result.stderr)
        assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, args


def test_an_ensemble_of_folds_not_all_trained_says_which_to_train(data, tmp_path, cli):
    parent = train_folds(data, tmp_path / "runs", "--folds", FOLDS, "--fold", "2")
    result = cli("predict", "--ensemble", parent, data / "test" / "images", "--out", tmp_path / "p")
    assert result.exit_code == 2
    assert "fold(s) 0, 1 of 3 have no best checkpoint" in result.stderr
    assert f"segcli train --resume {parent}" in result.stderr


def test_the_report_of_a_cross_validation_shows_its_folds_and_their_mean(parent, cli):
    result = cli("report", parent)
    assert result.exit_code == 0, result.stderr
    page = (parent / "report.html").read_text()
    summary = json.loads((parent / "summary.json").read_text())
    assert all(f"fold-{k}" in page for k in range(FOLDS))
    assert "Best epoch of each run" in page  # the folds side by side
    assert f"{summary['mean']:.4f}" in page and "its folds follow" in page
