"""Bootstrap confidence intervals of the event-based scores, resampling clips.

Event-based F/P/R are functions of per-class TP, n_sys and n_ref summed over
clips, and the matching never crosses clips. So the exact matching runs once
(`ClipCounts`: one row per clip), a resample is a weight vector over clips (how
often each clip was drawn), and the class counts of all resamples are one matrix
product `weights @ counts`. The scores of each resample follow sed_eval's
formulas vectorised (`scores_from_counts`, the same rules as `kdsed.metrics.fast`):
they equal `event_scores` on the resampled clip list bit for bit.

Intervals are percentile intervals: the (1 - level) / 2 and (1 + level) / 2
quantiles (numpy's linear interpolation) of the resampled values. A resample in
which a class has no reference event leaves that class's F1 undefined (NaN, as
sed_eval) and drops it from that resample's macro F and R means, exactly as
scoring the resampled clips would; per-class intervals ignore such resamples.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from kdsed.constants import CLASSES, NUM_CLASSES
from kdsed.events import EventTable
from kdsed.metrics.fast import EventArrays, EventScores, clip_class_counts

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class ClipCounts:
    """Event counts per clip and class of one system output: TP, n_sys, n_ref, each int64 (n_clips, 10)."""

    filenames: tuple[str, ...]
    tp: np.ndarray
    n_sys: np.ndarray
    n_ref: np.ndarray

    def __post_init__(self) -> None:
        shape = (len(self.filenames), NUM_CLASSES)
        for name in ("tp", "n_sys", "n_ref"):
            arr = getattr(self, name)
            if np.shape(arr) != shape:
                raise ValueError(f"ClipCounts.{name} has shape {np.shape(arr)}, expected {shape} "
                                 f"({len(self.filenames)} clips x {NUM_CLASSES} classes)")
        if (self.tp < 0).any() or (self.tp > self.n_sys).any() or (self.tp > self.n_ref).any():
            raise ValueError("ClipCounts: TP must lie in [0, min(n_sys, n_ref)] for every clip and class")

    @classmethod
    def from_tables(cls, reference: EventTable, estimated: EventTable,
                    filenames: Sequence[str] | None = None) -> ClipCounts:
        """Counts of `estimated` against `reference` on `filenames` (default: the reference's clips, sorted)."""
        names = tuple(sorted(reference) if filenames is None else filenames)
        if len(set(names)) != len(names):
            raise ValueError(f"filenames hold {len(names) - len(set(names))} duplicate(s); each clip once, please")
        for what, table in (("reference", reference), ("estimated", estimated)):
            missing = sorted(set(table) - set(names))
            if missing:
                raise ValueError(f"{len(missing)} clip(s) of the {what} events are not in filenames, "
                                 f"e.g. {missing[0]!r}")
        ref = EventArrays.from_table(reference, names)
        est = EventArrays.from_table(estimated, names)
        return cls(names, *clip_class_counts(ref, est, n_files=len(names)))

    def __len__(self) -> int:
        return len(self.filenames)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (lists of ints), read back by `from_json`."""
        return {"filenames": list(self.filenames), "tp": self.tp.tolist(), "n_sys": self.n_sys.tolist(),
                "n_ref": self.n_ref.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClipCounts:
        shape = (len(data["filenames"]), NUM_CLASSES)
        arrays = (np.asarray(data[k], dtype=np.int64).reshape(shape) for k in ("tp", "n_sys", "n_ref"))
        return cls(tuple(data["filenames"]), *arrays)

    def scores(self) -> EventScores:
        """Scores of the whole clip set (equal to `event_scores` on the same tables)."""
        tp, n_sys, n_ref = (a.sum(axis=0) for a in (self.tp, self.n_sys, self.n_ref))
        return EventScores.from_counts(tp, n_sys - tp, n_ref - tp)


@dataclass(frozen=True)
class ScoreArrays:
    """Scores of many clip sets at once: macro F/P/R and micro F shape (n,), class-wise F/P/R shape (n, 10)."""

    macro_f1: np.ndarray
    macro_precision: np.ndarray
    macro_recall: np.ndarray
    micro_f1: np.ndarray
    class_f1: np.ndarray
    class_precision: np.ndarray
    class_recall: np.ndarray


def _fpr(tp: np.ndarray, n_sys: np.ndarray, n_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sed_eval's F, P, R elementwise ('zero_score'): P = 0 without output, R = NaN without references."""
    tp, n_sys, n_ref = (np.asarray(a, dtype=np.float64) for a in (tp, n_sys, n_ref))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_sys == 0, 0.0, tp / n_sys)
        recall = np.where(n_ref == 0, np.nan, tp / n_ref)
        # Same operations, in the same order, as `fpr_from_counts`.
        f_measure = np.where((precision == 0) & (recall == 0), 0.0,
                             2.0 * precision * recall / (1.0 * precision + recall))
    return f_measure, precision, recall


def _row_nanmean(x: np.ndarray) -> np.ndarray:
    """`numpy.nanmean` of each row (NaN for an all-NaN row), summed in the same order as on one row."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.ascontiguousarray(x), axis=-1)


def scores_from_counts(tp: np.ndarray, n_sys: np.ndarray, n_ref: np.ndarray) -> ScoreArrays:
    """Scores of class counts shaped (n, 10): row i gives what `EventScores.from_counts` gives for row i."""
    tp, n_sys, n_ref = (np.atleast_2d(np.asarray(a)) for a in (tp, n_sys, n_ref))
    if not tp.shape == n_sys.shape == n_ref.shape or tp.shape[-1] != NUM_CLASSES:
        raise ValueError(f"expected counts of shape (n, {NUM_CLASSES}), got {tp.shape}, {n_sys.shape}, {n_ref.shape}")
    f_measure, precision, recall = _fpr(tp, n_sys, n_ref)
    micro_f1, _, _ = _fpr(tp.sum(axis=-1), n_sys.sum(axis=-1), n_ref.sum(axis=-1))
    return ScoreArrays(_row_nanmean(f_measure), _row_nanmean(precision), _row_nanmean(recall), micro_f1,
                       f_measure, precision, recall)


def resample_indices(n_clips: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Clip indices of each bootstrap resample, shape (n_resamples, n_clips), drawn with replacement."""
    if n_clips < 1 or n_resamples < 1:
        raise ValueError(f"need at least one clip and one resample, got n_clips={n_clips}, n_resamples={n_resamples}")
    return np.random.default_rng(seed).integers(0, n_clips, size=(n_resamples, n_clips))


def resample_weights(indices: np.ndarray, n_clips: int) -> np.ndarray:
    """How often each clip is drawn in each resample: (n_resamples, n_clips) float64 (exact small integers)."""
    n_resamples = len(indices)
    flat = (np.arange(n_resamples)[:, None] * n_clips + indices).ravel()
    return np.bincount(flat, minlength=n_resamples * n_clips).reshape(n_resamples, n_clips).astype(np.float64)


def resampled_scores(counts: ClipCounts, weights: np.ndarray) -> ScoreArrays:
    """Scores of every resample: class counts are `weights @ per-clip counts` (exact: integers in float64)."""
    if weights.ndim != 2 or weights.shape[1] != len(counts):
        raise ValueError(f"weights of shape {weights.shape} for {len(counts)} clips; expected (n_resamples, "
                         f"{len(counts)})")
    stacked = np.concatenate([counts.tp, counts.n_sys, counts.n_ref], axis=1).astype(np.float64)
    tp, n_sys, n_ref = np.split(weights @ stacked, 3, axis=1)  # one BLAS call for the three counts
    return scores_from_counts(tp, n_sys, n_ref)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval (fractions; NaN where undefined)."""

    point: float
    low: float
    high: float

    def to_json(self) -> dict[str, float | None]:
        """Plain JSON data; NaN becomes null."""
        return {k: None if math.isnan(v) else float(v) for k, v in
                (("point", self.point), ("low", self.low), ("high", self.high))}


def _percentiles(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile of the samples along axis 0, NaN samples ignored."""
    q = 100.0 * np.array([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: the interval is NaN
        low, high = np.nanpercentile(samples, q, axis=0)
    return low, high


def _interval(point: float, samples: np.ndarray, level: float) -> Interval:
    low, high = _percentiles(samples, level)
    return Interval(float(point), float(low), float(high))


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


@dataclass(frozen=True)
class BootstrapScores:
    """Event scores of a clip set with percentile intervals from resampling its clips."""

    point: EventScores
    macro_f1: Interval
    macro_precision: Interval
    macro_recall: Interval
    micro_f1: Interval
    class_f1: tuple[Interval, ...]  # CLASSES order
    resampled: ScoreArrays
    n_clips: int
    n_resamples: int
    level: float
    seed: int

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data: intervals of the macro/micro scores and per-class F1, and the settings."""
        return {
            "macro": {"f_measure": self.macro_f1.to_json(), "precision": self.macro_precision.to_json(),
                      "recall": self.macro_recall.to_json()},
            "micro": {"f_measure": self.micro_f1.to_json()},
            "class_wise": {label: {"f_measure": i.to_json()} for label, i in zip(CLASSES, self.class_f1)},
            "n_clips": self.n_clips, "n_resamples": self.n_resamples, "level": self.level, "seed": self.seed,
        }


def bootstrap_counts(counts: ClipCounts, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     level: float = DEFAULT_LEVEL) -> BootstrapScores:
    """Bootstrap intervals from per-clip counts (the counting already done)."""
    _check_level(level)
    point = counts.scores()
    weights = resample_weights(resample_indices(len(counts), n_resamples, seed), len(counts))
    res = resampled_scores(counts, weights)
    return BootstrapScores(
        point=point,
        macro_f1=_interval(point.macro.f_measure, res.macro_f1, level),
        macro_precision=_interval(point.macro.precision, res.macro_precision, level),
        macro_recall=_interval(point.macro.recall, res.macro_recall, level),
        micro_f1=_interval(point.micro.f_measure, res.micro_f1, level),
        class_f1=tuple(_interval(point.class_wise[c].f_measure, res.class_f1[:, c], level)
                       for c in range(NUM_CLASSES)),
        resampled=res, n_clips=len(counts), n_resamples=n_resamples, level=level, seed=seed,
    )


def bootstrap_scores(reference: EventTable, estimated: EventTable, filenames: Sequence[str] | None = None, *,
                     n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     level: float = DEFAULT_LEVEL) -> BootstrapScores:
    """Event scores of `estimated` with bootstrap intervals over the clips `filenames` (default: the reference's)."""
    return bootstrap_counts(ClipCounts.from_tables(reference, estimated, filenames),
                            n_resamples=n_resamples, seed=seed, level=level)


@dataclass(frozen=True)
class PairedDifference:
    """Scores of system a minus system b on the same resampled clips: point, interval, share of a > b."""

    macro_f1: Interval
    class_f1: tuple[Interval, ...]  # CLASSES order
    share_a_better: float  # fraction of resamples where a's macro F1 > b's (resamples with a defined F1)
    class_share_a_better: tuple[float, ...]
    samples: np.ndarray  # (n_resamples,) macro F1 of a minus b
    n_clips: int
    n_resamples: int
    level: float
    seed: int

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data: the macro F1 difference, per-class F1 differences and the settings."""
        share = [None if math.isnan(s) else s for s in self.class_share_a_better]
        return {
            "macro": {"f_measure": self.macro_f1.to_json(), "share_a_better": _none_if_nan(self.share_a_better)},
            "class_wise": {label: {"f_measure": i.to_json(), "share_a_better": s}
                           for label, i, s in zip(CLASSES, self.class_f1, share)},
            "n_clips": self.n_clips, "n_resamples": self.n_resamples, "level": self.level, "seed": self.seed,
        }


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _share_positive(diff: np.ndarray) -> np.ndarray:
    """Along axis 0: the fraction of defined (non-NaN) values that are > 0; NaN when none is defined."""
    defined = (~np.isnan(diff)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined == 0, np.nan, (diff > 0).sum(axis=0) / np.maximum(defined, 1))


def _check_same_clips(a: ClipCounts, b: ClipCounts) -> None:
    if a.filenames != b.filenames:
        raise ValueError(f"paired systems must be counted on the same clips in the same order; got {len(a)} and "
                         f"{len(b)} clips, first difference at {_first_difference(a.filenames, b.filenames)}")
    if not np.array_equal(a.n_ref, b.n_ref):
        raise ValueError("paired systems must be scored against the same reference (n_ref differs)")


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"position {i}: {x!r} vs {y!r}"
    return f"position {min(len(a), len(b))} (one list is longer)"


def paired_difference_counts(counts_a: ClipCounts, counts_b: ClipCounts, *, n_resamples: int = DEFAULT_RESAMPLES,
                             seed: int = 0, level: float = DEFAULT_LEVEL) -> PairedDifference:
    """Paired bootstrap of a - b from per-clip counts: both systems are scored on the same resamples."""
    _check_level(level)
    _check_same_clips(counts_a, counts_b)
    point_a, point_b = counts_a.scores(), counts_b.scores()
    weights = resample_weights(resample_indices(len(counts_a), n_resamples, seed), len(counts_a))
    res_a, res_b = resampled_scores(counts_a, weights), resampled_scores(counts_b, weights)
    diff = res_a.macro_f1 - res_b.macro_f1
    class_diff = res_a.class_f1 - res_b.class_f1
    class_point = [a.f_measure - b.f_measure for a, b in zip(point_a.class_wise, point_b.class_wise)]
    return PairedDifference(
        macro_f1=_interval(point_a.macro.f_measure - point_b.macro.f_measure, diff, level),
        class_f1=tuple(_interval(class_point[c], class_diff[:, c], level) for c in range(NUM_CLASSES)),
        share_a_better=float(_share_positive(diff)),
        class_share_a_better=tuple(float(s) for s in _share_positive(class_diff)),
        samples=diff, n_clips=len(counts_a), n_resamples=n_resamples, level=level, seed=seed,
    )


def paired_difference(reference: EventTable, estimated_a: EventTable, estimated_b: EventTable,
                      filenames: Sequence[str] | None = None, *, n_resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0, level: float = DEFAULT_LEVEL) -> PairedDifference:
    """Paired bootstrap of (a's scores) - (b's scores) over the clips `filenames` (default: the reference's)."""
    names = tuple(sorted(reference) if filenames is None else filenames)
    return paired_difference_counts(ClipCounts.from_tables(reference, estimated_a, names),
                                    ClipCounts.from_tables(reference, estimated_b, names),
                                    n_resamples=n_resamples, seed=seed, level=level)


__all__ = [
    "BootstrapScores", "ClipCounts", "Interval", "PairedDifference", "ScoreArrays", "bootstrap_counts",
    "bootstrap_scores", "paired_difference", "paired_difference_counts", "resample_indices", "resample_weights",
    "resampled_scores", "scores_from_counts",
]
