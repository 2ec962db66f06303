"""The distributed sweep end to end on the synthetic smoke set.

The session fixture `finished_sweep` (conftest.py) starts one sweep in a
subprocess, stops it (Ctrl-C after stage 0, SIGTERM, then SIGKILL in the middle
of pass 2, after its first variant finished) and resumes it; these tests read the finished sweep: the MLflow structure, the
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

from support.sweep_runs import data_root, store_uri, sweep_folder

from kdsed import schema
from kdsed.constants import CLASSES
from kdsed.registry import registered_model_name

pytestmark = pytest.mark.slow


def test_resume_retrains_nothing_that_finished(finished_sweep):
    tmp, killed, final = finished_sweep
    assert final["sweep_id"] == killed["sweep_id"]
    assert set(killed["units"]) < set(final["units"])
    for name, record in killed["units"].items():
        assert final["units"][name] == record, f"{name} was trained again after --resume"
    assert final["stages_done"] == ["baseline", "topline", "tagging", "baseline-2stage", "pass-1", "pass-2"]


def mlflow_client(tmp: Path):
    from mlflow import MlflowClient

    return MlflowClient(store_uri(tmp))


def test_mlflow_structure(finished_sweep):
    tmp, _, final = finished_sweep
    client = mlflow_client(tmp)
    experiment = client.get_experiment_by_name(schema.MLFLOW_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_unit = {}
    for run in runs:
        by_unit.setdefault(run.data.tags[schema.TAG_UNIT], []).append(run)
    # Exactly one run per unit despite the kill and resume.
    assert all(len(v) == 1 for v in by_unit.values()), {k: len(v) for k, v in by_unit.items()}
    parent = by_unit[schema.SWEEP_UNIT][0]
    assert parent.info.run_id == final["parent_run_id"] and parent.info.status == "FINISHED"
    stages = {s: by_unit[s][0] for s in ("baseline", "tagging", "pass-1", "pass-2")}
    for stage in stages.values():
        assert stage.data.tags[schema.TAG_PARENT_RUN] == parent.info.run_id
    variants = [by_unit["pass-2/deep-none"][0], by_unit["pass-2/shallow-median"][0]]
    for run in variants:
        assert run.data.tags[schema.TAG_PARENT_RUN] == stages["pass-2"].info.run_id
        assert run.data.tags[schema.TAG_PASS] == "2"
        f1 = [schema.score_metric("val", "f_measure", of) for of in ("macro", *CLASSES)]
        assert {*f1, schema.score_metric("eval", "f_measure", "macro")} <= set(run.data.metrics)
        history = client.get_metric_history(run.info.run_id, schema.TRAIN_LOSS)
        assert [m.step for m in history] == list(range(1, len(history) + 1)) and len(history) >= 1
    assert variants[0].data.tags[schema.TAG_MODEL] == "deep" and variants[1].data.tags[schema.TAG_SMOOTHING] == "median"
    winners = dict(zip(CLASSES, schema.winners_from_params(stages["pass-2"].data.params)))
    assert set(winners.values()) <= {"deep-none", "shallow-median"}
    # Per-pass curves on the parent run: one point per stage index.
    eval_f1 = schema.score_metric("eval", "f_measure", "macro")
    assert [m.step for m in client.get_metric_history(parent.info.run_id, eval_f1)] == [0, 1, 2]
    assert schema.per_pass_metrics({eval_f1: 0.0}, "baseline").keys() <= parent.data.metrics.keys()
    # The parent run names the stages and the variants (in config order) the report reads back.
    assert schema.split_names(parent.data.tags[schema.TAG_STAGES]) == schema.expected_stages(2, True, True)
    assert schema.split_names(parent.data.tags[schema.TAG_VARIANTS]) == ["deep-none", "shallow-median"]


def test_registry_has_every_class_with_aliases(finished_sweep):
    tmp, _, _ = finished_sweep
    client = mlflow_client(tmp)
    for c in CLASSES:
        name = registered_model_name(c)
        champion = client.get_model_version_by_alias(name, schema.CHAMPION_ALIAS)
        assert champion.tags[schema.VERSION_PASS] == "2"
        assert client.get_model_version_by_alias(name, schema.pass_alias(2)).version == champion.version
        assert client.get_model_version_by_alias(name, schema.pass_alias(1)).tags[schema.VERSION_VARIANT] == "deep"
        assert 0 < float(champion.tags[schema.VERSION_THRESHOLD]) < 1


def test_parquet_pseudo_labels(finished_sweep):
    import soundfile as sf

    from kdsed.config import FeatureConfig
    from kdsed.constants import TRAIN_SUBSETS
    from kdsed.data import load_dataset

    tmp, _, final = finished_sweep
    folder = sweep_folder(tmp, final["sweep_id"])
    data = load_dataset(data_root(tmp), subsets=TRAIN_SUBSETS)
    expected = {c.filename: min(240, FeatureConfig().frames_for_samples(sf.info(c.audio_path).frames))
                for s in TRAIN_SUBSETS for c in data.subset(s)}  # the real weak clips include shorter ones
    for k in (1, 2):
        table = pq.read_table(folder / schema.pseudo_labels_file(schema.pass_stage(k)))
        assert table.column_names == ["filename", "frame", *CLASSES]
        meta = json.loads(table.schema.metadata[b"kdsed"])
        assert meta["pass"] == k and set(meta["winners"]) == set(CLASSES)
        frames = table.column("frame").to_numpy()
        assert frames.min() == 0 and frames.max() == 239
        # weak 24 + in-domain 24 + out-of-domain 16 training clips, each with its valid frames (240 for 10 s)
        names, counts = np.unique(table.column("filename").to_numpy().astype(str), return_counts=True)
        assert dict(zip(names, counts.tolist())) == expected and sum(expected.values()) < 64 * 240
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
                    "--tracking-uri", store_uri(tmp)], check=True, cwd=tmp)
    bundle = load_bundle(out)
    assert set(bundle.classes) == set(CLASSES)
    data = load_dataset(data_root(tmp))
    wavs = [str(c.audio_path) for c in data.subset("eval")]
    subprocess.run([sys.executable, "-m", "kdsed.predict", "--models", str(out), *wavs, "--out", str(tmp / "eval.tsv"),
                    "--force"],  # a reused fixture folder (KDSED_REUSE_SWEEP) holds the last run's file
                   check=True, cwd=tmp)
    predicted = read_strong_tsv(tmp / "eval.tsv")
    scores = event_scores(data.reference_table("eval"), {f: predicted.get(f, []) for f in data.reference_table("eval")})
    stage = json.loads((tmp / "storage" / schema.stage_path(final["sweep_id"], "pass-2")).read_text())
    assert scores.to_json()["macro"] == pytest.approx(stage["report"]["eval"]["macro"], abs=1e-9)


def test_figures_logged(finished_sweep):
    import matplotlib.image

    tmp, _, final = finished_sweep
    client = mlflow_client(tmp)
    experiment = client.get_experiment_by_name(schema.MLFLOW_EXPERIMENT)
    runs = {r.data.tags[schema.TAG_UNIT]: r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    wanted = {schema.SWEEP_UNIT: [schema.F1_OVER_PASSES_PNG, schema.WINNER_MATRIX_PNG],
              "pass-2": [schema.example_clip_png(1)], "pass-2/deep-none": [schema.LOSS_CURVES_PNG]}
    for unit, names in wanted.items():
        logged = {Path(a.path).name for a in client.list_artifacts(runs[unit], schema.FIGURES)}
        assert set(names) <= logged, (unit, logged)
        for name in names:
            local = client.download_artifacts(runs[unit], f"{schema.FIGURES}/{name}", str(tmp))
            pixels = matplotlib.image.imread(local)
            assert pixels.shape[0] > 300 and pixels.shape[1] > 600 and pixels[..., :3].std() > 0.05
