"""The Ray side of training: one TorchTrainer per round, whose ranks train the round's units side by side.

A round is the units a stage trains at once (all variants of a pass, or stage 0's baseline, topline and
tagger). They share one `TorchTrainer.fit()`, launched from a Ray task (Ray Train V2 cannot run inside
`tune.Tuner`): rank i trains unit i (ranks [i*w, (i+1)*w) with w workers per unit, DDP within a unit's
own process group), each alone. One trainer per round instead of one per unit: its controller, worker
group and process group start once, not N times; 6 units on 2 cores start in 40 s instead of 117 s
(`benchmarks/bench_unit_start.py`, docs/speed.md). Features reach the workers once per sweep through the
object store; the current pseudo-labels once per pass.

A unit's lead worker sends `UnitEvent`s to the coordinator through a `ProgressChannel`: one per epoch,
one per retry, and `done` (with its metrics) or `failed` (with its error) at the end. They feed the
console's live display, the unit's MLflow run while it trains, and the sweep's state, which saves each
unit as it finishes (worker output itself is not forwarded to the main job unless `--verbose`).

Every worker of every attempt records itself (rank, pid, node) in
`<unit folder>/attempts/` when it starts: that is how a retry (in place after
an exception, or by Ray Train after a process died) is counted, logged and
reported back to the coordinator.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any

import ray
import ray.train
import torch
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from kdsed import distill, stages
from kdsed.config import DistillConfig
from kdsed.stages import UnitSpec
from kdsed.sweep.console import UnitEvent
from kdsed.sweep.storage import Storage
from kdsed.sweep.units import record_attempt, stored_by_fit, write_unit
from kdsed.train import DataParallel, EpochLog, TargetSet, train_variant


#: Ray Train's own console log level in a unit: a failure reaches the coordinator as the unit's exception (and is
#: reported there once, e.g. a full disk as one line); Ray Train's console copies of it, with tracebacks, would
#: repeat it in every worker's output. Its log files under the Ray session folder keep everything.
TRAIN_CONSOLE_LOG_LEVEL = "CRITICAL"


@dataclass(frozen=True)
class Placement:
    """Resources of one unit's worker group."""

    workers: int
    use_gpu: bool
    cpus_per_worker: float
    threads: int  # torch threads of each worker: the whole CPUs it was given, at least 1 (never oversubscribed)
    gpus_per_worker: float = 0.0  # < 1 when the units of a pass share GPUs

    def describe(self) -> str:
        """E.g. '1 worker(s) each, 0.33 CPU per worker, 1 torch thread(s)'."""
        cpus = f"{self.cpus_per_worker:g} CPU" if self.cpus_per_worker else "1 CPU (Ray Train's default)"
        gpu = f" and {self.gpus_per_worker:g} GPU" if self.use_gpu else ""
        return f"{self.workers} worker(s) each, {cpus}{gpu} per worker, {self.threads} torch thread(s)"


@dataclass(frozen=True)
class ClusterShape:
    """What placement needs to know of a Ray cluster: its CPUs and GPUs, and the largest node's CPUs."""

    cpus: float
    gpus: float
    largest_node_cpus: float


class ProgressChannel:
    """The units' `UnitEvent`s to the coordinator: a Ray queue actor that takes no CPU."""

    def __init__(self) -> None:
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})

    def drain(self) -> list[UnitEvent]:
        """Every event sent since the last drain, in order (only the coordinator drains)."""
        n = self.queue.qsize()
        return self.queue.get_nowait_batch(n) if n else []


#: The broadcast array each kind of unit trains from, by its `kdsed.stages.training_set` keyword.
_BROADCAST = {"pseudo-weak": "pseudo_weak", "pseudo-strong": "previous", "baseline-tags": "baseline_tags"}


def build_targets(spec: UnitSpec, data, refs: dict[str, Any], distill_cfg: DistillConfig) -> TargetSet:
    """The unit's training set, built on the worker from the broadcast arrays."""
    name = _BROADCAST.get(spec.targets)
    arrays = {name: ray.get(refs[name])} if name else {}
    return stages.training_set(spec, data, distill_cfg, **arrays)


def train_round_per_worker(config: dict) -> None:
    """Ray Train worker of a round: ranks [i*w, (i+1)*w) train unit i of the round (w = workers per unit).

    A unit's lead worker (its first rank) predicts, stores the unit and sends its `done` event. A unit
    already stored by this fit (a worker group restarted by Ray Train after a process died) is not trained
    again. With one worker per unit, an exception fails that unit alone: it is retried in place up to
    `max_failures` times, then sent as `failed`, and the round's other units go on. With several workers
    per unit, the exception fails the worker group (DDP partners cannot go on without it): Ray Train
    restarts the group, and the units it finished are kept.
    """
    units: list[tuple[UnitSpec, str]] = config["units"]
    per_unit: int = config["workers_per_unit"]
    rank = ray.train.get_context().get_world_rank()
    index, local_rank = divmod(rank, per_unit)
    groups = _unit_process_groups(len(units), per_unit)  # every rank creates every group, in the same order
    spec, folder = units[index]
    parallel = DataParallel(local_rank, per_unit, groups[index] if groups else None)
    storage, fit_id, queue = Storage(config["storage"]), config["fit_id"], config["progress"].queue
    lead = local_rank == 0
    saved = stored_by_fit(storage, folder, fit_id)
    if saved is not None:
        if lead:
            queue.put(UnitEvent(spec.name, "done", spec.train.epochs, metrics=_unit_metrics(saved)))
        return
    node = ray.get_runtime_context().get_node_id()
    while True:
        attempt = record_attempt(storage, folder, fit_id, rank, node=node)
        if attempt > 1 and lead:
            queue.put(UnitEvent(spec.name, "retry", spec.train.epochs, attempt=attempt,
                                max_failures=config["max_failures"]))
        try:
            metrics = _train_unit(spec, folder, config, parallel, queue if lead else None, attempt, node)
        except Exception as error:
            if per_unit > 1:
                raise
            traceback.print_exc()  # into the worker's log file of the Ray session; the coordinator gets one line
            if attempt <= config["max_failures"]:
                continue
            queue.put(UnitEvent(spec.name, "failed", spec.train.epochs, attempt=attempt,
                                error=f"{type(error).__name__}: {error}"))
            return
        if lead:
            queue.put(UnitEvent(spec.name, "done", spec.train.epochs, attempt=attempt, metrics=metrics))
        return


def _train_unit(spec: UnitSpec, folder: str, config: dict, parallel: DataParallel, queue: Any, attempt: int,
                node: str) -> dict[str, Any]:
    """Targets, training, prediction; the lead worker stores the unit. Returns the unit's metrics."""
    refs = config["refs"]
    data = ray.get(refs["data"])
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()
    train_cfg = replace(spec.train, device=str(device))
    start = time.perf_counter()
    result = train_variant(spec.model, train_cfg, build_targets(spec, data, refs, config["distill"]),
                           stages.validation_set(spec, data), parallel=parallel,
                           on_epoch=_epoch_sender(queue, spec.name, train_cfg.epochs, attempt))
    metrics = {"best_epoch": result.best_epoch, "train_clips_per_s": result.train_clips_per_s,
               "train_time_s": result.train_time_s, "node": node, "attempt": attempt}
    if parallel.rank != 0:
        return metrics
    outputs = distill.predict_all(result, data, str(device))
    extra = {"node": node, "node_resources": _node_resources(config["node_resource_prefix"]),
             "wall_time_s": time.perf_counter() - start, "attempt": attempt, "fit_id": config["fit_id"]}
    write_unit(Storage(config["storage"]), folder, result, outputs, extra)
    return metrics


def _unit_process_groups(n_units: int, per_unit: int) -> list[Any]:
    """One torch.distributed group per unit of several workers (ranks [i*w, (i+1)*w)); none for one worker each."""
    if per_unit == 1:
        return []
    return [torch.distributed.new_group(list(range(i * per_unit, (i + 1) * per_unit))) for i in range(n_units)]


def _unit_metrics(summary: dict) -> dict[str, Any]:
    """The metrics a unit's `done` event carries, from its stored summary."""
    keys = ("best_epoch", "train_clips_per_s", "train_time_s", "node", "attempt")
    return {k: summary[k] for k in keys if k in summary}


def _epoch_sender(queue: Any, unit: str, epochs: int, attempt: int) -> Any:
    """The `on_epoch` callback of a unit's lead worker: each epoch's log to the coordinator (None elsewhere)."""
    if queue is None:
        return None

    def send(log: EpochLog) -> None:
        queue.put(UnitEvent(unit, "epoch", epochs, log, attempt))
    return send


@ray.remote(num_cpus=0)
def fit_round(units: list[tuple[UnitSpec, str]], refs: dict[str, Any], settings: dict[str, Any]) -> None:
    """Build and fit the round's one TorchTrainer: `placement.workers` workers for each of `units`
    ((spec, storage folder) pairs). The units' outcomes reach the coordinator as `done` / `failed` events;
    this raises only when the worker group failed beyond Ray Train's retries."""
    placement: Placement = settings["placement"]
    resources = {"CPU": placement.cpus_per_worker} if placement.cpus_per_worker else {}
    if placement.use_gpu:
        resources["GPU"] = placement.gpus_per_worker
    trainer = TorchTrainer(
        train_round_per_worker,
        train_loop_config={"units": units, "workers_per_unit": placement.workers, "refs": refs,
                           "distill": settings["distill"], "threads": placement.threads,
                           "progress": settings["progress"], "storage": settings["storage"],
                           "fit_id": settings["fit_id"], "max_failures": settings["max_failures"],
                           "node_resource_prefix": settings.get("node_resource_prefix", "")},
        scaling_config=ScalingConfig(num_workers=placement.workers * len(units), use_gpu=placement.use_gpu,
                                     resources_per_worker=resources or None),
        run_config=RunConfig(name=settings["run_name"], storage_path=settings["ray_storage"],
                             failure_config=FailureConfig(max_failures=settings["max_failures"]),
                             logging_config=ray.LoggingConfig(log_level=TRAIN_CONSOLE_LOG_LEVEL)),
    )
    trainer.fit()


def _node_resources(prefix: str) -> list[str]:
    """Custom resources of the node this runs on whose names start with `prefix` (for placement reports)."""
    if not prefix:
        return []
    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == node_id:
            return sorted(k for k in node.get("Resources", {}) if k.startswith(prefix))
    return []


def plan_placement(n_concurrent: int, workers_per_unit: int, use_gpu: str, cpus_per_unit: float,
                   units_per_gpu: int = 0) -> Placement:
    """`place_units` on the Ray cluster this process is connected to."""
    resources = ray.cluster_resources()
    total_cpus = resources.get("CPU", 1)
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=total_cpus)
    shape = ClusterShape(total_cpus, resources.get("GPU", 0), largest)
    return place_units(shape, n_concurrent, workers_per_unit, use_gpu, cpus_per_unit, units_per_gpu)


def place_units(shape: ClusterShape, n_concurrent: int, workers_per_unit: int, use_gpu: str, cpus_per_unit: float,
                units_per_gpu: int = 0) -> Placement:
    """Resources of each unit's workers when `n_concurrent` units train at once.

    CPUs: `cpus_per_unit`, or the cluster's CPUs shared evenly, per worker at most one node's; each worker runs
    as many torch threads as whole CPUs it holds (at least one). GPUs (where the cluster has them, or
    `use_gpu: yes`): one per worker while the workers do not outnumber them; otherwise `units_per_gpu`
    workers per GPU, or (0) the fewest per GPU that lets all of them run at once. A GPU worker asks for
    `cpus_per_unit` too when it is set, else Ray Train's default (one CPU), which any GPU node can give.
    """
    gpu = use_gpu == "yes" or (use_gpu == "auto" and shape.gpus > 0)
    if gpu:
        cpus = cpus_per_unit / workers_per_unit
        gpus = gpu_share(shape.gpus, n_concurrent * workers_per_unit, units_per_gpu)
        return Placement(workers_per_unit, True, cpus, max(1, int(cpus)), gpus)
    share = cpus_per_unit or shape.cpus / max(1, n_concurrent)
    per_worker = min(share / workers_per_unit, shape.largest_node_cpus)  # a worker must fit on one node
    # Cut to 1/100 CPU, never rounded up: 3 units at 0.67 would not fit in 2 CPUs at once.
    per_worker = float(int(per_worker)) if per_worker >= 1 else max(math.floor(per_worker * 100 + 1e-9) / 100, 0.05)
    return Placement(workers_per_unit, False, per_worker, max(1, int(per_worker)))


def units_at_once(placement: Placement, cpus: float, gpus: float) -> int:
    """How many units' worker groups a cluster of `cpus` and `gpus` runs at once with `placement` (at least 1).

    A round's TorchTrainer needs all its workers at once: a round of more units than this is split into
    trainers of this many units each, which Ray then runs as resources free up.
    """
    cpus_per_unit = placement.workers * (placement.cpus_per_worker or 1.0)  # 0: Ray Train's default, one CPU
    n = int(cpus / cpus_per_unit + 1e-9)
    if placement.use_gpu:
        n = min(n, int(gpus / (placement.workers * placement.gpus_per_worker) + 1e-9))
    return max(1, n)


def gpu_share(gpus: float, workers: int, units_per_gpu: int = 0) -> float:
    """The GPU fraction of each of `workers` workers: whole GPUs while they suffice, else k workers per GPU.

    A fractional request must fit in one GPU, so the share is 1/k (cut to Ray's 1e-4 precision, so that k of
    them fit), k = `units_per_gpu`, or the smallest k with k x GPUs >= workers.
    """
    if units_per_gpu:
        per_gpu = units_per_gpu
    elif gpus < 1 or workers <= gpus:
        return 1.0
    else:
        per_gpu = math.ceil(workers / int(gpus))
    return math.floor(1e4 / per_gpu) / 1e4 if per_gpu > 1 else 1.0
