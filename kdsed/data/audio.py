"""Reading audio clips: mono float32 at a requested sample rate, with errors that name the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf

from kdsed.events import MetadataError


class AudioError(MetadataError):
    """An audio file is missing, unreadable, not audio or empty."""


def load_audio(path: Path | str, sample_rate: int, *, max_duration_s: float | None = None) -> np.ndarray:
    """Read `path` as float32 mono at `sample_rate` (downmixed, resampled), at most `max_duration_s` long."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        with sf.SoundFile(path) as f:
            file_rate = f.samplerate
            frames = f.frames if max_duration_s is None else min(f.frames, math.ceil(max_duration_s * file_rate))
            x = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{path}: not a readable audio file ({e}); expected a WAV/FLAC/OGG clip") from None
    if x.size == 0:
        raise AudioError(f"{path}: empty audio file (0 samples); expected a non-empty clip")
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if file_rate != sample_rate:
        x = _resample(x, file_rate, sample_rate)
    if max_duration_s is not None:
        x = x[: int(round(max_duration_s * sample_rate))]
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(x, dtype=np.float32)


def _resample(x: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    import librosa

    return librosa.resample(x, orig_sr=orig_rate, target_sr=target_rate, res_type="soxr_hq")
