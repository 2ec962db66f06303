"""The topline's training targets: the hidden true events of the training clips, rendered to frames."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from kdsed.config import FeatureConfig
from kdsed.constants import CLASS_INDEX, TRAIN_SUBSETS, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN, WEAK
from kdsed.data import DcaseDataset, load_dataset
from kdsed.events import MetadataError
from kdsed.features import FeatureSet
from kdsed.metrics import event_scores
from kdsed.postprocess import decode_events, events_to_frame_targets
from kdsed.prepare import PreparedData, weak_matrix
from kdsed.topline import TOPLINE_SKIPPED_NOTE, hidden_events_of_training_clips, topline_training_set


def labels_only_data(dataset: DcaseDataset, n_frames: dict[str, int] | None = None) -> PreparedData:
    """A PreparedData of the dataset's training clips with zero features (the targets never read them)."""
    fcfg = FeatureConfig()
    frames = fcfg.frames_per_clip
    clips = [c for s in TRAIN_SUBSETS for c in dataset.subset(s)]
    valid = np.array([(n_frames or {}).get(c.filename, frames) for c in clips], np.int64)
    train = FeatureSet([c.filename for c in clips], np.zeros((len(clips), frames, fcfg.n_mels), np.float32), valid)
    return PreparedData(dataset=dataset, feature_config=fcfg, normalizer=None, subsets={}, train=train,
                        train_subset=np.array([c.subset for c in clips]),
                        weak_targets=weak_matrix([c.weak_labels if c.subset == WEAK else None for c in clips]))


@pytest.fixture(scope="module")
def smoke(smoke_dataset: Path) -> DcaseDataset:
    return load_dataset(smoke_dataset)


def test_targets_are_the_hidden_events_rendered_to_frames(smoke):
    data = labels_only_data(smoke)
    targets = topline_training_set(data)
    assert targets is not None and targets.features is data.train
    frames = data.feature_config.frames_per_clip
    assert targets.strong.shape == (64, frames, 10) and targets.weak.shape == (64, 10)
    n_events = 0
    for i, name in enumerate(data.train.filenames):
        clip = next(c for s in TRAIN_SUBSETS for c in smoke.subset(s) if c.filename == name)
        events = list(clip.hidden_events)
        n_events += len(events)
        assert np.array_equal(targets.strong[i], events_to_frame_targets(events, data.feature_config, frames))
        tags = np.zeros(10, np.float32)
        tags[[CLASS_INDEX[e.label] for e in events]] = 1.0
        assert np.array_equal(targets.weak[i], tags), name  # weak clips: their tags; others: their events' tags
    assert n_events > 64 and targets.strong.sum() > 0
    assert not np.isnan(targets.weak).any() and not np.isnan(targets.strong).any()


def test_targets_decode_back_to_the_hidden_events(smoke):
    # Independent of the renderer: decoding the frame targets gives the true events back within the collars
    # (two touching events of one class would decode as one; the smoke set has none).
    data = labels_only_data(smoke)
    targets = topline_training_set(data)
    decoded = decode_events(targets.strong, 0.5, data.feature_config, filenames=data.train.filenames)
    hidden = hidden_events_of_training_clips(data)
    scores = event_scores(hidden, decoded)
    assert scores.micro == (1.0, 1.0, 1.0), scores.micro
    assert sum(map(len, decoded.values())) == sum(map(len, hidden.values()))
    for name in data.train.filenames:
        for e in decoded[name]:
            assert any(abs(e.onset_s - h.onset_s) <= data.feature_config.hop_s for h in hidden[name]
                       if h.label == e.label), (name, e)


def test_short_clip_targets_stop_at_the_clip_end(smoke):
    name = smoke.subset(UNLABEL_IN_DOMAIN)[0].filename
    data = labels_only_data(smoke, {name: 100})
    targets = topline_training_set(data)
    row = data.train.filenames.index(name)
    hidden = hidden_events_of_training_clips(data)[name]
    assert np.array_equal(targets.strong[row], events_to_frame_targets(hidden, data.feature_config,
                                                                       data.feature_config.frames_per_clip))
    assert data.train.n_frames[row] == 100  # the trainer masks frames past n_frames; the targets keep clip time


def test_no_hidden_labels_gives_none(smoke):
    without = {s: [dataclasses.replace(c, hidden_events=None) for c in clips] if s == UNLABEL_OUT_OF_DOMAIN else clips
               for s, clips in smoke.clips.items()}
    data = labels_only_data(DcaseDataset(smoke.root, without))
    assert topline_training_set(data) is None and hidden_events_of_training_clips(data) is None
    assert "no hidden strong labels" in TOPLINE_SKIPPED_NOTE and "\n" not in TOPLINE_SKIPPED_NOTE


def test_a_training_clip_without_hidden_labels_is_a_clear_error(smoke):
    data = labels_only_data(smoke)
    data.train.filenames[30] = "stranger.wav"
    with pytest.raises(MetadataError, match=r"1 training clip\(s\).*'stranger.wav' of subset 'unlabel_in_domain'"):
        topline_training_set(data)
