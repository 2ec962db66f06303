"""What it costs to start the units of a round before they train: one TorchTrainer per unit, one for the round, or plain tasks.

    python benchmarks/bench_unit_start.py [--units 1 6] [--repeats 2]

For each count N, N units start at once on a local Ray with this machine's CPUs, each asking
CPUs / N, the way a pass starts its units. Every unit's function imports `ray.train` and torch
and returns at once, so the table is the fixed cost of a round, not training:

- *TorchTrainer per unit*: N Ray tasks, each building and fitting a one-worker `TorchTrainer`
  (the shape of `kdsed.sweep.workers.fit_unit`): N controllers, N worker groups, N process groups;
- *one TorchTrainer*: one N-worker `TorchTrainer` whose rank i would train unit i
  (the shape of `kdsed.sweep.workers.fit_round`);
- *plain tasks*: N Ray tasks in fresh worker processes (`max_calls=1`), the floor: a Python
  process that imports torch.

Wall seconds from launch until the last unit returned; Ray's own start-up is not counted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence

import ray

QUIET = "CRITICAL"


def _train_nothing(config: dict) -> None:
    import ray.train
    import torch

    ray.train.report({"threads": torch.get_num_threads()})


def _fit(storage: str, name: str, workers: int, cpus: float) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    TorchTrainer(_train_nothing, scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus}),
                 run_config=RunConfig(name=name, storage_path=storage,
                                      logging_config=ray.LoggingConfig(log_level=QUIET))).fit()


@ray.remote(num_cpus=0, max_calls=1)
def _fit_in_task(storage: str, name: str, workers: int, cpus: float) -> None:
    _fit(storage, name, workers, cpus)


@ray.remote(max_calls=1)
def _plain_task() -> int:
    import ray.train  # noqa: F401  (what a unit's process imports)
    import torch

    return torch.get_num_threads()


def _share(units: int) -> float:
    return round(max((os.cpu_count() or 1) / units, 0.05), 2)


def time_trainer_per_unit(units: int, storage: str, tag: str) -> float:
    started = time.perf_counter()
    ray.get([_fit_in_task.remote(storage, f"{tag}-u{i}", 1, _share(units)) for i in range(units)])
    return time.perf_counter() - started


def time_one_trainer(units: int, storage: str, tag: str) -> float:
    started = time.perf_counter()
    ray.get(_fit_in_task.remote(storage, f"{tag}-round", units, _share(units)))
    return time.perf_counter() - started


def time_plain_tasks(units: int) -> float:
    started = time.perf_counter()
    ray.get([_plain_task.options(num_cpus=_share(units)).remote() for _ in range(units)])
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", nargs="+", type=int, default=[1, 6])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    # As the sweep starts a local Ray (kdsed.sweep.coordinator): the processes a round starts are expected.
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             logging_config=ray.LoggingConfig(log_level="ERROR"),
             _system_config={"worker_maximum_startup_concurrency": max(cpus, 4 * max(args.units))})
    print(f"{cpus} cores; wall s from launch until the last of N units returned (fresh processes each)\n")
    print("| units at once | 1-min load before | TorchTrainer per unit | one TorchTrainer | plain tasks |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as storage:
        for repeat in range(args.repeats):
            for units in args.units:
                load = os.getloadavg()[0]
                tag = f"r{repeat}-n{units}"
                per_unit = time_trainer_per_unit(units, storage, tag)
                one = time_one_trainer(units, storage, tag)
                plain = time_plain_tasks(units)
                print(f"| {units} | {load:.1f} | {per_unit:.1f} | {one:.1f} | {plain:.1f} |", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
