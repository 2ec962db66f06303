"""A trained unit of a sweep (one model of one stage, `kdsed.stages.UnitSpec`) in the storage.

A unit's folder (`kdsed.schema.unit_folder`) holds `model.pt` (weights only), `outputs.npz` (frame
probabilities on training, validation and eval clips) and `summary.json`
(history, throughput, node). Workers write it; the coordinator and
`--resume` read it. `attempts/` holds one small JSON file per worker start
(rank, pid, node), so retries by Ray Train are counted and can be traced.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdsed import schema
from kdsed.config import TrainConfig
from kdsed.distill import Outputs
from kdsed.sweep.storage import Storage
from kdsed.train import EpochLog, VariantResult, load_checkpoint, save_checkpoint


def write_unit(storage: Storage, folder: str, result: VariantResult, outputs: Outputs, extra: dict) -> None:
    """Store a trained unit's weights, outputs and summary (each file written atomically)."""
    with tempfile.TemporaryDirectory() as tmp:
        storage.put_file(save_checkpoint(result, tmp), f"{folder}/{schema.CHECKPOINT_FILE}")
    buf = io.BytesIO()
    arrays = {"train": outputs.train, "test": outputs.test, "eval": outputs.eval}
    arrays.update({k: v for k, v in (("train_clip", outputs.train_clip), ("test_clip", outputs.test_clip))
                   if v is not None})
    np.savez(buf, **arrays)
    storage.write_bytes(f"{folder}/{schema.UNIT_OUTPUTS}", buf.getvalue())
    summary = {
        "history": [vars(h) for h in result.history], "best_epoch": result.best_epoch,
        "train_clips_per_s": result.train_clips_per_s, "train_time_s": result.train_time_s, **extra,
    }
    storage.write_bytes(f"{folder}/{schema.UNIT_SUMMARY}", json.dumps(summary).encode())


def stored_by_fit(storage: Storage, folder: str, fit_id: str) -> dict | None:
    """The summary of the unit in `folder` when fit `fit_id` stored it (a restarted worker group skips it), else None."""
    path = f"{folder}/{schema.UNIT_SUMMARY}"
    if not storage.exists(path):
        return None
    summary = json.loads(storage.read_bytes(path))
    return summary if summary.get("fit_id") == fit_id else None


def record_attempt(storage: Storage, folder: str, fit_id: str, rank: int, *, node: str = "") -> int:
    """Record a worker's start in `folder/attempts/`; returns its attempt number within fit `fit_id` (1 = first)."""
    started = time.time()
    info = {"fit_id": fit_id, "rank": rank, "pid": os.getpid(), "host": socket.gethostname(), "node": node,
            "started": started}
    prefix = f"{fit_id}-rank{rank}-"
    storage.write_bytes(f"{folder}/{schema.UNIT_ATTEMPTS}/{prefix}{started:.6f}-{secrets.token_hex(2)}.json",
                        json.dumps(info).encode())
    return sum(name.startswith(prefix) for name in storage.list_files(f"{folder}/{schema.UNIT_ATTEMPTS}"))


def read_attempts(storage: Storage, folder: str) -> list[dict]:
    """Every worker start recorded in a unit's folder (all fits, all ranks), oldest first."""
    rel = f"{folder}/{schema.UNIT_ATTEMPTS}"
    names = [n for n in storage.list_files(rel) if n.endswith(".json") and not n.startswith(".")]
    return sorted((json.loads(storage.read_bytes(f"{rel}/{n}")) for n in names), key=lambda r: r["started"])


@dataclass
class StoredUnit:
    """A trained unit read back from storage."""

    result: VariantResult
    outputs: Outputs
    summary: dict


def read_unit(storage: Storage, folder: str, train_config: TrainConfig) -> StoredUnit:
    """Read a unit written by `write_unit`."""
    with tempfile.TemporaryDirectory() as tmp:
        model_cfg, state, n_mels = load_checkpoint(storage.get_file(f"{folder}/{schema.CHECKPOINT_FILE}", Path(tmp) / schema.CHECKPOINT_FILE))
    with np.load(io.BytesIO(storage.read_bytes(f"{folder}/{schema.UNIT_OUTPUTS}"))) as z:
        outputs = Outputs(z["train"], z["test"], z["eval"], *(z[k] if k in z else None for k in ("train_clip", "test_clip")))
    summary = json.loads(storage.read_bytes(f"{folder}/{schema.UNIT_SUMMARY}"))
    result = VariantResult(model_cfg, train_config, state, [EpochLog(**h) for h in summary["history"]],
                           summary["best_epoch"], summary["train_clips_per_s"], summary["train_time_s"], n_mels)
    return StoredUnit(result, outputs, summary)
