"""Two sweeps compared stage by stage on the same eval clips: paired bootstrap differences of the macro F1.

    python -m kdsed.compare kdsed_runs/storage/sweeps/<id A> other/kdsed_runs/storage/sweeps/<id B>

Each finished stage of a sweep keeps its eval counts per clip and class (`stages/<stage>.json`, written by
the coordinator), so two sweeps on the same data (two configs, two seeds, two code versions) can be compared
without re-scoring anything: every stage both have is resampled on the same 1,000 clip draws, and A - B is
printed with its 95 % interval and the share of resamples in which A is better. The two sweeps must have
been scored on the same eval clips; different clips are an error, not a silent mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from kdsed import schema
from kdsed.metrics import ClipCounts, bootstrap_counts, paired_difference_counts
from kdsed.metrics.bootstrap import Interval
from kdsed.results import difference_cell, percent

@dataclass(frozen=True)
class StageComparison:
    stage: str
    a: Interval  # macro F1 of A, with its interval (fractions)
    b: Interval
    difference: Interval  # A - B, paired
    share_a_better: float


def stage_counts(sweep_folder: Path) -> dict[str, ClipCounts]:
    """Eval counts of every finished stage of the sweep in `sweep_folder` (a folder holding `stages/`)."""
    folder = sweep_folder / schema.STAGES_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"{sweep_folder}: no {schema.STAGES_FOLDER}/ folder; expected a sweep's folder, "
                                "<storage>/sweeps/<sweep id>")
    counts = {}
    for path in sorted(folder.glob("*.json")):
        raw = json.loads(path.read_text()).get("eval_counts")
        if raw is not None:
            counts[path.stem] = ClipCounts.from_json(raw)
    return counts


def data_settings(sweep_folder: Path) -> dict[str, object]:
    """The `data.*` settings a sweep logged in its state.json (its data set), without where it was cached."""
    state = sweep_folder / schema.STATE_FILE
    if not state.is_file():
        return {}
    logged = json.loads(state.read_text()).get("results") or {}
    return {k: v for k, v in logged.items() if k.startswith("data.") and k != "data.workdir"}


def compare_sweeps(folder_a: Path, folder_b: Path) -> list[StageComparison]:
    """A - B for each stage both sweeps finished, in table order."""
    data_a, data_b = data_settings(folder_a), data_settings(folder_b)
    differ = sorted(k for k in set(data_a) & set(data_b) if data_a[k] != data_b[k])
    if differ:
        raise ValueError("the two sweeps ran on different data (" + ", ".join(
            f"{k}: {data_a[k]!r} and {data_b[k]!r}" for k in differ) + "); a paired comparison needs the same clips")
    a, b = stage_counts(folder_a), stage_counts(folder_b)
    out = []
    for stage in sorted(set(a) & set(b), key=schema.stage_order):
        if a[stage].filenames != b[stage].filenames or (a[stage].n_ref != b[stage].n_ref).any():
            raise ValueError(f"{stage}: the two sweeps were scored on different eval clips or reference events "
                             f"({len(a[stage])} and {len(b[stage])} clips); a paired comparison needs the same ones")
        diff = paired_difference_counts(a[stage], b[stage])
        out.append(StageComparison(stage, bootstrap_counts(a[stage]).macro_f1, bootstrap_counts(b[stage]).macro_f1,
                                   diff.macro_f1, diff.share_a_better))
    return out


def format_comparison(rows: Sequence[StageComparison], label_a: str = "A", label_b: str = "B") -> str:
    """A Markdown table of the comparison, in percent."""
    def pct(i: Interval) -> str:
        d = i.to_json()  # NaN (no events) as None: "n/a"
        return f"{percent(d['point'])} [{percent(d['low'])}, {percent(d['high'])}]"

    lines = [f"| stage | {label_a} [95 % CI] | {label_b} [95 % CI] | {label_a} - {label_b}, points [95 % CI] "
             f"| resamples {label_a} better |", "|---|---|---|---|---|"]
    lines += [f"| {schema.stage_title(r.stage)} | {pct(r.a)} | {pct(r.b)} | {difference_cell(r.difference.to_json())} "
              f"| {100 * r.share_a_better:.1f} % |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdsed.compare", description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="a sweep's folder: <storage>/sweeps/<sweep id>")
    p.add_argument("b", type=Path, help="the sweep to compare it with, on the same data")
    p.add_argument("--labels", nargs=2, default=("A", "B"), metavar=("A", "B"), help="column names (default A B)")
    args = p.parse_args(argv)
    try:
        rows = compare_sweeps(args.a, args.b)
    except (FileNotFoundError, ValueError) as e:
        print(f"kdsed.compare: error: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"kdsed.compare: error: {args.a} and {args.b} have no finished stage in common", file=sys.stderr)
        return 2
    print(format_comparison(rows, *args.labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
