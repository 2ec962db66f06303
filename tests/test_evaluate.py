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
