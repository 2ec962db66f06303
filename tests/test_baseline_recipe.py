"""The official two-stage DCASE 2018 baseline's targets: stage-1 split, tag thresholds, stage-2 frame targets."""

from __future__ import annotations

import numpy as np
import pytest

from kdsed.baseline_recipe import (
    TAG_THRESHOLDS,
    clip_tags_over_frames,
    stage1_sets,
    stage2_training_set,
    stage2_validation_set,
    tag_f1,
    tags_from_probs,
    tune_tag_thresholds,
)
from kdsed.config import FeatureConfig, ModelConfig, TrainConfig
from kdsed.constants import CLASS_INDEX, NUM_CLASSES, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN, WEAK
from kdsed.features import FeatureSet
from kdsed.prepare import PreparedData, weak_matrix
from kdsed.models import build_model
from kdsed.train import TargetSet, _Batches, _loss

FRAMES = 30
DOG, CAT, SPEECH = CLASS_INDEX["Dog"], CLASS_INDEX["Cat"], CLASS_INDEX["Speech"]


def recipe_data() -> PreparedData:
    """10 weak clips, 4 in-domain and 2 out-of-domain unlabeled clips; feature value = clip index (to trace rows)."""
    subsets = [WEAK] * 10 + [UNLABEL_IN_DOMAIN] * 4 + [UNLABEL_OUT_OF_DOMAIN] * 2
    n = len(subsets)
    features = np.repeat(np.arange(n, dtype=np.float32)[:, None, None], FRAMES, axis=1).repeat(64, axis=2)
    n_frames = np.full(n, FRAMES, np.int64)
    n_frames[11] = 12  # a short in-domain clip
    train = FeatureSet([f"clip{i:02d}.wav" for i in range(n)], features, n_frames)
    tags = [("Dog",) if i % 2 else ("Cat", "Speech") for i in range(10)] + [None] * 6
    return PreparedData(dataset=None, feature_config=FeatureConfig(), normalizer=None, subsets={}, train=train,
                        train_subset=np.array(subsets), weak_targets=weak_matrix(tags))


def test_thresholds_are_the_official_grid():
    assert len(TAG_THRESHOLDS) == 11 and TAG_THRESHOLDS[0] == 0.0 and TAG_THRESHOLDS[-1] == pytest.approx(1.0)
    assert TAG_THRESHOLDS[3] == 0.30000000000000004  # numpy.arange(0., 1 + 1e-6, 0.1), as the original


def test_stage1_split_holds_out_a_fifth_of_the_weak_clips_at_random():
    data = recipe_data()
    train, val = stage1_sets(data, seed=0)
    assert len(train.features) == 8 and len(val.features) == 2
    names = train.features.filenames + val.features.filenames
    assert sorted(names) == [f"clip{i:02d}.wav" for i in range(10)]  # weak clips only, each once
    for ts in (train, val):
        rows = [int(f[4:6]) for f in ts.features.filenames]
        assert np.array_equal(ts.weak, data.weak_targets[rows]) and ts.strong is None
        assert np.array_equal(ts.features.features[:, 0, 0], np.asarray(rows, np.float32))
    again, other = stage1_sets(data, seed=0)[1], stage1_sets(data, seed=3)[1]
    assert again.features.filenames == val.features.filenames
    assert other.features.filenames != val.features.filenames
    with pytest.raises(ValueError, match="validation_fraction"):
        stage1_sets(data, validation_fraction=1.0)


def test_tag_f1_counts_like_the_original():
    truth = np.zeros((4, NUM_CLASSES))
    truth[:2, DOG] = 1
    tags = np.zeros((4, NUM_CLASSES))
    tags[[0, 2], DOG] = 1
    f1 = tag_f1(tags, truth)
    assert f1[DOG] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))  # TP 1, FP 1, FN 1
    assert f1[CAT] == 0.0  # no tags, no truth: 0, as `get_f_measure_by_class`


def test_tune_tag_thresholds_picks_the_best_threshold_per_class():
    truth = np.zeros((6, NUM_CLASSES))
    truth[:3, DOG] = 1
    truth[:2, CAT] = 1
    probs = np.full((6, NUM_CLASSES), 0.05)
    # DOG: t = 0.0 -> F1 6/9, 0.1-0.2 -> 6/8, 0.3-0.5 -> 6/7, 0.6 -> 1 (tags exactly clips 0-2), 0.7 -> 4/5.
    probs[:, DOG] = [0.9, 0.8, 0.65, 0.55, 0.25, 0.05]
    # CAT: t = 0.2 and t = 0.3 both tag clips 0-2 (F1 0.8, the best): the earlier one is kept.
    probs[:, CAT] = [0.35, 0.45, 0.32, 0.15, 0.05, 0.05]
    thresholds = tune_tag_thresholds(probs, truth)
    assert thresholds[DOG] == TAG_THRESHOLDS[6] and tag_f1(tags_from_probs(probs, thresholds), truth)[DOG] == 1.0
    assert thresholds[CAT] == TAG_THRESHOLDS[2] and tag_f1(tags_from_probs(probs, thresholds), truth)[CAT] == 0.8
    # A class never present: F1 is 0 at every threshold, so the first threshold is kept (strict `>`).
    assert thresholds[SPEECH] == 0.0
    with pytest.raises(ValueError, match="NaN"):
        tune_tag_thresholds(probs, np.full((6, NUM_CLASSES), np.nan))
    with pytest.raises(ValueError, match=r"\(6, 10\) and \(5, 10\)"):
        tune_tag_thresholds(probs, truth[:5])


def test_tags_use_greater_or_equal():
    probs = np.array([[0.5] * NUM_CLASSES, [0.49] * NUM_CLASSES])
    assert tags_from_probs(probs, 0.5).tolist() == [[1.0] * NUM_CLASSES, [0.0] * NUM_CLASSES]
    per_class = [0.5] * NUM_CLASSES
    per_class[DOG] = 0.4
    assert tags_from_probs(probs, per_class)[1, DOG] == 1.0 and tags_from_probs(probs, per_class)[1, CAT] == 0.0


def test_stage2_trains_on_in_domain_clips_with_every_frame_labelled_as_the_clip():
    data = recipe_data()
    probs = np.full((16, NUM_CLASSES), 0.1, np.float32)
    probs[10, DOG] = 0.7
    probs[11, [CAT, SPEECH]] = 0.9
    probs[12, DOG] = 0.45
    probs[14:, DOG] = 0.99  # out-of-domain clips: never in stage 2
    probs[:10, :] = 0.99  # weak clips: never trained on in stage 2
    thresholds = np.full(NUM_CLASSES, 0.5)
    thresholds[DOG] = 0.4
    stage2 = stage2_training_set(data, probs, thresholds)
    assert stage2.features.filenames == ["clip10.wav", "clip11.wav", "clip12.wav", "clip13.wav"]
    assert np.array_equal(stage2.features.features[:, 0, 0], [10, 11, 12, 13])
    assert stage2.features.n_frames.tolist() == [FRAMES, 12, FRAMES, FRAMES]
    assert stage2.weak is None and stage2.strong.shape == (4, FRAMES, NUM_CLASSES)
    expected = np.zeros((4, NUM_CLASSES), np.float32)
    expected[0, DOG] = expected[1, CAT] = expected[1, SPEECH] = expected[2, DOG] = 1.0
    assert np.array_equal(stage2.strong, np.repeat(expected[:, None, :], FRAMES, axis=1))
    with pytest.raises(ValueError, match=r"one row per training clip \(16, 10\)"):
        stage2_training_set(data, probs[:10], thresholds)


def test_stage2_validation_is_the_weak_clips_with_their_tags_on_every_frame():
    data = recipe_data()
    val = stage2_validation_set(data)
    assert val.features.filenames == [f"clip{i:02d}.wav" for i in range(10)] and val.weak is None
    assert np.array_equal(val.strong, np.repeat(data.weak_targets[:10, None, :], FRAMES, axis=1))
    assert val.strong[1, :, DOG].tolist() == [1.0] * FRAMES and val.strong[0, :, DOG].tolist() == [0.0] * FRAMES


def test_stage2_loss_is_the_frame_loss_only():
    import torch

    data = recipe_data()
    stage2 = stage2_training_set(data, np.full((16, NUM_CLASSES), 0.9), 0.5)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="baseline", width=0.25)).eval()
    batches = _Batches(stage2, torch.device("cpu"))
    rows = torch.arange(len(stage2.features))
    with torch.no_grad():
        frame_only = float(_loss(model, batches, rows, TrainConfig(weak_loss_weight=0.0, strong_loss_weight=1.0)))
        both = float(_loss(model, batches, rows, TrainConfig(weak_loss_weight=1.0, strong_loss_weight=1.0)))
    assert frame_only > 0 and both == frame_only  # no clip targets: the clip loss term is 0


def test_clip_tags_over_frames_shape():
    tags = np.eye(NUM_CLASSES, dtype=np.float32)[:3]
    out = clip_tags_over_frames(tags, 7)
    assert out.shape == (3, 7, NUM_CLASSES) and out.flags.c_contiguous and np.array_equal(out[:, 4], tags)
    TargetSet(FeatureSet(["a", "b", "c"], np.zeros((3, 7, 64), np.float32), np.full(3, 7)), strong=out)
