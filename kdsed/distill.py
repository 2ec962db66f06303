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
from kdsed.config import DistillConfig, ModelConfig, PostprocessConfig, TrainConfig, VariantSpec
from kdsed.constants import EVAL, NUM_CLASSES, TEST, WEAK
from kdsed.metrics import EventScores, bootstrap_scores, event_scores
from kdsed.metrics.psds import detection_scores
from kdsed.postprocess import fill_invalid_frames, gaussian_smooth, median_smooth
from kdsed.prepare import PreparedData, weak_matrix
from kdsed.scores_io import FrameScores
from kdsed.search import PostprocessChoice, apply_postprocessing, search_postprocessing, smooth_as_chosen
from kdsed.train import EpochLog, TargetSet, VariantResult, predict, train_variant

EpochCallback = Callable[[EpochLog], None]


@dataclass
class Outputs:
    """Frame probabilities of one model (or of the per-class winners) on every clip set."""

    train: np.ndarray  # (n_train, frames, classes)
    test: np.ndarray
    eval: np.ndarray
    train_clip: np.ndarray | None = None  # (n_train, classes) clip probabilities


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
    ref = data.reference(TEST)
    fs = data.subsets[TEST]
    tags = weak_matrix([tuple(sorted({e.label for e in ref.get(f, [])})) for f in fs.filenames])
    return TargetSet(fs, weak=tags, strong=data.strong_targets(TEST) if strong else None)


def tagging_set(data: PreparedData) -> TargetSet:
    """The weakly labelled clips with their tags (the tagging model's training set)."""
    rows = np.flatnonzero(data.train_subset == WEAK)
    fs = data.train.select([data.train.filenames[i] for i in rows])
    return TargetSet(fs, weak=data.weak_targets[rows])


def pseudo_weak_targets(data: PreparedData, clip_probs: np.ndarray, cfg: DistillConfig) -> np.ndarray:
    """Clip targets for all training clips: true tags for weak clips, the tagger's for the rest."""
    pseudo = clip_probs.astype(np.float32)
    if cfg.pseudo_weak == "hard":
        pseudo = (pseudo >= cfg.pseudo_weak_threshold).astype(np.float32)
    is_weak = (data.train_subset == WEAK)[:, None]
    return np.where(is_weak, data.weak_targets, pseudo)


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
    test_frames, _ = predict(model, data.subsets[TEST], device=device)
    eval_frames, _ = predict(model, data.subsets[EVAL], device=device)
    return Outputs(train_frames, test_frames, eval_frames, train_clip)


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


def score_with_interval(data: PreparedData, probs: np.ndarray, choice: PostprocessChoice, subset: str) -> dict:
    """`score_with` as JSON, with a 95 % bootstrap interval of the macro F1 over the subset's clips (1,000 resamples).

    The resamples depend only on the number of clips (seed 0), so every stage and variant scored on a
    subset is resampled identically.
    """
    fs = data.subsets[subset]
    estimated = apply_postprocessing(probs, choice, data.feature_config, fs.filenames, n_valid_frames=fs.n_frames)
    boot = bootstrap_scores(data.reference(subset), estimated, fs.filenames)
    scores = boot.point.to_json()
    scores[schema.MACRO_INTERVAL] = {"f_measure": [boot.macro_f1.low, boot.macro_f1.high], "level": boot.level,
                            "n_clips": boot.n_clips, "n_resamples": boot.n_resamples}
    return scores


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
               *, on_epoch: EpochCallback | None = None, checkpoint_dir=None) -> TrainedUnit:
    """Train one model (early stopping on the validation set) and predict every clip set."""
    val = validation_set(data, strong=train_cfg.strong_loss_weight > 0)
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


def pseudo_label_scores(data: PreparedData, train_probs: np.ndarray, choice: PostprocessChoice) -> EventScores | None:
    """Event scores of the training pseudo-labels against the hidden true labels (synthetic set only)."""
    hidden = data.hidden_reference()
    if hidden is None:
        return None
    estimated = apply_postprocessing(train_probs, choice, data.feature_config, data.train.filenames,
                                     n_valid_frames=data.train.n_frames)
    return event_scores(hidden, {f: estimated.get(f, []) for f in hidden})


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
    "Outputs", "Scored", "TrainedUnit", "VariantOutcome", "combine_winners", "detection_scores_with", "frame_scores",
    "predict_all", "pseudo_label_scores",
    "pseudo_weak_scores", "pseudo_weak_targets", "score_unit", "score_with", "score_with_interval", "search_choice", "select_per_class",
    "smooth_pseudo_labels", "strong_targets", "tagging_set", "train_unit", "validation_set",
    "variant_training_set",
]
