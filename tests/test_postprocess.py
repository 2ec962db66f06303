"""Smoothing, decoding and encoding of frame probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from kdsed.config import FeatureConfig
from kdsed.constants import CLASS_INDEX, CLASSES, NUM_CLASSES
from kdsed.events import Event
from kdsed.postprocess import (
    active_runs,
    decode_events,
    events_to_frame_targets,
    fill_invalid_frames,
    frame_centres_s,
    frames_to_seconds,
    gaussian_smooth,
    median_smooth,
)

CFG = FeatureConfig()
HOP = CFG.hop_s
N_FRAMES = CFG.frames_per_clip


def cell_start(i: int) -> float:
    return CFG.frame_offset_s + i * HOP


@pytest.fixture
def probs() -> np.ndarray:
    return np.random.default_rng(0).random((3, 50, NUM_CLASSES))


def naive_median(x: np.ndarray, window: int) -> np.ndarray:
    """Median along axis 1 with edge-repeated padding, one window at a time."""
    half = window // 2
    padded = np.pad(x, ((0, 0), (half, half), (0, 0)), mode="edge")
    return np.stack([np.median(padded[:, i:i + window], axis=1) for i in range(x.shape[1])], axis=1)


def test_identities(probs):
    assert np.array_equal(median_smooth(probs, 1), probs)
    assert np.array_equal(gaussian_smooth(probs, 0.0), probs)
    assert np.array_equal(median_smooth(probs[0], 1), probs[0])


@pytest.mark.parametrize("window", [3, 5, 7, 9, 33])
def test_median_matches_naive_and_2d_input(probs, window):
    # windows >= 7 take the flattened 1-D path, smaller ones scipy's generic filter
    expected = naive_median(probs, window)
    assert np.array_equal(median_smooth(probs, window), expected)
    assert np.array_equal(median_smooth(probs[1], window), expected[1])


@pytest.mark.parametrize("window", [2, 4, 8, 34])
def test_even_median_is_scipys_upper_median(probs, window):
    expected = ndimage.median_filter(probs, size=(1, window, 1), mode="nearest")
    assert np.array_equal(median_smooth(probs, window), expected)


def test_median_removes_short_spikes_and_keeps_edges():
    x = np.zeros((20, NUM_CLASSES))
    x[10, 0] = 1.0  # a one-frame spike: gone with a 3-frame window
    x[:4, 1] = 1.0  # an event touching the clip start keeps its length ('nearest' boundary)
    y = median_smooth(x, 3)
    assert y[:, 0].max() == 0.0
    assert np.array_equal(y[:, 1], x[:, 1])


def test_per_class_windows_and_sigmas(probs):
    windows = [1, 3, 5, 7, 9, 1, 3, 5, 7, 9]
    sigmas = [0.0, 1.0, 2.5, 0.0, 1.0, 2.5, 0.0, 1.0, 2.5, 0.0]
    med = median_smooth(probs, windows)
    gauss = gaussian_smooth(probs, sigmas)
    for c in range(NUM_CLASSES):
        assert np.array_equal(med[..., c], median_smooth(probs, windows[c])[..., c])
        expected = probs[..., c] if sigmas[c] == 0 else ndimage.gaussian_filter1d(probs[..., c], sigmas[c], axis=1,
                                                                                    mode="nearest")
        assert np.allclose(gauss[..., c], expected, rtol=0, atol=1e-12)


def test_gaussian_keeps_constants_and_mass():
    x = np.full((2, 30, NUM_CLASSES), 0.3)
    assert np.allclose(gaussian_smooth(x, 2.0), 0.3)
    impulse = np.zeros((60, NUM_CLASSES))
    impulse[30] = 1.0
    assert np.allclose(gaussian_smooth(impulse, 2.0).sum(axis=0), 1.0)


def test_bad_parameters():
    with pytest.raises(ValueError, match="10"):
        median_smooth(np.zeros((5, NUM_CLASSES)), [3, 3])
    with pytest.raises(ValueError, match="integers"):
        median_smooth(np.zeros((5, NUM_CLASSES)), 0)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 5\)"):
        median_smooth(np.zeros((2, 3, 4, 5)), 3)


def test_decode_hand_made():
    x = np.zeros((2, N_FRAMES, NUM_CLASSES))
    cat, dog = CLASS_INDEX["Cat"], CLASS_INDEX["Dog"]
    x[0, 2:5, cat] = 0.5  # exactly at the threshold: active (>=)
    x[0, 10:12, dog] = 0.9
    x[0, 20, dog] = 0.9
    x[1, N_FRAMES - 3:, cat] = 0.7  # runs to the last frame
    events = decode_events(x, 0.5, CFG)
    assert events[0] == [Event(cell_start(2), cell_start(5), "Cat"), Event(cell_start(10), cell_start(12), "Dog"),
                         Event(cell_start(20), cell_start(21), "Dog")]
    assert events[1] == [Event(cell_start(N_FRAMES - 3), cell_start(N_FRAMES), "Cat")]
    per_class = [0.5] * NUM_CLASSES
    per_class[cat] = 0.6
    assert [e.label for e in decode_events(x, per_class, CFG)[0]] == ["Dog", "Dog"]
    table = decode_events(x, 0.5, CFG, filenames=["a.wav", "b.wav"])
    assert table == {"a.wav": events[0], "b.wav": events[1]}


def test_decode_ignores_padding_frames():
    x = np.zeros((2, N_FRAMES, NUM_CLASSES))
    x[:, 100:, 0] = 1.0
    events = decode_events(x, 0.5, CFG, n_valid_frames=[120, 100])
    assert events == [[Event(cell_start(100), cell_start(120), CLASSES[0])], []]
    with pytest.raises(ValueError, match="n_valid_frames"):
        decode_events(x, 0.5, CFG, n_valid_frames=[N_FRAMES + 1, 5])


def test_fill_invalid_frames_repeats_last_valid_frame():
    x = np.arange(2 * 6 * NUM_CLASSES, dtype=float).reshape(2, 6, NUM_CLASSES)
    y = fill_invalid_frames(x, [4, 6])
    assert np.array_equal(y[0, 4:], np.stack([x[0, 3]] * 2)) and np.array_equal(y[0, :4], x[0, :4])
    assert np.array_equal(y[1], x[1])


def test_times_are_clipped_to_the_clip():
    cfg = FeatureConfig(clip_duration_s=1.0)
    onset, offset = frames_to_seconds(np.array([0, 20]), np.array([3, 40]), cfg)
    assert onset[0] == cfg.frame_offset_s and offset[0] == cfg.frame_offset_s + 3 * cfg.hop_s
    assert offset[1] == 1.0


def test_active_runs():
    active = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    (rows,), start, end = active_runs(active)
    assert rows.tolist() == [0, 0, 2] and start.tolist() == [0, 3, 0] and end.tolist() == [2, 4, 4]


def test_frame_targets():
    targets = events_to_frame_targets([Event(cell_start(5), cell_start(8), "Speech")], CFG, N_FRAMES)
    assert targets.shape == (N_FRAMES, NUM_CLASSES) and targets.dtype == np.float32
    assert np.flatnonzero(targets[:, CLASS_INDEX["Speech"]]).tolist() == [5, 6, 7]
    assert targets.sum() == 3
    with pytest.raises(ValueError, match="Cow"):
        events_to_frame_targets([Event(0.0, 1.0, "Cow")], CFG, N_FRAMES)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(bool, (N_FRAMES, NUM_CLASSES), elements=st.booleans()))
def test_frames_round_trip(frames):
    events = decode_events(frames.astype(np.float32), 0.5, CFG)[0]
    assert np.array_equal(events_to_frame_targets(events, CFG, N_FRAMES), frames)


@st.composite
def separated_events(draw):
    """Non-overlapping events per class, at least two frames long and two frames apart, inside the frame centres."""
    centres = frame_centres_s(CFG, N_FRAMES)
    events = []
    for label in draw(st.lists(st.sampled_from(CLASSES), max_size=4, unique=True)):
        bounds = sorted(draw(st.lists(st.floats(centres[0], centres[-1]), min_size=2, max_size=8, unique=True)))
        for onset, offset in zip(bounds[0::2], bounds[1::2]):
            if offset - onset >= 2 * HOP and all(e.label != label or onset - e.offset_s >= 2 * HOP for e in events):
                events.append(Event(onset, offset, label))
    return events


@settings(max_examples=100, deadline=None)
@given(separated_events())
def test_events_round_trip_up_to_half_a_frame(events):
    decoded = decode_events(events_to_frame_targets(events, CFG, N_FRAMES), 0.5, CFG)[0]
    assert len(decoded) == len(events)
    def by_label(e: Event) -> tuple[str, float]:
        return e.label, e.onset_s

    for got, want in zip(sorted(decoded, key=by_label), sorted(events, key=by_label)):
        assert got.label == want.label
        assert abs(got.onset_s - want.onset_s) <= HOP / 2 + 1e-9
        assert abs(got.offset_s - want.offset_s) <= HOP / 2 + 1e-9
