"""Rebuild a sweep's results from MLflow alone: `python -m kdsed.report [--run-id ID | --latest] [--out report.md]`.

Reads the sweep's parent run, its stage runs and their variant runs (metrics, params and tags;
nothing from the sweep storage) and prints the results table (`kdsed.experiment.format_table`, the
same table the sweep logged as `results.md`), the per-class winners of every pass and the
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
from typing import Any

from kdsed.atomic import replace_dir_atomic, write_text_atomic
from kdsed.config import VariantSpec
from kdsed.constants import CLASSES, DEFAULT_TRACKING_URI, MLFLOW_EXPERIMENT
from kdsed.experiment import StageReport, format_table, percent, short_class_name, stage_label
from kdsed.sweep.tracking import sqlite_path
from kdsed.failures import EXIT_RUNTIME_FAILURE, os_error_line
from kdsed.report_outputs import REPORT_TITLE, check_report_outputs, figures_folder, mark_figures, store_problem
from kdsed.safety import OutputError

SWEEP_UNIT = "sweep"  # the `kdsed.unit` tag of a sweep's parent run
_STATS = (("f_measure", "f1"), ("precision", "precision"), ("recall", "recall"))


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


def scores_from_metrics(metrics: dict[str, float], prefix: str) -> dict[str, Any]:
    """Event scores in `EventScores.to_json` form from `{prefix}_f1_macro`, ... (the inverse of `score_metrics`)."""
    def fpr(suffix: str) -> dict[str, float | None]:
        return {stat: metrics.get(f"{prefix}_{name}_{suffix}") for stat, name in _STATS}

    return {"macro": fpr("macro"), "micro": fpr("micro"), "class_wise": {c: fpr(c) for c in CLASSES}}


def open_store(tracking_uri: str):
    """An MlflowClient on `tracking_uri`; a local SQLite store must exist (MLflow would create an empty one)."""
    from mlflow import MlflowClient

    path = sqlite_path(tracking_uri)
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
        if tags.get("kdsed.unit") != SWEEP_UNIT:
            what = (f"the '{tags['kdsed.unit']}' run of sweep {tags.get('kdsed.sweep_id')}, whose parent run is "
                    f"{tags.get('mlflow.parentRunId')}" if "kdsed.unit" in tags else "not a kdsed run")
            raise ReportError(f"run {run_id} is not a sweep's parent run: it is {what}")
        return run
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], filter_string=f"tags.`kdsed.unit` = '{SWEEP_UNIT}'",
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
                                  filter_string=f"tags.`kdsed.sweep_id` = '{parent.data.tags['kdsed.sweep_id']}'")
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _stage_order(stage: str) -> int:
    if stage.startswith("pass-"):
        return int(stage.removeprefix("pass-"))
    return {"baseline": -2, "tagging": -1}.get(stage, 10**6)


def _expected_stages(params: dict[str, str]) -> list[str]:
    """The stages the sweep's logged config asks for (empty if the config is not there)."""
    if "distill.passes" not in params:
        return []
    first = ["baseline"] if params.get("distill.run_baseline", "True") == "True" else []
    return [*first, "tagging", *(f"pass-{k}" for k in range(1, int(params["distill.passes"]) + 1))]


def _variant_order(params: dict[str, str]) -> list[str]:
    """Variant names in the order of the sweep's config (ties are broken in that order)."""
    import ast

    try:
        return [VariantSpec(**v).name for v in ast.literal_eval(params.get("distill.variants", "[]"))]
    except (ValueError, SyntaxError, KeyError, TypeError):  # truncated or unusual: fall back to start time
        return []


def stage_report(stage_run, variant_runs: list) -> StageReport:
    """One stage rebuilt from its run and its variant runs (in config order), as the coordinator made it."""
    m, params = stage_run.data.metrics, stage_run.data.params
    stage = stage_run.data.tags["kdsed.stage"]
    winners = [params[f"winner_{c}"] for c in CLASSES] if all(f"winner_{c}" in params for c in CLASSES) else None
    variants = {r.data.tags["kdsed.variant"]: {"val": scores_from_metrics(r.data.metrics, "val"),
                                               "eval": scores_from_metrics(r.data.metrics, "eval")}
                for r in variant_runs} if len(variant_runs) > 1 else {}
    pseudo = scores_from_metrics(m, "pseudo") if any(k.startswith("pseudo_") for k in m) else None
    return StageReport(stage.replace("-", " "), scores_from_metrics(m, "val"), scores_from_metrics(m, "eval"),
                       wall_time_s=m.get("wall_time_s", 0.0), pseudo=pseudo, winners=winners, variants=variants)


def _winners(report: StageReport, stage_run, variant_runs: list) -> dict[str, Winner]:
    by_name = {r.data.tags["kdsed.variant"]: r.data.metrics for r in variant_runs}
    own = stage_run.data.metrics  # a one-unit stage is its own unit run
    return {c: Winner(w, by_name.get(w, own).get(f"val_f1_{c}")) for c, w in zip(CLASSES, report.winners)}


def load_sweep(client, parent) -> SweepReport:
    """A sweep's report rebuilt from its MLflow runs alone."""
    runs = _sweep_runs(client, parent)
    parent_id = parent.info.run_id
    stage_runs = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id
                         and "kdsed.stage" in r.data.tags), key=lambda r: _stage_order(r.data.tags["kdsed.stage"]))
    order = {name: i for i, name in enumerate(_variant_order(parent.data.params))}
    out = SweepReport(parent.data.tags["kdsed.sweep_id"], parent_id, parent.info.status, [], {},
                      wall_time_s=parent.data.metrics.get("wall_time_s"), figure_runs={"sweep": parent_id})
    for run in stage_runs:
        stage = run.data.tags["kdsed.stage"]
        out.figure_runs[stage] = run.info.run_id
        if run.info.status != "FINISHED":
            out.in_progress.append(stage)
            continue
        variants = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id
                           and "kdsed.variant" in r.data.tags),
                          key=lambda r: (order.get(r.data.tags["kdsed.variant"], len(order)), r.info.start_time))
        report = stage_report(run, variants)
        out.stages.append(report)
        if report.winners:
            out.winners[report.stage] = _winners(report, run, variants)
    seen = {r.data.tags["kdsed.stage"] for r in stage_runs}
    out.missing = [s for s in _expected_stages(parent.data.params) if s not in seen]
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
              "## Results on eval (event-based, %)", format_table(sweep.stages)]
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
            names = sorted(Path(a.path).name for a in client.list_artifacts(run_id, "figures")
                           if not a.is_dir and a.path.endswith(".png"))
            for name in names:
                client.download_artifacts(run_id, f"figures/{name}", str(tmp / label))
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
    labels = {"sweep": "whole sweep", **{s: s.replace("-", " ") for s in sweep.figure_runs if s != "sweep"}}
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
