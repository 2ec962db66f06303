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
from kdsed.config import ExperimentConfig, SweepConfig, dump_yaml, load_yaml
from kdsed.constants import CLASSES
from kdsed.prepare import PreparedData, prepare_data
from kdsed.pseudolabels import PseudoLabels, write_pseudo_labels
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
        return max(self.variants, key=lambda n: self.variants[n]["val"]["macro"]["f_measure"])


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
        print(format_table(reports), file=sys.stderr, flush=True)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in reports], indent=1))
    (out / "results.md").write_text(format_table(reports))
    return reports


def _write_pass(out: Path, k: int, data: PreparedData, probs: np.ndarray, winners: list[str]) -> None:
    meta = {"pass": k, "winners": dict(zip(CLASSES, winners)), "hop_s": data.feature_config.hop_s,
            "frame_offset_s": data.feature_config.frame_offset_s}
    write_pseudo_labels(out / "pseudo_labels" / f"pass-{k}.parquet",
                        PseudoLabels(data.train.filenames, probs, data.train.n_frames, meta))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def format_table(reports: list[StageReport]) -> str:
    """The results as a Markdown table like the report's Tables 1 and 4 (eval subset, %)."""
    short = [c.split("_")[0][:8] for c in CLASSES]
    head = ["stage", "F1", "P", "R", *short, "pseudo F1", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        rows = [(r.stage, r.eval)]
        if r.best_single:
            rows.append((f"{r.stage} best single ({r.best_single})", r.variants[r.best_single]["eval"]))
        for i, (name, ev) in enumerate(rows):
            pseudo = r.pseudo.get("macro", {}).get("f_measure") if r.pseudo and i == 0 else None
            cells = [name, *(_pct(ev["macro"][k]) for k in ("f_measure", "precision", "recall")),
                     *(_pct(ev["class_wise"][c]["f_measure"]) for c in CLASSES),
                     _pct(pseudo) if pseudo is not None else "", f"{r.wall_time_s:.0f}" if i == 0 else ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdsed.experiment", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("sweeps/laptop.yaml"))
    parser.add_argument("--out", type=Path, default=Path("kdsed_runs/experiment"))
    parser.add_argument("--passes", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = load_yaml(SweepConfig, args.config)  # the sweep's YAML; its ray/tracking sections are unused here
    if args.passes is not None:
        from dataclasses import replace
        cfg = replace(cfg, distill=replace(cfg.distill, passes=args.passes))
    t0 = time.perf_counter()
    reports = run_experiment(cfg, args.out)
    print(format_table(reports))
    print(f"total wall time {time.perf_counter() - t0:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
