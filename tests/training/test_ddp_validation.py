"""Under torchrun every validation image counts once: the metrics equal a single process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segcli.config import build_config, to_toml
from segcli.data.dataset import EpochSampler
from segcli.training.fit import fit

# lr 0 and no batch-norm: the weights never change, so both runs validate the same model
FROZEN = [
    "model.base_width=4",
    "model.depth=2",
    "model.batch_norm=false",
    "input.size=[32,32]",
    "train.batch_size=1",  # val/loss is then a mean of per-image losses in both runs
    "train.workers=0",
    "train.epochs=1",
    "train.lr=0.0",
    "augment=none",
]


@pytest.fixture(scope="module")
def odd_validation_dataset(tmp_path_factory) -> Path:
    """5 validation images: 2 processes get 3 and 2, so one share needs padding."""
    from segcli_shapes.generate import prepare

    from segcli.data.prepare import build_dataset

    out = tmp_path_factory.mktemp("datasets") / "odd"
    build_dataset(prepare(None, train=4, val=5, test=0, size=32), out, workers=1)
    return out


def _config(dataset: Path, runs: Path):
    return build_config(
        {"model": {"name": "unet"}, "metrics": ["confusion"]},
        overrides=[f'dataset.path="{dataset}"', f'runs_dir="{runs}"', *FROZEN],
    )


def _validation(run: Path) -> dict:
    [row] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {key: value for key, value in row.items() if key.startswith(("confusion/", "val/"))}


def test_padded_shares_cover_each_image_once_and_mark_the_repeats():
    shares = [list(EpochSampler(5, shuffle=True, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert {len(share) for share in shares} == {2}
    real = sorted(key.index for share in shares for key in share if not key.padding)
    assert real == [0, 1, 2, 3, 4]
    assert sum(key.padding for share in shares for key in share) == 1


@pytest.mark.parametrize(
    "size, world_size, drop_last", [(5, 1, False), (5, 2, False), (7, 3, True)]
)
@pytest.mark.parametrize("start", [0, 1])
def test_sampler_length_is_the_number_of_keys_it_yields(size, world_size, drop_last, start):
    for rank in range(world_size):
        sampler = EpochSampler(
            size, shuffle=True, rank=rank, world_size=world_size, drop_last=drop_last
        )
        sampler.set_epoch(1, start)
        assert len(sampler) == len(list(sampler))


@pytest.mark.slow
def test_two_process_validation_metrics_equal_the_single_process_ones(
    odd_validation_dataset, tmp_path
):
    single = fit(_config(odd_validation_dataset, tmp_path / "single"))
    config_file = tmp_path / "ddp.toml"
    config_file.write_text(to_toml(_config(odd_validation_dataset, tmp_path / "ddp")))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "segcli",
            "train",
            "--config",
            str(config_file),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    [ddp] = list((tmp_path / "ddp").iterdir())
    # the same files, plus what the command line writes after training (first process only)
    assert sorted(p.name for p in ddp.iterdir()) == sorted(
        [*(p.name for p in single.iterdir()), "curves.png", "report.html", ".segcli-outputs.jsonl"]
    )
    expected = _validation(single)
    assert expected["confusion/matrix"]  # the comparison below is over real numbers
    actual = _validation(ddp)
    # losses are added in another order across processes: equal up to float rounding
    assert actual.pop("val/loss") == pytest.approx(expected.pop("val/loss"), rel=1e-6)
    assert actual == expected
