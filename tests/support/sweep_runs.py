"""Helpers for tests that run whole sweeps in subprocesses (shared by several test modules)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from kdsed import schema

REPO = Path(__file__).resolve().parents[2]


def sweep_config(tmp: Path) -> Path:
    cfg = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    # One unit at a time, so the sweep can be killed between the two variants of pass 2.
    cfg["ray"] = {**cfg.get("ray", {}), "cpus_per_variant": float(os.cpu_count() or 1)}
    cfg["tracking"] = {"storage": str(tmp / "storage"), "tracking_uri": store_uri(tmp)}
    cfg["data"] = {**cfg["data"], "workdir": str(tmp / "work")}
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def store_uri(tmp: Path) -> str:
    """The tracking URI of the MLflow store of the sweeps under `tmp` (`sweep_config`)."""
    return schema.sqlite_uri(tmp / "mlflow.db")


def sweep_folder(tmp: Path, sweep_id: str) -> Path:
    """A sweep's folder in the storage under `tmp`."""
    return tmp / "storage" / schema.sweep_folder(sweep_id)


def read_state(tmp: Path) -> dict | None:
    sweeps = tmp / "storage" / schema.SWEEPS
    states = sorted(sweeps.glob(f"*/{schema.STATE_FILE}")) if sweeps.is_dir() else []
    return json.loads(states[0].read_text()) if states else None


def read_states(tmp: Path) -> dict[str, dict]:
    """Every sweep's state in the storage under `tmp`, by sweep id."""
    sweeps = tmp / "storage" / schema.SWEEPS
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweeps.glob(f"*/{schema.STATE_FILE}"))}


def start_sweep_cli(config: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    """`python -m kdsed.sweep --config CONFIG` in its own session, its output appended to cwd/stdout.txt, stderr.txt."""
    return subprocess.Popen([sys.executable, "-m", "kdsed.sweep", "--config", str(config), *extra], cwd=cwd,
                            stdout=open(cwd / "stdout.txt", "a"), stderr=open(cwd / "stderr.txt", "a"),
                            start_new_session=True)


def wait_sweep(proc: subprocess.Popen, cwd: Path, *, kill_when=None, timeout_s: float = 600) -> int:
    """The sweep's exit code; -9 if `kill_when()` became true first (then the sweep was killed)."""
    start = time.time()
    while proc.poll() is None:
        if kill_when is not None and kill_when():
            os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and its local Ray die together
            proc.wait()
            return -9
        if time.time() - start > timeout_s:
            os.killpg(proc.pid, signal.SIGKILL)
            raise TimeoutError(f"sweep did not finish in {timeout_s} s; see {cwd}/stderr.txt")
        time.sleep(0.5)
    return proc.returncode


def run_sweep_cli(config: Path, cwd: Path, *extra: str, kill_when=None, timeout_s: float = 600) -> int:
    return wait_sweep(start_sweep_cli(config, cwd, *extra), cwd, kill_when=kill_when, timeout_s=timeout_s)


def killed_and_resumed_sweep(tmp: Path) -> tuple[Path, dict, dict]:
    """A smoke sweep killed mid-pass-2 and resumed: (tmp dir, state before kill, final state)."""
    config = sweep_config(tmp)

    def one_pass2_unit_done() -> bool:
        state = read_state(tmp)
        return bool(state) and sum(u.startswith("pass-2/") for u in state["units"]) == 1

    code = run_sweep_cli(config, tmp, kill_when=one_pass2_unit_done)
    assert code == -9, f"sweep ended ({code}) before it could be killed; see {tmp}/stderr.txt"
    killed = read_state(tmp)
    (tmp / "state_at_kill.json").write_text(json.dumps(killed))
    code = run_sweep_cli(config, tmp, "--resume")
    assert code == 0, (tmp / "stderr.txt").read_text()[-3000:]
    return tmp, killed, read_state(tmp)
