"""Time the fast event metrics against sed_eval on the same synthetic system output.

    python benchmarks/bench_metrics.py [--clips 100 500 2000] [--seed 0]

Prints a Markdown table; never asserts on times.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np

from kdsed.constants import CLASSES, CLIP_DURATION_S
from kdsed.events import Event, EventTable
from timing import best_time
from kdsed.metrics import event_scores, sed_eval_scores


def synthetic_tables(n_clips: int, seed: int) -> tuple[EventTable, EventTable]:
    """DCASE-like reference (0-5 events per clip, ~3 classes) and a system output of jittered hits and strays."""
    rng = np.random.default_rng(seed)
    reference: EventTable = {}
    estimated: EventTable = {}
    for i in range(n_clips):
        name = f"clip{i:05d}.wav"
        labels = rng.choice(len(CLASSES), size=3, replace=False)
        refs = []
        for _ in range(rng.integers(0, 6)):
            onset = rng.uniform(0, CLIP_DURATION_S - 0.5)
            offset = min(CLIP_DURATION_S, onset + rng.exponential(1.5) + 0.1)
            refs.append(Event(round(onset, 3), round(offset, 3), CLASSES[rng.choice(labels)]))
        ests = []
        for e in refs:
            for _ in range(rng.integers(0, 3)):  # missed, found, or found twice / fragmented
                onset = max(0.0, e.onset_s + rng.normal(0, 0.15))
                offset = max(onset + 0.05, e.offset_s + rng.normal(0, 0.25))
                ests.append(Event(round(onset, 3), round(offset, 3), e.label))
        for _ in range(rng.poisson(1.0)):
            onset = rng.uniform(0, CLIP_DURATION_S - 0.5)
            ests.append(Event(round(onset, 3), round(onset + rng.uniform(0.1, 2.0), 3), CLASSES[rng.choice(labels)]))
        reference[name] = refs
        estimated[name] = ests
    return reference, estimated



def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sed_eval_scores({"warm.wav": []}, {})  # import sed_eval / dcase_util outside the timings
    print("| clips | ref events | sys events | fast (ms) | sed_eval (ms) | speed-up | same scores |")
    print("|---:|---:|---:|---:|---:|---:|:---:|")
    for n_clips in args.clips:
        reference, estimated = synthetic_tables(n_clips, args.seed)
        fast_s = best_time(lambda: event_scores(reference, estimated), repeats=5)
        ref_s = best_time(lambda: sed_eval_scores(reference, estimated), repeats=2)
        fast, ref = event_scores(reference, estimated), sed_eval_scores(reference, estimated)
        same = (fast.tp, fast.fp, fast.fn, fast.to_json()) == (ref.tp, ref.fp, ref.fn, ref.to_json())
        n_ref = sum(map(len, reference.values()))
        n_sys = sum(map(len, estimated.values()))
        print(f"| {n_clips} | {n_ref} | {n_sys} | {1e3 * fast_s:.1f} | {1e3 * ref_s:.0f} | "
              f"{ref_s / fast_s:.0f}x | {'yes' if same else 'NO'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
