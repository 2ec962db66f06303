"""Run the whole method serially on one machine and write its results table.

`python -m kdsed.experiment --config sweeps/mini.yaml --out kdsed_runs/experiment`
is the single-process form of the sweep (no Ray, no MLflow): the reference
the distributed sweep is compared against.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdsed import distill
from kdsed.atomic import write_text_atomic
from kdsed.config import ConfigError, ExperimentConfig, SweepConfig, dump_yaml, from_dict, load_yaml, to_dict
from kdsed.constants import CLASSES
from kdsed.events import MetadataError
from kdsed.prepare import PreparedData, prepare_data
from kdsed.pseudolabels import PseudoLabels, write_pseudo_labels
from kdsed.safety import OutputError, check_output, has_marker, mark_created
from kdsed.train import TargetSet, epoch_printer, predict


@dataclass
class StageReport:
    """Scores of one row of the results table (baseline, tagging, pass k)."""

    stage: str
    val: dict[str, Any]
    eval: dict[str, Any]
    wall_time_s: float
    pseudo: dict[str, Any] | None = None
    winners: list[str] | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def best_single(self) -> str | None:
        """The variant with the best validation macro F1 (the single model one would pick)."""
        if not self.variants:
            return None
        return max(self.variants, key=lambda n: self.variants[n]["val"]["macro"]["f_measure"] or 0.0)


def _scores(scored: distill.Scored) -> dict[str, Any]:
    return {"val": scored.val.to_json(), "eval": scored.eval.to_json()}


def run_experiment(cfg: ExperimentConfig, out_dir: Path | str, *, data: PreparedData | None = None) -> list[StageReport]:
    """Baseline, tagging and every distillation pass, serially; results and pseudo-labels under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, out / "config.yaml")
    data = data or prepare_data(cfg.data, cfg.features)
    reports: list[StageReport] = []
    grid, dcfg = cfg.postprocess, cfg.distill

    def stage(name: str, model: str, train_cfg, train_set) -> distill.VariantOutcome:
        return distill.train_and_score(name, cfg.model_config(model), train_cfg, train_set, data, grid,
                                       on_epoch=epoch_printer(name, train_cfg.epochs),
                                       checkpoint_dir=out / "checkpoints" / name)

    if dcfg.run_baseline:
        t0 = time.perf_counter()
        o = stage("baseline", "baseline", cfg.tagging_train, distill.tagging_set(data))
        reports.append(StageReport("baseline", **_scores(o.scored), wall_time_s=time.perf_counter() - t0))

    t0 = time.perf_counter()
    tagger = stage("tagging", "deep", cfg.tagging_train, distill.tagging_set(data))
    _, clip_probs = predict(tagger.result.model(), data.train, device=cfg.train.device)
    weak = distill.pseudo_weak_targets(data, clip_probs, dcfg)
    reports.append(StageReport("tagging", **_scores(tagger.scored), wall_time_s=time.perf_counter() - t0,
                               pseudo={"tagging": distill.pseudo_weak_scores(data, weak)}))

    t0 = time.perf_counter()
    first = stage("pass-1", "deep", cfg.tagging_train, TargetSet(data.train, weak=weak))
    pseudo = first.outputs.train
    quality = distill.pseudo_label_scores(data, pseudo, first.scored.choice)
    _write_pass(out, 1, data, pseudo, ["deep"] * len(CLASSES))
    reports.append(StageReport("pass 1", **_scores(first.scored), wall_time_s=time.perf_counter() - t0,
                               pseudo=quality.to_json() if quality else None))

    for k in range(2, dcfg.passes + 1):
        t0 = time.perf_counter()
        outcomes = {}
        for variant in dcfg.variants:
            train_set = distill.variant_training_set(data, pseudo, variant, dcfg)
            name = f"pass-{k}/{variant.name}"
            outcomes[variant.name] = distill.train_and_score(
                name, cfg.model_config(variant.model), cfg.train, train_set, data, grid,
                on_epoch=epoch_printer(name, cfg.train.epochs), checkpoint_dir=out / "checkpoints" / f"pass-{k}" / variant.name)
        winners = distill.select_per_class({n: o.scored.choice.f1 for n, o in outcomes.items()})
        merged, choice = distill.combine_winners(outcomes, winners)
        pseudo = merged.train
        scored = distill.Scored(choice, distill.score_with(data, merged.test, choice, "test"),
                                distill.score_with(data, merged.eval, choice, "eval"))
        quality = distill.pseudo_label_scores(data, pseudo, choice)
        _write_pass(out, k, data, pseudo, list(winners))
        reports.append(StageReport(f"pass {k}", **_scores(scored), wall_time_s=time.perf_counter() - t0,
                                   pseudo=quality.to_json() if quality else None, winners=list(winners),
                                   variants={n: _scores(o.scored) for n, o in outcomes.items()}))
        print(format_table(reports, baseline_with_tagging=False), file=sys.stderr, flush=True)
    write_text_atomic(out / "results.json", json.dumps([asdict(r) for r in reports], indent=1))
    write_text_atomic(out / "results.md", format_table(reports, baseline_with_tagging=False))
    return reports


def _write_pass(out: Path, k: int, data: PreparedData, probs: np.ndarray, winners: list[str]) -> None:
    meta = {"pass": k, "winners": dict(zip(CLASSES, winners)), "hop_s": data.feature_config.hop_s,
            "frame_offset_s": data.feature_config.frame_offset_s}
    write_pseudo_labels(out / "pseudo_labels" / f"pass-{k}.parquet",
                        PseudoLabels(data.train.filenames, probs, data.train.n_frames, meta))


def percent(x: float | None) -> str:
    """A score as a percentage with two decimals ("n/a" when undefined)."""
    return "n/a" if x is None else f"{100 * x:.2f}"


#: Row labels of the two stages that are not passes.
STAGE_LABELS = {"baseline": "baseline (DCASE 2018 CRNN)", "tagging": "tagging model (deep, weak labels)"}
#: Leading words of a class name that qualify the sound rather than name it ("Running_water" is "Water").
_QUALIFIERS = frozenset({"Electric", "Running"})
_SMOOTHING_LABELS = {"none": "no smoothing", "median+gaussian": "median+Gauss"}


def short_class_name(name: str) -> str:
    """A column header for a class: the word that names the sound ("Electric_shaver_toothbrush" -> "Shaver")."""
    words = name.split("_")
    while len(words) > 1 and words[0] in _QUALIFIERS:
        words = words[1:]
    return words[0].capitalize()


def variant_label(variant: str) -> str:
    """A variant's name as the table shows it ("shallow-median+gaussian" -> "shallow, median+Gauss")."""
    model, _, smoothing = variant.partition("-")
    return f"{model}, {_SMOOTHING_LABELS.get(smoothing, smoothing)}" if smoothing else model


def stage_label(report: StageReport) -> str:
    """The row label of a stage: "baseline (DCASE 2018 CRNN)", "pass 1", "pass 2, per-class winners"."""
    if report.stage in STAGE_LABELS:
        return STAGE_LABELS[report.stage]
    return f"{report.stage}, per-class winners" if report.variants else report.stage


def format_table(reports: list[StageReport], *, baseline_with_tagging: bool = True) -> str:
    """The results as a Markdown table like the report's Tables 1 and 4 (eval subset, %).

    Each pass with several variants has two rows: its per-class winners and its best single variant.
    `baseline_with_tagging`: the two were trained together (the sweep), so the baseline's row has no
    wall time and the tagging row's (which then covers both) says so; the serial runner passes False.
    The best macro F1 of the stage rows and the best pseudo-label F1 are in bold.
    """
    stages = {r.stage for r in reports}
    together = baseline_with_tagging and {"baseline", "tagging"} <= stages
    rows = []  # (label, eval scores, pseudo-label F1, wall time cell, is a stage row)
    for r in reports:
        pseudo = r.pseudo.get("macro", {}).get("f_measure") if r.pseudo else None
        wall = f"{r.wall_time_s:.0f}"
        if together and r.stage == "baseline":
            wall = ""
        elif together and r.stage == "tagging":
            wall += " (with baseline)"
        rows.append((stage_label(r), r.eval, pseudo, wall, True))
        if r.best_single:
            rows.append((f"{r.stage}, best single ({variant_label(r.best_single)})",
                         r.variants[r.best_single]["eval"], None, "", False))
    best_f1 = _best([percent(ev["macro"]["f_measure"]) for _, ev, _, _, main in rows if main])
    best_pseudo = _best([percent(p) for _, _, p, _, _ in rows if p is not None])
    head = ["stage", "F1", "P", "R", *(short_class_name(c) for c in CLASSES), "pseudo-label F1", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, ev, pseudo, wall, main in rows:
        f1, p, r = (percent(ev["macro"][k]) for k in ("f_measure", "precision", "recall"))
        pseudo_cell = "" if pseudo is None else percent(pseudo)
        cells = [label, _bold(f1, best_f1 if main else None), p, r,
                 *(percent(ev["class_wise"][c]["f_measure"]) for c in CLASSES), _bold(pseudo_cell, best_pseudo), wall]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _best(cells: list[str]) -> str | None:
    """The largest of some percentage cells, if there are two or more and it is above zero."""
    values = [float(c) for c in cells if c != "n/a"]
    return f"{max(values):.2f}" if len(values) > 1 and max(values) > 0 else None


def _bold(cell: str, best: str | None) -> str:
    return f"**{cell}**" if best is not None and cell == best else cell


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdsed.experiment", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("sweeps/laptop.yaml"))
    parser.add_argument("--out", type=Path, default=Path("kdsed_runs/experiment"))
    parser.add_argument("--passes", type=int, default=None)
    parser.add_argument("--force", action="store_true", help="write into --out even if kdsed did not make it")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        check_output(args.out, flag="--out", kind="folder", inputs=[args.config], force=args.force,
                     made_by_kdsed=has_marker, replaced_whole=False)  # kdsed.safety: never overwrite a user's files
        cfg = load_yaml(SweepConfig, args.config)  # the sweep's YAML; its ray/tracking sections are unused here
        if args.passes is not None:
            from dataclasses import replace
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
