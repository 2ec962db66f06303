"""Where a sweep's wall time goes, and what a serial loop over the same units costs.

    python benchmarks/bench_sweep.py [--config sweeps/laptop-fast.yaml] [--passes 4] [--skip-serial]

Runs `python -m kdsed.sweep` (Ray Train + Ray Tune + MLflow) and `python -m kdsed.experiment`
(the same stages and variants, one after another in one process, no Ray, no MLflow) on the
same config, each in a fresh folder sharing one synthetic data set and feature cache, and
prints the split: data, Ray start-up, training phases (wall) against the units' own training
compute, post-processing search, MLflow logging. Measures; never asserts times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from kdsed.constants import DEFAULT_SWEEP_CONFIG


def run(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=open(cwd / "stderr.txt", "w"))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_SWEEP_CONFIG)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--skip-serial", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kdsed-bench-"))
    cfg = yaml.safe_load(args.config.read_text())
    cfg.setdefault("data", {})["workdir"] = str(work / "shared")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    for name in ("sweep", "serial"):
        (work / name).mkdir()
    # Data and features first, so neither run pays for them.
    run([sys.executable, "-c", "import sys; from kdsed.config import load_yaml, SweepConfig; "
         "from kdsed.prepare import prepare_data; c = load_yaml(SweepConfig, sys.argv[1]); "
         "prepare_data(c.data, c.features)", str(config)], work)
    sweep_s = run([sys.executable, "-m", "kdsed.sweep", "--config", str(config), "--passes", str(args.passes)],
                  work / "sweep")
    state = json.loads(next((work / "sweep" / "kdsed_runs" / "storage" / "sweeps").glob("*/state.json")).read_text())
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work}/sweep/kdsed_runs/mlflow.db")
    metrics = client.get_run(state["parent_run_id"]).data.metrics
    unit_compute = sum(u["train_time_s"] for u in state["units"].values())
    rows = [
        ("sweep, total wall", sweep_s),
        ("  data + features (cached)", metrics.get("time_data_s", 0)),
        ("  Ray start-up", metrics.get("time_ray_start_s", 0)),
        ("  training phases (wall, incl. trainer start-up and inference)", metrics.get("time_training_s", 0)),
        ("    units' own training loops (sum over units)", unit_compute),
        ("  post-processing search (Ray Tune)", metrics.get("time_tuning_s", 0)),
        ("  MLflow logging and registry", metrics.get("time_logging_s", 0)),
    ]
    if not args.skip_serial:
        rows.append(("serial loop, same stages (`kdsed.experiment`)", run(
            [sys.executable, "-m", "kdsed.experiment", "--config", str(config), "--passes", str(args.passes),
             "--out", str(work / "serial" / "out")], work / "serial")))
    print(f"config {args.config}, {args.passes} passes, {len(state['units'])} units; work dir {work}\n")
    print("| part | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
