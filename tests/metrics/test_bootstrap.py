"""Bootstrap intervals of the event scores: exact point estimates, exact resampled scores, paired differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdsed.constants import CLASS_INDEX, CLASSES, NUM_CLASSES
from kdsed.events import Event, EventTable
from kdsed.metrics import (
    ClipCounts,
    EventArrays,
    EventScores,
    bootstrap_counts,
    bootstrap_scores,
    class_counts,
    event_scores,
    paired_difference,
    paired_difference_counts,
    resample_indices,
    resample_weights,
    resampled_scores,
    scores_from_counts,
    sed_eval_scores,
)

# Skewed class frequencies: some classes are rare (a resample may hold none of their events),
# the last two never occur in the reference but the system outputs them.
CLASS_WEIGHTS = np.array([30, 20, 12, 8, 5, 3, 1, 1, 0, 0], dtype=np.float64)


def random_tables(n_clips: int, seed: int, *, miss: float = 0.3) -> tuple[EventTable, EventTable]:
    """A reference of 0-5 events per clip and a system output of jittered hits, misses and strays."""
    rng = np.random.default_rng(seed)
    p = CLASS_WEIGHTS / CLASS_WEIGHTS.sum()
    reference: EventTable = {}
    estimated: EventTable = {}
    for i in range(n_clips):
        refs = []
        for _ in range(rng.integers(0, 6)):
            onset = round(float(rng.uniform(0, 9)), 2)
            refs.append(Event(onset, round(min(10.0, onset + float(rng.exponential(1.5)) + 0.1), 2),
                              CLASSES[rng.choice(NUM_CLASSES, p=p)]))
        ests = []
        for e in refs:
            if rng.random() < miss:
                continue
            onset = round(max(0.0, e.onset_s + float(rng.normal(0, 0.15))), 2)
            ests.append(Event(onset, round(max(onset + 0.05, e.offset_s + float(rng.normal(0, 0.3))), 2), e.label))
        for _ in range(rng.poisson(0.8)):
            onset = round(float(rng.uniform(0, 9)), 2)
            ests.append(Event(onset, round(onset + float(rng.uniform(0.1, 2.0)), 2),
                              CLASSES[rng.integers(NUM_CLASSES)]))
        reference[f"clip{i:04d}.wav"] = refs
        if ests or rng.random() < 0.5:  # a clip without output may also be absent from the table
            estimated[f"clip{i:04d}.wav"] = ests
    return reference, estimated


def floats(s: EventScores) -> list[float]:
    return [v for fpr in (*s.class_wise, s.macro, s.micro) for v in fpr]


def identical(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_identical_scores(a: EventScores, b: EventScores) -> None:
    assert (a.tp, a.fp, a.fn) == (b.tp, b.fp, b.fn)
    assert all(identical(x, y) for x, y in zip(floats(a), floats(b))), (floats(a), floats(b))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_estimate_equals_event_scores_and_sed_eval(seed):
    reference, estimated = random_tables(60, seed)
    boot = bootstrap_scores(reference, estimated, n_resamples=50)
    fast = event_scores(reference, estimated)
    assert_identical_scores(boot.point, fast)
    slow = sed_eval_scores(reference, estimated)
    assert (boot.point.tp, boot.point.fp, boot.point.fn) == (slow.tp, slow.fp, slow.fn)
    assert all(identical(x, y) or abs(x - y) <= 1e-12 for x, y in zip(floats(boot.point), floats(slow)))
    assert boot.macro_f1.point == fast.macro.f_measure and boot.micro_f1.point == fast.micro.f_measure
    assert all(identical(i.point, c.f_measure) for i, c in zip(boot.class_f1, fast.class_wise))
    assert math.isnan(boot.class_f1[CLASS_INDEX["Speech"]].point)  # no reference events
    assert boot.point.n_sys[CLASS_INDEX["Speech"]] > 0  # ... but output: precision 0 in the mean


def test_clip_counts_sum_to_class_counts():
    reference, estimated = random_tables(40, 3)
    counts = ClipCounts.from_tables(reference, estimated)
    names = sorted(reference)
    tp, fp, fn = class_counts(EventArrays.from_table(reference, names), EventArrays.from_table(estimated, names),
                              n_files=len(names))
    assert counts.tp.shape == (40, NUM_CLASSES)
    assert counts.tp.sum(0).tolist() == tp.tolist()
    assert (counts.n_sys - counts.tp).sum(0).tolist() == fp.tolist()
    assert (counts.n_ref - counts.tp).sum(0).tolist() == fn.tolist()
    first = names[0]
    assert counts.n_ref[0].sum() == len(reference[first])
    assert counts.n_sys[0].sum() == len(estimated.get(first, []))


def test_vectorised_formulas_equal_event_scores_on_count_rows():
    rng = np.random.default_rng(5)
    n_ref = rng.integers(0, 4, size=(500, NUM_CLASSES))
    n_sys = rng.integers(0, 4, size=(500, NUM_CLASSES))
    tp = np.minimum(n_ref, n_sys) - rng.integers(0, 2, size=(500, NUM_CLASSES))
    tp = np.maximum(tp, 0)
    arrays = scores_from_counts(tp, n_sys, n_ref)
    for i in range(len(tp)):
        s = EventScores.from_counts(tp[i], n_sys[i] - tp[i], n_ref[i] - tp[i])
        got = [arrays.macro_f1[i], arrays.macro_precision[i], arrays.macro_recall[i], arrays.micro_f1[i]]
        assert all(identical(float(x), y) for x, y in zip(got, [*s.macro, s.micro.f_measure])), i
        assert all(identical(float(x), c.f_measure) for x, c in zip(arrays.class_f1[i], s.class_wise)), i
        assert all(identical(float(x), c.precision) for x, c in zip(arrays.class_precision[i], s.class_wise)), i


@pytest.mark.parametrize("seed", [0, 7])
def test_each_resample_equals_event_scores_on_the_resampled_clip_list(seed):
    reference, estimated = random_tables(50, seed)
    names = sorted(reference)
    counts = ClipCounts.from_tables(reference, estimated)
    indices = resample_indices(len(names), 40, seed)
    res = resampled_scores(counts, resample_weights(indices, len(names)))
    undefined_seen = False
    for b, draw in enumerate(indices):
        # The resampled clip list, each drawn copy renamed so duplicates stay separate clips.
        ref_b = {f"{k}-{names[i]}": reference[names[i]] for k, i in enumerate(draw)}
        est_b = {f"{k}-{names[i]}": estimated[names[i]] for k, i in enumerate(draw) if names[i] in estimated}
        s = event_scores(ref_b, est_b)
        assert identical(res.macro_f1[b], s.macro.f_measure), b
        assert identical(res.macro_precision[b], s.macro.precision), b
        assert identical(res.macro_recall[b], s.macro.recall), b
        assert identical(res.micro_f1[b], s.micro.f_measure), b
        assert all(identical(x, c.f_measure) for x, c in zip(res.class_f1[b], s.class_wise)), b
        undefined_seen |= any(math.isnan(c.f_measure) and n > 0 for c, n in zip(s.class_wise, s.n_sys))
    assert undefined_seen  # some resample lost a rare class's references while the system still output it


def test_rare_class_is_undefined_exactly_in_resamples_without_its_clip():
    reference, estimated = random_tables(30, 11)
    reference, estimated = ({f: [e for e in ev if e.label != "Frying"] for f, ev in table.items()}
                            for table in (reference, estimated))
    reference["clip0003.wav"].append(Event(1.0, 3.0, "Frying"))
    estimated["clip0003.wav"] = [*estimated.get("clip0003.wav", []), Event(1.0, 3.0, "Frying")]
    boot = bootstrap_scores(reference, estimated, n_resamples=300, seed=2)
    drawn = resample_weights(resample_indices(30, 300, 2), 30)[:, 3] > 0
    frying = boot.resampled.class_f1[:, CLASS_INDEX["Frying"]]
    assert np.array_equal(np.isnan(frying), ~drawn) and np.all(frying[drawn] == 1.0)
    assert boot.class_f1[CLASS_INDEX["Frying"]].low == 1.0 == boot.class_f1[CLASS_INDEX["Frying"]].high


@pytest.mark.parametrize("seed", [0, 4])
def test_interval_contains_point_estimate(seed):
    reference, estimated = random_tables(200, seed)
    boot = bootstrap_scores(reference, estimated, n_resamples=1000, seed=seed)
    for interval in (boot.macro_f1, boot.macro_precision, boot.macro_recall, boot.micro_f1):
        assert interval.low < interval.point < interval.high, interval
    for c, interval in enumerate(boot.class_f1):
        if boot.point.n_ref[c] >= 10:
            assert interval.low <= interval.point <= interval.high, (CLASSES[c], interval)
    assert 0.02 < boot.macro_f1.high - boot.macro_f1.low < 0.3


def test_interval_shrinks_with_more_clips():
    reference, estimated = random_tables(80, 9)
    k = 4
    ref_k = {f"{j}-{f}": ev for j in range(k) for f, ev in reference.items()}
    est_k = {f"{j}-{f}": ev for j in range(k) for f, ev in estimated.items()}
    one, many = bootstrap_scores(reference, estimated, seed=1), bootstrap_scores(ref_k, est_k, seed=1)
    assert many.point.macro.f_measure == one.point.macro.f_measure  # duplication leaves the scores as they are
    width_one = one.macro_f1.high - one.macro_f1.low
    width_many = many.macro_f1.high - many.macro_f1.low
    # The width falls like 1 / sqrt(clips): about half with 4x the clips.
    assert 0.35 * width_one < width_many < 0.7 * width_one, (width_one, width_many)
    assert many.resampled.macro_f1.std() < 0.7 * one.resampled.macro_f1.std()


def test_paired_difference_of_a_run_with_itself_is_exactly_zero():
    reference, estimated = random_tables(100, 2)
    diff = paired_difference(reference, estimated, dict(estimated), n_resamples=500)
    assert diff.macro_f1.point == 0.0 and (diff.macro_f1.low, diff.macro_f1.high) == (0.0, 0.0)
    assert np.all(diff.samples == 0.0) and diff.share_a_better == 0.0
    for c, interval in enumerate(diff.class_f1):
        if diff.class_f1[c].point == diff.class_f1[c].point:  # defined class
            assert (interval.point, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_paired_difference_matches_the_two_bootstraps():
    reference, good = random_tables(120, 6, miss=0.2)
    bad = {f: ev[::2] for f, ev in good.items()}  # the same system, missing every other detection
    diff = paired_difference(reference, good, bad, n_resamples=400, seed=3)
    a = bootstrap_scores(reference, good, n_resamples=400, seed=3)
    b = bootstrap_scores(reference, bad, n_resamples=400, seed=3)
    assert diff.macro_f1.point == a.point.macro.f_measure - b.point.macro.f_measure
    assert np.array_equal(diff.samples, a.resampled.macro_f1 - b.resampled.macro_f1)  # the same resamples
    assert diff.share_a_better == float(np.mean(a.resampled.macro_f1 > b.resampled.macro_f1))
    assert 0.0 < diff.macro_f1.low < diff.macro_f1.point < diff.macro_f1.high and diff.share_a_better > 0.975
    # Pairing removes the clip-to-clip variance both systems share: narrower than the unpaired spread.
    assert diff.samples.std() < math.hypot(a.resampled.macro_f1.std(), b.resampled.macro_f1.std())
    reverse = paired_difference(reference, bad, good, n_resamples=400, seed=3)
    assert np.array_equal(reverse.samples, -diff.samples) and reverse.share_a_better < 0.025


def test_deterministic_for_a_seed():
    reference, estimated = random_tables(60, 8)
    first = bootstrap_scores(reference, estimated, seed=5)
    again = bootstrap_scores(reference, estimated, seed=5)
    other = bootstrap_scores(reference, estimated, seed=6)
    assert np.array_equal(first.resampled.macro_f1, again.resampled.macro_f1)
    assert first.macro_f1 == again.macro_f1 and first.to_json() == again.to_json()
    assert not np.array_equal(first.resampled.macro_f1, other.resampled.macro_f1)
    assert first.to_json()["n_resamples"] == 1000 and first.to_json()["level"] == 0.95


def test_counts_api_matches_table_api():
    reference, a = random_tables(50, 12)
    _, b = random_tables(50, 13)
    names = sorted(reference)
    counts_a, counts_b = ClipCounts.from_tables(reference, a, names), ClipCounts.from_tables(reference, b, names)
    assert bootstrap_counts(counts_a, seed=1).to_json() == bootstrap_scores(reference, a, names, seed=1).to_json()
    assert (paired_difference_counts(counts_a, counts_b, seed=1).to_json()
            == paired_difference(reference, a, b, names, seed=1).to_json())
    # A clip listed in filenames but absent from both tables is a clip without events.
    extra = bootstrap_scores(reference, a, [*names, "silent.wav"], n_resamples=10)
    assert_identical_scores(extra.point, event_scores({**reference, "silent.wav": []}, a))


def test_level_changes_the_width():
    reference, estimated = random_tables(80, 1)
    wide = bootstrap_scores(reference, estimated, level=0.99)
    narrow = bootstrap_scores(reference, estimated, level=0.5)
    assert wide.macro_f1.low < narrow.macro_f1.low < narrow.macro_f1.high < wide.macro_f1.high


def test_bad_inputs_are_clear_errors():
    reference, estimated = random_tables(10, 0)
    names = sorted(reference)
    with pytest.raises(ValueError, match="duplicate"):
        bootstrap_scores(reference, estimated, [*names, names[0]])
    with pytest.raises(ValueError, match="reference events are not in filenames.*clip0000"):
        bootstrap_scores(reference, estimated, names[1:])
    with pytest.raises(ValueError, match="level"):
        bootstrap_scores(reference, estimated, level=95)
    counts = ClipCounts.from_tables(reference, estimated)
    fewer = ClipCounts.from_tables({f: reference[f] for f in names[:5]}, {})
    with pytest.raises(ValueError, match="same clips"):
        paired_difference_counts(counts, fewer)
    with pytest.raises(ValueError, match=r"shape \(3, 10\), expected \(2, 10\)"):
        ClipCounts(("a", "b"), np.zeros((3, NUM_CLASSES)), np.zeros((2, NUM_CLASSES)), np.zeros((2, NUM_CLASSES)))
    with pytest.raises(ValueError, match="TP must lie"):
        ClipCounts(("a",), np.ones((1, NUM_CLASSES)), np.ones((1, NUM_CLASSES)), np.zeros((1, NUM_CLASSES)))


def test_clip_counts_survive_json():
    """A finished sweep stage keeps its eval counts as JSON (for later paired comparisons after --resume)."""
    import json

    reference, estimated = random_tables(40, 3)
    counts = ClipCounts.from_tables(reference, estimated)
    back = ClipCounts.from_json(json.loads(json.dumps(counts.to_json())))
    assert back.filenames == counts.filenames
    for name in ("tp", "n_sys", "n_ref"):
        np.testing.assert_array_equal(getattr(back, name), getattr(counts, name))
        assert getattr(back, name).dtype == np.int64
    assert paired_difference_counts(back, counts).macro_f1.point == 0.0
