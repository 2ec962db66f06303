"""Ray Train across two real Ray nodes on this machine (the `multinode_cluster` fixture).

Tests added to this module share the module-scoped cluster (started once, ~20 s).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from support.ray_cluster import HEAD_RESOURCE, WORKER_RESOURCE, LocalCluster, connected
from support.ray_cluster import multinode_cluster  # noqa: F401  (the fixture)

ray = pytest.importorskip("ray")

# Ray pickles functions of importable modules by reference; the Ray workers of the cluster
# cannot import this test module, so ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _report_node(config: dict) -> None:
    """Train loop: one all-reduce over the worker group, then report this node with a checkpoint."""
    import torch
    import torch.distributed as dist
    from ray import train

    node_id = ray.get_runtime_context().get_node_id()
    total = torch.full((1,), float(config["value"]))
    dist.all_reduce(total)
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        Path(checkpoint_dir, "node_id.txt").write_text(node_id)
        # Train V2 fills Result.metrics only from a report that carries a checkpoint.
        train.report({"node_id": node_id, "total": float(total.item())},
                     checkpoint=train.Checkpoint.from_directory(checkpoint_dir))


@ray.remote(num_cpus=0)
def _fit_pinned(node_resource: str, storage_path: str, name: str, value: float) -> dict:
    """Fit a one-worker TorchTrainer whose worker must run on the node holding `node_resource`."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _report_node,
        train_loop_config={"value": value},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=False,
                                     resources_per_worker={"CPU": 1, node_resource: 0.01}),
        run_config=RunConfig(name=name, storage_path=storage_path),
    )
    result = trainer.fit()
    return {"metrics": dict(result.metrics), "checkpoint": result.checkpoint.path,
            "error": None if result.error is None else repr(result.error)}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_trainers_run_on_two_nodes(multinode_cluster: LocalCluster, tmp_path: Path) -> None:
    started = time.monotonic()
    ray_address_before = os.environ.get("RAY_ADDRESS")
    storage = tmp_path / "train_storage"
    with connected(multinode_cluster, logging_level="ERROR"):
        alive = [node for node in ray.nodes() if node["Alive"]]
        assert len(alive) == 2
        by_resource = {resource: node["NodeID"] for node in alive for resource in node["Resources"]
                       if resource in (HEAD_RESOURCE, WORKER_RESOURCE)}
        assert by_resource == multinode_cluster.node_ids
        assert all(node["Resources"]["CPU"] == 1.0 for node in alive)

        pending = {resource: _fit_pinned.remote(resource, str(storage), f"pinned_{resource}", value)
                   for resource, value in ((HEAD_RESOURCE, 3.0), (WORKER_RESOURCE, 5.0))}
        results = dict(zip(pending, ray.get(list(pending.values()), timeout=240)))
    fit_s = time.monotonic() - started

    for resource, value in ((HEAD_RESOURCE, 3.0), (WORKER_RESOURCE, 5.0)):
        result = results[resource]
        assert result["error"] is None
        assert result["metrics"]["node_id"] == multinode_cluster.node_ids[resource]
        assert result["metrics"]["total"] == value  # all-reduce over a group of one
        checkpoint = Path(result["checkpoint"])
        assert checkpoint.is_relative_to(storage / f"pinned_{resource}")
        assert (checkpoint / "node_id.txt").read_text() == multinode_cluster.node_ids[resource]
    ran_on = {results[resource]["metrics"]["node_id"] for resource in results}
    assert len(ran_on) == 2
    assert os.environ.get("RAY_ADDRESS") == ray_address_before  # nothing leaked
    print(f"cluster start {multinode_cluster.startup_s:.1f} s, two trainers {fit_s:.1f} s")


@pytest.mark.slow
def test_smoke_sweep_runs_variants_on_both_nodes(multinode_cluster: LocalCluster, tmp_path,  # noqa: F811
                                                 smoke_workdir: Path) -> None:
    """`python -m kdsed.sweep --address` against the two-node cluster: units land on both nodes."""
    import json
    import subprocess

    import yaml

    repo = Path(__file__).resolve().parents[2]
    cfg = yaml.safe_load((repo / "sweeps" / "smoke.yaml").read_text())
    cfg["data"]["workdir"] = str(smoke_workdir)  # the session's prepared smoke set and feature cache
    cfg["ray"] = {**cfg.get("ray", {}), "node_resource_prefix": "node_"}
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "kdsed.sweep", "--config", str(config), "--address", multinode_cluster.address,
         "--storage", str(tmp_path / "storage"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"],
        env=multinode_cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    units = sorted((tmp_path / "storage" / "sweeps").glob("*/units/*/summary.json"))
    placed = {p.parent.name: json.loads(p.read_text())["node_resources"] for p in units}
    assert set(placed) == {"baseline", "topline__deep", "topline__shallow", "tagging", "baseline-2stage", "pass-1__deep",
                           "pass-2__deep-none", "pass-2__shallow-median"}
    # Stage 0 (four units, half a CPU each) spans both one-CPU nodes; after it, two units at a time, one CPU each:
    # each concurrent pair is split across the nodes.
    stage0 = ("baseline", "topline__deep", "topline__shallow", "tagging")
    assert {tuple(placed[u]) for u in stage0} == {(HEAD_RESOURCE,), (WORKER_RESOURCE,)}
    assert {tuple(placed["baseline-2stage"]), tuple(placed["pass-1__deep"])} == {(HEAD_RESOURCE,), (WORKER_RESOURCE,)}
    assert {tuple(placed["pass-2__deep-none"]), tuple(placed["pass-2__shallow-median"])} == \
        {(HEAD_RESOURCE,), (WORKER_RESOURCE,)}
