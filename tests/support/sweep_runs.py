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


def sweep_config(tmp: Path, workdir: Path | None = None) -> Path:
    """tmp/sweep.yaml: the smoke sweep with its storage and MLflow store in `tmp`, its data in `workdir` (tmp/work)."""
    cfg = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    # One unit at a time, so the sweep can be killed between the two variants of pass 2.
    cfg["ray"] = {**cfg.get("ray", {}), "cpus_per_variant": float(os.cpu_count() or 1)}
    cfg["tracking"] = {"storage": str(tmp / "storage"), "tracking_uri": store_uri(tmp)}
    cfg["data"] = {**cfg["data"], "workdir": str(workdir or tmp / "work")}
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def store_uri(tmp: Path) -> str:
    """The tracking URI of the MLflow store of the sweeps under `tmp` (`sweep_config`)."""
    return schema.sqlite_uri(tmp / "mlflow.db")


def data_root(tmp: Path) -> Path:
    """The synthetic set the sweep of tmp/sweep.yaml (`sweep_config`) trained on."""
    data = yaml.safe_load((tmp / "sweep.yaml").read_text())["data"]
    return Path(data["workdir"]) / "data" / f"synth-{data['synth_preset']}-seed{data['synth_seed']}"


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


def session_processes(sid: int) -> list[str]:
    """Processes (pid and command) still in the session `sid` (a sweep started with start_new_session)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    return [f"{r[0]} {r[2] if len(r) > 2 else ''}" for r in rows if len(r) >= 2 and r[1] == str(sid)]


def no_processes_left(sid: int, grace_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + grace_s
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def signal_when(tmp: Path, proc: subprocess.Popen, ready, signum: int, *, to_group: bool) -> dict:
    """Send `signum` once `ready(state, stderr)` holds; how the sweep ended."""
    stderr = tmp / "stderr.txt"
    while proc.poll() is None and not ready(read_state(tmp), stderr.read_text()):
        time.sleep(0.3)
    assert proc.poll() is None, f"the sweep ended ({proc.returncode}) before the signal; see {stderr}"
    mark, sent = stderr.stat().st_size, time.monotonic()
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    code = proc.wait(timeout=120)
    return {"code": code, "seconds": time.monotonic() - sent, "after": stderr.read_text()[mark:],
            "left": no_processes_left(proc.pid), "state": read_state(tmp)}


LIFECYCLE_FILE = "lifecycle.json"  # what `interrupted_sweep` saw, beside the sweep (read back by KDSED_REUSE_SWEEP)


def interrupted_sweep(tmp: Path, workdir: Path | None = None) -> dict:
    """One smoke sweep stopped three ways, each at the earliest point that shows it, and resumed to the end.

    1. Ctrl-C (SIGINT to its process group) once stage 0 (baseline and tagging) is saved;
    2. `--resume`, SIGTERM to the coordinator alone once its Ray is up;
    3. `--resume`, SIGKILL of its process group (coordinator and local Ray) once one unit of pass 2 is saved;
    4. `--resume` to the end.
    Returns {"sigint": ..., "sigterm": ... (each as `signal_when` returns it), "killed": the state at 3, "final": the
    state at the end}, also written to tmp/lifecycle.json.
    """
    config = sweep_config(tmp, workdir)
    out = {"sigint": signal_when(tmp, start_sweep_cli(config, tmp),
                                 lambda state, _: bool(state) and "tagging" in state["stages_done"],
                                 signal.SIGINT, to_group=True)}
    out["sigterm"] = signal_when(tmp, start_sweep_cli(config, tmp, "--resume"),
                                 lambda _, err: err.count("Ray up in") >= 2, signal.SIGTERM, to_group=False)

    def one_pass2_unit_done() -> bool:
        state = read_state(tmp)
        return bool(state) and sum(u.startswith("pass-2/") for u in state["units"]) == 1

    code = run_sweep_cli(config, tmp, "--resume", kill_when=one_pass2_unit_done)
    assert code == -9, f"sweep ended ({code}) before it could be killed; see {tmp}/stderr.txt"
    out["killed"] = read_state(tmp)
    code = run_sweep_cli(config, tmp, "--resume")
    assert code == 0, (tmp / "stderr.txt").read_text()[-3000:]
    out["final"] = read_state(tmp)
    (tmp / LIFECYCLE_FILE).write_text(json.dumps(out))
    return out
