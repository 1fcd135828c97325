"""Wall time of `segcli --help` (and `segcli plugins`) in fresh processes: target < 0.3 s.

python benchmarks/startup.py [--runs 15]
python benchmarks/startup.py --quick      # one run of each: a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="one run of each: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
    for command in (["--help"], ["plugins"], ["list", "models"]):
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "segcli", *command], capture_output=True, check=True
            )
            times.append(time.perf_counter() - started)
        print(
            f"segcli {' '.join(command):12s} median {statistics.median(times):.3f} s  "
            f"min {min(times):.3f} s  ({args.runs} runs)"
        )


if __name__ == "__main__":
    main()
