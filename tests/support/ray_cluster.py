"""A real two-node Ray cluster on this machine for tests: `ray start --head`, then `--address`.

    with local_cluster() as cluster:                  # or the `multinode_cluster` fixture
        with connected(cluster):                      # ray.init in this process
            ...
        subprocess.run([sys.executable, "-m", "kdsed.sweep", "--address", cluster.address],
                       env=cluster.env)               # a driver in another process

Each node is a `ray start --block` child process, so stopping the cluster signals only
those two processes (SIGTERM: Ray stops the node's GCS, raylet, agents and workers). Nothing
here runs `ray stop`, which would kill every Ray instance on the machine (other test runs,
another engineer's `ray.init()`). If the test process dies, even by SIGKILL, the kernel
sends the nodes SIGTERM (PR_SET_PDEATHSIG; set only when starting from the main thread,
since it fires when the starting *thread* exits).

Isolation from other Ray instances on the same machine:

- one short temporary directory per cluster (Ray's Unix socket paths must stay under ~107
  bytes), one sub-directory per node; the address file `ray_current_cluster` is written
  there, not to `/tmp/ray`, so a bare `ray.init()` elsewhere never picks this cluster;
- free ports for the GCS, the dashboard and the dashboard agents (and the Ray Client server
  when `ray[client]` is installed): the fixed defaults 8265, 52365 and 10001 would collide;
- its own token: Ray 2.60 turns token authentication on for `ray start --head` when
  `~/.ray/auth_token` exists, and a joining node then needs `RAY_AUTH_MODE=token`. The
  cluster gets a fresh token file in its directory (`RAY_AUTH_TOKEN_PATH`), neither reads
  nor writes `~/.ray`, and rejects drivers without it, including `ray.init("auto")`
  elsewhere that happens to find this cluster's GCS;
- `RAY_ADDRESS` is removed from the cluster's environment and never set in this process.

`ray start` rewrites `--node-ip-address=127.0.0.1` to the host's routable address
(`ray._private.services.resolve_ip_for_localhost`), so both nodes register under it (e.g.
192.0.2.2); the traffic still never leaves this machine.

Every node carries a custom resource naming it (`node_head`, `node_worker`), and
`cluster.node_ids` maps each to the node's id: work that asks for `{"node_worker": 0.01}`
lands on that node, and `ray.get_runtime_context().get_node_id()` reported from inside it
says where it ran. Each node has `cpus_per_node` CPUs (default 1) and no GPU.

Without `ray[default]` (as in this project's venv) there is no dashboard, hence no State
API: Train's PlacementGroupCleaner logs "Failed to query Ray Train Controller actor state",
which is harmless.

Measured on 2 shared cores: head up in 7-9 s, second node 3-7 s, the readiness probe (a
driver that connects and lists the nodes) ~3 s, 13-20 s in all; stopping takes ~3-4 s.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

HEAD_RESOURCE = "node_head"
WORKER_RESOURCE = "node_worker"
_READY_LINE = "Ray runtime started."
_AUTH_ENV_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_PR_SET_PDEATHSIG = 1
# Set to 1 to keep a cluster's directory (logs under */session_latest/logs) after it stops.
KEEP_DIR_ENV = "KDSED_KEEP_RAY_DIR"
# Set to 1 to make the `multinode_cluster` fixture fail instead of skip when Ray cannot start.
REQUIRE_ENV = "KDSED_REQUIRE_MULTINODE"


class RayStartError(RuntimeError):
    """A node's `ray start` exited or did not come up in time, or no driver could connect."""

    def __init__(self, message: str, *, node: str) -> None:
        super().__init__(message)
        self.node = node


@dataclass
class LocalNode:
    """One `ray start --block` process and the Ray node it runs."""

    name: str
    resource: str
    temp_dir: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    startup_s: float = 0.0


@dataclass
class LocalCluster:
    """A running local multi-node cluster; pass `address` to `ray.init` or `--address`."""

    address: str
    temp_dir: Path
    env: dict[str, str] = field(repr=False)
    nodes: list[LocalNode] = field(default_factory=list)
    node_ids: dict[str, str] = field(default_factory=dict)
    startup_s: float = 0.0

    @property
    def auth_env(self) -> dict[str, str]:
        """The variables a driver needs besides the address: token mode and this cluster's token."""
        return {name: self.env[name] for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies (even by SIGKILL); no node outlives it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def ray_client_installed() -> bool:
    from ray._private.utils import get_ray_client_dependency_error

    return get_ray_client_dependency_error() is None


def cluster_env(temp_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for this cluster's nodes and drivers: its own token, no RAY_ADDRESS."""
    env = dict(os.environ if base is None else base)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN_PATH"] = str(temp_dir / "auth_token")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start_node(name: str, resource: str, args: list[str], cluster_dir: Path,
                env: dict[str, str], cpus: int, object_store_bytes: int,
                timeout_s: float) -> LocalNode:
    """Run `ray start --block ARGS` for one node and wait for "Ray runtime started."."""
    node_dir = cluster_dir / name
    node_dir.mkdir()
    log_path = cluster_dir / f"{name}.log"
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *args,
        "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
        f"--resources={json.dumps({resource: 1})}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--object-store-memory={object_store_bytes}",
        f"--temp-dir={node_dir}", "--disable-usage-stats",
    ]
    # A test node needs no graceful drain: it would wait up to 30 s for Train's helper actors.
    node_env = {**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    # PR_SET_PDEATHSIG fires when the forking *thread* exits: only tie the node to the main one.
    in_main_thread = threading.current_thread() is threading.main_thread()
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=node_env,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   preexec_fn=_die_with_parent if in_main_thread else None)
    node = LocalNode(name, resource, node_dir, log_path, process)
    while time.monotonic() - started < timeout_s:
        if _READY_LINE in log_path.read_text(errors="replace"):
            node.startup_s = time.monotonic() - started
            return node
        if process.poll() is not None:
            raise RayStartError(f"`ray start` for the {name} node exited with code "
                                f"{process.returncode}:\n{_log_tail(log_path)}", node=name)
        time.sleep(0.2)
    _stop_node(node)
    raise RayStartError(f"the {name} node was not up after {timeout_s:.0f} s:\n"
                        f"{_log_tail(log_path)}", node=name)


def _stop_node(node: LocalNode, timeout_s: float = 45.0) -> None:
    """SIGTERM the node's `ray start --block` (Ray drains, then stops the node's processes)."""
    if node.process.poll() is not None:
        return
    node.process.terminate()
    try:
        node.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        # Ray starts its processes with PR_SET_PDEATHSIG, so they follow the killed parent.
        node.process.kill()
        node.process.wait(timeout=10)


_PROBE = textwrap.dedent("""
    import json, sys, time
    import ray
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    wanted, deadline = set(sys.argv[2:]), time.monotonic() + 60
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        ids = {r: n["NodeID"] for n in alive for r in n["Resources"] if r in wanted}
        if set(ids) == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print("NODES " + json.dumps(ids))
""")


def _probe_node_ids(address: str, resources: list[str], env: dict[str, str]) -> dict[str, str]:
    """Connect a throw-away driver and map each node's custom resource to its node id."""
    out = subprocess.run([sys.executable, "-c", _PROBE, address, *resources], env=env,
                         capture_output=True, text=True, timeout=120)
    line = next((l for l in out.stdout.splitlines() if l.startswith("NODES ")), None)
    if out.returncode != 0 or line is None:
        raise RayStartError(f"a driver could not connect to {address}:\n{out.stderr[-3000:]}",
                            node="driver")
    ids = json.loads(line[len("NODES "):])
    if set(ids) != set(resources):
        raise RayStartError(f"nodes alive at {address} carry {sorted(ids)}, expected {resources}",
                            node="driver")
    return ids


def start_local_cluster(*, cpus_per_node: int = 1, object_store_bytes: int = 200 * 1024**2,
                        timeout_s: float = 120.0) -> LocalCluster:
    """Start a head node (`node_head`) and a worker node (`node_worker`); stop it when done."""
    import ray  # noqa: F401  (fails here, with ImportError, where Ray is not installed)

    started = time.monotonic()
    cluster_dir = Path(tempfile.mkdtemp(prefix="kdsed-ray-"))
    env = cluster_env(cluster_dir)
    token_path = Path(env["RAY_AUTH_TOKEN_PATH"])
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    port = _free_port()
    head_args = ["--head", f"--port={port}", "--include-dashboard=false",
                 f"--dashboard-port={_free_port()}"]
    if ray_client_installed():
        head_args.append(f"--ray-client-server-port={_free_port()}")
    cluster = LocalCluster(address="", temp_dir=cluster_dir, env=env)
    try:
        head = _start_node("head", HEAD_RESOURCE, head_args, cluster_dir, env,
                           cpus_per_node, object_store_bytes, timeout_s)
        cluster.nodes.append(head)
        # The head writes its canonical address (host IP, not 127.0.0.1) beside its sessions.
        cluster.address = (head.temp_dir / "ray_current_cluster").read_text().strip()
        worker = _start_node("worker", WORKER_RESOURCE, [f"--address={cluster.address}"],
                             cluster_dir, env, cpus_per_node, object_store_bytes, timeout_s)
        cluster.nodes.append(worker)
        cluster.node_ids = _probe_node_ids(cluster.address, [HEAD_RESOURCE, WORKER_RESOURCE], env)
    except BaseException as err:
        stop_local_cluster(cluster, keep_dir=True)
        err.add_note(f"Ray logs kept in {cluster_dir}/*/session_latest/logs")
        raise
    cluster.startup_s = time.monotonic() - started
    return cluster


def stop_local_cluster(cluster: LocalCluster, *, keep_dir: bool = False) -> None:
    """Stop this cluster's nodes (worker first) and remove its directory unless kept."""
    for node in reversed(cluster.nodes):
        _stop_node(node)
    if not keep_dir and os.environ.get(KEEP_DIR_ENV) != "1":
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def local_cluster(**kwargs) -> Iterator[LocalCluster]:
    """`start_local_cluster` as a context manager."""
    cluster = start_local_cluster(**kwargs)
    try:
        yield cluster
    finally:
        stop_local_cluster(cluster)


def _reset_auth_token_state() -> None:
    """Make Ray's core re-read RAY_AUTH_MODE and the token (no-op on Rays without token auth)."""
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state
    except ImportError:
        return
    reset_auth_token_state()


@contextlib.contextmanager
def connected(cluster: LocalCluster, **init_kwargs) -> Iterator[None]:
    """`ray.init(address=cluster.address)` in this process with the cluster's token; undone on exit.

    The token settings live in process-wide state (environment, RayConfig and the token
    cache of Ray's C++ core), so they are set before `ray.init` and restored after
    `ray.shutdown`, the way Ray's own tests do (`ray._private.authentication_test_utils`).
    """
    import ray

    saved = {name: os.environ.get(name) for name in (*_AUTH_ENV_VARS, "RAY_ADDRESS")}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(cluster.auth_env)
    _reset_auth_token_state()
    try:
        ray.init(address=cluster.address, **init_kwargs)
        yield
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _reset_auth_token_state()


@pytest.fixture(scope="module")
def multinode_cluster() -> Iterator[LocalCluster]:
    """A two-node local Ray cluster shared by one module's tests; skips where Ray cannot start."""
    try:
        cluster = start_local_cluster()
    except (ImportError, RayStartError) as err:
        # Only "Ray cannot run here" skips; a head that starts but cannot be joined is a failure.
        joined_failed = isinstance(err, RayStartError) and err.node != "head"
        if joined_failed or os.environ.get(REQUIRE_ENV) == "1":
            raise
        pytest.skip(f"cannot start a local multi-node Ray cluster here: {err}")
    try:
        yield cluster
    finally:
        stop_local_cluster(cluster)
