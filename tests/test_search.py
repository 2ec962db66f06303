"""The per-class post-processing search: known optima, ties, and agreement with sed_eval."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kdsed.config import PostprocessConfig
from kdsed.constants import CLASS_INDEX, CLASSES, NUM_CLASSES
from kdsed.events import Event
from kdsed.metrics import sed_eval_scores
from kdsed.postprocess import (
    decode_events,
    fill_invalid_frames,
    gaussian_smooth,
    median_smooth,
)
from kdsed.search import (
    PostprocessChoice,
    apply_postprocessing,
    merge_ranges,
    search_postprocessing,
    window_ranges,
)

from support.builders import CFG, N_FRAMES, assert_same_choice, random_case

CAT, DOG, SPEECH = CLASS_INDEX["Cat"], CLASS_INDEX["Dog"], CLASS_INDEX["Speech"]


def cell_start(i: int) -> float:
    return CFG.frame_offset_s + i * CFG.hop_s


def hand_made() -> tuple[np.ndarray, dict[str, list[Event]], list[str]]:
    """Cat: clean (0.7 on the event); Dog: a 0.6 decoy; Speech: an event with one-frame dropouts."""
    files = ["a.wav", "b.wav", "c.wav"]
    x = np.full((3, N_FRAMES, NUM_CLASSES), 0.02)
    x[0, 10:60, CAT] = 0.7
    x[0, 100:150, DOG] = 0.7
    x[1, 100:150, DOG] = 0.6  # decoy: thresholds <= 0.6 add a false positive
    x[2, 20:120, SPEECH] = 0.9
    x[2, 30:110:10, SPEECH] = 0.1  # dropouts split the event unless a median window of 3+ fills them
    reference = {
        "a.wav": [Event(cell_start(10), cell_start(60), "Cat"), Event(cell_start(100), cell_start(150), "Dog")],
        "b.wav": [],
        "c.wav": [Event(cell_start(20), cell_start(120), "Speech")],
    }
    return x, reference, files


def test_finds_known_best_thresholds_and_windows():
    x, reference, files = hand_made()
    grid = PostprocessConfig(median_windows=(1, 3, 5), thresholds=(0.3, 0.45, 0.55, 0.65, 0.75))
    choice = search_postprocessing(x, reference, files, CFG, grid)
    assert (choice.median_windows[CAT], choice.thresholds[CAT], choice.f1[CAT]) == (1, 0.45, 1.0)  # 0.45..0.65 tie
    assert (choice.median_windows[DOG], choice.thresholds[DOG], choice.f1[DOG]) == (1, 0.65, 1.0)
    assert (choice.median_windows[SPEECH], choice.thresholds[SPEECH], choice.f1[SPEECH]) == (3, 0.45, 1.0)
    # window 1 on Speech at 0.45: 9 fragments, the first (20..30) is too short for the offset collar
    assert choice.f1_grid.shape == (3, 1, 5, NUM_CLASSES)
    assert choice.f1_grid[0, 0, 1, SPEECH] == 0.0
    assert choice.f1_grid[0, 0, 3, DOG] == 1.0 and choice.f1_grid[0, 0, 2, DOG] == pytest.approx(2 / 3)
    # classes without references: F1 undefined, tie-break gives the smallest window and the threshold nearest 0.5
    assert math.isnan(choice.f1[0]) and (choice.median_windows[0], choice.thresholds[0]) == (1, 0.45)


def test_tie_prefers_threshold_nearest_half_then_lower():
    x, reference, files = hand_made()
    grid = PostprocessConfig(median_windows=(5, 3), thresholds=(0.35, 0.45, 0.55, 0.65))
    choice = search_postprocessing(x, reference, files, CFG, grid)
    assert (choice.median_windows[CAT], choice.thresholds[CAT]) == (3, 0.45)


@pytest.mark.parametrize(("seed", "smoothing"), [(0, "median"), (1, "median+gaussian"), (2, "median")])
def test_chosen_f1_is_sed_eval_of_applied_choice(seed, smoothing):
    x, reference, files, n_valid = random_case(seed)
    grid = PostprocessConfig(median_windows=(1, 3, 7, 9), gaussian_sigmas=(0.0, 1.5),
                             thresholds=(0.2, 0.35, 0.5, 0.65))
    choice = search_postprocessing(x, reference, files, CFG, grid, n_valid_frames=n_valid, smoothing=smoothing)
    events = apply_postprocessing(x, choice, CFG, files, n_valid_frames=n_valid)
    scores = sed_eval_scores(reference, events)
    for c in range(NUM_CLASSES):
        assert np.allclose(choice.f1[c], scores.class_wise[c].f_measure, rtol=0, atol=1e-12, equal_nan=True)
        assert np.allclose(choice.precision[c], scores.class_wise[c].precision, rtol=0, atol=1e-12, equal_nan=True)
        assert np.allclose(choice.recall[c], scores.class_wise[c].recall, rtol=0, atol=1e-12, equal_nan=True)
    assert np.nanmax(choice.f1) > 0.5  # the case is not degenerate
    # every grid point is a real sed_eval value: check one uniform setting against a direct decode
    sigma = 1.5 if smoothing == "median+gaussian" else 0.0
    i, j = 2, len(choice.grid.gaussian_sigmas) - 1
    smoothed = gaussian_smooth(median_smooth(fill_invalid_frames(x, n_valid), 7), sigma)
    direct = sed_eval_scores(reference, decode_events(smoothed, 0.35, CFG, n_valid_frames=n_valid, filenames=files))
    expected = [cw.f_measure for cw in direct.class_wise]
    assert np.allclose(choice.f1_grid[i, j, 1], expected, rtol=0, atol=1e-12, equal_nan=True)


def test_choice_round_trips_through_json():
    x, reference, files = hand_made()
    choice = search_postprocessing(x, reference, files, CFG, PostprocessConfig())
    data = json.loads(json.dumps(choice.to_dict()))
    assert data["classes"] == list(CLASSES) and data["f1"][0] is None
    again = PostprocessChoice.from_dict(data)
    assert again.median_windows == choice.median_windows and again.thresholds == choice.thresholds
    assert again.f1[CAT] == choice.f1[CAT] and math.isnan(again.f1[0])
    assert apply_postprocessing(x, again, CFG, files) == apply_postprocessing(x, choice, CFG, files)
    with pytest.raises(ValueError, match="classes"):
        PostprocessChoice.from_dict({**data, "classes": data["classes"][::-1]})


def test_bad_inputs():
    x, reference, files = hand_made()
    with pytest.raises(ValueError, match="c.wav"):
        search_postprocessing(x, {k: v for k, v in reference.items() if k != "c.wav"}, files, CFG,
                              PostprocessConfig())
    with pytest.raises(ValueError, match="n_clips=2"):
        search_postprocessing(x, reference, files[:2], CFG, PostprocessConfig())
    with pytest.raises(ValueError, match="smoothing"):
        search_postprocessing(x, reference, files, CFG, PostprocessConfig(), smoothing="gaussian")


# ---- the grid searched in window ranges (Ray Tune's trials) and merged --------------------------------------


def test_window_ranges_split_the_grid_into_ascending_contiguous_ranges():
    assert window_ranges((9, 1, 5, 3, 7), 2) == [(1, 3, 5), (7, 9)]
    assert window_ranges((3, 1), 5) == [(1,), (3,)]  # never an empty range
    assert window_ranges((1, 3, 5), 0) == [(1, 3, 5)]
    parts = window_ranges(range(1, 28, 2), 4)
    assert [w for part in parts for w in part] == list(range(1, 28, 2)) and len(parts) == 4


@pytest.mark.parametrize("seed", range(6))
def test_merged_window_ranges_choose_what_the_whole_grid_search_chooses(seed):
    """What `kdsed.sweep.tuning` does with Ray Tune trials, without Ray: one search per range, then the merge."""
    x, reference, files, n_valid = random_case(10 + seed, n_clips=8)
    rng = np.random.default_rng(seed)
    # Few thresholds and windows that change little: many ties between ranges, which the merge must break
    # as the whole-grid search does (smaller window first).
    windows = tuple(int(w) for w in rng.permutation([1, 3, 5, 7, 9, 11, 15, 21]))
    grid = PostprocessConfig(median_windows=windows, thresholds=(0.3, 0.5, 0.7))
    smoothing = "median+gaussian" if seed % 2 else "median"
    whole = search_postprocessing(x, reference, files, CFG, grid, n_valid_frames=n_valid, smoothing=smoothing)
    for n_ranges in (1, 2, 3, 8):
        parts = [(r, search_postprocessing(x, reference, files, CFG, PostprocessConfig(
                      median_windows=r, gaussian_sigmas=grid.gaussian_sigmas, thresholds=grid.thresholds),
                      n_valid_frames=n_valid, smoothing=smoothing))
                 for r in window_ranges(windows, n_ranges)]
        rng.shuffle(parts)  # trials finish in any order
        assert_same_choice(merge_ranges(parts), whole)
    # The merge matters: some classes' best windows lie beyond the first range.
    assert max(whole.median_windows) > window_ranges(windows, 3)[0][-1]
