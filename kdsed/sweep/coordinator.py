"""The coordinator: drives the passes on Ray, logs to MLflow, picks winners, broadcasts pseudo-labels.

Per stage (baseline, tagging, pass-1 ... pass-N): train its units concurrently
as the ranks of one Ray Train TorchTrainer (`kdsed.sweep.workers.fit_round`),
search post-processing with Ray Tune, score the
stage with `kdsed.stages.score_stage` (the serial runner's function), write the
next pseudo-labels as Parquet to the sweep storage, log everything to MLflow
and register the per-class winners. State is saved after every unit and stage,
so `--resume` continues from the last finished unit.

Scoring a stage needs no CPU of Ray's, and pass 1 needs none of stage 0's scores (only the tagger's and the
baseline's outputs): so stage 0's stages are scored while pass 1 trains, and the two-stage baseline as soon as
its unit is done, beside pass 1 (`Meanwhile`: work the coordinator does between the progress polls of a round).

Several sweeps may run at once against one MLflow store and one storage root:
each has its own id (time + random suffix), its own folder
`<storage>/sweeps/<id>/`, its own runs (found by the `kdsed.sweep_id` tag) and
its own registered model versions (tag `sweep_id`). The aliases `champion` and
`pass-N` of all classes are moved together, under the store's lock, so they
always name one sweep's winners: the sweep that finished that pass last.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import ray

from kdsed import distill, schema, stages
from kdsed.config import SweepConfig
from kdsed.constants import TEST
from kdsed.metrics import ClipCounts
from kdsed.prepare import PreparedData, prepare_data
from kdsed.pseudolabels import read_pseudo_labels, write_pseudo_labels
from kdsed.results import StageReport, in_table_order, winner_table as results_winner_table
from kdsed.scores_io import write_scores
from kdsed.search import PostprocessChoice
from kdsed.stages import StageOutcome, UnitSpec
from kdsed.sweep import console, tracking
from kdsed.sweep.interrupts import keep_handlers
from kdsed.sweep.state import UnitRecord, open_state, sweep_key
from kdsed.sweep.storage import Storage, file_lock
from kdsed.sweep.tuning import tune_postprocessing
from kdsed.sweep.units import StoredUnit, read_unit
from kdsed.sweep.workers import Placement, ProgressChannel, fit_round, plan_placement, units_at_once
from kdsed.topline import TOPLINE_SKIPPED_NOTE

#: How often the coordinator reads the units' progress while they train (seconds).
PROGRESS_POLL_S = 0.5

#: Work the coordinator does in its own process while a round trains: (the units it needs trained, the work).
#: Done in order, each once every unit it needs is recorded; what is left when the round ends is done then.
Meanwhile = list[tuple[tuple[str, ...], Callable[[], Any]]]


def log(message: str) -> None:
    console.say(f"[kdsed.sweep {time.strftime('%H:%M:%S')}] {message}")


@dataclass
class FinishedStage:
    """What a finished stage leaves for the rest of the sweep (saved as `stages/<stage>.json`)."""

    report: StageReport
    choice: PostprocessChoice
    winners: list[str]
    eval_counts: ClipCounts | None = None  # the merged outputs' per-clip counts on eval (later paired comparisons)
    pseudo_counts: ClipCounts | None = None  # a pass's pseudo-labels' counts against the hidden labels (the same)

    def to_json(self) -> bytes:
        counts = {key: c.to_json() if c is not None else None
                  for key, c in (("eval_counts", self.eval_counts), ("pseudo_counts", self.pseudo_counts))}
        return json.dumps({"report": asdict(self.report), "choice": self.choice.to_dict(),
                           "winners": self.winners, **counts}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> FinishedStage:
        saved = json.loads(raw)
        counts = [ClipCounts.from_json(c) if c else None for c in (saved.get("eval_counts"), saved.get("pseudo_counts"))]
        return cls(StageReport(**saved["report"]), PostprocessChoice.from_dict(saved["choice"]), saved["winners"],
                   *counts)


@dataclass
class SweepSummary:
    sweep_id: str
    parent_run_id: str
    reports: list[StageReport]  # in table order: the topline, where there is one, comes after the last pass
    final_report: StageReport  # the last pass's
    final_choice: PostprocessChoice
    final_winners: list[str]
    timings: dict[str, float]


class Coordinator:
    """One sweep: its config, storage, state, MLflow tracker, data and the arrays broadcast to its units.

    `set_up()` prepares the data, starts Ray and opens the sweep's parent run; then `run_first_stage()` (whose
    scoring it returns for `run_pass(1, meanwhile=...)`), `run_pass(k)` for k = 1..N and `finish(reports)`, or
    `run_sweep` for all of it.
    """

    def __init__(self, cfg: SweepConfig, *, resume: bool | str = False) -> None:
        self.cfg = cfg
        self.storage = Storage(cfg.tracking.storage)
        self.state = open_state(self.storage, sweep_key(cfg), cfg.distill.passes, resume)
        if resume:
            log(f"resuming sweep {self.state.sweep_id}: {len(self.state.units)} units and stages "
                f"{self.state.stages_done} done")
        self.tracker = tracking.Tracker(cfg.tracking, self.state.sweep_id)
        self.timings: dict[str, float] = {"training": 0.0, "tuning": 0.0, "logging": 0.0}
        self._data: PreparedData | None = None
        self._refs: dict[str, Any] = {}  # object-store references the units' workers read
        self.counts: dict[str, ClipCounts] = {}  # stage -> eval counts of its merged outputs (paired comparisons)
        self.pseudo_counts: dict[str, ClipCounts] = {}  # pass -> its pseudo-labels' counts (the same, pass to pass)
        self._unit_runtime_env: dict[str, Any] = {}
        self._progress: ProgressChannel | None = None
        self._steps: tracking.StepLog | None = None
        self._started = time.perf_counter()
        self._training = False  # a round of units is in flight (set by `_fit_all`)

    @property
    def data(self) -> PreparedData:
        if self._data is None:
            raise RuntimeError("Coordinator.set_up() prepares the data first")
        return self._data

    @property
    def trains_topline(self) -> bool:
        """The topline is asked for and the data has the hidden labels it trains on."""
        return self.cfg.distill.run_topline and self.data.hidden_reference() is not None

    # ---- set-up ----------------------------------------------------------------------------------

    def set_up(self) -> None:
        """Prepare the data, start (or join) Ray, broadcast the data, open the sweep's parent run."""
        cfg, state = self.cfg, self.state
        log(f"sweep {state.sweep_id}: {cfg.distill.passes} passes, variants "
            f"{', '.join(v.name for v in cfg.distill.variants)}; storage {self.storage.root_uri}; "
            f"MLflow {self.tracker.uri}")
        t0 = time.perf_counter()
        self._data = prepare_sweep_data(cfg)
        self.timings["data"] = time.perf_counter() - t0
        with keep_handlers():  # ray.init replaces the SIGTERM handler (see kdsed.sweep.interrupts)
            self.start_ray()
        self.broadcast("data", self._data)
        if state.parent_run_id is None:
            state.parent_run_id = tracking.start_sweep_run(self.tracker, cfg, topline=self.trains_topline)
            state.save(self.storage)

    def start_ray(self) -> None:
        t0 = time.perf_counter()
        if not ray.is_initialized():
            # No address (and no RAY_ADDRESS): a Ray of this sweep's own, even when another sweep's local
            # Ray or a `ray start` cluster runs on this machine ("local"; a bare ray.init() could join those).
            address = self.cfg.ray.address or os.environ.get("RAY_ADDRESS")
            # Quiet (default): the workers' output stays in Ray's log files (the units' progress comes through
            # self._progress) and Ray's own Python loggers print errors only. --verbose: all of it.
            quiet = {} if console.verbose() else {"logging_config": ray.LoggingConfig(log_level="ERROR")}
            if address:
                ray.init(address=address, log_to_driver=console.verbose(), **quiet)
            else:
                # No dashboard on a laptop (it costs ~9 s and a core).
                ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                         log_to_driver=console.verbose(), _system_config=self._local_ray_config(), **quiet)
        self.timings["ray_start"] = time.perf_counter() - t0
        # Ray Train's placement-group cleaner (a detached actor started per unit) finds its cluster through
        # Ray's address auto-detection, which fails when this machine runs several Ray instances (two
        # sweeps, or a sweep beside a `ray start` cluster): name the cluster to every unit's processes.
        # Without Ray Train's print patch, a worker's progress line is printed once, not twice.
        self._unit_runtime_env = {"env_vars": {"RAY_ADDRESS": ray.get_runtime_context().gcs_address,
                                               "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}
        self._progress = ProgressChannel()
        resources = ray.cluster_resources()
        log(f"Ray up in {self.timings['ray_start']:.1f} s: {len(ray.nodes())} node(s), {resources.get('CPU', 0):g} CPU, "
            f"{resources.get('GPU', 0):g} GPU")

    def _local_ray_config(self) -> dict[str, Any]:
        """A local Ray's settings: the worker processes a pass really starts are expected (not warned about).

        A round is a task, a Train controller, one worker per unit and Ray Train's helper actors, each a process,
        and the pass's Tune trials follow them (with a trainer per unit, the issue's laptop sweep reached 34
        Python workers). Ray's raylet warns whenever the processes reach 4x its start-up concurrency (by default the
        CPU count: 8 processes on a laptop). A concurrency of 4 per unit of a pass moves that line to 16
        processes per unit, beyond what a pass starts, which silences the warning where it arises.
        """
        units = max(len(self.cfg.distill.variants), 2) * self.cfg.ray.workers_per_variant
        return {"worker_maximum_startup_concurrency": max(os.cpu_count() or 1, 4 * units)}

    def broadcast(self, name: str, value: Any) -> None:
        """Put `value` in Ray's object store for the units trained from now on (`data`, `pseudo_weak`, `previous`)."""
        self._refs[name] = ray.put(value)

    # ---- training --------------------------------------------------------------------------------

    def train_units(self, specs: list[UnitSpec], *, meanwhile: Meanwhile | None = None) -> dict[str, StoredUnit]:
        """Train every unit not yet done, all at once; returns every unit of `specs` read from storage.

        `meanwhile`: work done between the round's progress polls (see `Meanwhile`; the list is emptied). Its time
        counts as its own (search, MLflow), not as training.
        """
        pending = [s for s in specs if s.name not in self.state.units]
        tasks = meanwhile if meanwhile is not None else []
        if pending:
            rc = self.cfg.ray
            placement = plan_placement(len(pending), rc.workers_per_variant, rc.use_gpu, rc.cpus_per_variant,
                                       rc.units_per_gpu)
            t0 = time.perf_counter()
            with console.PassProgress({s.name: s.train.epochs for s in pending}) as progress:
                errors, busy_s = self._fit_all(pending, placement, t0, progress, tasks)
            self.timings["training"] += time.perf_counter() - t0 - busy_s
            self.run_ready(tasks)  # what the failed units do not hold back is saved before the error
            if errors:
                raise RuntimeError("units failed after Ray's retries (finished units are saved; use --resume):\n"
                                   + "\n".join(errors))
        self.run_ready(tasks, all_of_them=True)
        return {s.name: self.read_unit(s) for s in specs}

    def run_ready(self, tasks: Meanwhile, *, all_of_them: bool = False, at_most: int | None = None) -> float:
        """Do the tasks at the head of `tasks` whose units are trained (`all_of_them`: every task, in order;
        `at_most`: that many at most); returns the seconds it took."""
        t0, done = time.perf_counter(), 0
        while tasks and (at_most is None or done < at_most) and \
                (all_of_them or all(u in self.state.units for u in tasks[0][0])):
            _, work = tasks.pop(0)
            work()
            done += 1
        return time.perf_counter() - t0

    def _fit_all(self, specs: list[UnitSpec], placement: Placement, t0: float,
                 progress: console.PassProgress, tasks: Meanwhile) -> tuple[list[str], float]:
        """Fit the units as one round (or as many as the cluster runs at once), showing and logging their
        epochs, recording each as it finishes and doing the `tasks` that are ready between polls; returns the
        failures and the seconds spent on the tasks."""
        runs = self._open_unit_runs(specs)
        resources = ray.cluster_resources()
        size = units_at_once(placement, resources.get("CPU", 1), resources.get("GPU", 0))
        fit = fit_round.options(runtime_env=self._unit_runtime_env)
        chunks = [specs[i:i + size] for i in range(0, len(specs), size)]
        trainers = ("one TorchTrainer" if len(chunks) == 1 else
                    f"{len(chunks)} TorchTrainers of up to {size} (what the cluster runs at once)")
        log(f"training {', '.join(s.name for s in specs)} side by side in {trainers} ({placement.describe()})")
        rounds = {fit.remote([(s, self.unit_folder(s)) for s in chunk], self._refs,
                             self._settings(chunk, placement, part=k + 1 if len(chunks) > 1 else None)): chunk
                  for k, chunk in enumerate(chunks)}
        pending, errors = {s.name: s for s in specs}, []
        self._training = True  # the rounds hold the CPUs: a search done meanwhile asks for none (`tune`)
        try:
            return self._wait_rounds(rounds, pending, errors, progress, runs, t0, tasks)
        finally:
            self._training = False

    def _wait_rounds(self, rounds: dict, pending: dict[str, UnitSpec], errors: list[str],
                     progress: console.PassProgress, runs: dict[str, str], t0: float,
                     tasks: Meanwhile) -> tuple[list[str], float]:
        """Poll the `rounds` (Ray refs -> their units) until every one returned; see `_fit_all`."""
        busy_s = 0.0
        while rounds:
            ready, _ = ray.wait(list(rounds), num_returns=1, timeout=PROGRESS_POLL_S)
            self._show_progress(progress, runs, pending, errors, t0)
            busy_s += self.run_ready(tasks, at_most=1)  # the round's progress is shown between tasks
            if not ready:
                continue
            chunk = rounds.pop(ready[0])
            try:
                ray.get(ready[0])
            except Exception as e:  # the worker group failed beyond Ray Train's retries: its units not yet ended
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                for spec in chunk:
                    if spec.name in pending:
                        self._unit_failed(progress, pending.pop(spec.name), str(e), first, errors)
            for spec in chunk:  # a round that returned without a unit's outcome (its lead never reported)
                if spec.name in pending:
                    self._unit_failed(progress, pending.pop(spec.name), "no outcome reported", "no outcome reported",
                                      errors)
        return errors, busy_s

    def _unit_failed(self, progress: console.PassProgress, spec: UnitSpec, error: str, first_line: str,
                     errors: list[str]) -> None:
        errors.append(f"{spec.name}: {error}")
        progress.finish(spec.name, "FAILED")
        log(f"{spec.name} FAILED: {first_line}")

    def _open_unit_runs(self, specs: list[UnitSpec]) -> dict[str, str]:
        """Each unit's MLflow run (and its stage's), created as it starts, so the UI shows it training."""
        t0 = time.perf_counter()
        parent, runs = self.state.parent_run_id, {}
        for spec in specs:
            stage_run = tracking.open_stage_run(self.tracker, parent, spec.stage)
            runs[spec.name] = tracking.open_unit_run(self.tracker, stage_run, spec.name, spec.model.name)
        self._steps = self._steps or tracking.StepLog(self.tracker)
        self.timings["logging"] += time.perf_counter() - t0
        return runs

    def _show_progress(self, progress: console.PassProgress, runs: dict[str, str], pending: dict[str, UnitSpec],
                       errors: list[str], t0: float) -> None:
        """The units' new events: epochs on the console and as step metrics of their MLflow runs; a unit
        done is recorded (and saved) at once, a failed one listed in `errors`."""
        for event in self._progress.drain():
            if event.unit not in runs:  # a late event of an earlier round's failed worker group
                continue
            if event.kind == "epoch":
                progress.update(event)
                self._steps.log(runs[event.unit], event.log)
            elif event.kind == "retry":
                progress.update(event)
            elif event.unit in pending and event.kind == "done":
                metrics = event.metrics or {}
                progress.finish(event.unit, f"done, best epoch {metrics.get('best_epoch')}")
                self._record_unit(pending.pop(event.unit), metrics, time.perf_counter() - t0)
            elif event.unit in pending and event.kind == "failed":
                self._unit_failed(progress, pending.pop(event.unit), event.error, event.error, errors)

    def _record_unit(self, spec: UnitSpec, metrics: dict[str, Any], wall_time_s: float) -> None:
        attempts = int(metrics.get("attempt", 1))
        self.state.units[spec.name] = UnitRecord(
            self.unit_folder(spec), metrics.get("node", ""), int(metrics.get("best_epoch", 0)),
            float(metrics.get("train_clips_per_s", 0)), float(metrics.get("train_time_s", 0)), wall_time_s, attempts)
        self.state.save(self.storage)
        retried = f" after {attempts - 1} failed attempt(s)" if attempts > 1 else ""
        log(f"{spec.name} trained{retried}: best epoch {metrics.get('best_epoch')}, "
            f"{metrics.get('train_clips_per_s', 0):.0f} clips/s, {wall_time_s:.0f} s")

    def unit_folder(self, spec: UnitSpec) -> str:
        """Where a unit of this sweep keeps its files in the storage."""
        return schema.unit_folder(self.state.sweep_id, spec.name)

    def read_unit(self, spec: UnitSpec) -> StoredUnit:
        """A trained unit of this sweep, read back from the storage."""
        return read_unit(self.storage, self.unit_folder(spec), spec.train)

    def _settings(self, specs: list[UnitSpec], placement: Placement, part: int | None = None) -> dict[str, Any]:
        """What `fit_round` needs besides the units: placement, storage, its Ray run name, the progress channel."""
        stages_ = "-".join(dict.fromkeys(s.stage for s in specs)) + (f"-part{part}" if part else "")
        return {"placement": placement, "distill": self.cfg.distill, "storage": self.storage.root_uri,
                "ray_storage": self.storage.uri(schema.RAY_RUNS), "fit_id": secrets.token_hex(4),
                "run_name": schema.ray_run_name(self.state.sweep_id, stages_), "max_failures": self.cfg.ray.max_failures,
                "node_resource_prefix": self.cfg.ray.node_resource_prefix, "progress": self._progress}

    def tune(self, stage: str, units: dict[str, distill.TrainedUnit]) -> dict[str, PostprocessChoice]:
        """Each unit's post-processing, searched by Ray Tune trials over window ranges."""
        t0 = time.perf_counter()
        test = self.data.subsets[TEST]
        choices = tune_postprocessing(
            {variant: u.outputs.test for variant, u in units.items()}, self.data.reference(TEST),
            test.filenames, test.n_frames, self.data.feature_config, self.cfg.postprocess,
            n_ranges=self.cfg.ray.tune_trials_per_variant, storage_path=self.storage.uri(schema.TUNE_RUNS),
            name=schema.ray_run_name(self.state.sweep_id, stage), cpus_per_trial=0 if self._training else 1)
        self.timings["tuning"] += time.perf_counter() - t0
        return choices

    # ---- stages ----------------------------------------------------------------------------------

    def run_stage(self, stage: str, specs: list[UnitSpec], *, started: float | None = None,
                  pseudo_weak: np.ndarray | None = None) -> FinishedStage:
        """A stage's units trained, scored, logged and saved; or, when it finished before, what it saved."""
        if stage in self.state.stages_done:
            finished = FinishedStage.from_json(self.storage.read_bytes(schema.stage_path(self.state.sweep_id, stage)))
            if finished.eval_counts is not None:
                self.counts[stage] = finished.eval_counts
            if finished.pseudo_counts is not None:
                self.pseudo_counts[stage] = finished.pseudo_counts
            return finished
        started = time.perf_counter() if started is None else started
        stored = self.train_units(specs)
        units = {schema.unit_variant(name): distill.TrainedUnit(name, u.result, u.outputs) for name, u in stored.items()}
        outcome = stages.score_stage(stage, units, self.tune(stage, units), self.data, pseudo_weak=pseudo_weak,
                                     started=started, earlier=self.counts, earlier_pseudo=self.pseudo_counts,
                                     ensemble_grid=stages.teacher_grid(self.cfg))
        self.counts[stage] = outcome.eval_counts
        if outcome.pseudo_counts is not None:
            self.pseudo_counts[stage] = outcome.pseudo_counts
        self._log_stage(outcome)
        finished = FinishedStage(outcome.report, outcome.choice, outcome.winners, outcome.eval_counts,
                                 outcome.pseudo_counts)
        self.storage.write_bytes(schema.stage_path(self.state.sweep_id, stage), finished.to_json())
        self.state.stages_done.append(stage)
        self.state.save(self.storage)
        report = outcome.report
        pseudo = (report.pseudo or {}).get("macro", {}).get("f_measure") if outcome.is_pass else None
        log(f"{stage} done in {report.wall_time_s:.0f} s: val macro F1 {100 * report.val['macro']['f_measure']:.2f} %, "
            f"eval {100 * report.eval['macro']['f_measure']:.2f} %"
            + (f", pseudo-label F1 {100 * pseudo:.2f} %" if pseudo is not None else ""))
        return finished

    def _log_stage(self, outcome: StageOutcome) -> None:
        """Pseudo-labels to the storage; the stage's runs to MLflow; a pass's winners to the registry."""
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            parquet = self._write_pseudo_labels(outcome, Path(tmp)) if outcome.is_pass else None
            scores = self._write_scores(outcome, Path(tmp))
            stage_run = tracking.log_stage(self.tracker, self.state.parent_run_id, outcome, self.data, parquet,
                                           scores=scores)
            self.state.stage_run_ids[outcome.stage] = stage_run
            if outcome.is_pass:
                versions = tracking.register_winners(self.tracker, stage_run, outcome, self.data)
                self._log_lineage(outcome, stage_run, parquet, versions, Path(tmp))
        self.tracker.finish(stage_run)
        self.timings["logging"] += time.perf_counter() - t0

    def _write_pseudo_labels(self, outcome: StageOutcome, tmp: Path) -> Path:
        local = write_pseudo_labels(tmp / f"{outcome.stage}.parquet",
                                    outcome.pseudo_labels(self.data, self.cfg.distill, sweep_id=self.state.sweep_id))
        self.storage.put_file(local, schema.pseudo_labels_path(self.state.sweep_id, outcome.stage))
        return local

    def _log_lineage(self, outcome: StageOutcome, stage_run: str, parquet: Path, versions: list, tmp: Path) -> None:
        """The pass's pseudo-labels (and, from pass 2, those it trained on) as MLflow datasets of its runs."""
        sweep_id, k = self.state.sweep_id, schema.pass_index(outcome.stage)
        wrote = tracking.pseudo_label_dataset(parquet, outcome.stage,
                                              self.storage.uri(schema.pseudo_labels_path(sweep_id, outcome.stage)))
        trained_on = None
        if k > 1:
            previous = schema.pass_stage(k - 1)
            rel = schema.pseudo_labels_path(sweep_id, previous)
            trained_on = tracking.pseudo_label_dataset(self.storage.get_file(rel, tmp / "previous.parquet"), previous,
                                                       self.storage.uri(rel))
        tracking.log_pseudo_label_lineage(self.tracker, stage_run, [u.name for u in outcome.units.values()],
                                          wrote=wrote, winner_versions=versions, trained_on=trained_on)

    def _write_scores(self, outcome: StageOutcome, tmp: Path) -> Path:
        """The stage's raw frame scores on test and eval, to the storage; returns the local folder (for MLflow)."""
        folder = tmp / schema.SCORES
        for subset, scores in outcome.frame_scores(self.data, sweep_id=self.state.sweep_id).items():
            local = write_scores(folder / schema.scores_file(subset), scores)
            self.storage.put_file(local, schema.scores_path(self.state.sweep_id, outcome.stage, subset))
        return folder

    def pseudo_labels(self, stage: str) -> np.ndarray:
        """The pseudo-labels a finished pass wrote, as an array in training-clip order."""
        with tempfile.TemporaryDirectory() as tmp:
            local = self.storage.get_file(schema.pseudo_labels_path(self.state.sweep_id, stage), Path(tmp) / "p.parquet")
            labels = read_pseudo_labels(local, frames=self.data.train.features.shape[1], order=self.data.train.filenames)
        return labels.probs

    def run_first_stage(self) -> list[Callable[[], FinishedStage]]:
        """Stage 0: the baseline's stage 1, the tagging model and the topline need only the data: trained together.

        Leaves the tagger's pseudo-weak labels broadcast for pass 1, and returns the scoring of stage 0's stages,
        in table order, for `run_pass(1, meanwhile=...)` to do while pass 1 trains.
        """
        if self.cfg.distill.run_topline and not self.trains_topline:
            log(TOPLINE_SKIPPED_NOTE)
        first = stages.first_units(self.cfg, hidden_labels=self.trains_topline)
        started = time.perf_counter()
        self.train_units([s for s in first if s.stage not in self.state.stages_done])
        trained_s = time.perf_counter() - started
        tagger = self.read_unit(first[-1])
        pseudo_weak = distill.pseudo_weak_targets(self.data, tagger.outputs, self.cfg.distill)
        self.broadcast("pseudo_weak", pseudo_weak)

        def score(stage: str) -> FinishedStage:
            # The tagging row's wall time is stage 0's training and its own scoring ("with baseline" in the table).
            kw = ({"started": time.perf_counter() - trained_s, "pseudo_weak": pseudo_weak}
                  if stage == schema.TAGGING else {})
            return self.run_stage(stage, [s for s in first if s.stage == stage], **kw)
        return [lambda stage=stage: score(stage) for stage in dict.fromkeys(s.stage for s in first)]

    def run_pass(self, k: int, *, meanwhile: Sequence[Callable[[], FinishedStage]] = ()) -> list[FinishedStage]:
        """Pass k: its units trained on the previous pass's pseudo-labels (pass 1: on the pseudo-weak labels).

        Pass 1 trains together with stage 2 of the two-stage baseline (both need only stage 0), which is scored
        as soon as its unit is done. `meanwhile`: earlier stages' scoring, done (first) while the pass trains.
        Returns what `meanwhile` returned, the two-stage baseline's stage and the pass's, in that order.
        """
        stage = schema.pass_stage(k)
        done = self.state.stages_done
        if k > 1 and stage not in done:
            self.broadcast("previous", self.pseudo_labels(schema.pass_stage(k - 1)))
        specs = stages.pass_units(self.cfg, k)
        beside = stages.baseline_second_stage(self.cfg) if k == 1 else []  # a finished one is read back, not retrained
        finished: list[FinishedStage] = []
        tasks: Meanwhile = [((), lambda work=work: finished.append(work())) for work in meanwhile]
        tasks += [((s.name,), lambda s=s: finished.append(self.run_stage(s.stage, [s]))) for s in beside]
        to_train = [s for s in (*beside, *specs) if s.stage not in done]
        if any(s.stage not in done for s in beside):
            baseline = self.read_unit(stages.first_units(self.cfg)[0])
            self.broadcast("baseline_tags", distill.baseline_stage1_tags(self.data, baseline.outputs))
        log(f"{stage}/{self.cfg.distill.passes}: {len(to_train)} unit(s)"
            + (f"; scoring the {len(meanwhile)} stage(s) before it meanwhile" if meanwhile else ""))
        started = time.perf_counter()
        if to_train:
            self.train_units(to_train, meanwhile=tasks)
        else:
            self.run_ready(tasks, all_of_them=True)
        return [*finished, self.run_stage(stage, specs, started=started)]

    def finish(self, reports: list[StageReport]) -> None:
        """The parent run's results and figures; the sweep marked finished."""
        self.timings["total"] = time.perf_counter() - self._started
        tracking.log_sweep_results(self.tracker, self.state.parent_run_id, reports,
                                   {k: v for k, v in self.timings.items() if k != "total"}, self.timings["total"],
                                   [v.name for v in self.cfg.distill.variants])
        self.state.finished = True
        self.state.save(self.storage)


def prepare_sweep_data(cfg: SweepConfig) -> PreparedData:
    """`prepare_data`, exclusive among the sweeps of this machine that share the data workdir.

    The first generates the synthetic set and fills the feature cache; the others wait and then read them.
    """
    with file_lock(Path(cfg.data.workdir) / ".prepare.lock"):
        return prepare_data(cfg.data, cfg.features)


def run_sweep(cfg: SweepConfig, *, resume: bool | str = False) -> SweepSummary:
    """Run (or resume) a whole sweep: baseline and tagging, pass 1, then passes 2..N.

    `resume`: True continues the latest unfinished sweep of this config in the storage; a sweep id, that sweep.
    """
    coord = Coordinator(cfg, resume=resume)
    coord.set_up()
    first = coord.run_first_stage()
    passes, pass_times, reports = cfg.distill.passes, [], []
    for k in range(1, passes + 1):
        t0 = time.perf_counter()
        *_, last = finished = coord.run_pass(k, meanwhile=first if k == 1 else ())
        reports += [f.report for f in finished]
        pass_times.append(time.perf_counter() - t0)
        if k < passes:
            log(_time_left(k, passes, pass_times[-1], len(cfg.distill.variants)))
    reports = in_table_order(reports)
    coord.finish(reports)
    return SweepSummary(coord.state.sweep_id, coord.state.parent_run_id, reports, last.report, last.choice,
                        last.winners, coord.timings)


def _time_left(k: int, passes: int, pass_time_s: float, n_variants: int) -> str:
    left = passes - k
    if k >= 2:  # pass 1 trains one unit, later passes every variant: only they predict the rest
        return f"{schema.pass_stage(k)} finished; about {left * pass_time_s:.0f} s left for {left} more pass(es)"
    return f"{schema.pass_stage(k)} finished; {left} more pass(es) of {n_variants} variants each"


def winner_table(summary: SweepSummary) -> str:
    """The per-class winners of the last pass, as a Markdown table."""
    return results_winner_table(summary.final_report, summary.final_choice, summary.final_winners)
