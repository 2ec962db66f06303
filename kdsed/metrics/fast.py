"""Event-based F1 with sed_eval's exact semantics, computed with numpy instead of Python loops.

Semantics (sed_eval 0.2.1 `EventBasedMetrics` with `evaluate_onset=True`,
`evaluate_offset=True`, `t_collar=0.2`, `percentage_of_length=0.2`,
`event_matching_type='optimal'`, `empty_system_output_handling='zero_score'`):

* an estimate may match a reference of the same clip and class when
  `|ref.onset - est.onset| <= 0.2` and
  `|ref.offset - est.offset| <= max(0.2, 0.2 * (ref.offset - ref.onset))`,
  evaluated in float64 with the same operations as sed_eval, so boundary cases
  agree bit for bit;
* true positives are a maximum bipartite matching of those pairs, per clip and
  class (sed_eval's Hopcroft-Karp; any maximum matching has the same size);
* per class: precision = 0 when the class has no output, else TP / n_sys;
  recall = NaN when the class has no references, else TP / n_ref;
  F = 0 when P = R = 0, else 2PR / (P + R) (so F is NaN exactly when n_ref = 0);
* macro = `numpy.nanmean` over the 10 classes of each of F, P and R
  (`results_class_wise_average_metrics`): a class without references is
  skipped by the F and R means but counts as precision 0 in the P mean;
* micro = the same formulas on the counts summed over classes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from kdsed.constants import CLASS_INDEX, CLASSES, NUM_CLASSES, OFFSET_COLLAR_RATE, ONSET_COLLAR_S, Seconds
from kdsed.events import Event, EventTable


class Fpr(NamedTuple):
    """F-measure, precision and recall as fractions (NaN where sed_eval gives NaN)."""

    f_measure: float
    precision: float
    recall: float


def fpr_from_counts(tp: float, n_sys: float, n_ref: float) -> Fpr:
    """F/P/R of one class or of the pooled counts, as sed_eval computes them with 'zero_score'."""
    precision = 0.0 if n_sys == 0 else float(tp / float(n_sys))
    recall = math.nan if n_ref == 0 else float(tp / float(n_ref))
    if precision == 0 and recall == 0:
        return Fpr(0.0, precision, recall)
    return Fpr(float(2.0 * precision * recall / (1.0 * precision + recall)), precision, recall)


def _nanmean(values: Sequence[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(np.asarray(values, dtype=np.float64)))


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass(frozen=True)
class EventScores:
    """Event-based counts and F/P/R of the 10 classes, with their macro and micro averages."""

    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]
    class_wise: tuple[Fpr, ...]
    macro: Fpr
    micro: Fpr

    @classmethod
    def from_counts(cls, tp: Sequence[int], fp: Sequence[int], fn: Sequence[int]) -> EventScores:
        """Scores from per-class TP/FP/FN counts (in `CLASSES` order)."""
        tp, fp, fn = (tuple(int(v) for v in a) for a in (tp, fp, fn))
        if not len(tp) == len(fp) == len(fn) == NUM_CLASSES:
            raise ValueError(f"expected {NUM_CLASSES} counts per class, got {len(tp)}, {len(fp)}, {len(fn)}")
        class_wise = tuple(fpr_from_counts(t, t + p, t + n) for t, p, n in zip(tp, fp, fn))
        macro = Fpr(*(_nanmean([c[k] for c in class_wise]) for k in range(3)))
        micro = fpr_from_counts(sum(tp), sum(tp) + sum(fp), sum(tp) + sum(fn))
        return cls(tp, fp, fn, class_wise, macro, micro)

    @property
    def n_ref(self) -> tuple[int, ...]:
        return tuple(t + n for t, n in zip(self.tp, self.fn))

    @property
    def n_sys(self) -> tuple[int, ...]:
        return tuple(t + p for t, p in zip(self.tp, self.fp))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data; NaN (undefined, e.g. recall of a class without references) becomes null."""

        def fpr(x: Fpr) -> dict[str, float | None]:
            return {k: _none_if_nan(v) for k, v in x._asdict().items()}

        return {
            "macro": fpr(self.macro),
            "micro": fpr(self.micro),
            "class_wise": {
                label: {**fpr(scores), "n_ref": n_ref, "n_sys": n_sys}
                for label, scores, n_ref, n_sys in zip(CLASSES, self.class_wise, self.n_ref, self.n_sys)
            },
        }


@dataclass(frozen=True)
class EventArrays:
    """Events of many clips as parallel arrays: clip index, class index, onset and offset in seconds."""

    file_ids: np.ndarray
    class_ids: np.ndarray
    onset_s: np.ndarray
    offset_s: np.ndarray

    @property
    def groups(self) -> np.ndarray:
        """One id per (clip, class): events only ever match within a group."""
        return self.file_ids * NUM_CLASSES + self.class_ids

    def __len__(self) -> int:
        return len(self.onset_s)

    @classmethod
    def from_table(cls, table: Mapping[str, Sequence[Event]], filenames: Sequence[str]) -> EventArrays:
        """Arrays of the events of `table`; clip ids index `filenames`, which must hold every clip of `table`."""
        index = {name: i for i, name in enumerate(filenames)}
        unknown = sorted(set(table) - set(index))
        if unknown:
            raise ValueError(f"{len(unknown)} file(s) are not in the reference, e.g. {unknown[0]!r}")
        rows = [(index[name], _class_id(e, name), e.onset_s, e.offset_s) for name, events in table.items()
                for e in events]
        if not rows:
            return cls(*(np.zeros(0, np.int64),) * 2, *(np.zeros(0, np.float64),) * 2)
        file_ids, class_ids, onsets, offsets = zip(*rows)
        return cls(np.asarray(file_ids, np.int64), np.asarray(class_ids, np.int64),
                   np.asarray(onsets, np.float64), np.asarray(offsets, np.float64))


def _class_id(event: Event, filename: str) -> int:
    try:
        return CLASS_INDEX[event.label]
    except KeyError:
        raise ValueError(f"{filename}: unknown class label {event.label!r}; expected one of {', '.join(CLASSES)}"
                         ) from None


def compatible_pairs(ref_groups: np.ndarray, ref_onset_s: np.ndarray, ref_offset_s: np.ndarray,
                     est_groups: np.ndarray, est_onset_s: np.ndarray, est_offset_s: np.ndarray, *,
                     onset_collar_s: Seconds = ONSET_COLLAR_S,
                     offset_collar_rate: float = OFFSET_COLLAR_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (ref, est) of the same group whose onsets and offsets are within sed_eval's collars."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if len(ref_onset_s) == 0 or len(est_onset_s) == 0:
        return empty
    # Candidates: references of the same group whose onset is within the collar (plus a margin for
    # the rounding of the composite key); the exact sed_eval tests below decide.
    low = min(ref_onset_s.min(), est_onset_s.min())
    span = float(max(ref_onset_s.max(), est_onset_s.max()) - low) + 2.0 * onset_collar_s + 1.0
    ref_key = ref_groups * span + (ref_onset_s - low)
    est_key = est_groups * span + (est_onset_s - low)
    margin = 1e-6 + 1e-12 * float(max(np.abs(ref_key).max(), np.abs(est_key).max()))
    order = np.argsort(ref_key, kind="stable")
    sorted_key = ref_key[order]
    lo = np.searchsorted(sorted_key, est_key - (onset_collar_s + margin), side="left")
    hi = np.searchsorted(sorted_key, est_key + (onset_collar_s + margin), side="right")
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return empty
    est_idx = np.repeat(np.arange(len(est_key)), counts)
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    ref_idx = order[np.repeat(lo, counts) + within]
    r_on, r_off = ref_onset_s[ref_idx], ref_offset_s[ref_idx]
    e_on, e_off = est_onset_s[est_idx], est_offset_s[est_idx]
    ok = ref_groups[ref_idx] == est_groups[est_idx]
    ok &= np.abs(r_on - e_on) <= onset_collar_s
    ok &= np.abs(r_off - e_off) <= np.maximum(onset_collar_s, offset_collar_rate * (r_off - r_on))
    return ref_idx[ok], est_idx[ok]


def match_counts(ref_groups: np.ndarray, ref_onset_s: np.ndarray, ref_offset_s: np.ndarray,
                 est_groups: np.ndarray, est_onset_s: np.ndarray, est_offset_s: np.ndarray, *,
                 n_groups: int, est_slots: np.ndarray | None = None, n_slots: int = 1,
                 onset_collar_s: Seconds = ONSET_COLLAR_S,
                 offset_collar_rate: float = OFFSET_COLLAR_RATE) -> np.ndarray:
    """True positives per (slot, group), shape (n_slots, n_groups).

    Estimates in different slots are independent system outputs scored against the same
    references (the search puts one threshold in each slot); within a slot and group the
    count is the size of a maximum matching of compatible (reference, estimate) pairs.
    """
    tp = np.zeros(n_slots * n_groups, np.int64)
    ref_idx, est_idx = compatible_pairs(ref_groups, ref_onset_s, ref_offset_s, est_groups, est_onset_s,
                                        est_offset_s, onset_collar_s=onset_collar_s,
                                        offset_collar_rate=offset_collar_rate)
    if len(ref_idx) == 0:
        return tp.reshape(n_slots, n_groups)
    slots = np.zeros(len(ref_idx), np.int64) if est_slots is None else np.asarray(est_slots, np.int64)[est_idx]
    n_ref = len(ref_onset_s)
    rows = slots * n_ref + ref_idx  # one reference node per slot
    cells = slots * n_groups + est_groups[est_idx]
    row_degree = np.bincount(rows, minlength=n_slots * n_ref)
    col_degree = np.bincount(est_idx, minlength=len(est_onset_s))
    # An edge whose ends both have degree 1 is a whole component: it is matched. Only the rest
    # (rare: several candidates for one event) needs a real matching.
    single = (row_degree[rows] == 1) & (col_degree[est_idx] == 1)
    tp += np.bincount(cells[single], minlength=len(tp))
    if not single.all():
        tp += _hard_matches(rows[~single], est_idx[~single], cells[~single], len(tp))
    return tp.reshape(n_slots, n_groups)


def _hard_matches(rows: np.ndarray, cols: np.ndarray, cells: np.ndarray, n_cells: int) -> np.ndarray:
    """Matched edges per cell of a maximum bipartite matching (Hopcroft-Karp, scipy)."""
    row_ids, row_inv = np.unique(rows, return_inverse=True)
    _, col_inv = np.unique(cols, return_inverse=True)
    graph = csr_matrix((np.ones(len(rows), np.int8), (row_inv, col_inv)),
                       shape=(len(row_ids), int(col_inv.max()) + 1))
    match = maximum_bipartite_matching(graph, perm_type="column")
    row_cell = np.zeros(len(row_ids), np.int64)
    row_cell[row_inv] = cells  # every edge of a row lies in the row's cell
    return np.bincount(row_cell[match >= 0], minlength=n_cells)


def clip_class_counts(reference: EventArrays, estimated: EventArrays, *, n_files: int,
                      onset_collar_s: Seconds = ONSET_COLLAR_S,
                      offset_collar_rate: float = OFFSET_COLLAR_RATE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-clip, per-class TP, n_sys and n_ref (each int64, shape (n_files, 10)); they sum to `class_counts`."""
    n_groups = n_files * NUM_CLASSES
    tp = match_counts(reference.groups, reference.onset_s, reference.offset_s, estimated.groups,
                      estimated.onset_s, estimated.offset_s, n_groups=n_groups,
                      onset_collar_s=onset_collar_s, offset_collar_rate=offset_collar_rate)
    n_sys = np.bincount(estimated.groups, minlength=n_groups)
    n_ref = np.bincount(reference.groups, minlength=n_groups)
    return tuple(a.astype(np.int64).reshape(n_files, NUM_CLASSES) for a in (tp, n_sys, n_ref))  # type: ignore


def class_counts(reference: EventArrays, estimated: EventArrays, *, n_files: int,
                 onset_collar_s: Seconds = ONSET_COLLAR_S,
                 offset_collar_rate: float = OFFSET_COLLAR_RATE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class TP, FP, FN (each shape (10,)) of `estimated` against `reference` over `n_files` clips."""
    tp, n_sys, n_ref = (a.sum(axis=0) for a in clip_class_counts(
        reference, estimated, n_files=n_files, onset_collar_s=onset_collar_s, offset_collar_rate=offset_collar_rate))
    return tp, n_sys - tp, n_ref - tp


def event_scores(reference: EventTable, estimated: EventTable) -> EventScores:
    """Event-based scores of `estimated` against `reference`; reference clips absent from `estimated` have no output."""
    filenames = sorted(reference)
    if set(estimated) - set(reference):
        unknown = sorted(set(estimated) - set(reference))
        raise ValueError(f"estimated events for {len(unknown)} file(s) not in the reference, e.g. {unknown[0]!r}")
    ref = EventArrays.from_table(reference, filenames)
    est = EventArrays.from_table(estimated, filenames)
    return EventScores.from_counts(*class_counts(ref, est, n_files=len(filenames)))
