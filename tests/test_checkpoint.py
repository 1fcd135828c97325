import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from segcli.engine.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from segcli.errors import CheckpointError


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
    save_checkpoint(path, model.state_dict(), {"classes": ["a", "b"]}, state)
    loaded = load_checkpoint(path, with_training_state=True)
    assert loaded.meta == {"classes": ["a", "b"]}
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
        from segcli.engine.checkpoint import save_checkpoint
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
