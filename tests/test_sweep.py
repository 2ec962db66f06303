"""The distributed sweep end to end on the synthetic smoke set.

The session fixture `finished_sweep` (conftest.py) starts one sweep in a
subprocess, kills it in the middle of pass 2 (after its first variant finished)
and resumes it; these tests read the finished sweep: the MLflow structure, the
Parquet pseudo-labels, the registry pull + predict round trip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from kdsed.constants import CLASSES, REGISTERED_MODEL_PREFIX

pytestmark = pytest.mark.slow


def test_resume_retrains_nothing_that_finished(finished_sweep):
    tmp, killed, final = finished_sweep
    assert final["sweep_id"] == killed["sweep_id"]
    assert set(killed["units"]) < set(final["units"])
    for name, record in killed["units"].items():
        assert final["units"][name] == record, f"{name} was trained again after --resume"
    assert final["stages_done"] == ["baseline", "tagging", "pass-1", "pass-2"]


def mlflow_client(tmp: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp}/mlflow.db")


def test_mlflow_structure(finished_sweep):
    tmp, _, final = finished_sweep
    client = mlflow_client(tmp)
    experiment = client.get_experiment_by_name("kdsed")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_unit = {}
    for run in runs:
        by_unit.setdefault(run.data.tags["kdsed.unit"], []).append(run)
    # Exactly one run per unit despite the kill and resume.
    assert all(len(v) == 1 for v in by_unit.values()), {k: len(v) for k, v in by_unit.items()}
    parent = by_unit["sweep"][0]
    assert parent.info.run_id == final["parent_run_id"] and parent.info.status == "FINISHED"
    stages = {s: by_unit[s][0] for s in ("baseline", "tagging", "pass-1", "pass-2")}
    for stage in stages.values():
        assert stage.data.tags["mlflow.parentRunId"] == parent.info.run_id
    variants = [by_unit["pass-2/deep-none"][0], by_unit["pass-2/shallow-median"][0]]
    for run in variants:
        assert run.data.tags["mlflow.parentRunId"] == stages["pass-2"].info.run_id
        assert run.data.tags["kdsed.pass"] == "2"
        assert {"val_f1_macro", "eval_f1_macro", *(f"val_f1_{c}" for c in CLASSES)} <= set(run.data.metrics)
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == list(range(1, len(history) + 1)) and len(history) >= 1
    assert variants[0].data.tags["kdsed.model"] == "deep" and variants[1].data.tags["kdsed.smoothing"] == "median"
    winners = {c: stages["pass-2"].data.params[f"winner_{c}"] for c in CLASSES}
    assert set(winners.values()) <= {"deep-none", "shallow-median"}
    # Per-pass curves on the parent run: one point per stage index.
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "eval_f1_macro")] == [0, 1, 2]
    assert "baseline_eval_f1_macro" in parent.data.metrics


def test_registry_has_every_class_with_aliases(finished_sweep):
    tmp, _, _ = finished_sweep
    client = mlflow_client(tmp)
    for c in CLASSES:
        name = f"{REGISTERED_MODEL_PREFIX}{c}"
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.tags["pass"] == "2"
        assert client.get_model_version_by_alias(name, "pass-2").version == champion.version
        assert client.get_model_version_by_alias(name, "pass-1").tags["variant"] == "deep"
        assert 0 < float(champion.tags["threshold"]) < 1


def test_parquet_pseudo_labels(finished_sweep):
    tmp, _, final = finished_sweep
    folder = tmp / "storage" / "sweeps" / final["sweep_id"] / "pseudo_labels"
    for k in (1, 2):
        table = pq.read_table(folder / f"pass-{k}.parquet")
        assert table.column_names == ["filename", "frame", *CLASSES]
        meta = json.loads(table.schema.metadata[b"kdsed"])
        assert meta["pass"] == k and set(meta["winners"]) == set(CLASSES)
        frames = table.column("frame").to_numpy()
        assert frames.min() == 0 and frames.max() == 239
        # weak 24 + in-domain 24 + out-of-domain 16 training clips of 240 frames each
        assert table.num_rows == 64 * 240
        probs = np.stack([table.column(c).to_numpy() for c in CLASSES])
        assert probs.min() >= 0 and probs.max() <= 1


def test_pull_and_predict_reproduce_eval_f1(finished_sweep):
    from kdsed.bundle import load_bundle
    from kdsed.data import load_dataset
    from kdsed.events import read_strong_tsv
    from kdsed.metrics import event_scores

    tmp, _, final = finished_sweep
    out = tmp / "winners"
    subprocess.run([sys.executable, "-m", "kdsed.registry", "pull", "--out", str(out),
                    "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"], check=True, cwd=tmp)
    bundle = load_bundle(out)
    assert set(bundle.classes) == set(CLASSES)
    data = load_dataset(tmp / "work" / "data" / "synth-smoke-seed0")
    wavs = [str(c.audio_path) for c in data.subset("eval")]
    subprocess.run([sys.executable, "-m", "kdsed.predict", "--models", str(out), *wavs, "--out", str(tmp / "eval.tsv"),
                    "--force"],  # a reused fixture folder (KDSED_REUSE_SWEEP) holds the last run's file
                   check=True, cwd=tmp)
    predicted = read_strong_tsv(tmp / "eval.tsv")
    scores = event_scores(data.reference_table("eval"), {f: predicted.get(f, []) for f in data.reference_table("eval")})
    stage = json.loads((tmp / "storage" / "sweeps" / final["sweep_id"] / "stages" / "pass-2.json").read_text())
    assert scores.to_json()["macro"] == pytest.approx(stage["report"]["eval"]["macro"], abs=1e-9)


def test_figures_logged(finished_sweep):
    import matplotlib.image

    tmp, _, final = finished_sweep
    client = mlflow_client(tmp)
    experiment = client.get_experiment_by_name("kdsed")
    runs = {r.data.tags["kdsed.unit"]: r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    wanted = {"sweep": ["val_f1_over_passes.png", "winner_matrix.png"], "pass-2": ["clip_1.png"],
              "pass-2/deep-none": ["loss_curves.png"]}
    for unit, names in wanted.items():
        logged = {Path(a.path).name for a in client.list_artifacts(runs[unit], "figures")}
        assert set(names) <= logged, (unit, logged)
        for name in names:
            local = client.download_artifacts(runs[unit], f"figures/{name}", str(tmp))
            pixels = matplotlib.image.imread(local)
            assert pixels.shape[0] > 300 and pixels.shape[1] > 600 and pixels[..., :3].std() > 0.05
