"""The official two-stage DCASE 2018 Task 4 baseline recipe, as target-building functions.

What the official recipe does (DCASE-REPO/dcase2018_baseline, task4/task4_crnn.py,
task4_crnn.yaml, Dataset_dcase2018.py, evaluation_measures.py):

* stage 1 (`first_pass`): the CRNN with global average pooling over time, trained on the
  weak clips only (fold 1 train = `weak.csv`), a random 20 % of them held out for
  validation (`validation_amount: 0.2`); 100 epochs, batch 16, Adam lr 1e-3; early
  stopping on the validation clip-level macro F1 at threshold 0.5 (`StopperCallback`:
  patience 15, initial delay 5, min_delta 0.01), best weights kept (`StasherCallback`);
* per-class tag thresholds: for each class, the value of 0.0, 0.1, ..., 1.0 that
  maximises that class's clip-level F1 on the stage-1 validation clips (a later
  threshold must be strictly better to replace an earlier one; F1 = 0 when
  2 TP + FP + FN = 0);
* tags of the `unlabel_in_domain` clips (fold 1 test): clip probability >= the class
  threshold (dcase_util's `class_threshold` binarisation is `>=`);
* stage 2 (`second_pass`): the same CRNN without the pooling layer, trained on the
  in-domain clips only (neither weak nor out-of-domain clips) with the frame-level
  loss, every frame labelled with the clip's stage-1 tags (`data_generator(...,
  mode="strong")` repeats the tags over time); the weak clips, their true tags
  repeated the same way, are the validation set (`validation_amount: "weak"`);
  100 epochs, batch 128, the same early stopping;
* post-processing of stage 2: global threshold 0.5, then a median filter of 51 frames
  of 20 ms (`process_activity`, ~1 s).

kdsed differences, for the runner to decide: kdsed's trainer stops on the validation
loss, not on clip-level macro F1; kdsed tunes post-processing on `test` instead of the
fixed 0.5 / 51 frames; a stage-2 `TargetSet` has frame targets only (no clip targets),
so kdsed's clip loss is 0 and only the frame loss trains, as in the original.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kdsed.constants import NUM_CLASSES, UNLABEL_IN_DOMAIN, WEAK
from kdsed.prepare import PreparedData
from kdsed.train import TargetSet

#: The recipe's stage-1 validation share of the weak clips and its tag-threshold grid.
STAGE1_VALIDATION_FRACTION = 0.2
TAG_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.arange(0.0, 1.0 + 1e-6, 0.1))


def stage1_sets(data: PreparedData, *, validation_fraction: float = STAGE1_VALIDATION_FRACTION,
                seed: int = 0) -> tuple[TargetSet, TargetSet]:
    """The weak clips with their tags, split at random into stage-1 training and validation sets."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    rows = np.flatnonzero(data.train_subset == WEAK)
    n_val = int(round(validation_fraction * len(rows)))
    if n_val < 1 or n_val >= len(rows):
        raise ValueError(f"{len(rows)} weak clips cannot be split {1 - validation_fraction:.0%} / "
                         f"{validation_fraction:.0%} with both parts non-empty")
    shuffled = np.random.default_rng(seed).permutation(rows)
    val_rows, train_rows = np.sort(shuffled[:n_val]), np.sort(shuffled[n_val:])
    return _clip_set(data, train_rows), _clip_set(data, val_rows)


def _clip_set(data: PreparedData, rows: np.ndarray) -> TargetSet:
    fs = data.train.select([data.train.filenames[i] for i in rows])
    return TargetSet(fs, weak=data.weak_targets[rows])


def tag_f1(tags: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Clip-level F1 per class of binary tags (n, classes) against true tags, 0 where 2 TP + FP + FN = 0."""
    tags, truth = np.asarray(tags) > 0.5, np.asarray(truth) > 0.5
    tp = (tags & truth).sum(axis=0)
    errors = (tags ^ truth).sum(axis=0)
    denominator = 2 * tp + errors
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def tune_tag_thresholds(clip_probs: np.ndarray, truth: np.ndarray,
                        thresholds: Sequence[float] = TAG_THRESHOLDS) -> np.ndarray:
    """Per class, the threshold whose tags (prob >= threshold) have the best clip-level F1; ties keep the earlier."""
    clip_probs, truth = np.asarray(clip_probs, np.float64), np.asarray(truth, np.float64)
    if clip_probs.shape != truth.shape or clip_probs.ndim != 2 or clip_probs.shape[1] != NUM_CLASSES:
        raise ValueError(f"expected clip probabilities and true tags of the same shape (n, {NUM_CLASSES}), got "
                         f"{clip_probs.shape} and {truth.shape}")
    if np.isnan(truth).any():
        raise ValueError("true tags contain NaN (clips without tags); tune on tagged clips only")
    best_f1 = np.full(NUM_CLASSES, -np.inf)
    best = np.zeros(NUM_CLASSES)
    for threshold in thresholds:
        f1 = tag_f1(clip_probs >= threshold, truth)
        better = f1 > best_f1
        best_f1, best = np.where(better, f1, best_f1), np.where(better, threshold, best)
    return best


def tags_from_probs(clip_probs: np.ndarray, thresholds: float | Sequence[float]) -> np.ndarray:
    """Binary tags (n, classes) float32: clip probability >= the class threshold."""
    thr = np.broadcast_to(np.asarray(thresholds, np.float64), (NUM_CLASSES,))
    return (np.asarray(clip_probs, np.float64) >= thr).astype(np.float32)


def clip_tags_over_frames(tags: np.ndarray, n_frames: int) -> np.ndarray:
    """Frame targets (n, n_frames, classes): every frame of a clip labelled with the clip's tags."""
    tags = np.asarray(tags, np.float32)
    return np.ascontiguousarray(np.broadcast_to(tags[:, None, :], (len(tags), n_frames, tags.shape[1])))


def stage2_training_set(data: PreparedData, train_clip_probs: np.ndarray,
                        thresholds: float | Sequence[float]) -> TargetSet:
    """The in-domain clips, every frame labelled with the stage-1 tags (clip probs of `data.train`, in its order)."""
    if np.shape(train_clip_probs) != (len(data.train), NUM_CLASSES):
        raise ValueError(f"stage-1 clip probabilities have shape {np.shape(train_clip_probs)}, expected one row per "
                         f"training clip {(len(data.train), NUM_CLASSES)}")
    rows = np.flatnonzero(data.train_subset == UNLABEL_IN_DOMAIN)
    if len(rows) == 0:
        raise ValueError(f"no {UNLABEL_IN_DOMAIN} clips among the training clips: stage 2 has nothing to train on")
    fs = data.train.select([data.train.filenames[i] for i in rows])
    tags = tags_from_probs(np.asarray(train_clip_probs)[rows], thresholds)
    return TargetSet(fs, strong=clip_tags_over_frames(tags, fs.features.shape[1]))


def stage2_validation_set(data: PreparedData) -> TargetSet:
    """The weak clips, every frame labelled with the clip's true tags (the recipe's stage-2 validation)."""
    rows = np.flatnonzero(data.train_subset == WEAK)
    fs = data.train.select([data.train.filenames[i] for i in rows])
    return TargetSet(fs, strong=clip_tags_over_frames(data.weak_targets[rows], fs.features.shape[1]))


__all__ = [
    "STAGE1_VALIDATION_FRACTION", "TAG_THRESHOLDS", "clip_tags_over_frames", "stage1_sets", "stage2_training_set",
    "stage2_validation_set", "tag_f1", "tags_from_probs", "tune_tag_thresholds",
]
