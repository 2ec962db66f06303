"""Parquet pseudo-labels: round trip, the documented schema, ordering and refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from kdsed.constants import CLASSES, NUM_CLASSES
from kdsed.pseudolabels import SCHEMA_VERSION, PseudoLabels, read_pseudo_labels, reorder, write_pseudo_labels

N_FRAMES = [240, 37, 1, 120]
NAMES = ["y_clip.wav", "a_clip.wav", "m_clip.wav", "b_clip.wav"]


def sample() -> PseudoLabels:
    rng = np.random.default_rng(0)
    probs = rng.random((len(NAMES), 240, NUM_CLASSES), dtype=np.float32)
    probs[np.arange(240)[None, :] >= np.asarray(N_FRAMES)[:, None]] = 0.0
    return PseudoLabels(list(NAMES), probs, np.asarray(N_FRAMES), {"pass": 2, "winners": ["deep-none"] * NUM_CLASSES})


def test_round_trip(tmp_path):
    labels = sample()
    path = write_pseudo_labels(tmp_path / "pass2" / "pseudo.parquet", labels)
    assert path == tmp_path / "pass2" / "pseudo.parquet"
    back = read_pseudo_labels(path)
    assert back.filenames == NAMES
    np.testing.assert_array_equal(back.n_frames, N_FRAMES)
    np.testing.assert_array_equal(back.probs, labels.probs)
    assert back.probs.dtype == np.float32 and back.probs.shape == (4, 240, NUM_CLASSES)


def test_frames_argument_pads_to_a_fixed_width(tmp_path):
    labels = sample()
    labels = PseudoLabels(labels.filenames[1:3], labels.probs[1:3], labels.n_frames[1:3])  # 37 and 1 frames
    write_pseudo_labels(tmp_path / "p.parquet", labels)
    assert read_pseudo_labels(tmp_path / "p.parquet").probs.shape == (2, 37, NUM_CLASSES)
    padded = read_pseudo_labels(tmp_path / "p.parquet", frames=240)
    np.testing.assert_array_equal(padded.probs, labels.probs)


def test_pandas_reads_the_documented_columns(tmp_path):
    labels = sample()
    write_pseudo_labels(tmp_path / "p.parquet", labels)
    df = pd.read_parquet(tmp_path / "p.parquet")
    assert list(df.columns) == ["filename", "frame", *CLASSES]
    assert len(df) == sum(N_FRAMES)  # one row per valid frame, no padding rows
    assert df.groupby(df["filename"].astype(str), observed=True).size().to_dict() == dict(zip(NAMES, N_FRAMES))
    assert df["frame"].dtype == np.int32 and all(df[c].dtype == np.float32 for c in CLASSES)
    row = df[(df["filename"].astype(str) == "a_clip.wav") & (df["frame"] == 36)].iloc[0]
    assert row["Dog"] == labels.probs[1, 36, CLASSES.index("Dog")]
    assert df[df["filename"].astype(str) == "a_clip.wav"]["frame"].tolist() == list(range(37))


def test_metadata_is_preserved(tmp_path):
    write_pseudo_labels(tmp_path / "p.parquet", sample())
    meta = read_pseudo_labels(tmp_path / "p.parquet").meta
    assert meta["pass"] == 2 and meta["winners"] == ["deep-none"] * NUM_CLASSES
    assert meta["classes"] == list(CLASSES) and meta["schema_version"] == SCHEMA_VERSION
    raw = json.loads(pq.read_schema(tmp_path / "p.parquet").metadata[b"kdsed"])
    assert raw == meta


def test_order_reorders_and_missing_clips_raise(tmp_path):
    labels = sample()
    write_pseudo_labels(tmp_path / "p.parquet", labels)
    order = ["b_clip.wav", "y_clip.wav", "m_clip.wav", "a_clip.wav"]
    back = read_pseudo_labels(tmp_path / "p.parquet", order=order)
    assert back.filenames == order
    np.testing.assert_array_equal(back.n_frames, [120, 240, 1, 37])
    np.testing.assert_array_equal(back.probs, labels.probs[[3, 0, 2, 1]])
    sub = reorder(labels, ["m_clip.wav"])
    assert sub.filenames == ["m_clip.wav"] and sub.n_frames.tolist() == [1]
    with pytest.raises(KeyError, match=r"1 clips have no pseudo-labels, first: \['new.wav'\]"):
        read_pseudo_labels(tmp_path / "p.parquet", order=["a_clip.wav", "new.wav"])


def test_nan_and_shape_errors_are_refused(tmp_path):
    labels = sample()
    labels.probs[2, 0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_pseudo_labels(tmp_path / "p.parquet", labels)
    labels.probs[2, 0, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_pseudo_labels(tmp_path / "p.parquet", labels)
    ok = sample()
    with pytest.raises(ValueError, match=r"shape \(4, 240, 9\)"):
        write_pseudo_labels(tmp_path / "p.parquet", PseudoLabels(NAMES, ok.probs[..., :9], ok.n_frames))
    with pytest.raises(ValueError, match="3 filenames"):
        write_pseudo_labels(tmp_path / "p.parquet", PseudoLabels(NAMES[:3], ok.probs, ok.n_frames))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"an older version")
    write_pseudo_labels(path, sample())
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]
    assert read_pseudo_labels(path).filenames == NAMES


def test_foreign_class_list_is_refused(tmp_path):
    write_pseudo_labels(tmp_path / "p.parquet", sample())
    table = pq.read_table(tmp_path / "p.parquet")
    meta = json.loads(table.schema.metadata[b"kdsed"])
    meta["classes"] = list(reversed(CLASSES))
    pq.write_table(table.replace_schema_metadata({"kdsed": json.dumps(meta)}), tmp_path / "q.parquet")
    with pytest.raises(ValueError, match="class list"):
        read_pseudo_labels(tmp_path / "q.parquet")
