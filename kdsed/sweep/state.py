"""What a sweep has finished, saved after every unit so `--resume` can skip it.

A sweep is resumed by what defines its results (`kdsed.config.results_config`: data, features,
method, models, training, seeds), never by where it is stored or how it is run: the storage
folder, the tracking URI, the Ray settings and the number of passes may all change between a
run and its resume. More passes continue a finished sweep from its last pass.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdsed import schema
from kdsed.config import ConfigError, SweepConfig, config_digest, results_config, results_digest, short_repr
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
    results: dict[str, Any] = field(default_factory=dict)  # results_config of the sweep (for resume messages)

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

    @property
    def passes_done(self) -> int:
        """The last finished pass (0 before pass 1)."""
        return max((int(s.removeprefix("pass-")) for s in self.stages_done if s.startswith("pass-")), default=0)


@dataclass(frozen=True)
class SweepKey:
    """What `--resume` matches a sweep by: the digest of its results-defining config, and that config."""

    digest: str
    described: dict[str, Any] = field(default_factory=dict)  # results_config, flat
    legacy: str = ""  # the digest of the whole config, as sweeps were keyed before (still accepted)


def sweep_key(cfg: SweepConfig) -> SweepKey:
    """The resume key of `cfg`; a data folder is identified by the bytes of its metadata files."""
    fingerprint = data_fingerprint(cfg.data.root) if cfg.data.root else None
    return SweepKey(results_digest(cfg, data_fingerprint=fingerprint),
                    results_config(cfg, data_fingerprint=fingerprint), config_digest(cfg))


def data_fingerprint(root: str | Path) -> str:
    """sha256 over the names and bytes of every file under `<root>/metadata` (what defines the clips and labels)."""
    folder = Path(root) / "metadata"
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []:
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]


def new_sweep_id() -> str:
    """A sweep id: start time and a random suffix (unique for sweeps started in the same second)."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def open_state(storage: Storage, key: SweepKey | str, passes: int, resume: bool | str) -> SweepState:
    """A new sweep's saved state; or, to resume, the sweep named by `resume` or the latest one of this key.

    A resumed sweep takes `passes` as its new goal: more passes than it finished continue it (a finished
    sweep is reopened); fewer than it finished are refused.
    """
    key = key if isinstance(key, SweepKey) else SweepKey(key)
    if not resume:
        sweep_id = new_sweep_id()
        while storage.exists(schema.sweep_folder(sweep_id)):
            sweep_id = new_sweep_id()
        state = SweepState(sweep_id, key.digest, passes, results=dict(key.described))
        state.save(storage)
        return state
    state = find_resumable(storage, key, passes, resume)
    state.finished = state.finished and passes <= state.passes_done
    state.passes, state.config_digest, state.results = passes, key.digest, dict(key.described)
    state.save(storage)
    return state


def find_resumable(storage: Storage, key: SweepKey, passes: int, resume: bool | str) -> SweepState:
    """The sweep `--resume` continues (nothing is written); raises naming what differs when none fits."""
    if isinstance(resume, str):
        if not storage.exists(schema.state_path(resume)):
            raise FileNotFoundError(f"--resume: no sweep {resume} in {storage.root_uri}")
        state = SweepState.load(storage, resume)
    else:
        states = SweepState.all(storage)
        if not states:
            raise FileNotFoundError(f"--resume: no sweep to resume in {storage.root_uri}")
        same = [s for s in states if _matches(s, key)]
        # The latest unfinished sweep of this config; else its latest finished one (more passes extend it).
        state = ([s for s in same if not s.finished] or same or states)[-1]
    if not _matches(state, key):
        raise ConfigError(f"--resume: sweep {state.sweep_id} {_difference(state, key)}; "
                          "resume with the same values, or leave out --resume to start a new sweep (the storage, "
                          "tracking URI, Ray settings and --passes may change)")
    if passes < state.passes_done:
        raise ConfigError(f"distill.passes (--passes) {passes}: sweep {state.sweep_id} has finished "
                          f"{state.passes_done} passes; resume with --passes {state.passes_done} or more "
                          f"(`python -m kdsed.registry pull --alias pass-{passes}` gives pass {passes}'s winners)")
    return state


def _matches(state: SweepState, key: SweepKey) -> bool:
    return state.config_digest == key.digest or bool(key.legacy) and state.config_digest == key.legacy


def _difference(state: SweepState, key: SweepKey) -> str:
    """`was started with a=1, now a=2` over the results-defining keys (or the digests, for older sweeps)."""
    if not state.results or not key.described:
        return (f"was started with another configuration (digest {state.config_digest}, now {key.digest}) "
                "of what defines its results")
    keys = sorted(k for k in {*state.results, *key.described} if state.results.get(k) != key.described.get(k))
    then = ", ".join(f"{k}={short_repr(state.results.get(k))}" for k in keys[:4])
    now = ", ".join(f"{k}={short_repr(key.described.get(k))}" for k in keys[:4])
    more = f" (and {len(keys) - 4} more)" if len(keys) > 4 else ""
    return f"was started with {then}{more}, now {now}: these define its results"
