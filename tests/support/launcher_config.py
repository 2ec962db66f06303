"""The test copy of cluster-local.yaml: the same cluster on 127.0.0.1 + 127.0.0.2 of this machine.

Only what one machine and this test environment force is changed; every change is listed:

- names and addresses: a unique `cluster_name`, head 127.0.0.1, one worker 127.0.0.2, this
  user and the throw-away key, the checkout's absolute path in `file_mounts`;
- installation: the node's `~/venv` links to the Python environment running the test
  instead of being created and filled by pip, and `PYTHONPATH=~/kdsed` makes the copy that
  `file_mounts` synced the code that runs (every other setup command runs as written);
- ports: each `--...-port=N` of a `ray start` gets a free port per node (two nodes in one
  network namespace cannot share them), the worker joins the head's port, MLflow's 5000 becomes a free
  port; Ray's dashboard and agent ports, fixed defaults that collide, get free ones too;
- resources: one CPU and 200 MB of object store per node (two 1-CPU machines): a pass's two
  variants then need both nodes. No dashboard (this environment lacks `ray[default]`).
"""

from __future__ import annotations

import copy
import getpass
import re
import secrets
import socket
import sys
from pathlib import Path

import yaml

from support.ray_cluster import ray_client_installed

REPO = Path(__file__).resolve().parents[2]
CLUSTER_LOCAL_YAML = REPO / "cluster-local.yaml"
MLFLOW_PORT = 5000
HEAD_GCS_PORT = 6379
_PORT_FLAG = re.compile(r"(--(?:[a-z-]+-)?port)=(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_start_extra(head: bool, worker_ip: str) -> str:
    extra = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=200000000",
             f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
             "--disable-usage-stats"]
    if not head:
        # Ray would register the worker as 127.0.0.1, like the head (in the test's loopback-only
        # network it finds no route out and falls back to it); the autoscaler then never hears
        # from 127.0.0.2, the node it launched, and restarts it.
        extra.append(f"--node-ip-address={worker_ip}")
    if head:
        extra += ["--include-dashboard=false", f"--dashboard-port={free_port()}"]
        if ray_client_installed():
            extra.append(f"--ray-client-server-port={free_port()}")
    return " ".join(extra)


def _with_free_ports(command: str, head: bool, ports: dict[str, int], worker_ip: str) -> str:
    """A start command with this node's ports: every fixed one replaced, Ray's defaults set."""
    if "ray start" not in command:
        return command.replace(f"127.0.0.1:{MLFLOW_PORT}", f"127.0.0.1:{ports['mlflow']}").replace(
            f"--port {MLFLOW_PORT}", f"--port {ports['mlflow']}")
    command = command.replace(f"$RAY_HEAD_IP:{HEAD_GCS_PORT}", f"$RAY_HEAD_IP:{ports['gcs']}")
    command = _PORT_FLAG.sub(lambda m: f"{m[1]}={ports['gcs'] if m[1] == '--port' else free_port()}", command)
    return f"{command} {_ray_start_extra(head, worker_ip)}"


def _setup_commands(commands: list[str], python_prefix: str) -> list[str]:
    """cluster-local.yaml's setup with the installs replaced by a link to this environment."""
    kept = [c for c in commands if not c.startswith("pip install")]
    kept = [f"test -d ~/venv || ln -s {python_prefix} ~/venv" if c.startswith("test -d ~/venv") else c
            for c in kept]
    return kept + ["grep -qx 'export PYTHONPATH=~/kdsed' ~/.bashrc || echo 'export PYTHONPATH=~/kdsed' >> ~/.bashrc"]


def loopback_config(key: Path, head_ip: str, worker_ip: str) -> tuple[dict, dict[str, int]]:
    """The test copy of cluster-local.yaml and the head's ports (`gcs`, `mlflow`)."""
    config = yaml.safe_load(CLUSTER_LOCAL_YAML.read_text())
    test = copy.deepcopy(config)
    test["cluster_name"] = f"kdsed-test-{secrets.token_hex(3)}"
    test["provider"] = {"type": "local", "head_ip": head_ip, "worker_ips": [worker_ip]}
    test["auth"] = {"ssh_user": getpass.getuser(), "ssh_private_key": str(key)}
    test["file_mounts"] = {remote: str(REPO) for remote in config["file_mounts"]}
    test["setup_commands"] = _setup_commands(config["setup_commands"], sys.prefix)
    ports = {"gcs": free_port(), "mlflow": free_port()}
    test["head_start_ray_commands"] = [_with_free_ports(c, True, ports, worker_ip) for c in config["head_start_ray_commands"]]
    test["worker_start_ray_commands"] = [_with_free_ports(c, False, ports, worker_ip)
                                         for c in config["worker_start_ray_commands"]]
    return test, ports

