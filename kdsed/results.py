"""The results of a run, whichever runner made it: one `StageReport` per stage, and the results table.

Both runners (`kdsed.experiment`, `kdsed.sweep`) build their reports with `kdsed.stages`, and
`kdsed.report` rebuilds them from MLflow; all three print them with `format_table`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from kdsed import schema
from kdsed.constants import CLASSES


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
    #: Paired bootstrap differences of the eval macro F1 (kdsed.schema.COMPARISONS -> {against, point, low, high,
    #: share_a_better}, fractions) and, for a pass, its macro F1 over the topline's.
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    kd_topline_ratio: float | None = None
    #: PSDS1/PSDS2, intersection- and collar-based F1 of the merged outputs on eval (`DetectionScores.to_json`).
    detection: dict[str, Any] | None = None

    @property
    def best_single(self) -> str | None:
        """The variant with the best validation macro F1 (the single model one would pick)."""
        if not self.variants:
            return None
        return max(self.variants, key=lambda n: self.variants[n]["val"]["macro"]["f_measure"] or 0.0)


def percent(x: float | None) -> str:
    """A score as a percentage with two decimals ("n/a" when undefined)."""
    return "n/a" if x is None else f"{100 * x:.2f}"


#: Row labels of the two stages that are not passes.
STAGE_LABELS = {schema.stage_title(schema.BASELINE): "baseline, stage 1 only (DCASE 2018 CRNN)",
                schema.stage_title(schema.BASELINE_TWO_STAGE): "baseline, two-stage (DCASE 2018 recipe)",
                schema.stage_title(schema.TAGGING): "tagging model (deep, weak labels)",
                schema.stage_title(schema.TOPLINE): "topline (true strong labels, not KD)"}
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
    """The row label of a stage: "tagging model (deep, weak labels)", "pass 1", "pass 2, per-class winners"."""
    if report.stage in STAGE_LABELS:
        return STAGE_LABELS[report.stage]
    return f"{report.stage}, per-class winners" if report.variants else report.stage


#: Columns of the results table after the pseudo-label F1: PSDS1 and PSDS2 of the stage's merged outputs (%).
PSDS_HEADERS = ("PSDS1", "PSDS2")


def in_table_order(reports: Sequence[StageReport]) -> list[StageReport]:
    """`reports` in the results table's order: baselines, tagging model, passes, topline (`schema.stage_order`)."""
    return sorted(reports, key=lambda r: schema.stage_order(schema.stage_id(r.stage)))


def format_table(reports: list[StageReport], *, baseline_with_tagging: bool = True) -> str:
    """The results as a Markdown table like the report's Tables 1 and 4 (eval subset, %).

    Each pass with several variants has two rows: its per-class winners and its best single variant.
    `baseline_with_tagging`: the two were trained together (the sweep), so the baseline's row has no
    wall time and the tagging row's (which then covers both) says so; the serial runner passes False.
    The best macro F1 of the stage rows and the best pseudo-label F1 are in bold; a macro F1 is followed
    by its 95 % bootstrap interval over the eval clips where the scores carry one, a pass's pseudo-label F1
    by its interval over the training clips with hidden labels.
    """
    stages = {r.stage for r in reports}
    baseline, tagging = schema.stage_title(schema.BASELINE), schema.stage_title(schema.TAGGING)
    together = baseline_with_tagging and {baseline, tagging} <= stages
    rows = []  # (label, eval scores, pseudo-label scores, wall time cell, is a stage row, PSDS cells)
    for r in reports:
        pseudo = r.pseudo if r.pseudo and "macro" in r.pseudo else None
        wall = f"{r.wall_time_s:.0f}"
        if together and r.stage == baseline:
            wall = ""
        elif together and r.stage == tagging:
            wall += " (with baseline)"
        rows.append((stage_label(r), r.eval, pseudo, wall, True, psds_cells(r.detection)))
        if r.best_single:
            rows.append((f"{r.stage}, best single ({variant_label(r.best_single)})",
                         r.variants[r.best_single]["eval"], None, "", False, psds_cells(None)))
    best_f1 = _best([percent(row[1]["macro"]["f_measure"]) for row in rows if row[4]])
    best_pseudo = _best([percent(row[2]["macro"]["f_measure"]) for row in rows if row[2] is not None])
    head = ["stage", "F1 [95 % CI]", "P", "R", *(short_class_name(c) for c in CLASSES), "pseudo-label F1",
            *PSDS_HEADERS, "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, ev, pseudo, wall, main, psds in rows:
        f1, p, r = (percent(ev["macro"][k]) for k in ("f_measure", "precision", "recall"))
        pseudo_f1 = "" if pseudo is None else percent(pseudo["macro"]["f_measure"])
        pseudo_cell = _bold(pseudo_f1, best_pseudo) + ("" if pseudo is None else _interval_cell(pseudo))
        cells = [label, _bold(f1, best_f1 if main else None) + _interval_cell(ev), p, r,
                 *(percent(ev["class_wise"][c]["f_measure"]) for c in CLASSES), pseudo_cell,
                 *psds, wall]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_COMPARISON_LABELS = {schema.WINNERS_VS_BEST_SINGLE: "per-class winners - best single ({against})",
                      schema.VS_PREVIOUS: "- {against}", schema.VS_BASELINE: "- {against}",
                      schema.VS_TOPLINE: "- {against}",
                      schema.PSEUDO_VS_PREVIOUS: "pseudo-label F1 - {against}'s"}


def format_comparisons(reports: list[StageReport]) -> str:
    """The paired comparisons of the stages as a Markdown table: eval macro F1 differences in points with their
    95 % paired bootstrap intervals, the share of resamples in which the stage is better, and, per pass, its
    macro F1 as a share of the topline's. Empty when no stage carries a comparison."""
    lines = ["| stage | difference | Δ macro F1, points [95 % CI] | resamples better | kd_topline_ratio |",
             "|---|---|---|---|---|"]
    for r in reports:
        for name in schema.COMPARISONS:
            c = r.comparisons.get(name)
            if c is None:
                continue
            share = "n/a" if c.get("share_a_better") is None else f"{100 * c['share_a_better']:.1f} %"
            ratio = f"{r.kd_topline_ratio:.2f}" if name == schema.VS_TOPLINE and r.kd_topline_ratio is not None else ""
            label = _COMPARISON_LABELS[name].format(against=c["against"])
            lines.append(f"| {r.stage} | {label} | {difference_cell(c)} | {share} | {ratio} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def format_seed_table(runs: Sequence[Sequence[StageReport]], seeds: Sequence[int]) -> str:
    """The eval macro F1 of every stage over seeds: mean, sample standard deviation, min and max, the mean PSDS1
    and PSDS2, and each seed's value with its 95 % bootstrap interval (%). `runs[i]` are the reports of seed
    `seeds[i]`, stages in the same order."""
    head = ["stage", "mean", "sd", "min", "max", *(f"{h} mean" for h in PSDS_HEADERS),
            *(f"seed {s} [95 % CI]" for s in seeds)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, first in enumerate(runs[0]):
        values = [run[i].eval["macro"]["f_measure"] or 0.0 for run in runs]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        psds = [[run[i].detection[s]["value"] for run in runs] if all(run[i].detection for run in runs) else None
                for s in schema.PSDS_SCENARIOS]
        cells = [stage_label(first), *(percent(x) for x in (statistics.fmean(values), sd, min(values), max(values))),
                 *("" if v is None or None in v else percent(statistics.fmean(v)) for v in psds),
                 *(percent(run[i].eval["macro"]["f_measure"]) + _interval_cell(run[i].eval) for run in runs)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_seed_comparisons(runs: Sequence[Sequence[StageReport]], seeds: Sequence[int]) -> str:
    """Each paired comparison of each stage, seed by seed (points [95 % CI]), and in how many seeds the interval
    lies above 0 and below 0. Empty when no stage carries a comparison."""
    head = ["stage", "difference", *(f"seed {s}" for s in seeds), "above 0 / below 0"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, first in enumerate(runs[0]):
        for name in schema.COMPARISONS:
            found = [run[i].comparisons.get(name) for run in runs]
            if None in found:
                continue
            label = _COMPARISON_LABELS[name].format(against=found[0]["against"])
            above, below = sum(c["low"] > 0 for c in found), sum(c["high"] < 0 for c in found)
            cells = [first.stage, label, *(difference_cell(c) for c in found), f"{above} / {below} of {len(found)}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def seeds_summary(runs: Sequence[Sequence[StageReport]], seeds: Sequence[int]) -> str:
    """What a run over seeds reads out, as Markdown: the table over seeds, the targets and the paired differences,
    seed by seed."""
    comparisons = format_seed_comparisons(runs, seeds)
    return (f"## Eval macro F1 over {len(seeds)} seeds (%)\n\n{format_seed_table(runs, seeds)}\n"
            f"## Targets, seed by seed\n\n{format_targets(runs, seeds)}"
            + (f"\n## Paired differences, seed by seed (eval macro F1, points [95 % CI])\n\n{comparisons}"
               if comparisons else ""))


#: The targets of the method on the `mini` set (issue 12): last pass's macro F1, its ratio to the two-stage
#: baseline and to the topline.
TARGET_F1, TARGET_BASELINE_FACTOR, TARGET_TOPLINE_RATIO = 0.30, 3.0, 0.75


def format_targets(runs: Sequence[Sequence[StageReport]], seeds: Sequence[int]) -> str:
    """The method's targets, seed by seed, with what each seed measured and in how many seeds each is met.

    Where a target is a comparison, "met" needs the paired interval to agree (e.g. above 0), not the point alone.
    """
    rows = [_target_row(target, [_by_stage(run) for run in runs]) for target in _TARGETS]
    head = ["target", *(f"seed {s}" for s in seeds), "met in"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, cells, met in rows:
        lines.append("| " + " | ".join([label, *cells, f"{sum(met)} of {len(met)}"]) + " |")
    return "\n".join(lines) + "\n"


def _by_stage(run: Sequence[StageReport]) -> dict[str, StageReport]:
    return {r.stage: r for r in run}


def _pass_title(k: int) -> str:
    return schema.stage_title(schema.pass_stage(k))


def _last_pass(stages: dict[str, StageReport]) -> StageReport:
    k = max(schema.pass_index(schema.stage_id(s)) or 0 for s in stages)
    return stages[_pass_title(k)]


def _macro(r: StageReport | None) -> float | None:
    return None if r is None else r.eval["macro"]["f_measure"]


def _target_f1(stages: dict[str, StageReport]) -> tuple[str, bool]:
    last = _last_pass(stages)
    return f"{percent(_macro(last))} ({last.stage})", (_macro(last) or 0.0) >= TARGET_F1


def _target_baseline(stages: dict[str, StageReport]) -> tuple[str, bool]:
    last, base = _last_pass(stages), stages.get(schema.stage_title(schema.BASELINE_TWO_STAGE))
    diff = last.comparisons.get(schema.VS_BASELINE)
    if not _macro(base) or diff is None:
        return "n/a", False
    factor = (_macro(last) or 0.0) / _macro(base)
    return f"{factor:.2f}× ({difference_cell(diff)})", factor >= TARGET_BASELINE_FACTOR and diff["low"] > 0


def _target_topline(stages: dict[str, StageReport]) -> tuple[str, bool]:
    ratio = _last_pass(stages).kd_topline_ratio
    return ("n/a", False) if ratio is None else (f"{ratio:.2f}", ratio >= TARGET_TOPLINE_RATIO)


def _target_pass1(stages: dict[str, StageReport]) -> tuple[str, bool]:
    first = stages.get(_pass_title(1))
    diff = first.comparisons.get(schema.VS_PREVIOUS) if first else None
    return ("n/a", False) if diff is None else (difference_cell(diff), diff["point"] >= 0)


def _target_pseudo(stages: dict[str, StageReport]) -> tuple[str, bool]:
    passes = [stages.get(_pass_title(k)) for k in (1, 2, 3)]
    f1s = [r.pseudo["macro"]["f_measure"] for r in passes if r is not None and r.pseudo]
    if len(f1s) < 3:
        return "n/a", False
    steps = [r.comparisons.get(schema.PSEUDO_VS_PREVIOUS) for r in passes[1:]]  # type: ignore[union-attr]
    paired = f" (steps {', '.join(difference_cell(s) for s in steps)})" if None not in steps else ""
    return " → ".join(percent(x) for x in f1s) + paired, f1s[0] < f1s[1] < f1s[2]


_TARGETS = ((f"last pass ≥ {100 * TARGET_F1:.0f} % eval macro F1", _target_f1),
            (f"≥ {TARGET_BASELINE_FACTOR:.0f}× the two-stage baseline, paired interval above 0", _target_baseline),
            (f"kd_topline_ratio ≥ {TARGET_TOPLINE_RATIO}", _target_topline),
            ("pass 1 ≥ tagging model (the point; its paired interval beside it)", _target_pass1),
            ("pseudo-label F1 rising, pass 1 → 2 → 3", _target_pseudo))


def _target_row(target: tuple, runs: list[dict[str, StageReport]]) -> tuple[str, list[str], list[bool]]:
    label, measure = target
    measured = [measure(stages) for stages in runs]
    return label, [f"{text} {'✓' if met else '✗'}" for text, met in measured], [met for _, met in measured]


def difference_cell(c: dict[str, Any]) -> str:
    """"+1.23 [+0.45, +2.01]": a paired difference (`Interval.to_json()`, fractions) in points."""
    return f"{_points(c['point'])} [{_points(c['low'])}, {_points(c['high'])}]"


def results_markdown(reports: list[StageReport], *, baseline_with_tagging: bool = True) -> str:
    """The results table followed by the paired comparisons (what `results.md` holds and the runners print)."""
    comparisons = format_comparisons(reports)
    table = format_table(reports, baseline_with_tagging=baseline_with_tagging)
    return table + (f"\nPaired differences of the eval macro F1 (1,000 bootstrap resamples of the eval clips, the "
                    f"same for every stage):\n\n{comparisons}" if comparisons else "")


def _points(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}"


def psds_cells(detection: dict[str, Any] | None) -> list[str]:
    """PSDS1 and PSDS2 in % ("" where the stage has none: older runs, best-single rows)."""
    if not detection:
        return [""] * len(PSDS_HEADERS)
    return [percent(detection[s]["value"]) for s in schema.PSDS_SCENARIOS]


def detection_table(reports: list[StageReport]) -> str:
    """The DESED metrics of each stage on eval (%): PSDS1, PSDS2, intersection- and collar-based macro F1 / P / R."""
    head = ["stage", *PSDS_HEADERS, "intersection F1", "P", "R", "collar F1", "P", "R"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        if not r.detection:
            continue
        f1s = [percent(r.detection[k]["macro"][m]) for k in ("intersection_f1", "collar_f1")
               for m in ("f_measure", "precision", "recall")]
        lines.append("| " + " | ".join([stage_label(r), *psds_cells(r.detection), *f1s]) + " |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def _interval_cell(scores: dict[str, Any]) -> str:
    """" [low, high]" of the macro F1's bootstrap interval, in %, when the scores carry one."""
    interval = scores.get(schema.MACRO_INTERVAL)
    if not interval or None in interval["f_measure"]:
        return ""
    low, high = interval["f_measure"]
    return f" [{percent(low)}, {percent(high)}]"


def _best(cells: list[str]) -> str | None:
    """The largest of some percentage cells, if there are two or more and it is above zero."""
    values = [float(c) for c in cells if c != "n/a"]
    return f"{max(values):.2f}" if len(values) > 1 and max(values) > 0 else None


def _bold(cell: str, best: str | None) -> str:
    return f"**{cell}**" if best is not None and cell == best else cell


def winner_table(final: StageReport, choice: Any, winners: Sequence[str]) -> str:
    """The per-class winners of a pass with their post-processing (a `PostprocessChoice`), as a Markdown table."""
    lines = ["| class | winner | window (frames) | threshold | val F1 % | eval F1 % |", "|---|---|---|---|---|---|"]
    for c, name in enumerate(CLASSES):
        ev = final.eval["class_wise"][name]["f_measure"]
        lines.append(f"| {name} | {winners[c] if winners else '-'} | {choice.median_windows[c]} | "
                     f"{choice.thresholds[c]:.2f} | {100 * choice.f1[c]:.2f} | {100 * (ev or 0):.2f} |")
    return "\n".join(lines) + "\n"
