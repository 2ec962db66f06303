"""The Ray side of training: one TorchTrainer per unit, launched from a Ray task.

Ray Train V2 cannot run inside `tune.Tuner`, so every unit of a pass is a
`TorchTrainer.fit()` inside its own Ray task, and the tasks run concurrently.
Features reach the workers once per sweep through the object store; the
current pseudo-labels once per pass.

Every worker of every attempt records itself (rank, pid, node) in
`<unit folder>/attempts/` when it starts: that is how a retry by Ray Train
is counted, logged and reported back to the coordinator.
"""

from __future__ import annotations

import os
import secrets
import sys
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
from kdsed.sweep.storage import Storage
from kdsed.sweep.units import record_attempt, write_unit
from kdsed.train import TargetSet, epoch_printer, train_variant


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
    threads: int


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
    if attempt > 1 and rank == 0:
        print(f"[{spec.name}] RETRY: attempt {attempt} (Ray Train retries a failed worker group up to "
              f"{config['max_failures']} times); training again from scratch, seeded, so with the same result",
              file=sys.stderr, flush=True)
    data = ray.get(refs["data"])
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()
    train_cfg = replace(spec.train, device=str(device))
    start = time.perf_counter()
    result = train_variant(spec.model, train_cfg, build_targets(spec, data, refs, config["distill"]),
                           stages.validation_set(spec, data),
                           on_epoch=epoch_printer(spec.name, train_cfg.epochs))
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


@ray.remote(num_cpus=0)
def fit_unit(spec: UnitSpec, refs: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Build and fit one TorchTrainer for `spec`; returns the reported metrics."""
    placement: Placement = settings["placement"]
    resources = {"CPU": placement.cpus_per_worker} if placement.cpus_per_worker else None
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec, "refs": refs, "distill": settings["distill"], "threads": placement.threads,
                           "storage": settings["storage"], "folder": settings["folder"],
                           "fit_id": secrets.token_hex(4), "max_failures": settings["max_failures"],
                           "node_resource_prefix": settings.get("node_resource_prefix", "")},
        scaling_config=ScalingConfig(num_workers=placement.workers, use_gpu=placement.use_gpu,
                                     resources_per_worker=resources),
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


def plan_placement(n_concurrent: int, workers_per_unit: int, use_gpu: str, cpus_per_unit: float) -> Placement:
    """One GPU per worker where the cluster has GPUs; otherwise the CPUs shared evenly by the units of a pass."""
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    gpu = use_gpu == "yes" or (use_gpu == "auto" and gpus > 0)
    total_cpus = resources.get("CPU", 1)
    largest_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=total_cpus)
    share = cpus_per_unit or total_cpus / max(1, n_concurrent)
    per_worker = min(share / workers_per_unit, largest_node)  # a worker must fit on one node
    per_worker = float(int(per_worker)) if per_worker >= 1 else round(max(per_worker, 0.05), 2)
    return Placement(workers_per_unit, gpu, 0.0 if gpu else per_worker, max(1, int(per_worker)))
