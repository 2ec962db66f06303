"""Reading audio clips: mono float32 at a requested sample rate, with errors that name the file.

Refused, with an `AudioError` naming the file: a missing file, one that is not audio, one with no
samples, a truncated one (fewer samples than its header declares) and one with NaN or infinite
samples. Accepted, with an `AudioNote` for the caller to report: several channels (downmixed),
another sample rate (resampled), a clip longer than `max_duration_s` (cut) and a silent clip (valid
audio: its log-mel is finite, see `kdsed.features.LOG_EPS`).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from kdsed.events import MetadataError
from kdsed.limits import MAX_AUDIO_CHANNELS, MAX_SAMPLE_RATE_HZ


class AudioError(MetadataError):
    """An audio file is missing, unreadable, not audio, truncated or empty."""


@dataclass(frozen=True)
class AudioNote:
    """Something `load_audio` changed or noticed in a valid clip: kind is downmixed, resampled, cut or silent."""

    kind: str
    path: str
    detail: str


def load_audio(path: Path | str, sample_rate: int, *, max_duration_s: float | None = None,
               notes: list[AudioNote] | None = None) -> np.ndarray:
    """Read `path` as float32 mono at `sample_rate` (downmixed, resampled), at most `max_duration_s` long.

    What was downmixed, resampled or cut, and silence, are appended to `notes` when given.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        with sf.SoundFile(path) as f:
            file_rate, channels, declared = f.samplerate, f.channels, f.frames
            frames = declared if max_duration_s is None else min(declared, math.ceil(max_duration_s * file_rate))
            x = f.read(frames, dtype="float32", always_2d=True)
            is_wav = f.format == "WAV"
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise _unreadable(path, e) from None
    _check_complete(path, is_wav, len(x), frames, file_rate)
    if x.size == 0:
        raise AudioError(f"{path}: empty audio file (0 samples); expected a non-empty clip")
    note = notes.append if notes is not None else (lambda _: None)
    if channels > 1:
        note(AudioNote("downmixed", str(path), f"{channels} channels"))
    if file_rate != sample_rate:
        note(AudioNote("resampled", str(path), f"{file_rate} Hz"))
    if frames < declared:
        note(AudioNote("cut", str(path), f"{declared / file_rate:.2f} s"))
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples; expected finite samples")
    if not np.any(x):
        note(AudioNote("silent", str(path), "every sample is 0"))
    if file_rate != sample_rate:
        x = _resample(x, file_rate, sample_rate)
    if max_duration_s is not None:
        x = x[: int(round(max_duration_s * sample_rate))]
    return np.ascontiguousarray(x, dtype=np.float32)


def probe_audio(path: Path | str) -> None:
    """Raise `AudioError` if `path` is missing, not audio, empty or a truncated WAV; reads the header only."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise _unreadable(path, e) from None
    _check_complete(path, info.format == "WAV", info.frames, info.frames, info.samplerate)
    if info.frames == 0:
        raise AudioError(f"{path}: empty audio file (0 samples); expected a non-empty clip")


def _unreadable(path: Path, error: Exception) -> AudioError:
    reason = str(error).replace(f"Error opening {str(path)!r}: ", "").strip()  # libsndfile repeats the path
    return AudioError(f"{path}: not a readable audio file ({reason}); expected a WAV/FLAC/OGG clip")


def _check_complete(path: Path, is_wav: bool, got: int, asked: int, rate: int) -> None:
    """Refuse a file that holds fewer samples than its header declares (a copy or download cut short)."""
    if got < asked:
        raise AudioError(f"{path}: truncated audio file: its header declares {asked / rate:.2f} s but only "
                         f"{got / rate:.2f} s could be read; expected a complete clip")
    shortfall = _wav_shortfall(path) if is_wav else None
    if shortfall is not None:
        declared, present = shortfall
        raise AudioError(f"{path}: truncated audio file: its header declares {declared} bytes of samples but the "
                         f"file holds {present} ({100 * present / declared:.0f} %); expected a complete clip")


def _wav_shortfall(path: Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a RIFF/WAVE file's `data` chunk when the file is shorter than declared.

    libsndfile quietly reads what there is of a truncated WAV, so the chunk size is checked here.
    """
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RF64 and others: nothing to compare
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, n = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                present = size - pos - 8
                # 0 and 0xFFFFFFFF: written by a streaming writer that never went back to fill in the size.
                return (n, present) if n not in (0, 0xFFFFFFFF) and present < n else None
            pos += 8 + n + (n & 1)
    return None


def _resample(x: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    import librosa

    return librosa.resample(x, orig_sr=orig_rate, target_sr=target_rate, res_type="soxr_hq")


def check_audio_header(path: "str | os.PathLike[str]") -> None:
    """Refuse an audio file whose header declares more channels or a higher rate than the bounds (reads the header only)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{path}: not a readable audio file ({e}); expected a WAV/FLAC/OGG clip") from None
    if info.channels > MAX_AUDIO_CHANNELS or info.samplerate > MAX_SAMPLE_RATE_HZ:
        raise AudioError(f"{path}: {info.channels} channels at {info.samplerate} Hz; kdsed reads at most "
                         f"{MAX_AUDIO_CHANNELS} channels at up to {MAX_SAMPLE_RATE_HZ} Hz (see docs/limits.md)")
