"""Smoothing frame probabilities, decoding them into events, and encoding events back into frames.

Arrays are (n_clips, n_frames, n_classes) or (n_frames, n_classes) with time on the
frame axis. Conventions, shared by `decode_events` and the post-processing search so
that both give the same events bit for bit:

* smoothing works along time with scipy.ndimage's `mode="nearest"` boundary: the
  first and last frames are repeated, so an event touching a clip edge is not
  shortened by the filter; the median of an even window is the upper median;
* a frame is active when its probability is `>=` the class threshold (float64);
* frame i covers [frame_offset_s + i * hop_s, frame_offset_s + (i + 1) * hop_s),
  clipped to the clip duration; a run of active frames is one event;
* frames at or past a clip's `n_valid_frames` (padding of a short clip) are inactive,
  and `fill_invalid_frames` makes smoothing see the clip as if it ended there.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

from kdsed.config import FeatureConfig
from kdsed.constants import CLASS_INDEX, CLASSES, NUM_CLASSES
from kdsed.events import Event, EventTable

# Below this window scipy's generic rank filter is faster than its 1-D path on a flattened array.
_FLAT_MEDIAN_MIN_WINDOW = 7


def _as_clips(probs: np.ndarray) -> np.ndarray:
    """`probs` as float64 (n_clips, n_frames, n_classes); a 2-D array is one clip."""
    x = np.asarray(probs, dtype=np.float64)
    if x.ndim == 2:
        return x[None]
    if x.ndim != 3:
        raise ValueError(f"expected probabilities of shape (n_clips, n_frames, n_classes) or (n_frames, n_classes), "
                         f"got {x.shape}")
    return x


def _per_class(value: float | Sequence[float], n_classes: int, name: str) -> tuple:
    """A scalar repeated for every class, or a sequence checked to hold one value per class."""
    if np.ndim(value) == 0:
        return (value,) * n_classes
    values = tuple(value)  # type: ignore[arg-type]
    if len(values) != n_classes:
        raise ValueError(f"{name}: expected one value or {n_classes} (one per class), got {len(values)}")
    return values


def _median_1d(x: np.ndarray, window: int) -> np.ndarray:
    """Median along the last axis of a 2-D float64 array, edges repeated ('nearest')."""
    if window < _FLAT_MEDIAN_MIN_WINDOW:
        return ndimage.median_filter(x, size=(1, window), mode="nearest")
    # scipy's fast (O(log w) per sample) rank filter only runs on 1-D input: lay the rows end to
    # end, each padded with copies of its edge values, so no window reaches into another row.
    half = window // 2
    n_rows, n_frames = x.shape
    padded = np.pad(x, ((0, 0), (half, half)), mode="edge")
    flat = ndimage.median_filter(padded.ravel(), size=window, mode="nearest")
    return flat.reshape(n_rows, n_frames + 2 * half)[:, half:half + n_frames]


def _smooth(probs: np.ndarray, params: tuple, identity: object,
            filt: Callable[[np.ndarray, Any], np.ndarray]) -> np.ndarray:
    """Apply `filt(rows, value)` along time to the classes sharing each parameter value (identity skipped)."""
    x = _as_clips(probs)
    params = _per_class(params, x.shape[2], "smoothing parameter")
    out = x.copy()
    for value in sorted(set(params)):
        if value == identity:
            continue
        cls = [c for c, v in enumerate(params) if v == value]
        rows = np.ascontiguousarray(x[:, :, cls].transpose(0, 2, 1)).reshape(-1, x.shape[1])
        smoothed = filt(rows, value).reshape(x.shape[0], len(cls), x.shape[1])
        out[:, :, cls] = smoothed.transpose(0, 2, 1)
    return out if np.ndim(probs) == 3 else out[0]


def median_smooth(probs: np.ndarray, window_frames: int | Sequence[int]) -> np.ndarray:
    """Median filter along time with one window (frames) for all classes or one per class; 1 is identity."""
    windows = _per_class(window_frames, np.shape(probs)[-1], "window_frames")
    if any(int(w) != w or w < 1 for w in windows):
        raise ValueError(f"window_frames must be integers >= 1, got {windows}")
    return _smooth(probs, tuple(int(w) for w in windows), 1, _median_1d)


def gaussian_smooth(probs: np.ndarray, sigma_frames: float | Sequence[float]) -> np.ndarray:
    """Gaussian filter along time with one sigma (frames) for all classes or one per class; 0 is identity."""
    sigmas = _per_class(sigma_frames, np.shape(probs)[-1], "sigma_frames")
    if any(s < 0 for s in sigmas):
        raise ValueError(f"sigma_frames must be >= 0, got {sigmas}")
    return _smooth(probs, tuple(float(s) for s in sigmas), 0.0,
                   lambda rows, s: ndimage.gaussian_filter1d(rows, s, axis=-1, mode="nearest"))


def fill_invalid_frames(probs: np.ndarray, n_valid_frames: Sequence[int] | None) -> np.ndarray:
    """Copy each clip's last valid frame over its padding, so smoothing treats the clip as ending there."""
    x = _as_clips(probs)
    if n_valid_frames is None:
        return x if np.ndim(probs) == 3 else x[0]
    n_valid = _check_valid(n_valid_frames, x.shape)
    idx = np.minimum(np.arange(x.shape[1])[None, :], n_valid[:, None] - 1)
    out = np.take_along_axis(x, idx[:, :, None], axis=1)
    return out if np.ndim(probs) == 3 else out[0]


def _check_valid(n_valid_frames: Sequence[int], shape: tuple[int, ...]) -> np.ndarray:
    n_valid = np.asarray(n_valid_frames, dtype=np.int64).reshape(-1)
    if len(n_valid) != shape[0] or (n_valid < 1).any() or (n_valid > shape[1]).any():
        raise ValueError(f"n_valid_frames must hold one count in [1, {shape[1]}] per clip for probabilities of "
                         f"shape {shape}, got {len(n_valid)} values in [{n_valid.min(initial=0)}, "
                         f"{n_valid.max(initial=0)}]")
    return n_valid


def active_runs(active: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Runs of True along the last axis: (indices of the leading axes, start frame, end frame exclusive)."""
    n_frames = active.shape[-1]
    padded = np.zeros((int(np.prod(active.shape[:-1])), n_frames + 2), dtype=np.int8)
    padded[:, 1:-1] = active.reshape(-1, n_frames)
    # Rising and falling edges alternate in row-major order, each row opening and closing its runs.
    edges = np.flatnonzero(np.diff(padded, axis=-1) != 0)
    rows, start = np.divmod(edges[0::2], n_frames + 1)
    end = edges[1::2] % (n_frames + 1)
    return np.unravel_index(rows, active.shape[:-1]), start, end


def frames_to_seconds(start_frames: np.ndarray, end_frames: np.ndarray,
                      feature_cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Onset and offset in seconds of frame runs [start, end), clipped to the clip duration."""
    onset_s = feature_cfg.frame_offset_s + start_frames * feature_cfg.hop_s
    offset_s = feature_cfg.frame_offset_s + end_frames * feature_cfg.hop_s
    clip_s = feature_cfg.clip_duration_s
    return np.minimum(onset_s, clip_s), np.minimum(offset_s, clip_s)


def binarize(probs: np.ndarray, thresholds: float | Sequence[float] | np.ndarray,
             n_valid_frames: Sequence[int] | None = None) -> np.ndarray:
    """Active frames (probability >= class threshold, within valid frames), shape (*lead, n_clips, n_classes, n_frames).

    `thresholds` is one value, one per class, or an array (*lead, n_classes) of several sets.
    """
    x = _as_clips(probs)
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim < 2:
        thr = np.asarray(_per_class(thresholds, x.shape[2], "thresholds"), dtype=np.float64)
    elif thr.shape[-1] != x.shape[2]:
        raise ValueError(f"thresholds of shape {thr.shape} for probabilities of shape {x.shape}")
    active = np.ascontiguousarray(x.transpose(0, 2, 1)) >= thr[..., None, :, None]
    if n_valid_frames is not None:
        n_valid = _check_valid(n_valid_frames, x.shape)
        active &= (np.arange(x.shape[1])[None, :] < n_valid[:, None])[:, None, :]
    return active


def decode_events(probs: np.ndarray, thresholds: float | Sequence[float], feature_cfg: FeatureConfig, *,
                  n_valid_frames: Sequence[int] | None = None,
                  filenames: Sequence[str] | None = None) -> list[list[Event]] | EventTable:
    """Events of each clip (sorted), or {filename: events} when `filenames` is given; a 2-D input is one clip."""
    x = _as_clips(probs)
    if x.shape[2] != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES} classes on the last axis, got probabilities of shape {x.shape}")
    if filenames is not None and len(filenames) != x.shape[0]:
        raise ValueError(f"{len(filenames)} filenames for probabilities of shape {x.shape}")
    (clips, classes), start, end = active_runs(binarize(x, thresholds, n_valid_frames))
    onsets, offsets = frames_to_seconds(start, end, feature_cfg)
    clip_events: list[list[Event]] = [[] for _ in range(x.shape[0])]
    for clip, cls, onset_s, offset_s in zip(clips.tolist(), classes.tolist(), onsets.tolist(), offsets.tolist()):
        if onset_s < offset_s:
            clip_events[clip].append(Event(onset_s, offset_s, CLASSES[cls]))
    for events in clip_events:
        events.sort()
    if filenames is None:
        return clip_events
    return dict(zip(filenames, clip_events))


def frame_centres_s(feature_cfg: FeatureConfig, n_frames: int) -> np.ndarray:
    """Centre time of each frame's hop-long cell."""
    return feature_cfg.frame_offset_s + (np.arange(n_frames) + 0.5) * feature_cfg.hop_s


def events_to_frame_targets(events: Sequence[Event], feature_cfg: FeatureConfig, n_frames: int) -> np.ndarray:
    """Frame targets (n_frames, n_classes) float32: 1 where an event covers the frame centre (onset <= c < offset)."""
    centres = frame_centres_s(feature_cfg, n_frames)
    targets = np.zeros((n_frames, NUM_CLASSES), dtype=np.float32)
    for e in events:
        if e.label not in CLASS_INDEX:
            raise ValueError(f"unknown class label {e.label!r}; expected one of {', '.join(CLASSES)}")
        first, stop = np.searchsorted(centres, [e.onset_s, e.offset_s], side="left")
        targets[first:stop, CLASS_INDEX[e.label]] = 1.0
    return targets

