"""Train the planner, the naive baseline and the built-in recipes on the real datasets under
the same wall-clock budget, score them at the original image size, and write docs/results.md.

    python benchmarks/results.py [--only tgs-salt,drive] [--runs plan,naive,recipe]
                                 [--budget 8m] [--work DIR] [--out docs/results.md]
    python benchmarks/results.py --quick [--work DIR]     # the whole pipeline in ~1 minute

Run it alone on the machine: every figure is a quality reached within a wall-clock budget.
Data come from ../shared/data; TGS and ISBI are split as in ../shared/splits (the
baselines' splits), IDD-Lite and DRIVE keep their official validation images. For every
workload, in the same budget (8 minutes for TGS and ISBI, 10 for the others; `--budget`
overrides them all):

    plan    segcli train --data DIR --time B
    naive   segcli train --plugin shapes-unet --data DIR --time B --set train.epochs=10000
            (the README's older own-data path: 64 px, as many epochs as fit)
    recipe  segcli train --plugin RECIPE --data DIR --time B (where the dataset has one)

then `segcli evaluate --save-predictions`: the metrics are computed here from the predicted
masks at the images' own size, not taken from the training log. Results accumulate in
benchmarks/results.json, one set per machine (CPU model and cores), so a workload can be run
on its own; docs/results.md shows each machine's rows under its own heading.

`--quick` runs plan and naive on a small synthetic `shapes` dataset with a 20 s budget in a
temporary folder (or `--work`), writes WORK/results.md and leaves docs/results.md alone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe_machine, machine_line
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA, SPLITS = SHARED / "data", SHARED / "splits"
DRIVE = DATA / "drive" / "DRIVE"
STORE = REPO / "benchmarks" / "results.json"  # every machine's rows; docs/results.md shows them

Pairs = list[tuple[np.ndarray, np.ndarray]]  # (predicted, truth) class-id masks per image
Scores = dict[str, float]

VARIANTS = ("plan", "naive", "recipe")
NAIVE = ("--plugin", "shapes-unet", "--set", "train.epochs=10000")


def tgs_scores(pairs: Pairs) -> Scores:
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


def isbi_scores(pairs: Pairs) -> Scores:
    """Pixel accuracy, and the Dice of the membrane class (id 0) over all validation pixels."""
    accuracy, dice = _accuracy_and_dice(pairs, 0)
    return {"pixel accuracy": accuracy, "membrane Dice": dice}


def drive_scores(pairs: Pairs) -> Scores:
    """Vessel (id 1) Dice and pixel accuracy, inside the field of view (see `drive_fov`)."""
    accuracy, dice = _accuracy_and_dice(pairs, 1)
    return {"vessel Dice": dice, "pixel accuracy": accuracy}


def _accuracy_and_dice(pairs: Pairs, positive: int) -> tuple[float, float]:
    correct = total = overlap = predicted_positive = true_positive = 0
    for predicted, truth in pairs:
        correct += int((predicted == truth).sum())
        total += truth.size
        overlap += int(((predicted == positive) & (truth == positive)).sum())
        predicted_positive += int((predicted == positive).sum())
        true_positive += int((truth == positive).sum())
    return correct / total, 2 * overlap / max(predicted_positive + true_positive, 1)


def miou_scores(pairs: Pairs, ignore: int = 255) -> Scores:
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


def drive_view(work: Path) -> list[str]:
    """DRIVE laid out as `prepare folder --split-dirs` reads it; its raw arguments. Links
    images/{train,val} and masks/{train,val} point at the 20 training and the 20 test images
    and their 1st_manual labels (the test images are DRIVE's evaluation set; nothing is
    copied)."""
    view = work / "raw" / "drive"
    for kind, folder in (("images", "images"), ("masks", "1st_manual")):
        for split, source in (("train", "training"), ("val", "test")):
            link = view / kind / split
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(DRIVE / source / folder, target_is_directory=True)
    return [str(view / "images"), "--masks", str(view / "masks")]


def drive_fov(stem: str) -> np.ndarray:
    """The field-of-view mask of a DRIVE test image: its scores count the pixels inside only,
    as the DRIVE papers do."""
    return np.asarray(Image.open(DRIVE / "test" / "mask" / f"{stem}_test_mask.gif")) > 0


@dataclass(frozen=True)
class Workload:
    name: str  # the prepared folder's name
    preparer: str  # `segcli prepare PREPARER`
    raw: Path | None  # None: the preparer generates its data
    options: tuple[str, ...]  # more `segcli prepare` options
    score: Callable[[Pairs], Scores]
    budget: str
    recipe: str | None = None  # the dataset's own recipe, if it has one
    baselines: tuple[tuple[str, str], ...] = ()
    # the raw folders as the preparer's arguments, laid out under the work folder
    raw_view: Callable[[Path], list[str]] | None = None
    region: Callable[[str], np.ndarray] | None = None  # the pixels an image is scored on
    scored_split: str = "val"  # the labelled split the scores are computed on

    def missing(self) -> str | None:
        """Why this workload cannot run here, or None."""
        from segcli.plugins import get_plugins

        if self.preparer not in get_plugins().datasets:
            return f"`segcli prepare {self.preparer}` does not exist (yet)"
        if self.raw is not None and not self.raw.is_dir():
            return f"no raw data at {self.raw}"
        return None


WORKLOADS = (
    Workload(
        "tgs-salt",
        "tgs-salt",
        DATA / "tgs-salt",
        ("--split-file", str(SPLITS / "tgs-salt.json")),
        tgs_scores,
        "8m",
        "tgs-unet",
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
        "isbi2012",
        DATA / "isbi2012" / "png",
        ("--split-file", str(SPLITS / "isbi2012.json")),
        isbi_scores,
        "8m",
        "isbi-unet",
        (
            (
                "ISBI tutorial U-Net (64..512, RMSprop 1e-5, batch 1), 8 min",
                "pixel accuracy 0.809, membrane Dice 0.661",
            ),
            ('predict "all cell"', "pixel accuracy 0.801, membrane Dice 0.000"),
        ),
    ),
    Workload("idd-lite", "idd-lite", DATA / "idd-lite", (), miou_scores, "10m", "idd-lite-erfnet"),
    Workload(
        "drive",
        "folder",
        DRIVE,
        ("--split-dirs", "--key", r"^\d+"),
        drive_scores,
        "10m",
        raw_view=drive_view,
        region=drive_fov,
    ),
    Workload(
        # the export's valid/ folder trains (a seeded fifth of it validates, choosing `best`);
        # its test/ folder, never seen in training, is scored
        "cardamage-coco",
        "coco",
        DATA / "cardamage-coco",
        ("--val-fraction", "0.2"),
        miou_scores,
        "10m",
        scored_split="test",
    ),
)

# --quick: the whole pipeline on a small synthetic dataset, in about a minute
QUICK = Workload(
    "shapes", "shapes", None, ("--train", "96", "--val", "24"), miou_scores, "20s", "shapes-unet"
)


def segcli(*args: str, cwd: Path, quiet: bool = False) -> float:
    """Run one segcli command to completion; its wall-clock seconds."""
    print("$ segcli " + shlex.join(args), flush=True)
    started = time.perf_counter()
    output = subprocess.PIPE if quiet else None
    done = subprocess.run(
        [sys.executable, "-m", "segcli", *args], cwd=cwd, stdout=output, stderr=output, text=True
    )
    if done.returncode != 0:
        shown = f"{done.stdout}{done.stderr}" if quiet else ""
        sys.exit(f"{shown}segcli {args[0]} failed with exit code {done.returncode}")
    return time.perf_counter() - started


def prepared(workload: Workload, work: Path, quiet: bool) -> Path:
    out = work / "data" / workload.name
    if not (out / "dataset.json").is_file():
        if workload.raw_view is not None:
            raw = workload.raw_view(work)
        else:
            raw = [str(workload.raw)] if workload.raw else []
        args = ["prepare", workload.preparer, *raw, *workload.options]
        segcli(*args, "--out", str(out), cwd=work, quiet=quiet)
    return out


def scored(dataset: Path, run_dir: Path, workload: Workload, work: Path, quiet: bool) -> Scores:
    report = work / "evaluations" / f"{run_dir.parent.name}.json"
    report.parent.mkdir(exist_ok=True)
    checkpoint = run_dir / "best.safetensors"
    segcli(
        "evaluate", str(dataset), "--split", workload.scored_split, "--checkpoint", str(checkpoint),
        "--out", str(report), "--save-predictions", "--force",
        cwd=work, quiet=quiet,
    )  # fmt: skip
    predictions = report.with_name(f"{report.stem}-predictions")
    pairs = []
    for mask_path in sorted((dataset / workload.scored_split / "masks").glob("*.png")):
        truth = np.asarray(Image.open(mask_path))
        predicted = np.asarray(Image.open(predictions / mask_path.name))
        if workload.region is not None:
            inside = workload.region(mask_path.stem)
            truth, predicted = truth[inside], predicted[inside]
        pairs.append((predicted, truth))
    return workload.score(pairs)


def variant_arguments(workload: Workload, variant: str) -> list[str] | None:
    """The `segcli train` arguments of a variant; None when the workload has no recipe."""
    if variant == "plan":
        return []
    if variant == "naive":
        return list(NAIVE)
    return None if workload.recipe is None else ["--plugin", workload.recipe]


def run(
    workload: Workload,
    variant: str,
    arguments: list[str],
    budget: str,
    work: Path,
    machine: dict[str, Any],
    quiet: bool,
) -> dict[str, Any]:
    dataset = prepared(workload, work, quiet)
    runs = work / "runs"
    runs_dir = runs / f"{workload.name}-{variant}-{len(list(runs.glob('*')))}"
    args = ["train", "--data", str(dataset), *arguments, "--time", budget]
    seconds = segcli(*args, "--runs-dir", str(runs_dir), cwd=work, quiet=quiet)
    [run_dir] = runs_dir.iterdir()  # a runs folder of its own
    summary = json.loads((run_dir / "summary.json").read_text())
    plan_file = run_dir / "plan.json"
    estimates = json.loads(plan_file.read_text()).get("estimates") if plan_file.is_file() else None
    shown = ["segcli", "train", "--data", f"data/{workload.name}", *arguments, "--time", budget]
    return {
        "dataset": workload.name,
        "variant": variant,
        "command": shlex.join(shown),
        "budget": budget,
        "wall_seconds": round(seconds, 1),
        "epochs": summary.get("epochs_run"),
        "seconds": summary.get("seconds"),
        "scores": scored(dataset, run_dir, workload, work, quiet),
        "plan_estimates": estimates,  # the planner's speeds (measured and table), if recorded
        "machine": machine,
    }


def machine_key(machine: dict[str, Any] | None) -> tuple[str, int, str] | None:
    """Figures compare on one CPU model, core count and native bf16 (a torch upgrade is named
    per row): two virtual machines both named "AMD EPYC", one with AVX512-BF16 and one
    without, train at twice each other's speed."""
    return (machine["cpu"], machine["cores"], machine["bf16"]) if machine else None


def _metrics(scores: Scores) -> str:
    return ", ".join(f"{k} **{v:.3f}**" for k, v in scores.items())


def _difference(result: dict[str, Any], naive: dict[str, Any] | None) -> str:
    if result["variant"] == "naive" or naive is None:
        return ""
    return ", ".join(f"{v - naive['scores'][k]:+.3f}" for k, v in result["scores"].items())


def machine_section(rows: list[dict[str, Any]], order: list[str]) -> list[str]:
    """One machine's tables: plan against naive per dataset, then every run."""
    by_dataset: dict[str, dict[str, dict[str, Any]]] = {}
    for result in rows:  # the latest run of each (dataset, variant, budget)
        by_dataset.setdefault(result["dataset"], {})[result["command"]] = result
    datasets = sorted(by_dataset, key=lambda name: (order + [name]).index(name))
    lines = [
        "| dataset | budget | metric | plan | naive | plan − naive |",
        "|---|---|---|---|---|---|",
    ]
    runs_table = [
        "| dataset | run | command | time used (train command, wall clock) | epochs | metrics "
        "| difference to naive |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in datasets:
        results = sorted(
            by_dataset[name].values(),
            key=lambda r: (r["budget"], VARIANTS.index(r.get("variant", "plan"))),
        )
        for result in results:
            naive = _naive_of(result, results)
            runs_table.append(
                f"| {name} | {result.get('variant', 'plan')} | `{result['command']}` | "
                f"{result['wall_seconds']:.0f} s of {result['budget']} | {result['epochs']} | "
                f"{_metrics(result['scores'])} | {_difference(result, naive)} |"
            )
            if result.get("variant") == "plan" and naive is not None:
                lines += [
                    f"| {name} | {result['budget']} | {metric} | {value:.3f} | "
                    f"{naive['scores'][metric]:.3f} | **{value - naive['scores'][metric]:+.3f}** |"
                    for metric, value in result["scores"].items()
                ]
    if len(lines) == 2:
        lines = ["No plan and naive runs of the same budget here yet: nothing to compare."]
    return [*lines, "", *runs_table]


def _naive_of(result: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next(
        (r for r in results if r.get("variant") == "naive" and r["budget"] == result["budget"]),
        None,
    )


def markdown(results: list[dict[str, Any]], machine: dict[str, Any], quick: bool) -> str:
    order = [w.name for w in (*WORKLOADS, QUICK)]
    lines = [
        "# Results",
        "",
        "Written by `python benchmarks/results.py` (do not edit by hand; docs/benchmarks.md",
        "says how to run it): each row is one training under the wall-clock budget its command",
        "gives (`--time`), then `segcli evaluate`. The metrics are computed from the predicted",
        "masks at the images' own size on the fixed validation splits of `../shared/splits/`",
        "(TGS: 600 images at 101x101; ISBI 2012: slices 25-29 at 512x512), IDD-Lite's official",
        "validation images (204 at 320x227), DRIVE's 20 test images (565x584, scored inside",
        "the field of view) and the car-damage COCO export's test folder (490 at 640x640,",
        "trained on its valid folder). Each configuration ran once, alone on the machine.",
        "",
        "**plan** is `segcli train --data DIR --time B`; **naive** is the README's older",
        "own-data path in the same budget, `segcli train --plugin shapes-unet --data DIR --time B",
        "--set train.epochs=10000` (a small U-Net at 64 px, as many epochs as fit); **recipe** is",
        "the dataset's own recipe where it has one. The plan must beat the naive path on every",
        "row.",
    ]
    if quick:
        lines += ["", "**`--quick` run: synthetic data, 20 s budgets; these are not figures.**"]
    groups: dict[tuple[str, int, str] | None, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(machine_key(result.get("machine")), []).append(result)
    here = machine_key(machine)
    for key in sorted(groups, key=lambda k: k != here):
        heading = "This machine" if key == here else "Another machine"
        line = machine_line(groups[key][-1].get("machine"))
        lines += ["", f"## {heading}: {line}", "", *machine_section(groups[key], order)]
    baselines = [(w.name, b) for w in WORKLOADS for b in w.baselines]
    lines += [
        "",
        "## Baselines",
        "",
        "Measured by the dataset maintainers on the same splits and machine type, without",
        "segcli (copied from `../shared/splits/README.md`):",
        "",
        "| dataset | baseline | metrics |",
        "|---|---|---|",
        *(f"| {name} | {what} | {figures} |" for name, (what, figures) in baselines),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = ",".join(w.name for w in WORKLOADS)
    parser.add_argument("--only", default=names, help=f"workloads, comma-separated ({names})")
    parser.add_argument("--runs", default="plan,naive", help="plan, naive, recipe, comma-separated")
    parser.add_argument("--budget", help="one budget for every workload (default: 8m or 10m)")
    parser.add_argument("--work", type=Path, help="prepared data and runs (/tmp/segcli-results)")
    parser.add_argument("--out", type=Path, help="the Markdown page (docs/results.md)")
    parser.add_argument("--store", type=Path, help="every machine's rows (benchmarks/results.json)")
    parser.add_argument("--quick", action="store_true", help="synthetic data, 20 s: a smoke test")
    args = parser.parse_args()
    variants = args.runs.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--runs: unknown {', '.join(unknown)} (choose from {', '.join(VARIANTS)})")
    if args.quick:
        work = args.work or Path(tempfile.mkdtemp(prefix="segcli-results-quick-"))
        chosen, variants = [QUICK], ["plan", "naive"]
    else:
        work = args.work or Path("/tmp/segcli-results")
        chosen = [w for w in WORKLOADS if w.name in args.only.split(",")]
        strangers = set(args.only.split(",")) - {w.name for w in WORKLOADS}
        if strangers:
            parser.error(f"--only: unknown {', '.join(sorted(strangers))} (choose from {names})")
    out = args.out or (work / "results.md" if args.quick else REPO / "docs" / "results.md")
    store = args.store or (work / "results.json" if args.quick else STORE)
    (work / "runs").mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    print(f"machine: {machine_line(machine)}", flush=True)
    # results accumulate across invocations and machines (one workload at a time fits a
    # session better); a configuration run again on the same machine replaces its earlier row
    results = json.loads(store.read_text()) if store.is_file() else []
    for workload in chosen:
        reason = workload.missing()
        if reason is not None:
            print(f"skipped {workload.name}: {reason}", flush=True)
            continue
        for variant in variants:
            arguments = variant_arguments(workload, variant)
            if arguments is None:
                print(f"skipped {workload.name} {variant}: the dataset has no recipe", flush=True)
                continue
            budget = args.budget or workload.budget
            result = run(workload, variant, arguments, budget, work, machine, args.quick)
            results = [
                r
                for r in results
                if (r["command"], machine_key(r.get("machine")))
                != (result["command"], machine_key(machine))
            ] + [result]
            store.write_text(json.dumps(results, indent=2))
            print(json.dumps({k: result[k] for k in ("command", "scores")}), flush=True)
    out.write_text(markdown(results, machine, args.quick))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
