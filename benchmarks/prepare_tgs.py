"""Time `segcli prepare tgs-salt` on the full TGS training set (4000 pairs + test images).

    python benchmarks/prepare_tgs.py [RAW] [--workers N]
    python benchmarks/prepare_tgs.py --quick      # the first 200 pairs: a smoke test

RAW defaults to ../shared/data/tgs-salt beside the repository; the output goes to a
temporary folder that is removed afterwards. Target: under 20 s on 2 cores (the exit status
says whether it was met, except with --quick).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_RAW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tgs-salt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", nargs="?", type=Path, default=DEFAULT_RAW)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="the first 200 pairs only")
    args = parser.parse_args()
    if not (args.raw / "train" / "images").is_dir():
        print(f"skipped: no TGS data at {args.raw.resolve()}")
        return 0

    from segcli_datasets.tgs_salt import prepare

    from segcli.data.prepare import build_dataset

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        plan = prepare(args.raw)
        if args.quick:
            plan.samples = plan.samples[:200]
        planned = time.perf_counter()
        report = build_dataset(plan, Path(scratch) / "tgs", workers=args.workers)
        finished = time.perf_counter()
    pairs = sum(report.pairs.values())
    wall = finished - started
    print(
        f"tgs-salt: {pairs} pairs + {sum(report.unlabelled.values())} test images, "
        f"{args.workers} workers on {os.cpu_count()} cores"
    )
    print(
        f"wall {wall:.2f} s (plan {planned - started:.2f} s, build {finished - planned:.2f} s), "
        f"{pairs / wall:.0f} pairs/s"
    )
    return 0 if args.quick or wall < 20 else 1


if __name__ == "__main__":
    sys.exit(main())
