"""MLflow logging of a sweep (only the coordinator calls this).

Layout: one experiment; a parent run per sweep; a child run per stage
(baseline, tagging, pass-1 ... pass-N); a grandchild run per unit of a stage.
Runs are found again by their `kdsed.sweep_id` / `kdsed.unit` tags, so a
resumed sweep never logs a unit twice. Every tag, metric, param and artifact
name comes from `kdsed.schema`, which the report reads back with.

Several sweeps may share one store. On a local SQLite store they are
processes of one machine: creating the store and moving registry aliases
happen under a lock file beside the database, and a write that finds the
database locked is retried with backoff.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from kdsed import schema
from kdsed.config import SweepConfig, TrackingConfig, dump_yaml, to_dict
from kdsed.constants import CLASSES
from kdsed.distill import VariantOutcome
from kdsed.prepare import PreparedData
from kdsed.results import StageReport, results_markdown
from kdsed.stages import StageOutcome
from kdsed.sweep import figures
from kdsed.sweep.storage import file_lock
from kdsed.train import EpochLog

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


def sqlite_artifact_root(uri: str) -> Path | None:
    """For a local SQLite store, the artifact folder beside the database file (`mlartifacts/`)."""
    db = schema.sqlite_path(uri)
    return None if db is None else db.parent / schema.SQLITE_ARTIFACTS


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
            if experiment.tags.get(schema.EXPERIMENT_KIND_TAG) != schema.EXPERIMENT_KIND:
                self.client.set_experiment_tag(experiment.experiment_id, schema.EXPERIMENT_KIND_TAG, schema.EXPERIMENT_KIND)
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={schema.EXPERIMENT_KIND_TAG: schema.EXPERIMENT_KIND})
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    @contextlib.contextmanager
    def store_lock(self) -> Iterator[None]:
        """Exclusive among the processes of this machine that use the same SQLite store (a no-op for a server)."""
        db = schema.sqlite_path(self.uri)
        if db is None:
            yield
            return
        with file_lock(db.with_name(db.name + ".kdsed-lock")):
            yield

    def run(self, unit: str, name: str, parent_id: str | None, tags: Mapping[str, str] | None = None) -> str:
        """The run of `unit` in this sweep: found by tag, or created under `parent_id`."""
        keys = {schema.TAG_SWEEP_ID: self.sweep_id, schema.TAG_UNIT: unit}
        found = self.client.search_runs([self.experiment_id], filter_string=schema.tag_filter(**keys), max_results=1)
        if found:
            return found[0].info.run_id
        all_tags = {**keys, **(tags or {})}
        if parent_id:
            all_tags[schema.TAG_PARENT_RUN] = parent_id
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


# ---- what the coordinator logs -------------------------------------------------------------------


def start_sweep_run(tracker: Tracker, cfg: SweepConfig, *, topline: bool = False) -> str:
    """The sweep's parent run: its config as params and `config.yaml`, its stages and variants as tags.

    `topline`: the sweep trains the topline (asked for, and the data has hidden labels)."""
    dc = cfg.distill
    run_id = tracker.run(schema.SWEEP_UNIT, schema.sweep_run_name(tracker.sweep_id), None, {
        schema.TAG_STAGE: schema.SWEEP_UNIT,
        schema.TAG_STAGES: schema.join_names(schema.expected_stages(dc.passes, dc.run_baseline, topline)),
        schema.TAG_VARIANTS: schema.join_names([v.name for v in dc.variants])})
    tracker.log_config(run_id, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        dump_yaml(cfg, Path(tmp) / schema.CONFIG_FILE)
        tracker.artifact(run_id, Path(tmp) / schema.CONFIG_FILE)
    return run_id


def open_stage_run(tracker: Tracker, parent_run_id: str, stage: str) -> str:
    """A stage's run: found again, or created (when its first unit starts) under the sweep's parent run."""
    tags = {schema.TAG_PASS: str(schema.stage_index(stage)), schema.TAG_STAGE: stage}
    return tracker.run(stage, stage, parent_run_id, tags)


def open_unit_run(tracker: Tracker, stage_run: str, unit: str, model: str) -> str:
    """A unit's run: found again (a resumed sweep, a unit trained before), or created as the unit starts."""
    variant = schema.unit_variant(unit)
    return tracker.run(unit, unit, stage_run, {
        schema.TAG_PASS: str(schema.stage_index(schema.unit_stage(unit))), schema.TAG_VARIANT: variant,
        schema.TAG_MODEL: model, schema.TAG_SMOOTHING: schema.variant_smoothing(variant)})


def epoch_metrics(log: EpochLog) -> dict[str, float]:
    """A unit's step metrics of one epoch (step = the epoch)."""
    return {schema.TRAIN_LOSS: log.train_loss, schema.VAL_LOSS: log.val_loss, schema.EPOCH_CLIPS_PER_S: log.clips_per_s}


class StepLog:
    """Units' per-epoch metrics, each (run, metric, step) logged once: a retried or resumed unit replays its
    epochs (seeded, so with the same losses), and the finished unit's history is logged again at the end."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._steps: dict[tuple[str, str], set[int]] = {}

    def log(self, run_id: str, log: EpochLog) -> None:
        """One epoch's metrics at step `log.epoch`, those not logged before."""
        new = {k: v for k, v in epoch_metrics(log).items() if log.epoch not in self.steps(run_id, k)}
        if new:
            self.tracker.log(run_id, metrics=new, step=log.epoch)
            for k in new:
                self._steps[run_id, k].add(log.epoch)

    def steps(self, run_id: str, key: str) -> set[int]:
        """The steps of `key` the run holds (read from the store once)."""
        if (run_id, key) not in self._steps:
            self._steps[run_id, key] = {m.step for m in self.tracker.client.get_metric_history(run_id, key)}
        return self._steps[run_id, key]


def log_stage(tracker: Tracker, parent_run_id: str, outcome: StageOutcome, data: PreparedData,
              parquet: Path | None, *, scores: Path | None = None) -> str:
    """A finished stage's run (and one run per unit under it); its points on the parent's per-pass curves.

    `scores`: a folder of the stage's raw frame scores (`kdsed.scores_io`), logged under `scores/`.
    """
    stage, index = outcome.stage, schema.stage_index(outcome.stage)
    stage_run = open_stage_run(tracker, parent_run_id, stage)
    for variant, unit in outcome.units.items():
        log_unit(tracker, stage_run, unit, outcome.unit_eval[variant])
    metrics = stage_metrics(outcome.report)
    tracker.log(stage_run, metrics=metrics,
                params={**schema.choice_params(outcome.choice), **schema.winner_params(outcome.report.winners)})
    if parquet is not None:
        tracker.artifact(stage_run, parquet, schema.PSEUDO_LABELS)
    if scores is not None:
        tracker.artifact(stage_run, scores, schema.SCORES)
    with tempfile.TemporaryDirectory() as tmp:
        for png in figures.example_clips(Path(tmp), stage, data, outcome.merged.test, outcome.choice):
            tracker.artifact(stage_run, png, schema.FIGURES)
    # On the parent run: one point per pass (tagging = step 0), so the UI draws F1 over passes.
    tracker.log(parent_run_id, metrics=schema.per_pass_metrics(metrics, stage), step=index)
    return stage_run


def stage_metrics(report: StageReport) -> dict[str, float]:
    """A stage run's metrics: its scores on val and eval, its pseudo-labels' (when known), its wall time."""
    metrics = {**schema.score_metrics(schema.VAL, report.val), **schema.score_metrics(schema.EVAL, report.eval),
               **schema.comparison_metrics(report.comparisons, report.kd_topline_ratio), schema.WALL_TIME: report.wall_time_s}
    if report.pseudo and "macro" in report.pseudo:
        metrics.update(schema.score_metrics(schema.PSEUDO, report.pseudo))
    metrics.update(schema.detection_metrics(schema.EVAL, report.detection))
    return metrics


def log_unit(tracker: Tracker, stage_run: str, unit: VariantOutcome, eval_scores: dict) -> None:
    """One unit's run: scores (eval with its interval), training figures, config params and its post-processing."""
    result, scored = unit.result, unit.scored
    run_id = open_unit_run(tracker, stage_run, unit.name, result.model_config.name)
    tracker.log(run_id, metrics={**schema.score_metrics(schema.VAL, scored.val),
                                 **schema.score_metrics(schema.EVAL, eval_scores),
                                 schema.BEST_EPOCH: result.best_epoch, schema.TRAIN_CLIPS_PER_S: result.train_clips_per_s,
                                 schema.TRAIN_TIME: result.train_time_s},
                params={**{f"{schema.MODEL_PARAMS}{k}": v for k, v in asdict(result.model_config).items()},
                        **{f"{schema.TRAIN_PARAMS}{k}": v for k, v in asdict(result.train_config).items()},
                        **schema.choice_params(scored.choice)})
    steps = StepLog(tracker)  # the epochs not logged live (a unit trained before a resume, say)
    for epoch in result.history:
        steps.log(run_id, epoch)
    with tempfile.TemporaryDirectory() as tmp:
        choice_file = Path(tmp) / schema.POSTPROCESSING_FILE
        choice_file.write_text(json.dumps(scored.choice.to_dict(), indent=1))
        tracker.artifact(run_id, choice_file)
        tracker.artifact(run_id, figures.loss_curves(Path(tmp), unit.name, result), schema.FIGURES)
    tracker.finish(run_id)


def register_winners(tracker: Tracker, stage_run: str, outcome: StageOutcome, data: PreparedData) -> list[Any]:
    """Each class's winner as a class bundle under the pass run, registered; the pass's aliases moved together.

    Returns the registered model versions, in `CLASSES` order."""
    from kdsed.registry import point_aliases

    k = schema.pass_index(outcome.stage)
    versions = [_register_class(tracker, stage_run, outcome, data, c) for c in range(len(CLASSES))]
    # All classes' aliases at once, so that another sweep moving them at the same time cannot leave
    # `champion` on a mix of two sweeps' winners (whose normalizers may differ: no bundle could be pulled).
    with tracker.store_lock():
        point_aliases(tracker.client, versions, [schema.CHAMPION_ALIAS, schema.pass_alias(k)])
    return versions


def _register_class(tracker: Tracker, stage_run: str, outcome: StageOutcome, data: PreparedData, c: int) -> Any:
    from kdsed.bundle import write_class_bundle
    from kdsed.registry import register_class_bundle

    class_name, variant = CLASSES[c], outcome.winners[c]
    unit, k = outcome.units[variant], schema.pass_index(outcome.stage)
    ch = unit.scored.choice
    provenance = {schema.VERSION_SWEEP_ID: tracker.sweep_id, schema.VERSION_PASS: k, schema.VERSION_VARIANT: variant,
                  "unit": unit.name, schema.VERSION_VAL_F1: ch.f1[c], "run_id": stage_run}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_class_bundle(
            Path(tmp) / class_name, class_name=class_name, model_config=unit.result.model_config,
            state_dict=unit.result.state_dict, median_window=int(ch.median_windows[c]),
            gaussian_sigma=float(ch.gaussian_sigmas[c]), threshold=float(ch.thresholds[c]),
            feature_config=data.feature_config, normalizer=data.normalizer, provenance=provenance)
        tracker.artifact(stage_run, folder, schema.winner_artifact(class_name))
    return register_class_bundle(
        tracker.client, class_name, tracker.artifact_uri(stage_run, schema.winner_artifact(class_name)), stage_run,
        tags={schema.VERSION_PASS: str(k), schema.VERSION_VARIANT: variant, schema.VERSION_WINDOW: str(ch.median_windows[c]),
              schema.VERSION_THRESHOLD: str(ch.thresholds[c]), schema.VERSION_VAL_F1: f"{ch.f1[c]:.6f}",
              schema.VERSION_SWEEP_ID: tracker.sweep_id})


def log_sweep_results(tracker: Tracker, parent_run_id: str, reports: list[StageReport], timings: dict[str, float],
                      wall_time_s: float, variant_names: list[str]) -> None:
    """The parent run's last words: timings, `results.md` / `results.json` and the sweep's figures; then finished."""
    tracker.log(parent_run_id, metrics={schema.WALL_TIME: wall_time_s,
                                        **{schema.timing_metric(k): v for k, v in timings.items()}})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / schema.RESULTS_MD).write_text(results_markdown(reports))
        (Path(tmp) / schema.RESULTS_JSON).write_text(json.dumps([asdict(r) for r in reports], indent=1))
        tracker.artifact(parent_run_id, Path(tmp) / schema.RESULTS_MD)
        tracker.artifact(parent_run_id, Path(tmp) / schema.RESULTS_JSON)
        for png in figures.sweep_summary(Path(tmp), reports, variant_names):
            tracker.artifact(parent_run_id, png, schema.FIGURES)
    tracker.finish(parent_run_id)


# ---- lineage: the pseudo-labels as MLflow datasets -------------------------------------------------


def pseudo_label_dataset(local: Path, stage: str, source_uri: str) -> Any:
    """A pass's pseudo-label Parquet file as an MLflow dataset entity: its name, its digest (SHA-256 of the file's
    bytes), where it lies in the sweep's storage, its columns and size (read from the file's footer only)."""
    import mlflow.data
    import pyarrow.parquet as pq
    from mlflow.entities import Dataset

    parquet = pq.ParquetFile(local)
    first_row = next(parquet.iter_batches(batch_size=1)).to_pandas()  # MLflow infers no columns from an empty table
    with warnings.catch_warnings():
        # MLflow's notes to a person typing at a prompt: a local path is both a file and an artifact location (either
        # reads it), and the clip index column is an integer (it is never missing). Not the sweep user's business.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted", category=UserWarning)
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
        described = mlflow.data.from_pandas(first_row, source=source_uri)._to_mlflow_entity()  # columns, source
    rows = parquet.metadata.num_rows
    digest = hashlib.sha256(local.read_bytes()).hexdigest()[:schema.DATASET_DIGEST_CHARS]
    return Dataset(schema.pseudo_label_dataset_name(stage), digest, described.source_type, described.source,
                   described.schema, json.dumps({"num_rows": rows, "num_elements": rows * len(first_row.columns)}))


def log_dataset(tracker: Tracker, run_id: str, dataset: Any, context: str,
                tags: Mapping[str, str] | None = None) -> None:
    """`dataset` as an input of run `run_id` in `context` ("training" or "output"), with extra tags."""
    from mlflow.entities import DatasetInput, InputTag

    input_tags = [InputTag(schema.DATASET_CONTEXT_TAG, context), *(InputTag(k, str(v)) for k, v in (tags or {}).items())]
    tracker.client.log_inputs(run_id, datasets=[DatasetInput(dataset, input_tags)])


def log_pseudo_label_lineage(tracker: Tracker, stage_run: str, unit_names: list[str], *, wrote: Any,
                             winner_versions: list[Any], trained_on: Any | None = None) -> None:
    """A pass's lineage: the pseudo-labels it trained on (pass >= 2) as a training input of its run and of
    every unit run; the pseudo-labels it wrote as an output of its run, tagged with each class's winner version."""
    if trained_on is not None:
        for run_id in [stage_run, *(tracker.run(name, name, stage_run) for name in unit_names)]:
            log_dataset(tracker, run_id, trained_on, schema.CONTEXT_TRAINING)
    versions = {schema.winner_version_tag(c): f"{v.name}/{v.version}" for c, v in zip(CLASSES, winner_versions)}
    log_dataset(tracker, stage_run, wrote, schema.CONTEXT_OUTPUT, versions)
