"""Building blocks of the distillation passes: per-class selection, merging winners, pseudo-label targets.

These functions only read a PreparedData's training clips, subsets and weak targets, so the
tests build a tiny one by hand (prepare_data on the smoke set takes 25-50 s on 2 shared cores).
"""

from __future__ import annotations

import numpy as np
import pytest

from kdsed.config import DistillConfig, FeatureConfig, VariantSpec
from kdsed.constants import CLASS_INDEX, NUM_CLASSES, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN, WEAK
from kdsed.distill import (
    Outputs,
    Scored,
    VariantOutcome,
    combine_winners,
    ensemble_outputs,
    pseudo_strong_labels,
    pseudo_weak_targets,
    select_per_class,
    smooth_pseudo_labels,
    strong_targets,
    tagging_set,
    variant_training_set,
)
from kdsed.features import FeatureSet
from kdsed.prepare import PreparedData, weak_matrix
from kdsed.search import PostprocessChoice

FRAMES = 40
DOG, CAT, SPEECH = CLASS_INDEX["Dog"], CLASS_INDEX["Cat"], CLASS_INDEX["Speech"]


def tiny_data(n_frames: tuple[int, ...] = (40, 40, 40, 40)) -> PreparedData:
    """Two weak clips (tags Dog; Cat+Speech), one in-domain and one out-of-domain unlabeled clip."""
    n = len(n_frames)
    subsets = np.array([WEAK, WEAK, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN][:n])
    train = FeatureSet([f"clip{i}.wav" for i in range(n)], np.zeros((n, FRAMES, 64), np.float32),
                       np.asarray(n_frames, np.int64))
    tags = weak_matrix([("Dog",), ("Cat", "Speech"), None, None][:n])
    return PreparedData(dataset=None, feature_config=FeatureConfig(), normalizer=None, subsets={}, train=train,
                        train_subset=subsets, weak_targets=tags)


def choice(fill: float) -> PostprocessChoice:
    """A post-processing choice whose every per-class value encodes `fill` (to trace where values come from)."""
    return PostprocessChoice(
        median_windows=(int(fill),) * NUM_CLASSES, gaussian_sigmas=(fill,) * NUM_CLASSES,
        thresholds=(fill / 10,) * NUM_CLASSES, f1=(fill / 100,) * NUM_CLASSES,
        precision=(fill / 100,) * NUM_CLASSES, recall=(fill / 100,) * NUM_CLASSES)


def outcome(name: str, fill: float) -> VariantOutcome:
    outputs = Outputs(np.full((4, FRAMES, NUM_CLASSES), fill, np.float32), np.full((3, FRAMES, NUM_CLASSES), fill + 1),
                      np.full((2, FRAMES, NUM_CLASSES), fill + 2))
    return VariantOutcome(name, result=None, outputs=outputs, scored=Scored(choice(fill), val=None, eval=None))


# --- select_per_class and combine_winners ----------------------------------------------------------


def test_select_per_class_takes_the_best_and_ties_go_to_the_first_listed():
    f1 = {
        "deep-none": [0.5] * NUM_CLASSES,
        "shallow-median": [0.5] * NUM_CLASSES,
        "deep-median": [0.1] * NUM_CLASSES,
    }
    f1["shallow-median"][DOG] = 0.9
    f1["deep-median"][CAT] = 0.6
    f1["deep-median"][SPEECH] = 0.5  # ties with both others: first listed wins
    winners = select_per_class(f1)
    assert len(winners) == NUM_CLASSES
    assert winners[DOG] == "shallow-median" and winners[CAT] == "deep-median"
    assert winners[SPEECH] == "deep-none"
    assert [w for c, w in enumerate(winners) if c not in (DOG, CAT)] == ["deep-none"] * (NUM_CLASSES - 2)
    reordered = select_per_class({"shallow-median": f1["shallow-median"], "deep-none": f1["deep-none"]})
    assert reordered[SPEECH] == "shallow-median"


def test_select_per_class_refuses_bad_tables():
    with pytest.raises(ValueError, match="no variants"):
        select_per_class({})
    with pytest.raises(ValueError, match=r"shape \(2, 9\), expected \(2, 10\)"):
        select_per_class({"a": [0.1] * 9, "b": [0.2] * 9})
    with pytest.raises(ValueError):
        select_per_class({"a": [0.1] * NUM_CLASSES, "b": [0.2] * 9})


def test_combine_winners_takes_class_c_from_winner_c():
    outcomes = {"a": outcome("a", 3.0), "b": outcome("b", 5.0), "c": outcome("c", 7.0)}
    winners = ["a", "b", "c", "a", "a", "b", "b", "c", "c", "a"]
    merged, merged_choice = combine_winners(outcomes, winners)
    fill = np.array([{"a": 3.0, "b": 5.0, "c": 7.0}[w] for w in winners])
    np.testing.assert_array_equal(merged.train, np.broadcast_to(fill, (4, FRAMES, NUM_CLASSES)))
    np.testing.assert_array_equal(merged.test, np.broadcast_to(fill + 1, (3, FRAMES, NUM_CLASSES)))
    np.testing.assert_array_equal(merged.eval, np.broadcast_to(fill + 2, (2, FRAMES, NUM_CLASSES)))
    assert merged.train_clip is None
    assert merged_choice.median_windows == tuple(int(v) for v in fill)
    assert merged_choice.gaussian_sigmas == tuple(fill)
    assert merged_choice.thresholds == tuple(fill / 10)
    assert merged_choice.f1 == tuple(fill / 100)
    assert not np.shares_memory(merged.train, outcomes["a"].outputs.train)


# --- smoothing and targets -------------------------------------------------------------------------


def test_the_ensemble_is_the_mean_of_the_variants_on_every_clip_set():
    a, b = outcome("a", 0.2), outcome("b", 0.6)
    mean = ensemble_outputs({"a": a, "b": b})
    for k, expected in (("train", 0.4), ("test", 1.4), ("eval", 2.4)):
        np.testing.assert_allclose(getattr(mean, k), expected, rtol=1e-6)
        assert getattr(mean, k).dtype == np.float32
    assert mean.train_clip is None  # not every variant has clip probabilities
    a.outputs.train_clip, b.outputs.train_clip = np.full((4, NUM_CLASSES), 0.1), np.full((4, NUM_CLASSES), 0.3)
    np.testing.assert_allclose(ensemble_outputs({"a": a, "b": b}).train_clip, 0.2, rtol=1e-6)
    with pytest.raises(ValueError, match="no variants"):
        ensemble_outputs({})


def test_smoothing_none_median_and_gaussian():
    cfg = DistillConfig(pseudo_median_window=5, pseudo_gaussian_sigma=2.0)
    probs = np.zeros((2, FRAMES, NUM_CLASSES), np.float32)
    probs[0, 10:25, DOG] = 1.0
    probs[0, 32, DOG] = 1.0  # a one-frame spike
    assert smooth_pseudo_labels(probs, "none", cfg) is probs

    median = smooth_pseudo_labels(probs, "median", cfg)
    assert median.dtype == np.float32 and median.shape == probs.shape
    assert median[0, 32, DOG] == 0.0 and median[0, 31:34, DOG].max() == 0.0  # spike removed
    np.testing.assert_array_equal(median[0, :, DOG], (np.arange(FRAMES) >= 10) & (np.arange(FRAMES) < 25))
    assert np.all(median[1] == 0.0)

    both = smooth_pseudo_labels(probs, "median+gaussian", cfg)
    assert both.dtype == np.float32
    assert 0.0 < both[0, 9, DOG] < 0.5 < both[0, 10, DOG] < 1.0  # the step became a ramp
    assert np.abs(np.diff(both[0, :, DOG])).max() < np.abs(np.diff(median[0, :, DOG])).max()
    assert both[0, :, DOG].sum() == pytest.approx(median[0, :, DOG].sum(), rel=1e-3)  # mass kept


def test_strong_targets_mask_classes_absent_from_a_weak_clips_tags():
    data = tiny_data()
    pseudo = np.random.default_rng(0).random((4, FRAMES, NUM_CLASSES)).astype(np.float32)
    masked = strong_targets(data, pseudo, DistillConfig(mask_weak_clips=True))
    allowed0, allowed1 = np.zeros(NUM_CLASSES, bool), np.zeros(NUM_CLASSES, bool)
    allowed0[DOG] = True
    allowed1[[CAT, SPEECH]] = True
    np.testing.assert_array_equal(masked[0], pseudo[0] * allowed0)
    np.testing.assert_array_equal(masked[1], pseudo[1] * allowed1)
    np.testing.assert_array_equal(masked[2:], pseudo[2:])  # unlabeled clips (NaN tags) unchanged
    assert masked.dtype == np.float32 and not np.isnan(masked).any()
    assert strong_targets(data, pseudo, DistillConfig(mask_weak_clips=False)) is pseudo


def test_pseudo_weak_targets_hard_soft_and_true_tags():
    data = tiny_data()
    clip_probs = np.full((4, NUM_CLASSES), 0.2, np.float32)
    clip_probs[:, DOG] = 0.5
    clip_probs[:, CAT] = 0.49
    clip_probs[:, SPEECH] = 0.8
    tagger = Outputs(None, None, None, train_clip=clip_probs)
    hard = pseudo_weak_targets(data, tagger, DistillConfig(pseudo_weak="hard", pseudo_weak_threshold=0.5))
    np.testing.assert_array_equal(hard[:2], data.weak_targets[:2])  # weak clips keep their true tags
    expected = np.zeros(NUM_CLASSES, np.float32)
    expected[[DOG, SPEECH]] = 1.0  # >= threshold
    np.testing.assert_array_equal(hard[2], expected)
    np.testing.assert_array_equal(hard[3], expected)
    soft = pseudo_weak_targets(data, tagger, DistillConfig(pseudo_weak="soft"))
    np.testing.assert_array_equal(soft[:2], data.weak_targets[:2])
    np.testing.assert_array_equal(soft[2:], clip_probs[2:])
    assert not np.isnan(hard).any() and not np.isnan(soft).any()
    higher = pseudo_weak_targets(data, tagger, DistillConfig(pseudo_weak="hard", pseudo_weak_threshold=0.7))
    assert higher[2].tolist() == [1.0 if c == SPEECH else 0.0 for c in range(NUM_CLASSES)]


def test_tuned_pseudo_weak_labels_threshold_each_class_where_the_tagger_tags_test_best(monkeypatch):
    """A shy tagger (Dog at 0.2-0.3 where Dog sounds) gets Dog tags with tuned thresholds, none at 0.5."""
    import kdsed.distill as distill

    data = tiny_data()
    test_truth = np.zeros((6, NUM_CLASSES), np.float32)
    test_truth[:3, DOG] = 1.0
    test_clip = np.full((6, NUM_CLASSES), 0.05, np.float32)
    test_clip[:3, DOG] = [0.25, 0.3, 0.35]  # Dog clips of `test`: the tagger's Dog probability is low but ranks them
    test_clip[3:, DOG] = 0.1
    monkeypatch.setattr(distill, "test_tags", lambda _data: test_truth)
    train_clip = np.full((4, NUM_CLASSES), 0.05, np.float32)
    train_clip[2, DOG] = 0.32
    tagger = Outputs(None, None, None, train_clip=train_clip, test_clip=test_clip)
    thresholds = distill.pseudo_weak_thresholds(data, tagger, DistillConfig(pseudo_weak="tuned"))
    assert thresholds[DOG] == pytest.approx(0.2)  # the lowest threshold that tags exactly the 3 Dog clips of test
    tuned = pseudo_weak_targets(data, tagger, DistillConfig(pseudo_weak="tuned"))
    hard = pseudo_weak_targets(data, tagger, DistillConfig(pseudo_weak="hard"))
    assert tuned[2, DOG] == 1.0 and hard[2, DOG] == 0.0
    assert tuned[3, DOG] == 0.0  # 0.05 < 0.2
    np.testing.assert_array_equal(tuned[:2], data.weak_targets[:2])
    with pytest.raises(ValueError, match="clip probabilities on `test`"):
        pseudo_weak_targets(data, Outputs(None, None, None, train_clip=train_clip), DistillConfig(pseudo_weak="tuned"))


def test_hard_pseudo_strong_labels_are_the_events_of_the_passes_own_post_processing():
    """Hard labels: the frames the chosen median window and per-class threshold keep, as 0/1; soft: the probabilities."""
    data = tiny_data(n_frames=(40, 40, 40, 30))
    probs = np.zeros((4, FRAMES, NUM_CLASSES), np.float32)
    probs[0, 10:20, DOG] = 0.7   # an event above Dog's threshold 0.6
    probs[0, 14, DOG] = 0.1      # a one-frame dip that the 3-frame median fills
    probs[1, 5:8, CAT] = 0.5     # under Cat's threshold 0.6 at every frame: no event
    probs[2, 30, SPEECH] = 0.9   # a one-frame blip that the median removes
    probs[3, 25:40, DOG] = 0.8   # runs past the clip's 30 valid frames: cut at frame 30
    chosen = PostprocessChoice(median_windows=(3,) * NUM_CLASSES, gaussian_sigmas=(0.0,) * NUM_CLASSES,
                               thresholds=(0.6,) * NUM_CLASSES, f1=(0.5,) * NUM_CLASSES)
    hard = pseudo_strong_labels(data, probs, chosen, DistillConfig(pseudo_strong="hard"))
    assert hard.shape == probs.shape and hard.dtype == np.float32 and set(np.unique(hard)) == {0.0, 1.0}
    assert np.flatnonzero(hard[0, :, DOG]).tolist() == list(range(10, 20))
    assert np.flatnonzero(hard[3, :, DOG]).tolist() == list(range(25, 30))
    assert hard.sum() == 10 + 5  # nothing else: no Cat event, no Speech blip
    assert pseudo_strong_labels(data, probs, chosen, DistillConfig(pseudo_strong="soft")) is probs


def test_variant_training_set_smooths_then_masks():
    data = tiny_data()
    previous = np.zeros((4, FRAMES, NUM_CLASSES), np.float32)
    previous[:, 5:20, CAT] = 1.0
    previous[:, 30, CAT] = 1.0  # spike
    cfg = DistillConfig(pseudo_median_window=3)
    ts = variant_training_set(data, previous, VariantSpec("shallow", "median"), cfg)
    assert ts.features is data.train and ts.weak is data.weak_targets
    assert np.all(ts.strong[0] == 0.0)  # clip 0 is tagged Dog only: its Cat labels are masked
    for i in (1, 2, 3):
        np.testing.assert_array_equal(ts.strong[i, :, CAT], (np.arange(FRAMES) >= 5) & (np.arange(FRAMES) < 20))


def test_tagging_set_is_the_weak_clips_with_their_tags():
    data = tiny_data()
    ts = tagging_set(data)
    assert ts.features.filenames == ["clip0.wav", "clip1.wav"] and ts.strong is None
    np.testing.assert_array_equal(ts.weak, data.weak_targets[:2])


def test_smoothing_treats_a_short_clip_as_ending_at_its_last_valid_frame():
    data = tiny_data(n_frames=(40, 40, 25, 40))
    previous = np.zeros((4, FRAMES, NUM_CLASSES), np.float32)
    previous[2, :25, DOG] = 1.0  # unlabeled short clip, Dog for its whole length
    ts = variant_training_set(data, previous, VariantSpec("deep", "median+gaussian"), DistillConfig())
    np.testing.assert_allclose(ts.strong[2, :25, DOG], 1.0, atol=1e-6)



def test_pseudo_label_counts_score_what_a_pass_hands_on_and_pair_two_passes(monkeypatch):
    """The pseudo-labels' counts give their event F1 against the hidden labels; two passes' counts pair clip by clip."""
    from kdsed import distill
    from kdsed.metrics import bootstrap_counts, event_scores, paired_difference_counts
    from kdsed.search import apply_postprocessing

    data = tiny_data()
    probs = np.zeros((4, FRAMES, NUM_CLASSES), np.float32)
    probs[2, 10:20, DOG] = 0.9   # the in-domain clip's Dog event
    probs[3, 5:30, CAT] = 0.9    # the out-of-domain clip's Cat event
    chosen = PostprocessChoice(median_windows=(1,) * NUM_CLASSES, gaussian_sigmas=(0.0,) * NUM_CLASSES,
                               thresholds=(0.5,) * NUM_CLASSES, f1=(0.5,) * NUM_CLASSES)
    events = apply_postprocessing(probs, chosen, data.feature_config, data.train.filenames,
                                  n_valid_frames=data.train.n_frames)
    hidden = {f: events.get(f, []) for f in data.train.filenames}  # the truth: exactly these two events
    monkeypatch.setattr(data, "hidden_reference", lambda: hidden)
    right = distill.pseudo_label_counts(data, probs, chosen)
    assert right.filenames == tuple(sorted(hidden)) and int(right.n_ref.sum()) == 2 and int(right.tp.sum()) == 2
    assert right.scores().to_json() == event_scores(hidden, hidden).to_json()
    assert distill.pseudo_label_scores(data, probs, chosen).macro.f_measure == 1.0
    half = probs.copy()
    half[3] = 0.0  # the next pass loses the Cat event: Cat's F1 goes from 1 to 0, macro F1 from 1 to 0.5
    worse = distill.pseudo_label_counts(data, half, chosen)
    assert worse.scores().macro.f_measure == 0.5
    diff = paired_difference_counts(worse, right).macro_f1
    assert diff.point == -0.5 and diff.low <= -0.5 <= diff.high
    same = paired_difference_counts(right, right).macro_f1
    assert (same.point, same.low, same.high) == (0.0, 0.0, 0.0)
    assert bootstrap_counts(right).macro_f1.point == 1.0
    monkeypatch.setattr(data, "hidden_reference", lambda: None)
    assert distill.pseudo_label_counts(data, probs, chosen) is None
