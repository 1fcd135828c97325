"""The output ledger: which files segcli wrote, so it replaces only those, never an input.

Every writing command claims its outputs (`claim_outputs`) before it writes: a file segcli
wrote there and nobody changed since may be replaced; a user's file only with --force; a
command's own input (`run_records`, `dataset_files`, any file it reads) never.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from segcli.errors import DataError, OutputError, UsageError
from segcli.files import atomic_write, check_writable_folder, remove_stale_temporaries, write_error
from segcli.json_files import parse_json


class OutputLedger:
    """The files segcli wrote below one folder, in its `.segcli-outputs.jsonl`.

    An existing file may be replaced without --force only if segcli wrote it there and it
    is unchanged since (same size and modification time), so a re-run into its own output
    folder works while a user's file, or a mask edited by hand, is never overwritten. A
    file is recorded just before it is renamed into place, and an old record is kept until
    the next run, so a crash between the two leaves both versions recognised.
    """

    NAME = ".segcli-outputs.jsonl"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.file = self.root / self.NAME
        self.records: dict[str, set[tuple[int, int]]] = {}
        try:
            lines = self.file.read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            lines = []
        except (OSError, UnicodeDecodeError) as exc:
            raise OutputError(f"cannot read {self.file}: {exc}") from None
        for line in lines:
            try:
                entry = parse_json(line, str(self.file))
                key, size, mtime = entry["path"], int(entry["size"]), int(entry["mtime_ns"])
            except (DataError, ValueError, KeyError, TypeError):
                continue  # a line torn by a crash mid-append
            self.records.setdefault(key, set()).add((size, mtime))

    def _key(self, path: Path) -> str:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root)).as_posix()

    def owns(self, path: Path) -> bool:
        try:
            stat = Path(path).stat()
        except OSError:
            return False
        return (stat.st_size, stat.st_mtime_ns) in self.records.get(self._key(path), ())

    def record(self, path: Path, stat: os.stat_result) -> None:
        line = json.dumps(
            {"path": self._key(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        )
        self.records.setdefault(self._key(path), set()).add((stat.st_size, stat.st_mtime_ns))
        with open(self.file, "a", encoding="utf-8") as stream:
            stream.write(line + "\n")

    def compact(self) -> None:
        """Keep only records of files that are still there unchanged (once per run)."""
        live = []
        for key, stats in sorted(self.records.items()):
            try:
                stat = (self.root / key).stat()
            except OSError:
                continue
            if (stat.st_size, stat.st_mtime_ns) in stats:
                live.append((key, stat.st_size, stat.st_mtime_ns))
        if sum(map(len, self.records.values())) == len(live):
            return
        lines = [
            json.dumps({"path": key, "size": size, "mtime_ns": mtime}) + "\n"
            for key, size, mtime in live
        ]
        with atomic_write(self.file) as stream:
            stream.write("".join(lines).encode())
        self.records = {key: {(size, mtime)} for key, size, mtime in live}

    def open_folder(self) -> None:
        """Create the folder, clear temporaries of killed runs, and tidy the ledger: once per
        run, after the checks and before the first write."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.root, exc) from None
        check_writable_folder(self.root)
        remove_stale_temporaries(self.root)
        self.compact()

    def check_replaceable(
        self, paths: Iterable[Path], force: bool, inputs: Iterable[Path] = ()
    ) -> None:
        """The one check every writing command makes before it writes (and before any long
        work): an output that is one of the command's own `inputs` is refused even with
        `force` (UsageError); an existing output segcli did not write here, or that was
        changed since, is refused unless `force` (OutputError). `inputs` is only walked when
        an output exists."""
        existing = [Path(p) for p in paths if os.path.lexists(p)]
        if not existing:
            return
        refuse_replacing_inputs(existing, inputs)
        if force:
            return
        foreign = [p for p in existing if not self.owns(p)]
        if len(foreign) == 1:
            raise OutputError(
                f"{foreign[0]} already exists and was not written by segcli there "
                "(or was changed since)",
                hint="pass --force to replace it, or choose another --out",
            )
        if foreign:
            raise OutputError(
                f"{len(foreign)} output file(s) already exist and were not written by segcli "
                f"(or were changed since), e.g. {foreign[0]}",
                hint="pass --force to replace them, or choose another --out",
            )


def claim_outputs(
    paths: list[Path], *, inputs: Iterable[Path] = (), force: bool = False
) -> OutputLedger:
    """The ledger of the folder of `paths` (one folder), once `check_replaceable` allows them."""
    ledger = OutputLedger(Path(paths[0]).parent)
    ledger.check_replaceable(paths, force, inputs)
    return ledger


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def refuse_replacing_inputs(outputs: Iterable[Path], inputs: Iterable[Path]) -> None:
    """A UsageError if an existing output is one of the inputs: the same file by any name
    (a link, a `..` path, another spelling), which no --force may replace."""
    targets = {key: path for path in outputs if (key := _file_identity(path)) is not None}
    if not targets:
        return
    for source in inputs:
        output = targets.get(_file_identity(source))
        if output is not None:
            same = "" if os.path.abspath(output) == os.path.abspath(source) else f" ({source})"
            raise UsageError(
                f"output {output} is an input of this command{same}: it is never replaced, "
                "even with --force",
                hint="choose another --out",
            )


# What the commands read, and so never replace: a run folder's records and a prepared dataset.
RUN_RECORDS = (
    "config.toml",
    "metrics.jsonl",
    "metrics.csv",
    "summary.json",
    "environment.json",
    "command.txt",
    "plan.json",
    "run.json",
    "profile.json",  # written by `segcli profile RUN`, read by `segcli report`
)


def run_records(run_dir: Path) -> Iterator[Path]:
    """What `segcli train` (and `segcli profile`) recorded in a run folder: RUN_RECORDS and
    the checkpoints."""
    run_dir = Path(run_dir)
    yield from (run_dir / name for name in RUN_RECORDS)
    yield from run_dir.glob("*.safetensors")


def dataset_files(root: Path) -> Iterator[Path]:
    """A prepared dataset's files: its records (dataset.json, samples.jsonl, report.json, the
    fingerprint: every top-level JSON file) and every file of `<split>/images|masks`."""
    root = Path(root)
    yield from root.glob("*.json")
    yield from root.glob("*.jsonl")
    for folder in [*root.glob("*/images"), *root.glob("*/masks")]:
        try:
            yield from folder.iterdir()
        except OSError:  # not a folder, or unreadable: the command itself will say so
            continue
