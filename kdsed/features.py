"""Log-mel features (librosa) and the on-disk feature store.

`log_mel` is a pure function of a waveform and a FeatureConfig. The store
extracts a list of clips once, in parallel, and caches the result under a key
made of the feature config and the clip list (names, sizes, modification
times), so a second run extracts nothing and a changed config or clip list
extracts again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from kdsed.atomic import replace_dir_atomic
from kdsed.config import FeatureConfig, to_dict
from kdsed.data import AudioNote, Clip, load_audio
from kdsed.events import MetadataError

#: Added to the mel energies before the log: a silent clip gives log(1e-10) = -23, never -inf.
LOG_EPS = 1e-10
FEATURE_STORE_VERSION = 1
CHECK_CHUNK_CLIPS = 1024  # clips of a cached entry checked for NaN at once (bounded memory)

logger = logging.getLogger(__name__)


class FeatureError(MetadataError):
    """Features that are not finite, or a feature-cache entry that does not hold what it should."""


def log_mel(waveform: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-mel spectrogram (frames, n_mels) float32 of a mono waveform at cfg.sample_rate.

    Uncentred frames: frame i starts at sample i * hop_length. A waveform longer
    than the nominal clip is cut to it; one shorter than a window is zero-padded.
    """
    import librosa

    y = np.asarray(waveform, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"log_mel expects a mono waveform (samples,), got shape {y.shape}")
    y = y[: cfg.clip_samples]
    if len(y) < cfg.n_fft:
        y = np.pad(y, (0, cfg.n_fft - len(y)))
    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, center=False,
        n_mels=cfg.n_mels, fmin=cfg.fmin_hz, fmax=cfg.fmax_hz, power=2.0,
    )
    return np.log(mel + LOG_EPS).T.astype(np.float32)


@dataclass
class FeatureSet:
    """Features of a list of clips, zero-padded to a common length."""

    filenames: list[str]
    features: np.ndarray  # (n_clips, frames, n_mels) float32
    n_frames: np.ndarray  # (n_clips,) int, valid frames of each clip

    def __len__(self) -> int:
        return len(self.filenames)

    def select(self, filenames: Sequence[str]) -> "FeatureSet":
        """The sub-set for `filenames`, in that order."""
        index = {name: i for i, name in enumerate(self.filenames)}
        missing = [f for f in filenames if f not in index]
        if missing:
            raise KeyError(f"{len(missing)} clips have no features, first: {missing[:5]}")
        rows = np.array([index[f] for f in filenames], dtype=np.int64)
        return FeatureSet(list(filenames), self.features[rows], self.n_frames[rows])


@dataclass(frozen=True)
class Normalizer:
    """Per-band mean and standard deviation, fitted on training clips only."""

    mean: np.ndarray  # (n_mels,)
    std: np.ndarray  # (n_mels,)

    @classmethod
    def fit(cls, sets: Sequence[FeatureSet]) -> "Normalizer":
        """Statistics over the valid frames of every clip in `sets`."""
        total = count = sq = 0.0
        for fs in sets:
            mask = np.arange(fs.features.shape[1])[None, :] < fs.n_frames[:, None]
            valid = fs.features[mask].astype(np.float64)
            total = total + valid.sum(0)
            sq = sq + (valid**2).sum(0)
            count += len(valid)
        if count == 0:
            raise ValueError("cannot fit a normalizer on zero frames")
        mean = total / count
        std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def apply(self, fs: FeatureSet) -> FeatureSet:
        """Normalised copy of `fs`; padded frames stay exactly zero."""
        out = (fs.features - self.mean) / self.std
        mask = np.arange(out.shape[1])[None, :, None] < fs.n_frames[:, None, None]
        return FeatureSet(fs.filenames, np.where(mask, out, 0.0).astype(np.float32), fs.n_frames)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


def cache_key(clips: Sequence[Clip], cfg: FeatureConfig) -> str:
    """Hash of the feature config and the clip list (name, size, mtime of each audio file)."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": FEATURE_STORE_VERSION, "cfg": to_dict(cfg)}, sort_keys=True).encode())
    for clip in clips:
        st = os.stat(clip.audio_path)
        h.update(f"{clip.filename}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _extract_one(args: tuple[str, FeatureConfig]) -> tuple[np.ndarray, list[AudioNote]]:
    path, cfg = args
    notes: list[AudioNote] = []
    mel = log_mel(load_audio(path, cfg.sample_rate, max_duration_s=cfg.clip_duration_s, notes=notes), cfg)
    if not np.all(np.isfinite(mel)):
        raise FeatureError(f"{path}: its log-mel features contain NaN or infinite values; expected finite features")
    return mel, notes


_NOTE_TEXT = {
    "downmixed": "have several channels and were downmixed to mono",
    "resampled": "have another sample rate and were resampled to {rate} Hz",
    "cut": "are longer than {duration:g} s and were cut to {duration:g} s",
    "silent": "are silent (valid: their log-mels are log({eps:g}) everywhere)",
}


def report_notes(notes: Sequence[AudioNote], total: int, cfg: FeatureConfig, label: str) -> None:
    """Log one warning per kind of note (how many clips, and the first one) for the clips of one extraction."""
    by_kind: dict[str, list[AudioNote]] = defaultdict(list)
    for note in notes:
        by_kind[note.kind].append(note)
    for kind, found in by_kind.items():
        text = _NOTE_TEXT[kind].format(rate=cfg.sample_rate, duration=cfg.clip_duration_s, eps=LOG_EPS)
        logger.warning(f"[kdsed.features] {label}: note: {len(found)} of {total} clips {text}; "
                       f"first: {found[0].path} ({found[0].detail})")


def _one_thread_per_worker() -> None:
    """Initializer of an extraction worker: its BLAS and OpenMP pools to one thread, so that `workers` processes
    use `workers` cores (each would otherwise start one BLAS thread per core for librosa's mel projection)."""
    from threadpoolctl import threadpool_limits  # comes with librosa (through scikit-learn)

    threadpool_limits(1)


def _in_this_process(fn, jobs: Sequence):
    """`map(fn, jobs)` here, BLAS on one thread as in a worker: the features do not depend on the worker count."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield from map(fn, jobs)


class FeaturePool:
    """The worker processes of feature extraction: started on first use, shared by every extraction made while
    the `with` block is open (e.g. all subsets of a data set), stopped at its end. One worker, or 8 clips or
    fewer: no processes. Either way BLAS runs on one thread, so the features are the same bit for bit."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None

    def map(self, fn, jobs: Sequence, chunksize: int):
        if self.workers == 1 or len(jobs) <= 8:
            return _in_this_process(fn, jobs)
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, initializer=_one_thread_per_worker)
        return self._executor.map(fn, jobs, chunksize=chunksize)

    def __enter__(self) -> "FeaturePool":
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None


def extract(clips: Sequence[Clip], cfg: FeatureConfig, *, workers: int | None = None, pool: FeaturePool | None = None,
            progress: bool = True, label: str = "features") -> FeatureSet:
    """Extract log-mels of `clips` in parallel: on `pool`, else on a pool of `workers` processes (default: all
    cores) started for this call."""
    if pool is None:
        with FeaturePool(workers) as own:
            return extract(clips, cfg, pool=own, progress=progress, label=label)
    n = len(clips)
    features = np.zeros((n, cfg.frames_per_clip, cfg.n_mels), np.float32)
    n_frames = np.zeros(n, np.int64)
    jobs = [(str(c.audio_path), cfg) for c in clips]
    start = time.perf_counter()
    results = pool.map(_extract_one, jobs, chunksize=max(1, min(32, n // (pool.workers * 4) or 1)))
    notes: list[AudioNote] = []
    for i, (mel, clip_notes) in enumerate(results):
        features[i, : len(mel)] = mel
        n_frames[i] = len(mel)
        notes.extend(clip_notes)
        if progress and ((i + 1) % 200 == 0 or i + 1 == n):
            _report(label, i + 1, n, time.perf_counter() - start)
    report_notes(notes, n, cfg, label)
    return FeatureSet([c.filename for c in clips], features, n_frames)


def _report(label: str, done: int, total: int, elapsed_s: float) -> None:
    rate = done / max(elapsed_s, 1e-9)
    eta = (total - done) / rate
    print(f"[kdsed.features] {label}: {done}/{total} clips, {rate:.0f} clips/s, eta {eta:.0f} s",
          file=sys.stderr, flush=True)


def load_features(clips: Sequence[Clip], cfg: FeatureConfig, cache_dir: Path | str, *, workers: int | None = None,
                  pool: FeaturePool | None = None, progress: bool = True, label: str = "features") -> FeatureSet:
    """Features of `clips` from the cache under `cache_dir`, extracting (and caching) on a miss.

    A cache entry is checked when read (shape, clip names, frame counts, finite values); a damaged one
    raises `FeatureError` naming it, rather than training on garbage.
    """
    if not clips:
        raise ValueError(f"{label}: no clips to extract features from")
    entry = Path(cache_dir) / cache_key(clips, cfg)
    if (entry / "index.json").is_file():
        return _read_entry(entry, clips, cfg)
    fs = extract(clips, cfg, workers=workers, pool=pool, progress=progress, label=label)

    def fill(tmp: Path) -> None:
        np.save(tmp / "features.npy", fs.features)
        np.save(tmp / "n_frames.npy", fs.n_frames)
        (tmp / "index.json").write_text(json.dumps({"filenames": fs.filenames, "config": to_dict(cfg)}))

    replace_dir_atomic(entry, fill, keep_existing=True)  # another process may have cached the same entry first
    return fs


def _read_entry(entry: Path, clips: Sequence[Clip], cfg: FeatureConfig) -> FeatureSet:
    """A cache entry as a FeatureSet (features memory-mapped), checked against the clips it must hold."""
    def damaged(file: str, what: str) -> FeatureError:
        return FeatureError(f"{entry / file}: damaged feature-cache entry: {what}; delete {entry} to extract "
                            "the features again")

    loaders = {"index.json": lambda p: json.loads(p.read_text())["filenames"],
               "features.npy": lambda p: np.load(p, mmap_mode="r"), "n_frames.npy": np.load}
    parts = {}
    for file, load in loaders.items():
        try:
            parts[file] = load(entry / file)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise damaged(file, f"cannot be read ({type(e).__name__}: {e})") from None
    filenames, features, n_frames = parts.values()
    if filenames != [c.filename for c in clips]:
        raise damaged("index.json", f"lists {len(filenames)} clips, not the {len(clips)} clips asked for")
    expected = (len(clips), cfg.frames_per_clip, cfg.n_mels)
    if features.shape != expected:
        raise damaged("features.npy", f"shape {features.shape}, expected {expected}")
    if n_frames.shape != (len(clips),) or not np.all((n_frames >= 1) & (n_frames <= cfg.frames_per_clip)):
        raise damaged("n_frames.npy", f"expected {len(clips)} frame counts in [1, {cfg.frames_per_clip}]")
    for start in range(0, len(clips), CHECK_CHUNK_CLIPS):
        bad = ~np.isfinite(features[start:start + CHECK_CHUNK_CLIPS])
        if bad.any():
            clip, frame, band = (int(i[0]) for i in np.nonzero(bad))
            raise damaged("features.npy", f"NaN or infinite values, the first in clip {filenames[start + clip]} "
                          f"(frame {frame}, band {band})")
    return FeatureSet(filenames, features, n_frames)
