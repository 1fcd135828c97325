import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from segcli.errors import CheckpointError
from segcli.runs.checkpoint_file import load_checkpoint, read_checkpoint_meta, save_checkpoint


def test_round_trip_keeps_weights_meta_and_nested_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "last.safetensors"
    state = {
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "epoch": 3,
    }
    meta = {"classes": [{"id": 0, "name": "a", "color": [0, 0, 0]}], "dataset": "d"}
    save_checkpoint(path, model.state_dict(), meta, state)
    loaded = load_checkpoint(path, with_training_state=True)
    assert loaded.meta == meta
    assert read_checkpoint_meta(path) == loaded.meta
    assert torch.equal(loaded.model_state["weight"], model.weight)
    restored = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    restored.load_state_dict(loaded.training_state["optimizer"])
    assert torch.equal(
        restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )
    assert loaded.training_state["epoch"] == 3


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)


@pytest.mark.slow
def test_sigkill_during_a_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, {"w": torch.ones(2)}, {"generation": 1})
    script = textwrap.dedent(
        f"""
        import torch
        from segcli.runs.checkpoint_file import save_checkpoint
        print("ready", flush=True)
        while True:
            save_checkpoint({str(path)!r}, {{"w": torch.randn(4_000_000)}}, {{"generation": 2}})
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == b"ready"
    import time

    time.sleep(1.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    loaded = load_checkpoint(path)
    assert loaded.meta["generation"] in (1, 2)


def test_a_state_dict_mismatch_says_which_keys_and_shapes_differ_on_one_line():
    from segcli.runs.checkpoint_file import load_model_state

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    state = {f"extra.{i}": torch.zeros(1) for i in range(5)}
    state["0.weight"] = torch.zeros(4, 3, 5, 5)
    state["0.bias"] = model[0].bias.detach()
    with pytest.raises(CheckpointError) as error:
        load_model_state(model, state, "best.safetensors")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("best.safetensors does not fit Sequential: ")
    assert "2 keys missing from the file: 1.weight, 1.bias" in message
    assert "5 keys the model does not have: extra.0, extra.1, extra.2 and 2 more" in message
    assert (
        "1 shapes differ: 0.weight (4, 3, 5, 5) in the file, (4, 3, 3, 3) in the model" in message
    )
    load_model_state(model, model.state_dict(), "best.safetensors")


# Checkpoints that describe their model: written with the public helpers, as training does.


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from segcli_shapes.generate import prepare

    from segcli.data.prepare import build_dataset

    out = tmp_path_factory.mktemp("tiny") / "shapes"
    build_dataset(prepare(None, train=2, val=2, size=32), out, workers=1)
    return out


TWO_CLASSES = [(0, "background", (0, 0, 0)), (1, "thing", (255, 255, 255))]


def write_checkpoint(path, dataset_dir, *overrides, classes=None):
    """A checkpoint as `segcli train` writes it, for a tiny untrained U-Net."""
    from segcli_recipes import SHAPES_UNET

    from segcli.building import build_model
    from segcli.config import build_config
    from segcli.data.format import ClassInfo, DatasetInfo, read_dataset_info
    from segcli.training.fit import checkpoint_meta

    config = build_config(
        SHAPES_UNET,
        overrides=[
            f'dataset.path="{dataset_dir}"',
            "model.base_width=4",
            "model.depth=2",
            "input.size=[32,32]",
            *overrides,
        ],
    )
    info = read_dataset_info(dataset_dir)
    if classes is not None:
        info = DatasetInfo("two", [ClassInfo(*c) for c in classes], {})
    model = build_model(config, info)
    save_checkpoint(path, model.state_dict(), checkpoint_meta(config, info, model))
    return path


def rewrite_meta(path, change):
    checkpoint = load_checkpoint(path)
    meta = json.loads(json.dumps(checkpoint.meta))
    change(meta)
    save_checkpoint(path, checkpoint.model_state, meta)


@pytest.fixture
def disable_plugins(monkeypatch):
    from segcli.plugins import reset_plugins

    def disable(names: str) -> None:
        monkeypatch.setenv("SEGCLI_DISABLE_PLUGINS", names)
        reset_plugins()

    yield disable
    reset_plugins()


def test_checkpoints_record_the_head_and_who_built_model_and_loss(tmp_path, tiny_dataset):
    import segcli

    path = write_checkpoint(
        tmp_path / "b.safetensors", tiny_dataset, 'loss.name="bce+dice"', classes=TWO_CLASSES
    )
    record = read_checkpoint_meta(path)["model"]
    built_by = {"plugin": "models", "distribution": "segcli", "version": segcli.__version__}
    assert record["built_by"] == built_by
    assert record["loss_built_by"] == {
        "bce": {**built_by, "plugin": "losses"},
        "dice": {**built_by, "plugin": "losses"},
    }
    assert (record["outputs"], record["single_logit"], record["num_classes"]) == (1, True, 2)
    record = read_checkpoint_meta(write_checkpoint(tmp_path / "c.safetensors", tiny_dataset))
    assert (record["model"]["outputs"], record["model"]["single_logit"]) == (4, False)


def test_predict_evaluate_and_export_need_no_loss_plugin(
    cli, tmp_path, tiny_dataset, disable_plugins
):
    multi = write_checkpoint(tmp_path / "multi.safetensors", tiny_dataset)
    binary = write_checkpoint(
        tmp_path / "binary.safetensors", tiny_dataset, 'loss.name="bce"', classes=TWO_CLASSES
    )
    images = tiny_dataset / "val" / "images"
    disable_plugins("losses")
    for checkpoint in (multi, binary):
        out = tmp_path / f"pred-{checkpoint.stem}"
        result = cli("predict", images, "--checkpoint", checkpoint, "--out", out, "--device", "cpu")
        assert result.exit_code == 0, result.stderr
        assert len(list(out.glob("*.png"))) == 2
    result = cli(
        "evaluate",
        tiny_dataset,
        "--checkpoint",
        multi,
        "--out",
        tmp_path / "eval.json",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    result = cli(
        "export", "--checkpoint", binary, "--format", "torchscript", "--out", tmp_path / "binary.pt"
    )
    assert result.exit_code == 0, result.stderr
    sidecar = json.loads((tmp_path / "binary.pt.json").read_text())
    assert sidecar["outputs"].startswith("one logit")


@pytest.mark.parametrize("record", ["model", "preprocessing"])
def test_a_checkpoint_without_its_model_or_preprocessing_record_is_one_line(
    cli, tmp_path, tiny_dataset, record
):
    """No fallback to the loss plugin or the saved configuration: every checkpoint of this
    format records both, so one without is damaged."""
    path = write_checkpoint(tmp_path / "x.safetensors", tiny_dataset, 'loss.name="bce"')
    rewrite_meta(path, lambda meta: meta.pop(record))
    images = tiny_dataset / "val" / "images"
    result = cli("predict", images, "--checkpoint", path, "--out", tmp_path / "pred")
    assert result.exit_code == 5
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"error: {path} is damaged: its metadata has no {record} record")
    assert not (tmp_path / "pred").exists()


def test_a_model_from_a_missing_plugin_names_the_distribution_to_install(tmp_path, tiny_dataset):
    from segcli.errors import PluginError
    from segcli.inference.predict_files import Predictor

    path = write_checkpoint(tmp_path / "foo.safetensors", tiny_dataset)

    def built_by_foo(meta):
        meta["config"]["model"]["name"] = "foo-net"
        meta["model"]["built_by"] = {
            "plugin": "foo",
            "distribution": "segcli-foo",
            "version": "1.2",
        }

    rewrite_meta(path, built_by_foo)
    with pytest.raises(PluginError) as error:
        Predictor(path, "cpu")
    message = str(error.value)
    assert "model 'foo-net' was built by segcli-foo 1.2 (plugin 'foo')" in message
    assert message.endswith("(pip install segcli-foo==1.2)")


def test_a_model_now_provided_by_another_distribution_is_reported(tmp_path, tiny_dataset, caplog):
    from segcli.inference.predict_files import Predictor

    path = write_checkpoint(tmp_path / "moved.safetensors", tiny_dataset)
    rewrite_meta(
        path,
        lambda meta: meta["model"].update(
            built_by={"plugin": "foo", "distribution": "segcli-foo", "version": "1.2"}
        ),
    )
    Predictor(path, "cpu")
    assert "model 'unet' was built by segcli-foo 1.2 (plugin 'foo'), now provided by segcli" in (
        caplog.text
    )
    caplog.clear()
    Predictor(write_checkpoint(tmp_path / "same.safetensors", tiny_dataset), "cpu")
    assert "built by" not in caplog.text


IMPOSTOR = """
import segcli

@segcli.hookimpl
def register_models(register):
    register("unet", "checkpoint_impostor_plugin:build", "an impostor")

def build(num_classes, in_channels, **options):
    raise RuntimeError("the impostor's factory ran")
"""


def test_a_unet_checkpoint_is_rebuilt_by_segcli_even_with_an_impostor_installed(
    tmp_path, tiny_dataset, monkeypatch
):
    from fake_distributions import make_distribution

    import segcli.plugins
    from segcli.inference.predict_files import Predictor

    path = write_checkpoint(tmp_path / "unet.safetensors", tiny_dataset)
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "segcli-impostor", "checkpoint_impostor_plugin", IMPOSTOR, "aa")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(segcli.plugins, "_loaded", segcli.plugins.load_plugins())
    assert segcli.plugins.get_plugins().status_of("aa").status == "failed"
    Predictor(path, "cpu")


def test_the_cli_shows_a_moved_model_as_a_warning_line(cli, tmp_path, tiny_dataset):
    path = write_checkpoint(tmp_path / "moved.safetensors", tiny_dataset)
    rewrite_meta(
        path,
        lambda meta: meta["model"].update(
            built_by={"plugin": "foo", "distribution": "segcli-foo", "version": "1.2"}
        ),
    )
    images = tiny_dataset / "val" / "images"
    result = cli("predict", images, "--checkpoint", path, "--out", tmp_path / "pred")
    assert result.exit_code == 0, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "segcli-foo" in line]
    assert line.startswith("warning: ") and "model 'unet' was built by segcli-foo 1.2" in line


def test_the_recorded_preprocessing_wins_over_the_configuration_and_unknown_ones_are_refused(
    tmp_path, tiny_dataset
):
    from segcli.inference.predictor import Predictor
    from segcli.inference.preprocessing import Preprocessing

    path = write_checkpoint(tmp_path / "new.safetensors", tiny_dataset)
    record = Preprocessing((16, 24), (0.1, 0.2, 0.3), (0.5, 0.5, 0.5), 3, 1).record()
    rewrite_meta(path, lambda meta: meta.update(preprocessing=record))
    predictor = Predictor(path, "cpu")
    assert predictor.preprocessing.mean == (0.1, 0.2, 0.3) and predictor.size == (16, 24)
    image = torch.full((20, 20, 3), 51, dtype=torch.uint8).numpy()
    torch.testing.assert_close(predictor.preprocess(image)[:, 0, 0], torch.tensor([0.2, 0.0, -0.2]))
    rewrite_meta(path, lambda meta: meta["preprocessing"].update(resize="lanczos"))
    with pytest.raises(CheckpointError) as error:
        Predictor(path, "cpu")
    message = str(error.value)
    assert "\n" not in message and "resize 'lanczos'" in message
    rewrite_meta(path, lambda meta: meta["preprocessing"].pop("mean"))
    with pytest.raises(CheckpointError, match="preprocessing record is damaged"):
        Predictor(path, "cpu")


def test_a_trained_checkpoint_records_its_preprocessing(trained_run):
    from segcli.config import build_config

    meta = read_checkpoint_meta(trained_run / "best.safetensors")
    config = build_config(meta["config"])
    record = meta["preprocessing"]
    assert record["size"] == list(config.input.size)
    assert (record["mean"], record["std"]) == (list(config.input.mean), list(config.input.std))
    assert record["resize"] == "bilinear-antialias" and record["pad"] == "reflect-bottom-right"
    assert record["size_divisor"] > 1  # the unet's, not the default of 1
