"""Every name the outside world reads, in one place: stages, MLflow tags, metric and param names,
registry names and aliases, artifact names and the storage layout.

The writers (the coordinator, `kdsed.sweep.tracking`, the serial runner) and the readers
(`kdsed.report`, the registry, the tests) build names with this module and never retype them.
The default locations and the registry's names are facts of `kdsed.constants`, re-exported here.

Storage layout of one sweep (paths relative to the storage root):

    sweeps/<sweep id>/state.json                  what has finished (resume)
    sweeps/<sweep id>/units/<unit folder>/         model.pt, outputs.npz, summary.json, attempts/
    sweeps/<sweep id>/stages/<stage>.json          a finished stage's report, choice and winners
    sweeps/<sweep id>/pseudo_labels/<stage>.parquet
    sweeps/<sweep id>/scores/<stage>/<subset>.parquet   a stage's raw frame scores on test and eval
    ray/<sweep id>-<unit folder>/                  Ray Train's run folders
    tune/<sweep id>-<stage>/                       Ray Tune's

The serial runner writes `config.yaml`, `results.json`, `results.md`, `checkpoints/<unit>/`,
`pseudo_labels/<stage>.parquet` and `scores/<stage>/<subset>.parquet` under its output folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from kdsed.constants import (  # noqa: F401 (the registry's names and default locations are re-exported)
    CHAMPION_ALIAS,
    CLASSES,
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    DEFAULT_WORKDIR,
    MLFLOW_EXPERIMENT,
    REGISTERED_MODEL_PREFIX,
    SQLITE_URI_PREFIX,
)

# ---- stages and units ----------------------------------------------------------------------------

BASELINE = "baseline"  # the official DCASE 2018 baseline's first stage alone (its CRNN on the weak clips)
BASELINE_TWO_STAGE = "baseline-2stage"  # the whole official recipe: stage 2 trained on stage 1's tags
TAGGING = "tagging"
TOPLINE = "topline"  # the models trained on the hidden true strong labels (synthetic data only)
_PASS = "pass-"
#: The variants of the topline stage (the deep and shallow models; per class the better one, as in a pass).
TOPLINE_VARIANTS = ("deep", "shallow")
#: The variant name of the one unit of pass 1 (the deep model on weak + pseudo-weak labels).
FIRST_PASS_VARIANT = "deep"


def pass_stage(k: int) -> str:
    """The stage name of pass `k`: "pass-2" (also its alias in the registry)."""
    return f"{_PASS}{k}"


def pass_index(stage: str) -> int | None:
    """k for "pass-k", None for the stages before pass 1."""
    return int(stage.removeprefix(_PASS)) if stage.startswith(_PASS) else None


def stage_order(stage: str) -> int:
    """Sort key of a stage in tables: baseline, two-stage baseline, tagging, pass-1, pass-2, ..., topline."""
    k = pass_index(stage)
    return k if k is not None else {BASELINE: -3, BASELINE_TWO_STAGE: -2, TAGGING: -1, TOPLINE: 10**5}.get(stage, 10**6)


def stage_index(stage: str) -> int:
    """The step of a stage in per-pass curves and pseudo-label metadata: 0 before pass 1, else k."""
    return pass_index(stage) or 0


def expected_stages(passes: int, run_baseline: bool, run_topline: bool = False) -> list[str]:
    """Every stage of a sweep with `passes` passes, in table order."""
    stages = [*([BASELINE, BASELINE_TWO_STAGE] if run_baseline else []), TAGGING,
              *(pass_stage(k) for k in range(1, passes + 1)), *([TOPLINE] if run_topline else [])]
    return sorted(stages, key=stage_order)


def stage_title(stage: str) -> str:
    """A stage as results tables and `StageReport.stage` show it: "pass-2" -> "pass 2"."""
    return stage.replace("-", " ")


def stage_id(title: str) -> str:
    """The inverse of `stage_title`: "pass 2" -> "pass-2"."""
    return title.replace(" ", "-")


def unit_name(stage: str, variant: str | None = None) -> str:
    """A unit's name: the stage for a one-model stage before pass 1, else "<stage>/<variant>"."""
    return stage if variant is None else f"{stage}/{variant}"


def unit_stage(unit: str) -> str:
    return unit.split("/")[0]


def unit_variant(unit: str) -> str:
    return unit.split("/")[-1]


def unit_folder_name(unit: str) -> str:
    """A unit's folder name in storage and in Ray's run names: "pass-2/deep-none" -> "pass-2__deep-none"."""
    return unit.replace("/", "__")


# ---- MLflow: tags ----------------------------------------------------------------------------------

TAG_SWEEP_ID = "kdsed.sweep_id"
TAG_UNIT = "kdsed.unit"
TAG_STAGE = "kdsed.stage"
TAG_PASS = "kdsed.pass"
TAG_VARIANT = "kdsed.variant"
TAG_MODEL = "kdsed.model"
TAG_SMOOTHING = "kdsed.smoothing"
#: On the parent run: the variant names of passes >= 2 in config order, and every stage the sweep will run.
TAG_VARIANTS = "kdsed.variants"
TAG_STAGES = "kdsed.stages"
TAG_PARENT_RUN = "mlflow.parentRunId"
#: The `kdsed.unit` and `kdsed.stage` tags of a sweep's parent run.
SWEEP_UNIT = "sweep"
#: MLflow 3's UI opens an experiment in its GenAI view unless the experiment says it is model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
_LIST_SEPARATOR = ","


def join_names(names: Sequence[str]) -> str:
    """A list of stage or variant names as one tag value."""
    return _LIST_SEPARATOR.join(names)


def split_names(value: str | None) -> list[str]:
    """Inverse of `join_names` (empty for a missing tag)."""
    return value.split(_LIST_SEPARATOR) if value else []


def tag_filter(**tags: str) -> str:
    """An MLflow search filter matching every tag, e.g. `tag_filter(**{TAG_UNIT: "sweep"})`."""
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


def sweep_run_name(sweep_id: str) -> str:
    return f"{SWEEP_UNIT}-{sweep_id}"


def variant_smoothing(variant: str) -> str:
    """The smoothing of the pseudo-labels a variant trained on ("deep-median" -> "median"; "deep" -> "none")."""
    return variant.split("-", 1)[1] if "-" in variant else "none"


# ---- MLflow: metrics -------------------------------------------------------------------------------

#: Score prefixes: post-processing chosen on `val` (the test subset), scored on `eval`; pseudo-labels.
VAL, EVAL, PSEUDO = "val", "eval", "pseudo"
#: (`EventScores.to_json` key, metric word): `val_f1_macro`, `eval_precision_Dog`, ...
_STATS = (("f_measure", "f1"), ("precision", "precision"), ("recall", "recall"))
_AVERAGES = ("macro", "micro")
#: The bootstrap interval of the macro F1 in a scores dict (`{"f_measure": [low, high], "level": ...}`),
#: logged as `{prefix}_f1_macro_ci_low` / `_ci_high`.
MACRO_INTERVAL = "macro_interval"
#: The paired comparisons a stage's report carries (`StageReport.comparisons`): its eval macro F1 minus another's,
#: and for a pass the macro F1 of its pseudo-labels (against the hidden labels of the training clips) minus the
#: previous pass's.
WINNERS_VS_BEST_SINGLE = "winners_vs_best_single"
VS_PREVIOUS = "vs_previous"
VS_BASELINE = "vs_baseline"
VS_TOPLINE = "vs_topline"
PSEUDO_VS_PREVIOUS = "pseudo_vs_previous"
COMPARISONS = (WINNERS_VS_BEST_SINGLE, VS_PREVIOUS, VS_BASELINE, VS_TOPLINE, PSEUDO_VS_PREVIOUS)
KD_TOPLINE_RATIO = "kd_topline_ratio"
_CI_BOUNDS = ("ci_low", "ci_high")
WALL_TIME = "wall_time_s"
BEST_EPOCH = "best_epoch"
TRAIN_CLIPS_PER_S = "train_clips_per_s"
TRAIN_TIME = "train_time_s"
#: Per-epoch curves of a unit (steps 1..n), logged while it trains.
TRAIN_LOSS, VAL_LOSS = "train_loss", "val_loss"
EPOCH_CLIPS_PER_S = "epoch_clips_per_s"
#: The baseline's points on the parent run's per-pass curves are kept apart from tagging's (both step 0).


def score_metric(prefix: str, stat: str, of: str) -> str:
    """One score's metric name: `score_metric("eval", "f_measure", "Dog")` -> "eval_f1_Dog"."""
    return f"{prefix}_{dict(_STATS)[stat]}_{of}"


def score_metrics(prefix: str, scores: Any) -> dict[str, float]:
    """`{prefix}_f1_macro`, `{prefix}_precision_micro`, ..., `{prefix}_f1_<Class>` of event scores (None left out)."""
    js = scores.to_json() if hasattr(scores, "to_json") else scores
    out = {}
    for stat, _ in _STATS:
        for of in (*_AVERAGES, *CLASSES):
            value = js["class_wise"][of][stat] if of in CLASSES else js[of][stat]
            if value is not None:
                out[score_metric(prefix, stat, of)] = float(value)
    interval = js.get(MACRO_INTERVAL)
    if interval is not None:
        for bound, value in zip(_CI_BOUNDS, interval["f_measure"]):
            if value is not None:
                out[f"{score_metric(prefix, 'f_measure', 'macro')}_{bound}"] = float(value)
    return out


def comparison_metric(name: str, bound: str = "") -> str:
    """`eval_f1_macro_diff_vs_previous`, `..._ci_low`, `..._ci_high`, `..._share_better` (the share of resamples in
    which the stage is better): a paired comparison of the eval macro F1; `pseudo_f1_macro_diff_vs_previous`, ...
    for the pseudo-labels'."""
    prefix, name = (PSEUDO, VS_PREVIOUS) if name == PSEUDO_VS_PREVIOUS else (EVAL, name)
    return f"{score_metric(prefix, 'f_measure', 'macro')}_diff_{name}" + (f"_{bound}" if bound else "")


_DIFF_KEYS = (("point", ""), ("low", _CI_BOUNDS[0]), ("high", _CI_BOUNDS[1]), ("share_a_better", "share_better"))


def comparison_metrics(comparisons: Mapping[str, Mapping[str, Any]], kd_topline_ratio: float | None) -> dict[str, float]:
    """A stage's paired comparisons (`StageReport.comparisons`) and `kd_topline_ratio` as MLflow metrics."""
    out = {comparison_metric(name, bound): float(c[key]) for name, c in comparisons.items()
           for key, bound in _DIFF_KEYS if c.get(key) is not None}
    if kd_topline_ratio is not None:
        out[KD_TOPLINE_RATIO] = float(kd_topline_ratio)
    return out


def comparisons_from_metrics(metrics: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """The inverse of `comparison_metrics` for the comparisons (their `against` left for the reader to fill)."""
    return {name: {key: metrics.get(comparison_metric(name, bound)) for key, bound in _DIFF_KEYS}
            for name in COMPARISONS if comparison_metric(name) in metrics}


def scores_from_metrics(metrics: Mapping[str, float], prefix: str) -> dict[str, Any]:
    """Event scores in `EventScores.to_json` form from `{prefix}_f1_macro`, ... (the inverse of `score_metrics`)."""
    def fpr(of: str) -> dict[str, float | None]:
        return {stat: metrics.get(score_metric(prefix, stat, of)) for stat, _ in _STATS}

    scores = {**{a: fpr(a) for a in _AVERAGES}, "class_wise": {c: fpr(c) for c in CLASSES}}
    bounds = [metrics.get(f"{score_metric(prefix, 'f_measure', 'macro')}_{b}") for b in _CI_BOUNDS]
    if any(b is not None for b in bounds):
        scores[MACRO_INTERVAL] = {"f_measure": bounds}
    return scores


#: The DESED metrics of a stage's merged outputs (`kdsed.metrics.psds.DetectionScores.to_json`):
#: `eval_psds1`, `eval_psds2_Dog`, `eval_intersection_f1_macro`, `eval_collar_precision_Cat`, ...
PSDS_SCENARIOS = ("psds1", "psds2")
_DETECTION_F1 = (("intersection_f1", "intersection"), ("collar_f1", "collar"))


def detection_metrics(prefix: str, detection: Mapping[str, Any] | None) -> dict[str, float]:
    """`{prefix}_psds1`, `{prefix}_psds1_<Class>`, `{prefix}_intersection_f1_macro`, ... (None left out)."""
    if not detection:
        return {}
    out = {}
    for scenario in PSDS_SCENARIOS:
        values = {"": detection[scenario]["value"],
                  **{f"_{c}": v for c, v in detection[scenario]["class_wise"].items()}}
        out.update({f"{prefix}_{scenario}{of}": float(v) for of, v in values.items() if v is not None})
    for key, word in _DETECTION_F1:
        out.update({k.replace(f"{prefix}_", f"{prefix}_{word}_", 1): v
                    for k, v in score_metrics(prefix, detection[key]).items()})
    return out


def detection_from_metrics(metrics: Mapping[str, float], prefix: str) -> dict[str, Any] | None:
    """The inverse of `detection_metrics` (None when the run logged no PSDS)."""
    if f"{prefix}_{PSDS_SCENARIOS[0]}" not in metrics:
        return None
    out: dict[str, Any] = {s: {"value": metrics.get(f"{prefix}_{s}"),
                               "class_wise": {c: metrics.get(f"{prefix}_{s}_{c}") for c in CLASSES}}
                           for s in PSDS_SCENARIOS}
    for key, word in _DETECTION_F1:
        out[key] = scores_from_metrics({k.replace(f"{prefix}_{word}_", f"{prefix}_", 1): v for k, v in metrics.items()
                                        if k.startswith(f"{prefix}_{word}_")}, prefix)
    return out


def has_scores(metrics: Mapping[str, float], prefix: str) -> bool:
    return any(k.startswith(f"{prefix}_") for k in metrics)


def per_pass_metrics(metrics: Mapping[str, float], stage: str) -> dict[str, float]:
    """A stage's points on the parent run's per-pass curves: averages and per-class F1 on val and eval."""
    wanted = {score_metric(p, stat, a) for p in (VAL, EVAL) for stat, _ in _STATS for a in _AVERAGES}
    wanted |= {score_metric(p, "f_measure", c) for p in (VAL, EVAL) for c in CLASSES}
    wanted |= {f"{EVAL}_{s}" for s in PSDS_SCENARIOS}
    points = {k: v for k, v in metrics.items() if k in wanted}
    if stage == TAGGING or pass_index(stage) is not None:
        return points
    # The stages beside the method (baselines, topline) have curves of their own: "baseline_eval_f1_macro".
    return {f"{stage.replace('-', '_')}_{k}": v for k, v in points.items()}


def timing_metric(part: str) -> str:
    """The parent run's time spent on one part of the sweep: "time_training_s"."""
    return f"time_{part}_s"


# ---- MLflow: params --------------------------------------------------------------------------------

MODEL_PARAMS, TRAIN_PARAMS = "model.", "train."


def winner_param(class_name: str) -> str:
    return f"winner_{class_name}"


def window_param(class_name: str) -> str:
    return f"pp_window_{class_name}"


def threshold_param(class_name: str) -> str:
    return f"pp_threshold_{class_name}"


def choice_params(choice: Any) -> dict[str, str]:
    """A `PostprocessChoice`'s per-class median window and threshold as params."""
    out = {}
    for c, name in enumerate(CLASSES):
        out[window_param(name)] = str(choice.median_windows[c])
        out[threshold_param(name)] = str(choice.thresholds[c])
    return out


def winner_params(winners: Sequence[str] | None) -> dict[str, str]:
    return {winner_param(c): w for c, w in zip(CLASSES, winners)} if winners else {}


def winners_from_params(params: Mapping[str, str]) -> list[str] | None:
    """Inverse of `winner_params` (None unless every class has a winner)."""
    names = [winner_param(c) for c in CLASSES]
    return [params[n] for n in names] if all(n in params for n in names) else None


# ---- MLflow: artifacts and registry ----------------------------------------------------------------

CONFIG_FILE = "config.yaml"
RESULTS_MD, RESULTS_JSON = "results.md", "results.json"
POSTPROCESSING_FILE = "postprocessing.json"
FIGURES = "figures"
#: Figures (under `figures/`): per unit, per stage (the first few validation clips) and on the parent run.
LOSS_CURVES_PNG, F1_OVER_PASSES_PNG, WINNER_MATRIX_PNG = "loss_curves.png", "val_f1_over_passes.png", "winner_matrix.png"
PSEUDO_LABELS = "pseudo_labels"
_WINNERS = "winners"
#: Tags of a registered model version (a class's winner in one pass), also keys of its bundle's provenance.
VERSION_PASS, VERSION_VARIANT, VERSION_SWEEP_ID = "pass", "variant", "sweep_id"
VERSION_WINDOW, VERSION_THRESHOLD, VERSION_VAL_F1 = "window", "threshold", "val_f1"


#: Lineage: a pass's pseudo-labels as an MLflow dataset (`pseudo_labels/pass-2`), logged as a "training" input of
#: every unit (and pass run) that trains on them and as the "output" of the pass run that wrote them, whose
#: dataset tags `kdsed.winner.<Class>` name the registry version of each class's winner ("kdsed-Dog/3").
DATASET_CONTEXT_TAG = "mlflow.data.context"
CONTEXT_TRAINING, CONTEXT_OUTPUT = "training", "output"
#: Hex characters of the SHA-256 of a pseudo-label file kept as its dataset digest.
DATASET_DIGEST_CHARS = 16


def pseudo_label_dataset_name(stage: str) -> str:
    return f"{PSEUDO_LABELS}/{stage}"


def winner_version_tag(class_name: str) -> str:
    """The dataset tag naming the registry version of a class's winner: "kdsed.winner.Dog"."""
    return f"kdsed.winner.{class_name}"


def example_clip_png(k: int) -> str:
    """The figure of the `k`-th example validation clip of a stage (from 1)."""
    return f"clip_{k}.png"


def winner_artifact(class_name: str) -> str:
    """Where a pass run keeps a class's winner bundle: "winners/Dog"."""
    return f"{_WINNERS}/{class_name}"


def pass_alias(k: int) -> str:
    """The registry alias of the winners of pass `k` (the same word as the stage)."""
    return pass_stage(k)


# ---- storage layout --------------------------------------------------------------------------------

SWEEPS = "sweeps"
STATE_FILE = "state.json"
RAY_RUNS, TUNE_RUNS = "ray", "tune"
CHECKPOINTS = "checkpoints"
#: Where `python -m kdsed.experiment` writes by default.
DEFAULT_EXPERIMENT_OUT = f"{DEFAULT_WORKDIR}/experiment"


#: A unit's files: weights (`kdsed.train.save_checkpoint`), outputs, summary, one record per worker start.
CHECKPOINT_FILE = "model.pt"
UNIT_OUTPUTS, UNIT_SUMMARY, UNIT_ATTEMPTS = "outputs.npz", "summary.json", "attempts"


def sweep_folder(sweep_id: str) -> str:
    return f"{SWEEPS}/{sweep_id}"


def state_path(sweep_id: str) -> str:
    return f"{sweep_folder(sweep_id)}/{STATE_FILE}"


def unit_folder(sweep_id: str, unit: str) -> str:
    return f"{sweep_folder(sweep_id)}/units/{unit_folder_name(unit)}"


#: A sweep's finished stages, one `<stage>.json` each (report, post-processing choice, winners, eval counts).
STAGES_FOLDER = "stages"


def stage_path(sweep_id: str, stage: str) -> str:
    return f"{sweep_folder(sweep_id)}/{STAGES_FOLDER}/{stage}.json"


def pseudo_labels_file(stage: str) -> str:
    """A pass's pseudo-label file, relative to a sweep's folder or to the serial runner's output."""
    return f"{PSEUDO_LABELS}/{stage}.parquet"


def pseudo_labels_path(sweep_id: str, stage: str) -> str:
    return f"{sweep_folder(sweep_id)}/{pseudo_labels_file(stage)}"


#: A stage's raw frame scores (`kdsed.scores_io`), also the artifact folder of its stage run.
SCORES = "scores"
#: The scores file `python -m kdsed.predict --scores DIR` writes in DIR.
PREDICT_SCORES_FILE = "scores.parquet"


def scores_file(subset: str) -> str:
    """A stage's scores of one subset, relative to its scores folder: "eval.parquet"."""
    return f"{subset}.parquet"


def stage_scores_folder(stage: str) -> str:
    """A stage's scores folder, relative to a sweep's folder or to the serial runner's output: "scores/pass-2"."""
    return f"{SCORES}/{stage}"


def scores_path(sweep_id: str, stage: str, subset: str) -> str:
    return f"{sweep_folder(sweep_id)}/{stage_scores_folder(stage)}/{scores_file(subset)}"


def ray_run_name(sweep_id: str, what: str) -> str:
    """A Ray Train or Tune run name: the sweep id first, so runs of concurrent sweeps stay apart."""
    return f"{sweep_id}-{what}"


# ---- tracking URIs ---------------------------------------------------------------------------------


#: A local SQLite store keeps its artifacts in this folder beside the database file.
SQLITE_ARTIFACTS = "mlartifacts"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store (`sqlite:///FILE`), else None."""
    return Path(uri.removeprefix(SQLITE_URI_PREFIX)) if uri.startswith(SQLITE_URI_PREFIX) else None


def sqlite_uri(path: Path | str) -> str:
    """The tracking URI of a SQLite store at `path`."""
    return f"{SQLITE_URI_PREFIX}{path}"

