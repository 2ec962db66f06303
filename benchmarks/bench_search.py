"""Time the per-class post-processing search on a validation-sized set, and the same grid done with sed_eval.

    python benchmarks/bench_search.py [--clips 160] [--sed-eval-points 6] [--seed 0]

One "evaluation" is one (window, sigma, threshold) grid point scored for one class. The
sed_eval figure is extrapolated from a timed random subset of grid points (each scored
for all classes with one decode and one `sed_eval_scores` call). Prints Markdown tables;
never asserts on times.
"""

from __future__ import annotations

import argparse
import time
from typing import Sequence

import numpy as np
from scipy import ndimage

from kdsed.config import FeatureConfig, PostprocessConfig
from kdsed.constants import CLASSES, NUM_CLASSES
from kdsed.events import Event, EventTable
from kdsed.metrics import sed_eval_scores
from kdsed.postprocess import decode_events, events_to_frame_targets, gaussian_smooth, median_smooth
from kdsed.search import search_postprocessing
from timing import best_time


def synthetic_validation(n_clips: int, cfg: FeatureConfig, seed: int) -> tuple[np.ndarray, EventTable, list[str]]:
    """Model-like frame probabilities (smooth, noisy, with misses and decoys) and their reference events."""
    rng = np.random.default_rng(seed)
    n_frames = cfg.frames_per_clip
    files = [f"val{i:04d}.wav" for i in range(n_clips)]
    reference: EventTable = {}
    probs = np.empty((n_clips, n_frames, NUM_CLASSES))
    for i, name in enumerate(files):
        events = []
        for _ in range(rng.integers(0, 5)):
            onset = float(rng.uniform(0, cfg.clip_duration_s - 0.5))
            offset = min(cfg.clip_duration_s, onset + float(rng.exponential(1.5)) + 0.2)
            events.append(Event(round(onset, 3), round(offset, 3), CLASSES[rng.integers(NUM_CLASSES)]))
        reference[name] = events
        truth = events_to_frame_targets(events, cfg, n_frames)
        decoys = (ndimage.uniform_filter1d(rng.random((n_frames, NUM_CLASSES)), 25, axis=0) > 0.56) * 0.5
        noise = ndimage.gaussian_filter1d(rng.normal(0, 0.25, (n_frames, NUM_CLASSES)), 2.0, axis=0)
        probs[i] = np.clip(truth * rng.uniform(0.4, 0.9) + decoys + noise + 0.1, 0, 1)
    return probs.astype(np.float32), reference, files


def time_search(probs, reference, files, cfg, grid, smoothing, repeats: int = 3) -> float:
    """Fastest of `repeats` searches, in seconds."""
    return best_time(lambda: search_postprocessing(probs, reference, files, cfg, grid, smoothing=smoothing), repeats)


def time_sed_eval_point(probs, reference, files, cfg, window: int, sigma: float, threshold: float) -> float:
    """Seconds to score one grid point (all classes) by decoding and calling sed_eval."""
    start = time.perf_counter()
    smoothed = gaussian_smooth(median_smooth(probs, window), sigma)
    sed_eval_scores(reference, decode_events(smoothed, threshold, cfg, filenames=files))
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=160)
    parser.add_argument("--sed-eval-points", type=int, default=6, help="grid points timed with sed_eval")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = FeatureConfig()
    probs, reference, files = synthetic_validation(args.clips, cfg, args.seed)
    grids = {"median": PostprocessConfig(),
             "median+gaussian": PostprocessConfig(gaussian_sigmas=(0.0, 1.0, 2.0))}
    sed_eval_scores({"warm.wav": []}, {})  # import sed_eval / dcase_util outside the timings
    rng = np.random.default_rng(args.seed)
    print(f"Search over {args.clips} clips x {cfg.frames_per_clip} frames x {NUM_CLASSES} classes (one process)\n")
    print("| smoothing | grid points | evaluations | search (s) | evaluations/s | sed_eval, same grid (s) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for smoothing, grid in grids.items():
        sigmas = (0.0,) if smoothing == "median" else grid.gaussian_sigmas
        points = [(w, s, t) for w in grid.median_windows for s in sigmas for t in grid.thresholds]
        search_s = time_search(probs, reference, files, cfg, grid, smoothing)
        subset = [points[i] for i in rng.choice(len(points), size=min(args.sed_eval_points, len(points)),
                                                replace=False)]
        per_point = np.mean([time_sed_eval_point(probs, reference, files, cfg, *p) for p in subset])
        sed_eval_s = per_point * len(points)
        evaluations = len(points) * NUM_CLASSES
        print(f"| {smoothing} | {len(points)} | {evaluations} | {search_s:.3f} | {evaluations / search_s:,.0f} | "
              f"{sed_eval_s:.1f} (from {len(subset)} points) | {sed_eval_s / search_s:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
