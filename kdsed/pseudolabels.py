"""Strong pseudo-labels as Parquet: one file per pass, one row per (clip, frame).

Schema (readable with `pandas.read_parquet`):

| column | type | meaning |
|---|---|---|
| `filename` | string (dictionary) | clip filename as in the metadata |
| `frame` | int32 | frame index; frame i covers [frame_offset_s + i*hop_s, ... + hop_s) |
| one column per class (`Alarm_bell_ringing` ... `Vacuum_cleaner`) | float32 | pseudo-label in [0, 1]: 0/1 (`distill.pseudo_strong: hard`, the default) or a probability (`soft`) |

A clip has exactly its valid frames (no padding rows). The file's schema
metadata key `kdsed` holds JSON: pass index, classes, hop_s, frame_offset_s,
the pass's per-class winners, `teacher` (what wrote the labels: those winners, or the
ensemble of the pass's variants, `distill.pseudo_teacher`) and `targets` (hard or soft).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kdsed.atomic import write_atomic
from kdsed.constants import CLASSES, NUM_CLASSES

SCHEMA_VERSION = 1


class PseudoLabelError(ValueError):
    """Pseudo-labels that are not probabilities (NaN or infinite), or a file that does not hold them."""


@dataclass
class PseudoLabels:
    """Frame probabilities of many clips, padded to a common number of frames."""

    filenames: list[str]
    probs: np.ndarray  # (n_clips, frames, classes) float32
    n_frames: np.ndarray  # (n_clips,) int
    meta: dict[str, Any] = field(default_factory=dict)


def write_pseudo_labels(path: Path | str, labels: PseudoLabels) -> Path:
    """Write pseudo-labels as Parquet atomically (temporary name, then rename)."""
    n, _, classes = labels.probs.shape
    if classes != NUM_CLASSES or len(labels.filenames) != n or len(labels.n_frames) != n:
        raise ValueError(f"pseudo-labels of shape {labels.probs.shape} do not match "
                         f"{len(labels.filenames)} filenames / {NUM_CLASSES} classes")
    path = Path(path)
    _check_finite(labels, f"{path}: refusing to write pseudo-labels with")
    columns, _ = frame_columns(labels.filenames, labels.probs, labels.n_frames)
    return write_frame_table(path, columns, {"schema_version": SCHEMA_VERSION, "classes": list(CLASSES), **labels.meta})


def frame_columns(filenames: Sequence[str], probs: np.ndarray,
                  n_frames: Sequence[int]) -> tuple[dict[str, pa.Array], np.ndarray]:
    """The `filename`, `frame` and per-class columns of padded frame arrays (valid frames only), and the frame indices."""
    n_frames = np.asarray(n_frames, dtype=np.int64)
    valid = np.arange(probs.shape[1])[None, :] < n_frames[:, None]
    clip_idx, frame_idx = np.nonzero(valid)
    values = probs[clip_idx, frame_idx]
    columns = {
        "filename": pa.DictionaryArray.from_arrays(pa.array(clip_idx.astype(np.int32)), pa.array(list(filenames))),
        "frame": pa.array(frame_idx.astype(np.int32)),
    }
    columns.update({name: pa.array(values[:, c].astype(np.float32)) for c, name in enumerate(CLASSES)})
    return columns, frame_idx


def write_frame_table(path: Path, columns: dict[str, pa.Array], meta: dict[str, Any]) -> Path:
    """Write frame columns as zstd Parquet atomically, `meta` as JSON under the schema metadata key `kdsed`.

    Scores are stored byte-stream-split without a dictionary (880 x 240 x 10 float32 scores: 6.6 MB
    instead of 11.7 MB with pyarrow's default dictionary); names and frame times keep theirs.
    """
    table = pa.table(columns).replace_schema_metadata({"kdsed": json.dumps(meta)})
    classes = [c for c in CLASSES if c in columns]
    return write_atomic(path, lambda tmp: pq.write_table(
        table, tmp, compression="zstd", use_dictionary=[c for c in columns if c not in classes],
        use_byte_stream_split=classes))


def _check_finite(labels: PseudoLabels, what: str) -> None:
    """Raise `PseudoLabelError` naming the first clip, frame and class whose probability is NaN or infinite."""
    bad = ~np.isfinite(labels.probs)
    if bad.any():
        clip, frame, c = (int(i[0]) for i in np.nonzero(bad))
        raise PseudoLabelError(f"{what} {int(bad.sum())} NaN or infinite values, the first of clip "
                               f"{labels.filenames[clip]!r}, frame {frame}, class {CLASSES[c]} "
                               f"({labels.probs[clip, frame, c]}); expected probabilities in [0, 1]")


def read_pseudo_labels(path: Path | str, *, frames: int | None = None,
                       order: Sequence[str] | None = None) -> PseudoLabels:
    """Read a pseudo-label Parquet file back into padded arrays (clips in `order` if given)."""
    table, meta = read_frame_table(path, "pseudo-label", PseudoLabelError)
    filenames, probs, n_frames = frame_arrays(table, frames)
    labels = PseudoLabels(filenames, probs, n_frames, meta)
    _check_finite(labels, f"{path}: holds")
    return reorder(labels, order) if order is not None else labels


def read_frame_table(path: Path | str, what: str, error: type[ValueError]) -> tuple[pa.Table, dict[str, Any]]:
    """A frame Parquet file (`filename`, `frame`, one column per class) and its `kdsed` metadata; `error` names the file."""
    try:
        table = pq.read_table(Path(path))
    except (pa.ArrowException, OSError) as e:
        raise error(f"{path}: not a readable {what} Parquet file ({e})") from None
    missing = [c for c in ("filename", "frame", *CLASSES) if c not in table.column_names]
    if missing:
        raise error(f"{path}: missing column(s) {', '.join(missing)}; expected filename, frame and "
                    "one column per class")
    raw_meta = (table.schema.metadata or {}).get(b"kdsed")
    meta = json.loads(raw_meta) if raw_meta else {}
    if meta.get("classes", list(CLASSES)) != list(CLASSES):
        raise error(f"{path}: class list {meta.get('classes')} differs from {list(CLASSES)}")
    return table, meta


def frame_arrays(table: pa.Table, frames: int | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Filenames, padded float32 frame values (n_clips, frames, classes) and valid frames per clip of a frame table."""
    names = table.column("filename").combine_chunks()
    if isinstance(names, pa.DictionaryArray):
        dictionary = names.dictionary.to_pylist()
        codes = names.indices.to_numpy()
    else:
        dictionary, codes = np.unique(names.to_numpy(zero_copy_only=False), return_inverse=True)
        dictionary = list(dictionary)
    frame_idx = table.column("frame").to_numpy()
    n_frames = np.zeros(len(dictionary), np.int64)
    np.maximum.at(n_frames, codes, frame_idx + 1)
    width = frames or int(n_frames.max(initial=0))
    probs = np.zeros((len(dictionary), width, NUM_CLASSES), np.float32)
    for c, name in enumerate(CLASSES):
        probs[codes, frame_idx, c] = table.column(name).to_numpy()
    return list(dictionary), probs, n_frames


def reorder(labels: PseudoLabels, order: Sequence[str]) -> PseudoLabels:
    """The same pseudo-labels with clips in `order` (every name must be present)."""
    index = {name: i for i, name in enumerate(labels.filenames)}
    missing = [f for f in order if f not in index]
    if missing:
        raise KeyError(f"{len(missing)} clips have no pseudo-labels, first: {missing[:5]}")
    rows = np.array([index[f] for f in order], dtype=np.int64)
    return PseudoLabels(list(order), labels.probs[rows], labels.n_frames[rows], labels.meta)
