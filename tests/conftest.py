"""Shared fixtures: the smoke preset of the synthetic set, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the synthetic `smoke` set (seed 0); load it with `kdsed.data.load_dataset`."""
    from kdsed.data.synth import generate

    return generate(tmp_path_factory.mktemp("smoke") / "data", "smoke", 0, progress=False)
