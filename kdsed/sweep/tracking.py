"""MLflow logging of a sweep (only the coordinator calls this).

Layout: one experiment; a parent run per sweep; a child run per stage
(baseline, tagging, pass-1 ... pass-N); a grandchild run per unit of a stage.
Runs are found again by their `kdsed.sweep_id` / `kdsed.unit` tags, so a
resumed sweep never logs a unit twice.

Several sweeps may share one store. On a local SQLite store they are
processes of one machine: creating the store and moving registry aliases
happen under a lock file beside the database, and a write that finds the
database locked is retried with backoff.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from kdsed.config import TrackingConfig, to_dict
from kdsed.constants import CLASSES
from kdsed.metrics import EventScores
from kdsed.sweep.storage import file_lock

os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "1")


# MLflow 3's UI opens an experiment in its GenAI view unless the experiment says it is model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be reached or used."""


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config data as flat `a.b.c` -> string params."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


def score_metrics(prefix: str, scores: EventScores | dict) -> dict[str, float]:
    """`{prefix}_f1_macro`, `{prefix}_precision_macro`, ..., `{prefix}_f1_<Class>` from event scores."""
    js = scores.to_json() if isinstance(scores, EventScores) else scores
    out = {}
    for stat, name in (("f_measure", "f1"), ("precision", "precision"), ("recall", "recall")):
        if js["macro"][stat] is not None:
            out[f"{prefix}_{name}_macro"] = float(js["macro"][stat])
        if js["micro"][stat] is not None:
            out[f"{prefix}_{name}_micro"] = float(js["micro"][stat])
        for c in CLASSES:
            value = js["class_wise"][c][stat]
            if value is not None:
                out[f"{prefix}_{name}_{c}"] = float(value)
    return out


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def sqlite_artifact_root(uri: str) -> Path | None:
    """For a local SQLite store, the artifact folder beside the database file (`mlartifacts/`)."""
    db = sqlite_path(uri)
    return None if db is None else db.parent / "mlartifacts"


LOCKED_MESSAGES = ("database is locked", "database table is locked")
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # 30-60 s in all (jitter), beyond SQLite's 20 s busy timeout


def is_locked_error(error: BaseException) -> bool:
    """A SQLite store refused a write because another process held the database (safe to retry: rolled back)."""
    return any(m in str(error) for m in LOCKED_MESSAGES)


def retry_when_locked(call: Callable, *, delays_s: tuple[float, ...] = RETRY_DELAYS_S) -> Callable:
    """`call`, retried with backoff (and jitter) while a SQLite store says the database is locked."""
    @functools.wraps(call)
    def retried(*args, **kwargs):
        for delay in delays_s:
            try:
                return call(*args, **kwargs)
            except Exception as e:  # MlflowException wraps sqlite3.OperationalError
                if not is_locked_error(e):
                    raise
                time.sleep(delay * (1 + random.random()))
        return call(*args, **kwargs)
    return retried


class RetryingClient:
    """An MlflowClient whose every method is retried while a SQLite store is locked by another writer."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        return retry_when_locked(attr) if callable(attr) else attr


class Tracker:
    """The sweep's MLflow client, with find-or-create runs keyed by tags."""

    def __init__(self, cfg: TrackingConfig, sweep_id: str) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.sweep_id = sweep_id
        self.uri = cfg.tracking_uri
        artifact_root = sqlite_artifact_root(self.uri)
        if artifact_root is not None:
            artifact_root.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.uri)
        try:
            # MLflow creates a new SQLite store's tables (when the client is made) without a lock: two sweeps
            # starting together would both run the migrations. The experiment is created under the same lock.
            with self.store_lock():
                self.client = RetryingClient(MlflowClient(self.uri, registry_uri=self.uri))
                location = artifact_root.resolve().as_uri() if artifact_root is not None else None
                self.experiment_id = self._experiment(cfg.experiment, location)
                self.client.search_registered_models(max_results=1)  # the registry's tables too
        except Exception as e:  # MLflow raises many types for an unreachable store
            raise TrackingError(f"MLflow tracking store {self.uri} cannot be used: {e}") from None

    def _experiment(self, name: str, location: str | None) -> str:
        """The experiment's id, created if absent (another sweep may create it at the same moment)."""
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    @contextlib.contextmanager
    def store_lock(self) -> Iterator[None]:
        """Exclusive among the processes of this machine that use the same SQLite store (a no-op for a server)."""
        db = sqlite_path(self.uri)
        if db is None:
            yield
            return
        with file_lock(db.with_name(db.name + ".kdsed-lock")):
            yield

    def run(self, unit: str, name: str, parent_id: str | None, tags: Mapping[str, str] | None = None) -> str:
        """The run of `unit` in this sweep: found by tag, or created under `parent_id`."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`kdsed.sweep_id` = '{self.sweep_id}' and tags.`kdsed.unit` = '{unit}'",
            max_results=1)
        if found:
            return found[0].info.run_id
        all_tags = {"kdsed.sweep_id": self.sweep_id, "kdsed.unit": unit, **(tags or {})}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        return self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id

    def log(self, run_id: str, *, metrics: Mapping[str, float] | None = None, params: Mapping[str, str] | None = None,
            step: int = 0, tags: Mapping[str, str] | None = None) -> None:
        """Metrics (at `step`), params and tags in one batch."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        existing = self.client.get_run(run_id).data.params if params else {}
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)) for k, v in (params or {}).items() if k not in existing],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def log_series(self, run_id: str, series: Mapping[str, list[float]]) -> None:
        """Per-epoch values as metrics with steps 1..n (so the UI draws curves)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, i + 1) for k, values in series.items() for i, v in enumerate(values)]
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start:start + 900])

    def log_config(self, run_id: str, cfg: Any) -> None:
        self.log(run_id, params=flatten(to_dict(cfg)))

    def artifact(self, run_id: str, path: Path | str, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def artifact_uri(self, run_id: str, artifact_path: str) -> str:
        return f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def ui_hint(self) -> str:
        return f"mlflow ui --backend-store-uri {self.uri}"
