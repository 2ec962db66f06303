"""Raw frame scores of a subset in one Parquet file, and their sed_scores_eval form.

A scores file has the pseudo-label schema (`kdsed.pseudolabels`: `filename` (dictionary),
`frame` (int32), one float32 column per class, a clip's valid frames only) plus `onset` and
`offset` (float64 seconds): frame i covers [frame_offset_s + i * hop_s, ... + hop_s), clipped
to the clip duration, as `kdsed.postprocess` decodes events. The schema metadata key `kdsed`
holds JSON: `kind` = "scores", the classes, `hop_s`, `frame_offset_s`, `clip_duration_s`,
`frames_per_clip` and what wrote the scores (subset, stage).

sed_scores_eval wants one DataFrame per clip (`onset`, `offset`, one column per class):
`to_sed_scores` builds them, `read_scores_folder` reads its folder form (one TSV per clip).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from kdsed.config import FeatureConfig
from kdsed.constants import CLASSES, NUM_CLASSES, Seconds
from kdsed.pseudolabels import frame_arrays, frame_columns, read_frame_table, write_frame_table

SCORES_KIND = "scores"
_TIME_COLUMNS = ("onset", "offset")


class ScoresError(ValueError):
    """A scores file or folder that does not hold frame scores of the 10 classes."""


@dataclass
class FrameScores:
    """Frame scores (probabilities) of many clips, padded to a common number of frames, with their frame times."""

    filenames: list[str]
    scores: np.ndarray  # (n_clips, frames, classes) float32
    n_frames: np.ndarray  # (n_clips,) valid frames per clip
    hop_s: Seconds
    frame_offset_s: Seconds
    clip_duration_s: Seconds
    frames_per_clip: int  # frames of a clip of the nominal length
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_outputs(cls, filenames: Sequence[str], scores: np.ndarray, n_frames: Sequence[int] | None,
                     feature_cfg: FeatureConfig, **meta: Any) -> FrameScores:
        """Scores of a model's outputs on clips whose features were made with `feature_cfg`."""
        scores = np.asarray(scores, dtype=np.float32)
        if scores.ndim != 3 or scores.shape[2] != NUM_CLASSES or scores.shape[0] != len(filenames):
            raise ScoresError(f"scores of shape {scores.shape} for {len(filenames)} clips; expected "
                              f"({len(filenames)}, frames, {NUM_CLASSES})")
        valid = np.full(len(filenames), scores.shape[1]) if n_frames is None else np.asarray(n_frames, np.int64)
        return cls(list(filenames), scores, valid, feature_cfg.hop_s, feature_cfg.frame_offset_s,
                   feature_cfg.clip_duration_s, feature_cfg.frames_per_clip, dict(meta))

    def timestamps(self, n_frames: int) -> np.ndarray:
        """The n + 1 boundaries (s) of a clip's first n frames, clipped to the clip duration."""
        return np.minimum(self.frame_offset_s + np.arange(n_frames + 1) * self.hop_s, self.clip_duration_s)

    def durations_s(self) -> dict[str, float]:
        """Each clip's audio duration: the nominal one for a full clip, else up to its last frame's window end."""
        short = np.minimum(self.n_frames * self.hop_s + 2 * self.frame_offset_s, self.clip_duration_s)
        full = self.n_frames >= self.frames_per_clip
        return {f: float(self.clip_duration_s if full[i] else short[i]) for i, f in enumerate(self.filenames)}

    def to_sed_scores(self, scores: np.ndarray | None = None) -> dict[str, pd.DataFrame]:
        """sed_scores_eval's input: {clip id: DataFrame(onset, offset, one column per class)}, valid frames only.

        `scores`: other values of the same shape to lay out instead (smoothed or binarised scores).
        Frames that start at or after the clip's end are left out. Clip ids are the filenames.
        """
        values = self.scores if scores is None else scores
        out = {}
        for i, name in enumerate(self.filenames):
            times = self.timestamps(int(self.n_frames[i]))
            keep = int(np.searchsorted(times[:-1], self.clip_duration_s, side="left"))
            out[name] = score_dataframe(values[i, :keep], times[:keep + 1])
        return out


def score_dataframe(values: np.ndarray, timestamps: np.ndarray,
                    classes: Sequence[str] = CLASSES) -> pd.DataFrame:
    """One clip's scores in sed_scores_eval's layout: `onset`, `offset`, one float64 column per class.

    The class columns are kept in two blocks: sed_scores_eval 0.0.4 hands `to_numpy()` of them to
    Cython, which refuses the read-only view pandas >= 3 returns for a single block
    (fixed upstream in fgnt/sed_scores_eval@113a7ce, not released).
    """
    values = np.asarray(values, dtype=np.float64)
    times = np.asarray(timestamps, dtype=np.float64)
    frame = pd.DataFrame(np.column_stack([times[:-1], times[1:], values[:, 1:]]),
                         columns=[*_TIME_COLUMNS, *classes[1:]])
    frame.insert(2, classes[0], values[:, 0])  # a second block (2 ms a clip; pd.concat of three frames: 3 ms)
    return frame


def frame_times(frame: pd.DataFrame) -> np.ndarray:
    """The n + 1 frame boundaries (s) of a clip's score DataFrame."""
    return np.append(frame["onset"].to_numpy(np.float64), frame["offset"].to_numpy(np.float64)[-1:])


def write_scores(path: Path | str, scores: FrameScores) -> Path:
    """Write frame scores as one Parquet file atomically."""
    path = Path(path)
    bad = ~np.isfinite(scores.scores)
    if bad.any():
        clip, frame, c = (int(i[0]) for i in np.nonzero(bad))
        raise ScoresError(f"{path}: refusing to write {int(bad.sum())} NaN or infinite scores, the first of clip "
                          f"{scores.filenames[clip]!r}, frame {frame}, class {CLASSES[c]}")
    columns, frame_idx = frame_columns(scores.filenames, scores.scores, scores.n_frames)
    onset_s = np.minimum(scores.frame_offset_s + frame_idx * scores.hop_s, scores.clip_duration_s)
    offset_s = np.minimum(onset_s + scores.hop_s, scores.clip_duration_s)
    columns.update({"onset": pa.array(onset_s), "offset": pa.array(offset_s)})
    meta = {**scores.meta, "kind": SCORES_KIND, "classes": list(CLASSES), "hop_s": scores.hop_s,
            "frame_offset_s": scores.frame_offset_s, "clip_duration_s": scores.clip_duration_s,
            "frames_per_clip": scores.frames_per_clip}
    return write_frame_table(path, columns, meta)


def read_scores(path: Path | str) -> FrameScores:
    """Read a scores file written by `write_scores`; errors name the file and what is wrong."""
    table, meta = read_frame_table(path, "scores", ScoresError)
    missing = [k for k in ("hop_s", "frame_offset_s", "clip_duration_s", "frames_per_clip") if k not in meta]
    if meta.get("kind") != SCORES_KIND or missing:
        raise ScoresError(f"{path}: not a kdsed scores file (metadata kind {meta.get('kind')!r}, missing "
                          f"{', '.join(missing) or 'nothing'}); write it with kdsed.scores_io.write_scores")
    filenames, values, n_frames = frame_arrays(table)
    if not np.isfinite(values).all():
        raise ScoresError(f"{path}: holds NaN or infinite scores")
    fixed = {k: meta.pop(k) for k in ("hop_s", "frame_offset_s", "clip_duration_s", "frames_per_clip")}
    return FrameScores(filenames, values, n_frames, fixed["hop_s"], fixed["frame_offset_s"],
                       fixed["clip_duration_s"], int(fixed["frames_per_clip"]), meta)


def read_scores_folder(folder: Path | str) -> dict[str, pd.DataFrame]:
    """sed_scores_eval's folder form: one `<clip id>.tsv` per clip (onset, offset, one column per class), checked."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix == ".tsv")
    if not files:
        raise ScoresError(f"{folder}: no .tsv score files; expected one <clip id>.tsv per clip "
                          "(onset, offset, one column per class)")
    out = {}
    for path in files:
        try:
            frame = pd.read_csv(path, sep="\t")
        except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
            raise ScoresError(f"{path}: not a readable TSV ({e})") from None
        out[path.stem] = check_score_frame(frame, str(path))
    return out


def check_score_frame(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """A clip's score DataFrame checked (columns, times) and rebuilt with `score_dataframe`; errors name `where`."""
    columns = list(frame.columns)
    if tuple(columns[:2]) != _TIME_COLUMNS:
        raise ScoresError(f"{where}: the first two columns are {columns[:2]}, expected onset, offset")
    unknown = [c for c in columns[2:] if c not in CLASSES]
    if unknown:
        raise ScoresError(f"{where}: unknown class column(s) {', '.join(map(str, unknown))}; "
                          f"expected {', '.join(CLASSES)}")
    missing = [c for c in CLASSES if c not in columns]
    if missing:
        raise ScoresError(f"{where}: no column for class(es) {', '.join(missing)}")
    try:
        onset, offset = (frame[c].to_numpy(np.float64) for c in _TIME_COLUMNS)
        values = frame[list(CLASSES)].to_numpy(np.float64)
    except (TypeError, ValueError) as e:
        raise ScoresError(f"{where}: non-numeric times or scores ({e})") from None
    _check_times(onset, offset, where)
    if not np.isfinite(values).all():
        raise ScoresError(f"{where}: NaN or infinite scores")
    return score_dataframe(values, np.append(onset, offset[-1:]))


def _check_times(onset: np.ndarray, offset: np.ndarray, where: str) -> None:
    """Frames must be non-empty, start at >= 0 s, and follow each other without gaps or overlaps."""
    if len(onset) == 0:
        raise ScoresError(f"{where}: no frames")
    problems = [
        (~np.isfinite(onset) | ~np.isfinite(offset), "a time that is not a number"),
        (onset < 0, "a negative onset"),
        (offset <= onset, "an offset not after its onset"),
        (np.append(onset[1:] != offset[:-1], False), "an offset that is not the next frame's onset"),
    ]
    for bad, what in problems:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ScoresError(f"{where}: frame {row} (onset {onset[row]}, offset {offset[row]}) has {what}")


__all__ = ["FrameScores", "ScoresError", "check_score_frame", "frame_times", "read_scores", "read_scores_folder", "score_dataframe",
           "write_scores"]
