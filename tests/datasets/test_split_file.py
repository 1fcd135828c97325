"""`--split-file`: a user's own split, applied by the prepare core for every preparer, kept
exactly; anything that does not fit the raw data is refused in one line with exit code 2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from raw_images import SHARED_DATA, noise, save

from segcli.data.format import ClassInfo, read_dataset_info
from segcli.data.plan import DatasetPlan, Sample
from segcli.data.prepare import build_dataset
from segcli.data.split_file import read_split_file
from segcli.errors import ConfigError, DataError, UsageError

TGS_STEMS = [f"{i:010x}" for i in range(10)]


def split_file(tmp_path: Path, content: object, name: str = "split.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def stems(root: Path, split: str) -> list[str]:
    return sorted(p.stem for p in (root / split / "images").iterdir())


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_split_is_kept_exactly(run_cli, tgs_raw, tmp_path):
    chosen = {
        "dataset": "tgs-salt",
        "rule": "by hand",
        "seed": 7,
        "train": TGS_STEMS[3:],
        "val": TGS_STEMS[:3],
    }
    path = split_file(tmp_path, chosen)
    code, out, err = run_cli("prepare", "tgs-salt", tgs_raw, "--out", "out", "--split-file", path)
    assert code == 0, err
    root = tmp_path / "out"
    assert stems(root, "val") == TGS_STEMS[:3] and stems(root, "train") == TGS_STEMS[3:]
    assert len(stems(root, "test")) == 2  # images without masks keep their own split
    info = json.loads((root / "dataset.json").read_text())
    assert info["splits"] == {"test": 2, "train": 7, "val": 3}
    assert info["preparer"]["split_file"] == {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert "split from split.json: 7 train, 3 val" in out
    assert "validation split" not in out  # the preparer's own split note is gone


def test_unlabelled_images_of_the_same_names_keep_their_split(run_cli, isbi_png_raw, tmp_path):
    path = split_file(tmp_path, {"train": [0, 1], "val": ["2", "3"]})  # numbers are stems too
    code, _, err = run_cli(
        "prepare", "isbi2012", isbi_png_raw, "--out", "out", "--split-file", path
    )
    assert code == 0, err
    root = tmp_path / "out"
    assert stems(root, "train") == ["0", "1"] and stems(root, "val") == ["2", "3"]
    assert stems(root, "test") == ["0", "1", "2", "3"]


def test_moved_samples_hold_what_the_preparer_made(run_cli, tmp_path):
    """Generated data depends on its split: a moved sample is still the one the preparer made
    for its own split, only written elsewhere (here by a preparer without a raw folder)."""
    # 9 samples and 2 workers: the readers go to worker processes
    options = ("prepare", "shapes", "--train", "8", "--val", "1", "--size", "32", "--workers", "2")
    assert run_cli(*options, "--out", "plain")[0] == 0
    train = [f"train_{i:05d}" for i in range(8)]
    path = split_file(tmp_path, {"train": train[:1], "val": ["val_00000"], "extra": train[1:]})
    code, _, err = run_cli(*options, "--out", "moved", "--split-file", path)
    assert code == 0, err
    plain, moved = tmp_path / "plain", tmp_path / "moved"
    assert stems(moved, "extra") == train[1:] and stems(moved, "val") == ["val_00000"]
    for kind in ("images", "masks"):
        for stem in train[1:]:
            before = (plain / "train" / kind / f"{stem}.png").read_bytes()
            assert (moved / "extra" / kind / f"{stem}.png").read_bytes() == before


def read_saved_mask(sample: Sample) -> np.ndarray:
    return np.asarray(Image.open(sample.mask))


def test_the_api_applies_it_to_any_plan(tmp_path):
    raw = tmp_path / "raw"
    samples = [
        Sample(
            "whatever",
            stem,
            save(raw / f"{stem}.png", noise(4, 4, i)),
            save(raw / f"{stem}-mask.png", np.zeros((4, 4), np.uint8)),
        )
        for i, stem in enumerate("abc")
    ]
    classes = [ClassInfo(0, "background", (0, 0, 0))]
    plan = DatasetPlan("third-party", classes, samples, read_mask=read_saved_mask)
    chosen = read_split_file(split_file(tmp_path, {"train": ["a", "c"], "val": ["b"]}))
    report = build_dataset(plan, tmp_path / "out", workers=1, split_file=chosen)
    assert report.pairs == {"train": 2, "val": 1}
    preparer = json.loads((tmp_path / "out" / "dataset.json").read_text())["preparer"]
    assert preparer["split_file"]["sha256"] == chosen.sha256


@pytest.mark.parametrize("split", ["dataset.json", "report.json", ".hidden", "a/b", "val.2"])
def test_a_preparers_split_must_be_a_folder_name(tmp_path, split):
    """Not only split files: a plan's own split names become folders beside dataset.json."""
    raw = tmp_path / "raw"
    samples = [
        Sample(
            name,
            stem,
            save(raw / f"{stem}.png", noise(4, 4, i)),
            save(raw / f"{stem}-mask.png", np.zeros((4, 4), np.uint8)),
        )
        for i, (name, stem) in enumerate([("train", "a"), (split, "b")])
    ]
    classes = [ClassInfo(0, "background", (0, 0, 0))]
    plan = DatasetPlan("third-party", classes, samples, read_mask=read_saved_mask)
    with pytest.raises(UsageError, match=f"{split!r} cannot be a split name"):
        build_dataset(plan, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


def test_a_dataset_json_with_a_split_that_is_no_folder_name_is_refused(tmp_path):
    info = {"name": "x", "classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}]}
    (tmp_path / "dataset.json").write_text(json.dumps({**info, "splits": {"../../etc": 3}}))
    with pytest.raises(DataError, match="'../../etc' cannot be a split name"):
        read_dataset_info(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"train": TGS_STEMS[1:] + ["nope"], "val": TGS_STEMS[:1]}, "1 stem(s) that are no "),
        ({"train": TGS_STEMS[2:], "val": TGS_STEMS[:1]}, "leaves out 1 labelled sample(s) of "),
        (
            {"train": TGS_STEMS[2:], "val": TGS_STEMS[:2] + TGS_STEMS[5:6]},
            f"more than once, e.g. '{TGS_STEMS[5]}' in train and val",
        ),
        ({"train": TGS_STEMS[:3] * 2, "val": TGS_STEMS[3:]}, "more than once"),
        ({"training": TGS_STEMS}, 'has no "train" list (its lists: training)'),
        ({"train": TGS_STEMS, "../up": []}, "'../up' cannot be a split name"),
        ({"train": TGS_STEMS[1:], "dataset.json": TGS_STEMS[:1]}, "'dataset.json' cannot be"),
        ({"train": TGS_STEMS, "fingerprint.json": []}, "'fingerprint.json' cannot be a split"),
        ({"train": TGS_STEMS + [None]}, "holds null, which is not a stem"),
        ({"train": {"a": 1}}, "'train' must be a list of stems"),
        ("[1, 2]", "must hold a JSON object"),
        ("{torn", "is not valid JSON"),
    ],
    ids=[
        "unknown",
        "unlisted",
        "across-splits",
        "within-a-split",
        "no-train",
        "bad-name",
        "dataset-json",
        "fingerprint-json",
        "not-a-stem",
        "not-a-list",
        "not-an-object",
        "torn",
    ],
)
def test_refused_in_one_line(run_cli, tgs_raw, tmp_path, content, message):
    path = split_file(tmp_path, content)
    code, _, err = run_cli("prepare", "tgs-salt", tgs_raw, "--out", "out", "--split-file", path)
    assert code == 2
    assert message in one_line(err)
    assert not (tmp_path / "out").exists()


def test_refusals_name_the_stems_and_how_many(run_cli, tgs_raw, tmp_path):
    path = split_file(tmp_path, {"train": TGS_STEMS[5:], "val": []})
    code, _, err = run_cli("prepare", "tgs-salt", tgs_raw, "--out", "out", "--split-file", path)
    line = one_line(err)
    assert code == 2
    assert f"leaves out 5 labelled sample(s) of tgs-salt: '{TGS_STEMS[0]}'" in line
    assert "and 2 more" in line


def test_a_missing_split_file(run_cli, tgs_raw, tmp_path):
    code, _, err = run_cli("prepare", "tgs-salt", tgs_raw, "--split-file", tmp_path / "absent.json")
    assert code == 2 and "cannot read split file" in one_line(err)


def test_a_stem_shared_by_two_raw_splits_is_refused_with_its_samples(run_cli, idd_raw, tmp_path):
    path = split_file(tmp_path, {"train": ["0_frame0000", "100_frame0001", "200_frame0002"]})
    code, _, err = run_cli("prepare", "idd-lite", idd_raw, "--out", "out", "--split-file", path)
    line = one_line(err)
    assert code == 2
    assert "2 stem(s) name several labelled samples of idd-lite, e.g. '0_frame0000'" in line
    assert "train " in line and "val " in line


def test_a_labelled_sample_put_beside_an_unlabelled_one_of_its_name(
    run_cli, isbi_png_raw, tmp_path
):
    path = split_file(tmp_path, {"train": ["0", "1", "2"], "test": ["3"]})
    code, _, err = run_cli("prepare", "isbi2012", isbi_png_raw, "--split-file", path)
    assert code == 2
    assert "puts '3' into 'test', which also holds an image without a mask" in one_line(err)


def test_read_split_file_ignores_descriptive_values(tmp_path):
    path = split_file(tmp_path, {"rule": "x", "seed": 1, "note": None, "train": ["a"], "val": []})
    assert read_split_file(path).splits == {"train": ["a"], "val": []}
    with pytest.raises(ConfigError):
        read_split_file(split_file(tmp_path, {"train": [True]}))


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not there")
def test_the_shared_isbi_split(run_cli, tmp_path):
    splits = SHARED_DATA.parent / "splits" / "isbi2012.json"
    raw = SHARED_DATA / "isbi2012" / "png"
    code, _, err = run_cli("prepare", "isbi2012", raw, "--out", "out", "--split-file", splits)
    assert code == 0, err
    root = tmp_path / "out"
    assert stems(root, "val") == sorted(json.loads(splits.read_text())["val"])
    assert len(stems(root, "train")) == 25
