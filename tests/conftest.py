"""Shared fixtures: the smoke preset of the synthetic set, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the synthetic `smoke` set (seed 0); load it with `kdsed.data.load_dataset`."""
    from kdsed.data.synth import generate

    return generate(tmp_path_factory.mktemp("smoke") / "data", "smoke", 0, progress=False)


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """A `smoke` sweep killed in the middle of pass 2 and resumed: (its folder, state before the kill, final state).

    The folder holds `sweep.yaml`, `storage/`, the MLflow store `mlflow.db` (+ `mlartifacts/`) and `work/`.
    Shared by the sweep, report, browser and fault tests: the most expensive fixture of the suite (~1.5 min).
    While iterating on those tests, `KDSED_REUSE_SWEEP=<that folder from an earlier session>` skips the sweep.
    """
    import json
    import os

    from support.sweep_runs import killed_and_resumed_sweep, read_state

    reuse = os.environ.get("KDSED_REUSE_SWEEP")
    if reuse:
        folder = Path(reuse)
        return folder, json.loads((folder / "state_at_kill.json").read_text()), read_state(folder)
    return killed_and_resumed_sweep(tmp_path_factory.mktemp("sweep"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that reads the session's whole sweep is `slow`, marked or not (the fast lane skips them)."""
    for item in items:
        if "finished_sweep" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
