"""The fast event metrics against sed_eval (random cases) and against hand-worked counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdsed.constants import CLASS_INDEX, CLASSES
from kdsed.events import Event
from kdsed.metrics import EventArrays, EventScores, class_counts, event_scores, match_counts, sed_eval_scores

DOG, CAT, SPEECH = "Dog", "Cat", "Speech"


def flat_values(s: EventScores) -> list[float]:
    return [v for fpr in (*s.class_wise, s.macro, s.micro) for v in fpr]


def assert_same_scores(fast: EventScores, ref: EventScores) -> None:
    assert (fast.tp, fast.fp, fast.fn) == (ref.tp, ref.fp, ref.fn)
    for a, b in zip(flat_values(fast), flat_values(ref)):
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9, (a, b)


def check_parity(reference, estimated) -> EventScores:
    fast = event_scores(reference, estimated)
    assert_same_scores(fast, sed_eval_scores(reference, estimated))
    return fast


# ---------------------------------------------------------------- hand-worked cases

def counts(scores: EventScores, label: str) -> tuple[int, int, int]:
    i = CLASS_INDEX[label]
    return scores.tp[i], scores.fp[i], scores.fn[i]


@pytest.mark.parametrize(
    ("ref", "est", "expected"),
    [
        # onset 0.15 off, offset 0.35 off: the offset collar is 20 % of 2 s = 0.4 s
        ((1.0, 3.0), (1.15, 3.35), (1, 0, 0)),
        # onset 0.25 s late: outside the 0.2 s onset collar
        ((1.0, 3.0), (1.25, 3.0), (0, 1, 1)),
        # short event: the offset collar falls back to 0.2 s
        ((1.0, 1.5), (1.0, 1.69), (1, 0, 0)),
        ((1.0, 1.5), (1.0, 1.75), (0, 1, 1)),
        # float semantics as sed_eval: 0.5 - 0.3 == 0.2 (match) but 2.2 - 2.0 > 0.2 (no match)
        ((0.3, 1.3), (0.5, 1.3), (1, 0, 0)),
        ((2.0, 3.0), (2.2, 3.0), (0, 1, 1)),
    ],
)
def test_single_pair(ref, est, expected):
    scores = check_parity({"a.wav": [Event(*ref, DOG)]}, {"a.wav": [Event(*est, DOG)]})
    assert counts(scores, DOG) == expected


def test_optimal_matching_beats_greedy():
    # est1 fits both references, est2 only A: greedy (A takes est1) gets 1 TP, the optimum 2.
    refs = [Event(0.0, 1.0, SPEECH), Event(0.15, 1.15, SPEECH)]
    ests = [Event(0.1, 1.1, SPEECH), Event(0.0, 0.85, SPEECH)]
    scores = check_parity({"a.wav": refs}, {"a.wav": ests})
    assert counts(scores, SPEECH) == (2, 0, 0)


def test_two_estimates_for_one_reference_and_wrong_label():
    refs = [Event(1.0, 2.0, CAT)]
    ests = [Event(1.0, 2.0, CAT), Event(1.1, 2.1, CAT), Event(1.0, 2.0, DOG)]
    scores = check_parity({"a.wav": refs}, {"a.wav": ests})
    assert counts(scores, CAT) == (1, 1, 0)
    assert counts(scores, DOG) == (0, 1, 0)
    assert scores.class_wise[CLASS_INDEX[CAT]].f_measure == pytest.approx(2 / 3)


def test_macro_follows_sed_eval_for_empty_classes():
    # Cat: refs, no output -> F = P = R = 0. Dog: perfect. Blender: output only -> P = 0, F = R = NaN.
    # The 7 other classes: nothing -> P = 0 (zero_score), F = R = NaN.
    reference = {"a.wav": [Event(1.0, 2.0, CAT), Event(3.0, 4.0, DOG)], "b.wav": []}
    estimated = {"a.wav": [Event(3.0, 4.0, DOG)], "b.wav": [Event(0.0, 1.0, "Blender")]}
    scores = check_parity(reference, estimated)
    assert scores.class_wise[CLASS_INDEX[CAT]] == (0.0, 0.0, 0.0)
    blender = scores.class_wise[CLASS_INDEX["Blender"]]
    assert blender.precision == 0.0 and math.isnan(blender.f_measure) and math.isnan(blender.recall)
    assert scores.macro.f_measure == pytest.approx(0.5)  # mean over the classes with references
    assert scores.macro.recall == pytest.approx(0.5)
    assert scores.macro.precision == pytest.approx(0.1)  # mean over all 10 classes
    assert scores.micro == pytest.approx((2 * 0.5 * 0.5 / 1.0, 0.5, 0.5))


def test_no_output_at_all_and_no_reference_at_all():
    reference = {"a.wav": [Event(1.0, 2.0, CAT)]}
    scores = check_parity(reference, {})
    assert scores.macro == (0.0, 0.0, 0.0) and scores.micro == (0.0, 0.0, 0.0)
    empty = check_parity({"a.wav": []}, {"a.wav": []})
    assert math.isnan(empty.macro.f_measure) and empty.macro.precision == 0.0
    assert empty.to_json()["macro"] == {"f_measure": None, "precision": 0.0, "recall": None}


def test_to_json_shape():
    scores = event_scores({"a.wav": [Event(1.0, 2.0, CAT)]}, {"a.wav": [Event(1.0, 2.0, CAT)]})
    data = scores.to_json()
    assert set(data) == {"macro", "micro", "class_wise"}
    assert list(data["class_wise"]) == list(CLASSES)
    assert data["class_wise"][CAT] == {"f_measure": 1.0, "precision": 1.0, "recall": 1.0, "n_ref": 1, "n_sys": 1}
    assert data["micro"] == {"f_measure": 1.0, "precision": 1.0, "recall": 1.0}


def test_unknown_file_and_label_are_errors():
    with pytest.raises(ValueError, match="x.wav"):
        event_scores({"a.wav": []}, {"x.wav": [Event(0.0, 1.0, CAT)]})
    with pytest.raises(ValueError, match="x.wav"):
        sed_eval_scores({"a.wav": []}, {"x.wav": [Event(0.0, 1.0, CAT)]})
    with pytest.raises(ValueError, match="Cow"):
        event_scores({"a.wav": [Event(0.0, 1.0, "Cow")]}, {})


def test_match_counts_slots_are_independent():
    ref = EventArrays.from_table({"a.wav": [Event(1.0, 2.0, CAT)]}, ["a.wav"])
    est = EventArrays.from_table({"a.wav": [Event(1.0, 2.0, CAT), Event(1.05, 2.0, CAT)]}, ["a.wav"])
    tp = match_counts(ref.groups, ref.onset_s, ref.offset_s, est.groups, est.onset_s, est.offset_s,
                      n_groups=len(CLASSES), est_slots=np.array([0, 1]), n_slots=2)
    assert tp[:, CLASS_INDEX[CAT]].tolist() == [1, 1]  # one reference, matched once in each slot
    tp_one, fp, fn = class_counts(ref, est, n_files=1)
    assert (tp_one[CLASS_INDEX[CAT]], fp[CLASS_INDEX[CAT]], fn[CLASS_INDEX[CAT]]) == (1, 1, 0)


# ---------------------------------------------------------------- random parity with sed_eval

LABELS = st.sampled_from([CAT, DOG, SPEECH])
TICK = 0.05
# Offsets from a reference that land on, just inside and just outside the collars.
DELTAS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.4, 0.2 - 1e-9, 0.2 + 1e-9]
DELTA = st.sampled_from(DELTAS + [-d for d in DELTAS] + ["+rate", "-rate"])


@st.composite
def clip_case(draw, horizon_ticks: int = 60, max_len_ticks: int = 40):
    """One clip: references on a 50 ms grid, estimates copied from them with collar-sized shifts, plus strays."""
    refs = []
    for _ in range(draw(st.integers(0, 4))):
        onset = draw(st.integers(0, horizon_ticks)) * TICK
        refs.append(Event(onset, onset + draw(st.integers(1, max_len_ticks)) * TICK, draw(LABELS)))
    ests = []
    for ref in refs:
        for _ in range(draw(st.integers(0, 3))):
            onset = ref.onset_s + _delta(draw(DELTA), ref)
            offset = ref.offset_s + _delta(draw(DELTA), ref)
            label = ref.label if draw(st.integers(0, 4)) else draw(LABELS)
            if 0 <= onset < offset:
                ests.append(Event(onset, offset, label))
    for _ in range(draw(st.integers(0, 2))):
        onset = draw(st.integers(0, horizon_ticks)) * TICK
        ests.append(Event(onset, onset + draw(st.integers(1, max_len_ticks)) * TICK, draw(LABELS)))
    return refs, draw(st.permutations(ests))


def _delta(d, ref: Event) -> float:
    if isinstance(d, str):
        return (1.0 if d[0] == "+" else -1.0) * 0.2 * (ref.offset_s - ref.onset_s)
    return d


@st.composite
def many_clips(draw, min_size: int, max_size: int, **kw):
    cases = draw(st.lists(clip_case(**kw), min_size=min_size, max_size=max_size))
    reference = {f"clip{i}.wav": refs for i, (refs, _) in enumerate(cases)}
    estimated = {f"clip{i}.wav": ests for i, (_, ests) in enumerate(cases) if ests or draw(st.booleans())}
    return reference, estimated


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.data_too_large])


@pytest.mark.slow  # many sed_eval runs; the fast lane keeps the arbitrary-floats parity
@SETTINGS
@given(many_clips(min_size=10, max_size=40))
def test_parity_with_sed_eval_random_clips(case):
    check_parity(*case)


@pytest.mark.slow  # many sed_eval runs; the fast lane keeps the arbitrary-floats parity
@SETTINGS
@given(many_clips(min_size=10, max_size=30, horizon_ticks=12, max_len_ticks=8))
def test_parity_with_sed_eval_dense_overlaps(case):
    # Short horizon, short events: many references and estimates overlap, so matchings are non-trivial.
    check_parity(*case)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3, allow_nan=False), st.floats(0.01, 3), LABELS), max_size=6),
       st.lists(st.tuples(st.floats(0, 3, allow_nan=False), st.floats(0.01, 3), LABELS), max_size=6))
def test_parity_with_sed_eval_arbitrary_floats(refs, ests):
    reference = {"a.wav": [Event(on, on + d, lab) for on, d, lab in refs]}
    estimated = {"a.wav": [Event(on, on + d, lab) for on, d, lab in ests]}
    check_parity(reference, estimated)
