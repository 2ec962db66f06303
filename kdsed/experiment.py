"""Run the whole method serially on one machine and write its results table.

`python -m kdsed.experiment --config sweeps/laptop.yaml --out kdsed_runs/experiment`
is the single-process form of the sweep (no Ray, no MLflow): the same stages
(`kdsed.stages`), trained one unit after the other, with the serial search of
post-processing in place of Ray Tune's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from kdsed import distill, schema, stages
from kdsed.atomic import write_text_atomic
from kdsed.config import ConfigError, ExperimentConfig, SweepConfig, dump_yaml, from_dict, load_yaml, to_dict
from kdsed.events import MetadataError
from kdsed.prepare import PreparedData, prepare_data
from kdsed.pseudolabels import write_pseudo_labels
from kdsed.results import StageReport, format_table
from kdsed.scores_io import write_scores
from kdsed.safety import OutputError, check_output, has_marker, mark_created
from kdsed.train import epoch_printer


def run_experiment(cfg: ExperimentConfig, out_dir: Path | str, *, data: PreparedData | None = None) -> list[StageReport]:
    """Baseline, tagging and every distillation pass, serially; results and pseudo-labels under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, out / schema.CONFIG_FILE)
    data = data or prepare_data(cfg.data, cfg.features)
    reports: list[StageReport] = []
    pseudo_weak = None
    for spec in stages.first_units(cfg):  # baseline and tagging, each timed on its own
        t0 = time.perf_counter()
        unit = _train(spec, cfg, data, out)
        if spec.stage == schema.TAGGING:
            pseudo_weak = distill.pseudo_weak_targets(data, unit.outputs.train_clip, cfg.distill)
        reports.append(_score(spec.stage, {spec.variant: unit}, cfg, data, t0, out, pseudo_weak).report)
    previous = None
    for k in range(1, cfg.distill.passes + 1):
        t0 = time.perf_counter()
        specs = stages.pass_units(cfg, k)
        units = {s.variant: _train(s, cfg, data, out, pseudo_weak=pseudo_weak, previous=previous) for s in specs}
        outcome = _score(schema.pass_stage(k), units, cfg, data, t0, out)
        previous = outcome.merged.train
        write_pseudo_labels(out / schema.pseudo_labels_file(outcome.stage), outcome.pseudo_labels(data))
        reports.append(outcome.report)
        print(format_table(reports, baseline_with_tagging=False), file=sys.stderr, flush=True)
    write_text_atomic(out / schema.RESULTS_JSON, json.dumps([asdict(r) for r in reports], indent=1))
    write_text_atomic(out / schema.RESULTS_MD, format_table(reports, baseline_with_tagging=False))
    return reports


def _train(spec: stages.UnitSpec, cfg: ExperimentConfig, data: PreparedData, out: Path, *,
           pseudo_weak: np.ndarray | None = None, previous: np.ndarray | None = None) -> distill.TrainedUnit:
    train_set = stages.training_set(spec, data, cfg.distill, pseudo_weak=pseudo_weak, previous=previous)
    return distill.train_unit(spec.name, spec.model, spec.train, train_set, data,
                              on_epoch=epoch_printer(spec.name, spec.train.epochs),
                              checkpoint_dir=out / schema.CHECKPOINTS / spec.name)


def _score(stage: str, units: dict[str, distill.TrainedUnit], cfg: ExperimentConfig, data: PreparedData,
           started: float, out: Path, pseudo_weak: np.ndarray | None = None) -> stages.StageOutcome:
    choices = stages.search_choices(units, data, cfg.postprocess)
    outcome = stages.score_stage(stage, units, choices, data, pseudo_weak=pseudo_weak, started=started)
    for subset, scores in outcome.frame_scores(data).items():
        write_scores(out / schema.stage_scores_folder(stage) / schema.scores_file(subset), scores)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdsed.experiment", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("sweeps/laptop.yaml"))
    parser.add_argument("--out", type=Path, default=Path(schema.DEFAULT_EXPERIMENT_OUT))
    parser.add_argument("--passes", type=int, default=None)
    parser.add_argument("--force", action="store_true", help="write into --out even if kdsed did not make it")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        check_output(args.out, flag="--out", kind="folder", inputs=[args.config], force=args.force,
                     made_by_kdsed=has_marker, replaced_whole=False)  # kdsed.safety: never overwrite a user's files
        cfg = load_yaml(SweepConfig, args.config)  # the sweep's YAML; its ray/tracking sections are unused here
        if args.passes is not None:
            cfg = from_dict(SweepConfig, to_dict(replace(cfg, distill=replace(cfg.distill, passes=args.passes))))
        args.out.mkdir(parents=True, exist_ok=True)
        mark_created(args.out, "kdsed.experiment")
        reports = run_experiment(cfg, args.out)
    except (ConfigError, MetadataError, FileNotFoundError, OutputError) as e:  # bad input: one line, no traceback
        print(f"kdsed.experiment: error: {e}", file=sys.stderr)
        return 2
    print(format_table(reports, baseline_with_tagging=False))
    print(f"total wall time {time.perf_counter() - t0:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
