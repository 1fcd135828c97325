"""The run report: one self-contained HTML page per run, or several runs side by side.

Everything the page shows is inside the file (pictures as base64 PNG, styles inline), so it
opens offline, can be mailed or archived, and loads nothing from the network. Numbers come
from what the run recorded (metrics.jsonl, summary.json, config.toml, environment.json and
the plan); only the worst validation predictions (and, when the metrics did not record one,
the confusion matrix) need the best checkpoint to be evaluated again, which
`segcli.evaluation.best_checkpoint` does; this module only renders.
"""

from __future__ import annotations

import base64
import html
import io
import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from segcli.data.format import ClassInfo
from segcli.errors import DataError
from segcli.evaluation.best_checkpoint import (
    DEFAULT_MAX_IMAGES,
    DEFAULT_WORST,
    CheckpointEvaluation,
    evaluate_best,
)
from segcli.files import atomic_write
from segcli.json_files import read_json
from segcli.ledger import claim_outputs, dataset_files, run_records
from segcli.palette import colorize
from segcli.runs.cross_validation import is_cross_validation, with_folds
from segcli.runs.metrics import best_record, read_metrics
from segcli.visualize import RUN_COLORS, confusion_picture, curves, error_map

REPORT_NAME = "report.html"
COMPARISON_NAME = "report-compare.html"
_CELL = 192  # longest side, in pixels, of each picture of a prediction row


@dataclass
class RunRecord:
    """What one run folder recorded, read once."""

    path: Path
    config: dict[str, Any]
    config_text: str
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    environment: dict[str, Any]
    plan: Any
    checkpoint: Path | None
    classes: list[ClassInfo]
    dataset: Path | None  # the dataset folder the checkpoint was trained on, as it recorded

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def best_record(self) -> dict[str, Any] | None:
        return best_record(self.history, self.summary.get("best_epoch"))


def read_run(run_dir: Path) -> RunRecord:
    """A run folder's records; a DataError when the folder is not a segcli run."""
    from segcli.runs.checkpoint_file import SUFFIX, read_checkpoint_meta

    run_dir = Path(run_dir)
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        where = "does not exist" if not run_dir.exists() else "has no config.toml"
        raise DataError(
            f"{run_dir} is not a segcli run folder: it {where}",
            hint="pass a folder written by `segcli train`, e.g. runs/<run>",
        )
    config_text = config_path.read_text()
    try:
        config = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{config_path} is not valid TOML: {exc}") from None
    history = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    checkpoint = next(
        (
            run_dir / f"{name}{SUFFIX}"
            for name in ("best", "last")
            if (run_dir / f"{name}{SUFFIX}").is_file()
        ),
        None,
    )
    meta = read_checkpoint_meta(checkpoint) if checkpoint else {}
    classes = [ClassInfo(c["id"], c["name"], tuple(c["color"])) for c in meta.get("classes", [])]
    plan = _json_file(run_dir / "plan.json")
    return RunRecord(
        path=run_dir,
        config=config,
        config_text=config_text,
        history=history,
        summary=_json_file(run_dir / "summary.json") or {},
        environment=_json_file(run_dir / "environment.json") or meta.get("environment", {}),
        plan=plan,
        checkpoint=checkpoint,
        classes=classes,
        dataset=Path(meta["dataset_path"]) if "dataset_path" in meta else None,
    )


def _json_file(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _png(picture: Image.Image | np.ndarray, longest: int | None = None) -> str:
    """An <img> whose picture is inside the page (a data URI), scaled down to `longest`."""
    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    if longest and max(picture.size) > longest:
        picture = ImageOps.contain(picture, (longest, longest), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="" src="data:image/png;base64,{data}">'


def _e(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "–" if value != value else f"{value:.4f}"
    return _e(value)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys; lists of tables keep their positions."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat or ({prefix[:-1]: "{}"} if prefix else {})
    return {prefix[:-1]: data}


def _value(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = list(dict.fromkeys(k for item in value for k in item))
        head = "".join(f"<th>{_e(c)}</th>" for c in columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_value(item.get(c, ''))}</td>" for c in columns) + "</tr>"
            for item in value
        )
        return f"<table><tr>{head}</tr>{rows}</table>"
    if isinstance(value, (list, tuple)):
        return _e(", ".join(_number(v) if isinstance(v, float) else str(v) for v in value))
    return _number(value)


def _key_table(data: dict[str, Any], css: str = "keys") -> str:
    rows = "".join(
        f"<tr><th>{_e(key)}</th><td>{_value(value)}</td></tr>"
        for key, value in _flatten(data).items()
    )
    return f'<table class="{css}">{rows}</table>'


def _swatch(color: tuple[int, int, int] | list[int]) -> str:
    r, g, b = color
    return f'<span class="swatch" style="background:rgb({r},{g},{b})"></span>'


def per_class_table(run: RunRecord) -> str:
    """Every per-class metric of the best epoch, one row per class."""
    record = run.best_record or {}
    width = len(run.classes) or max(
        (len(v) for v in record.values() if isinstance(v, list)), default=0
    )
    columns = {
        key: value
        for key, value in record.items()
        if isinstance(value, list)
        and len(value) == width
        and width
        and not isinstance(value[0], list)
    }
    if not columns:
        return '<p class="note">No per-class metrics were recorded for this run.</p>'
    classes = run.classes or [ClassInfo(i, str(i), (128, 128, 128)) for i in range(width)]
    head = "".join(f"<th>{_e(key)}</th>" for key in columns)
    rows = "".join(
        f"<tr><td>{_swatch(c.color)}{_e(c.name)}</td>"
        + "".join(f"<td>{_number(values[i])}</td>" for values in columns.values())
        + "</tr>"
        for i, c in enumerate(classes)
    )
    return f'<table class="per-class"><tr><th>class</th>{head}</tr>{rows}</table>'


def _confusion_section(run: RunRecord, evaluation: CheckpointEvaluation | None) -> str:
    record = run.best_record or {}
    names = [c.name for c in run.classes]
    if "confusion/matrix" in record:
        matrix = record["confusion/matrix"]
        names = names or [str(i) for i in range(len(matrix))]
        source = f"validation of epoch {record['epoch']} (recorded in metrics.jsonl)"
    elif evaluation is not None:
        matrix = evaluation.confusion.tolist()
        source = f"best checkpoint on {evaluation.evaluated} {evaluation.split} image(s)"
    else:
        return (
            '<p class="note">No confusion matrix: the metrics did not record one '
            "(train with the confusion metric) and the checkpoint was not evaluated.</p>"
        )
    picture = confusion_picture(matrix, names, source)
    return f'<p>From the {_e(source)}.</p><div class="confusion">{_png(picture)}</div>'


def _predictions_section(
    run: RunRecord, evaluation: CheckpointEvaluation | None, problem: str
) -> str:
    if evaluation is None:
        return f'<p class="note">No predictions shown: {_e(problem)}.</p>'
    palette = [c.color for c in run.classes]
    scope = (
        f"all {evaluation.total} images"
        if evaluation.evaluated == evaluation.total
        else f"{evaluation.evaluated} evenly spaced images of {evaluation.total} (capped; "
        "`segcli report --max-images 0` evaluates them all)"
    )
    rows = []
    for item in evaluation.worst:
        shown = item.image if item.image.shape[2] == 3 else np.repeat(item.image, 3, 2)
        cells = [
            shown,
            colorize(item.truth, palette),
            colorize(item.prediction, palette),
            error_map(shown, item.truth, item.prediction),
        ]
        rows.append(
            f"<tr><td>{_e(item.name)}<br>IoU {item.iou:.3f}</td>"
            + "".join(f"<td>{_png(cell, _CELL)}</td>" for cell in cells)
            + "</tr>"
        )
    legend = " ".join(f"{_swatch(c.color)}{_e(c.name)}" for c in run.classes)
    return (
        f"<p>The {len(evaluation.worst)} {evaluation.split} images with the lowest mean IoU "
        f"for the best checkpoint, among {scope}. Errors: wrong pixels magenta, ignored "
        f'pixels white.</p><p class="legend">{legend}</p>'
        '<table class="worst"><tr><th>file, mean IoU</th><th>image</th><th>truth</th>'
        f"<th>prediction</th><th>errors</th></tr>{''.join(rows)}</table>"
    )


def plan_section(plan: Any) -> str:
    """Each planned key with its value, the reason for it and what overrode it; then what
    the plan was made from (the dataset, the hardware, the estimates)."""
    if not isinstance(plan, dict) or not isinstance(plan.get("reasons"), dict):
        return _key_table(plan if isinstance(plan, dict) else {"plan": plan})
    planned = _flatten(plan.get("layer", {}))
    overridden = plan.get("overridden") or {}
    rows = "".join(
        f"<tr><th>{_e(key)}</th><td>{_value(planned.get(key, ''))}</td><td>{_e(reason)}</td>"
        f"<td>{_e(overridden.get(key, ''))}</td></tr>"
        for key, reason in plan["reasons"].items()
    )
    rest = {k: v for k, v in plan.items() if k not in ("layer", "reasons", "overridden")}
    return (
        "<table><tr><th>key</th><th>planned</th><th>why</th><th>overridden by</th></tr>"
        f"{rows}</table>" + (_key_table(rest) if rest else "")
    )


def profile_section(run: RunRecord) -> str:
    """RUN/profile.json (`segcli profile RUN`) as a table; without one, the command."""
    from segcli.inference.profile import PROFILE_FILE

    command = f"<code>segcli profile {_e(run.path)}</code>"
    try:
        profile = _json_file(run.path / PROFILE_FILE)
        if profile is None:
            return f'<p class="note">Not profiled yet: run {command} to add it here.</p>'
        height, width = profile["input_size"]
        rows = "".join(
            f"<tr><th>{_e(speed['runtime'])}</th><td colspan=2>skipped: {_e(speed['skipped'])}"
            "</td></tr>"
            if speed["skipped"]
            else f"<tr><th>{_e(speed['runtime'])}</th>"
            f"<td>{speed['latency_ms']:.2f} ± {speed['latency_iqr_ms']:.2f}</td>"
            f"<td>{speed['throughput_img_s']:.1f} ± {speed['throughput_iqr_img_s']:.1f}</td></tr>"
            for speed in profile["speeds"]
        )
        return (
            f"<p>{_e(profile['model'])} at {height}x{width}: {profile['parameters']:,} "
            f"parameters, {profile['flops'] / 1e9:.3f} GFLOPs and "
            f"{profile['peak_activation_bytes'] / 2**20:.1f} MiB of peak activations per "
            f"image. Speed on {_e(profile['device'])}, median ± IQR of {profile['runs']} runs "
            f"({command} measures it again):</p><table><tr><th>runtime</th>"
            f"<th>latency, batch 1 (ms)</th><th>throughput, batch {profile['batch']} (img/s)"
            f"</th></tr>{rows}</table>"
        )
    except (DataError, KeyError, TypeError, ValueError) as exc:
        return f'<p class="note">{PROFILE_FILE} cannot be read ({_e(exc)}): run {command}.</p>'


def _headline(run: RunRecord) -> str:
    summary = run.summary
    model = run.config.get("model", {}).get("name", "?")
    dataset = run.config.get("dataset", {}).get("name", "?")
    best = summary.get("best")
    best_text = (
        f"best {_e(summary.get('monitor'))} {_number(best)} at epoch {_e(summary['best_epoch'])}"
        if best is not None
        else "no best epoch recorded"
    )
    return (
        f"<p>{_e(model)} on {_e(dataset)}; {_e(summary.get('epochs_run', len(run.history)))} "
        f"epoch(s); {best_text}. Folder: <code>{_e(run.path.resolve())}</code></p>"
    )


def run_section(
    run: RunRecord, index: int, evaluation: CheckpointEvaluation | None, problem: str
) -> str:
    """Everything about one run, as an HTML <section>."""
    parts = [
        f'<section id="run-{index}"><h2>{_swatch(RUN_COLORS[index % len(RUN_COLORS)])}'
        f"{_e(run.name)}</h2>",
        _headline(run),
        "<h3>Curves</h3>",
        f'<div class="curves">{_png(curves([run.path]))}</div>'
        if run.history
        else '<p class="note">No epoch has been recorded yet (metrics.jsonl is empty).</p>',
        "<h3>Per-class metrics of the best checkpoint</h3>",
        per_class_table(run),
        "<h3>Confusion matrix</h3>",
        _confusion_section(run, evaluation),
        "<h3>Worst validation predictions</h3>",
        _predictions_section(run, evaluation, problem),
    ]
    if run.plan is not None:
        parts += ["<h3>Plan and its reasons</h3>", plan_section(run.plan)]
    parts += [
        "<h3>Cost to run (segcli profile)</h3>",
        profile_section(run),
        "<h3>Summary and timings</h3>",
        _key_table(run.summary) if run.summary else '<p class="note">No summary.json.</p>',
        "<h3>Configuration</h3>",
        f"<pre>{_e(run.config_text)}</pre>",
        "<h3>Environment</h3>",
        _key_table(run.environment),
        "</section>",
    ]
    return "\n".join(parts)


def comparison_section(runs: list[RunRecord]) -> str:
    """Overlaid curves, the best scores side by side, and the settings that differ."""
    with_history = [run.path for run in runs if run.history]
    parts = ['<section id="comparison"><h2>Comparison</h2>']
    if with_history:
        parts.append(f'<div class="curves">{_png(curves(with_history))}</div>')
    bests = [run.best_record or {} for run in runs]
    keys = list(
        dict.fromkeys(
            key
            for record in bests
            for key, value in record.items()
            if isinstance(value, (int, float)) and key not in ("epoch", "step", "seconds", "lr")
        )
    )
    head = "".join(f"<th>{_e(k)}</th>" for k in ["run", "best epoch", *keys])
    rows = "".join(
        f"<tr><td>{_swatch(RUN_COLORS[i % len(RUN_COLORS)])}"
        f'<a href="#run-{i}">{_e(run.name)}</a></td><td>{_e(record.get("epoch", "–"))}</td>'
        + "".join(f"<td>{_number(record.get(k, '–'))}</td>" for k in keys)
        + "</tr>"
        for i, (run, record) in enumerate(zip(runs, bests, strict=True))
    )
    parts += ["<h3>Best epoch of each run</h3>", f"<table>{'<tr>' + head + '</tr>'}{rows}</table>"]
    flat = [_flatten(run.config) for run in runs]
    differing = [
        key
        for key in dict.fromkeys(k for config in flat for k in config)
        if len({json.dumps(config.get(key), sort_keys=True) for config in flat}) > 1
    ]
    parts.append("<h3>Configuration differences</h3>")
    if differing:
        names = "".join(f"<th>{_e(run.name)}</th>" for run in runs)
        rows = "".join(
            f"<tr><th>{_e(key)}</th>"
            + "".join(f"<td>{_value(config.get(key, '–'))}</td>" for config in flat)
            + "</tr>"
            for key in differing
        )
        parts.append(f"<table><tr><th>key</th>{names}</tr>{rows}</table>")
    else:
        parts.append('<p class="note">The runs have the same configuration.</p>')
    parts.append("</section>")
    return "\n".join(parts)


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px;
       padding: 0 16px; color: #222; }
h1 { font-size: 22px; } h2 { border-bottom: 2px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td { font-variant-numeric: tabular-nums; }
table.keys th { font-weight: normal; color: #555; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }
.note { color: #666; font-style: italic; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px;
          border: 1px solid #888; vertical-align: -1px; }
img { max-width: 100%; }
table.worst img { width: 192px; image-rendering: pixelated; }
"""


def render_report(
    runs: list[RunRecord], evaluations: list[tuple[CheckpointEvaluation | None, str]]
) -> str:
    """The whole page: a comparison first when there are several runs, then each run."""
    title = "segcli report: " + ", ".join(run.name for run in runs)
    sections = [comparison_section(runs)] if len(runs) > 1 else []
    sections += [
        run_section(run, index, evaluation, problem)
        for index, (run, (evaluation, problem)) in enumerate(zip(runs, evaluations, strict=True))
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def default_output(run_dirs: list[Path]) -> Path:
    """`RUN/report.html` for one run; a comparison goes into the first run's folder, as
    `segcli visualize curves` does with several runs."""
    return Path(run_dirs[0]) / (REPORT_NAME if len(run_dirs) == 1 else COMPARISON_NAME)


def _inputs(runs: list[RunRecord]) -> Iterator[Path]:
    """What the page is made from, never replaced by it: each run's records and the
    dataset its checkpoint is evaluated on."""
    for run in runs:
        yield from run_records(run.path)
        if run.dataset is not None:
            yield from dataset_files(run.dataset)


def write_report(
    run_dirs: list[Path],
    out: Path | None = None,
    *,
    force: bool = False,
    worst: int = DEFAULT_WORST,
    max_images: int = DEFAULT_MAX_IMAGES,
    device: str | None = "cpu",
) -> Path:
    """Read the runs, evaluate their best checkpoints and write the page atomically.

    `device` None evaluates each run on the device it trained on (`train.device`).
    A file at `out` that segcli did not write is kept unless `force`; one the page is made
    from (a run's records, its dataset) is never replaced. A run without a checkpoint gets
    its page without predictions; a checkpoint that cannot be evaluated (its dataset moved,
    ...) is an error: a page that silently lacks them would look complete."""
    # a cross-validation is shown with its folds side by side
    unique = list(dict.fromkeys(p.resolve() for run in run_dirs for p in with_folds(run)))
    runs = [read_run(path) for path in unique]
    given = list(dict.fromkeys(Path(p).resolve() for p in run_dirs))
    out = Path(out) if out is not None else default_output(given)
    ledger = claim_outputs([out], inputs=_inputs(runs), force=force)
    evaluations: list[tuple[CheckpointEvaluation | None, str]] = []
    for run in runs:
        if run.checkpoint is None:
            why = "its folds follow" if is_cross_validation(run.path) else "it stopped before one"
            evaluations.append((None, f"the run has no checkpoint ({why})"))
            continue
        run_device = device or run.config.get("train", {}).get("device", "auto")
        evaluation = evaluate_best(
            run.path,
            run.checkpoint,
            run.dataset,
            worst=worst,
            max_images=max_images,
            device=run_device,
        )
        evaluations.append((evaluation, ""))
    page = render_report(runs, evaluations)
    ledger.open_folder()
    with atomic_write(out, ledger=ledger) as stream:
        stream.write(page.encode())
    return out
