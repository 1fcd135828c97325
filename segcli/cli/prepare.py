"""`segcli prepare DATASET [RAW] [options]`: one sub-command per registered dataset preparer.

The sub-commands are built on demand from each preparer's signature, so a plugin's
keyword-only parameters become real, documented options (`--val-fraction 0.15`), and
`segcli --help` never loads a preparer.
"""

from __future__ import annotations

import inspect
import os
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from segcli.cli import help_format
from segcli.cli.output import console, error_console

_COMMON_OPTIONS = ("out", "force", "workers", "skip_unpaired", "split_file")


class _DatasetCommands(help_format.Group):
    """Lists registered datasets as sub-commands and builds each one when it is asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        from segcli.plugins import get_plugins

        return get_plugins().datasets.names()

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        from segcli.plugins import get_plugins

        entry = get_plugins().datasets.entry(cmd_name)
        sub_app = help_format.Typer(
            add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None
        )
        sub_app.command(cmd_name, help=entry.description)(_command_for(cmd_name, entry.load()))
        return typer.main.get_command(sub_app)


def _command_for(name: str, preparer: Any) -> Any:
    """A function whose signature Typer turns into the sub-command's arguments and options."""
    needs_raw = getattr(preparer, "needs_raw", True)
    hints = typing.get_type_hints(preparer, include_extras=True)
    options = [
        p for p in inspect.signature(preparer).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    raw_help = "Folder with the raw dataset in its original layout."
    parameters = []
    if needs_raw:
        parameters.append(
            inspect.Parameter(
                "raw",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=Annotated[
                    Path | None, typer.Argument(help=raw_help, show_default=False)
                ],
                default=None,
            )
        )
    for option in options:
        annotation, help_text = _split_help(hints.get(option.name, str))
        parameters.append(
            inspect.Parameter(
                option.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[annotation, typer.Option(help=help_text)],
                default=option.default,
            )
        )
    parameters += [
        inspect.Parameter(
            "out",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None, typer.Option(help=f"Output folder [default: data/{name}]")
            ],
        ),
        inspect.Parameter(
            "force",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool, typer.Option(help="Replace an existing dataset that segcli prepared.")
            ],
        ),
        inspect.Parameter(
            "workers",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                int | None, typer.Option(help="Worker processes [default: cores].")
            ],
        ),
        inspect.Parameter(
            "skip_unpaired",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool, typer.Option(help="Leave out images without masks and masks without images.")
            ],
        ),
        inspect.Parameter(
            "split_file",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(
                    help='Your own split, kept exactly: JSON {"train": [stems], "val": [stems]}; '
                    "every labelled sample must be listed once (images without masks keep "
                    "their split)."
                ),
            ],
        ),
    ]

    def command(**values: Any) -> None:
        common = {key: values.pop(key) for key in _COMMON_OPTIONS}
        run_prepare(name, preparer, values.pop("raw", None), values, **common)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = inspect.getdoc(preparer)
    return command


def _split_help(annotation: Any) -> tuple[Any, str | None]:
    if typing.get_origin(annotation) is Annotated:
        base, *extras = typing.get_args(annotation)
        return base, next((e for e in extras if isinstance(e, str)), None)
    return annotation, None


def run_prepare(
    name: str,
    preparer: Any,
    raw: Path | None,
    options: dict[str, Any],
    *,
    out: Path | None = None,
    force: bool = False,
    workers: int | None = None,
    skip_unpaired: bool = False,
    split_file: Path | None = None,
) -> None:
    """Plan, build and report one dataset (what every `segcli prepare X` runs)."""
    from rich.progress import Progress

    from segcli.data.prepare import build_dataset, provenance, require_raw_dir
    from segcli.data.prepare_output import check_output
    from segcli.data.split_file import read_split_file
    from segcli.errors import Interrupted

    if getattr(preparer, "needs_raw", True):
        raw = require_raw_dir(raw, name)
    out = Path(out or Path("data") / name)
    given = [
        v for value in options.values() for v in (value if isinstance(value, list) else [value])
    ]
    inputs = [raw, *(value for value in given if isinstance(value, Path))]
    inputs = [path for path in (*inputs, split_file) if path is not None]
    # Before the preparer reads anything: a refused --out or a malformed split file should not
    # cost a survey of the data.
    check_output(out, force, inputs)
    split = read_split_file(split_file) if split_file is not None else None
    from segcli.plugins import get_plugins

    try:
        # options were checked by the command's signature: a crash is the preparer's bug
        with get_plugins().datasets.plugin_errors(name):
            plan = preparer(raw, **options)
    except KeyboardInterrupt:
        raise Interrupted("interrupted while reading the raw data; nothing was written") from None
    recorded = provenance(name, raw, options)
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task(f"preparing {name}", total=len(plan.samples))
        try:
            report = build_dataset(
                plan,
                out,
                force=force,
                workers=workers or os.cpu_count(),
                skip_unpaired=skip_unpaired,
                preparer=recorded,
                progress=lambda done, total: progress.update(task, completed=done),
                inputs=inputs,
                split_file=split,
            )
        except Exception as error:
            progress.stop()
            for problem in getattr(error, "problems", [])[:20]:
                error_console.print(f"  [red]•[/] {problem}", markup=True, highlight=False)
            raise
    print_report(report)
    console.print(fingerprint_line(out), highlight=False, soft_wrap=True)


def print_report(report: Any) -> None:
    from rich.table import Table

    table = Table(title=f"prepared {report.name} -> {report.out} in {report.seconds:.1f} s")
    splits = sorted(set(report.pairs) | set(report.unlabelled))
    table.add_column("")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_row("pairs", *[str(report.pairs.get(s, 0)) for s in splits])
    table.add_row("images without labels", *[str(report.unlabelled.get(s, 0)) for s in splits])
    table.add_row("masks with only class 0", *[str(report.empty_masks.get(s, 0)) for s in splits])
    table.add_row("raw mask values", *[_values(report.raw_values.get(s)) for s in splits])
    table.add_row("class ids written", *[_values(report.mapped_values.get(s)) for s in splits])
    class_names = next(iter(report.class_share.values()), {})
    for class_name in class_names:
        table.add_row(
            f"  {class_name}",
            *[_share(report.class_share.get(s, {}).get(class_name)) for s in splits],
        )
    console.print(table)
    if report.contested:
        overlaps = Table(title="contested pixels: covered by two classes, showing the one on top")
        overlaps.add_column("drawn under")
        overlaps.add_column("on top")
        overlaps.add_column("pixels", justify="right")
        overlaps.add_column("images", justify="right")
        for row in report.contested:
            overlaps.add_row(row["under"], row["on_top"], str(row["pixels"]), str(row["images"]))
        console.print(overlaps)
    for note in report.notes:
        console.print(f"[cyan]note:[/] {note}", highlight=False)
    skipped = report.unpaired_images + report.unpaired_masks
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} unpaired file(s)[/] (listed in report.json)")


def fingerprint_line(root: Path) -> str:
    """One line of what `fingerprint.json` says (docs/dataset-format.md)."""
    from segcli.data.fingerprint import load_fingerprint

    found = load_fingerprint(root)
    measured = found.images_measured
    size = f"{found.height.median:g}x{found.width.median:g}"
    if (found.height.min, found.width.min) != (found.height.max, found.width.max):
        size = f"median {size} ({found.height.min}-{found.height.max} high, "
        size += f"{found.width.min}-{found.width.max} wide)"
    mean = "/".join(f"{v:.2f}" for v in found.mean)
    std = "/".join(f"{v:.2f}" for v in found.std)
    line = (
        f"fingerprint: {size} x{found.channels}, mean {mean}, std {std}"
        f" ({measured} training image{'s' * (measured != 1)} measured)"
    )
    present = [c for c in found.classes if c.pixel_share > 0]
    rarest = min(present, key=lambda c: c.pixel_share, default=None)
    if rarest is not None:
        line += f"; rarest class {rarest.name}: {100 * rarest.pixel_share:.2f} % of pixels"
    return line


def _values(values: list[int] | None) -> str:
    if not values:
        return "-"
    text = ", ".join(str(v) for v in values[:12])
    return text + (", ..." if len(values) > 12 else "")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


prepare_app = typer.Typer(
    cls=_DatasetCommands,
    help="Turn a raw dataset folder into segcli's canonical prepared dataset.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def add_to(app: typer.Typer) -> None:
    app.add_typer(prepare_app, name="prepare")
