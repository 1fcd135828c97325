"""Benchmarks cannot rot: every script under benchmarks/ runs in its `--quick` mode.

A script is a `benchmarks/*.py` file with a `__main__` block (the others, such as
`synthetic.py` and `machine.py`, are modules the scripts import), so a new benchmark is
covered as soon as it exists. Each runs in its own process, in pytest's tmp_path, with
TMPDIR pointing there too: what a quick run writes (prepared data, runs, its results page)
lands in tmp_path, and docs/results.md and benchmarks/results.json (the figures of full runs)
are left as they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    path.name
    for path in (REPO / "benchmarks").glob("*.py")
    if 'if __name__ == "__main__":' in path.read_text()
)
FIGURES = [REPO / "docs" / "results.md", REPO / "benchmarks" / "results.json"]
# generous: the quick modes take seconds to a minute alone, and CI machines are shared
TIMEOUT_SECONDS = 600

pytestmark = pytest.mark.slow


def test_the_benchmarks_are_found():
    assert {"results.py", "train_overhead.py", "loader_speed.py", "deploy.py"} <= set(SCRIPTS)


def quick(script: str, folder: Path, *options: str) -> str:
    """Run `python benchmarks/SCRIPT --quick OPTIONS` in `folder`; its output."""
    figures_before = {path: path.read_bytes() for path in FIGURES}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--quick", *options],
        cwd=folder,
        env={**os.environ, "TMPDIR": str(folder)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, f"{script} --quick failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{script} --quick printed nothing"
    for path, before in figures_before.items():
        assert path.read_bytes() == before, f"{script} --quick wrote {path.relative_to(REPO)}"
    return done.stdout


# results.py has a test of its own below, which also reads what it wrote
@pytest.mark.parametrize("script", [s for s in SCRIPTS if s != "results.py"])
def test_quick_mode_runs(script, tmp_path):
    quick(script, tmp_path)


def test_results_quick_compares_the_plan_with_the_naive_path(tmp_path):
    work = tmp_path / "work"
    quick("results.py", tmp_path, "--work", str(work))
    results = json.loads((work / "results.json").read_text())
    assert sorted(r["variant"] for r in results) == ["naive", "plan"]
    assert all(0 <= r["scores"]["mIoU"] <= 1 and r["machine"]["cores"] >= 1 for r in results)
    page = (work / "results.md").read_text()
    assert "| shapes | 20s | mIoU |" in page  # the plan against naive, side by side
    assert "## This machine: " in page


def test_machines_of_one_name_with_and_without_bf16_keep_their_own_rows(monkeypatch):
    """Two virtual machines named "AMD EPYC", one with AVX512-BF16 and one without, train at
    twice each other's speed: neither's figures stand for the other's."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import results

    def row(bf16: str, iou: float) -> dict:
        return {
            "dataset": "tgs-salt", "variant": "plan", "budget": "8m",
            "command": "segcli train --data data/tgs-salt --time 8m", "wall_seconds": 470.0,
            "epochs": 12, "scores": {"salt IoU": iou},
            "machine": {"cpu": "AMD EPYC", "cores": 2, "bf16": bf16, "torch": "2.14.1",
                        "python": "3.11.7"},
        }  # fmt: skip

    with_bf16, without = row("avx512_bf16", 0.781), row("no", 0.764)
    assert results.machine_key(with_bf16["machine"]) != results.machine_key(without["machine"])
    page = results.markdown([with_bf16, without], without["machine"], quick=False)
    assert "## This machine: AMD EPYC, 2 cores, no native bf16" in page
    assert "## Another machine: AMD EPYC, 2 cores, native bf16 (avx512_bf16)" in page
    assert "salt IoU **0.781**" in page and "salt IoU **0.764**" in page
