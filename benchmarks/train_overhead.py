"""How much does segcli's training step loop cost over a bare PyTorch loop?

Runs, in one process and interleaved round by round, on the same model, batches and
in-memory tensors:
  bare      for x, y in batches: ce(model(x), y).backward(); opt.step(); opt.zero_grad()
  segcli    segcli.training.loop.train_one_epoch (the loop `segcli train` runs)
  tutorial  the bare loop plus a per-step `loss.item()` and print, as tutorials write it
and prints images/s for each (median over rounds) and the ratios to the bare loop (target:
segcli >= 0.95). All three use the configured loss, precision (`--amp`) and memory format.
The data pipeline is left out on purpose: benchmarks/loader_speed.py measures it on real data.

    python benchmarks/train_overhead.py                 # CPU defaults
    python benchmarks/train_overhead.py --amp bf16 --channels-last
    python benchmarks/train_overhead.py --device cuda --batch-size 32 --size 256
    python benchmarks/train_overhead.py --quick         # tiny sizes: a smoke test
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from contextlib import redirect_stdout

import torch

from segcli.building import autocast_for, build_loss, build_model
from segcli.config import build_config
from segcli.data.format import ClassInfo, DatasetInfo
from segcli.devices import resolve_device
from segcli.training.loop import TrainingState, train_one_epoch
from segcli.training.optimisation import build_optimizer, build_scheduler


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base-width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--amp", default="off", help="off, bf16 or fp16 (train.amp)")
    parser.add_argument("--channels-last", action="store_true", help="train.channels_last")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.size, args.steps, args.rounds = 2, 32, 3, 2
        args.base_width, args.depth = 8, 2

    device = resolve_device(args.device)
    config = build_config(
        {"model": {"name": "unet", "base_width": args.base_width, "depth": args.depth}},
        overrides=[
            f"train.batch_size={args.batch_size}",
            "train.log_every=20",
            f"train.amp={args.amp}",
            f"train.channels_last={str(args.channels_last).lower()}",
        ],
    )
    classes = [ClassInfo(i, f"c{i}", (i, i, i)) for i in range(4)]
    info = DatasetInfo("bench", classes, {}, image_channels=3)
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(args.batch_size, 3, args.size, args.size, generator=generator).to(device),
            torch.randint(0, 4, (args.batch_size, args.size, args.size), generator=generator).to(
                device
            ),
        )
        for _ in range(args.steps)
    ]
    torch.manual_seed(0)
    model = build_model(config, info).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, args.steps)
    loss_fn = build_loss(config, info)

    def bare() -> None:
        model.train()
        for images, masks in batches:
            with autocast_for(args.amp, device):
                loss = loss_fn(model(images.contiguous(memory_format=memory_format)), masks)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def segcli_loop() -> None:
        train_one_epoch(
            model, batches, loss_fn, optimizer, scheduler, config, device, TrainingState()
        )

    def tutorial() -> None:
        model.train()
        for step, (images, masks) in enumerate(batches):
            with autocast_for(args.amp, device):
                loss = loss_fn(model(images.contiguous(memory_format=memory_format)), masks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            print(f"step {step} loss {loss.item():.4f}")

    loops = {"bare": bare, "segcli": segcli_loop, "tutorial": tutorial}
    for loop in loops.values():  # warm-up: allocator, kernels, lazy state
        with redirect_stdout(io.StringIO()):
            loop()
    speeds: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, loop in loops.items():
            synchronize(device)
            started = time.perf_counter()
            with redirect_stdout(io.StringIO()):
                loop()
            synchronize(device)
            speeds[name].append(args.steps * args.batch_size / (time.perf_counter() - started))

    print(
        f"device {device}, unet base_width={args.base_width} depth={args.depth}, "
        f"batch {args.batch_size}x3x{args.size}x{args.size}, amp {args.amp}, "
        f"{'channels_last' if args.channels_last else 'contiguous'}, "
        f"{args.steps} steps x {args.rounds} rounds, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    bare_speed = statistics.median(speeds["bare"])
    for name, values in speeds.items():
        median = statistics.median(values)
        print(
            f"{name:9s} {median:8.2f} img/s  (min {min(values):.2f}, max {max(values):.2f})  "
            f"ratio to bare {median / bare_speed:.3f}"
        )


if __name__ == "__main__":
    main()
