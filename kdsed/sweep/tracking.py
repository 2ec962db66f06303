"""MLflow logging of a sweep (only the coordinator calls this).

Layout: one experiment; a parent run per sweep; a child run per stage
(baseline, tagging, pass-1 ... pass-N); a grandchild run per unit of a stage.
Runs are found again by their `kdsed.sweep_id` / `kdsed.unit` tags, so a
resumed sweep never logs a unit twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from kdsed.config import TrackingConfig, to_dict
from kdsed.constants import CLASSES
from kdsed.metrics import EventScores

os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "1")


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


def sqlite_artifact_root(uri: str) -> Path | None:
    """For a local SQLite store, the artifact folder beside the database file (`mlartifacts/`)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"


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
        self.client = MlflowClient(self.uri)
        try:
            experiment = self.client.get_experiment_by_name(cfg.experiment)
            if experiment is None:
                location = artifact_root.resolve().as_uri() if artifact_root is not None else None
                self.experiment_id = self.client.create_experiment(cfg.experiment, artifact_location=location)
            else:
                self.experiment_id = experiment.experiment_id
        except Exception as e:  # MLflow raises many types for an unreachable store
            raise TrackingError(f"MLflow tracking store {self.uri} cannot be used: {e}") from None

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
