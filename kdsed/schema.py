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
    ray/<sweep id>-<unit folder>/                  Ray Train's run folders
    tune/<sweep id>-<stage>/                       Ray Tune's

The serial runner writes `config.yaml`, `results.json`, `results.md`, `checkpoints/<unit>/` and
`pseudo_labels/<stage>.parquet` under its output folder.
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

BASELINE = "baseline"
TAGGING = "tagging"
_PASS = "pass-"
#: The variant name of the one unit of pass 1 (the deep model on weak + pseudo-weak labels).
FIRST_PASS_VARIANT = "deep"


def pass_stage(k: int) -> str:
    """The stage name of pass `k`: "pass-2" (also its alias in the registry)."""
    return f"{_PASS}{k}"


def pass_index(stage: str) -> int | None:
    """k for "pass-k", None for the stages before pass 1."""
    return int(stage.removeprefix(_PASS)) if stage.startswith(_PASS) else None


def stage_order(stage: str) -> int:
    """Sort key of a stage: baseline, tagging, pass-1, pass-2, ..."""
    k = pass_index(stage)
    return k if k is not None else {BASELINE: -2, TAGGING: -1}.get(stage, 10**6)


def stage_index(stage: str) -> int:
    """The step of a stage in per-pass curves and pseudo-label metadata: 0 before pass 1, else k."""
    return pass_index(stage) or 0


def expected_stages(passes: int, run_baseline: bool) -> list[str]:
    """Every stage of a sweep with `passes` passes, in order."""
    return [*([BASELINE] if run_baseline else []), TAGGING, *(pass_stage(k) for k in range(1, passes + 1))]


def stage_title(stage: str) -> str:
    """A stage as results tables and `StageReport.stage` show it: "pass-2" -> "pass 2"."""
    return stage.replace("-", " ")


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
_CI_BOUNDS = ("ci_low", "ci_high")
WALL_TIME = "wall_time_s"
BEST_EPOCH = "best_epoch"
TRAIN_CLIPS_PER_S = "train_clips_per_s"
TRAIN_TIME = "train_time_s"
#: Per-epoch curves of a unit (steps 1..n), logged while it trains.
TRAIN_LOSS, VAL_LOSS = "train_loss", "val_loss"
EPOCH_CLIPS_PER_S = "epoch_clips_per_s"
#: The baseline's points on the parent run's per-pass curves are kept apart from tagging's (both step 0).
_BASELINE_PREFIX = f"{BASELINE}_"


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


def scores_from_metrics(metrics: Mapping[str, float], prefix: str) -> dict[str, Any]:
    """Event scores in `EventScores.to_json` form from `{prefix}_f1_macro`, ... (the inverse of `score_metrics`)."""
    def fpr(of: str) -> dict[str, float | None]:
        return {stat: metrics.get(score_metric(prefix, stat, of)) for stat, _ in _STATS}

    scores = {**{a: fpr(a) for a in _AVERAGES}, "class_wise": {c: fpr(c) for c in CLASSES}}
    bounds = [metrics.get(f"{score_metric(prefix, 'f_measure', 'macro')}_{b}") for b in _CI_BOUNDS]
    if any(b is not None for b in bounds):
        scores[MACRO_INTERVAL] = {"f_measure": bounds}
    return scores


def has_scores(metrics: Mapping[str, float], prefix: str) -> bool:
    return any(k.startswith(f"{prefix}_") for k in metrics)


def per_pass_metrics(metrics: Mapping[str, float], stage: str) -> dict[str, float]:
    """A stage's points on the parent run's per-pass curves: averages and per-class F1 on val and eval."""
    wanted = {score_metric(p, stat, a) for p in (VAL, EVAL) for stat, _ in _STATS for a in _AVERAGES}
    wanted |= {score_metric(p, "f_measure", c) for p in (VAL, EVAL) for c in CLASSES}
    points = {k: v for k, v in metrics.items() if k in wanted}
    return {f"{_BASELINE_PREFIX}{k}": v for k, v in points.items()} if stage == BASELINE else points


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


def stage_path(sweep_id: str, stage: str) -> str:
    return f"{sweep_folder(sweep_id)}/stages/{stage}.json"


def pseudo_labels_file(stage: str) -> str:
    """A pass's pseudo-label file, relative to a sweep's folder or to the serial runner's output."""
    return f"{PSEUDO_LABELS}/{stage}.parquet"


def pseudo_labels_path(sweep_id: str, stage: str) -> str:
    return f"{sweep_folder(sweep_id)}/{pseudo_labels_file(stage)}"


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

