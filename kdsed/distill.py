"""The passes of iterative knowledge distillation, as plain library functions.

tagging (deep, weak labels) -> pseudo-weak labels for unlabeled clips
pass 1  (deep, weak + pseudo-weak) -> first strong pseudo-labels
pass k  (deep|shallow x smoothing of the previous pseudo-labels) -> per-class
        winners on validation -> each winner writes its class's pseudo-labels

`kdsed.stages` puts them together into the stages both runners run: the serial
runner (`kdsed.experiment`) on one machine, the distributed sweep from Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from kdsed import schema
from kdsed.baseline_recipe import tags_from_probs, tune_tag_thresholds
from kdsed.config import DistillConfig, ModelConfig, PostprocessConfig, TrainConfig, VariantSpec
from kdsed.constants import EVAL, NUM_CLASSES, TEST, WEAK
from kdsed.metrics import ClipCounts, EventScores, bootstrap_counts, event_scores
from kdsed.metrics.psds import detection_scores
from kdsed.postprocess import binarize, fill_invalid_frames, gaussian_smooth, median_smooth
from kdsed.prepare import PreparedData, weak_matrix
from kdsed.scores_io import FrameScores
from kdsed.search import PostprocessChoice, apply_postprocessing, search_postprocessing, smooth_as_chosen
from kdsed.train import EpochLog, TargetSet, VariantResult, predict, train_variant

EpochCallback = Callable[[EpochLog], None]
#: The grid of pass 1's tuned pseudo-weak tag thresholds (the recipe's 0.0-1.0 grid less its ends).
PSEUDO_WEAK_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


@dataclass
class Outputs:
    """Frame probabilities of one model (or of the per-class winners) on every clip set."""

    train: np.ndarray  # (n_train, frames, classes)
    test: np.ndarray
    eval: np.ndarray
    train_clip: np.ndarray | None = None  # (n_train, classes) clip probabilities
    test_clip: np.ndarray | None = None  # (n_test, classes) clip probabilities (tag thresholds are tuned on them)


@dataclass
class TrainedUnit:
    """One trained model of a stage and its outputs, before its post-processing is chosen."""

    name: str  # the unit's name, e.g. "pass-2/deep-none" (kdsed.schema.unit_name)
    result: VariantResult
    outputs: Outputs


@dataclass
class Scored:
    """Post-processing tuned on validation (`test`), and the resulting scores."""

    choice: PostprocessChoice
    val: EventScores
    eval: EventScores


@dataclass
class VariantOutcome:
    """A trained variant of a pass with its outputs and scores."""

    name: str
    result: VariantResult
    outputs: Outputs
    scored: Scored


def validation_set(data: PreparedData, *, strong: bool) -> TargetSet:
    """The `test` subset with its true tags (and frame labels when `strong`)."""
    return TargetSet(data.subsets[TEST], weak=test_tags(data), strong=data.strong_targets(TEST) if strong else None)


def tagging_set(data: PreparedData) -> TargetSet:
    """The weakly labelled clips with their tags (the tagging model's training set)."""
    rows = np.flatnonzero(data.train_subset == WEAK)
    fs = data.train.select([data.train.filenames[i] for i in rows])
    return TargetSet(fs, weak=data.weak_targets[rows])


def test_tags(data: PreparedData) -> np.ndarray:
    """The true tags (n_test, classes) of the `test` clips, from their strong labels."""
    ref = data.reference(TEST)
    return weak_matrix([tuple(sorted({e.label for e in ref.get(f, [])})) for f in data.subsets[TEST].filenames])


def pseudo_weak_thresholds(data: PreparedData, outputs: "Outputs", cfg: DistillConfig) -> np.ndarray:
    """Per class, the tag threshold of the tagger's clip probabilities that pass 1's pseudo-weak labels use.

    "tuned": the value of 0.1, 0.2, ..., 0.9 with the best clip-level F1 of the tagger on the `test` tags (ties:
    the lower; 0 and 1, which would tag every clip or none, are left out); "hard": `cfg.pseudo_weak_threshold`
    for every class; "soft": NaN (no thresholding).
    """
    if cfg.pseudo_weak == "soft":
        return np.full(NUM_CLASSES, np.nan)
    if cfg.pseudo_weak == "hard":
        return np.full(NUM_CLASSES, cfg.pseudo_weak_threshold)
    if outputs.test_clip is None:
        raise ValueError("tuned pseudo-weak thresholds need the tagger's clip probabilities on `test`; this unit "
                         "was stored without them (trained by an older kdsed: retrain it or set pseudo_weak: hard)")
    return tune_tag_thresholds(outputs.test_clip, test_tags(data))


def baseline_stage1_tags(data: PreparedData, outputs: "Outputs") -> np.ndarray:
    """Stage 1 of the two-stage baseline tags every training clip: its clip probabilities at the per-class
    thresholds with the best clip-level F1 on the `test` tags (the recipe tunes them on held-out weak clips;
    kdsed's stage 1 trains on all weak clips and stops early on `test`, so it tunes there too)."""
    if outputs.train_clip is None or outputs.test_clip is None:
        raise ValueError("stage 1 of the baseline was stored without its clip probabilities; retrain it")
    return tags_from_probs(outputs.train_clip, tune_tag_thresholds(outputs.test_clip, test_tags(data)))


def pseudo_weak_targets(data: PreparedData, outputs: "Outputs", cfg: DistillConfig) -> np.ndarray:
    """Clip targets for all training clips: true tags for weak clips, the tagger's (`cfg.pseudo_weak`) for the rest."""
    if outputs.train_clip is None:
        raise ValueError("the tagger's outputs carry no clip probabilities of the training clips")
    pseudo = outputs.train_clip.astype(np.float32)
    if cfg.pseudo_weak != "soft":
        pseudo = tags_from_probs(pseudo, pseudo_weak_thresholds(data, outputs, cfg))
    is_weak = (data.train_subset == WEAK)[:, None]
    return np.where(is_weak, data.weak_targets, pseudo).astype(np.float32)


def pseudo_strong_labels(data: PreparedData, train_probs: np.ndarray, choice: PostprocessChoice,
                         cfg: DistillConfig) -> np.ndarray:
    """The frame targets a pass hands the next (`cfg.pseudo_strong`): its probabilities of the training clips
    ("soft"), or the events they give under the pass's own post-processing as 0/1 frames ("hard")."""
    if cfg.pseudo_strong == "soft":
        return train_probs
    n_valid = data.train.n_frames
    active = binarize(smooth_as_chosen(train_probs, choice, n_valid), choice.thresholds, n_valid)
    return np.ascontiguousarray(active.transpose(0, 2, 1)).astype(np.float32)


def smooth_pseudo_labels(probs: np.ndarray, smoothing: str, cfg: DistillConfig,
                         n_valid_frames: np.ndarray | None = None) -> np.ndarray:
    """The previous pass's strong pseudo-labels, smoothed as a variant asks.

    A short clip is smoothed as if it ended at its last valid frame (not against its zero padding).
    """
    if smoothing == "none":
        return probs
    out = fill_invalid_frames(probs, n_valid_frames) if n_valid_frames is not None else probs
    out = median_smooth(out, cfg.pseudo_median_window)
    if smoothing == "median+gaussian":
        out = gaussian_smooth(out, cfg.pseudo_gaussian_sigma)
    if n_valid_frames is not None:
        out = out * (np.arange(out.shape[1])[None, :] < np.asarray(n_valid_frames)[:, None])[:, :, None]
    return out.astype(np.float32)


def strong_targets(data: PreparedData, pseudo: np.ndarray, cfg: DistillConfig) -> np.ndarray:
    """Strong training targets; for weak clips, classes absent from the tags are forced to 0."""
    if not cfg.mask_weak_clips:
        return pseudo
    tags = np.nan_to_num(data.weak_targets, nan=1.0)
    return (pseudo * tags[:, None, :]).astype(np.float32)


def predict_all(result: VariantResult, data: PreparedData, device: str = "auto") -> Outputs:
    """The model's frame (and clip) probabilities on training, validation and eval clips."""
    model = result.model()
    train_frames, train_clip = predict(model, data.train, device=device)
    test_frames, test_clip = predict(model, data.subsets[TEST], device=device)
    eval_frames, _ = predict(model, data.subsets[EVAL], device=device)
    return Outputs(train_frames, test_frames, eval_frames, train_clip, test_clip)


def search_choice(data: PreparedData, test_probs: np.ndarray, grid: PostprocessConfig) -> PostprocessChoice:
    """Per-class window and threshold chosen on validation (`test`) by the whole-grid search."""
    test_fs = data.subsets[TEST]
    return search_postprocessing(test_probs, data.reference(TEST), test_fs.filenames, data.feature_config, grid,
                                 n_valid_frames=test_fs.n_frames)


def score_with(data: PreparedData, probs: np.ndarray, choice: PostprocessChoice, subset: str) -> EventScores:
    """Event scores of `probs` on a strongly labelled subset under a fixed post-processing."""
    fs = data.subsets[subset]
    estimated = apply_postprocessing(probs, choice, data.feature_config, fs.filenames, n_valid_frames=fs.n_frames)
    return event_scores(data.reference(subset), estimated)


def eval_counts(data: PreparedData, probs: np.ndarray, choice: PostprocessChoice, subset: str = EVAL) -> ClipCounts:
    """Per-clip event counts of `probs` on a strongly labelled subset under a fixed post-processing."""
    fs = data.subsets[subset]
    estimated = apply_postprocessing(probs, choice, data.feature_config, fs.filenames, n_valid_frames=fs.n_frames)
    return ClipCounts.from_tables(data.reference(subset), estimated, fs.filenames)


def scores_with_interval(counts: ClipCounts) -> dict:
    """The scores of `counts` as JSON, with a 95 % bootstrap interval of the macro F1 (1,000 resamples, seed 0).

    The resamples depend only on the number of clips, so every stage and variant scored on a subset is
    resampled identically (and the paired differences of `kdsed.stages` use the same resamples).
    """
    boot = bootstrap_counts(counts)
    scores = boot.point.to_json()
    scores[schema.MACRO_INTERVAL] = {"f_measure": [boot.macro_f1.low, boot.macro_f1.high], "level": boot.level,
                                     "n_clips": boot.n_clips, "n_resamples": boot.n_resamples}
    return scores


def score_with_interval(data: PreparedData, probs: np.ndarray, choice: PostprocessChoice, subset: str) -> dict:
    """`score_with` as JSON, with a 95 % bootstrap interval of the macro F1 over the subset's clips."""
    return scores_with_interval(eval_counts(data, probs, choice, subset))


def frame_scores(data: PreparedData, probs: np.ndarray, subset: str, **meta) -> FrameScores:
    """A model's raw frame scores on a subset, with its frame times (what `kdsed.scores_io` writes)."""
    fs = data.subsets[subset]
    return FrameScores.from_outputs(fs.filenames, probs, fs.n_frames, data.feature_config, subset=subset, **meta)


def detection_scores_with(data: PreparedData, probs: np.ndarray, choice: PostprocessChoice, subset: str) -> dict:
    """PSDS1/PSDS2 of the raw `probs`, intersection- and collar-based F1 under `choice` (`kdsed.metrics.psds`), as JSON.

    PSDS sees the model's scores as they are (no post-processing); the two F1s see the scores smoothed
    and cut as `choice` says, like the event F1.
    """
    scores = frame_scores(data, probs, subset)
    smoothed = smooth_as_chosen(probs, choice, scores.n_frames)
    return detection_scores(scores.to_sed_scores(), data.reference(subset), scores.durations_s(),
                            thresholds=choice.thresholds, thresholded=scores.to_sed_scores(smoothed)).to_json()


def train_unit(name: str, model_cfg: ModelConfig, train_cfg: TrainConfig, train: TargetSet, data: PreparedData,
               *, on_epoch: EpochCallback | None = None, checkpoint_dir=None, val: TargetSet | None = None) -> TrainedUnit:
    """Train one model (early stopping on `val`, by default the `test` clips) and predict every clip set."""
    val = val if val is not None else validation_set(data, strong=train_cfg.strong_loss_weight > 0)
    result = train_variant(model_cfg, train_cfg, train, val, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir)
    return TrainedUnit(name, result, predict_all(result, data, train_cfg.device))


def score_unit(data: PreparedData, unit: TrainedUnit, choice: PostprocessChoice) -> VariantOutcome:
    """A trained unit scored on `test` and `eval` under the post-processing chosen for it."""
    scored = Scored(choice, score_with(data, unit.outputs.test, choice, TEST),
                    score_with(data, unit.outputs.eval, choice, EVAL))
    return VariantOutcome(unit.name, unit.result, unit.outputs, scored)


def variant_training_set(data: PreparedData, previous: np.ndarray, variant: VariantSpec,
                         cfg: DistillConfig) -> TargetSet:
    """Training targets of a pass >= 2 variant: smoothed strong pseudo-labels, true tags for weak clips."""
    strong = strong_targets(data, smooth_pseudo_labels(previous, variant.smoothing, cfg, data.train.n_frames), cfg)
    return TargetSet(data.train, weak=data.weak_targets, strong=strong)


def select_per_class(val_f1: Mapping[str, Sequence[float]]) -> tuple[str, ...]:
    """For each class, the variant with the highest validation F1 (ties: the first listed)."""
    names = list(val_f1)
    if not names:
        raise ValueError("no variants to select from")
    table = np.asarray([val_f1[n] for n in names], dtype=np.float64)
    if table.shape != (len(names), NUM_CLASSES):
        raise ValueError(f"validation F1 table has shape {table.shape}, expected ({len(names)}, {NUM_CLASSES})")
    return tuple(names[i] for i in np.argmax(table, axis=0))


def combine_winners(outcomes: Mapping[str, VariantOutcome], winners: Sequence[str]) -> tuple[Outputs, PostprocessChoice]:
    """Per class, the winner's outputs and post-processing."""
    first = outcomes[winners[0]].outputs
    merged = Outputs(np.empty_like(first.train), np.empty_like(first.test), np.empty_like(first.eval))
    for c, name in enumerate(winners):
        o = outcomes[name].outputs
        merged.train[..., c], merged.test[..., c], merged.eval[..., c] = o.train[..., c], o.test[..., c], o.eval[..., c]
    choice = PostprocessChoice.per_class([outcomes[name].scored.choice for name in winners])
    return merged, choice


def ensemble_outputs(outcomes: Mapping[str, VariantOutcome]) -> Outputs:
    """The mean of the variants' frame probabilities on every clip set (clip probabilities too when all have them)."""
    outs = [o.outputs for o in outcomes.values()]
    if not outs:
        raise ValueError("no variants to average")
    mean = lambda arrays: np.mean(np.stack(arrays), axis=0).astype(np.float32)  # noqa: E731
    clip = {k: mean([getattr(o, k) for o in outs]) if all(getattr(o, k) is not None for o in outs) else None
            for k in ("train_clip", "test_clip")}
    return Outputs(mean([o.train for o in outs]), mean([o.test for o in outs]), mean([o.eval for o in outs]), **clip)


def pseudo_label_counts(data: PreparedData, train_probs: np.ndarray, choice: PostprocessChoice) -> ClipCounts | None:
    """Per-clip event counts of the training pseudo-labels against the hidden true labels, over the clips that
    have them (synthetic set only; None elsewhere). `.scores()` gives their event scores; a bootstrap over
    these clips gives their interval and the paired difference between two passes' pseudo-labels."""
    hidden = data.hidden_reference()
    if hidden is None:
        return None
    estimated = apply_postprocessing(train_probs, choice, data.feature_config, data.train.filenames,
                                     n_valid_frames=data.train.n_frames)
    return ClipCounts.from_tables(hidden, {f: estimated[f] for f in hidden if f in estimated}, sorted(hidden))


def pseudo_label_scores(data: PreparedData, train_probs: np.ndarray, choice: PostprocessChoice) -> EventScores | None:
    """Event scores of the training pseudo-labels against the hidden true labels (synthetic set only)."""
    counts = pseudo_label_counts(data, train_probs, choice)
    return None if counts is None else counts.scores()


def pseudo_weak_scores(data: PreparedData, targets: np.ndarray) -> dict[str, float]:
    """Tagging F1 (micro) of the pseudo-weak labels of unlabeled clips against the hidden labels."""
    hidden = data.hidden_reference()
    if hidden is None:
        return {}
    rows = [i for i, f in enumerate(data.train.filenames) if data.train_subset[i] != WEAK and f in hidden]
    truth = weak_matrix([tuple({e.label for e in hidden[data.train.filenames[i]]}) for i in rows])
    guess = targets[rows] >= 0.5
    tp = float(np.sum(guess & (truth == 1)))
    fp, fn = float(np.sum(guess & (truth == 0))), float(np.sum(~guess & (truth == 1)))
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "f_measure": 2 * tp / max(2 * tp + fp + fn, 1)}


__all__ = [
    "Outputs", "Scored", "TrainedUnit", "VariantOutcome", "combine_winners", "ensemble_outputs", "predict_all",
    "pseudo_label_counts", "pseudo_label_scores",
    "pseudo_strong_labels", "pseudo_weak_scores", "pseudo_weak_targets", "pseudo_weak_thresholds", "test_tags", "baseline_stage1_tags", "score_unit", "score_with", "score_with_interval", "scores_with_interval", "eval_counts", "search_choice", "select_per_class", "detection_scores_with", "frame_scores",
    "smooth_pseudo_labels", "strong_targets", "tagging_set", "train_unit", "validation_set",
    "variant_training_set",
]
