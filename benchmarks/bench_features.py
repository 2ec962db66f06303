"""Feature extraction speed: clips/s per core and on all cores, split into reading and log-mel.

    python benchmarks/bench_features.py [--clips 1000]

Generates the synthetic `smoke`/`mini` audio if needed (in kdsed_runs/data), times
`kdsed.data.load_audio` and `kdsed.features.log_mel` per clip on one core (BLAS held to one
thread, so that it is one core), then the parallel extractor `kdsed.features.extract` on all
cores, its pool started inside the timing. Prints a Markdown table with the speed-up over one
core; never asserts times.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from kdsed.config import FeatureConfig
from kdsed.data import load_audio, load_dataset
from kdsed.data.synth import generate
from kdsed.features import extract, log_mel


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--preset", default="mini")
    args = parser.parse_args(argv)
    root = generate(Path("kdsed_runs/data") / f"synth-{args.preset}-seed0", args.preset, 0, progress=False)
    data = load_dataset(root)
    clips = [c for s in data.clips for c in data.subset(s)][: args.clips]
    cfg = FeatureConfig()
    log_mel(load_audio(clips[0].audio_path, cfg.sample_rate), cfg)  # warm-up (imports, filter bank)
    for c in clips:  # every file in the page cache, so that neither timing below reads the disk
        Path(c.audio_path).read_bytes()

    with threadpool_limits(1):
        t0 = time.perf_counter()
        waves = [load_audio(c.audio_path, cfg.sample_rate) for c in clips]
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for w in waves:
            log_mel(w, cfg)
        mel_s = time.perf_counter() - t0
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    extract(clips, cfg, workers=cores, progress=False)
    parallel_s = time.perf_counter() - t0

    n = len(clips)
    audio_s = n * cfg.clip_duration_s
    print(f"{n} clips of {cfg.clip_duration_s:.0f} s at {cfg.sample_rate} Hz; {cores} cores\n")
    one_core_s = read_s + mel_s
    print(f"1-minute load average after: {os.getloadavg()[0]:.1f}\n")
    print("| step | clips/s | x real time | x one core |")
    print("|---|---|---|---|")
    print(f"| read WAV (soundfile), 1 core | {n / read_s:.0f} | {audio_s / read_s:.0f} | |")
    print(f"| log-mel (librosa), 1 core | {n / mel_s:.0f} | {audio_s / mel_s:.0f} | |")
    print(f"| read + log-mel, 1 core | {n / one_core_s:.0f} | {audio_s / one_core_s:.0f} | 1.00 |")
    print(f"| `kdsed.features.extract`, {cores} processes | {n / parallel_s:.0f} | {audio_s / parallel_s:.0f} "
          f"| {one_core_s / parallel_s:.2f} |")


if __name__ == "__main__":
    main()
