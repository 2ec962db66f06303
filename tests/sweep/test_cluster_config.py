"""cluster.yaml and cluster-local.yaml: valid for Ray's cluster launcher (checked offline) and true to
docs/cluster.md. tests/sweep/test_launcher.py runs cluster-local.yaml for real."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
# What `ray up` runs on a config before it first calls AWS (ray.autoscaler._private.commands.
# _bootstrap_config): merge with the provider's defaults, then the JSON-schema and
# consistency checks. The AWS steps after it (instance-type lookup, IAM, subnets) need AWS.
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
CLUSTER_LOCAL_YAML = ROOT / "cluster-local.yaml"
DOCS = ROOT / "docs" / "cluster.md"
REPO_MOUNT = "/home/ubuntu/kdsed"
# GPU count per instance of the GPU families a user is likely to pick (xlarge sizes).
GPUS_PER_INSTANCE = {"g4dn.xlarge": 1, "g5.xlarge": 1, "g5.2xlarge": 1, "g6.xlarge": 1,
                     "g6e.xlarge": 1, "p3.2xlarge": 1}


def _raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _validated(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def cluster() -> dict:
    return _validated(_raw())


def _mlflow_flags(cluster: dict) -> dict[str, str]:
    """The `--flag value` pairs of the `mlflow server` command the head starts."""
    commands = [c for c in cluster["head_start_ray_commands"] if "mlflow server" in c]
    assert len(commands) == 1, commands
    tokens = shlex.split(commands[0].split("mlflow server", 1)[1].split("'", 1)[0])
    flags, i = {}, 0
    while i < len(tokens) and tokens[i].startswith("--"):
        flags[tokens[i]] = tokens[i + 1]
        i += 2
    return flags


def test_validates_with_rays_own_schema(cluster: dict) -> None:
    assert cluster["cluster_name"] == "kdsed"
    assert cluster["provider"]["type"] == "aws"
    assert cluster["head_node_type"] in cluster["available_node_types"]
    assert cluster["idle_timeout_minutes"] > 0
    # The head is never scaled; each worker type is bounded by the global limit.
    assert cluster["available_node_types"][cluster["head_node_type"]]["max_workers"] == 0


def test_head_runs_mlflow_server_on_the_port_the_docs_name(cluster: dict) -> None:
    flags = _mlflow_flags(cluster)
    port = flags["--port"]
    assert flags["--host"] == "0.0.0.0"
    assert flags["--backend-store-uri"] == "sqlite:////home/ubuntu/mlflow/mlflow.db"
    assert flags["--artifacts-destination"].startswith("s3://")
    assert any("mkdir -p /home/ubuntu/mlflow" in c for c in cluster["head_setup_commands"])
    header = CLUSTER_YAML.read_text()
    docs = DOCS.read_text()
    for text in (header, docs):
        assert f"ray attach cluster.yaml -p {port}" in text
        assert f"--tracking-uri http://localhost:{port}" in text
    # The server must answer before `ray up` reports success.
    assert any(f"127.0.0.1:{port}/health" in c and "timeout" in c
               for c in cluster["head_start_ray_commands"])


def test_head_is_cpu_and_workers_are_gpu_instances(cluster: dict) -> None:
    head_type = cluster["head_node_type"]
    workers = {name: t for name, t in cluster["available_node_types"].items() if name != head_type}
    head = cluster["available_node_types"][head_type]
    assert not re.match(r"(g|p)\d", head["node_config"]["InstanceType"])
    assert head["resources"].get("GPU", 0) == 0
    assert workers
    for name, node_type in workers.items():
        instance = node_type["node_config"]["InstanceType"]
        assert instance in GPUS_PER_INSTANCE, f"{name}: {instance} is not a known GPU type"
        assert node_type["resources"]["GPU"] == GPUS_PER_INSTANCE[instance]
        assert node_type["min_workers"] == 0
        assert 0 < node_type["max_workers"] <= cluster["max_workers"]


def test_setup_installs_kdsed_from_the_mounted_checkout(cluster: dict) -> None:
    assert (ROOT / cluster["file_mounts"][REPO_MOUNT]).resolve() == ROOT
    assert ".gitignore" in cluster["rsync_filter"]  # keeps .venv and data out of the copy
    for key, torch_index in (("head_setup_commands", "whl/cpu"), ("worker_setup_commands", None)):
        commands = cluster[key]  # after prepare_config: setup_commands + the node's own
        kdsed = [i for i, c in enumerate(commands) if f"pip install -q -e {REPO_MOUNT}" in c]
        torch = [i for i, c in enumerate(commands) if "pip install -q torch==" in c]
        assert len(kdsed) == 1 and len(torch) == 1, key
        assert torch[0] < kdsed[0], f"{key}: torch must be installed before kdsed pulls one"
        if torch_index:
            assert torch_index in commands[torch[0]]
        else:
            assert "whl/cpu" not in commands[torch[0]]
    assert any("torch.cuda.is_available()" in c for c in cluster["worker_setup_commands"])


def test_cluster_ray_matches_the_ray_that_launches_it(cluster: dict) -> None:
    pins = {m for c in cluster["setup_commands"] for m in re.findall(r"ray\[default\]==([\w.]+)", c)}
    assert pins == {ray.__version__}
    assert f'pip install "ray[default]=={ray.__version__}" boto3' in CLUSTER_YAML.read_text()


def test_every_placeholder_is_marked_edit() -> None:
    lines = CLUSTER_YAML.read_text().splitlines()
    placeholders = ("YOUR-BUCKET", "ami-0123456789abcdef0", "ami-0fedcba9876543210",
                    "kdsed-head", "kdsed-worker", "region: ", "availability_zone: ")
    for placeholder in placeholders:
        uses = [i for i, line in enumerate(lines)
                if placeholder in line and not line.lstrip().startswith("#")]
        assert uses, placeholder
        for i in uses:
            window = lines[max(0, i - 8): i + 1]
            assert any("# EDIT:" in line for line in window), f"line {i + 1}: {lines[i]}"


def _with(config: dict, path: tuple, value) -> dict:
    broken = copy.deepcopy(config)
    target = broken
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return broken


_DELETE = object()


@pytest.mark.parametrize("path, value, error", [
    (("max_worker",), 6, "Additional properties are not allowed"),            # unknown key (typo)
    (("max_workers",), "six", "is not of type 'integer'"),                    # wrong type
    (("available_node_types", "ray.worker.gpu", "resources"), _DELETE,
     "'resources' is a required property"),
    (("available_node_types", "ray.worker.gpu", "resources", "GPU"), 0.5,
     "is not of type 'integer'"),
    (("head_node_type",), "ray.head.gpu", "must be one of `available_node_types`"),
    (("available_node_types", "ray.worker.gpu", "min_workers"), 7, "smaller than the sum"),
])
def test_validator_rejects_broken_copies(path: tuple, value, error: str) -> None:
    import jsonschema

    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(error)):
        _validated(_with(_raw(), path, value))


@pytest.fixture(scope="module")
def local_cluster() -> dict:
    return _validated(yaml.safe_load(CLUSTER_LOCAL_YAML.read_text()))


def test_local_config_validates_as_rays_local_provider(local_cluster: dict) -> None:
    from ray.autoscaler._private.local.config import LOCAL_CLUSTER_NODE_TYPE

    provider = local_cluster["provider"]
    assert provider["type"] == "local" and provider["head_ip"] and provider["worker_ips"]
    assert local_cluster["head_node_type"] == LOCAL_CLUSTER_NODE_TYPE
    node_type = local_cluster["available_node_types"][LOCAL_CLUSTER_NODE_TYPE]
    # Every listed worker is started and kept; Ray detects each machine's CPUs and GPUs.
    assert node_type["min_workers"] == node_type["max_workers"] == len(provider["worker_ips"])
    assert node_type["resources"] == {}
    assert local_cluster["auth"]["ssh_user"] and local_cluster["auth"]["ssh_private_key"]
    head_start = [c for c in local_cluster["head_start_ray_commands"] if "ray start --head" in c]
    # Autoscaler v2 (ray up's default since Ray 2.50) starts no worker of the local provider.
    assert len(head_start) == 1 and "RAY_enable_autoscaler_v2=0 ray start" in head_start[0]
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start[0]


def test_local_head_runs_mlflow_server_on_loopback(local_cluster: dict) -> None:
    flags = _mlflow_flags(local_cluster)
    assert flags["--host"] == "127.0.0.1"  # reached through SSH; the coordinator runs on the head
    assert flags["--backend-store-uri"] == "sqlite:///$HOME/mlflow/mlflow.db"
    assert flags["--artifacts-destination"] == "$HOME/mlflow/artifacts"
    port = flags["--port"]
    assert "mkdir -p ~/mlflow" in local_cluster["head_setup_commands"]
    assert any(f"127.0.0.1:{port}/health" in c and "timeout" in c for c in local_cluster["head_start_ray_commands"])
    header, docs = CLUSTER_LOCAL_YAML.read_text(), DOCS.read_text()
    for text in (header, docs):
        assert f"ray attach cluster-local.yaml -p {port}" in text
        assert f"--tracking-uri http://localhost:{port}" in text
        assert "kill -- -$(cat ~/mlflow/server.pid)" in text


def test_local_setup_installs_ray_torch_then_kdsed(local_cluster: dict) -> None:
    assert (ROOT / local_cluster["file_mounts"]["~/kdsed"]).resolve() == ROOT
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = local_cluster[key]
        ray_pins = [m for c in commands for m in re.findall(r"ray\[default\]==([\w.]+)", c)]
        torch = [i for i, c in enumerate(commands) if "pip install -q torch==" in c]
        kdsed = [i for i, c in enumerate(commands) if "pip install -q -e ~/kdsed" in c]
        assert ray_pins == [ray.__version__], key
        assert len(torch) == 1 and len(kdsed) == 1 and torch[0] < kdsed[0], key


def test_local_placeholders_are_marked_edit() -> None:
    lines = CLUSTER_LOCAL_YAML.read_text().splitlines()
    for key in ("head_ip: ", "worker_ips: ", "ssh_user: ", "ssh_private_key: ", 'ray[default]=='):
        (i,) = [i for i, line in enumerate(lines) if key in line and not line.lstrip().startswith("#")]
        assert any("# EDIT:" in line for line in lines[max(0, i - 2): i + 1]), f"line {i + 1}: {lines[i]}"
