"""`segcli report`: one self-contained HTML page per run, several runs side by side."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcli.evaluation.best_checkpoint import evaluate_best
from segcli.report import RunRecord, read_run, write_report
from segcli.testing.tools import require_program

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    """The shared tiny shapes run, copied so that each test may write and change files."""
    return Path(shutil.copytree(trained_run, tmp_path / trained_run.name))


def _checkpoint_of(record: RunRecord) -> tuple[Path, Path, Path | None]:
    assert record.checkpoint is not None
    return record.path, record.checkpoint, record.dataset


def _best_record(run: Path) -> dict:
    best_epoch = json.loads((run / "summary.json").read_text())["best_epoch"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r["epoch"] == best_epoch)


def _external_references(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//[^"'\s>]*""", page, re.I)


def test_one_run_is_one_self_contained_page_with_every_section(run):
    path = write_report([run])
    assert path == run / "report.html"
    page = path.read_text()
    assert not _external_references(page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert f"<h1>segcli report: {run.name}</h1>" in page
    assert re.search(r'class="curves"><img alt="" src="data:image/png;base64,', page)
    best = _best_record(run)
    per_class = page.split('class="per-class"')[1].split("</table>")[0]
    names = ["background", "circle", "rectangle", "triangle"]
    for name, iou in zip(names, best["confusion/iou"], strict=True):
        assert re.search(rf"{name}</td><td>[^<]*</td><td>{iou:.4f}</td>", per_class), name
    assert f"From the validation of epoch {best['epoch']} (recorded in metrics.jsonl)." in page
    assert re.search(r'class="confusion"><img alt="" src="data:image/png;base64,', page)
    worst = page.split('class="worst"')[1].split("</table>")[0]
    assert worst.count("<tr>") == 1 + 6  # header and the default six images
    assert worst.count("data:image/png;base64,") == 6 * 4  # image, truth, prediction, errors
    assert "among all 16 images" in page
    assert 'recipe = "shapes-unet"' in html.unescape(page)  # the configuration
    environment = page.split("<h3>Environment</h3>")[1]
    assert "<th>torch</th>" in environment and "<td>segcli</td>" in environment  # a plugin
    assert "best_epoch" in page.split("<h3>Summary and timings</h3>")[1]
    assert "Plan and its reasons" not in page  # a recipe run has no plan


def test_worst_predictions_are_those_evaluate_scores_lowest(run):
    from segcli.evaluation.json_report import evaluation_report
    from segcli.inference.predictor import Predictor

    evaluation = evaluate_best(*_checkpoint_of(read_run(run)), worst=4)
    predictor = Predictor(run / "best.safetensors", "cpu")
    scored = evaluation_report(predictor, read_run(run).dataset, "val")
    lowest = sorted(scored["per_image"], key=lambda item: item["miou"])[:4]
    assert [p.iou for p in evaluation.worst] == pytest.approx([i["miou"] for i in lowest])
    assert [p.iou for p in evaluation.worst] == sorted(p.iou for p in evaluation.worst)
    assert evaluation.confusion.tolist() == scored["metrics"]["confusion/matrix"]


def test_confusion_matrix_comes_from_the_checkpoint_when_metrics_lack_it(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text(
        "".join(
            json.dumps({k: v for k, v in r.items() if k != "confusion/matrix"}) + "\n"
            for r in records
        )
    )
    page = write_report([run]).read_text()
    assert "From the best checkpoint on 16 val image(s)." in page
    assert re.search(r'class="confusion"><img alt="" src="data:image/png;base64,', page)


def test_big_validation_sets_are_capped_and_the_page_says_so(run):
    evaluation = evaluate_best(*_checkpoint_of(read_run(run)), worst=2, max_images=5)
    assert (evaluation.evaluated, evaluation.total, len(evaluation.worst)) == (5, 16, 2)
    page = write_report([run], max_images=5).read_text()
    assert "among 5 evenly spaced images of 16 (capped;" in page


def test_run_without_checkpoint_gets_a_page_without_predictions(run):
    for checkpoint in run.glob("*.safetensors"):
        checkpoint.unlink()
    page = write_report([run]).read_text()
    assert 'class="worst"' not in page
    assert "No predictions shown: the run has no checkpoint" in page
    assert 'class="per-class"' in page and 'class="confusion"' in page  # from metrics.jsonl


def test_the_plan_is_shown_when_the_run_was_planned(run):
    plan = {
        "data": "data/shapes",
        "layer": {"train": {"batch_size": 16, "lr": 0.003}},
        "reasons": {
            "train.batch_size": "16 images of 64x64 fit in memory",
            "train.lr": "AdamW's usual rate",
        },
        "estimates": {"step_seconds": 0.25},
        "overridden": {"train.lr": "--set"},
    }
    (run / "plan.json").write_text(json.dumps(plan))
    page = write_report([run]).read_text()
    section = page.split("<h3>Plan and its reasons</h3>")[1].split("<h3>")[0]
    assert "<tr><th>train.batch_size</th><td>16</td><td>16 images of 64x64 fit in memory" in section
    assert (
        "<th>train.lr</th><td>0.0030</td><td>AdamW&#x27;s usual rate</td><td>--set</td>" in section
    )
    assert "<th>estimates.step_seconds</th><td>0.2500</td>" in section


def test_two_runs_side_by_side(run, tmp_path):
    other = Path(shutil.copytree(run, tmp_path / "other-run"))
    config = (other / "config.toml").read_text()
    (other / "config.toml").write_text(re.sub(r"(?m)^lr = .*$", "lr = 0.5", config))
    out = tmp_path / "compare.html"
    page = write_report([run, other], out).read_text()
    comparison = page.split('<section id="comparison">')[1].split("</section>")[0]
    assert comparison.count("data:image/png;base64,") == 1  # the overlaid curves
    assert f'href="#run-0">{run.name}</a>' in comparison
    assert 'href="#run-1">other-run</a>' in comparison
    differences = comparison.split("Configuration differences")[1]
    assert re.search(r"<th>train\.lr</th><td>0\.003\d*</td><td>0\.5000</td>", differences)
    assert "train.epochs" not in differences  # equal settings are not repeated
    assert '<section id="run-0">' in page and '<section id="run-1">' in page
    assert not _external_references(page)


def test_cli_default_output_and_overwrite_rules(cli, run, tmp_path):
    result = cli("report", run, "--worst", "2")
    assert result.exit_code == 0, result.stderr
    assert (run / "report.html").is_file()
    assert cli("report", run, "--worst", "2").exit_code == 0  # its own file: replaced

    mine = tmp_path / "mine.html"
    mine.write_text("my notes")
    refused = cli("report", run, "--out", mine)
    assert refused.exit_code == 6
    assert "not written by segcli" in refused.stderr and mine.read_text() == "my notes"
    assert cli("report", run, "--out", mine, "--force").exit_code == 0
    assert "segcli report" in mine.read_text()

    other = Path(shutil.copytree(run, tmp_path / "other-run"))
    assert cli("report", run, other, "--max-images", "3").exit_code == 0
    assert (run / "report-compare.html").is_file()


def test_a_folder_that_is_not_a_run_is_one_line(cli, tmp_path):
    (tmp_path / "notes").mkdir()
    for folder, why in ((tmp_path / "notes", "has no config.toml"), (tmp_path / "x", "exist")):
        result = cli("report", folder)
        assert result.exit_code == 3
        [line] = result.stderr.strip().splitlines()
        assert f"{folder} is not a segcli run folder" in line and why in line
        assert "segcli train" in line


TINY_TRAIN = [
    "--set", "train.epochs=1", "--set", "train.workers=0", "--set", "input.size=[32,32]",
    "--set", "train.batch_size=16", "--set", "model.base_width=4", "--set", "model.depth=2",
    "--max-steps", "1",
]  # fmt: skip


def test_training_writes_the_report(cli, tmp_path, shapes_dataset):
    result = cli(
        "train", "--plugin", "shapes-unet", "--set", f"dataset.path={shapes_dataset}",
        *TINY_TRAIN, "--runs-dir", tmp_path / "runs", cwd=tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [run] = (tmp_path / "runs").iterdir()
    assert 'class="worst"' in (run / "report.html").read_text()


def test_chromium_renders_the_page(run, tmp_path):
    chromium = require_program(*BROWSERS, why="apt-get install chromium (.ci/run does)")
    page = write_report([run])
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert f"segcli report: {run.name}" in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "page.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.std() > 20  # text, curves and pictures, not a blank page
    coloured = np.asarray(Image.open(shot).convert("RGB"), np.int16)
    assert (np.ptp(coloured, axis=2) > 60).mean() > 0.01  # curves and palette colours drawn
