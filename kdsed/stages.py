"""The stages of the method, written once for both runners.

A stage (baseline, tagging, pass-1 ... pass-N) is planned as a list of `UnitSpec`s
(`first_units`, `pass_units`); each unit trains on `training_set`; and, once its units
are trained and each has its post-processing choice (the serial search, or Ray Tune over
window ranges: the same choice), `score_stage` computes everything the stage yields:
the scores on `test` and `eval`, the per-class winners, the merged outputs, the report
row and the pseudo-labels for the next pass.

The runners only decide *where* units train and what is written where: the serial runner
(`kdsed.experiment`) in its own process, the sweep (`kdsed.sweep`) on Ray with MLflow.
What a stage computes is added here (e.g. an interval, another metric) and both get it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np

from kdsed import distill, schema
from kdsed.config import DistillConfig, ExperimentConfig, ModelConfig, PostprocessConfig, TrainConfig, VariantSpec
from kdsed.constants import CLASSES, EVAL, TEST
from kdsed.distill import Outputs, TrainedUnit, VariantOutcome
from kdsed.prepare import PreparedData
from kdsed.pseudolabels import PseudoLabels
from kdsed.results import StageReport
from kdsed.scores_io import FrameScores
from kdsed.search import PostprocessChoice
from kdsed.train import TargetSet

#: What a unit trains on: the weak tags (baseline, tagging), weak + pseudo-weak tags (pass 1), or the
#: smoothed strong pseudo-labels of the previous pass with the weak tags (the variants of pass k >= 2).
TargetKind = Literal["weak", "pseudo-weak", "pseudo-strong"]


@dataclass(frozen=True)
class UnitSpec:
    """What to train: a unit's name, its targets, the model and its training."""

    name: str  # kdsed.schema.unit_name: "baseline", "tagging", "pass-1/deep", "pass-2/deep-median"
    targets: TargetKind
    model: ModelConfig
    train: TrainConfig
    smoothing: str = "none"

    @property
    def stage(self) -> str:
        return schema.unit_stage(self.name)

    @property
    def variant(self) -> str:
        return schema.unit_variant(self.name)

    @property
    def folder_name(self) -> str:
        return schema.unit_folder_name(self.name)


def first_units(cfg: ExperimentConfig) -> list[UnitSpec]:
    """Stage 0: the baseline (if asked for) and the tagging model, both on the weak labels only."""
    tagging = UnitSpec(schema.unit_name(schema.TAGGING), "weak", cfg.deep, cfg.tagging_train)
    if not cfg.distill.run_baseline:
        return [tagging]
    return [UnitSpec(schema.unit_name(schema.BASELINE), "weak", cfg.baseline, cfg.tagging_train), tagging]


def pass_units(cfg: ExperimentConfig, k: int) -> list[UnitSpec]:
    """The units of pass `k`: the deep model on pseudo-weak labels for k = 1, else every variant."""
    stage = schema.pass_stage(k)
    if k == 1:
        return [UnitSpec(schema.unit_name(stage, schema.FIRST_PASS_VARIANT), "pseudo-weak", cfg.deep,
                         cfg.tagging_train)]
    return [UnitSpec(schema.unit_name(stage, v.name), "pseudo-strong", cfg.model_config(v.model), cfg.train,
                     v.smoothing) for v in cfg.distill.variants]


def training_set(spec: UnitSpec, data: PreparedData, cfg: DistillConfig, *, pseudo_weak: np.ndarray | None = None,
                 previous: np.ndarray | None = None) -> TargetSet:
    """A unit's training targets, from the tagger's pseudo-weak labels (pass 1) or the previous pass's labels."""
    if spec.targets == "weak":
        return distill.tagging_set(data)
    if spec.targets == "pseudo-weak":
        if pseudo_weak is None:
            raise ValueError(f"{spec.name}: pass 1 trains on the pseudo-weak labels, but none were given")
        return TargetSet(data.train, weak=pseudo_weak)
    if previous is None:
        raise ValueError(f"{spec.name}: a variant trains on the previous pass's pseudo-labels, but none were given")
    return distill.variant_training_set(data, previous, VariantSpec(spec.model.name, spec.smoothing), cfg)


def search_choices(units: Mapping[str, TrainedUnit], data: PreparedData,
                   grid: PostprocessConfig) -> dict[str, PostprocessChoice]:
    """Each unit's post-processing chosen on validation by the serial whole-grid search (Tune's equal)."""
    return {variant: distill.search_choice(data, unit.outputs.test, grid) for variant, unit in units.items()}


@dataclass
class StageOutcome:
    """A scored stage: its units, per-class winners and their merged outputs and choice, its report row."""

    stage: str
    units: dict[str, VariantOutcome]  # variant -> the unit scored under its own choice
    winners: list[str]  # per class, the winning variant
    choice: PostprocessChoice  # per class, the winner's post-processing
    merged: Outputs  # per class, the winner's outputs
    report: StageReport
    unit_eval: dict[str, dict]  # variant -> its eval scores with the macro-F1 interval (`score_with_interval`)

    @property
    def is_pass(self) -> bool:
        return schema.pass_index(self.stage) is not None

    def frame_scores(self, data: PreparedData, **meta) -> dict[str, FrameScores]:
        """The merged outputs' raw frame scores on `test` and `eval` (written by `kdsed.scores_io.write_scores`)."""
        return {subset: distill.frame_scores(data, probs, subset, stage=self.stage, **meta)
                for subset, probs in ((TEST, self.merged.test), (EVAL, self.merged.eval))}

    def pseudo_labels(self, data: PreparedData, **meta) -> PseudoLabels:
        """The pass's strong pseudo-labels of the training clips (the next pass's targets), with their metadata."""
        if not self.is_pass:
            raise ValueError(f"{self.stage} writes no strong pseudo-labels (only passes do)")
        fc = data.feature_config
        meta = {"pass": schema.stage_index(self.stage), **meta, "winners": dict(zip(CLASSES, self.winners)),
                "hop_s": fc.hop_s, "frame_offset_s": fc.frame_offset_s}
        return PseudoLabels(data.train.filenames, self.merged.train, data.train.n_frames, meta)


def score_stage(stage: str, units: Mapping[str, TrainedUnit], choices: Mapping[str, PostprocessChoice],
                data: PreparedData, *, pseudo_weak: np.ndarray | None = None,
                started: float | None = None) -> StageOutcome:
    """Score a trained stage: per unit and per class winners on `test`, the merged outputs on `test` and `eval`.

    `units` and `choices` are keyed by variant name. `pseudo_weak`: the tagging stage's pseudo-weak labels,
    scored against the hidden labels when the data has them. `started`: `time.perf_counter()` when the
    stage began (its report's wall time), else 0.
    """
    scored = {variant: distill.score_unit(data, unit, choices[variant]) for variant, unit in units.items()}
    winners = list(distill.select_per_class({v: o.scored.choice.f1 for v, o in scored.items()}))
    merged, choice = distill.combine_winners(scored, winners)
    is_pass = schema.pass_index(stage) is not None
    val = distill.score_with(data, merged.test, choice, TEST)
    ev = distill.score_with_interval(data, merged.eval, choice, EVAL)
    unit_eval = {v: distill.score_with_interval(data, o.outputs.eval, o.scored.choice, EVAL) for v, o in scored.items()}
    report = StageReport(schema.stage_title(stage), val.to_json(), ev, wall_time_s=0.0,
                         pseudo=_pseudo_scores(data, merged.train, choice, pseudo_weak, is_pass),
                         winners=winners if is_pass else None,
                         variants={v: {"val": o.scored.val.to_json(), "eval": unit_eval[v]}
                                   for v, o in scored.items()} if len(scored) > 1 else {})
    report.detection = detection_scores(data, merged, choice)
    if started is not None:
        report.wall_time_s = time.perf_counter() - started
    return StageOutcome(stage, scored, winners, choice, merged, report, unit_eval)


def detection_scores(data: PreparedData, merged: Outputs, choice: PostprocessChoice) -> dict:
    """PSDS1/PSDS2, intersection- and collar-based F1 of the stage's merged outputs on `eval` (not per unit: they
    cost ~1-2 min a stage on the mini set's 880 eval clips, most of it PSDS2)."""
    return distill.detection_scores_with(data, merged.eval, choice, EVAL)


def _pseudo_scores(data: PreparedData, train_probs: np.ndarray, choice: PostprocessChoice,
                   pseudo_weak: np.ndarray | None, is_pass: bool) -> dict | None:
    """Quality of what the stage hands on, against the hidden labels (synthetic set only)."""
    if is_pass:
        quality = distill.pseudo_label_scores(data, train_probs, choice)
        return quality.to_json() if quality else None
    weak = distill.pseudo_weak_scores(data, pseudo_weak) if pseudo_weak is not None else {}
    return {schema.TAGGING: weak} if weak else None


__all__ = ["StageOutcome", "TargetKind", "UnitSpec", "first_units", "pass_units", "score_stage", "search_choices",
           "training_set"]
