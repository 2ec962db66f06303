"""Per-class choice of smoothing window, Gaussian sigma and threshold by validation event-F1.

Classes do not interact in the event-based metric, so one pass over the grid scores
every class at once: smooth all classes once per (window, sigma), binarise at every
threshold together, and count true positives for all thresholds in one matching
(`kdsed.metrics.match_counts`, one slot per threshold). The F1 values are computed with
sed_eval's formulas from the exact counts, so the chosen F1 is the value `sed_eval_scores`
gives for `apply_postprocessing`'s output.

Ties (equal F1, compared exactly as the fraction 2 TP / (n_ref + n_sys)) go to the
smaller median window, then the smaller sigma, then the threshold closest to 0.5, then
the lower threshold. A class without validation references has F1 NaN everywhere and so
gets the tie-break choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from kdsed.config import FeatureConfig, PostprocessConfig
from kdsed.constants import CLASSES, NUM_CLASSES
from kdsed.events import EventTable
from kdsed.metrics.fast import EventArrays, match_counts
from kdsed.postprocess import (
    active_runs,
    binarize,
    decode_events,
    fill_invalid_frames,
    frames_to_seconds,
    gaussian_smooth,
    median_smooth,
)

Smoothing = Literal["median", "median+gaussian"]


@dataclass(frozen=True)
class PostprocessChoice:
    """Per-class post-processing (median window and Gaussian sigma in frames, threshold) and its validation F/P/R.

    Median filtering is applied first, then the Gaussian. `f1_grid` (not serialised) is the
    F1 of every class over the searched grid, shape (n_windows, n_sigmas, n_thresholds, n_classes),
    with axes `grid.median_windows`, `grid.gaussian_sigmas`, `grid.thresholds`.
    """

    median_windows: tuple[int, ...]
    gaussian_sigmas: tuple[float, ...]
    thresholds: tuple[float, ...]
    f1: tuple[float, ...]
    precision: tuple[float, ...] = (math.nan,) * NUM_CLASSES
    recall: tuple[float, ...] = (math.nan,) * NUM_CLASSES
    f1_grid: np.ndarray | None = field(default=None, compare=False, repr=False)
    grid: PostprocessConfig | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("median_windows", "gaussian_sigmas", "thresholds", "f1", "precision", "recall"):
            if len(getattr(self, name)) != NUM_CLASSES:
                raise ValueError(f"PostprocessChoice.{name}: expected {NUM_CLASSES} values (one per class), "
                                 f"got {len(getattr(self, name))}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN becomes null), keyed by field, values in `CLASSES` order."""
        def clean(values: Sequence[float]) -> list[float | None]:
            return [None if math.isnan(v) else float(v) for v in values]

        return {
            "classes": list(CLASSES),
            "median_windows": [int(w) for w in self.median_windows],
            "gaussian_sigmas": [float(s) for s in self.gaussian_sigmas],
            "thresholds": [float(t) for t in self.thresholds],
            "f1": clean(self.f1),
            "precision": clean(self.precision),
            "recall": clean(self.recall),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostprocessChoice:
        """Inverse of `to_dict`; checks the class list."""
        classes = list(data.get("classes", CLASSES))
        if classes != list(CLASSES):
            raise ValueError(f"post-processing choice for classes {classes}, expected {list(CLASSES)}")

        def floats(key: str) -> tuple[float, ...]:
            return tuple(math.nan if v is None else float(v) for v in data.get(key, [None] * NUM_CLASSES))

        return cls(
            median_windows=tuple(int(w) for w in data["median_windows"]),
            gaussian_sigmas=tuple(float(s) for s in data["gaussian_sigmas"]),
            thresholds=tuple(float(t) for t in data["thresholds"]),
            f1=floats("f1"),
            precision=floats("precision"),
            recall=floats("recall"),
        )

    @classmethod
    def per_class(cls, choices: Sequence[PostprocessChoice]) -> PostprocessChoice:
        """Class c's parameters and scores taken from `choices[c]` (e.g. each class's winning variant)."""
        if len(choices) != NUM_CLASSES:
            raise ValueError(f"per_class needs {NUM_CLASSES} choices (one per class), got {len(choices)}")
        keys = ("median_windows", "gaussian_sigmas", "thresholds", "f1", "precision", "recall")
        return cls(**{k: tuple(getattr(choices[c], k)[c] for c in range(NUM_CLASSES)) for k in keys})


def _check_inputs(probs: np.ndarray, filenames: Sequence[str]) -> np.ndarray:
    x = np.asarray(probs, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != NUM_CLASSES or x.shape[0] != len(filenames):
        raise ValueError(f"expected probabilities of shape (n_clips={len(filenames)}, n_frames, {NUM_CLASSES}), "
                         f"got {x.shape}")
    return x


def _reference_arrays(reference: EventTable, filenames: Sequence[str]) -> EventArrays:
    missing = [f for f in filenames if f not in reference]
    if missing:
        raise ValueError(f"{len(missing)} clip(s) have no entry in the reference, e.g. {missing[0]!r}")
    return EventArrays.from_table({f: reference[f] for f in filenames}, filenames)


def _score_thresholds(smoothed: np.ndarray, thresholds: np.ndarray, ref: EventArrays, feature_cfg: FeatureConfig,
                      n_valid_frames: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """TP and n_sys, each (n_thresholds, n_classes), of the events decoded at every threshold."""
    n_clips, _, n_classes = smoothed.shape
    n_thr = len(thresholds)
    active = binarize(smoothed, np.repeat(thresholds[:, None], n_classes, axis=1), n_valid_frames)
    (slot, clip, cls), start, end = active_runs(active)
    onset_s, offset_s = frames_to_seconds(start, end, feature_cfg)
    keep = onset_s < offset_s
    slot, clip, cls, onset_s, offset_s = slot[keep], clip[keep], cls[keep], onset_s[keep], offset_s[keep]
    tp = match_counts(ref.groups, ref.onset_s, ref.offset_s, clip * n_classes + cls, onset_s, offset_s,
                      n_groups=n_clips * n_classes, est_slots=slot, n_slots=n_thr)
    tp = tp.reshape(n_thr, n_clips, n_classes).sum(axis=1)
    n_sys = np.bincount(slot * n_classes + cls, minlength=n_thr * n_classes).reshape(n_thr, n_classes)
    return tp, n_sys


def _sed_eval_fpr(tp: np.ndarray, n_sys: np.ndarray, n_ref: np.ndarray) -> tuple[np.ndarray, ...]:
    """sed_eval's class-wise F, P, R ('zero_score') on arrays of counts."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_sys == 0, 0.0, tp / np.maximum(n_sys, 1).astype(np.float64))
        recall = np.where(n_ref == 0, np.nan, tp / np.maximum(n_ref, 1).astype(np.float64))
        f1 = np.where((precision == 0) & (recall == 0), 0.0, 2.0 * precision * recall / (1.0 * precision + recall))
    return f1, precision, recall


def _best_index(exact_f1: np.ndarray, windows: Sequence[int], sigmas: Sequence[float],
                thresholds: Sequence[float]) -> tuple[int, int, int]:
    """Index (window, sigma, threshold) of the best F1 of one class, ties broken as the module says."""
    w, s, t = np.meshgrid(np.asarray(windows, np.float64), np.asarray(sigmas, np.float64),
                          np.asarray(thresholds, np.float64), indexing="ij")
    keys = (t.ravel(), np.round(np.abs(t - 0.5), 9).ravel(), s.ravel(), w.ravel(), -exact_f1.ravel())
    best = int(np.lexsort(keys)[0])
    return tuple(int(i) for i in np.unravel_index(best, exact_f1.shape))  # type: ignore[return-value]


def search_postprocessing(probs: np.ndarray, reference: EventTable, filenames: Sequence[str],
                          feature_cfg: FeatureConfig, grid: PostprocessConfig, *,
                          n_valid_frames: Sequence[int] | None = None,
                          smoothing: Smoothing = "median") -> PostprocessChoice:
    """Best (median window, Gaussian sigma, threshold) per class by event-F1 of `probs` against `reference`.

    `smoothing="median"` searches windows and thresholds only (sigma 0); "median+gaussian" also
    searches `grid.gaussian_sigmas`. Reference clips not in `filenames` are ignored.
    """
    if smoothing not in ("median", "median+gaussian"):
        raise ValueError(f"smoothing must be 'median' or 'median+gaussian', got {smoothing!r}")
    x = fill_invalid_frames(_check_inputs(probs, filenames), n_valid_frames)
    ref = _reference_arrays(reference, filenames)
    windows = tuple(grid.median_windows)
    sigmas = (0.0,) if smoothing == "median" else tuple(grid.gaussian_sigmas)
    thresholds = np.asarray(grid.thresholds, dtype=np.float64)
    shape = (len(windows), len(sigmas), len(thresholds), NUM_CLASSES)
    tp, n_sys = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    for i, window in enumerate(windows):
        median = median_smooth(x, window)
        for j, sigma in enumerate(sigmas):
            tp[i, j], n_sys[i, j] = _score_thresholds(gaussian_smooth(median, sigma), thresholds, ref,
                                                      feature_cfg, n_valid_frames)
    n_ref = np.bincount(ref.class_ids, minlength=NUM_CLASSES)
    f1, precision, recall = _sed_eval_fpr(tp, n_sys, n_ref)
    exact_f1 = 2 * tp / np.maximum(n_sys + n_ref, 1)  # the same order as f1, with exact ties
    best = [_best_index(exact_f1[..., c], windows, sigmas, thresholds) for c in range(NUM_CLASSES)]

    def pick(a: np.ndarray) -> tuple[float, ...]:
        return tuple(float(a[i, j, k, c]) for c, (i, j, k) in enumerate(best))

    return PostprocessChoice(
        median_windows=tuple(int(windows[i]) for i, _, _ in best),
        gaussian_sigmas=tuple(float(sigmas[j]) for _, j, _ in best),
        thresholds=tuple(float(thresholds[k]) for _, _, k in best),
        f1=pick(f1),
        precision=pick(precision),
        recall=pick(recall),
        f1_grid=f1,
        grid=PostprocessConfig(median_windows=windows, gaussian_sigmas=sigmas, thresholds=tuple(grid.thresholds)),
    )


def smooth_as_chosen(probs: np.ndarray, choice: PostprocessChoice,
                     n_valid_frames: Sequence[int] | None = None) -> np.ndarray:
    """Frame probabilities after the per-class median and Gaussian of `choice` (what the thresholds cut).

    A short clip is smoothed as if it ended at its last valid frame (`fill_invalid_frames`).
    """
    x = fill_invalid_frames(np.asarray(probs, dtype=np.float64), n_valid_frames)
    return gaussian_smooth(median_smooth(x, choice.median_windows), choice.gaussian_sigmas)


def apply_postprocessing(probs: np.ndarray, choice: PostprocessChoice, feature_cfg: FeatureConfig,
                         filenames: Sequence[str], n_valid_frames: Sequence[int] | None = None) -> EventTable:
    """Events of every clip after the per-class median, Gaussian and threshold of `choice`."""
    smoothed = smooth_as_chosen(_check_inputs(probs, filenames), choice, n_valid_frames)
    return decode_events(smoothed, choice.thresholds, feature_cfg, n_valid_frames=n_valid_frames,
                         filenames=filenames)  # type: ignore[return-value]


# ---- the whole grid searched in slices (Ray Tune's trials), merged ---------------------------------


def window_ranges(windows: Sequence[int], n_ranges: int) -> list[tuple[int, ...]]:
    """Split the window grid into at most `n_ranges` contiguous ranges, in ascending order."""
    ordered = sorted(windows)
    n = max(1, min(n_ranges, len(ordered)))
    return [tuple(int(w) for w in part) for part in np.array_split(ordered, n) if len(part)]


def merge_ranges(parts: Sequence[tuple[tuple[int, ...], PostprocessChoice]]) -> PostprocessChoice:
    """Per class, the best choice over window ranges (ties and NaN: the range with smaller windows).

    With `search_postprocessing`'s tie-break (smaller window first), this is its choice over the whole grid.
    """
    ordered = [choice for _, choice in sorted(parts, key=lambda p: p[0][0])]
    best = []
    for c in range(NUM_CLASSES):
        pick = ordered[0]
        for choice in ordered[1:]:
            if not math.isnan(choice.f1[c]) and (math.isnan(pick.f1[c]) or choice.f1[c] > pick.f1[c]):
                pick = choice
        best.append(pick)
    return PostprocessChoice.per_class(best)
