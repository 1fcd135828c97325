"""Run `segcli ARGS...` with one fault point armed, so a test can stop it at an exact moment.

    python fault_wrapper.py ARGS...      (segcli's arguments)

SEGCLI_FAULT="POINT:N:ACTION[:NAME]" arms the N-th time POINT is reached (for checkpoint-write,
counting only files called NAME when it is given):

- prepare-result   the prepare pipeline received its N-th finished sample (workers still alive)
- train-step       the N-th forward pass in training mode
- checkpoint-write the N-th checkpoint write: half its bytes are on disk (temporary file)
- predict-write    the N-th predicted picture (PNG) write, likewise half done

ACTION `pause` writes the file named by SEGCLI_FAULT_MARKER (containing this process's id) and
waits there for the test's signal; `kill` sends SIGKILL to this process at once. Only the
point itself is patched: everything else is the real segcli.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

point, at, action, *only = os.environ["SEGCLI_FAULT"].split(":")
calls = {"count": 0}


def reached() -> bool:
    calls["count"] += 1
    return calls["count"] == int(at)


def strike() -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    Path(os.environ["SEGCLI_FAULT_MARKER"]).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a signal ends the wait; short sleeps keep it prompt
        time.sleep(0.05)
    sys.exit("fault_wrapper: no signal came within 60 s")


def arm_prepare() -> None:
    import segcli.data.prepare as prepare

    original = prepare._run

    def run(*args, **kwargs):
        for result in original(*args, **kwargs):
            yield result
            if reached():
                strike()

    prepare._run = run


def arm_train() -> None:
    import segcli.building as building

    original = building.forward

    def forward(model, images):
        if model.training and reached():
            strike()
        return original(model, images)

    building.forward = forward


class HalfWriter:
    """A stream that writes half of the first bytes it is given, then strikes."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, data: bytes) -> int:
        self.stream.write(data[: len(data) // 2])
        self.stream.flush()
        os.fsync(self.stream.fileno())
        strike()
        return self.stream.write(data[len(data) // 2 :])

    def __getattr__(self, name):
        return getattr(self.stream, name)


def arm_atomic_write(module, wanted) -> None:
    """Make the N-th `module.atomic_write` of a path that `wanted` accepts strike mid-write."""
    original = module.atomic_write

    @contextmanager
    def atomic_write(path, *args, **options):
        armed = wanted(Path(path)) and reached()
        with original(path, *args, **options) as stream:
            yield HalfWriter(stream) if armed else stream

    module.atomic_write = atomic_write


def arm_checkpoint() -> None:
    import segcli.runs.checkpoint_file as checkpoint

    arm_atomic_write(checkpoint, lambda path: path.name in (only or [path.name]))


def arm_predict() -> None:
    import segcli.files as files

    arm_atomic_write(files, lambda path: path.suffix == ".png")


{
    "prepare-result": arm_prepare,
    "train-step": arm_train,
    "checkpoint-write": arm_checkpoint,
    "predict-write": arm_predict,
}[point]()

from segcli.cli import main  # noqa: E402 - after the patch, as the point must be armed first

sys.argv = ["segcli", *sys.argv[1:]]
main()
