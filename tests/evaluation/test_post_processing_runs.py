"""Post-processing learned at the end of a two-class training (test-time flips, then rules):
recorded in `best`, reported in the summary, applied by predict, evaluate and exports, and
turned off by a flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcli.data.images import read_image
from segcli.evaluation.postprocess_search import record_post_processing
from segcli.inference.exported_models import sidecar_path
from segcli.inference.postprocessing import PostProcessing
from segcli.inference.predictor import TTA_VIEWS, Predictor


def raw_binary(root: Path, count: int = 16, side: int = 32) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for i in range(count):
        mask = np.zeros((side, side), np.uint8)
        if i % 4:  # every fourth image is empty, as TGS's are
            top, left = rng.integers(2, side // 2, 2)
            mask[top : top + side // 3, left : left + side // 3] = 255
        image = rng.integers(0, 80, (side, side), dtype=np.uint8) + (mask > 0) * 120
        Image.fromarray(image.astype(np.uint8)).save(images / f"img{i:02d}.png")
        Image.fromarray(mask).save(masks / f"img{i:02d}.png")
    return images, masks


def binary_config(path: Path, runs: Path, data: Path, *, epochs: int) -> Path:
    """A tiny two-class U-Net run's configuration file at `path`."""
    path.write_text(
        f"""runs_dir = "{runs}"
metrics = ["binary"]
[dataset]
path = "{data}"
[model]
name = "unet"
options = {{depth = 2, base_width = 4}}
[loss]
name = "bce+dice"
[train]
epochs = {epochs}
batch_size = 4
lr = 0.01
monitor = "binary/iou"
[input]
size = [32, 32]
"""
    )
    return path


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory) -> tuple[Path, Path]:
    """A two-class dataset and a run trained on it for a few epochs (its folder)."""
    from segcli.cli import main

    root = tmp_path_factory.mktemp("binary")
    images, masks = raw_binary(root / "raw")
    data = root / "data"
    config = binary_config(root / "run.toml", root / "runs", data, epochs=3)
    for args in (
        ["prepare", "folder", str(images), "--masks", str(masks), "--val-fraction", "0.25",
         "--out", str(data)],
        ["train", "--config", str(config)],
    ):  # fmt: skip
        with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as done:
            patch.setattr("sys.argv", ["segcli", *args])
            main()
        assert done.value.code in (0, None)
    [run] = (root / "runs").iterdir()
    return data, run


def test_the_summary_reports_the_choice_and_its_effect(binary_run):
    _, run = binary_run
    learned = json.loads((run / "summary.json").read_text())["post_processing"]
    assert learned["monitor"] == "binary/iou"
    assert learned["after"] >= learned["before"]
    assert isinstance(learned["description"], str)
    meta = Predictor(run / "best.safetensors", "cpu").meta
    assert meta.get("post_processing") == learned["rules"]  # recorded exactly when kept
    # trained with horizontal flips, so their test-time average was tried, and kept or not
    assert learned["tta"] in ("none", "flip")
    assert meta.get("tta", "none") == learned["tta"]


def test_flips_are_kept_only_when_they_improve_the_metric_enough(binary_run, monkeypatch):
    from segcli.evaluation import postprocess_search
    from segcli.evaluation.postprocess_search import Choice, learn_post_processing

    data, run = binary_run
    truth = np.zeros((100, 200), np.uint8)
    truth.flat[:10_000] = 1
    plain = np.full(truth.shape, 0.1, np.float16)
    plain.flat[:5_000] = 0.9  # half the foreground found: IoU 0.5

    def mirrored(found: int) -> np.ndarray:
        """A mirrored view sure of the first `found` foreground pixels, and of nothing else:
        averaged with the plain view, IoU found / 10,000 when found >= 5,000, else 0."""
        view = np.zeros(truth.shape, np.float16)
        view.flat[:found] = 1.0
        return view

    tried: list[tuple[int, ...]] = []

    def choose(found, maximize, seconds=None):
        tried.clear()

        def predicted(held, flip_dims, *args):
            tried.append(flip_dims)
            return [truth], [mirrored(found) if flip_dims else plain]

        def rules(foregrounds, score, *, threshold, maximize, **_):  # on the chosen view
            return Choice(PostProcessing(threshold), before=0.0, after=0.77)

        monkeypatch.setattr(postprocess_search, "_view_foregrounds", predicted)
        monkeypatch.setattr(postprocess_search, "choose_post_processing", rules)
        return learn_post_processing(
            run / "best.safetensors", data, "val", monitor="binary/iou", maximize=maximize,
            seconds=seconds,
        )  # fmt: skip

    chosen = choose(5_040, maximize=True)  # IoU 0.504: more than MIN_GAIN better
    assert tried == [(), (3,)]  # the plain view is predicted once, the mirrored one added
    assert (chosen.tta, chosen.before, chosen.after) == ("flip", 0.5, 0.77)
    assert choose(5_005, maximize=True).tta == "none"  # 0.5005: within MIN_GAIN
    assert choose(0, maximize=False).tta == "flip"  # IoU 0: a loss falls
    assert choose(5_040, maximize=False).tta == "none"
    # at the end of a budget the flips are not tried when the plain pass says they would not fit
    assert choose(5_040, maximize=True, seconds=0.0).tta == "none"
    assert tried == [()]
    assert choose(5_040, maximize=True, seconds=60.0).tta == "flip"


def test_the_flips_chosen_on_are_those_the_predictor_makes(binary_run):
    # the search predicts only the mirrored view and averages it with the plain one at the
    # images' own size; predict averages the views at the model's size and resizes once
    from segcli.evaluation.postprocess_search import _flipped_average, _view_foregrounds
    from segcli.evaluation.split import evaluate_split, labelled_pairs

    data, run = binary_run
    best = run / "best.safetensors"
    plain_predictor = Predictor(best, "cpu", tta="none", post_processing=False)
    held = [(plain_predictor, labelled_pairs(data, "val"))]
    _, plain = _view_foregrounds(held, (), data, "val")
    searched = _flipped_average(held, plain, [(3,)], data, "val")
    predicted: list[np.ndarray] = []

    def foreground_of(shape):
        predicted.append(np.empty(shape, np.float32))
        return predicted[-1]

    flips = Predictor(best, "cpu", tta="flip", post_processing=False)
    evaluate_split(flips, data, "val", metrics={}, foreground=foreground_of)
    assert len(searched) == len(predicted) == 4
    for ours, theirs in zip(searched, predicted, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=2e-3)
    unflipped = zip(searched, plain, strict=True)
    assert not all(np.allclose(ours, fg, atol=2e-3) for ours, fg in unflipped)


def test_recorded_flips_are_applied_and_the_flags_turn_them_off(binary_run, tmp_path, cli):
    data, run = binary_run
    best = tmp_path / "best.safetensors"
    best.write_bytes((run / "best.safetensors").read_bytes())
    record_post_processing(best, None, "flip")
    assert Predictor(best, "cpu").views == TTA_VIEWS["flip"]
    assert Predictor(best, "cpu", tta="none").views == TTA_VIEWS["none"]
    assert Predictor(best, "cpu", post_processing=False).views == TTA_VIEWS["none"]
    images = data / "val" / "images"
    outputs = {}
    for name, extra in (("learned", []), ("flip", ["--tta", "flip", "--no-post-processing"]),
                        ("none", ["--tta", "none"])):  # fmt: skip
        out = tmp_path / name
        done = cli("predict", str(images), "--checkpoint", str(best), "--out", str(out),
                   "--probabilities", "npy", *extra)  # fmt: skip
        assert done.exit_code == 0, done.stderr
        outputs[name] = [np.load(p) for p in sorted(out.glob("*.npy"))]
    pairs = {name: list(zip(outputs["learned"], outputs[name], strict=True)) for name in outputs}
    assert pairs["flip"] and all(np.array_equal(a, b) for a, b in pairs["flip"])
    assert not all(np.array_equal(a, b) for a, b in pairs["none"])


def test_recorded_rules_are_applied_and_the_flag_turns_them_off(binary_run, tmp_path, cli):
    data, run = binary_run
    best = tmp_path / "best.safetensors"
    best.write_bytes((run / "best.safetensors").read_bytes())
    # a rule no model output survives: every image becomes empty
    record_post_processing(best, PostProcessing(threshold=1e-6, empty_below_share=1.0 + 1e-9))
    predictor = Predictor(best, "cpu")
    image = read_image(next((data / "val" / "images").iterdir()), predictor.channels)
    assert predictor.predict_mask(image).sum() == 0
    assert Predictor(best, "cpu", post_processing=False).rules == PostProcessing()

    out, raw = tmp_path / "on", tmp_path / "off"
    cli("predict", str(data / "val" / "images"), "--checkpoint", str(best), "--out", str(out))
    cli(
        "predict", str(data / "val" / "images"), "--checkpoint", str(best), "--out", str(raw),
        "--no-post-processing", "--threshold", "1e-6",
    )  # fmt: skip
    on = [np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))]
    off = [np.asarray(Image.open(p)) for p in sorted(raw.glob("*.png"))]
    assert on and all(mask.sum() == 0 for mask in on)
    assert any(mask.sum() > 0 for mask in off)


def test_a_damaged_record_is_a_one_line_checkpoint_error(binary_run, tmp_path):
    from segcli.errors import CheckpointError
    from segcli.runs.checkpoint_file import load_checkpoint, save_checkpoint

    _, run = binary_run
    saved = load_checkpoint(run / "best.safetensors")
    damaged = tmp_path / "best.safetensors"
    save_checkpoint(damaged, saved.model_state, {**saved.meta, "post_processing": {"x": 1}})
    with pytest.raises(CheckpointError, match="post-processing record is damaged"):
        Predictor(damaged, "cpu")
    Predictor(damaged, "cpu", post_processing=False)  # the flag is the way around it
    save_checkpoint(damaged, saved.model_state, {**saved.meta, "tta": ["flip"]})
    with pytest.raises(CheckpointError, match="test-time augmentation record"):
        Predictor(damaged, "cpu")
    Predictor(damaged, "cpu", tta="none")


def test_an_onnx_export_applies_the_same_post_processing(binary_run, tmp_path, cli):
    pytest.importorskip("onnxruntime")
    data, run = binary_run
    best = tmp_path / "best.safetensors"
    best.write_bytes((run / "best.safetensors").read_bytes())
    rules = PostProcessing(threshold=0.05, min_region_share=0.02)
    record_post_processing(best, rules, "flip")
    exported = tmp_path / "model.onnx"
    done = cli("export", "--checkpoint", str(best), "--format", "onnx", "--out", str(exported))
    assert done.exit_code == 0, done.stderr
    images = data / "val" / "images"
    for source, out in ((best, tmp_path / "torch"), (exported, tmp_path / "onnx")):
        done = cli("predict", str(images), "--checkpoint", str(source), "--out", str(out))
        assert done.exit_code == 0, done.stderr
    for path in sorted((tmp_path / "torch").glob("*.png")):
        assert np.array_equal(
            np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "onnx" / path.name))
        )
    sidecar = json.loads(sidecar_path(exported).read_text())
    assert (sidecar["post_processing"], sidecar["tta"]) == (rules.to_json(), "flip")
    assert Predictor(exported, "cpu").views == TTA_VIEWS["flip"]


def test_a_cross_validation_chooses_its_ensembles_rules_on_every_out_of_fold_image(
    tmp_path, monkeypatch
):
    # nnU-Net's habit: the ensemble's rules are chosen on the out-of-fold predictions, each
    # image predicted by the fold that held it out, all folds pooled
    from segcli.cli import main
    from segcli.evaluation import postprocess_search
    from segcli.evaluation.postprocess_search import Choice

    images, masks = raw_binary(tmp_path / "raw")
    data, runs = tmp_path / "data", tmp_path / "runs"
    config = binary_config(tmp_path / "run.toml", runs, data, epochs=1)
    seen: list[int] = []

    def choose(foregrounds, score, *, threshold, maximize, **_):
        seen.append(len(foregrounds))
        assert 0 <= score([f > 0.5 for f in foregrounds])[0] <= 1
        return Choice(PostProcessing(threshold=0.7), before=0.4, after=0.5)

    monkeypatch.setattr(postprocess_search, "choose_post_processing", choose)
    for args in (
        ["prepare", "folder", images, "--masks", masks, "--val-fraction", "0.25", "--out", data],
        ["train", "--config", config, "--folds", "2"],
    ):  # fmt: skip
        with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as done:
            patch.setattr("sys.argv", ["segcli", *map(str, args)])
            main()
        assert done.value.code in (0, None)
    [parent] = runs.iterdir()
    # each fold chose its own rules on its 8 images, then the ensemble on all 16
    assert seen == [8, 8, 16]
    chosen = json.loads((parent / "summary.json").read_text())["post_processing"]
    assert chosen["rules"]["threshold"] == 0.7 and chosen["monitor"] == "binary/iou"
    assert chosen == json.loads((parent / "post_processing.json").read_text())
    assert Predictor(parent, "cpu").rules.threshold == 0.7
    assert Predictor(parent, "cpu", post_processing=False).rules.threshold == 0.5
