"""Run the whole method serially on one machine and write its results table.

`python -m kdsed.experiment --config sweeps/laptop.yaml --out kdsed_runs/experiment`
is the single-process form of the sweep (no Ray, no MLflow): the same stages
(`kdsed.stages`), trained one unit after the other, with the serial search of
post-processing in place of Ray Tune's.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import TextIO

import torch

from kdsed import distill, schema, stages
from kdsed.atomic import write_text_atomic
from kdsed.config import (ConfigError, ExperimentConfig, SweepConfig, dump_yaml, from_dict, load_yaml, to_dict,
                          with_threads)
from kdsed.constants import DEFAULT_SWEEP_CONFIG, NUM_CLASSES
from kdsed.events import MetadataError
from kdsed.prepare import PreparedData, prepare_data
from kdsed.pseudolabels import read_pseudo_labels, write_pseudo_labels
from kdsed.metrics import ClipCounts
from kdsed.results import StageReport, format_table, in_table_order, results_markdown, seeds_summary
from kdsed.topline import TOPLINE_SKIPPED_NOTE
from kdsed.scores_io import write_scores
from kdsed.search import PostprocessChoice
from kdsed.safety import OutputError, check_output, has_marker, mark_created
from kdsed.train import epoch_printer


#: Each unit's epochs (`EpochLog` as JSON) in its checkpoint folder.
LEARNING_CURVE_FILE = "learning_curve.json"


def run_experiment(cfg: ExperimentConfig, out_dir: Path | str, *, data: PreparedData | None = None) -> list[StageReport]:
    """Baseline, tagging and every distillation pass, serially; results and pseudo-labels under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, out / schema.CONFIG_FILE)
    data = data or prepare_data(cfg.data, cfg.features)
    reports: list[StageReport] = []
    counts: dict[str, ClipCounts] = {}  # stage -> its eval counts, for the passes' paired comparisons
    pseudo_counts: dict[str, ClipCounts] = {}  # pass -> its pseudo-labels' counts against the hidden labels

    def score(stage: str, units: dict[str, distill.TrainedUnit], t0: float, **kw) -> stages.StageOutcome:
        outcome = _score(stage, units, cfg, data, t0, earlier=counts, earlier_pseudo=pseudo_counts, **kw)
        counts[stage] = outcome.eval_counts
        if outcome.pseudo_counts is not None:
            pseudo_counts[stage] = outcome.pseudo_counts
        for subset, scores in outcome.frame_scores(data).items():  # raw scores for re-evaluation (docs/evaluation.md)
            write_scores(out / schema.stage_scores_folder(stage) / schema.scores_file(subset), scores)
        reports.append(outcome.report)
        return outcome

    first = stages.first_units(cfg, hidden_labels=data.hidden_reference() is not None)
    if cfg.distill.run_topline and data.hidden_reference() is None:
        print(TOPLINE_SKIPPED_NOTE, file=sys.stderr, flush=True)
    trained: dict[str, dict[str, distill.TrainedUnit]] = {}  # stage -> variant -> unit
    pseudo_weak = None
    for stage in dict.fromkeys(s.stage for s in first):  # baseline, topline, tagging: each stage timed on its own
        t0 = time.perf_counter()
        trained[stage] = units = {s.variant: _train(s, cfg, data, out) for s in first if s.stage == stage}
        if stage == schema.TAGGING:
            pseudo_weak = distill.pseudo_weak_targets(data, units[schema.TAGGING].outputs, cfg.distill)
        score(stage, units, t0, pseudo_weak=pseudo_weak if stage == schema.TAGGING else None)
    for spec in stages.baseline_second_stage(cfg):
        t0 = time.perf_counter()
        tags = distill.baseline_stage1_tags(data, trained[schema.BASELINE][schema.BASELINE].outputs)
        score(spec.stage, {spec.variant: _train(spec, cfg, data, out, baseline_tags=tags)}, t0)
    previous = None
    for k in range(1, cfg.distill.passes + 1):
        t0 = time.perf_counter()
        specs = stages.pass_units(cfg, k)
        units = {s.variant: _train(s, cfg, data, out, pseudo_weak=pseudo_weak, previous=previous) for s in specs}
        outcome = score(schema.pass_stage(k), units, t0)
        labels = outcome.pseudo_labels(data, cfg.distill)
        previous = labels.probs
        write_pseudo_labels(out / schema.pseudo_labels_file(outcome.stage), labels)
        print(format_table(in_table_order(reports), baseline_with_tagging=False), file=sys.stderr, flush=True)
    reports = in_table_order(reports)
    write_text_atomic(out / schema.RESULTS_JSON, json.dumps([asdict(r) for r in reports], indent=1))
    write_text_atomic(out / schema.RESULTS_MD, results_markdown(reports, baseline_with_tagging=False))
    return reports


def run_seeds(cfg: ExperimentConfig, out_dir: Path | str, *, jobs: int = 1) -> list[list[StageReport]]:
    """`run_experiment` once per seed of `cfg.seeds` (under `out_dir/seed-<i>/`), `jobs` seeds at a time; the
    mean and spread over seeds in `out_dir/results.md`.

    The data are prepared once, here. With `jobs` > 1 each seed runs in a process of its own with
    `cpu_count // jobs` torch threads (at least 1), its lines prefixed with its seed.
    """
    out = Path(out_dir)
    data = prepare_data(cfg.data, cfg.features)
    seeds = [cfg.seeded(i).train.seed for i in range(cfg.seeds)]
    jobs = max(1, min(jobs, cfg.seeds))
    if jobs == 1:
        runs = []
        for i, seed in enumerate(seeds):
            print(f"[kdsed.experiment] seed {seed} ({i + 1} of {cfg.seeds})", file=sys.stderr, flush=True)
            runs.append(run_experiment(cfg.seeded(i), out / f"seed-{i}", data=data))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        print(f"[kdsed.experiment] {cfg.seeds} seeds, {jobs} at a time, {threads} torch thread(s) each",
              file=sys.stderr, flush=True)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_one_seed, with_threads(cfg.seeded(i), threads), out / f"seed-{i}", seed)
                       for i, seed in enumerate(seeds)]
            runs = [f.result() for f in futures]
    write_text_atomic(out / schema.RESULTS_MD, seeds_markdown(runs, seeds))
    return runs


def _run_one_seed(cfg: ExperimentConfig, out: Path, seed: int) -> list[StageReport]:
    """One seed in a worker process: its torch threads as `cfg` says, its lines prefixed `[seed N]`."""
    torch.set_num_threads(cfg.train.num_threads or torch.get_num_threads())
    sys.stderr = PrefixedLines(sys.stderr, f"[seed {seed}] ")
    return run_experiment(cfg, out, data=prepare_data(cfg.data, cfg.features, progress=False))


class PrefixedLines(io.TextIOBase):
    """A text stream that writes every line to `stream` with `prefix` in front."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream, self.prefix, self.at_line_start = stream, prefix, True

    def write(self, text: str) -> int:
        for part in text.splitlines(keepends=True):
            self.stream.write((self.prefix if self.at_line_start else "") + part)
            self.at_line_start = part.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def summarize_seeds(out_dir: Path) -> str:
    """`seeds_markdown` of the finished seeds under `out_dir` (`seed-<i>/results.json`, as `run_seeds` wrote them)."""
    folders = sorted((f for f in Path(out_dir).glob("seed-*") if (f / schema.RESULTS_JSON).is_file()),
                     key=lambda f: int(f.name.removeprefix("seed-")))
    if not folders:
        raise FileNotFoundError(f"{out_dir}: no seed-<i>/{schema.RESULTS_JSON} of a finished seed")
    runs = [[StageReport(**r) for r in json.loads((f / schema.RESULTS_JSON).read_text())] for f in folders]
    cfgs = [load_yaml(SweepConfig, f / schema.CONFIG_FILE) for f in folders]
    seeds = [c.train.seed for c in cfgs]
    for folder, cfg, reports in zip(folders, cfgs, runs):
        add_pseudo_label_steps(folder, cfg, reports)
    return f"{seeds_markdown(runs, seeds)}\n## Best epoch of each unit\n\n{best_epoch_table(folders, cfgs)}"


#: How hard pseudo-labels (0/1 frames) read back as the events they were made from.
HARD_LABELS = PostprocessChoice(median_windows=(1,) * NUM_CLASSES, gaussian_sigmas=(0.0,) * NUM_CLASSES,
                                thresholds=(0.5,) * NUM_CLASSES, f1=(math.nan,) * NUM_CLASSES)


def add_pseudo_label_steps(folder: Path, cfg: ExperimentConfig, reports: list[StageReport],
                           data: PreparedData | None = None) -> None:
    """Give the passes of a finished seed written before kdsed kept them the interval of their pseudo-label F1 and
    its paired step from the previous pass, from the pass's Parquet pseudo-labels (hard labels only: their 0/1
    frames are the events the pass handed on). A pass whose recomputed F1 differs from the one it reported is
    left as it is; so is everything when the data has no hidden labels."""
    passes = {r.stage: r for r in reports if schema.pass_index(schema.stage_id(r.stage)) is not None and r.pseudo
              and schema.MACRO_INTERVAL not in r.pseudo}
    files = {title: folder / schema.pseudo_labels_file(schema.stage_id(title)) for title in passes}
    files = {title: path for title, path in files.items() if path.is_file()}
    if not files or cfg.distill.pseudo_strong != "hard":
        return
    data = data or prepare_data(cfg.data, cfg.features, progress=False)
    counts: dict[str, ClipCounts] = {}
    for title, path in files.items():
        report = passes[title]
        labels = read_pseudo_labels(path, frames=data.train.features.shape[1], order=data.train.filenames)
        found = distill.pseudo_label_counts(data, labels.probs, HARD_LABELS)
        if found is None or abs(found.scores().macro.f_measure - report.pseudo["macro"]["f_measure"]) > 1e-12:
            continue
        counts[title] = found
        report.pseudo = distill.scores_with_interval(found)
        k = schema.pass_index(schema.stage_id(title))
        previous = schema.stage_title(schema.pass_stage(k - 1)) if k > 1 else None
        if previous in counts:
            report.comparisons[schema.PSEUDO_VS_PREVIOUS] = stages.paired_comparison(found, counts[previous],
                                                                                     previous)


def best_epoch_table(folders: list[Path], cfgs: list[ExperimentConfig]) -> str:
    """Each unit's best epoch (lowest validation loss, the weights kept) against its epoch budget, seed by seed,
    from the checkpoints of finished seeds: a best epoch at the budget means it stopped while still improving."""
    passes = cfgs[0].distill.passes
    specs = [*stages.first_units(cfgs[0], hidden_labels=True), *stages.baseline_second_stage(cfgs[0]),
             *(u for k in range(1, passes + 1) for u in stages.pass_units(cfgs[0], k))]
    head = ["unit", "epochs", *(f"seed {c.train.seed}" for c in cfgs), "best at the last epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec in specs:
        paths = [f / schema.CHECKPOINTS / spec.name / schema.CHECKPOINT_FILE for f in folders]
        if not all(p.is_file() for p in paths):
            continue
        best = [torch.load(p, map_location="cpu", weights_only=True)["best_epoch"] for p in paths]
        at_end = sum(b == spec.train.epochs for b in best)
        lines.append(f"| {spec.name} | {spec.train.epochs} | {' | '.join(map(str, best))} | {at_end} of {len(best)} |")
    return "\n".join(lines) + "\n"


def seeds_markdown(runs: list[list[StageReport]], seeds: list[int]) -> str:
    """The table over seeds, then each seed's results."""
    per_seed = "\n".join(f"## Seed {s}\n\n{results_markdown(r, baseline_with_tagging=False)}" for s, r in zip(seeds, runs))
    return f"{seeds_summary(runs, seeds)}\n{per_seed}"


def _train(spec: stages.UnitSpec, cfg: ExperimentConfig, data: PreparedData, out: Path, **targets) -> distill.TrainedUnit:
    train_set = stages.training_set(spec, data, cfg.distill, **targets)
    folder = out / schema.CHECKPOINTS / spec.name
    unit = distill.train_unit(spec.name, spec.model, spec.train, train_set, data,
                              on_epoch=epoch_printer(spec.name, spec.train.epochs), checkpoint_dir=folder,
                              val=stages.validation_set(spec, data))
    # The learning curve beside the weights: train / validation loss and clips/s of every epoch run.
    write_text_atomic(folder / LEARNING_CURVE_FILE, json.dumps([asdict(e) for e in unit.result.history], indent=1))
    return unit


def _score(stage: str, units: dict[str, distill.TrainedUnit], cfg: ExperimentConfig, data: PreparedData,
           started: float, **kw) -> stages.StageOutcome:
    choices = stages.search_choices(units, data, cfg.postprocess)
    return stages.score_stage(stage, units, choices, data, started=started, ensemble_grid=stages.teacher_grid(cfg),
                              **kw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdsed.experiment", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_SWEEP_CONFIG,
                        help="sweep YAML (default: sweeps/laptop-fast.yaml, as `python -m kdsed.sweep`)")
    parser.add_argument("--out", type=Path, default=Path(schema.DEFAULT_EXPERIMENT_OUT))
    parser.add_argument("--passes", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None, help="run the method once per training seed (default: "
                                                                "the config's `seeds`, 1) and report mean and spread")
    parser.add_argument("--jobs", type=int, default=1,
                        help="with --seeds: run this many seeds at a time, each in its own process (default 1)")
    parser.add_argument("--synth-seed", type=int, default=None,
                        help="seed of the synthetic data set (default: the config's data.synth_seed)")
    parser.add_argument("--force", action="store_true", help="write into --out even if kdsed did not make it")
    parser.add_argument("--summarize", type=Path, metavar="DIR",
                        help="train nothing: print the tables over the finished seeds of an earlier --seeds run in DIR")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        if args.summarize is not None:
            print(summarize_seeds(args.summarize))
            return 0
        check_output(args.out, flag="--out", kind="folder", inputs=[args.config], force=args.force,
                     made_by_kdsed=has_marker, replaced_whole=False)  # kdsed.safety: never overwrite a user's files
        cfg = load_yaml(SweepConfig, args.config)  # the sweep's YAML; its ray/tracking sections are unused here
        if args.passes is not None:
            cfg = from_dict(SweepConfig, to_dict(replace(cfg, distill=replace(cfg.distill, passes=args.passes))))
        if args.seeds is not None:
            cfg = from_dict(SweepConfig, {**to_dict(cfg), "seeds": args.seeds})
        if args.jobs < 1:
            raise ConfigError(f"--jobs {args.jobs}: expected a number of processes >= 1")
        if args.synth_seed is not None:
            cfg = from_dict(SweepConfig, to_dict(replace(cfg, data=replace(cfg.data, synth_seed=args.synth_seed))))
        args.out.mkdir(parents=True, exist_ok=True)
        mark_created(args.out, "kdsed.experiment")
        if cfg.seeds > 1:
            run_seeds(cfg, args.out, jobs=args.jobs)
            print((args.out / schema.RESULTS_MD).read_text())
            print(f"total wall time {time.perf_counter() - t0:.0f} s; results in {args.out}")
            return 0
        reports = run_experiment(cfg, args.out)
    except (ConfigError, MetadataError, FileNotFoundError, OutputError) as e:  # bad input: one line, no traceback
        print(f"kdsed.experiment: error: {e}", file=sys.stderr)
        return 2
    print(results_markdown(reports, baseline_with_tagging=False))
    print(f"total wall time {time.perf_counter() - t0:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
