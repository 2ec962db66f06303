"""The Ray side of training: one TorchTrainer per unit, launched from a Ray task.

Ray Train V2 cannot run inside `tune.Tuner`, so every unit of a pass is a
`TorchTrainer.fit()` inside its own Ray task, and the tasks run concurrently.
Features reach the workers once per sweep through the object store; the
current pseudo-labels once per pass.

A unit's rank-0 worker sends a `UnitEvent` per epoch (and one per retry) to
the coordinator through a `ProgressChannel`: that feeds the console's live
display and the unit's MLflow run while it trains (worker output itself is
not forwarded to the main job unless `--verbose`).

Every worker of every attempt records itself (rank, pid, node) in
`<unit folder>/attempts/` when it starts: that is how a retry by Ray Train
is counted, logged and reported back to the coordinator.
"""

from __future__ import annotations

import math
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import ray
import ray.train
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from kdsed import distill, stages
from kdsed.config import DistillConfig
from kdsed.stages import UnitSpec
from kdsed.sweep.console import UnitEvent
from kdsed.sweep.storage import Storage
from kdsed.sweep.units import record_attempt, write_unit
from kdsed.train import EpochLog, TargetSet, train_variant


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


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: targets, training, prediction; rank 0 stores outputs and reports a checkpoint."""
    import torch

    spec: UnitSpec = config["spec"]
    refs = config["refs"]
    rank = ray.train.get_context().get_world_rank()
    node = ray.get_runtime_context().get_node_id()
    attempt = record_attempt(Storage(config["storage"]), config["folder"], config["fit_id"], rank, node=node)
    progress = config["progress"].queue if rank == 0 and config.get("progress") else None
    if attempt > 1 and progress is not None:
        progress.put(UnitEvent(spec.name, "retry", spec.train.epochs, attempt=attempt,
                               max_failures=config["max_failures"]))
    data = ray.get(refs["data"])
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()
    train_cfg = replace(spec.train, device=str(device))
    start = time.perf_counter()
    result = train_variant(spec.model, train_cfg, build_targets(spec, data, refs, config["distill"]),
                           stages.validation_set(spec, data),
                           on_epoch=_epoch_sender(progress, spec.name, train_cfg.epochs, attempt))
    metrics = {"best_epoch": result.best_epoch, "train_clips_per_s": result.train_clips_per_s,
               "train_time_s": result.train_time_s, "node": node, "attempt": attempt}
    if rank != 0:
        ray.train.report(metrics)
        return
    outputs = distill.predict_all(result, data, str(device))
    extra = {"node": node, "node_resources": _node_resources(config["node_resource_prefix"]),
             "wall_time_s": time.perf_counter() - start, "attempt": attempt}
    write_unit(Storage(config["storage"]), config["folder"], result, outputs, extra)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "unit.txt"), "w") as f:
            f.write(config["folder"])
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))


def _epoch_sender(queue: Any, unit: str, epochs: int, attempt: int) -> Any:
    """The `on_epoch` callback of a rank-0 worker: each epoch's log to the coordinator (None elsewhere)."""
    if queue is None:
        return None

    def send(log: EpochLog) -> None:
        queue.put(UnitEvent(unit, "epoch", epochs, log, attempt))
    return send


@ray.remote(num_cpus=0)
def fit_unit(spec: UnitSpec, refs: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Build and fit one TorchTrainer for `spec`; returns the reported metrics."""
    placement: Placement = settings["placement"]
    resources = {"CPU": placement.cpus_per_worker} if placement.cpus_per_worker else {}
    if placement.use_gpu:
        resources["GPU"] = placement.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec, "refs": refs, "distill": settings["distill"], "threads": placement.threads,
                           "progress": settings.get("progress"),
                           "storage": settings["storage"], "folder": settings["folder"],
                           "fit_id": secrets.token_hex(4), "max_failures": settings["max_failures"],
                           "node_resource_prefix": settings.get("node_resource_prefix", "")},
        scaling_config=ScalingConfig(num_workers=placement.workers, use_gpu=placement.use_gpu,
                                     resources_per_worker=resources or None),
        run_config=RunConfig(name=settings["run_name"], storage_path=settings["ray_storage"],
                             failure_config=FailureConfig(max_failures=settings["max_failures"]),
                             logging_config=ray.LoggingConfig(log_level=TRAIN_CONSOLE_LOG_LEVEL)),
    )
    result = trainer.fit()
    return dict(result.metrics or {})


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
    per_worker = float(int(per_worker)) if per_worker >= 1 else round(max(per_worker, 0.05), 2)
    return Placement(workers_per_unit, False, per_worker, max(1, int(per_worker)))


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
