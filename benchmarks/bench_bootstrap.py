"""Time bootstrap intervals of the event scores: the per-clip counting once, then all resamples at once.

    python benchmarks/bench_bootstrap.py [--clips 288 880] [--resamples 1000] [--seed 0]

The default sizes are the real task's `test` (288 clips) and `eval` (880 clips, ~3,300
reference events) sets. For comparison, the naive bootstrap (`event_scores` on each
resampled clip list) is timed on 20 resamples and scaled to the same count.
Prints a Markdown table and the load; never asserts on times.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Sequence

import numpy as np

from kdsed.constants import CLASSES, CLIP_DURATION_S, NUM_CLASSES
from kdsed.events import Event, EventTable
from timing import best_time
from kdsed.metrics import (
    ClipCounts,
    bootstrap_counts,
    event_scores,
    paired_difference_counts,
    resample_indices,
)

#: Reference events per clip of the real eval set (3,300 events / 880 clips).
EVENTS_PER_CLIP = 3.75
NAIVE_RESAMPLES = 20


def synthetic_tables(n_clips: int, seed: int, *, miss: float = 0.4) -> tuple[EventTable, EventTable]:
    """A reference of Poisson(3.75) events per clip and a system output of jittered hits and strays."""
    rng = np.random.default_rng(seed)
    reference: EventTable = {}
    estimated: EventTable = {}
    for i in range(n_clips):
        refs = []
        for _ in range(rng.poisson(EVENTS_PER_CLIP)):
            onset = float(rng.uniform(0, CLIP_DURATION_S - 0.5))
            offset = min(CLIP_DURATION_S, onset + float(rng.exponential(1.5)) + 0.1)
            refs.append(Event(round(onset, 3), round(offset, 3), CLASSES[rng.integers(NUM_CLASSES)]))
        ests = []
        for e in refs:
            if rng.random() >= miss:
                onset = max(0.0, e.onset_s + float(rng.normal(0, 0.15)))
                ests.append(Event(round(onset, 3), round(max(onset + 0.05, e.offset_s + rng.normal(0, 0.3)), 3),
                                  e.label))
        for _ in range(rng.poisson(1.0)):
            onset = float(rng.uniform(0, CLIP_DURATION_S - 0.5))
            ests.append(Event(round(onset, 3), round(onset + float(rng.uniform(0.1, 2.0)), 3),
                              CLASSES[rng.integers(NUM_CLASSES)]))
        reference[f"clip{i:05d}.wav"] = refs
        estimated[f"clip{i:05d}.wav"] = ests
    return reference, estimated



def naive_bootstrap(reference: EventTable, estimated: EventTable, n_resamples: int, seed: int) -> list[float]:
    """Macro F1 of each resample by scoring the resampled clip list (duplicates renamed) from scratch."""
    names = sorted(reference)
    out = []
    for draw in resample_indices(len(names), n_resamples, seed):
        ref = {f"{k}-{names[i]}": reference[names[i]] for k, i in enumerate(draw)}
        est = {f"{k}-{names[i]}": estimated[names[i]] for k, i in enumerate(draw)}
        out.append(event_scores(ref, est).macro.f_measure)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[288, 880])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
          f"{args.resamples} resamples; best of 5 (naive: 1 run of {NAIVE_RESAMPLES}, scaled)")
    print("| clips | ref events | count (ms) | resample (ms) | bootstrap total (ms) | paired a-b (ms) | "
          f"naive (ms, scaled) | speed-up | macro F1 % [95 % CI] |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:---|")
    for n_clips in args.clips:
        reference, estimated = synthetic_tables(n_clips, args.seed)
        other = {f: ev[::2] for f, ev in estimated.items()}
        count_s = best_time(lambda: ClipCounts.from_tables(reference, estimated), repeats=5)
        counts = ClipCounts.from_tables(reference, estimated)
        counts_b = ClipCounts.from_tables(reference, other)
        resample_s = best_time(lambda: bootstrap_counts(counts, n_resamples=args.resamples, seed=args.seed), 5)
        paired_s = best_time(lambda: paired_difference_counts(counts, counts_b, n_resamples=args.resamples,
                                                              seed=args.seed), 5)
        start = time.perf_counter()
        naive_bootstrap(reference, estimated, NAIVE_RESAMPLES, args.seed)
        naive_s = (time.perf_counter() - start) * args.resamples / NAIVE_RESAMPLES
        boot = bootstrap_counts(counts, n_resamples=args.resamples, seed=args.seed)
        total_s = count_s + resample_s
        ci = boot.macro_f1
        print(f"| {n_clips} | {sum(map(len, reference.values()))} | {1e3 * count_s:.1f} | {1e3 * resample_s:.1f} | "
              f"{1e3 * total_s:.1f} | {1e3 * (2 * count_s + paired_s):.1f} | {1e3 * naive_s:.0f} | "
              f"{naive_s / total_s:.0f}x | {100 * ci.point:.2f} [{100 * ci.low:.2f}, {100 * ci.high:.2f}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
