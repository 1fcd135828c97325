"""Train the planner and the built-in recipes on the real datasets under a time budget, score
them at the original image size, and write docs/results.md.

    python benchmarks/results.py [--budget 8m] [--only tgs-salt,isbi2012] [--work DIR]
                                 [--out docs/results.md]

Run it alone on the machine: every figure is a quality reached within a wall-clock budget.
Data come from ../shared/data, split as in ../shared/splits (the baselines' splits). Each run
is `segcli prepare NAME RAW --split-file SPLIT` once, then `segcli train ... --time BUDGET`,
then `segcli evaluate` with `--save-predictions`: the metrics below are computed here from
the predicted masks at the images' own size, not taken from the training log.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA, SPLITS = SHARED / "data", SHARED / "splits"

Scores = dict[str, float]


def tgs_scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Scores:
    """Salt IoU over all validation pixels, and the competition score (mean over images of
    the share of IoU thresholds 0.50:0.05:0.95 exceeded; empty truth and empty prediction
    score 1, one of them empty 0)."""
    intersection = union = 0
    per_image = []
    for predicted, truth in pairs:
        salt_p, salt_t = predicted == 1, truth == 1
        inter, uni = int((salt_p & salt_t).sum()), int((salt_p | salt_t).sum())
        intersection, union = intersection + inter, union + uni
        if not salt_t.any() or not salt_p.any():
            per_image.append(float(not salt_t.any() and not salt_p.any()))
        else:
            per_image.append(float(np.mean([20 * inter > k * uni for k in range(10, 20)])))
    return {
        "salt IoU": intersection / max(union, 1),
        "competition score": float(np.mean(per_image)),
    }


def isbi_scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> Scores:
    """Pixel accuracy, and the Dice of the membrane class (id 0) over all validation pixels."""
    correct = total = overlap = predicted_membrane = true_membrane = 0
    for predicted, truth in pairs:
        correct += int((predicted == truth).sum())
        total += truth.size
        overlap += int(((predicted == 0) & (truth == 0)).sum())
        predicted_membrane += int((predicted == 0).sum())
        true_membrane += int((truth == 0).sum())
    return {
        "pixel accuracy": correct / total,
        "membrane Dice": 2 * overlap / max(predicted_membrane + true_membrane, 1),
    }


def miou_scores(pairs: list[tuple[np.ndarray, np.ndarray]], ignore: int = 255) -> Scores:
    """Mean IoU over the classes present in the truth or the prediction, ignore left out."""
    classes = sorted({int(v) for _, t in pairs for v in np.unique(t) if v != ignore})
    inter = dict.fromkeys(classes, 0)
    union = dict.fromkeys(classes, 0)
    for predicted, truth in pairs:
        valid = truth != ignore
        for c in classes:
            p, t = (predicted == c) & valid, (truth == c) & valid
            inter[c] += int((p & t).sum())
            union[c] += int((p | t).sum())
    return {"mIoU": float(np.mean([inter[c] / union[c] for c in classes if union[c]]))}


@dataclass(frozen=True)
class Workload:
    name: str  # the preparer, and the prepared folder's name
    raw: Path
    split_file: Path | None
    recipe: str
    score: Callable[[list[tuple[np.ndarray, np.ndarray]]], Scores]
    baselines: tuple[tuple[str, str], ...] = ()


WORKLOADS = (
    Workload(
        "tgs-salt",
        DATA / "tgs-salt",
        SPLITS / "tgs-salt.json",
        "tgs-unet",
        tgs_scores,
        (
            (
                "TGS tutorial U-Net (valid convs, no BN, Adam 1e-3, batch 64), 8 min",
                "salt IoU 0.000, competition score 0.422",
            ),
            (
                "segmentation_models_pytorch Unet-resnet18, no pretraining, same loop, 8 min",
                "salt IoU 0.534, competition score 0.497",
            ),
        ),
    ),
    Workload(
        "isbi2012",
        DATA / "isbi2012" / "png",
        SPLITS / "isbi2012.json",
        "isbi-unet",
        isbi_scores,
        (
            (
                "ISBI tutorial U-Net (64..512, RMSprop 1e-5, batch 1), 8 min",
                "pixel accuracy 0.809, membrane Dice 0.661",
            ),
            ('predict "all cell"', "pixel accuracy 0.801, membrane Dice 0.000"),
        ),
    ),
    Workload("idd-lite", DATA / "idd-lite", None, "idd-lite-erfnet", miou_scores),
)


def segcli(*args: str, cwd: Path) -> float:
    """Run one segcli command to completion; its wall-clock seconds."""
    command = [sys.executable, "-m", "segcli", *args]
    print("$ segcli " + shlex.join(args), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True)
    return time.perf_counter() - started


def prepared(workload: Workload, work: Path) -> Path:
    out = work / "data" / workload.name
    if not (out / "dataset.json").is_file():
        args = ["prepare", workload.name, str(workload.raw), "--out", str(out)]
        if workload.split_file is not None:
            args += ["--split-file", str(workload.split_file)]
        segcli(*args, cwd=work)
    return out


def scored(dataset: Path, run_dir: Path, workload: Workload, work: Path) -> Scores:
    report = work / f"eval-{run_dir.name}.json"
    checkpoint = run_dir / "best.safetensors"
    segcli(
        "evaluate", str(dataset), "--split", "val", "--checkpoint", str(checkpoint),
        "--out", str(report), "--save-predictions", "--force",
        cwd=work,
    )  # fmt: skip
    predictions = report.with_name(f"{report.stem}-predictions")
    pairs = []
    for mask_path in sorted((dataset / "val" / "masks").glob("*.png")):
        truth = np.asarray(Image.open(mask_path))
        predicted = np.asarray(Image.open(predictions / mask_path.name))
        pairs.append((predicted, truth))
    return workload.score(pairs)


def run(workload: Workload, arguments: list[str], budget: str, work: Path) -> dict:
    dataset = prepared(workload, work)
    runs_dir = work / "runs" / f"{workload.name}-{len(list((work / 'runs').glob('*')))}"
    args = ["train", "--data", str(dataset), *arguments, "--time", budget]
    args += ["--runs-dir", str(runs_dir)]
    seconds = segcli(*args, cwd=work)
    [run_dir] = runs_dir.iterdir()  # a runs folder of its own
    summary = json.loads((run_dir / "summary.json").read_text())
    shown = ["segcli", "train", "--data", f"data/{workload.name}", *arguments, "--time", budget]
    return {
        "dataset": workload.name,
        "command": shlex.join(shown),
        "budget": budget,
        "wall_seconds": round(seconds, 1),
        "epochs": summary.get("epochs_run"),
        "scores": scored(dataset, run_dir, workload, work),
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "# Results",
        "",
        "Written by `python benchmarks/results.py` (do not edit by hand): each row is one",
        "training under the wall-clock budget its command gives (`--time`), then",
        "`segcli evaluate`;",
        "the metrics are computed from the predicted masks at the images' own size on the",
        "fixed validation splits of `../shared/splits/` (TGS: 600 images at 101x101;",
        "ISBI 2012: slices 25-29 at 512x512). Each configuration ran once, alone on the machine.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{_cores()} CPU cores, {platform.python_version()}, torch {_torch_version()}.",
        "",
        "| dataset | command | budget | time used (train command, wall clock) | epochs | metrics |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        metrics = ", ".join(f"{k} **{v:.3f}**" for k, v in result["scores"].items())
        lines.append(
            f"| {result['dataset']} | `{result['command']}` | {result['budget']} | "
            f"{result['wall_seconds']:.0f} s | "
            f"{result['epochs']} | {metrics} |"
        )
    baselines = [(w.name, b) for w in WORKLOADS for b in w.baselines]
    if baselines:
        lines += [
            "",
            "## Baselines",
            "",
            "Measured by the dataset maintainers on the same splits and machine type, without",
            "segcli (copied from `../shared/splits/README.md`):",
            "",
            "| dataset | baseline | metrics |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {what} | {figures} |" for name, (what, figures) in baselines]
    return "\n".join(lines) + "\n"


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _torch_version() -> str:
    import torch

    return torch.__version__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="8m", help="time budget per training (8m)")
    parser.add_argument("--only", default="tgs-salt,isbi2012", help="workloads, comma-separated")
    parser.add_argument("--runs", default="plan,recipe", help="plan, recipe or both")
    parser.add_argument("--work", type=Path, default=Path("/tmp/segcli-results"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    args = parser.parse_args()
    chosen = [w for w in WORKLOADS if w.name in args.only.split(",")]
    missing = [w.name for w in chosen if not w.raw.is_dir()]
    if missing:
        print(f"skipped: no raw data for {', '.join(missing)} under {DATA}")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "runs").mkdir(exist_ok=True)
    # results accumulate across invocations (one workload at a time fits a session better);
    # a configuration run again replaces its earlier row
    store = args.work / "results.json"
    results = json.loads(store.read_text()) if store.is_file() else []
    for workload in chosen:
        variants = {"plan": [], "recipe": ["--plugin", workload.recipe]}
        for variant in args.runs.split(","):
            result = run(workload, variants[variant], args.budget, args.work)
            results = [r for r in results if r["command"] != result["command"]] + [result]
            store.write_text(json.dumps(results, indent=2))
            print(json.dumps(result), flush=True)
    args.out.write_text(markdown(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
