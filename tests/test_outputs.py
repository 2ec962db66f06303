"""The rule of every command (kdsed.safety): no command deletes or overwrites a file it did not create unless --force,
and no output may be one of its inputs. Each case runs the real CLI entry point and checks its exit status, that it
printed one line and no traceback, and that every file under the test folder is byte-identical afterwards."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from kdsed import evaluate, experiment, predict, registry, report
from kdsed.bundle import MANIFEST_FILE, assemble_bundle, load_bundle
from kdsed.events import Event, read_strong_tsv, write_strong_tsv
from kdsed.report_outputs import check_report_outputs, figures_folder, mark_figures
from kdsed.safety import OutputError, check_output
from kdsed.sweep.preflight import PreflightError, check_tracking
from support.builders import make_class_bundles, snapshot
from test_registry import Store, store  # noqa: F401  (the registry fixture: a SQLite store with two passes)

Run = Callable[[Path], list[str]]




@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, store: Store) -> dict[str, Path | str]:  # noqa: F811
    """A bundle, a clip, a reference TSV and the registry's store: the inputs of the commands."""
    root = tmp_path_factory.mktemp("inputs")
    bundle = assemble_bundle(make_class_bundles(root / "classes"), root / "bundle")
    clip = root / "clip.wav"
    sf.write(clip, (0.05 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32), 16000)
    ref = root / "ref.tsv"
    write_strong_tsv(ref, {"clip.wav": [Event(0.5, 1.0, "Dog")]})
    return {"bundle": bundle, "clip": clip, "ref": ref, "uri": store.uri, "db": Path(store.uri.removeprefix("sqlite:///"))}


def commands(i: dict) -> dict[str, tuple[Callable[[list[str]], int], Callable[[str], list[str]], str]]:
    """name -> (main, arguments for an output path, kind of output)."""
    return {
        "registry pull": (registry.main, lambda out: ["pull", "--out", out, "--tracking-uri", i["uri"]], "folder"),
        "predict": (predict.main, lambda out: ["--models", str(i["bundle"]), str(i["clip"]), "--out", out,
                                               "--workers", "1"], "file"),
        "report": (report.main, lambda out: ["--tracking-uri", i["uri"], "--out", out], "file"),
    }


def run(capsys, main, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def refused(capsys, main, argv: list[str], watched: Path, message: str) -> None:
    """`main(argv)` exits 2 with one line matching `message`, and nothing under `watched` changed."""
    before = snapshot(watched)
    code, err = run(capsys, main, argv)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert snapshot(watched) == before


@pytest.mark.parametrize("name", ["registry pull", "predict", "report"])
def test_an_existing_file_or_folder_kdsed_did_not_write_is_kept(name: str, inputs: dict, tmp_path: Path,
                                                                capsys) -> None:
    main, argv, kind = commands(inputs)[name]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("three years of work\n")
    (tmp_path / "notes.txt").write_text("my notes\n")
    if kind == "folder":
        refused(capsys, main, argv(str(tmp_path / "mine")), tmp_path,
                "the folder exists and kdsed did not write it; it would be replaced with everything in it: "
                "pass --force")
        refused(capsys, main, argv(str(tmp_path / "notes.txt")), tmp_path, "is a file; expected the path of a folder")
    else:
        refused(capsys, main, argv(str(tmp_path / "notes.txt")), tmp_path,
                "the file exists and kdsed did not write it; it would be replaced: pass --force")
        refused(capsys, main, argv(str(tmp_path / "mine")), tmp_path, "is a folder; expected the path of a file")


@pytest.mark.parametrize("name", ["registry pull", "predict", "report"])
def test_no_output_is_an_input_even_with_force(name: str, inputs: dict, capsys) -> None:
    main, argv, kind = commands(inputs)[name]
    watched = inputs["bundle"].parent
    victims = {"registry pull": [inputs["db"].parent, inputs["db"]],
               "predict": [inputs["clip"], inputs["bundle"] / MANIFEST_FILE, inputs["bundle"]],
               "report": [inputs["db"], inputs["db"].parent / "mlartifacts"]}[name]
    for victim in victims:
        root = watched if victim.is_relative_to(watched) else inputs["db"].parent
        for force in ([], ["--force"]):
            before = snapshot(root)
            code, err = run(capsys, main, argv(str(victim)) + force)
            assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
            assert any(m in err for m in ("is an input of this command", "lies inside the input folder",
                                          "holds the input", "is a file; expected the path of a folder",
                                          "is a folder; expected the path of a file")), err
            assert snapshot(root) == before


@pytest.mark.parametrize("out", [".", "..", "/"])
def test_a_folder_output_is_never_the_working_folder_or_above(out: str, inputs: dict, tmp_path: Path,
                                                              monkeypatch, capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.csv").write_text("a,b\n")
    monkeypatch.chdir(work)
    refused(capsys, registry.main, ["pull", "--out", out, "--tracking-uri", inputs["uri"], "--force"], tmp_path,
            "is the working folder or a folder above it, and would be replaced whole; name a new folder")


def test_the_serial_runner_writes_only_into_a_folder_of_its_own(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.md").write_text("my results\n")  # a name the runner writes
    refused(capsys, experiment.main, ["--config", "sweeps/smoke.yaml", "--out", str(mine)], tmp_path,
            "--out " + str(mine) + ": the folder exists and kdsed did not write it; files in it would be overwritten: "
            "pass --force to replace them")


def test_force_replaces_and_kdsed_replaces_its_own_outputs(inputs: dict, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "winners"
    folder.mkdir()
    (folder / "old.txt").write_text("a folder the user lets go\n")
    code, err = run(capsys, registry.main, ["pull", "--out", str(folder), "--tracking-uri", inputs["uri"], "--force"])
    assert code == 0, err
    assert not (folder / "old.txt").exists() and load_bundle(folder).classes["Dog"].provenance["pass"] == 2
    code, err = run(capsys, registry.main, ["pull", "--out", str(folder), "--alias", "pass-1",
                                            "--tracking-uri", inputs["uri"]])
    assert code == 0, err  # its own bundle: replaced without --force
    assert load_bundle(folder).classes["Dog"].provenance["pass"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert registry.main(["pull", "--out", str(empty), "--tracking-uri", inputs["uri"]]) == 0  # an empty folder
    events = tmp_path / "events.tsv"
    events.write_text("my hand-made labels\n")
    argv = ["--models", str(inputs["bundle"]), str(inputs["clip"]), "--out", str(events), "--workers", "1"]
    assert predict.main(argv) == 2 and events.read_text() == "my hand-made labels\n"
    assert predict.main(argv + ["--force"]) == 0 and set(read_strong_tsv(events)) == {"clip.wav"}


def test_a_report_replaces_only_an_earlier_report_and_its_figures(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "report.md"
    out.write_text("# kdsed sweep 20260101-000000-abcdef\n...\n")
    figures = figures_folder(out)
    figures.mkdir()
    check_report_outputs(out, tracking_uri=uri)  # an earlier report, and an empty folder
    (figures / "whole sweep").mkdir()
    (figures / "whole sweep" / "f1.png").write_bytes(b"png")
    with pytest.raises(OutputError, match="its figures folder.*the folder exists and kdsed did not write it"):
        check_report_outputs(out, tracking_uri=uri)
    mark_figures(figures)
    check_report_outputs(out, tracking_uri=uri)  # figures of an earlier report
    out.write_text("# My own notes\n")
    with pytest.raises(OutputError, match=r"--out \S+report\.md: the file exists and kdsed did not write it"):
        check_report_outputs(out, tracking_uri=uri)
    check_report_outputs(out, tracking_uri=uri, force=True)


def test_a_folder_that_cannot_be_written_is_one_line(inputs: dict, tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: only a read-only mount stops it
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(locked)],
                          capture_output=True).returncode != 0:
            pytest.skip("running as root and cannot mount a read-only tmpfs here")
    else:
        locked.chmod(0o555)
    try:
        for name, (main, argv, kind) in commands(inputs).items():
            code, err = run(capsys, main, argv(str(locked / "out")))
            assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (name, err)
            assert f"--out {locked / 'out'}: cannot write in {locked} (Read-only file system)" in err or \
                   f"cannot write in {locked} (Permission denied)" in err, (name, err)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(locked)], check=True)
        else:
            locked.chmod(0o755)


def test_evaluate_writes_nothing(inputs: dict, tmp_path: Path, capsys) -> None:
    ref = Path(shutil.copy(inputs["ref"], tmp_path / "ref.tsv"))
    before = snapshot(tmp_path)
    assert evaluate.main([str(ref), str(ref)]) == 0
    assert snapshot(tmp_path) == before


def test_a_sqlite_file_of_another_program_is_never_used_as_a_store(tmp_path: Path, capsys) -> None:
    db = tmp_path / "accounts.db"
    with sqlite3.connect(db) as con:
        con.execute("create table invoices (id integer, amount real)")
    before = db.read_bytes()
    with pytest.raises(PreflightError, match=r"accounts\.db is a SQLite database of another program \(tables: "
                                             r"invoices\), not an MLflow store"):
        check_tracking(f"sqlite:///{db}")
    for main, argv in ((registry.main, ["pull", "--out", str(tmp_path / "w"), "--tracking-uri", f"sqlite:///{db}"]),
                       (report.main, ["--tracking-uri", f"sqlite:///{db}"])):
        code, err = run(capsys, main, argv)
        assert code == 2 and "is a SQLite database of another program" in err and err.count("\n") == 1, err
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    code, err = run(capsys, report.main, ["--tracking-uri", f"sqlite:///{notes}"])
    assert code == 2 and err == (f"error: --tracking-uri sqlite:///{notes}: {notes} is not a SQLite database "
                                 "(it starts with b'not a da')\n")
    for main, argv in ((report.main, ["--tracking-uri", str(notes)]),
                       (registry.main, ["pull", "--out", str(tmp_path / "w"), "--tracking-uri", str(notes)])):
        code, err = run(capsys, main, argv)  # a plain path: MLflow 3's retired file store (before: a traceback)
        assert code == 2 and err.count("\n") == 1 and "a plain path names MLflow's retired file store" in err, err
    with pytest.raises(PreflightError, match=r"did you mean sqlite:///\S+accounts\.db\?"):
        check_tracking(str(db))
    assert db.read_bytes() == before and not (tmp_path / "w").exists()


def test_check_output_refuses_before_anything_exists(tmp_path: Path) -> None:
    check_output(tmp_path / "new" / "deeper" / "out.tsv", flag="--out", kind="file")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # checking creates nothing
