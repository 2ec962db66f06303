"""What the sweep prints: kdsed's lines and a live progress display, not Ray's or MLflow's own output.

The display is checked on a string stream (as a terminal and as a log file); the slow test runs the `smoke`
sweep as a user would and reads both its console and, from MLflow, each unit's per-epoch step history.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.sweep_runs import REPO, store_uri

from kdsed import schema
from kdsed.sweep import console
from kdsed.sweep.console import PassProgress, UnitEvent
from kdsed.train import EpochLog

#: Ray's and MLflow's lines that must not reach a default sweep's console (issue 13).
RAY_NOISE = ("PYTHON worker processes have been started", "core_worker.cc", "Attempting to start training worker group",
             "Setting up process group", "repeated", "Reporting training result", "Creating initial MLflow database")


def epoch(unit: str, k: int, epochs: int = 4, elapsed_s: float | None = None) -> UnitEvent:
    return UnitEvent(unit, "epoch", epochs, EpochLog(k, 0.5 / k, 0.6 / k, 100.0 * k, elapsed_s or 10.0 * k))


def test_one_line_per_epoch_when_not_a_terminal():
    out = io.StringIO()
    with PassProgress({"pass-2/deep-none": 4, "pass-2/shallow-median": 4}, out, tty=False) as progress:
        progress.update(epoch("pass-2/deep-none", 1))
        console.say("a kdsed line")
        progress.update(epoch("pass-2/shallow-median", 1))
        progress.finish("pass-2/deep-none", "done")
    lines = out.getvalue().splitlines()
    assert lines == [
        "[pass-2/deep-none] epoch 1/4  train 0.5000  val 0.6000  100 clips/s  10 s, at most 30 s left",
        "a kdsed line",
        "[pass-2/shallow-median] epoch 1/4  train 0.5000  val 0.6000  100 clips/s  10 s, at most 30 s left"]
    assert "\x1b" not in out.getvalue()


def test_a_terminal_gets_one_block_redrawn_in_place():
    out = io.StringIO()
    with PassProgress({"a": 4, "b": 2}, out, tty=True) as progress:
        progress.update(epoch("a", 1))
        assert progress.left_s() is None  # b has not reported yet
        progress.update(epoch("b", 1, epochs=2, elapsed_s=50.0))
        assert progress.left_s() == 50.0  # b: 50 s per epoch, one left; a: 30 s
        console.say("between")
        progress.finish("b", "done, best epoch 1")
        assert progress.left_s() == 30.0
    text = out.getvalue()
    # Every redraw first erases the block drawn before it (3 lines: the head and one per unit).
    assert text.count("\x1b[1F\x1b[2K" * 3) >= 4 and "between\n" in text
    final = text.rsplit("\x1b[2K", 1)[1].splitlines()
    assert final[0].startswith("  1/2 units done")
    assert final[1].startswith("  a") and "[#####...............] epoch 1/4" in final[1] and "30 s left at most" in final[1]
    assert final[2].startswith("  b") and "[####################] epoch 1/2" in final[2] and final[2].endswith("done, best epoch 1")


def test_a_retry_is_one_line():
    out = io.StringIO()
    with PassProgress({"a": 4}, out, tty=False) as progress:
        progress.update(UnitEvent("a", "retry", 4, attempt=2, max_failures=2))
    assert out.getvalue() == ("[a] RETRY: attempt 2 (a failed unit is retried up to 2 times); "
                              "training again from scratch, seeded, so with the same result\n")


@pytest.mark.slow
def test_smoke_sweep_prints_kdsed_lines_only_and_logs_epochs_live(tmp_path: Path):
    """The `smoke` sweep as a user runs it: no Ray / MLflow noise, the units' epochs shown and in MLflow as steps."""
    cfg = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    cfg["tracking"] = {"storage": str(tmp_path / "storage"), "tracking_uri": store_uri(tmp_path)}
    cfg["data"] = {**cfg["data"], "workdir": str(tmp_path / "work")}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    # ~1-2 min on 2 quiet cores; the limit is for a machine shared with other jobs (it reached 15 min at load 35).
    done = subprocess.run([sys.executable, "-m", "kdsed.sweep", "--config", str(tmp_path / "sweep.yaml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=2400)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for noise in RAY_NOISE:
        assert noise not in output, f"{noise!r} in the sweep's output:\n{output}"
    assert not [line for line in output.splitlines() if "WARNING" in line], output
    epochs = cfg["train"]["epochs"]
    for unit in ("pass-2/deep-none", "pass-2/shallow-median"):
        for k in range(1, epochs + 1):
            assert f"[{unit}] epoch {k}/{epochs}  train " in done.stderr
    assert "compare runs:  mlflow ui --backend-store-uri" in done.stdout
    # Stage 0's stages are scored while pass 1 trains (they need nothing more from it).
    assert done.stderr.index("] tagging done in ") > done.stderr.index("] training baseline-2stage, pass-1/deep ")
    assert_epochs_logged_live(tmp_path, {"tagging": cfg["tagging_train"]["epochs"], "pass-2/deep-none": epochs,
                                         "pass-2/shallow-median": epochs})


def assert_epochs_logged_live(tmp: Path, epochs: dict[str, int]) -> None:
    """Each unit's per-epoch steps exist once each, and were logged before its final metrics (while it trained)."""
    from mlflow import MlflowClient

    client = MlflowClient(store_uri(tmp))
    experiment = client.get_experiment_by_name(schema.MLFLOW_EXPERIMENT)
    for unit, n in epochs.items():
        [run] = client.search_runs([experiment.experiment_id], schema.tag_filter(**{schema.TAG_UNIT: unit}))
        for key in (schema.TRAIN_LOSS, schema.VAL_LOSS, schema.EPOCH_CLIPS_PER_S):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == list(range(1, n + 1)), (unit, key)
        first = client.get_metric_history(run.info.run_id, schema.TRAIN_LOSS)[0].timestamp
        [best] = client.get_metric_history(run.info.run_id, schema.BEST_EPOCH)
        # Trained, then post-processing searched and scored: seconds between the first epoch and the end.
        assert best.timestamp - first > 1000, (unit, first, best.timestamp)
        assert run.info.start_time <= first and run.info.status == "FINISHED"
