"""Shared fixtures: the smoke preset of the synthetic set, generated once per test session, and the session's sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

SWEEP_FIXTURES = ("interrupted_sweep", "finished_sweep")  # a test that reads one of them is `slow`


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the synthetic `smoke` set (seed 0); load it with `kdsed.data.load_dataset`."""
    from kdsed.data.synth import generate

    return generate(tmp_path_factory.mktemp("smoke") / "data", "smoke", 0, progress=False)


@pytest.fixture(scope="session")
def smoke_workdir(smoke_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `data.workdir` holding the smoke set and its feature cache, as a sweep of sweeps/smoke.yaml leaves it.

    Prepared once; the sweeps of the session that point at it only read it. (A sweep preparing its own data,
    concurrently with another, is tests/sweep/test_faults.py.)
    """
    from dataclasses import replace

    from kdsed.config import SweepConfig, load_yaml
    from kdsed.prepare import prepare_data
    from support.sweep_runs import REPO

    workdir = tmp_path_factory.mktemp("smoke-work")
    cfg = load_yaml(SweepConfig, REPO / "sweeps" / "smoke.yaml")
    data = replace(cfg.data, workdir=str(workdir))
    (workdir / "data").mkdir()
    (workdir / "data" / f"synth-{data.synth_preset}-seed{data.synth_seed}").symlink_to(smoke_dataset)
    prepare_data(data, cfg.features, progress=False)  # fills workdir/features
    return workdir


@pytest.fixture(scope="session")
def interrupted_sweep(smoke_workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A `smoke` sweep stopped by SIGINT, SIGTERM and SIGKILL (mid-pass-2) and resumed to the end (~3 min).

    `support.sweep_runs.interrupted_sweep` says when each signal is sent; the dict it returns, plus "folder":
    `sweep.yaml`, `storage/`, the MLflow store `mlflow.db` (+ `mlartifacts/`), `stdout.txt` and `stderr.txt` of all
    four runs. The most expensive fixture of the suite, shared by the interrupt, sweep, report, stage, browser and
    fault tests. While iterating on those, `KDSED_REUSE_SWEEP=<that folder from an earlier session>` skips the sweep.
    """
    import json
    import os

    from support.sweep_runs import LIFECYCLE_FILE, interrupted_sweep

    reuse = os.environ.get("KDSED_REUSE_SWEEP")
    if reuse:
        folder = Path(reuse)
        return {**json.loads((folder / LIFECYCLE_FILE).read_text()), "folder": folder}
    folder = tmp_path_factory.mktemp("sweep")
    return {**interrupted_sweep(folder, smoke_workdir), "folder": folder}


@pytest.fixture(scope="session")
def finished_sweep(interrupted_sweep: dict) -> tuple[Path, dict, dict]:
    """The session's sweep as (its folder, its state when SIGKILLed in the middle of pass 2, its final state)."""
    return interrupted_sweep["folder"], interrupted_sweep["killed"], interrupted_sweep["final"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that reads the session's whole sweep is `slow`, marked or not (the fast lane skips them)."""
    for item in items:
        if set(SWEEP_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
