"""The coordinator: drives the passes on Ray, logs to MLflow, picks winners, broadcasts pseudo-labels.

Per stage (baseline, tagging, pass-1 ... pass-N): train its units concurrently
as Ray Train TorchTrainers, search post-processing with Ray Tune, score on
validation and eval, pick the best unit per class, write the next pseudo-labels
as Parquet to the sweep storage, log everything to MLflow and register the
per-class winners. State is saved after every unit and stage, so `--resume`
continues from the last finished unit.

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
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from kdsed import distill
from kdsed.config import SweepConfig, dump_yaml
from kdsed.constants import CLASSES, EVAL, TEST
from kdsed.experiment import StageReport, format_table
from kdsed.prepare import PreparedData, prepare_data
from kdsed.pseudolabels import PseudoLabels, read_pseudo_labels, write_pseudo_labels
from kdsed.search import PostprocessChoice
from kdsed.sweep import figures
from kdsed.sweep.interrupts import keep_handlers
from kdsed.sweep.state import SweepState, UnitRecord, open_state, sweep_key
from kdsed.sweep.storage import Storage, file_lock
from kdsed.sweep.tracking import Tracker, score_metrics
from kdsed.sweep.tuning import tune_postprocessing
from kdsed.sweep.units import StoredUnit, UnitSpec, read_unit
from kdsed.sweep.workers import fit_unit, plan_placement


def log(message: str) -> None:
    print(f"[kdsed.sweep {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class StageResult:
    """A finished stage: its report, its winners' post-processing and its merged outputs."""

    report: StageReport
    choice: PostprocessChoice
    merged: distill.Outputs


@dataclass
class SweepSummary:
    sweep_id: str
    parent_run_id: str
    reports: list[StageReport]
    final_choice: PostprocessChoice
    final_winners: list[str]
    timings: dict[str, float]


class Coordinator:
    """One sweep: its config, storage, state, MLflow tracker and the broadcast arrays."""

    def __init__(self, cfg: SweepConfig, *, resume: bool | str = False) -> None:
        self.cfg = cfg
        self.storage = Storage(cfg.tracking.storage)
        self.state = self._open_state(resume)
        self.tracker = Tracker(cfg.tracking, self.state.sweep_id)
        self.timings: dict[str, float] = {"training": 0.0, "tuning": 0.0, "logging": 0.0}
        self.data: PreparedData | None = None
        self.refs: dict[str, Any] = {}
        self.unit_runtime_env: dict[str, Any] = {}

    def _open_state(self, resume: bool | str) -> SweepState:
        state = open_state(self.storage, sweep_key(self.cfg), self.cfg.distill.passes, resume)
        if resume:
            log(f"resuming sweep {state.sweep_id}: {len(state.units)} units and stages {state.stages_done} done")
        return state

    # ---- Ray -------------------------------------------------------------------------------------

    def start_ray(self) -> None:
        t0 = time.perf_counter()
        if not ray.is_initialized():
            # No address (and no RAY_ADDRESS): a Ray of this sweep's own, even when another sweep's local
            # Ray or a `ray start` cluster runs on this machine ("local"; a bare ray.init() could join those).
            address = self.cfg.ray.address or os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, log_to_driver=True)
            else:
                # No dashboard on a laptop (it costs ~9 s and a core); quiet Ray's own Python loggers.
                ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True,
                         logging_config=ray.LoggingConfig(log_level="ERROR"))
        self.timings["ray_start"] = time.perf_counter() - t0
        # Ray Train's placement-group cleaner (a detached actor started per unit) finds its cluster through
        # Ray's address auto-detection, which fails when this machine runs several Ray instances (two
        # sweeps, or a sweep beside a `ray start` cluster): name the cluster to every unit's processes.
        # Without Ray Train's print patch, a worker's progress line is printed once, not twice.
        self.unit_runtime_env = {"env_vars": {"RAY_ADDRESS": ray.get_runtime_context().gcs_address,
                                              "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}
        log(f"Ray up in {self.timings['ray_start']:.1f} s: {ray.cluster_resources()}")

    def train_units(self, specs: list[UnitSpec]) -> dict[str, StoredUnit]:
        """Train every unit not yet done, all at once; returns every unit of `specs` read from storage."""
        pending = [s for s in specs if s.name not in self.state.units]
        if pending:
            rc = self.cfg.ray
            placement = plan_placement(len(pending), rc.workers_per_variant, rc.use_gpu, rc.cpus_per_variant)
            log(f"training {', '.join(s.name for s in pending)} concurrently "
                f"({placement.workers} worker(s) each, {'1 GPU' if placement.use_gpu else f'{placement.cpus_per_worker} CPU'} per worker)")
            t0 = time.perf_counter()
            fit = fit_unit.options(runtime_env=self.unit_runtime_env)
            futures = {fit.remote(s, self.refs, self._settings(s, placement)): s for s in pending}
            errors = []
            while futures:
                [done], _ = ray.wait(list(futures), num_returns=1)
                spec = futures.pop(done)
                try:
                    metrics = ray.get(done)
                except Exception as e:  # keep what finished; report every failure at the end
                    errors.append(f"{spec.name}: {e}")
                    log(f"{spec.name} FAILED: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                    continue
                attempts = int(metrics.get("attempt", 1))
                self.state.units[spec.name] = UnitRecord(
                    self._folder(spec), metrics.get("node", ""), int(metrics.get("best_epoch", 0)),
                    float(metrics.get("train_clips_per_s", 0)), float(metrics.get("train_time_s", 0)),
                    time.perf_counter() - t0, attempts)
                self.state.save(self.storage)
                retried = f" after {attempts - 1} worker failure(s) retried by Ray Train" if attempts > 1 else ""
                log(f"{spec.name} trained{retried}: best epoch {metrics.get('best_epoch')}, "
                    f"{metrics.get('train_clips_per_s', 0):.0f} clips/s, {time.perf_counter() - t0:.0f} s")
            self.timings["training"] += time.perf_counter() - t0
            if errors:
                raise RuntimeError("units failed after Ray's retries (finished units are saved; use --resume):\n"
                                   + "\n".join(errors))
        return {s.name: read_unit(self.storage, self._folder(s), s.train) for s in specs}

    def _folder(self, spec: UnitSpec) -> str:
        return f"{self.state.folder}/units/{spec.folder_name}"

    def _settings(self, spec: UnitSpec, placement) -> dict[str, Any]:
        return {"placement": placement, "distill": self.cfg.distill, "storage": self.storage.root_uri,
                "folder": self._folder(spec), "ray_storage": self.storage.uri("ray"),
                "run_name": f"{self.state.sweep_id}-{spec.folder_name}", "max_failures": self.cfg.ray.max_failures,
                "node_resource_prefix": self.cfg.ray.node_resource_prefix}

    def tune(self, stage: str, units: dict[str, StoredUnit]) -> dict[str, PostprocessChoice]:
        t0 = time.perf_counter()
        test = self.data.subsets[TEST]
        choices = tune_postprocessing(
            {name.split("/")[-1]: u.outputs.test for name, u in units.items()}, self.data.reference(TEST),
            test.filenames, test.n_frames, self.data.feature_config, self.cfg.postprocess,
            n_ranges=self.cfg.ray.tune_trials_per_variant, storage_path=self.storage.uri("tune"),
            name=f"{self.state.sweep_id}-{stage}")
        self.timings["tuning"] += time.perf_counter() - t0
        return choices

    # ---- one stage -------------------------------------------------------------------------------

    def finish_stage(self, stage: str, index: int, units: dict[str, StoredUnit], stage_t0: float,
                     pseudo_weak: dict | None = None) -> StageResult:
        """Tune, score, select per class, write pseudo-labels, log and register a trained stage."""
        choices = self.tune(stage, units)
        outcomes = {}
        for name, unit in units.items():
            variant = name.split("/")[-1]
            scored = distill.Scored(choices[variant], distill.score_with(self.data, unit.outputs.test, choices[variant], TEST),
                                    distill.score_with(self.data, unit.outputs.eval, choices[variant], EVAL))
            outcomes[variant] = distill.VariantOutcome(name, unit.result, unit.outputs, scored)
        winners = list(distill.select_per_class({v: o.scored.choice.f1 for v, o in outcomes.items()}))
        merged, choice = distill.combine_winners(outcomes, winners)
        val = distill.score_with(self.data, merged.test, choice, TEST)
        ev = distill.score_with(self.data, merged.eval, choice, EVAL)
        is_pass = stage.startswith("pass-")
        quality = distill.pseudo_label_scores(self.data, merged.train, choice) if is_pass else None
        pseudo = quality.to_json() if quality else ({"tagging": pseudo_weak} if pseudo_weak else None)
        report = StageReport(stage.replace("-", " "), val.to_json(), ev.to_json(), time.perf_counter() - stage_t0,
                             pseudo=pseudo, winners=winners if is_pass else None,
                             variants={v: {"val": o.scored.val.to_json(), "eval": o.scored.eval.to_json()}
                                       for v, o in outcomes.items()} if len(outcomes) > 1 else {})
        t0 = time.perf_counter()
        parquet = self._write_pseudo_labels(stage, index, merged.train, winners) if is_pass else None
        stage_run = self._log_stage(stage, index, outcomes, report, choice, parquet, merged.test)
        if is_pass:
            self._register_winners(stage, stage_run, outcomes, winners)
        self.tracker.finish(stage_run)
        self.timings["logging"] += time.perf_counter() - t0
        self.storage.write_bytes(f"{self.state.folder}/stages/{stage}.json", json.dumps(
            {"report": asdict(report), "choice": choice.to_dict(), "winners": winners}).encode())
        self.state.stages_done.append(stage)
        self.state.save(self.storage)
        log(f"{stage} done in {report.wall_time_s:.0f} s: val macro F1 {100 * val.macro.f_measure:.2f} %, "
            f"eval {100 * ev.macro.f_measure:.2f} %"
            + (f", pseudo-label F1 {100 * quality.macro.f_measure:.2f} %" if quality else ""))
        return StageResult(report, choice, merged)

    def _write_pseudo_labels(self, stage: str, index: int, probs: np.ndarray, winners: list[str]) -> Path:
        fc = self.data.feature_config
        meta = {"pass": index, "sweep_id": self.state.sweep_id, "winners": dict(zip(CLASSES, winners)),
                "hop_s": fc.hop_s, "frame_offset_s": fc.frame_offset_s}
        local = Path(tempfile.mkdtemp()) / f"{stage}.parquet"
        write_pseudo_labels(local, PseudoLabels(self.data.train.filenames, probs, self.data.train.n_frames, meta))
        self.storage.put_file(local, f"{self.state.folder}/pseudo_labels/{stage}.parquet")
        return local

    def _log_stage(self, stage: str, index: int, outcomes: dict[str, distill.VariantOutcome], report: StageReport,
                   choice: PostprocessChoice, parquet: Path | None, merged_test: np.ndarray) -> str:
        tr = self.tracker
        stage_run = tr.run(stage, stage, self.state.parent_run_id, {"kdsed.pass": str(index), "kdsed.stage": stage})
        self.state.stage_run_ids[stage] = stage_run
        for variant, o in outcomes.items():
            spec_model = o.result.model_config
            run = tr.run(o.name, o.name, stage_run, {"kdsed.pass": str(index), "kdsed.variant": variant,
                                                     "kdsed.model": spec_model.name,
                                                     "kdsed.smoothing": variant.split("-", 1)[1] if "-" in variant else "none"})
            tr.log(run, metrics={**score_metrics("val", o.scored.val), **score_metrics("eval", o.scored.eval),
                                 "best_epoch": o.result.best_epoch, "train_clips_per_s": o.result.train_clips_per_s,
                                 "train_time_s": o.result.train_time_s},
                   params={**{f"model.{k}": v for k, v in asdict(spec_model).items()},
                           **{f"train.{k}": v for k, v in asdict(o.result.train_config).items()},
                           **_choice_params(o.scored.choice)})
            tr.log_series(run, {"train_loss": [h.train_loss for h in o.result.history],
                                "val_loss": [h.val_loss for h in o.result.history]})
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "postprocessing.json").write_text(json.dumps(o.scored.choice.to_dict(), indent=1))
                tr.artifact(run, Path(tmp) / "postprocessing.json")
                tr.artifact(run, figures.loss_curves(Path(tmp), o.name, o.result), "figures")
            tr.finish(run)
        metrics = {**score_metrics("val", report.val), **score_metrics("eval", report.eval), "wall_time_s": report.wall_time_s}
        if report.pseudo and "macro" in report.pseudo:
            metrics.update(score_metrics("pseudo", report.pseudo))
        tr.log(stage_run, metrics=metrics, params={**_choice_params(choice),
               **({f"winner_{c}": w for c, w in zip(CLASSES, report.winners)} if report.winners else {})})
        if parquet is not None:
            tr.artifact(stage_run, parquet, "pseudo_labels")
        with tempfile.TemporaryDirectory() as tmp:
            for png in figures.example_clips(Path(tmp), stage, self.data, merged_test, choice):
                tr.artifact(stage_run, png, "figures")
        # On the parent run: one point per pass (tagging = step 0), so the UI draws F1 over passes.
        parent_metrics = {k: v for k, v in metrics.items() if k.endswith("_macro") or k.startswith(("eval_f1_", "val_f1_"))}
        if stage == "baseline":
            parent_metrics = {f"baseline_{k}": v for k, v in parent_metrics.items()}
        tr.log(self.state.parent_run_id, metrics=parent_metrics, step=index)
        return stage_run

    def _register_winners(self, stage: str, stage_run: str, outcomes: dict[str, distill.VariantOutcome],
                          winners: list[str]) -> None:
        from kdsed.bundle import write_class_bundle
        from kdsed.registry import point_aliases, register_class_bundle

        index = int(stage.split("-")[1])
        versions = {}
        for c, (class_name, variant) in enumerate(zip(CLASSES, winners)):
            o = outcomes[variant]
            ch = o.scored.choice
            provenance = {"sweep_id": self.state.sweep_id, "pass": index, "variant": variant, "unit": o.name,
                          "val_f1": ch.f1[c], "run_id": stage_run}
            with tempfile.TemporaryDirectory() as tmp:
                folder = write_class_bundle(
                    Path(tmp) / class_name, class_name=class_name, model_config=o.result.model_config,
                    state_dict=o.result.state_dict, median_window=int(ch.median_windows[c]),
                    gaussian_sigma=float(ch.gaussian_sigmas[c]), threshold=float(ch.thresholds[c]),
                    feature_config=self.data.feature_config, normalizer=self.data.normalizer, provenance=provenance)
                self.tracker.artifact(stage_run, folder, f"winners/{class_name}")
            versions[class_name] = register_class_bundle(
                self.tracker.client, class_name, self.tracker.artifact_uri(stage_run, f"winners/{class_name}"), stage_run,
                tags={"pass": str(index), "variant": variant, "window": str(ch.median_windows[c]),
                      "threshold": str(ch.thresholds[c]), "val_f1": f"{ch.f1[c]:.6f}", "sweep_id": self.state.sweep_id})
        # All classes' aliases at once, so that another sweep moving them at the same time cannot leave
        # `champion` on a mix of two sweeps' winners (whose normalizers may differ: no bundle could be pulled).
        with self.tracker.store_lock():
            point_aliases(self.tracker.client, versions.values(), ["champion", f"pass-{index}"])


def _choice_params(choice: PostprocessChoice) -> dict[str, str]:
    out = {}
    for c, name in enumerate(CLASSES):
        out[f"pp_window_{name}"] = str(choice.median_windows[c])
        out[f"pp_threshold_{name}"] = str(choice.thresholds[c])
    return out


def _restore_stage(coord: Coordinator, stage: str) -> dict:
    return json.loads(coord.storage.read_bytes(f"{coord.state.folder}/stages/{stage}.json"))


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
    t_start = time.perf_counter()
    coord = Coordinator(cfg, resume=resume)
    state, tr = coord.state, coord.tracker
    log(f"sweep {state.sweep_id}: {cfg.distill.passes} passes, variants "
        f"{', '.join(v.name for v in cfg.distill.variants)}; storage {coord.storage.root_uri}; MLflow {tr.uri}")
    t0 = time.perf_counter()
    coord.data = data = prepare_sweep_data(cfg)
    coord.timings["data"] = time.perf_counter() - t0
    with keep_handlers():  # ray.init replaces the SIGTERM handler (see kdsed.sweep.interrupts)
        coord.start_ray()
    coord.refs["data"] = ray.put(data)
    if state.parent_run_id is None:
        state.parent_run_id = tr.run("sweep", f"sweep-{state.sweep_id}", None, {"kdsed.stage": "sweep"})
        tr.log_config(state.parent_run_id, cfg)
        with tempfile.TemporaryDirectory() as tmp:
            dump_yaml(cfg, Path(tmp) / "config.yaml")
            tr.artifact(state.parent_run_id, Path(tmp) / "config.yaml")
        state.save(coord.storage)
    reports: list[StageReport] = []

    def done_or_run(stage: str, index: int, specs: list[UnitSpec], started: float | None = None,
                    **kw) -> tuple[StageReport, list[str], PostprocessChoice]:
        if stage in state.stages_done:
            saved = _restore_stage(coord, stage)
            return StageReport(**saved["report"]), saved["winners"], PostprocessChoice.from_dict(saved["choice"])
        t0 = time.perf_counter() if started is None else started
        result = coord.finish_stage(stage, index, coord.train_units(specs), t0, **kw)
        return result.report, result.report.winners or [], result.choice

    # Stage 0: the baseline and the tagging model only need the weak labels: train them together.
    first = [UnitSpec("tagging", "tagging", cfg.deep, cfg.tagging_train)]
    if cfg.distill.run_baseline:
        first.insert(0, UnitSpec("baseline", "baseline", cfg.baseline, cfg.tagging_train))
    stage0_started = time.perf_counter()
    coord.train_units([s for s in first if s.stage not in state.stages_done])
    tagger = read_unit(coord.storage, coord._folder(first[-1]), cfg.tagging_train)
    pseudo_weak = distill.pseudo_weak_targets(data, tagger.outputs.train_clip, cfg.distill)
    for spec in first:
        # The tagging row's wall time covers all of stage 0 (the results table says "with baseline").
        kw = {"pseudo_weak": distill.pseudo_weak_scores(data, pseudo_weak), "started": stage0_started} \
            if spec.kind == "tagging" else {}
        reports.append(done_or_run(spec.stage, 0, [spec], **kw)[0])

    coord.refs["pseudo_weak"] = ray.put(pseudo_weak)
    pass_times: list[float] = []
    for k in range(1, cfg.distill.passes + 1):
        stage = f"pass-{k}"
        t0 = time.perf_counter()
        if k == 1:
            specs = [UnitSpec(f"{stage}/deep", "pass1", cfg.deep, cfg.tagging_train)]
        else:
            previous = read_pseudo_labels_from(coord, f"pass-{k - 1}")
            coord.refs["previous"] = ray.put(previous)
            specs = [UnitSpec(f"{stage}/{v.name}", "variant", cfg.model_config(v.model), cfg.train, v.smoothing)
                     for v in cfg.distill.variants]
        log(f"{stage}/{cfg.distill.passes}: {len(specs)} unit(s)")
        report, winners, choice = done_or_run(stage, k, specs)
        reports.append(report)
        pass_times.append(time.perf_counter() - t0)
        left = cfg.distill.passes - k
        if left:
            if k >= 2:  # pass 1 trains one unit, later passes every variant: only they predict the rest
                log(f"{stage} finished; about {left * pass_times[-1]:.0f} s left for {left} more pass(es)")
            else:
                log(f"{stage} finished; {left} more pass(es) of {len(cfg.distill.variants)} variants each")
    tr.log(state.parent_run_id, metrics={"wall_time_s": time.perf_counter() - t_start,
                                         **{f"time_{k}_s": v for k, v in coord.timings.items()}})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "results.md").write_text(format_table(reports))
        (Path(tmp) / "results.json").write_text(json.dumps([asdict(r) for r in reports], indent=1))
        tr.artifact(state.parent_run_id, Path(tmp) / "results.md")
        tr.artifact(state.parent_run_id, Path(tmp) / "results.json")
        for png in figures.sweep_summary(Path(tmp), reports, [v.name for v in cfg.distill.variants]):
            tr.artifact(state.parent_run_id, png, "figures")
    tr.finish(state.parent_run_id)
    state.finished = True
    state.save(coord.storage)
    coord.timings["total"] = time.perf_counter() - t_start
    return SweepSummary(state.sweep_id, state.parent_run_id, reports, choice, winners, coord.timings)


def read_pseudo_labels_from(coord: Coordinator, stage: str) -> np.ndarray:
    """The pseudo-labels a finished pass wrote, as an array in training-clip order."""
    with tempfile.TemporaryDirectory() as tmp:
        local = coord.storage.get_file(f"{coord.state.folder}/pseudo_labels/{stage}.parquet", Path(tmp) / "p.parquet")
        labels = read_pseudo_labels(local, frames=coord.data.train.features.shape[1], order=coord.data.train.filenames)
    return labels.probs


def winner_table(summary: SweepSummary) -> str:
    """The per-class winners of the last pass, as a Markdown table."""
    final = summary.reports[-1]
    ch = summary.final_choice
    lines = ["| class | winner | window (frames) | threshold | val F1 % | eval F1 % |", "|---|---|---|---|---|---|"]
    for c, name in enumerate(CLASSES):
        ev = final.eval["class_wise"][name]["f_measure"]
        lines.append(f"| {name} | {summary.final_winners[c] if summary.final_winners else '-'} | {ch.median_windows[c]} | "
                     f"{ch.thresholds[c]:.2f} | {100 * ch.f1[c]:.2f} | {100 * (ev or 0):.2f} |")
    return "\n".join(lines) + "\n"
