"""Does the planned training on real data run at the model's full speed? (issue 22, item 2)

Plans a training of a real prepared dataset as `segcli train --data DIR --time T` would,
builds its parts as `segcli train` does (`segcli.training.setup.build_parts`: model, loss,
optimiser, precision, channels_last, loaders) and measures, in one process and interleaved
round by round:

  bare  the same training step (forward, loss, backward, optimiser step, EMA) over batches
        materialised beforehand from the same loader, already on the device:
        `for x, y in ready: step`
  loop  segcli.training.loop.train_one_epoch on the real training loader: decoding, cropping,
        augmentation and collation included

and prints the images/s of each (median over rounds) and the ratio loop/bare. Target: >= 0.85.

    python benchmarks/loader_speed.py                       # TGS, fixed split, --time 8m
    python benchmarks/loader_speed.py --prepare idd-lite --time 10m
    python benchmarks/loader_speed.py --data data/idd-lite --time 10m --set train.workers=1
    python benchmarks/loader_speed.py --quick               # synthetic shapes, a few steps

Without `--data`, the dataset named by `--prepare` is prepared from ../shared/data into
`--work` once (TGS with the baselines' split file). A round is one epoch unless `--steps`
limits it: a real epoch pays for starting its loader, and so does this benchmark. Run it
alone on the machine.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import describe_machine, machine_line

from segcli.building import autocast_for, forward
from segcli.config import RunConfig
from segcli.data.format import read_dataset_info
from segcli.planning.configure import planned_run
from segcli.plugins import get_plugins
from segcli.training.distributed import Distributed
from segcli.training.loop import TrainingState, train_one_epoch
from segcli.training.setup import RunParts, build_parts, seed_everything

SHARED = Path(__file__).resolve().parents[2] / "shared"
RAW = {
    "tgs-salt": (
        SHARED / "data" / "tgs-salt",
        ["--split-file", str(SHARED / "splits" / "tgs-salt.json")],
    ),
    "idd-lite": (SHARED / "data" / "idd-lite", []),
}


def prepare(name: str, work: Path, quick: bool) -> Path | None:
    """The prepared dataset `name` under `work` (prepared once); None without its raw data."""
    out = work / name
    if (out / "dataset.json").is_file():
        return out
    if name == "shapes":
        args = ["prepare", "shapes", "--train", "32", "--val", "8", "--size", "64"]
    else:
        raw, options = RAW[name]
        if not raw.is_dir():
            return None
        args = ["prepare", name, str(raw), *options]
    args += ["--out", str(out)]
    print("$ segcli " + shlex.join(args), flush=True)
    subprocess.run(
        [sys.executable, "-m", "segcli", *args], check=True, capture_output=quick, text=True
    )
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(parts: RunParts, config: RunConfig, ready: list, steps: int) -> int:
    """`steps` training steps over the ready batches (cycled); the images they held."""
    model, optimizer, scaler = parts.trained, parts.optimizer, parts.scaler
    accumulate = max(1, config.train.accumulate)
    model.train()
    images_seen = 0
    optimizer.zero_grad(set_to_none=True)
    for index in range(steps * accumulate):
        images, masks = ready[index % len(ready)]
        with autocast_for(config.train.amp, parts.device):
            loss = parts.loss_fn(forward(model, images), masks)
        (scaler.scale(loss / accumulate) if scaler else loss / accumulate).backward()
        images_seen += images.shape[0]
        if (index + 1) % accumulate:
            continue
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if parts.ema is not None:  # the planned step updates its EMA: the bare one does too
            parts.ema.update_parameters(parts.model)
    return images_seen


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="a prepared dataset folder")
    parser.add_argument(
        "--prepare",
        choices=sorted(RAW),
        default="tgs-salt",
        help="without --data: a dataset to prepare from ../shared/data",
    )
    parser.add_argument(
        "--work", type=Path, help="where --prepare writes (/tmp/segcli-loader-speed)"
    )
    parser.add_argument("--time", default="8m", help="the budget the plan is made for")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a configuration override, as `segcli train --set`",
    )
    parser.add_argument(
        "--table-plan",
        action="store_true",
        help="plan from the speed table, without measuring (instant)",
    )
    parser.add_argument("--steps", type=int, default=0, help="steps per round (0: one epoch)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ready", type=int, default=16, help="batches materialised for bare")
    parser.add_argument("--quick", action="store_true", help="synthetic shapes, a few steps")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.ready, args.table_plan = 3, 2, 2, True
        args.set = [*args.set, "train.batch_size=4"]  # a few small steps: seconds
    work = args.work or (
        Path(tempfile.mkdtemp(prefix="segcli-loader-speed-"))
        if args.quick
        else Path("/tmp/segcli-loader-speed")
    )
    data = args.data or prepare("shapes" if args.quick else args.prepare, work, args.quick)
    if data is None:
        print(f"skipped: no raw data for {args.prepare} under {SHARED / 'data'}")
        return 0

    started = time.perf_counter()
    planned = planned_run(
        data, overrides=[f"train.max_time={args.time}", *args.set], measure=not args.table_plan
    )
    planning = time.perf_counter() - started
    config = planned.config
    info = read_dataset_info(data)
    seed_everything(config.train.seed, config.train.deterministic)
    parts = build_parts(config, data, info, Distributed(), get_plugins())
    sampler, batch = parts.train_sampler, config.train.batch_size
    steps = args.steps or -(-len(parts.train_loader) // max(1, config.train.accumulate))
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    ready = []
    for images, masks in parts.train_loader:
        ready.append(
            (
                images.to(parts.device).contiguous(memory_format=memory_format),
                masks.to(parts.device),
            )
        )
        if len(ready) == args.ready:
            break

    def loop(epoch: int, max_steps: int) -> int:
        sampler.set_epoch(epoch)  # as `fit` does: each round is a new epoch's order
        state = TrainingState(epoch=epoch)
        train_one_epoch(
            parts.trained, parts.train_loader, parts.loss_fn, parts.optimizer, parts.scheduler,
            config, parts.device, state, scaler=parts.scaler, ema=parts.ema, max_steps=max_steps,
        )  # fmt: skip
        accumulate = max(1, config.train.accumulate)
        return min(state.step * accumulate * batch, len(sampler))

    def bare(epoch: int, max_steps: int) -> int:
        return bare_loop(parts, config, ready, max_steps)

    runs: dict[str, Callable[[int, int], int]] = {"bare": bare, "loop": loop}
    for run in runs.values():  # warm-up: kernels, allocator, the loader's workers
        run(0, min(steps, 3))
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(args.rounds):
        for name, run in runs.items():
            synchronize(parts.device)
            started = time.perf_counter()
            images = run(round_index + 1, steps)
            synchronize(parts.device)
            speeds[name].append(images / (time.perf_counter() - started))

    print(f"machine: {machine_line(describe_machine())}, {torch.get_num_threads()} torch threads")
    size = "x".join(str(s) for s in config.input.size) if config.input.size else "native"
    print(
        f"data {data} ({len(sampler)} training images), planned for {args.time} "
        f"({'speed table' if args.table_plan else 'measured'}, {planning:.1f} s): "
        f"{config.model.name}, input {size}, batch {batch}, amp {config.train.amp}, "
        f"{'channels_last' if config.train.channels_last else 'contiguous'}, "
        f"{config.train.workers} loader worker(s), device {parts.device}"
    )
    print(f"{steps} steps x {args.rounds} rounds; bare cycles over {len(ready)} ready batches")
    for name, values in speeds.items():
        print(
            f"{name:5s} {statistics.median(values):8.2f} img/s  "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )
    ratio = statistics.median(speeds["loop"]) / statistics.median(speeds["bare"])
    print(f"ratio loop/bare {ratio:.3f} (target >= 0.85)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
