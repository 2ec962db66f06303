"""Raw frame scores in one Parquet file per subset, and their sed_scores_eval layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kdsed.config import FeatureConfig
from kdsed.constants import CLASSES, NUM_CLASSES
from kdsed.scores_io import (FrameScores, ScoresError, check_score_frame, read_scores, read_scores_folder,
                             score_dataframe, write_scores)

FC = FeatureConfig()
NAMES = ["b.wav", "a.wav", "short.wav"]
N_FRAMES = [240, 240, 37]


def sample() -> FrameScores:
    rng = np.random.default_rng(0)
    values = rng.random((3, 240, NUM_CLASSES), dtype=np.float32)
    values[2, 37:] = 0
    return FrameScores.from_outputs(NAMES, values, N_FRAMES, FC, subset="eval", stage="pass-2")


def test_round_trip_and_the_documented_columns(tmp_path):
    scores = sample()
    path = write_scores(tmp_path / "scores" / "eval.parquet", scores)
    back = read_scores(path)
    assert back.filenames == NAMES and back.meta == {"subset": "eval", "stage": "pass-2", "kind": "scores",
                                                     "classes": list(CLASSES)}
    np.testing.assert_array_equal(back.scores, scores.scores)
    np.testing.assert_array_equal(back.n_frames, N_FRAMES)
    assert (back.hop_s, back.frame_offset_s, back.clip_duration_s, back.frames_per_clip) == (0.0415, 0.01125, 10.0, 240)
    table = pd.read_parquet(path)
    assert list(table.columns) == ["filename", "frame", *CLASSES, "onset", "offset"] and len(table) == 240 + 240 + 37
    short = table[table.filename == "short.wav"]
    assert short.onset.iloc[0] == pytest.approx(0.01125) and short.offset.iloc[-1] == pytest.approx(0.01125 + 37 * 0.0415)


def test_sed_scores_eval_layout_durations_and_writeable_arrays():
    frames = sample().to_sed_scores()
    assert list(frames) == NAMES
    short = frames["short.wav"]
    assert list(short.columns) == ["onset", "offset", *CLASSES] and len(short) == 37
    np.testing.assert_allclose(short["onset"].to_numpy()[1:], short["offset"].to_numpy()[:-1])
    assert short["offset"].iloc[-1] == pytest.approx(0.01125 + 37 * 0.0415)
    # sed_scores_eval 0.0.4 writes into this array (Cython memoryview): pandas >= 3 must not hand out a view
    assert frames["a.wav"][list(CLASSES)].to_numpy().flags.writeable
    assert sample().durations_s() == {"b.wav": 10.0, "a.wav": 10.0, "short.wav": pytest.approx(37 * 0.0415 + 0.0225)}


def test_frames_past_the_clip_end_are_left_out():
    fc = FeatureConfig(clip_duration_s=1.0)  # 23 frames whose last cells reach past 1 s
    scores = FrameScores.from_outputs(["x.wav"], np.zeros((1, 25, NUM_CLASSES)), None, fc)
    frame = scores.to_sed_scores()["x.wav"]
    assert frame["offset"].iloc[-1] == 1.0 and (frame["offset"] > frame["onset"]).all()


def test_refusals(tmp_path):
    bad = sample()
    bad.scores[1, 5, 3] = np.nan
    with pytest.raises(ScoresError, match="refusing to write 1 NaN or infinite scores, the first of clip 'a.wav', "
                                          "frame 5, class Dishes"):
        write_scores(tmp_path / "x.parquet", bad)
    pd.DataFrame({"filename": ["a"], "frame": [0], **{c: [0.0] for c in CLASSES}}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(ScoresError, match="not a kdsed scores file"):
        read_scores(tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="scores of shape \\(2, 240, 10\\) for 3 clips"):
        FrameScores.from_outputs(NAMES, np.zeros((2, 240, NUM_CLASSES)), None, FC)


def test_the_folder_form_is_checked(tmp_path):
    frame = score_dataframe(np.full((4, NUM_CLASSES), 0.5), np.arange(5) * 0.5)
    frame.to_csv(tmp_path / "clip.tsv", sep="\t", index=False)
    assert list(read_scores_folder(tmp_path)) == ["clip"]
    cases = [
        (frame.rename(columns={"Dog": "Bird"}), "unknown class column\\(s\\) Bird"),
        (frame.drop(columns="Cat"), "no column for class\\(es\\) Cat"),
        (frame.assign(onset=[0.0, 0.5, 1.2, 1.5]), "frame 1 \\(onset 0.5, offset 1.0\\) has an offset that is not "
                                                   "the next frame's onset"),
        (frame.assign(onset=[-0.5, 0.5, 1.0, 1.5], offset=[0.5, 1.0, 1.5, 2.0]), "frame 0 .* has a negative onset"),
        (frame.assign(offset=[0.5, 1.0, 1.5, 1.5]), "frame 3 .* has an offset not after its onset"),
        (frame[["offset", "onset", *CLASSES]], "the first two columns are \\['offset', 'onset'\\]"),
    ]
    for bad, message in cases:
        with pytest.raises(ScoresError, match=message):
            check_score_frame(bad, "clip.tsv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScoresError, match="no .tsv score files"):
        read_scores_folder(tmp_path / "empty")
