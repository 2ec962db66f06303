"""Rebuild a sweep's results from MLflow alone: `python -m kdsed.report [--run-id ID | --latest] [--out report.md]`.

Reads the sweep's parent run, its stage runs and their variant runs (metrics, params and tags;
nothing from the sweep storage; every name through `kdsed.schema`) and prints the results table
(`kdsed.results.format_table`, the same table the sweep logged as `results.md`), the per-class winners of every pass and the
validation macro F1 of every stage. With `--out`, the Markdown is also written there and the
figures of the sweep and of its stages are downloaded into `<stem>_figures/` beside it.

Exit status: 0 when a report was printed; a sweep that has not finished (killed, or still
running) is reported as far as MLflow has it and marked UNFINISHED, also with 0, because what it
shows is valid. 2, with one line on stderr, when there is no MLflow store, no sweep in it, no run
with that id, or the run is not a sweep's parent run.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kdsed.atomic import replace_dir_atomic, write_text_atomic
from kdsed import schema
from kdsed.constants import CLASSES, DEFAULT_TRACKING_URI, MLFLOW_EXPERIMENT
from kdsed.failures import EXIT_RUNTIME_FAILURE, os_error_line
from kdsed.report_outputs import REPORT_TITLE, check_report_outputs, figures_folder, mark_figures, store_problem
from kdsed.results import StageReport, detection_table, percent, results_markdown, short_class_name, stage_label
from kdsed.safety import OutputError
from kdsed.stores import disable_mlflow_telemetry


class ReportError(Exception):
    """The report cannot be made; the message is the one line the CLI prints."""


@dataclass
class Winner:
    """The variant that won one class in one pass, and its validation F1 on that class."""

    variant: str
    val_f1: float | None


@dataclass
class SweepReport:
    """A sweep as MLflow has it: its stages rebuilt as `StageReport`s, winners per pass, figures."""

    sweep_id: str
    parent_run_id: str
    status: str
    stages: list[StageReport]
    winners: dict[str, dict[str, Winner]]  # stage ("pass 2") -> class -> winner
    in_progress: list[str] = field(default_factory=list)  # stage runs not finished
    missing: list[str] = field(default_factory=list)  # stages the config asks for that have no run yet
    wall_time_s: float | None = None
    figure_runs: dict[str, str] = field(default_factory=dict)  # "sweep" / stage -> run id

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED" and not self.in_progress and not self.missing


def open_store(tracking_uri: str):
    """An MlflowClient on `tracking_uri`; a local SQLite store must exist (MLflow would create an empty one)."""
    from mlflow import MlflowClient

    path = schema.sqlite_path(tracking_uri)
    if path is not None:
        if not path.is_file():
            raise ReportError(f"no MLflow store at {path} (run `python -m kdsed.sweep` first, or pass --tracking-uri)")
    if store_problem(tracking_uri):  # another program's SQLite file, a plain path: MLflow would write or fail
        raise ReportError(store_problem(tracking_uri))
    return MlflowClient(tracking_uri)


def find_parent_run(client, tracking_uri: str, *, run_id: str | None = None, experiment: str = MLFLOW_EXPERIMENT):
    """The sweep's parent run: the one named by `run_id`, else the latest sweep of `experiment` by start time."""
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise ReportError(f"no run {run_id} in {tracking_uri}") from None
        tags = run.data.tags
        if tags.get(schema.TAG_UNIT) != schema.SWEEP_UNIT:
            what = (f"the '{tags[schema.TAG_UNIT]}' run of sweep {tags.get(schema.TAG_SWEEP_ID)}, whose parent run is "
                    f"{tags.get(schema.TAG_PARENT_RUN)}" if schema.TAG_UNIT in tags else "not a kdsed run")
            raise ReportError(f"run {run_id} is not a sweep's parent run: it is {what}")
        return run
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], filter_string=schema.tag_filter(**{schema.TAG_UNIT: schema.SWEEP_UNIT}),
                               order_by=["attributes.start_time DESC"], max_results=1) if exp else []
    if not found:
        raise ReportError(f"no sweeps in experiment '{experiment}' of {tracking_uri} "
                          "(run `python -m kdsed.sweep` first)")
    return found[0]


def _sweep_runs(client, parent) -> list:
    """Every active run of the parent's sweep (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id], max_results=1000, page_token=token,
                                  filter_string=schema.tag_filter(**{schema.TAG_SWEEP_ID: _sweep_id(parent)}))
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _sweep_id(parent) -> str:
    return parent.data.tags[schema.TAG_SWEEP_ID]


def stage_report(stage_run, variant_runs: list) -> StageReport:
    """One stage rebuilt from its run and its variant runs (in config order), as the coordinator made it."""
    m = stage_run.data.metrics
    variants = {r.data.tags[schema.TAG_VARIANT]: {"val": schema.scores_from_metrics(r.data.metrics, schema.VAL),
                                                  "eval": schema.scores_from_metrics(r.data.metrics, schema.EVAL)}
                for r in variant_runs} if len(variant_runs) > 1 else {}
    pseudo = schema.scores_from_metrics(m, schema.PSEUDO) if schema.has_scores(m, schema.PSEUDO) else None
    stage = stage_run.data.tags[schema.TAG_STAGE]
    report = StageReport(schema.stage_title(stage), schema.scores_from_metrics(m, schema.VAL),
                         schema.scores_from_metrics(m, schema.EVAL), wall_time_s=m.get(schema.WALL_TIME, 0.0),
                         pseudo=pseudo, winners=schema.winners_from_params(stage_run.data.params), variants=variants,
                         kd_topline_ratio=m.get(schema.KD_TOPLINE_RATIO),
                         detection=schema.detection_from_metrics(m, schema.EVAL))
    report.comparisons = {name: {"against": _compared_with(stage, name, report), **c}
                          for name, c in schema.comparisons_from_metrics(m).items()}
    return report


def _compared_with(stage: str, comparison: str, report: StageReport) -> str:
    """What a logged comparison of `stage` was against (the names `kdsed.stages.compare_with_earlier` uses)."""
    if comparison == schema.WINNERS_VS_BEST_SINGLE:
        return report.best_single or "best single"
    k = schema.pass_index(stage) or 0
    other = {schema.VS_PREVIOUS: schema.TAGGING if k <= 1 else schema.pass_stage(k - 1),
             schema.VS_BASELINE: schema.BASELINE_TWO_STAGE, schema.VS_TOPLINE: schema.TOPLINE,
             schema.PSEUDO_VS_PREVIOUS: schema.pass_stage(max(k - 1, 1))}[comparison]
    return schema.stage_title(other)


def _winners(report: StageReport, stage_run, variant_runs: list) -> dict[str, Winner]:
    by_name = {r.data.tags[schema.TAG_VARIANT]: r.data.metrics for r in variant_runs}
    own = stage_run.data.metrics  # a one-unit stage is its own unit run
    return {c: Winner(w, by_name.get(w, own).get(schema.score_metric(schema.VAL, "f_measure", c)))
            for c, w in zip(CLASSES, report.winners)}


def _children(runs: list, parent_id: str, tag: str) -> list:
    """The runs directly under `parent_id` that carry `tag`."""
    return [r for r in runs if r.data.tags.get(schema.TAG_PARENT_RUN) == parent_id and tag in r.data.tags]


def load_sweep(client, parent) -> SweepReport:
    """A sweep's report rebuilt from its MLflow runs alone."""
    runs = _sweep_runs(client, parent)
    parent_id, tags = parent.info.run_id, parent.data.tags
    stage_runs = sorted(_children(runs, parent_id, schema.TAG_STAGE),
                        key=lambda r: schema.stage_order(r.data.tags[schema.TAG_STAGE]))
    # Variants in the order of the sweep's config (ties are broken in that order), else by start time.
    order = {name: i for i, name in enumerate(schema.split_names(tags.get(schema.TAG_VARIANTS)))}
    out = SweepReport(_sweep_id(parent), parent_id, parent.info.status, [], {},
                      wall_time_s=parent.data.metrics.get(schema.WALL_TIME), figure_runs={schema.SWEEP_UNIT: parent_id})
    for run in stage_runs:
        stage = run.data.tags[schema.TAG_STAGE]
        out.figure_runs[stage] = run.info.run_id
        if run.info.status != "FINISHED":
            out.in_progress.append(stage)
            continue
        variants = sorted(_children(runs, run.info.run_id, schema.TAG_VARIANT),
                          key=lambda r: (order.get(r.data.tags[schema.TAG_VARIANT], len(order)), r.info.start_time))
        report = stage_report(run, variants)
        out.stages.append(report)
        if report.winners and schema.pass_index(stage) is not None:  # the passes' registered winners (not the topline's)
            out.winners[report.stage] = _winners(report, run, variants)
    seen = {r.data.tags[schema.TAG_STAGE] for r in stage_runs}
    out.missing = [s for s in schema.split_names(tags.get(schema.TAG_STAGES)) if s not in seen]
    return out


def winners_table(sweep: SweepReport) -> str:
    """Class x pass: the winning variant and its validation F1 (%) on that class."""
    passes = list(sweep.winners)
    lines = ["| class | " + " | ".join(passes) + " |", "|" + "---|" * (len(passes) + 1)]
    for c in CLASSES:
        cells = [f"{sweep.winners[p][c].variant} ({percent(sweep.winners[p][c].val_f1)})" for p in passes]
        lines.append(f"| {short_class_name(c)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def validation_table(sweep: SweepReport) -> str:
    """Validation macro F1 / P / R (%) of every stage, and of every variant of a pass."""
    lines = ["| stage | F1 | P | R | variants (F1) |", "|---|---|---|---|---|"]
    for r in sweep.stages:
        macro = " | ".join(percent(r.val["macro"][k]) for k in ("f_measure", "precision", "recall"))
        variants = ", ".join(f"{v} {percent(s['val']['macro']['f_measure'])}" for v, s in r.variants.items())
        lines.append(f"| {stage_label(r)} | {macro} | {variants} |")
    return "\n".join(lines) + "\n"


def _status(sweep: SweepReport, tracking_uri: str) -> str:
    text = f"Parent run `{sweep.parent_run_id}` in {tracking_uri}; MLflow status {sweep.status}"
    text += "." if sweep.wall_time_s is None else f"; the process that finished it ran {sweep.wall_time_s:.0f} s."
    if not sweep.finished:
        todo = [*(f"{s} (run not finished)" for s in sweep.in_progress), *sweep.missing]
        text += (f"\n\n**UNFINISHED**: {len(sweep.stages)} stage(s) finished"
                 + (f"; not yet: {', '.join(todo)}" if todo else "")
                 + ". `python -m kdsed.sweep --resume` continues a stopped sweep.")
    return text


def render(sweep: SweepReport, tracking_uri: str, figures: dict[str, list[str]] | None = None) -> str:
    """The whole report as Markdown; `figures` maps a run label to figure paths relative to the report."""
    blocks = [f"{REPORT_TITLE}{sweep.sweep_id}", _status(sweep, tracking_uri),
              "## Results on eval (event-based, %)", results_markdown(sweep.stages)]
    detection = detection_table(sweep.stages)
    if detection:
        blocks += ["## DESED metrics on eval (%, sed_scores_eval: PSDS of the raw scores, F1s under the chosen "
                   "post-processing)", detection]
    if sweep.winners:
        blocks += ["## Per-class winners (validation F1 %, on `test`)", winners_table(sweep)]
    blocks += ["## Validation macro F1 per stage (%)", validation_table(sweep)]
    if figures:
        blocks.append("## Figures")
        for label, paths in figures.items():
            blocks += [f"### {label}", "\n".join(f"![{Path(p).stem}]({p})" for p in paths)]
    return "\n\n".join(b.rstrip("\n") for b in blocks) + "\n"


def download_figures(client, sweep: SweepReport, folder: Path) -> dict[str, list[str]]:
    """The PNGs under `figures/` of the parent and stage runs, into `folder/<run label>/` (replaced whole)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bar per file
    found: dict[str, list[str]] = {}

    def fill(tmp: Path) -> None:
        for label, run_id in sweep.figure_runs.items():
            names = sorted(Path(a.path).name for a in client.list_artifacts(run_id, schema.FIGURES)
                           if not a.is_dir and a.path.endswith(".png"))
            for name in names:
                client.download_artifacts(run_id, f"{schema.FIGURES}/{name}", str(tmp / label))
            if names:
                found[label] = [f"{folder.name}/{label}/{name}" for name in names]
        mark_figures(tmp)

    replace_dir_atomic(folder, fill)
    return found


def make_report(tracking_uri: str, *, run_id: str | None = None, experiment: str = MLFLOW_EXPERIMENT,
                out: Path | None = None) -> str:
    """The report of one sweep (the latest unless `run_id`); with `out`, written there with its figures."""
    client = open_store(tracking_uri)
    sweep = load_sweep(client, find_parent_run(client, tracking_uri, run_id=run_id, experiment=experiment))
    if out is None:
        return render(sweep, tracking_uri)
    figures = download_figures(client, sweep, figures_folder(out))
    labels = {schema.SWEEP_UNIT: "whole sweep",
              **{s: schema.stage_title(s) for s in sweep.figure_runs if s != schema.SWEEP_UNIT}}
    text = render(sweep, tracking_uri, {labels[k]: v for k, v in figures.items()})
    write_text_atomic(out, text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdsed.report", description=__doc__.splitlines()[0],
                                     epilog="An unfinished sweep is reported as far as it got, marked UNFINISHED "
                                            "(exit 0); a missing store, sweep or run exits 2.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run-id", help="the sweep's parent run (default: the latest sweep)")
    which.add_argument("--latest", action="store_true", help="the most recently started sweep (the default)")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                        help=f"MLflow store (default: {DEFAULT_TRACKING_URI})")
    parser.add_argument("--experiment", default=MLFLOW_EXPERIMENT,
                        help=f"MLflow experiment (default: {MLFLOW_EXPERIMENT})")
    parser.add_argument("--out", type=Path, help="also write the report here, with its figures in <stem>_figures/")
    parser.add_argument("--force", action="store_true", help="replace --out and its figures folder even if kdsed "
                                                             "did not write them")
    args = parser.parse_args(argv)
    disable_mlflow_telemetry()
    try:
        if args.out is not None:
            check_report_outputs(args.out, tracking_uri=args.tracking_uri, force=args.force)
        text = make_report(args.tracking_uri, run_id=args.run_id, experiment=args.experiment, out=args.out)
    except (ReportError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
