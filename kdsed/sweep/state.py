"""What a sweep has finished, saved after every unit so `--resume` can skip it."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field

from kdsed import schema
from kdsed.sweep.storage import Storage


@dataclass
class UnitRecord:
    """A trained unit (stage or variant): where its checkpoint and outputs are."""

    checkpoint: str
    node: str = ""
    best_epoch: int = 0
    train_clips_per_s: float = 0.0
    train_time_s: float = 0.0
    wall_time_s: float = 0.0
    attempts: int = 1  # > 1: Ray Train retried the worker group after a failure


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
    finished: bool = False

    @property
    def folder(self) -> str:
        return schema.sweep_folder(self.sweep_id)

    def save(self, storage: Storage) -> None:
        storage.write_bytes(schema.state_path(self.sweep_id), json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, storage: Storage, sweep_id: str) -> "SweepState":
        raw = json.loads(storage.read_bytes(schema.state_path(sweep_id)))
        raw["units"] = {k: UnitRecord(**v) for k, v in raw.get("units", {}).items()}
        return cls(**raw)

    @classmethod
    def all(cls, storage: Storage) -> "list[SweepState]":
        """Every sweep in `storage`, oldest first."""
        states = [cls.load(storage, s) for s in storage.list_dirs(schema.SWEEPS) if storage.exists(schema.state_path(s))]
        return sorted(states, key=lambda s: s.created)

    @classmethod
    def latest(cls, storage: Storage, config_digest: str | None = None) -> "SweepState | None":
        """The sweep to resume: the most recent unfinished one (of this config, if given), else the most recent."""
        states = cls.all(storage)
        candidates = [s for s in states if not s.finished and config_digest in (None, s.config_digest)]
        return (candidates or states or [None])[-1]


def new_sweep_id() -> str:
    """A sweep id: start time and a random suffix (unique for sweeps started in the same second)."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def open_state(storage: Storage, config_digest: str, passes: int, resume: bool | str) -> SweepState:
    """A new sweep's saved state; or, to resume, the sweep named by `resume` or the latest unfinished one of this config."""
    if not resume:
        sweep_id = new_sweep_id()
        while storage.exists(schema.sweep_folder(sweep_id)):
            sweep_id = new_sweep_id()
        state = SweepState(sweep_id, config_digest, passes)
        state.save(storage)
        return state
    if isinstance(resume, str):
        if not storage.exists(schema.state_path(resume)):
            raise FileNotFoundError(f"--resume: no sweep {resume} in {storage.root_uri}")
        state = SweepState.load(storage, resume)
    else:
        state = SweepState.latest(storage, config_digest)
        if state is None:
            raise FileNotFoundError(f"--resume: no sweep to resume in {storage.root_uri}")
    if state.config_digest != config_digest:
        raise ValueError(f"--resume: sweep {state.sweep_id} was started with another configuration "
                         f"(digest {state.config_digest}, now {config_digest}); resume with the same config")
    return state
