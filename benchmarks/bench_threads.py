"""What torch threads per unit cost when several units train at once on a few cores.

    python benchmarks/bench_threads.py --units 2 --threads 1 2 --model deep --width 0.125

For each thread count, `--units` processes start together and each trains the same model through
`kdsed.train.train_variant` on random 240 x 64 clips with that many torch threads; the table gives the
summed clips/s of their training epochs and the wall time of the slowest. With the sweep's rule (threads =
the whole CPUs a unit was given) 2 units on 2 cores run 1 thread each; 2 threads each is what torch would
pick by itself (one per core) and oversubscribes the cores. Reports the 1-minute load before each row.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from collections.abc import Sequence

import torch
from bench_precision import random_targets

from kdsed.config import ModelConfig, TrainConfig
from kdsed.train import EpochLog, train_variant


def one_unit(model: str, width: float, threads: int, clips: int, epochs: int, out: mp.Queue) -> None:
    """Train one unit with `threads` torch threads; put (its epochs' clips/s, its wall seconds) in `out`."""
    torch.set_num_threads(threads)
    train, val = random_targets(clips, 240, 64, 0), random_targets(clips // 4, 240, 64, 1)
    logs: list[EpochLog] = []
    start = time.perf_counter()
    cfg = TrainConfig(epochs=epochs, patience=epochs, batch_size=32, device="cpu", num_threads=threads)
    train_variant(ModelConfig(name=model, width=width), cfg, train, val, on_epoch=logs.append)  # type: ignore[arg-type]
    out.put((len(logs) / sum(1 / log.clips_per_s for log in logs), time.perf_counter() - start))


def measure(units: int, threads: int, args: argparse.Namespace) -> tuple[float, float]:
    """(summed clips/s, slowest wall seconds) of `units` processes training at once."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=one_unit, args=(args.model, args.width, threads, args.clips, args.epochs, out))
             for _ in range(units)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(r for r, _ in results), max(w for _, w in results)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--model", default="deep", choices=["deep", "shallow", "baseline"])
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--clips", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="rows per thread count, alternating")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} cores; {args.units} units of {args.model} w{args.width}, {args.clips} clips x "
          f"{args.epochs} epochs each\n")
    print("| threads per unit | 1-min load before | summed clips/s | slowest unit s |")
    print("|---:|---:|---:|---:|")
    for _ in range(args.repeats):
        for threads in args.threads:
            load = os.getloadavg()[0]
            rate, wall = measure(args.units, threads, args)
            print(f"| {threads} | {load:.1f} | {rate:.0f} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
