"""The method fixes of kdsed, each measured as a paired ablation on the same data, seed and resamples.

`python -m kdsed.ablations --config sweeps/laptop.yaml --out kdsed_runs/ablations` trains, for each fix, the
unit it changes twice (before and after the fix; everything else equal) and scores both on `eval` with the
post-processing chosen on `test`; the difference after - before is a paired bootstrap difference over the eval
clips (1,000 resamples, the same for every row). Results: `ablations.md` and `ablations.json` under `--out`.

The fixes (docs/ablations.md holds the measured table):

* `windows`: post-processing windows up to 121 frames (5 s) instead of 33 (1.4 s), on the same trained outputs;
* `sru`: the SRU at 128 hidden units (the report's) instead of 128 x conv width, on the tagging model;
* `pseudo-weak`: pass 1 on tuned per-class pseudo-weak tag thresholds instead of 0.5 for all classes, and on
  the tagger's clip probabilities themselves (soft labels) instead of the tuned tags;
* `pseudo-strong`: pass 2 (deep and shallow, median smoothing) on the hard pseudo-labels of pass 1 (the events of its
  own post-processing as 0/1 frames) instead of its frame probabilities;
* `baseline`: the official two-stage baseline instead of its first stage alone;
* `budget`: the learning curves (validation loss per epoch) of the tagger and the topline at the config's
  epochs and at twice as many, batch 32 and 8, from which the training budget is chosen;
* `teacher`: pass 3's variants trained on the pseudo-labels of pass 2's ensemble (the mean of its variants'
  probabilities) instead of its per-class winners (the paper's), pass 2 trained once on pass 1's labels; rows also
  pair the two teachers' pseudo-label F1 over the training clips with hidden labels, and pass 2's ensemble against
  its winners on `eval`;
* `precision`: the topline's deep and shallow units trained under bf16 autocast instead of fp32 (the speed-up
  on a CPU with AMX or on a GPU, and what it costs in F1; the note gives each arm's training clips/s).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable


from kdsed import distill, schema, stages
import numpy as np
import torch

from kdsed.atomic import write_bytes_atomic, write_text_atomic
from kdsed.config import (ConfigError, ExperimentConfig, PostprocessConfig, SweepConfig, from_dict, load_yaml, to_dict,
                          with_threads)
from kdsed.events import MetadataError
from kdsed.metrics import ClipCounts, paired_difference_counts
from kdsed.prepare import PreparedData, prepare_data
from kdsed.results import percent
from kdsed.safety import OutputError, check_output, has_marker, mark_created
from kdsed.search import PostprocessChoice
from kdsed.train import EpochLog, VariantResult, epoch_printer

#: kdsed's first post-processing grid (windows to 33 frames, 1.4 s): the "before" of the `windows` ablation.
SHORT_WINDOWS = (1, 3, 5, 7, 9, 13, 17, 25, 33)
ABLATIONS = ("windows", "pseudo-weak", "pseudo-strong", "baseline", "sru", "budget", "precision", "teacher")
#: The two teachers of the `teacher` ablation (`DistillConfig.pseudo_teacher`), before and after.
TEACHERS = ("winners", "ensemble")


@dataclass
class Arm:
    """One side of an ablation: a trained unit scored under its own post-processing."""

    label: str
    eval_scores: dict  # eval scores with the macro-F1 interval
    counts: ClipCounts
    best_epoch: int
    epochs: int
    val_losses: list[float]


@dataclass
class AblationRow:
    """Before and after one fix, with the paired difference of their eval macro F1 (fractions)."""

    name: str
    what: str
    before: Arm
    after: Arm
    difference: dict  # point, low, high, share_a_better (after - before)
    note: str = ""


def _arm(label: str, data: PreparedData, unit: distill.TrainedUnit, grid: PostprocessConfig) -> Arm:
    choice = distill.search_choice(data, unit.outputs.test, grid)
    return _scored_arm(label, data, unit, choice)


def _scored_arm(label: str, data: PreparedData, unit: distill.TrainedUnit, choice: PostprocessChoice) -> Arm:
    counts = distill.eval_counts(data, unit.outputs.eval, choice)
    history = unit.result.history
    return Arm(label, distill.scores_with_interval(counts), counts, unit.result.best_epoch, len(history),
               [round(h.val_loss, 5) for h in history])


def _counts_arm(label: str, counts: ClipCounts) -> Arm:
    """An arm that is no single unit (a stage's winners, an ensemble, pseudo-labels): its counts alone."""
    return Arm(label, distill.scores_with_interval(counts), counts, 0, 0, [])


def _row(name: str, what: str, before: Arm, after: Arm, note: str = "") -> AblationRow:
    diff = paired_difference_counts(after.counts, before.counts)
    return AblationRow(name, what, before, after,
                       {**diff.macro_f1.to_json(), "share_a_better": diff.to_json()["macro"]["share_a_better"]}, note)


class Ablations:
    """Trains the units the ablations need once each (cached by name) and builds their rows."""

    def __init__(self, cfg: ExperimentConfig, data: PreparedData, out: Path) -> None:
        self.cfg, self.data, self.out = cfg, data, out
        self.units: dict[str, distill.TrainedUnit] = {}

    def train(self, spec: stages.UnitSpec, **targets) -> distill.TrainedUnit:
        """The unit trained (or read back from `--out/units/`, where every trained unit is kept)."""
        key = json.dumps([spec.name, asdict(spec.model), asdict(spec.train), self.cfg.data.synth_seed],
                         sort_keys=True, default=str)  # pass-1 units carry their pseudo-weak mode in their name
        if key not in self.units:
            path = self.out / "units" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
            if path.exists():
                self.units[key] = _load_unit(path, spec)
            else:
                ts = stages.training_set(spec, self.data, self.cfg.distill, **targets)
                self.units[key] = distill.train_unit(spec.name, spec.model, spec.train, ts, self.data,
                                                     on_epoch=epoch_printer(spec.name, spec.train.epochs),
                                                     val=stages.validation_set(spec, self.data))
                _save_unit(path, self.units[key])
        return self.units[key]

    def tagger(self, rnn_hidden: int | None = None) -> distill.TrainedUnit:
        cfg = self.cfg
        model = cfg.deep if rnn_hidden is None else replace(cfg.deep, rnn_hidden=rnn_hidden)
        return self.train(stages.UnitSpec(schema.unit_name(schema.TAGGING), "weak", model, cfg.tagging_train))

    def topline_shallow(self) -> distill.TrainedUnit | None:
        """The shallow topline unit (a frame-level model), None on data without hidden labels."""
        units = [s for s in stages.first_units(self.cfg, hidden_labels=self.data.hidden_reference() is not None)
                 if s.stage == schema.TOPLINE]
        return self.train(units[-1]) if units else None

    def windows(self) -> list[AblationRow]:
        """The same outputs (the tagger's; the shallow topline's) searched on the short grid and the config's grid."""
        grid, rows = self.cfg.postprocess, []
        short = replace(grid, median_windows=SHORT_WINDOWS)
        for label, unit in (("tagging model", self.tagger()), ("topline, shallow", self.topline_shallow())):
            if unit is not None:
                rows.append(_row(f"windows-{label}", f"windows up to {max(grid.median_windows)} frames vs "
                                 f"{max(SHORT_WINDOWS)} ({label})", _arm(f"<= {max(SHORT_WINDOWS)} frames", self.data,
                                                                         unit, short),
                                 _arm(f"<= {max(grid.median_windows)} frames", self.data, unit, grid)))
        rows[0].note = self.pseudo_weak_note()
        return rows

    def sru(self) -> AblationRow:
        """The tagging model with the SRU scaled by the conv width (the old laptop size) vs at 128 units."""
        deep = self.cfg.deep
        scaled = max(1, int(round(deep.rnn_hidden * deep.width)))
        return _row("sru", f"SRU {deep.rnn_hidden} vs {scaled} hidden units (tagging model, width {deep.width})",
                    _arm(f"{scaled} units", self.data, self.tagger(scaled), self.cfg.postprocess),
                    _arm(f"{deep.rnn_hidden} units", self.data, self.tagger(), self.cfg.postprocess))

    def pseudo_weak_labels(self) -> dict[str, np.ndarray]:
        """Pass 1's clip targets from the same tagger: thresholded at 0.5 ("hard"), per class ("tuned"), or its
        probabilities themselves ("soft")."""
        tagger = self.tagger()
        return {mode: distill.pseudo_weak_targets(self.data, tagger.outputs, replace(self.cfg.distill, pseudo_weak=mode))
                for mode in ("hard", "tuned", "soft")}

    def pseudo_weak_note(self) -> str:
        """Tag precision / recall / F1 (micro, %) of each pseudo-weak labelling against the hidden labels (soft labels
        read at 0.5)."""
        quality = []
        for mode, labels in self.pseudo_weak_labels().items():
            q = distill.pseudo_weak_scores(self.data, labels)
            quality.append(f"{mode + (' (at 0.5)' if mode == 'soft' else '')}: P {percent(q.get('precision'))} / R {percent(q.get('recall'))} / "
                           f"F1 {percent(q.get('f_measure'))}")
        thresholds = distill.pseudo_weak_thresholds(self.data, self.tagger().outputs,
                                                    replace(self.cfg.distill, pseudo_weak="tuned"))
        return ("pseudo-weak tags of the unlabeled clips against their hidden labels (%): " + "; ".join(quality)
                + f"; tuned thresholds per class: {', '.join(f'{t:.1f}' for t in thresholds)}")

    def pseudo_weak(self) -> list[AblationRow]:
        """Pass 1 on hard (0.5) pseudo-weak labels vs tuned per-class thresholds, and on soft labels (the tagger's
        probabilities) vs tuned, all from the same tagger."""
        [spec] = stages.pass_units(self.cfg, 1)
        arms = {mode: _arm(f"{mode} labels" if mode == "soft" else f"{mode} thresholds", self.data,
                           self.train(replace(spec, name=f"{spec.name}-{mode}"), pseudo_weak=labels),
                           self.cfg.postprocess)
                for mode, labels in self.pseudo_weak_labels().items()}
        return [_row("pseudo-weak", "pass 1 on tuned vs 0.5 pseudo-weak tag thresholds", arms["hard"], arms["tuned"],
                     note=self.pseudo_weak_note()),
                _row("pseudo-weak-soft", "pass 1 on soft pseudo-weak labels (the tagger's probabilities) vs tuned tags",
                     arms["tuned"], arms["soft"])]

    def first_pass(self) -> distill.TrainedUnit:
        """Pass 1 on the config's pseudo-weak labels (the unit of the `pseudo-weak` ablation of the same mode)."""
        [spec] = stages.pass_units(self.cfg, 1)
        mode = self.cfg.distill.pseudo_weak
        return self.train(replace(spec, name=f"{spec.name}-{mode}"),
                          pseudo_weak=distill.pseudo_weak_targets(self.data, self.tagger().outputs, self.cfg.distill))

    def pseudo_strong(self) -> list[AblationRow]:
        """Pass 2's deep and shallow units (median smoothing) on pass 1's frame probabilities vs on its hard labels."""
        teacher = self.first_pass()
        choice = distill.search_choice(self.data, teacher.outputs.test, self.cfg.postprocess)
        rows = []
        for model in ("deep", "shallow"):
            specs = [s for s in stages.pass_units(self.cfg, 2) if s.variant == f"{model}-median"]
            if not specs:  # the config has no median variant of this model
                continue
            spec = specs[0]
            arms = []
            for mode in ("soft", "hard"):
                labels = distill.pseudo_strong_labels(self.data, teacher.outputs.train, choice,
                                                      replace(self.cfg.distill, pseudo_strong=mode))
                unit = self.train(replace(spec, name=f"{spec.name}-{mode}-from-{self.cfg.distill.pseudo_weak}"),
                                  previous=labels)
                arms.append(_arm(f"{mode} labels", self.data, unit, self.cfg.postprocess))
            rows.append(_row(f"pseudo-strong-{model}", f"pass 2 ({model}, median) on hard vs soft pseudo-labels "
                             "of pass 1", *arms))
        return rows

    def pass_units(self, k: int, previous: np.ndarray, made_by: str) -> dict[str, distill.TrainedUnit]:
        """Pass k's variants trained on `previous`, their names tagged with what made those labels."""
        return {s.variant: self.train(replace(s, name=f"{s.name}-{made_by}"), previous=previous)
                for s in stages.pass_units(self.cfg, k)}

    def teacher(self) -> list[AblationRow]:
        """Pass 3 on the labels of pass 2's ensemble vs its per-class winners, from the same pass 2."""
        cfg, data, grid = self.cfg, self.data, self.cfg.postprocess
        first = self.first_pass()
        labels = distill.pseudo_strong_labels(data, first.outputs.train,
                                              distill.search_choice(data, first.outputs.test, grid), cfg.distill)
        second = self.pass_units(2, labels, f"{cfg.distill.pseudo_strong}-from-{cfg.distill.pseudo_weak}")
        # Scored once: the two teachers of pass 2 differ only in what writes the labels, not in the pass's scores.
        scored = stages.score_stage(schema.pass_stage(2), second, stages.search_choices(second, data, grid), data,
                                    ensemble_grid=grid)
        outcome2 = {"winners": replace(scored, teacher=None, pseudo_counts=distill.pseudo_label_counts(
                        data, scored.merged.train, scored.choice)), "ensemble": scored}
        print(f"[kdsed.ablations] teacher: pass 2 scored; {self.teacher_note(outcome2)}", file=sys.stderr, flush=True)
        outcome3 = {}
        for kind in TEACHERS:
            third = self.pass_units(3, outcome2[kind].pseudo_labels(data, cfg.distill).probs, f"from-{kind}-teacher")
            outcome3[kind] = stages.score_stage(schema.pass_stage(3), third, stages.search_choices(third, data, grid),
                                                data, ensemble_grid=grid if kind == "ensemble" else None)
        ensemble2 = outcome2["ensemble"].teacher
        rows = [_row("teacher-ensemble-eval", f"pass 2: the ensemble of its {len(second)} variants vs its per-class "
                     "winners (eval)", _counts_arm("per-class winners", outcome2["winners"].eval_counts),
                     _counts_arm("ensemble", distill.eval_counts(data, ensemble2.outputs.eval, ensemble2.choice))),
                _row("teacher-pass-3", "pass 3 (per-class winners) on the labels of pass 2's ensemble vs of its "
                     "per-class winners (eval)", _counts_arm("winners' labels", outcome3["winners"].eval_counts),
                     _counts_arm("ensemble's labels", outcome3["ensemble"].eval_counts),
                     note=self.teacher_note(outcome2, outcome3))]
        if outcome2["winners"].pseudo_counts is not None:  # the data has hidden labels
            rows[1:1] = [_row("teacher-labels-pass-2", "pass 2's pseudo-labels: its ensemble's vs its per-class "
                              "winners' (F1 over the training clips, against their hidden labels)",
                              _counts_arm("winners", outcome2["winners"].pseudo_counts),
                              _counts_arm("ensemble", outcome2["ensemble"].pseudo_counts))]
            rows.append(_row("teacher-labels-pass-3", "pass 3's pseudo-labels, each arm's own teacher (F1 over the "
                             "training clips)", _counts_arm("winners", outcome3["winners"].pseudo_counts),
                             _counts_arm("ensemble", outcome3["ensemble"].pseudo_counts)))
        return rows

    @staticmethod
    def teacher_note(*outcomes: dict[str, stages.StageOutcome]) -> str:
        """Each arm's eval macro F1 and pseudo-label F1 (%) from pass to pass (2, then 3 when given)."""
        f1 = lambda o: percent(o.report.eval["macro"]["f_measure"])  # noqa: E731
        pseudo = lambda o: percent(o.pseudo_counts.scores().macro.f_measure) if o.pseudo_counts else "-"  # noqa: E731
        passes = " -> ".join(str(k) for k in range(2, 2 + len(outcomes)))
        return "; ".join(f"{kind} teacher: eval F1 pass {passes} {' -> '.join(f1(o[kind]) for o in outcomes)}, "
                         f"pseudo-label F1 {' -> '.join(pseudo(o[kind]) for o in outcomes)}" for kind in TEACHERS)

    def baseline(self) -> AblationRow:
        """The baseline's first stage alone vs the two-stage recipe."""
        [first] = [s for s in stages.first_units(self.cfg) if s.stage == schema.BASELINE]
        stage1 = self.train(first)
        [second] = stages.baseline_second_stage(self.cfg)
        stage2 = self.train(second, baseline_tags=distill.baseline_stage1_tags(self.data, stage1.outputs))
        return _row("baseline", "DCASE 2018 baseline: two-stage recipe vs its first stage alone",
                    _arm("stage 1 only", self.data, stage1, self.cfg.postprocess),
                    _arm("two stages", self.data, stage2, self.cfg.postprocess))

    def budget(self) -> list[AblationRow]:
        """Learning curves: the topline (shallow) and the tagger at the config's budget and at 2x epochs / batch 8."""
        rows = []
        for name, spec in (("topline", [s for s in stages.first_units(self.cfg, hidden_labels=True)
                                        if s.stage == schema.TOPLINE][-1]),
                           ("tagger", stages.first_units(self.cfg)[-1])):
            if spec.targets == "hidden-strong" and self.data.hidden_reference() is None:
                continue
            t = spec.train
            longer = replace(t, epochs=2 * t.epochs, patience=max(t.patience, t.epochs), batch_size=8)
            before = _arm(f"{t.epochs} epochs, batch {t.batch_size}", self.data, self.train(spec), self.cfg.postprocess)
            after = _arm(f"{longer.epochs} epochs, batch 8", self.data, self.train(replace(spec, train=longer)),
                         self.cfg.postprocess)
            rows.append(_row(f"budget-{name}", f"{name} ({spec.model.name}): 2x epochs at batch 8 vs the config", before,
                             after))
        return rows

    def precision(self) -> list[AblationRow]:
        """The topline's units (deep and shallow) in fp32 vs under bf16 autocast, same seed and data."""
        rows = []
        for spec in [s for s in stages.first_units(self.cfg, hidden_labels=self.data.hidden_reference() is not None)
                     if s.stage == schema.TOPLINE]:
            fp32 = self.train(replace(spec, train=replace(spec.train, mixed_precision="none")))
            bf16 = self.train(replace(spec, train=replace(spec.train, mixed_precision="bf16")))
            rows.append(_row(f"precision-{spec.model.name}", f"topline ({spec.model.name}, width {spec.model.width}): "
                             "bf16 autocast vs fp32",
                             _arm("fp32", self.data, fp32, self.cfg.postprocess),
                             _arm("bf16", self.data, bf16, self.cfg.postprocess),
                             note=f"training clips/s: fp32 {fp32.result.train_clips_per_s:.1f}, bf16 "
                                  f"{bf16.result.train_clips_per_s:.1f} "
                                  f"({bf16.result.train_clips_per_s / fp32.result.train_clips_per_s:.2f}x; "
                                  f"{torch.get_num_threads()} threads)"))
        return rows

    def run(self, names: tuple[str, ...]) -> list[AblationRow]:
        steps: dict[str, Callable[[], AblationRow | list[AblationRow]]] = {
            "windows": self.windows, "sru": self.sru, "pseudo-weak": self.pseudo_weak,
            "pseudo-strong": self.pseudo_strong, "baseline": self.baseline,
            "budget": self.budget, "precision": self.precision, "teacher": self.teacher}
        rows: list[AblationRow] = []
        for name in names:
            t0 = time.perf_counter()
            got = steps[name]()
            rows += got if isinstance(got, list) else [got]
            print(f"[kdsed.ablations] {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            self.write(rows)
        return rows

    def write(self, rows: list[AblationRow]) -> None:
        write_text_atomic(self.out / "ablations.json", json.dumps([_row_json(r) for r in rows], indent=1))
        write_text_atomic(self.out / "ablations.md", format_ablations(rows))


_OUTPUTS = ("train", "test", "eval", "train_clip", "test_clip")


def _save_unit(path: Path, unit: distill.TrainedUnit) -> None:
    """A trained unit of the ablations (weights, history, outputs) as tensors only, written atomically."""
    r = unit.result
    payload = {"state_dict": r.state_dict, "history": [asdict(h) for h in r.history], "best_epoch": r.best_epoch,
               "clips_per_s": r.train_clips_per_s, "time_s": r.train_time_s,
               "outputs": {k: torch.from_numpy(getattr(unit.outputs, k)) for k in _OUTPUTS
                           if getattr(unit.outputs, k) is not None}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes_atomic(path, buf.getvalue())


def _load_unit(path: Path, spec: stages.UnitSpec) -> distill.TrainedUnit:
    saved = torch.load(path, weights_only=True)
    outputs = distill.Outputs(*(saved["outputs"][k].numpy() if k in saved["outputs"] else None for k in _OUTPUTS))
    result = VariantResult(spec.model, spec.train, saved["state_dict"], [EpochLog(**h) for h in saved["history"]],
                           saved["best_epoch"], saved["clips_per_s"], saved["time_s"])
    return distill.TrainedUnit(spec.name, result, outputs)


def _row_json(row: AblationRow) -> dict:
    arm = lambda a: {k: v for k, v in asdict(a).items() if k != "counts"}  # noqa: E731
    return {"name": row.name, "what": row.what, "before": arm(row.before), "after": arm(row.after),
            "difference": row.difference, "note": row.note}


def format_ablations(rows: list[AblationRow]) -> str:
    """The ablations as a Markdown table: eval macro F1 [95 % CI] before and after, the paired difference."""
    lines = ["| fix | before | after | after - before, points [95 % CI] | best epoch before / after |",
             "|---|---|---|---|---|"]
    for r in rows:
        d = r.difference
        cells = [r.what, _arm_cell(r.before), _arm_cell(r.after),
                 f"{100 * d['point']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]",
                 _epochs_cell(r.before, r.after)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.note}" for r in rows if r.note]
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def _epochs_cell(before: Arm, after: Arm) -> str:
    if not (before.epochs and after.epochs):
        return "-"  # not single units (a stage's winners, an ensemble, pseudo-labels)
    return f"{before.best_epoch}/{before.epochs}, {after.best_epoch}/{after.epochs}"


def _arm_cell(arm: Arm) -> str:
    low, high = arm.eval_scores[schema.MACRO_INTERVAL]["f_measure"]
    return f"{arm.label}: {percent(arm.eval_scores['macro']['f_measure'])} [{percent(low)}, {percent(high)}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdsed.ablations", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("sweeps/laptop.yaml"))
    parser.add_argument("--out", type=Path, default=Path(schema.DEFAULT_WORKDIR) / "ablations")
    parser.add_argument("--only", default=",".join(ABLATIONS), help=f"comma-separated, of {', '.join(ABLATIONS)}")
    parser.add_argument("--synth-seed", type=int, default=None,
                        help="seed of the synthetic data set (default: the config's data.synth_seed)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of every training (default: the config's, else torch's)")
    parser.add_argument("--force", action="store_true", help="write into --out even if kdsed did not make it")
    args = parser.parse_args(argv)
    names = tuple(n for n in args.only.split(",") if n)
    unknown = [n for n in names if n not in ABLATIONS]
    try:
        if unknown:
            raise ConfigError(f"--only: unknown ablation {unknown[0]!r}; known: {', '.join(ABLATIONS)}")
        check_output(args.out, flag="--out", kind="folder", inputs=[args.config], force=args.force,
                     made_by_kdsed=has_marker, replaced_whole=False)
        cfg = load_yaml(SweepConfig, args.config)
        if args.synth_seed is not None:
            cfg = from_dict(SweepConfig, to_dict(replace(cfg, data=replace(cfg.data, synth_seed=args.synth_seed))))
        if args.threads is not None:
            if args.threads < 1:
                raise ConfigError(f"--threads {args.threads}: expected a number of threads >= 1")
            cfg = with_threads(cfg, args.threads)
        args.out.mkdir(parents=True, exist_ok=True)
        mark_created(args.out, "kdsed.ablations")
        data = prepare_data(cfg.data, cfg.features)
        rows = Ablations(cfg, data, args.out).run(names)
    except (ConfigError, MetadataError, FileNotFoundError, OutputError) as e:
        print(f"kdsed.ablations: error: {e}", file=sys.stderr)
        return 2
    print(format_ablations(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
