"""Pictures for people: sample grids with class legends (Pillow only, no display needed)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from segcli.data.format import ClassInfo, read_dataset_info, split_files
from segcli.data.images import read_image, read_mask
from segcli.errors import DataError
from segcli.files import atomic_write
from segcli.ledger import OutputLedger
from segcli.palette import colorize
from segcli.runs.metrics import best_record, read_metrics, read_summary

_MARGIN = 8


def _font(size: int = 14) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def legend(classes: Sequence[ClassInfo], width: int, numbered: bool = True) -> Image.Image:
    """Colour swatches with class names (numbered with their ids), wrapped to `width`."""
    font = _font()
    box, gap = 14, 12
    entries = [(c.color, f"{c.id} {c.name}" if numbered else c.name) for c in classes]
    lines, line, used = [], [], 0
    for color, text in entries:
        item_width = box + 4 + int(font.getlength(text)) + gap
        if line and used + item_width > width - 2 * _MARGIN:
            lines.append(line)
            line, used = [], 0
        line.append((color, text))
        used += item_width
    lines.append(line)
    picture = Image.new("RGB", (width, len(lines) * (box + 6) + _MARGIN), "white")
    draw = ImageDraw.Draw(picture)
    for row, items in enumerate(lines):
        x, y = _MARGIN, _MARGIN // 2 + row * (box + 6)
        for color, text in items:
            draw.rectangle([x, y, x + box, y + box], fill=tuple(color), outline=(90, 90, 90))
            draw.text((x + box + 4, y), text, fill="black", font=font)
            x += box + 4 + int(font.getlength(text)) + gap
    return picture


def grid(
    rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], cell: int = 192
) -> Image.Image:
    """Rows of equally sized cells (each picture scaled up or down to fit `cell`), with titles."""
    columns = len(titles)
    font = _font()
    header = 22
    picture = Image.new(
        "RGB",
        (columns * (cell + _MARGIN) + _MARGIN, header + len(rows) * (cell + _MARGIN)),
        "white",
    )
    draw = ImageDraw.Draw(picture)
    for column, title in enumerate(titles):
        draw.text((_MARGIN + column * (cell + _MARGIN), 4), title, fill="black", font=font)
    for row_index, row in enumerate(rows):
        for column, array in enumerate(row):
            image = Image.fromarray(
                array if array.ndim == 2 or array.shape[2] == 3 else array[:, :, 0]
            )
            image = ImageOps.contain(image, (cell, cell), Image.Resampling.NEAREST)
            x = _MARGIN + column * (cell + _MARGIN) + (cell - image.width) // 2
            y = header + row_index * (cell + _MARGIN) + (cell - image.height) // 2
            picture.paste(image.convert("RGB"), (x, y))
    return picture


def stack_vertically(*pictures: Image.Image) -> Image.Image:
    width = max(p.width for p in pictures)
    result = Image.new("RGB", (width, sum(p.height for p in pictures)), "white")
    y = 0
    for p in pictures:
        result.paste(p, (0, y))
        y += p.height
    return result


def save_picture(picture: Image.Image, path: Path, ledger: OutputLedger | None = None) -> Path:
    """Write a PNG atomically, recorded as segcli's in the ledger of its folder (so the next
    run may replace it); a command checks `path` with `claim_outputs` before drawing."""
    path = Path(path)
    ledger = ledger or OutputLedger(path.parent)
    ledger.open_folder()
    with atomic_write(path, ledger=ledger) as stream:
        picture.save(stream, format="PNG")
    return path


def sample_grid(
    dataset_dir: Path, split: str | None = None, count: int = 8, seed: int = 0
) -> Image.Image:
    """Random labelled samples of a prepared dataset: image | colour mask, and a legend."""
    info = read_dataset_info(dataset_dir)
    split = split or (info.labelled_splits[0] if info.labelled_splits else next(iter(info.splits)))
    pairs = [(i, m) for i, m in split_files(dataset_dir, split) if m is not None]
    if not pairs:
        raise DataError(f"split {split!r} of {dataset_dir} has no labelled samples")
    chosen = np.random.default_rng(seed).permutation(len(pairs))[:count]
    rows = []
    for index in sorted(chosen):
        image_path, mask_path = pairs[index]
        image = read_image(image_path, 3)
        rows.append([image, colorize(read_mask(mask_path), info.palette)])
    picture = grid(rows, ["image", "mask"])
    return stack_vertically(picture, legend(info.classes, picture.width))


def _label_rows(
    picture: Image.Image, labels: Sequence[str], cell: int, header: int = 22
) -> Image.Image:
    """The grid with a label (e.g. file name and score) to the left of each row."""
    font = _font()
    width = max(int(font.getlength(label)) for label in labels) + 2 * _MARGIN
    result = Image.new("RGB", (picture.width + width, picture.height), "white")
    result.paste(picture, (width, 0))
    draw = ImageDraw.Draw(result)
    for row, label in enumerate(labels):
        for line_index, line in enumerate(label.split("\n")):
            y = header + row * (cell + _MARGIN) + cell // 2 - 10 + line_index * 16
            draw.text((_MARGIN, y), line, fill="black", font=font)
    return result


ERROR_COLOR = (255, 0, 255)  # magenta: rare in class palettes


def error_map(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Wrong pixels red over a faded grey image; ignored pixels white."""
    grey = image.mean(2) if image.ndim == 3 else image.astype(np.float32)
    faded = np.repeat((155 + 0.35 * grey)[..., None], 3, 2).astype(np.uint8)
    faded[(prediction != truth) & (truth != 255)] = ERROR_COLOR
    faded[truth == 255] = 255
    return faded


def prediction_rows(
    dataset_dir: Path,
    predictor,
    split: str,
    count: int = 6,
    *,
    worst_first: bool = False,
    seed: int = 0,
    cell: int = 160,
) -> Image.Image:
    """Rows of image | truth | prediction | errors for `count` labelled samples of a split:
    random ones, or with `worst_first` the lowest mean IoU of all (each image predicted once)."""
    from segcli.evaluation import evaluate_split, labelled_pairs

    if worst_first:
        records = evaluate_split(predictor, dataset_dir, split, metrics={}, worst=count).worst
    else:
        pairs = labelled_pairs(dataset_dir, split)
        order = np.random.default_rng(seed).permutation(len(pairs))[:count]
        records = []
        evaluate_split(
            predictor,
            dataset_dir,
            split,
            pairs=[pairs[index] for index in sorted(order)],
            metrics={},
            on_image=records.append,
        )
    rows, labels = [], []
    palette = predictor.palette
    for record in records:
        image = record.image
        shown = image if image.shape[2] == 3 else np.repeat(image, 3, 2)
        rows.append(
            [
                shown,
                colorize(record.truth, palette),
                colorize(record.prediction, palette),
                error_map(shown, record.truth, record.prediction),
            ]
        )
        labels.append(f"{record.name}\nIoU {record.iou:.3f}")
    picture = _label_rows(
        grid(rows, ["image", "truth", "prediction", "errors"], cell), labels, cell
    )
    return stack_vertically(picture, legend(predictor.classes, picture.width))


# ------------------------------------------------------------------------------ line charts

RUN_COLORS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
_NOT_PLOTTED = {"epoch", "step", "seconds"}


def read_history(run_dir: Path) -> list[dict]:

    if not (Path(run_dir) / "metrics.jsonl").is_file():
        raise DataError(
            f"{run_dir} has no metrics.jsonl", hint="pass a run folder written by `segcli train`"
        )
    records = read_metrics(run_dir)
    if not records:
        raise DataError(f"{run_dir}/metrics.jsonl is empty: the run has not finished an epoch yet")
    return records


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten apart) covering low..high."""
    span = (high - low) or abs(high) or 1.0
    raw = span / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = [first + i * step for i in range(count + 2)]
    return [t for t in ticks if t <= high + step * 1e-9 or t == ticks[0]][: count + 2]


def line_chart(
    title: str,
    series: Sequence[tuple[tuple[int, int, int], list[tuple[float, float]]]],
    size: tuple[int, int] = (440, 280),
) -> Image.Image:
    """One panel: lines with dots, axes with round ticks, the title on top."""
    width, height = size
    left, right, top, bottom = 60, 14, 26, 40
    font = _font(12)
    picture = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(picture)
    draw.text((left, 6), title, fill="black", font=_font(14))
    points = [p for _, line in series for p in line if math.isfinite(p[1])]
    if not points:
        draw.text((left, height // 2), "no values", fill=(120, 120, 120), font=font)
        return picture
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_low, x_high = min(xs), max(max(xs), min(xs) + 1)
    y_ticks = nice_ticks(min(ys), max(ys))
    y_low, y_high = y_ticks[0], max(y_ticks[-1], max(ys))
    if y_high == y_low:
        y_high = y_low + 1

    def place(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x_low) / (x_high - x_low) * (width - left - right),
            height - bottom - (y - y_low) / (y_high - y_low) * (height - top - bottom),
        )

    draw.rectangle([left, top, width - right, height - bottom], outline=(60, 60, 60))
    for value in y_ticks:
        _, y = place(x_low, value)
        draw.line([left - 4, y, width - right, y], fill=(225, 225, 225))
        label = f"{value:.4g}"
        draw.text((left - 8 - font.getlength(label), y - 7), label, fill="black", font=font)
    x_step = max(1, math.ceil((x_high - x_low) / 10))
    for value in range(int(x_low), int(x_high) + 1, x_step):
        x, _ = place(value, y_low)
        draw.line([x, height - bottom, x, height - bottom + 4], fill=(60, 60, 60))
        draw.text(
            (x - font.getlength(str(value)) / 2, height - bottom + 6),
            str(value),
            fill="black",
            font=font,
        )
    draw.text(((left + width - right) / 2 - 16, height - 17), "epoch", fill=(90, 90, 90), font=font)
    for color, line in series:
        placed = [place(x, y) for x, y in line if math.isfinite(y)]
        if len(placed) > 1:
            draw.line(placed, fill=color, width=2)
        for x, y in placed:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=color)
    return picture


def curves(
    run_dirs: Sequence[Path], keys: Sequence[str] | None = None, columns: int = 2
) -> Image.Image:
    """Loss and metric curves per epoch, one panel per quantity, runs overlaid in colours."""
    histories = [read_history(run) for run in run_dirs]
    if keys is None:
        keys = []
        for history in histories:
            for record in history:
                keys += [
                    k
                    for k, v in record.items()
                    if k not in _NOT_PLOTTED
                    and k not in keys
                    and isinstance(v, (int, float))
                    and not isinstance(v, bool)
                ]
        keys.sort(key=lambda k: (not k.endswith("loss"), k))
    if not keys:
        raise DataError(f"{run_dirs[0]}/metrics.jsonl has no numeric values to plot")
    panels = []
    for key in keys:
        series = [
            (
                RUN_COLORS[i % len(RUN_COLORS)],
                [
                    (r["epoch"], float(r[key]))
                    for r in history
                    if isinstance(r.get(key), (int, float))
                ],
            )
            for i, history in enumerate(histories)
        ]
        panels.append(line_chart(key, series))
    rows = -(-len(panels) // columns)
    pw, ph = panels[0].size
    board = Image.new("RGB", (columns * pw, rows * ph), "white")
    for index, panel in enumerate(panels):
        board.paste(panel, ((index % columns) * pw, (index // columns) * ph))
    runs = [
        ClassInfo(i, Path(run).name, RUN_COLORS[i % len(RUN_COLORS)])
        for i, run in enumerate(run_dirs)
    ]
    return stack_vertically(board, legend(runs, board.width, numbered=False))


# --------------------------------------------------------------------------- confusion matrix


def confusion_source(path: Path) -> tuple[list[list[float]], list[str], str]:
    """(matrix, class names, description) from an evaluation JSON or a run folder."""
    path = Path(path)
    if path.is_file():
        try:
            report = json.loads(path.read_text())
            matrix = report["metrics"]["confusion/matrix"]
            names = [str(c["name"]) for c in report["classes"]]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise DataError(
                f"{path} is not a `segcli evaluate` report with a confusion matrix",
                hint="evaluate with the confusion metric, or pass a run folder",
            ) from None
        return (
            checked_matrix(matrix, len(names), path),
            names,
            f"{report.get('split', '?')} split of {Path(report.get('dataset', '?')).name}",
        )
    history = read_history(path)
    best_epoch = read_summary(path).get("best_epoch")
    with_matrix = [r for r in history if "confusion/matrix" in r]
    if not with_matrix:
        raise DataError(
            f"{path}/metrics.jsonl has no confusion/matrix", hint="train with the confusion metric"
        )
    record = best_record(with_matrix, best_epoch)
    matrix = record["confusion/matrix"]
    count = len(matrix) if isinstance(matrix, list) else 0
    return (
        checked_matrix(matrix, count, path / "metrics.jsonl"),
        _run_class_names(path, count),
        f"{path.name}, epoch {record['epoch']}",
    )


def checked_matrix(matrix: object, count: int, source: Path) -> list[list[float]]:
    """`matrix` if it is `count` rows of `count` numbers; else a DataError naming `source`."""
    rows = matrix if isinstance(matrix, list) else []
    if not (
        count > 0
        and len(rows) == count
        and all(isinstance(row, list) and len(row) == count for row in rows)
        and all(
            isinstance(value, (int, float)) and not isinstance(value, bool)
            for row in rows
            for value in row
        )
    ):
        raise DataError(
            f"{source}: its confusion matrix is not {count} rows of {count} numbers "
            "(one per class)",
            hint="the file is damaged or was edited; evaluate or train again",
        )
    return rows


def _run_class_names(run_dir: Path, count: int) -> list[str]:
    from segcli.runs.checkpoint_file import SUFFIX, read_checkpoint_meta

    for name in ("best", "last"):
        checkpoint = run_dir / f"{name}{SUFFIX}"
        if checkpoint.is_file():
            meta = read_checkpoint_meta(checkpoint)
            if "classes" in meta:
                return [c["name"] for c in meta["classes"]]
    return [str(i) for i in range(count)]


def _heat(value: float) -> tuple[int, int, int]:
    """White (0) to dark blue (1)."""
    value = min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
    return (int(255 - 247 * value), int(255 - 207 * value), int(255 - 148 * value))


def confusion_picture(
    matrix: Sequence[Sequence[float]], names: Sequence[str], title: str
) -> Image.Image:
    """Row-normalised confusion matrix (each truth row sums to 1) with class names and values."""
    counts = np.asarray(matrix, np.float64)
    totals = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = len(names)
    cell = max(24, min(64, 640 // max(size, 1)))
    font = _font(12)
    label_width = max(int(font.getlength(n)) for n in names) + 2 * _MARGIN
    top = label_width + 58
    lines = [f"confusion matrix: {title}", "rows: truth, columns: prediction; rows sum to 1"]
    title_width = max(int(_font(13).getlength(line)) for line in lines) + 2 * _MARGIN
    width = max(title_width, label_width + size * cell + 2 * _MARGIN)
    picture = Image.new("RGB", (width, top + size * cell + _MARGIN), "white")
    draw = ImageDraw.Draw(picture)
    for index, line in enumerate(lines):
        draw.text((_MARGIN, 6 + 18 * index), line, fill="black", font=_font(13))
    for index, name in enumerate(names):
        text = Image.new("RGB", (label_width, 16), "white")
        ImageDraw.Draw(text).text((2, 0), name, fill="black", font=font)
        picture.paste(
            text.rotate(90, expand=True), (label_width + index * cell + cell // 2 - 8, 52)
        )
        draw.text((_MARGIN, top + index * cell + cell // 2 - 7), name, fill="black", font=font)
    for row in range(size):
        for column in range(size):
            value = normalised[row, column]
            x, y = label_width + column * cell, top + row * cell
            draw.rectangle(
                [x, y, x + cell - 1, y + cell - 1], fill=_heat(value), outline=(200, 200, 200)
            )
            if cell >= 32:
                draw.text(
                    (x + 4, y + cell // 2 - 7),
                    f"{value:.2f}",
                    fill="white" if value > 0.55 else "black",
                    font=font,
                )
    return picture
