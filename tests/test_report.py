"""`python -m kdsed.report`: a sweep's report rebuilt from MLflow alone.

Most tests read the session's `finished_sweep` (conftest.py: a smoke sweep killed in
pass 2 and resumed). Its parent run holds `results.md`, which the coordinator made
from its in-memory StageReports; the report must rebuild exactly that table from the
runs' metrics, params and tags.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.sweep_runs import store_uri

from kdsed import schema
from kdsed.constants import CLASSES
from kdsed.report import find_parent_run, load_sweep, main
from kdsed.results import format_table, results_markdown, short_class_name
from kdsed.schema import score_metrics, scores_from_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_scores_from_metrics_inverts_score_metrics():
    fpr = {"f_measure": 0.25, "precision": None, "recall": 0.5}
    scores = {"macro": fpr, "micro": {**fpr, "precision": 0.125},
              "class_wise": {c: {"f_measure": k / 10, "precision": None if k % 3 else k / 20, "recall": 0.0}
                             for k, c in enumerate(CLASSES)}}
    assert scores_from_metrics(score_metrics("val", scores), "val") == scores
    nothing = {"f_measure": None, "precision": None, "recall": None}
    assert scores_from_metrics({}, "eval")["class_wise"]["Dog"] == nothing


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_store_exits_2_with_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "--tracking-uri", schema.sqlite_uri(tmp_path / "nothing.db"))
    assert code == 2 and out == ""
    assert err.splitlines() == [f"error: no MLflow store at {tmp_path}/nothing.db (run `python -m kdsed.sweep` "
                                "first, or pass --tracking-uri)"]
    assert not (tmp_path / "nothing.db").exists()


def test_store_without_sweeps_exits_2(tmp_path, capsys):
    from mlflow import MlflowClient

    uri = store_uri(tmp_path)
    client = MlflowClient(uri)
    client.search_experiments()  # creates the store's tables (MLflow logs that on stderr)
    capsys.readouterr()
    code, _, err = run_cli(capsys, "--tracking-uri", uri)  # no experiment "kdsed" yet
    assert code == 2 and err == f"error: no sweeps in experiment 'kdsed' of {uri} (run `python -m kdsed.sweep` first)\n"
    other = client.create_run(client.create_experiment(schema.MLFLOW_EXPERIMENT)).info.run_id  # a run, but not a sweep's
    code, _, err = run_cli(capsys, "--tracking-uri", uri, "--latest")
    assert code == 2 and err.startswith("error: no sweeps in experiment 'kdsed'")
    code, _, err = run_cli(capsys, "--tracking-uri", uri, "--run-id", other)
    assert code == 2 and err == f"error: run {other} is not a sweep's parent run: it is not a kdsed run\n"


# ---- on the finished smoke sweep -------------------------------------------------------------------


def sweep_runs(tmp: Path) -> tuple[str, object, dict]:
    """(tracking URI, client, {kdsed.unit: run}) of the fixture's sweep."""
    from mlflow import MlflowClient

    uri = store_uri(tmp)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(schema.MLFLOW_EXPERIMENT)
    return uri, client, {r.data.tags[schema.TAG_UNIT]: r for r in client.search_runs([experiment.experiment_id])}


def logged_results_md(client, parent_id: str, dst: Path) -> str:
    return Path(client.download_artifacts(parent_id, schema.RESULTS_MD, str(dst))).read_text()


@pytest.mark.slow
def test_report_rebuilds_the_logged_results_table(finished_sweep, tmp_path, capsys):
    tmp, _, final = finished_sweep
    uri, client, runs = sweep_runs(tmp)
    logged = logged_results_md(client, final["parent_run_id"], tmp_path)
    sweep = load_sweep(client, find_parent_run(client, uri, run_id=final["parent_run_id"]))
    assert results_markdown(sweep.stages) == logged
    assert [r.stage for r in sweep.stages] == ["baseline", "baseline 2stage", "tagging", "pass 1", "pass 2", "topline"]
    assert logged.splitlines()[6].startswith("| pass 2, per-class winners | ")
    assert re.match(r"\| pass 2, best single \((deep, no smoothing|shallow, median)\) \| ", logged.splitlines()[7])
    assert sweep.finished and sweep.sweep_id == final["sweep_id"]
    code, out, _ = run_cli(capsys, "--tracking-uri", uri, "--run-id", final["parent_run_id"])
    assert code == 0 and logged in out and "UNFINISHED" not in out
    assert f"# kdsed sweep {final['sweep_id']}" in out


@pytest.mark.slow
def test_latest_and_run_id_agree(finished_sweep, capsys):
    tmp, _, final = finished_sweep
    uri = store_uri(tmp)
    by_id = run_cli(capsys, "--tracking-uri", uri, "--run-id", final["parent_run_id"])
    assert by_id[0] == 0
    assert run_cli(capsys, "--tracking-uri", uri) == by_id  # --latest is the default
    latest = subprocess.run([sys.executable, "-m", "kdsed.report", "--latest", "--tracking-uri", uri],
                            capture_output=True, text=True, cwd=tmp, timeout=300)
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout == by_id[1]


@pytest.mark.slow
def test_winners_table_matches_the_stage_params(finished_sweep, capsys):
    tmp, _, final = finished_sweep
    uri, client, runs = sweep_runs(tmp)
    sweep = load_sweep(client, find_parent_run(client, uri))
    assert list(sweep.winners) == ["pass 1", "pass 2"]
    _, out, _ = run_cli(capsys, "--tracking-uri", uri)
    table = out.split("## Per-class winners")[1].split("\n## ")[0]
    assert "| class | pass 1 | pass 2 |" in table
    for stage in ("pass-1", "pass-2"):
        run = runs[stage]
        for c in CLASSES:
            winner = sweep.winners[stage.replace("-", " ")][c]
            assert winner.variant == run.data.params[schema.winner_param(c)]
            # a class's events come from its winner alone, so the stage's F1 on it is the winner's
            assert winner.val_f1 == pytest.approx(run.data.metrics[schema.score_metric("val", "f_measure", c)],
                                                  abs=1e-12)
    for c in CLASSES:
        row = f"| {short_class_name(c)} | deep ({100 * sweep.winners['pass 1'][c].val_f1:.2f}) | " \
              f"{runs['pass-2'].data.params[schema.winner_param(c)]} ({100 * sweep.winners['pass 2'][c].val_f1:.2f}) |"
        assert row in table.splitlines()
    validation = out.split("## Validation macro F1 per stage (%)")[1]
    val_f1 = runs["pass-2"].data.metrics[schema.score_metric("val", "f_measure", "macro")]
    assert f"| pass 2, per-class winners | {100 * val_f1:.2f} |" in validation


@pytest.mark.slow
def test_out_writes_the_report_with_its_figures(finished_sweep, tmp_path, capsys):
    tmp, _, _ = finished_sweep
    uri = store_uri(tmp)
    out = tmp_path / "reports" / "report.md"
    for _ in range(2):  # the second run replaces the first's files
        code, printed, _ = run_cli(capsys, "--tracking-uri", uri, "--out", str(out))
        assert code == 0
    text = out.read_text()
    assert printed == text + "\n"
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    names = {Path(link).relative_to("report_figures").as_posix() for link in links}
    assert {f"{schema.SWEEP_UNIT}/{schema.F1_OVER_PASSES_PNG}", f"{schema.SWEEP_UNIT}/{schema.WINNER_MATRIX_PNG}",
            f"pass-2/{schema.example_clip_png(1)}", f"tagging/{schema.example_clip_png(1)}"} <= names
    for link in links:
        data = (out.parent / link).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, link
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.md", "report_figures"]  # no temporary leftovers
    assert sum(1 for p in (out.parent / "report_figures").rglob("*.png")) == len(links)


@pytest.mark.slow
def test_errors_on_the_sweep_store(finished_sweep, capsys):
    tmp, _, final = finished_sweep
    uri, _, runs = sweep_runs(tmp)
    code, _, err = run_cli(capsys, "--tracking-uri", uri, "--run-id", "0" * 32)
    assert code == 2 and err == f"error: no run {'0' * 32} in {uri}\n"
    stage = runs["pass-2"].info.run_id
    code, _, err = run_cli(capsys, "--tracking-uri", uri, "--run-id", stage)
    assert code == 2 and err == (f"error: run {stage} is not a sweep's parent run: it is the 'pass-2' run of sweep "
                                 f"{final['sweep_id']}, whose parent run is {final['parent_run_id']}\n")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stage run not finished", "stage run not created"])
def test_unfinished_sweep_is_reported_as_far_as_it_got(finished_sweep, tmp_path, capsys, how):
    """A sweep stopped while pass 2 was being logged (its run still RUNNING) or before it was."""
    from mlflow import MlflowClient

    tmp, _, final = finished_sweep
    shutil.copy(tmp / "mlflow.db", tmp_path / "mlflow.db")  # artifacts stay where the copy's runs point
    uri = store_uri(tmp_path)
    _, _, runs = sweep_runs(tmp_path)
    client = MlflowClient(uri)
    client.update_run(final["parent_run_id"], status="RUNNING")
    if how == "stage run not finished":
        client.update_run(runs["pass-2"].info.run_id, status="RUNNING")
    else:
        client.delete_run(runs["pass-2"].info.run_id)
    code, out, err = run_cli(capsys, "--tracking-uri", uri)
    assert code == 0 and err == ""
    not_yet = "pass-2 (run not finished)" if how == "stage run not finished" else "pass-2"
    assert f"**UNFINISHED**: 5 stage(s) finished; not yet: {not_yet}." in out
    original = MlflowClient(store_uri(tmp))
    full = load_sweep(original, find_parent_run(original, "", run_id=final["parent_run_id"]))
    finished = [r for r in full.stages if r.stage != "pass 2"]
    assert format_table(finished) in out and "| pass 2" not in out
