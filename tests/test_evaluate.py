"""The `python -m kdsed.evaluate` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdsed.constants import CLASSES
from kdsed.evaluate import main
from kdsed.events import Event, write_strong_tsv

REFERENCE = {
    "a.wav": [Event(1.0, 3.0, "Dog"), Event(0.5, 1.0, "Cat")],
    "b.wav": [Event(2.0, 4.0, "Speech")],
    "c.wav": [],
}
ESTIMATED = {
    "a.wav": [Event(1.1, 3.2, "Dog"), Event(5.0, 6.0, "Cat")],
    # b.wav missing: no output for it
    "c.wav": [Event(0.0, 1.0, "Blender")],
}


@pytest.fixture
def tsvs(tmp_path: Path) -> tuple[Path, Path]:
    write_strong_tsv(tmp_path / "ref.tsv", REFERENCE)
    write_strong_tsv(tmp_path / "est.tsv", ESTIMATED)
    return tmp_path / "ref.tsv", tmp_path / "est.tsv"


@pytest.mark.parametrize("impl", [[], ["--reference-impl"]])
def test_json_output(tsvs, capsys, impl):
    assert main([str(tsvs[0]), str(tsvs[1]), "--json", *impl]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"macro", "micro", "class_wise"}
    assert list(data["class_wise"]) == list(CLASSES)
    assert data["class_wise"]["Dog"] == {"f_measure": 1.0, "precision": 1.0, "recall": 1.0, "n_ref": 1, "n_sys": 1}
    assert data["class_wise"]["Speech"] == {"f_measure": 0.0, "precision": 0.0, "recall": 0.0, "n_ref": 1,
                                            "n_sys": 0}
    assert data["class_wise"]["Blender"] == {"f_measure": None, "precision": 0.0, "recall": None, "n_ref": 0,
                                             "n_sys": 1}
    # macro F over Dog, Cat, Speech = (1 + 0 + 0) / 3; micro: 1 TP of 3 refs and 3 outputs
    assert data["macro"]["f_measure"] == pytest.approx(1 / 3)
    assert data["micro"] == pytest.approx({"f_measure": 1 / 3, "precision": 1 / 3, "recall": 1 / 3})


def test_table_output(tsvs, capsys):
    assert main([str(tsvs[0]), str(tsvs[1])]) == 0
    out = capsys.readouterr().out
    dog = next(line for line in out.splitlines() if line.startswith("Dog "))
    assert dog.split() == ["Dog", "100.00", "100.00", "100.00", "1", "1"]
    macro = next(line for line in out.splitlines() if line.startswith("macro"))
    assert macro.split()[1] == "33.33"


def test_unknown_file_is_an_error(tsvs, capsys, tmp_path):
    write_strong_tsv(tmp_path / "bad.tsv", {"zzz.wav": [Event(0.0, 1.0, "Dog")]})
    assert main([str(tsvs[0]), str(tmp_path / "bad.tsv")]) == 2
    err = capsys.readouterr().err
    assert "zzz.wav" in err and "not in the reference" in err


def test_unknown_label_is_an_error(tsvs, capsys, tmp_path):
    (tmp_path / "bad.tsv").write_text("filename\tonset\toffset\tevent_label\na.wav\t0.0\t1.0\tCow\n")
    assert main([str(tsvs[0]), str(tmp_path / "bad.tsv")]) == 2
    err = capsys.readouterr().err
    assert "Cow" in err and "line 2" in err


def test_module_entry_point(tsvs):
    done = subprocess.run([sys.executable, "-m", "kdsed.evaluate", str(tsvs[0]), str(tsvs[1]), "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["class_wise"]["Dog"]["n_ref"] == 1


# ---------------------------------------------------------------- --scores: PSDS and friends of frame scores

def frame_scores_case(tmp_path: Path) -> tuple[Path, Path]:
    """REF.tsv and an eval.parquet of three clips whose Dog and Cat scores are their references' frames (+ noise)."""
    import numpy as np

    from kdsed.config import FeatureConfig
    from kdsed.postprocess import events_to_frame_targets
    from kdsed.scores_io import FrameScores, write_scores

    fc = FeatureConfig()
    truth = np.stack([events_to_frame_targets(REFERENCE[f], fc, 240) for f in REFERENCE])
    truth[..., CLASSES.index("Speech")] = 0
    values = 0.8 * truth + 0.1 * np.random.default_rng(0).random(truth.shape)
    write_strong_tsv(tmp_path / "ref.tsv", REFERENCE)
    path = write_scores(tmp_path / "eval.parquet", FrameScores.from_outputs(list(REFERENCE), values, None, fc))
    return tmp_path / "ref.tsv", path


def test_scores_mode_json(tmp_path, capsys):
    ref, scores = frame_scores_case(tmp_path)
    assert main([str(ref), "--scores", str(scores), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"psds1", "psds2", "intersection_f1", "collar_f1", "n_clips", "classes", "thresholds"}
    assert data["classes"] == ["Cat", "Dog", "Speech"] and data["n_clips"] == 3 and data["thresholds"] == 0.5
    # Dog and Cat are found exactly, Speech never (its scores are noise below 0.1)
    assert data["collar_f1"]["class_wise"]["Dog"]["f_measure"] == 1.0
    assert data["collar_f1"]["class_wise"]["Speech"]["f_measure"] == 0.0
    assert data["collar_f1"]["macro"]["f_measure"] == pytest.approx(2 / 3)
    assert data["psds1"]["class_wise"]["Dog"] == 1.0 and data["psds1"]["class_wise"]["Blender"] is None


def test_scores_mode_table_and_the_tsv_folder_form(tmp_path, capsys):
    from kdsed.scores_io import read_scores

    ref, scores = frame_scores_case(tmp_path)
    folder = tmp_path / "tsv"
    folder.mkdir()
    for clip, frame in read_scores(scores).to_sed_scores().items():
        frame.to_csv(folder / f"{Path(clip).stem}.tsv", sep="\t", index=False)  # sed_scores_eval's naming
    assert main([str(ref), "--scores", str(folder)]) == 0
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.startswith("Dog ")).split()[3:] == ["100.00", "100.00"]
    assert out.splitlines()[-4].startswith("3 clips.")


def test_scores_mode_with_a_postprocessing_file(tmp_path, capsys):
    ref, scores = frame_scores_case(tmp_path)
    choice = {"classes": list(CLASSES), "median_windows": [1] * 10, "gaussian_sigmas": [0.0] * 10,
              "thresholds": [0.95] * 10}  # above every score: nothing is detected
    (tmp_path / "pp.json").write_text(json.dumps(choice))
    assert main([str(ref), "--scores", str(scores), "--postprocessing", str(tmp_path / "pp.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["collar_f1"]["macro"]["f_measure"] == 0.0 and data["thresholds"] == [0.95] * 10


def test_scores_mode_errors(tmp_path, capsys):
    ref, scores = frame_scores_case(tmp_path)
    write_strong_tsv(tmp_path / "more.tsv", {**REFERENCE, "d.wav": []})
    assert main([str(tmp_path / "more.tsv"), "--scores", str(scores)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {scores}: no scores for 1 clip(s) of "
                                               f"{tmp_path / 'more.tsv'}: d.wav")
    write_strong_tsv(tmp_path / "fewer.tsv", {"a.wav": REFERENCE["a.wav"]})
    assert main([str(tmp_path / "fewer.tsv"), "--scores", str(scores)]) == 2
    assert "scores of clip 'b.wav', which is not in the reference" in capsys.readouterr().err
    assert main([str(ref), "--scores", str(tmp_path / "nope.parquet")]) == 2
    assert "no such scores file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(ref), str(ref), "--scores", str(scores)])
