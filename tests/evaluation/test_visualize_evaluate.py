"""`segcli evaluate` and the `visualize` subcommands: reports and non-blank PNGs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image


def not_blank(path, min_width, min_height) -> np.ndarray:
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape[1] >= min_width and picture.shape[0] >= min_height
    assert picture.std() > 10 and len(np.unique(picture.reshape(-1, 3), axis=0)) > 8
    return picture


def test_evaluate_writes_a_per_class_report_and_predictions(
    cli, trained_run, shapes_dataset, tmp_path
):
    out = tmp_path / "eval.json"
    result = cli(
        "evaluate",
        str(shapes_dataset),
        "--split",
        "val",
        "--checkpoint",
        str(trained_run),
        "--out",
        str(out),
        "--save-predictions",
        "--workers",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    assert "circle" in result.stdout and "confusion/miou" in result.stdout
    report = json.loads(out.read_text())
    assert report["images"] == 16 and report["split"] == "val"
    assert 0 <= report["metrics"]["confusion/miou"] <= 1
    assert np.asarray(report["metrics"]["confusion/matrix"]).sum() == 16 * 64 * 64
    assert len(report["per_image"]) == 16
    predictions = sorted((tmp_path / "eval-predictions").glob("*.color.png"))
    assert len(predictions) == 16 and Image.open(predictions[0]).size == (64, 64)


def test_evaluate_threads_sets_the_threads_of_the_model(cli, trained_run, shapes_dataset, tmp_path):
    import torch

    before = torch.get_num_threads()
    threads = 1 if before > 1 else 2
    try:
        result = cli(
            "evaluate", shapes_dataset, "--checkpoint", trained_run, "--out",
            tmp_path / "eval.json", "--threads", threads,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_evaluate_an_unlabelled_split_is_a_data_error(cli, trained_run, shapes_dataset):
    result = cli(
        "evaluate", str(shapes_dataset), "--split", "test", "--checkpoint", str(trained_run)
    )
    assert result.exit_code == 3
    assert "no masks" in result.stderr


def test_visualize_predictions_worst_first(cli, trained_run, shapes_dataset, tmp_path):
    out = tmp_path / "predictions.png"
    result = cli(
        "visualize",
        "predictions",
        str(shapes_dataset),
        "--checkpoint",
        str(trained_run),
        "-n",
        "3",
        "--worst-first",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.stderr
    picture = not_blank(out, 4 * 160, 3 * 160)
    assert (picture == np.array([255, 0, 255])).all(-1).sum() > 0  # error pixels


def test_visualize_curves_overlays_runs(cli, trained_run, tmp_path):
    out = tmp_path / "curves.png"
    result = cli("visualize", "curves", str(trained_run), str(trained_run), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    picture = not_blank(out, 800, 500)
    assert (picture == np.array([31, 119, 180])).all(-1).sum() > 20  # first run's colour


def test_visualize_confusion_from_a_run_and_from_an_evaluation(
    cli, trained_run, shapes_dataset, tmp_path
):
    out = tmp_path / "confusion.png"
    result = cli("visualize", "confusion", str(trained_run), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    not_blank(out, 4 * 24, 4 * 24)
    report = tmp_path / "eval.json"
    cli(
        "evaluate",
        str(shapes_dataset),
        "--checkpoint",
        str(trained_run),
        "--out",
        str(report),
        "--workers",
        "0",
    )
    result = cli("visualize", "confusion", str(report))
    assert result.exit_code == 0, result.stderr
    not_blank(tmp_path / "eval-confusion.png", 4 * 24, 4 * 24)
    result = cli("visualize", "confusion", str(tmp_path / "missing.json"))
    assert result.exit_code == 3


def test_evaluate_replaces_only_its_own_report_unless_forced(
    cli, trained_run, shapes_dataset, tmp_path
):
    out = tmp_path / "notes.json"
    out.write_text("the user's own notes")
    args = ("evaluate", shapes_dataset, "--checkpoint", trained_run, "--out", out)
    result = cli(*args, "--workers", "0")
    assert result.exit_code == 6, result.stderr
    assert "not written by segcli" in result.stderr and "--force" in result.stderr
    assert out.read_text() == "the user's own notes"
    assert cli(*args, "--force").exit_code == 0
    assert json.loads(out.read_text())["split"] == "val"
    assert cli(*args, "--save-predictions").exit_code == 0  # a re-run needs no --force
    # a killed run's temporary goes, and re-runs do not grow the ledger of written files
    (tmp_path / ".segcli-999999999-abcdefgh.tmp").write_bytes(b"half a report")
    assert cli(*args).exit_code == 0 and cli(*args).exit_code == 0
    assert not list(tmp_path.glob(".segcli-*.tmp"))
    ledger = (tmp_path / ".segcli-outputs.jsonl").read_text().splitlines()
    written = 1 + len(list((tmp_path / "notes-predictions").rglob("*.png")))
    assert len(ledger) <= written + 1  # compacted, plus this run's new record of the report
    inside = cli(
        "evaluate",
        shapes_dataset,
        "--checkpoint",
        trained_run,
        "--out",
        shapes_dataset / "eval.json",
        "--force",
    )
    assert inside.exit_code == 2 and "inside the dataset" in inside.stderr
    assert not (shapes_dataset / "eval.json").exists()


def test_evaluate_refuses_overlap_without_tile(cli, trained_run, shapes_dataset, tmp_path):
    result = cli(
        "evaluate",
        shapes_dataset,
        "--checkpoint",
        trained_run,
        "--out",
        tmp_path / "e.json",
        "--overlap",
        "0.3",
    )
    assert result.exit_code == 2 and "--overlap 0.3 applies to sliding windows" in result.stderr
    assert not (tmp_path / "e.json").exists()


def test_curves_skip_a_torn_last_metrics_line(tmp_path):
    from segcli.visualize import read_history

    records = [{"epoch": 1, "train/loss": 0.9}, {"epoch": 2, "train/loss": 0.5}]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"epoch": 3, "train/lo'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert read_history(tmp_path) == records


def test_curves_do_not_import_torch(trained_run, tmp_path):
    code = (
        "import sys; from segcli.cli import main; sys.argv = ['segcli', 'visualize', 'curves', "
        f"{str(trained_run)!r}, '--out', {str(tmp_path / 'c.png')!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
