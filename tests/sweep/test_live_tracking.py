"""A unit's per-epoch step metrics in MLflow: logged as it trains, each step once across retries and resumes."""

from __future__ import annotations

from pathlib import Path

from kdsed import schema
from kdsed.config import TrackingConfig
from kdsed.sweep import tracking
from kdsed.train import EpochLog


def epoch(k: int) -> EpochLog:
    return EpochLog(k, train_loss=1.0 / k, val_loss=2.0 / k, clips_per_s=100.0 + k, elapsed_s=3.0 * k)


def test_epochs_logged_once_across_a_resume(tmp_path: Path):
    tracker = tracking.Tracker(TrackingConfig(tracking_uri=schema.sqlite_uri(tmp_path / "mlflow.db"),
                                              storage=str(tmp_path / "storage")), "sweep-a")
    parent_run = tracker.run(schema.SWEEP_UNIT, "sweep-a", None)
    stage_run = tracking.open_stage_run(tracker, parent_run, "pass-2")
    run = tracking.open_unit_run(tracker, stage_run, "pass-2/deep-median", "deep")
    live = tracking.StepLog(tracker)
    for k in (1, 2):
        live.log(run, epoch(k))
    # The sweep is killed and resumed: the same runs are found again, the unit retrains from epoch 1.
    assert tracking.open_stage_run(tracker, parent_run, "pass-2") == stage_run
    assert tracking.open_unit_run(tracker, stage_run, "pass-2/deep-median", "deep") == run
    resumed = tracking.StepLog(tracker)
    for k in (1, 2, 3):
        resumed.log(run, epoch(k))
    for k in (1, 2, 3):  # and the finished unit's whole history at the end
        resumed.log(run, epoch(k))
    for key, value in ((schema.TRAIN_LOSS, 1.0), (schema.VAL_LOSS, 2.0)):
        history = tracker.client.get_metric_history(run, key)
        assert [(m.step, m.value) for m in history] == [(k, value / k) for k in (1, 2, 3)]
    speed = tracker.client.get_metric_history(run, schema.EPOCH_CLIPS_PER_S)
    assert [(m.step, m.value) for m in speed] == [(1, 101.0), (2, 102.0), (3, 103.0)]
    tags = tracker.client.get_run(run).data.tags
    assert (tags[schema.TAG_PASS], tags[schema.TAG_VARIANT], tags[schema.TAG_MODEL], tags[schema.TAG_SMOOTHING]) == (
        "2", "deep-median", "deep", "median")
    assert tags[schema.TAG_PARENT_RUN] == stage_run
