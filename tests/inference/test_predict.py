"""`segcli predict`: mirrored trees, original sizes, extra outputs, tiles, TTA, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

EXPECTED_SIZES = {  # output (width, height) = displayed input size
    "a": (64, 64),
    "rotated": (20, 30),
    "sub/b": (50, 37),
    "sub/grey": (40, 64),
    "sub/deeper/c16": (64, 64),
}


def test_folder_tree_is_mirrored_at_input_sizes_and_a_corrupt_file_is_partial(
    cli, image_tree, trained_run, tmp_path
):
    out = tmp_path / "out"
    result = cli(
        "predict",
        str(image_tree),
        "--recursive",
        "--checkpoint",
        str(trained_run),
        "--out",
        str(out),
        "--colorize",
        "--overlay",
        "--alpha",
        "0.4",
        "--probabilities",
        "npy",
    )
    assert result.exit_code == 8, result.stderr  # "partial": the others completed
    assert "broken.png" in result.stderr and "1 of 6 image(s)" in result.stderr
    masks = {
        p.relative_to(out).as_posix()[: -len(".png")]
        for p in out.rglob("*.png")
        if p.name.count(".") == 1
    }
    assert masks == set(EXPECTED_SIZES)
    for stem, size in EXPECTED_SIZES.items():
        mask = Image.open(out / f"{stem}.png")
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 1, 2, 3}
        for suffix in (".color.png", ".overlay.png"):
            picture = Image.open(out / f"{stem}{suffix}")
            assert picture.size == size and picture.mode == "RGB"
        probs = np.load(out / f"{stem}.probs.npy")
        assert probs.dtype == np.float16 and probs.shape == (4, size[1], size[0])
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1, atol=5e-3)
        assert np.array_equal(probs.argmax(0), np.asarray(mask))
    assert not list(out.rglob("*.tmp")) and not (out / "notes.png").exists()


def test_confidence_png_and_glob_inputs_with_shared_stems(cli, image_tree, trained_run, tmp_path):
    Image.open(image_tree / "a.png").save(image_tree / "a.jpg")
    out = tmp_path / "out"
    result = cli(
        "predict",
        str(image_tree / "a.*"),
        "--checkpoint",
        str(trained_run),
        "--out",
        str(out),
        "--probabilities",
        "png",
    )
    assert result.exit_code == 0, result.stderr
    assert {p.name for p in out.iterdir()} == {
        ".segcli-outputs.jsonl",  # what segcli wrote there, so a re-run may replace it
        "a.png.png",
        "a.jpg.png",
        "a.png.confidence.png",
        "a.jpg.confidence.png",
    }
    confidence = np.asarray(Image.open(out / "a.png.confidence.png"))
    assert confidence.shape == (64, 64) and confidence.min() >= 255 // 4  # at least 1/K


def test_tiled_prediction_writes_every_output_at_the_image_size(
    native_checkpoint, shapes_dataset, tmp_path
):
    """The files of a tiled run; that tiles change no value is test_preprocessing's job."""
    from segcli.inference.predict_files import predict_paths

    source = sorted((shapes_dataset / "val" / "images").iterdir())[0]
    folder = tmp_path / "big"
    folder.mkdir()
    Image.open(source).convert("RGB").resize((150, 110)).save(folder / "big.png")
    tiled = predict_paths(
        native_checkpoint,
        [folder],
        tmp_path / "tiled",
        probability_format="npy",
        workers=0,
        tile=48,
        overlap=0.5,
        batch_size=3,
    )
    assert not tiled.failed
    probabilities = np.load(tmp_path / "tiled" / "big.probs.npy").astype(np.float32)
    assert probabilities.shape == (4, 110, 150)
    np.testing.assert_allclose(probabilities.sum(0), 1, atol=5e-3)
    mask = np.asarray(Image.open(tmp_path / "tiled" / "big.png"))
    assert np.array_equal(probabilities.argmax(0), mask)


def test_sliding_window_blends_exactly_like_a_full_image_accumulator():
    """With a pixel-wise 'model', any tiling must reproduce the whole-image result."""
    from segcli.inference.tiling import count_windows, sliding_window

    image = np.random.default_rng(0).integers(0, 256, (77, 131, 3), dtype=np.uint8)

    def pixelwise(windows):
        batch = torch.from_numpy(np.stack(windows)).permute(0, 3, 1, 2).float() / 64
        return torch.softmax(batch, 1)

    expected = pixelwise([image])[0]
    strips = []
    sliding_window(
        image,
        pixelwise,
        3,
        lambda top, probs: strips.append((top, probs.clone())),
        tile=32,
        overlap=0.3,
        batch_size=2,
    )
    assert [top for top, _ in strips][0] == 0
    assert sum(probs.shape[1] for _, probs in strips) == 77
    torch.testing.assert_close(torch.cat([p for _, p in strips], 1), expected, atol=1e-5, rtol=0)
    assert count_windows(77, 131, 32, 0.3) == 4 * 6


def test_tta_flip_averages_views_of_the_same_size(native_checkpoint, shapes_dataset):
    from segcli.data.images import read_image
    from segcli.inference.predict_files import Predictor

    image = read_image(sorted((shapes_dataset / "val" / "images").iterdir())[0], 3)
    plain = Predictor(native_checkpoint, "cpu")
    flipped = Predictor(native_checkpoint, "cpu", tta="flip-hv")
    batch = plain.preprocess(image)[None]
    views = [plain.probabilities(batch.flip(d) if d else batch) for d in [(), (3,), (2,), (2, 3)]]
    unflipped = [
        v.flip(d) if d else v for v, d in zip(views, [(), (3,), (2,), (2, 3)], strict=True)
    ]
    torch.testing.assert_close(flipped.probabilities(batch), sum(unflipped) / 4)
    assert plain.predict_mask(image).shape == (64, 64)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--threshold", "0.3"], 2, "--threshold applies to binary models"),
        (["--tta", "rotate"], 2, "unknown --tta 'rotate'"),
        (["--tile", "64", "--overlap", "1.5"], 2, "--overlap 1.5"),
        (["--probabilities", "csv"], 2, "unknown --probabilities 'csv'"),
        (["--tile", "0"], 2, "--tile 0 is out of range: it must be at least 8"),
        (["--tile", "-64"], 2, "--tile -64 is out of range"),
        (["--overlap", "0.5"], 2, "--overlap 0.5 applies to sliding windows only"),
        (["--max-image-pixels", "0"], 2, "--max-image-pixels 0 is out of range"),
    ],
)
def test_bad_options_are_one_line_errors(
    cli, image_tree, trained_run, tmp_path, args, code, message
):
    out = tmp_path / "out"
    result = cli(
        "predict",
        str(image_tree / "a.png"),
        "--checkpoint",
        str(trained_run),
        "--out",
        str(out),
        *args,
    )
    assert result.exit_code == code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_output_inside_the_input_folder_is_refused(cli, image_tree, trained_run):
    result = cli(
        "predict",
        str(image_tree),
        "--checkpoint",
        str(trained_run),
        "--out",
        str(image_tree / "pred"),
    )
    assert result.exit_code == 2
    assert "inside the input folder" in result.stderr


def _predict(cli, checkpoint, *args):
    return cli("predict", *map(str, args), "--checkpoint", str(checkpoint))


def test_outputs_two_inputs_would_share_are_refused_before_writing(
    cli, image_tree, trained_run, tmp_path
):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("x.png", "x.color.png"):
        Image.open(image_tree / "a.png").save(folder / name)
    out = tmp_path / "out"
    result = _predict(cli, trained_run, folder, "--out", out, "--colorize")
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "would both be written to" in lines[0]
    assert f"{folder / 'x.png'} " in lines[0] and f"{folder / 'x.color.png'} " in lines[0]
    assert not out.exists()


def test_an_output_folder_holding_an_input_file_is_refused_even_with_force(
    cli, image_tree, trained_run
):
    before = (image_tree / "a.png").read_bytes()
    Image.open(image_tree / "a.png").save(image_tree / "a.jpg")
    result = _predict(cli, trained_run, image_tree / "a.jpg", "--out", image_tree, "--force")
    assert result.exit_code == 2 and f"holds the input {image_tree / 'a.jpg'}" in result.stderr
    assert (image_tree / "a.png").read_bytes() == before
    (image_tree / "link").mkdir()
    (image_tree / "link" / "a.png").symlink_to(image_tree / "a.png")
    linked = _predict(
        cli, trained_run, image_tree / "a.png", "--out", image_tree / "link", "--force"
    )
    assert linked.exit_code == 2 and "would replace the input" in linked.stderr
    assert (image_tree / "a.png").read_bytes() == before


def test_files_segcli_did_not_write_are_replaced_only_with_force(
    cli, image_tree, trained_run, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"the user's own file")
    result = _predict(cli, trained_run, image_tree / "a.png", "--out", out, "--colorize")
    assert result.exit_code == 6, result.stderr
    assert "not written by segcli" in result.stderr and "--force" in result.stderr
    assert (out / "a.png").read_bytes() == b"the user's own file"
    assert not (out / "a.color.png").exists()

    result = _predict(cli, trained_run, image_tree / "a.png", "--out", out, "--force")
    assert result.exit_code == 0, result.stderr
    assert Image.open(out / "a.png").size == (64, 64)
    again = _predict(cli, trained_run, image_tree / "a.png", "--out", out, "--colorize")
    assert again.exit_code == 0, again.stderr  # a re-run replaces what segcli wrote

    edited = np.asarray(Image.open(out / "a.png")).copy()
    edited[0, 0] = 3 - edited[0, 0]
    Image.fromarray(edited).save(out / "a.png")  # corrected by hand: no longer segcli's
    result = _predict(cli, trained_run, image_tree / "a.png", "--out", out)
    assert result.exit_code == 6, result.stderr
    assert np.array_equal(np.asarray(Image.open(out / "a.png")), edited)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_244_character_name_is_predicted(cli, image_tree, trained_run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = "n" * 240 + ".png"  # the longest whose outputs all fit in 255 bytes
    Image.open(image_tree / "a.png").save(folder / name)
    out = tmp_path / "out"
    result = _predict(
        cli, trained_run, folder, "--out", out, "--colorize", "--probabilities", "png"
    )
    assert result.exit_code == 0, result.stderr
    stem = "n" * 240
    assert {p.name for p in out.iterdir()} == {
        ".segcli-outputs.jsonl",
        f"{stem}.png",
        f"{stem}.color.png",
        f"{stem}.confidence.png",
    }


def test_an_output_name_too_long_is_refused_before_writing(cli, image_tree, trained_run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(image_tree / "a.png").save(folder / ("n" * 246 + ".png"))
    out = tmp_path / "out"
    result = _predict(cli, trained_run, folder, "--out", out, "--colorize")
    assert result.exit_code == 2, result.stderr
    assert "is longer than the 255 bytes" in result.stderr and not out.exists()


def test_disk_full_stops_predict_at_the_first_image(image_tree, trained_run, tmp_path):
    """RLIMIT_FSIZE makes every write past 16 KiB fail with EFBIG, like a full disk."""
    import subprocess
    import sys

    out = tmp_path / "out"
    script = (
        "import resource, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384)); "
        "from segcli.cli import main; sys.argv[0] = 'segcli'; main()"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "predict",
            str(image_tree),
            "-r",
            "--out",
            str(out),
            "--checkpoint",
            str(trained_run),
            "--probabilities",
            "npy",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 7, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: file too large writing"), result.stderr
    assert ".probs.npy" in lines[0] and "Traceback" not in result.stderr
    assert not [p for p in out.rglob("*") if p.name.endswith((".npy", ".tmp"))]
