"""Pseudo-label lineage in MLflow: each pass's Parquet file as a dataset, with its digest, trained on and written."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np

from kdsed import schema
from kdsed.config import TrackingConfig
from kdsed.constants import CLASSES, NUM_CLASSES
from kdsed.pseudolabels import PseudoLabels, write_pseudo_labels
from kdsed.sweep import tracking


def test_a_pass_logs_what_it_trained_on_and_what_it_wrote(tmp_path):
    tracker = tracking.Tracker(TrackingConfig(tracking_uri=schema.sqlite_uri(tmp_path / "mlflow.db"),
                                              storage=str(tmp_path / "storage")), "sweep-1")
    probs = np.random.default_rng(0).random((3, 20, NUM_CLASSES), dtype=np.float32)
    files = {stage: write_pseudo_labels(tmp_path / f"{stage}.parquet",
                                        PseudoLabels(["a.wav", "b.wav", "c.wav"], probs * k, np.array([20, 20, 7])))
             for k, stage in enumerate(["pass-1", "pass-2"], start=1)}
    datasets = {stage: tracking.pseudo_label_dataset(path, stage, f"s3://bucket/sweeps/sweep-1/{stage}.parquet")
                for stage, path in files.items()}
    stage_run = tracker.run("pass-2", "pass-2", None)
    unit_runs = [tracker.run(name, name, stage_run) for name in ("pass-2/deep-none", "pass-2/shallow-median")]
    versions = [SimpleNamespace(name=f"kdsed-{c}", version=str(3 + i)) for i, c in enumerate(CLASSES)]
    tracking.log_pseudo_label_lineage(tracker, stage_run, ["pass-2/deep-none", "pass-2/shallow-median"],
                                      wrote=datasets["pass-2"], winner_versions=versions,
                                      trained_on=datasets["pass-1"])

    def inputs(run_id: str) -> dict:
        run = tracker.client.get_run(run_id)
        return {i.dataset.name: (i.dataset, {t.key: t.value for t in i.tags}) for i in run.inputs.dataset_inputs}

    for run_id in unit_runs:
        [(name, (dataset, tags))] = inputs(run_id).items()
        assert name == "pseudo_labels/pass-1" and tags == {schema.DATASET_CONTEXT_TAG: "training"}
        assert dataset.digest == hashlib.sha256(files["pass-1"].read_bytes()).hexdigest()[:16]
        assert dataset.source_type == "s3" and "s3://bucket/sweeps/sweep-1/pass-1.parquet" in dataset.source
    built = datasets["pass-1"]  # (the store keeps its size and columns; get_run does not return them)
    assert '"num_rows": 47' in built.profile and '"name": "Dog"' in built.schema  # 20 + 20 + 7 frames
    on_pass = inputs(stage_run)
    assert set(on_pass) == {"pseudo_labels/pass-1", "pseudo_labels/pass-2"}
    dataset, tags = on_pass["pseudo_labels/pass-2"]
    assert tags[schema.DATASET_CONTEXT_TAG] == "output" and tags["kdsed.winner.Dog"] == "kdsed-Dog/7"
    assert len(tags) == 1 + NUM_CLASSES
    assert dataset.digest == hashlib.sha256(files["pass-2"].read_bytes()).hexdigest()[:16] != on_pass[
        "pseudo_labels/pass-1"][0].digest
