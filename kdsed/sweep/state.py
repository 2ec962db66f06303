"""What a sweep has finished, saved after every unit so `--resume` can skip it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from kdsed.sweep.storage import Storage

STATE_FILE = "state.json"


@dataclass
class UnitRecord:
    """A trained unit (stage or variant): where its checkpoint and outputs are."""

    checkpoint: str
    node: str = ""
    best_epoch: int = 0
    train_clips_per_s: float = 0.0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0


@dataclass
class SweepState:
    """Progress of one sweep: trained units, logged MLflow runs, finished stages."""

    sweep_id: str
    config_digest: str
    passes: int
    parent_run_id: str | None = None
    stage_run_ids: dict[str, str] = field(default_factory=dict)
    units: dict[str, UnitRecord] = field(default_factory=dict)
    stages_done: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @property
    def folder(self) -> str:
        return f"sweeps/{self.sweep_id}"

    def save(self, storage: Storage) -> None:
        storage.write_bytes(f"{self.folder}/{STATE_FILE}", json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, storage: Storage, sweep_id: str) -> "SweepState":
        raw = json.loads(storage.read_bytes(f"sweeps/{sweep_id}/{STATE_FILE}"))
        raw["units"] = {k: UnitRecord(**v) for k, v in raw.get("units", {}).items()}
        return cls(**raw)

    @classmethod
    def latest(cls, storage: Storage) -> "SweepState | None":
        """The most recently created sweep in `storage`, if any."""
        states = [cls.load(storage, s) for s in storage.list_dirs("sweeps")
                  if storage.exists(f"sweeps/{s}/{STATE_FILE}")]
        return max(states, key=lambda s: s.created) if states else None
