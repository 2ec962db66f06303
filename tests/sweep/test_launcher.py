"""`ray up` for real: cluster-local.yaml launched end to end on two pretend machines of this one.

The head is 127.0.0.1, the worker 127.0.0.2: each an SSH server of its own in its own PID
namespace with its own home (tests/support/ssh_nodes.py), both in a network namespace whose
only interface is loopback (tests/support/loopback_net.py; the launcher, `ray exec`, the
MLflow checks and the pull run there too), so nothing of the cluster listens beyond loopback
whatever Ray binds, and Ray's cluster launcher does
what it does on real machines: SSH, rsync of file_mounts, setup commands, `ray start`, the
head's autoscaler starting the worker over SSH, `ray exec`, `ray down`. The config is
cluster-local.yaml with only the changes tests/support/launcher_config.py lists (addresses,
ports, the existing Python environment instead of pip installs). Steps, as docs/cluster.md
tells users: `ray up -y`, wait for the worker, the smoke sweep by `ray exec` logging to the
head's MLflow server over HTTP, checks from outside (units on both nodes, runs and the 10
registered models on the server, `kdsed.registry pull` over HTTP and predictions from the
bundle), MLflow stopped, `ray down -y` and `ray stop` on the worker over SSH (`ray down` of
the local provider stops the head only), no process of the cluster left.

Skips, saying why, where sshd, rsync, root, PID or network namespaces are missing
(tests/install-sshd.sh installs the packages). Prints each step's time; docs/cluster.md quotes them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from getpass import getuser
from pathlib import Path

import pytest
import yaml

from support.launcher_config import loopback_config
from support.loopback_net import LoopbackNetwork, NetworkUnavailable
from support.ssh_nodes import (SshNode, SshUnavailable, client_key, namespace_processes, ssh_command,
                               start_ssh_nodes, stop_ssh_nodes)

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
HEAD_IP, WORKER_IP = "127.0.0.1", "127.0.0.2"
# What docs/cluster.md and cluster-local.yaml tell users to run (the config's path aside).
SWEEP_COMMAND = ("cd ~/kdsed && python -m kdsed.sweep --config sweeps/smoke.yaml --address auto "
                 "--storage {storage} --tracking-uri http://127.0.0.1:{port}")
STOP_MLFLOW = "kill -- -$(cat ~/mlflow/server.pid)"
# `ray down` stops Ray on the head only (the local provider); each worker is stopped over SSH.
STOP_WORKER_RAY = "~/venv/bin/ray stop"
NODE_KINDS = ("import json, ray; ray.init(address='auto', logging_level='ERROR'); "
              "print('NODES', json.dumps({n['NodeID']: 'head' if 'node:__internal_head__' in n['Resources'] "
              "else 'worker' for n in ray.nodes() if n['Alive']}))")


@dataclass
class Cluster:
    """A launched test cluster: its config file, pretend machines and what each step took."""

    root: Path
    config_path: Path
    config: dict
    ports: dict[str, int]
    nodes: dict[str, SshNode]
    net: LoopbackNetwork
    env: dict[str, str] = field(repr=False)
    times_s: dict[str, float] = field(default_factory=dict)
    down: bool = False

    def ray(self, step: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
        """Run the `ray` command line on this cluster's config; output kept in root/<step>.log."""
        started = time.monotonic()
        out = subprocess.run(self.net.command([sys.executable, "-m", "ray.scripts.scripts", *args]), cwd=REPO,
                             env=self.env, capture_output=True, text=True, timeout=timeout_s)
        self.times_s[step] = self.times_s.get(step, 0.0) + time.monotonic() - started
        with open(self.root / f"{step}.log", "a") as log:
            log.write(f"$ ray {' '.join(args)}\n{out.stdout}\n{out.stderr}\nexit {out.returncode}\n")
        return out

    def exec(self, step: str, command: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        return self.ray(step, "exec", str(self.config_path), command, timeout_s=timeout_s)

    def failed(self, step: str) -> str:
        return f"{step} failed; see {self.root}/{step}.log:\n" + (self.root / f"{step}.log").read_text()[-4000:]


def _ssh_control_dir(cluster_name: str) -> Path:
    """Where Ray's SSH command runner keeps its connection sockets for this cluster (fixed under /tmp)."""
    user_hash = hashlib.sha256(getuser().encode()).hexdigest()[:10]
    return Path(f"/tmp/ray_ssh_{user_hash}/{hashlib.sha256(cluster_name.encode()).hexdigest()[:10]}")


def _remove_what_the_test_created(cluster: Cluster) -> None:
    control = _ssh_control_dir(cluster.config["cluster_name"])
    shutil.rmtree(control, ignore_errors=True)
    with __import__("contextlib").suppress(OSError):
        control.parent.rmdir()  # only if no other cluster's sockets are there
    if os.environ.get("KDSED_KEEP_LAUNCHER_DIR") != "1":
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    """Two pretend machines and the test copy of cluster-local.yaml; torn down however the test ends."""
    root = Path(tempfile.mkdtemp(prefix="kdsed-up-"))  # short: Ray's socket paths live under it
    net = None
    try:
        net = LoopbackNetwork.start()
        nodes = start_ssh_nodes(root, [HEAD_IP, WORKER_IP], ["head", "worker"], net)
    except (NetworkUnavailable, SshUnavailable) as err:
        if net is not None:
            net.stop()
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot run `ray up` on loopback SSH nodes here: {err}")
    config, ports = loopback_config(client_key(root), HEAD_IP, WORKER_IP)
    config_path = root / "cluster-local.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    launcher = root / "launcher"  # the machine `ray up` runs on: its state file and config cache
    launcher.mkdir()
    env = {**os.environ, "RAY_TMPDIR": str(launcher), "TMPDIR": str(launcher), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    cluster = Cluster(root, config_path, config, ports, {n.name: n for n in nodes}, net, env)
    try:
        yield cluster
    finally:
        if not cluster.down:
            cluster.exec("cleanup", STOP_MLFLOW, timeout_s=120)
            cluster.ray("cleanup", "down", "-y", str(config_path), timeout_s=300)
        stop_ssh_nodes(nodes)  # kills whatever is left in the nodes' namespaces
        net.stop()
        _remove_what_the_test_created(cluster)


def _node_kinds(cluster: Cluster, step: str) -> dict[str, str]:
    """Each alive Ray node's id -> "head" or "worker", asked from a driver on the head (`ray exec`)."""
    out = cluster.exec(step, f'python -c "{NODE_KINDS}"', timeout_s=180)
    line = next((l for l in out.stdout.splitlines() if l.startswith("NODES ")), None)
    return json.loads(line[len("NODES "):]) if out.returncode == 0 and line else {}


def _wait_for_worker(cluster: Cluster, timeout_s: float = 900) -> dict[str, str]:
    """Poll until the head's autoscaler has set up and started the worker; the node kinds then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kinds = _node_kinds(cluster, "worker joins")
        if sorted(kinds.values()) == ["head", "worker"]:
            return kinds
        time.sleep(5)
    monitor = sorted(cluster.nodes["head"].tmp.glob("ray/session_latest/logs/monitor.*"))
    tails = "\n".join(f"{p.name}:\n{p.read_text(errors='replace')[-3000:]}" for p in monitor)
    pytest.fail(f"the worker did not join within {timeout_s:.0f} s; the head's autoscaler said:\n{tails}")


def _units_by_node(storage: Path, kinds: dict[str, str]) -> dict[str, set[str]]:
    """Unit folder -> the kinds of node its workers started on (every attempt record)."""
    placed: dict[str, set[str]] = {}
    for record in storage.glob("sweeps/*/units/*/attempts/*.json"):
        node = json.loads(record.read_text())["node"]
        placed.setdefault(record.parent.parent.name, set()).add(kinds.get(node, f"unknown node {node}"))
    return placed


def _wait_until_empty(nodes: list[SshNode], timeout_s: float) -> dict[str, list[str]]:
    """The processes (besides sshd) still in each node after `timeout_s`, or none as soon as all are gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = {node.name: namespace_processes(node) for node in nodes}
        if not any(left.values()) or time.monotonic() > deadline:
            return {name: procs for name, procs in left.items() if procs}
        time.sleep(1)


def _check_mlflow_server(net: LoopbackNetwork, uri: str) -> int:
    """The server lists the sweep's finished runs and the 10 registered models; returns the run count."""
    from mlflow import MlflowClient

    from kdsed import schema
    from kdsed.constants import CLASSES
    from kdsed.registry import registered_model_name

    with net.entered():  # the server listens on the head's loopback, inside the test's network
        client = MlflowClient(uri, registry_uri=uri)
        experiment = client.get_experiment_by_name(schema.MLFLOW_EXPERIMENT)
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        models = {m.name for m in client.search_registered_models(max_results=100)}
        champions = [client.get_model_version_by_alias(registered_model_name(c), schema.CHAMPION_ALIAS)
                     for c in CLASSES]
    assert runs and all(run.info.status == "FINISHED" for run in runs)
    assert models == {registered_model_name(c) for c in CLASSES}
    assert all(champion.tags[schema.VERSION_PASS] == "2" for champion in champions)
    return len(runs)


def _check_loopback_only(cluster: Cluster) -> list[tuple[str, int]]:
    """The cluster's servers listen in a network with only loopback: its listeners, checked."""
    assert cluster.net.interfaces() == ["lo"]
    listening = cluster.net.listeners()
    ports = {port for _, port in listening}
    assert {cluster.ports["gcs"], cluster.ports["mlflow"], 22} <= ports, listening  # the cluster is in there
    # Loopback (127/8, ::1, IPv4-mapped 127/8) or every interface (0.0.0.0, ::), which in there is loopback alone.
    assert all(_loopback_or_any(address) for address, _ in listening), listening
    return listening


def _loopback_or_any(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return ip.is_loopback or ip.is_unspecified


def _pull_and_predict(cluster: Cluster, uri: str, storage: Path, sweep_id: str) -> None:
    """`kdsed.registry pull` over HTTP, then the bundle's eval F1 equals the sweep's pass-2 eval F1."""
    from kdsed import schema
    from kdsed.bundle import load_bundle
    from kdsed.constants import CLASSES
    from kdsed.data import load_dataset
    from kdsed.events import read_strong_tsv
    from kdsed.metrics import event_scores

    out = cluster.root / "winners"
    started = time.monotonic()
    subprocess.run(cluster.net.command([sys.executable, "-m", "kdsed.registry", "pull", "--out", str(out),
                                        "--tracking-uri", uri]), check=True, cwd=cluster.root, timeout=600)
    cluster.times_s["registry pull"] = time.monotonic() - started
    assert set(load_bundle(out).classes) == set(CLASSES)
    # The synthetic set the sweep made on the head (its data.workdir is relative to ~/kdsed there).
    data = load_dataset(cluster.nodes["head"].home / "kdsed" / "kdsed_runs" / "data" / "synth-smoke-seed0")
    wavs = [str(c.audio_path) for c in data.subset("eval")]
    subprocess.run([sys.executable, "-m", "kdsed.predict", "--models", str(out), *wavs,
                    "--out", str(cluster.root / "eval.tsv")], check=True, cwd=cluster.root, timeout=600)
    predicted = read_strong_tsv(cluster.root / "eval.tsv")
    reference = data.reference_table("eval")
    scores = event_scores(reference, {f: predicted.get(f, []) for f in reference})
    stage = json.loads((storage / schema.stage_path(sweep_id, "pass-2")).read_text())
    assert scores.to_json()["macro"] == pytest.approx(stage["report"]["eval"]["macro"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_ray_up_sweep_pull_and_down(cluster: Cluster) -> None:
    from kdsed.stores import disable_mlflow_telemetry

    disable_mlflow_telemetry()  # this process talks to the MLflow server over HTTP too
    up = cluster.ray("ray up", "up", "-y", str(cluster.config_path), timeout_s=900)
    assert up.returncode == 0, cluster.failed("ray up")
    # `ray up` returns once the head runs; the head's autoscaler then sets the worker up over SSH.
    started = time.monotonic()
    kinds = _wait_for_worker(cluster)
    cluster.times_s["worker joins"] = time.monotonic() - started
    for name in ("head", "worker"):  # file_mounts and setup ran on both machines
        home = cluster.nodes[name].home
        assert (home / "kdsed" / "kdsed" / "sweep" / "__main__.py").is_file()
        assert (home / "venv").resolve() == Path(sys.prefix).resolve()
    assert (cluster.nodes["head"].home / "mlflow" / "mlflow.db").is_file()

    storage = cluster.root / "shared" / "storage"  # both nodes reach it: this machine's disk (NFS elsewhere)
    uri = f"http://127.0.0.1:{cluster.ports['mlflow']}"
    sweep = cluster.exec("sweep", SWEEP_COMMAND.format(storage=storage, port=cluster.ports["mlflow"]),
                         timeout_s=1800)
    assert sweep.returncode == 0, cluster.failed("sweep")
    (state_file,) = storage.glob("sweeps/*/state.json")
    state = json.loads(state_file.read_text())
    assert state["finished"] and state["stages_done"] == ["baseline", "topline", "tagging", "baseline-2stage", "pass-1",
                                                          "pass-2"]
    placed = _units_by_node(storage, kinds)
    assert set(placed) == {"baseline", "topline__deep", "topline__shallow", "tagging", "baseline-2stage", "pass-1__deep",
                           "pass-2__deep-none", "pass-2__shallow-median"}
    assert set().union(*placed.values()) == {"head", "worker"}, placed

    listening = _check_loopback_only(cluster)
    runs = _check_mlflow_server(cluster.net, uri)
    _pull_and_predict(cluster, uri, storage, state["sweep_id"])

    stop = cluster.exec("stop mlflow", STOP_MLFLOW, timeout_s=120)
    assert stop.returncode == 0, cluster.failed("stop mlflow")
    down = cluster.ray("ray down", "down", "-y", str(cluster.config_path), timeout_s=600)
    cluster.down = True
    assert down.returncode == 0, cluster.failed("ray down")
    started = time.monotonic()
    stop_worker = subprocess.run(ssh_command(cluster.root, WORKER_IP, STOP_WORKER_RAY, cluster.net),
                                 capture_output=True, text=True, timeout=300)
    assert stop_worker.returncode == 0, stop_worker.stderr
    cluster.times_s["ray stop on the worker"] = time.monotonic() - started
    started = time.monotonic()
    left = _wait_until_empty(list(cluster.nodes.values()), timeout_s=120)
    cluster.times_s["all processes gone"] = time.monotonic() - started
    assert not left, f"processes left after `ray down`: {left}"

    where = {unit: "+".join(sorted(kinds_)) for unit, kinds_ in sorted(placed.items())}
    print(f"\nlauncher steps (s): {json.dumps({k: round(v, 1) for k, v in cluster.times_s.items()})}"
          f"\nunits ran on: {json.dumps(where)}\nMLflow runs: {runs}"
          f"\nlistening in the loopback-only network: {len(listening)} sockets on {sorted({a for a, _ in listening})}")
