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
from dataclasses import dataclass, replace
from typing import Literal, Mapping

import numpy as np

from kdsed import baseline_recipe, distill, schema
from kdsed.config import DistillConfig, ExperimentConfig, ModelConfig, PostprocessConfig, TrainConfig, VariantSpec
from kdsed.constants import CLASSES, EVAL, TEST
from kdsed.distill import Outputs, TrainedUnit, VariantOutcome
from kdsed.prepare import PreparedData
from kdsed.pseudolabels import PseudoLabels
from kdsed.results import StageReport
from kdsed.scores_io import FrameScores
from kdsed.search import PostprocessChoice
from kdsed.metrics import ClipCounts, paired_difference_counts
from kdsed.topline import TOPLINE_SKIPPED_NOTE, topline_training_set
from kdsed.train import TargetSet

#: What a unit trains on: the weak tags (baseline, tagging), weak + pseudo-weak tags (pass 1), or the
#: smoothed strong pseudo-labels of the previous pass with the weak tags (the variants of pass k >= 2).
#: The topline trains on the hidden true strong labels; stage 2 of the two-stage baseline on stage 1's tags of the
#: in-domain clips, repeated over the frames.
TargetKind = Literal["weak", "pseudo-weak", "pseudo-strong", "hidden-strong", "baseline-tags"]


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


def first_units(cfg: ExperimentConfig, *, hidden_labels: bool = False) -> list[UnitSpec]:
    """Stage 0: the baseline (if asked for) and the tagging model on the weak labels; the topline when asked for
    and the data has `hidden_labels` (every unit here needs only the data, so the sweep trains them together).
    The tagging model is last."""
    units = [UnitSpec(schema.unit_name(schema.BASELINE), "weak", cfg.baseline, cfg.tagging_train)
             ] if cfg.distill.run_baseline else []
    if cfg.distill.run_topline and hidden_labels:
        units += [UnitSpec(schema.unit_name(schema.TOPLINE, m), "hidden-strong", cfg.model_config(m), cfg.train)
                  for m in schema.TOPLINE_VARIANTS]
    return [*units, UnitSpec(schema.unit_name(schema.TAGGING), "weak", cfg.deep, cfg.tagging_train)]


def baseline_second_stage(cfg: ExperimentConfig) -> list[UnitSpec]:
    """Stage 2 of the official two-stage baseline (kdsed.baseline_recipe): the baseline CRNN trained at frame level
    on stage 1's tags of the in-domain clips, validated on the weak clips; none when the baseline is off."""
    if not cfg.distill.run_baseline:
        return []
    train = replace(cfg.tagging_train, strong_loss_weight=1.0, weak_loss_weight=0.0)
    return [UnitSpec(schema.unit_name(schema.BASELINE_TWO_STAGE), "baseline-tags", cfg.baseline, train)]


def pass_units(cfg: ExperimentConfig, k: int) -> list[UnitSpec]:
    """The units of pass `k`: the deep model on pseudo-weak labels for k = 1, else every variant."""
    stage = schema.pass_stage(k)
    if k == 1:
        return [UnitSpec(schema.unit_name(stage, schema.FIRST_PASS_VARIANT), "pseudo-weak", cfg.deep,
                         cfg.tagging_train)]
    return [UnitSpec(schema.unit_name(stage, v.name), "pseudo-strong", cfg.model_config(v.model), cfg.train,
                     v.smoothing) for v in cfg.distill.variants]


def training_set(spec: UnitSpec, data: PreparedData, cfg: DistillConfig, *, pseudo_weak: np.ndarray | None = None,
                 previous: np.ndarray | None = None, baseline_tags: np.ndarray | None = None) -> TargetSet:
    """A unit's training targets: the weak tags, the hidden labels (topline), stage 1's tags (two-stage baseline),
    the tagger's pseudo-weak labels (pass 1) or the previous pass's labels."""
    if spec.targets == "weak":
        return distill.tagging_set(data)
    if spec.targets == "hidden-strong":
        targets = topline_training_set(data)
        if targets is None:
            raise ValueError(f"{spec.name}: {TOPLINE_SKIPPED_NOTE}")
        return targets
    if spec.targets == "baseline-tags":
        if baseline_tags is None:
            raise ValueError(f"{spec.name}: stage 2 of the baseline trains on stage 1's tags, but none were given")
        return baseline_recipe.stage2_training_set(data, baseline_tags, 0.5)  # the tags are 0/1 already
    if spec.targets == "pseudo-weak":
        if pseudo_weak is None:
            raise ValueError(f"{spec.name}: pass 1 trains on the pseudo-weak labels, but none were given")
        return TargetSet(data.train, weak=pseudo_weak)
    if previous is None:
        raise ValueError(f"{spec.name}: a variant trains on the previous pass's pseudo-labels, but none were given")
    return distill.variant_training_set(data, previous, VariantSpec(spec.model.name, spec.smoothing), cfg)


def validation_set(spec: UnitSpec, data: PreparedData) -> TargetSet:
    """What a unit stops early on: the `test` clips (their frame labels too when it trains at frame level), or,
    for stage 2 of the two-stage baseline, the weak clips with their tags over the frames (as the recipe)."""
    if spec.targets == "baseline-tags":
        return baseline_recipe.stage2_validation_set(data)
    return distill.validation_set(data, strong=spec.train.strong_loss_weight > 0)


def search_choices(units: Mapping[str, TrainedUnit], data: PreparedData,
                   grid: PostprocessConfig) -> dict[str, PostprocessChoice]:
    """Each unit's post-processing chosen on validation by the serial whole-grid search (Tune's equal)."""
    return {variant: distill.search_choice(data, unit.outputs.test, grid) for variant, unit in units.items()}


@dataclass
class Teacher:
    """What makes a pass's pseudo-labels: its per-class winners, or the ensemble (the mean) of its variants, with
    the post-processing that turns their probabilities into events."""

    kind: str  # "winners" or "ensemble" (`DistillConfig.pseudo_teacher`)
    outputs: Outputs
    choice: PostprocessChoice


def ensemble_teacher(units: Mapping[str, VariantOutcome], data: PreparedData, grid: PostprocessConfig) -> Teacher:
    """The mean of the variants' probabilities, post-processed as the whole-grid search chooses on `test`."""
    outputs = distill.ensemble_outputs(units)
    return Teacher("ensemble", outputs, distill.search_choice(data, outputs.test, grid))


def teacher_grid(cfg: ExperimentConfig) -> PostprocessConfig | None:
    """`score_stage`'s `ensemble_grid` for a config (`.distill`, `.postprocess`): its grid when the config's passes
    hand on the ensemble of their variants, else None."""
    return cfg.postprocess if cfg.distill.pseudo_teacher == "ensemble" else None


@dataclass
class StageOutcome:
    """A scored stage: its units, per-class winners and their merged outputs and choice, its report row."""

    stage: str
    units: dict[str, VariantOutcome]  # variant -> the unit scored under its own choice
    winners: list[str]  # per class, the winning variant
    choice: PostprocessChoice  # per class, the winner's post-processing
    merged: Outputs  # per class, the winner's outputs
    report: StageReport
    unit_eval: dict[str, dict]  # variant -> its eval scores with the macro-F1 interval (`scores_with_interval`)
    eval_counts: ClipCounts | None = None  # per-clip counts of the merged outputs on `eval` (for paired comparisons)
    pseudo_counts: ClipCounts | None = None  # a pass's: per-clip counts of its pseudo-labels against the hidden labels
    teacher: Teacher | None = None  # a pass's: what makes its pseudo-labels (None: the per-class winners)

    @property
    def is_pass(self) -> bool:
        return schema.pass_index(self.stage) is not None

    def frame_scores(self, data: PreparedData, **meta) -> dict[str, FrameScores]:
        """The merged outputs' raw frame scores on `test` and `eval` (written by `kdsed.scores_io.write_scores`)."""
        return {subset: distill.frame_scores(data, probs, subset, stage=self.stage, **meta)
                for subset, probs in ((TEST, self.merged.test), (EVAL, self.merged.eval))}

    def pseudo_labels(self, data: PreparedData, cfg: DistillConfig, **meta) -> PseudoLabels:
        """The pass's strong pseudo-labels of the training clips (the next pass's targets, `cfg.pseudo_strong`),
        with their metadata."""
        if not self.is_pass:
            raise ValueError(f"{self.stage} writes no strong pseudo-labels (only passes do)")
        fc = data.feature_config
        teacher = self.teacher or Teacher("winners", self.merged, self.choice)
        meta = {"pass": schema.stage_index(self.stage), **meta, "winners": dict(zip(CLASSES, self.winners)),
                "teacher": teacher.kind, "targets": cfg.pseudo_strong, "hop_s": fc.hop_s,
                "frame_offset_s": fc.frame_offset_s}
        labels = distill.pseudo_strong_labels(data, teacher.outputs.train, teacher.choice, cfg)
        return PseudoLabels(data.train.filenames, labels, data.train.n_frames, meta)


def score_stage(stage: str, units: Mapping[str, TrainedUnit], choices: Mapping[str, PostprocessChoice],
                data: PreparedData, *, pseudo_weak: np.ndarray | None = None, started: float | None = None,
                earlier: Mapping[str, ClipCounts] | None = None,
                earlier_pseudo: Mapping[str, ClipCounts] | None = None,
                ensemble_grid: PostprocessConfig | None = None) -> StageOutcome:
    """Score a trained stage: per unit and per class winners on `test`, the merged outputs on `test` and `eval`.

    `units` and `choices` are keyed by variant name. `pseudo_weak`: the tagging stage's pseudo-weak labels,
    scored against the hidden labels when the data has them. `started`: `time.perf_counter()` when the
    stage began (its report's wall time), else 0. `earlier`: the eval counts of the stages scored before
    (stage -> `StageOutcome.eval_counts`), for a pass's paired comparisons (`compare_with_earlier`);
    `earlier_pseudo`: the passes' `pseudo_counts`, for the paired difference of a pass's pseudo-labels against
    the previous pass's (`StageReport.comparisons[schema.PSEUDO_VS_PREVIOUS]`). `ensemble_grid` (`teacher_grid`):
    a pass of several variants hands on the ensemble of its variants, post-processed as searched on this grid
    (its pseudo-label scores are then the ensemble's); None: its per-class winners.
    """
    scored = {variant: distill.score_unit(data, unit, choices[variant]) for variant, unit in units.items()}
    winners = list(distill.select_per_class({v: o.scored.choice.f1 for v, o in scored.items()}))
    merged, choice = distill.combine_winners(scored, winners)
    is_pass = schema.pass_index(stage) is not None
    val = distill.score_with(data, merged.test, choice, TEST)
    counts = distill.eval_counts(data, merged.eval, choice)
    unit_counts = {v: distill.eval_counts(data, o.outputs.eval, o.scored.choice) for v, o in scored.items()}
    unit_eval = {v: distill.scores_with_interval(c) for v, c in unit_counts.items()}
    teacher = (ensemble_teacher(scored, data, ensemble_grid) if is_pass and ensemble_grid is not None and len(scored) > 1
               else None)
    labeller = teacher or Teacher("winners", merged, choice)
    pseudo_counts = distill.pseudo_label_counts(data, labeller.outputs.train, labeller.choice) if is_pass else None
    report = StageReport(schema.stage_title(stage), val.to_json(), distill.scores_with_interval(counts),
                         wall_time_s=0.0, pseudo=_pseudo_scores(data, pseudo_counts, pseudo_weak, is_pass),
                         winners=winners if len(scored) > 1 or is_pass else None,
                         variants={v: {"val": o.scored.val.to_json(), "eval": unit_eval[v]}
                                   for v, o in scored.items()} if len(scored) > 1 else {})
    if report.best_single is not None:
        report.comparisons[schema.WINNERS_VS_BEST_SINGLE] = paired_comparison(
            counts, unit_counts[report.best_single], report.best_single)
    if is_pass and earlier:
        compare_with_earlier(report, stage, counts, earlier)
    previous_pass = schema.pass_stage(schema.pass_index(stage) - 1) if is_pass else None
    if pseudo_counts is not None and earlier_pseudo and previous_pass in earlier_pseudo:
        report.comparisons[schema.PSEUDO_VS_PREVIOUS] = paired_comparison(
            pseudo_counts, earlier_pseudo[previous_pass], schema.stage_title(previous_pass))
    report.detection = detection_scores(data, merged, choice)
    if started is not None:
        report.wall_time_s = time.perf_counter() - started
    return StageOutcome(stage, scored, winners, choice, merged, report, unit_eval, counts, pseudo_counts, teacher)


def compare_with_earlier(report: StageReport, stage: str, counts: ClipCounts,
                         earlier: Mapping[str, ClipCounts]) -> None:
    """A pass's paired bootstrap differences (eval macro F1, the same resamples) against the stages before it.

    Against the previous pass (pass 1: the tagging model), the two-stage baseline and the topline, when they
    were scored; the ratio of its macro F1 to the topline's is `kd_topline_ratio`.
    """
    k = schema.pass_index(stage)
    previous = schema.TAGGING if k == 1 else schema.pass_stage(k - 1)
    against = {schema.VS_PREVIOUS: previous, schema.VS_BASELINE: schema.BASELINE_TWO_STAGE,
               schema.VS_TOPLINE: schema.TOPLINE}
    for name, other in against.items():
        if other in earlier:
            report.comparisons[name] = paired_comparison(counts, earlier[other], schema.stage_title(other))
    if schema.TOPLINE in earlier:
        topline_f1 = earlier[schema.TOPLINE].scores().macro.f_measure
        report.kd_topline_ratio = counts.scores().macro.f_measure / topline_f1 if topline_f1 > 0 else None


def paired_comparison(a: ClipCounts, b: ClipCounts, against: str) -> dict:
    """The paired difference a - b of the macro F1 of counts on the same clips, as reports keep it (fractions)."""
    diff = paired_difference_counts(a, b)
    return {"against": against, **diff.macro_f1.to_json(), "share_a_better": diff.to_json()["macro"]["share_a_better"]}


def detection_scores(data: PreparedData, merged: Outputs, choice: PostprocessChoice) -> dict:
    """PSDS1/PSDS2, intersection- and collar-based F1 of the stage's merged outputs on `eval` (not per unit: they
    cost ~1-2 min a stage on the mini set's 880 eval clips, most of it PSDS2)."""
    return distill.detection_scores_with(data, merged.eval, choice, EVAL)


def _pseudo_scores(data: PreparedData, pseudo_counts: ClipCounts | None, pseudo_weak: np.ndarray | None,
                   is_pass: bool) -> dict | None:
    """Quality of what the stage hands on, against the hidden labels (synthetic set only): a pass's pseudo-labels
    with the bootstrap interval of their macro F1 over the training clips."""
    if is_pass:
        return distill.scores_with_interval(pseudo_counts) if pseudo_counts is not None else None
    weak = distill.pseudo_weak_scores(data, pseudo_weak) if pseudo_weak is not None else {}
    return {schema.TAGGING: weak} if weak else None


__all__ = ["StageOutcome", "TargetKind", "Teacher", "ensemble_teacher", "teacher_grid", "UnitSpec", "baseline_second_stage", "compare_with_earlier", "first_units",
           "paired_comparison", "pass_units", "score_stage", "search_choices", "training_set", "validation_set"]
