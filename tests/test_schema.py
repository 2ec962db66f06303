"""The names the outside world reads (`kdsed.schema`): written down here once more, on purpose.

Everything else (code and tests) builds these names with the schema; this file pins what users,
scripts and dashboards see, so that renaming one is a decision and not an accident.
"""

from __future__ import annotations

import math

import pytest
from pathlib import Path

from kdsed import schema
from kdsed.constants import CLASSES
from kdsed.search import PostprocessChoice


def test_stage_and_unit_names():
    assert schema.expected_stages(3, True) == ["baseline", "baseline-2stage", "tagging", "pass-1", "pass-2", "pass-3"]
    assert schema.expected_stages(1, False) == ["tagging", "pass-1"]
    assert schema.expected_stages(2, True, True) == ["baseline", "baseline-2stage", "tagging", "pass-1", "pass-2",
                                                     "topline"]
    assert [schema.pass_index(s) for s in ("pass-12", "tagging", "baseline")] == [12, None, None]
    assert [schema.stage_index(s) for s in ("baseline", "tagging", "pass-2")] == [0, 0, 2]
    assert sorted(["pass-10", "pass-2", "tagging", "baseline"], key=schema.stage_order) == \
        ["baseline", "tagging", "pass-2", "pass-10"]
    assert schema.stage_title("pass-2") == "pass 2" and schema.stage_title("tagging") == "tagging"
    assert schema.unit_name("tagging") == "tagging" and schema.unit_name("pass-2", "deep-none") == "pass-2/deep-none"
    assert schema.unit_folder_name("pass-2/deep-none") == "pass-2__deep-none"
    assert [schema.variant_smoothing(v) for v in ("deep", "deep-median+gaussian")] == ["none", "median+gaussian"]


def test_mlflow_tags_and_filters():
    assert (schema.TAG_SWEEP_ID, schema.TAG_UNIT, schema.TAG_STAGE, schema.TAG_PASS, schema.TAG_VARIANT,
            schema.TAG_MODEL, schema.TAG_SMOOTHING, schema.TAG_VARIANTS, schema.TAG_STAGES) == (
        "kdsed.sweep_id", "kdsed.unit", "kdsed.stage", "kdsed.pass", "kdsed.variant", "kdsed.model",
        "kdsed.smoothing", "kdsed.variants", "kdsed.stages")
    assert schema.TAG_PARENT_RUN == "mlflow.parentRunId" and schema.SWEEP_UNIT == "sweep"
    assert schema.sweep_run_name("x1") == "sweep-x1"
    assert schema.tag_filter(**{schema.TAG_SWEEP_ID: "s", schema.TAG_UNIT: "pass-1/deep"}) == \
        "tags.`kdsed.sweep_id` = 's' and tags.`kdsed.unit` = 'pass-1/deep'"
    assert schema.split_names(schema.join_names(["deep-none", "shallow-median+gaussian"])) == \
        ["deep-none", "shallow-median+gaussian"]
    assert schema.split_names(None) == []


def test_metric_names():
    scores = {"macro": {"f_measure": 0.5, "precision": None, "recall": 0.25},
              "micro": {"f_measure": 0.4, "precision": 0.3, "recall": 0.2},
              "class_wise": {c: {"f_measure": k / 10, "precision": None, "recall": 1.0} for k, c in enumerate(CLASSES)}}
    metrics = schema.score_metrics("val", scores)
    assert metrics["val_f1_macro"] == 0.5 and metrics["val_recall_macro"] == 0.25 and "val_precision_macro" not in metrics
    assert metrics["val_precision_micro"] == 0.3 and metrics["val_f1_Dog"] == 0.4 and metrics["val_recall_Cat"] == 1.0
    assert len(metrics) == 2 + 3 + 2 * len(CLASSES)
    assert schema.scores_from_metrics(metrics, "val") == scores  # the report reads what the sweep wrote
    assert schema.has_scores(metrics, "val") and not schema.has_scores(metrics, "pseudo")
    assert schema.score_metric("eval", "f_measure", "Speech") == "eval_f1_Speech"
    parent = schema.per_pass_metrics({**metrics, "wall_time_s": 3.0, "pseudo_f1_macro": 0.1}, "baseline")
    # averages and per-class F1, not per-class precision or recall, nor the wall time or pseudo-label scores
    assert parent == {f"baseline_{k}": v for k, v in metrics.items()
                      if k.endswith(("_macro", "_micro")) or k.startswith("val_f1_")}
    assert len(parent) == 5 + len(CLASSES) and schema.per_pass_metrics(metrics, "pass-1").keys() == \
        {k.removeprefix("baseline_") for k in parent}
    assert schema.timing_metric("training") == "time_training_s"
    assert (schema.WALL_TIME, schema.BEST_EPOCH, schema.TRAIN_LOSS, schema.VAL_LOSS) == (
        "wall_time_s", "best_epoch", "train_loss", "val_loss")


def test_param_names_round_trip():
    choice = PostprocessChoice(tuple(range(1, 20, 2)), (0.0,) * 10, (0.5,) * 10, (math.nan,) * 10)
    params = schema.choice_params(choice)
    assert params["pp_window_Alarm_bell_ringing"] == "1" and params["pp_threshold_Vacuum_cleaner"] == "0.5"
    winners = [f"v{k}" for k in range(len(CLASSES))]
    assert schema.winner_params(winners)["winner_Dog"] == "v4"
    assert schema.winners_from_params(schema.winner_params(winners)) == winners
    assert schema.winners_from_params({"winner_Dog": "x"}) is None and schema.winner_params(None) == {}


def test_registry_artifacts_and_storage_layout():
    assert (schema.REGISTERED_MODEL_PREFIX, schema.CHAMPION_ALIAS, schema.pass_alias(3)) == ("kdsed-", "champion",
                                                                                            "pass-3")
    assert schema.winner_artifact("Dog") == "winners/Dog" and schema.example_clip_png(2) == "clip_2.png"
    assert (schema.CONFIG_FILE, schema.RESULTS_MD, schema.RESULTS_JSON, schema.FIGURES, schema.PSEUDO_LABELS) == (
        "config.yaml", "results.md", "results.json", "figures", "pseudo_labels")
    assert schema.state_path("s") == "sweeps/s/state.json"
    assert schema.unit_folder("s", "pass-2/deep-none") == "sweeps/s/units/pass-2__deep-none"
    assert schema.stage_path("s", "pass-2") == "sweeps/s/stages/pass-2.json"
    assert schema.pseudo_labels_path("s", "pass-2") == "sweeps/s/pseudo_labels/pass-2.parquet"
    assert schema.ray_run_name("s", "tagging") == "s-tagging"
    assert (schema.CHECKPOINT_FILE, schema.UNIT_OUTPUTS, schema.UNIT_SUMMARY) == ("model.pt", "outputs.npz",
                                                                                  "summary.json")


def test_default_locations_and_sqlite_uris():
    assert (schema.DEFAULT_WORKDIR, schema.DEFAULT_STORAGE, schema.DEFAULT_EXPERIMENT_OUT) == (
        "kdsed_runs", "kdsed_runs/storage", "kdsed_runs/experiment")
    assert schema.DEFAULT_TRACKING_URI == "sqlite:///kdsed_runs/mlflow.db" and schema.MLFLOW_EXPERIMENT == "kdsed"
    assert schema.sqlite_path(schema.DEFAULT_TRACKING_URI) == Path("kdsed_runs/mlflow.db")
    assert schema.sqlite_path("sqlite:////abs/m.db") == Path("/abs/m.db")
    assert schema.sqlite_path("http://head:5000") is None and schema.sqlite_path("file:/x") is None
    assert schema.sqlite_uri(Path("/tmp/a/mlflow.db")) == "sqlite:////tmp/a/mlflow.db"


def test_comparison_metrics_round_trip():
    comparisons = {schema.VS_PREVIOUS: {"against": "pass 1", "point": -0.01, "low": -0.03, "high": 0.01,
                                        "share_a_better": 0.2},
                   schema.VS_TOPLINE: {"against": "topline", "point": -0.1, "low": -0.2, "high": -0.05,
                                       "share_a_better": None}}
    metrics = schema.comparison_metrics(comparisons, 0.75)
    assert metrics["eval_f1_macro_diff_vs_previous_ci_low"] == -0.03
    assert metrics["eval_f1_macro_diff_vs_previous_share_better"] == 0.2
    assert metrics[schema.KD_TOPLINE_RATIO] == 0.75 and "eval_f1_macro_diff_vs_topline_share_better" not in metrics
    back = schema.comparisons_from_metrics(metrics)
    assert back == {name: {k: v for k, v in c.items() if k != "against"} for name, c in comparisons.items()}


def test_detection_metrics_names_and_their_inverse():
    from kdsed.metrics import EventScores

    counts = EventScores.from_counts([2] * 10, [1] * 10, [3] * 10).to_json()
    detection = {"psds1": {"value": 0.31, "class_wise": {**dict.fromkeys(schema.CLASSES), "Dog": 0.2}},
                 "psds2": {"value": 0.52, "class_wise": dict.fromkeys(schema.CLASSES)},
                 "intersection_f1": counts, "collar_f1": counts}
    metrics = schema.detection_metrics(schema.EVAL, detection)
    assert metrics["eval_psds1"] == 0.31 and metrics["eval_psds1_Dog"] == 0.2 and "eval_psds1_Cat" not in metrics
    assert metrics["eval_intersection_f1_macro"] == metrics["eval_collar_f1_macro"] == pytest.approx(0.5)  # P 2/3, R 2/5
    assert metrics["eval_collar_precision_Cat"] == pytest.approx(2 / 3) and "eval_f1_macro" not in metrics
    back = schema.detection_from_metrics({**metrics, "eval_f1_macro": 0.9}, schema.EVAL)
    assert back["psds1"] == detection["psds1"] and back["psds2"]["value"] == 0.52
    assert back["collar_f1"]["macro"] == counts["macro"] and back["intersection_f1"]["class_wise"]["Dog"] == {
        k: v for k, v in counts["class_wise"]["Dog"].items() if k not in ("n_ref", "n_sys")}
    assert schema.detection_from_metrics({"eval_f1_macro": 0.9}, schema.EVAL) is None
    assert "eval_psds1" in schema.per_pass_metrics(metrics, "pass-2")
