"""Event-based F1 of a system's strong-label TSV against a reference TSV (sed_eval semantics).

    python -m kdsed.evaluate REF.tsv EST.tsv [--json] [--reference-impl]

Clips of REF without rows in EST count as clips without output; a clip of EST that is
not in REF is an error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

from kdsed.events import MetadataError, read_strong_tsv
from kdsed.metrics import EventScores, event_scores, sed_eval_scores


def score_files(reference_tsv: Path | str, estimated_tsv: Path | str, *, reference_impl: bool = False) -> EventScores:
    """Scores of EST against REF, read from DCASE strong-label TSVs; errors name the offending file."""
    reference, estimated = read_strong_tsv(reference_tsv), read_strong_tsv(estimated_tsv)
    if not reference:
        raise MetadataError(f"{reference_tsv}: no clips listed; expected at least one row after the header "
                            "(a clip without events is a row with its filename alone)")
    unknown = sorted(set(estimated) - set(reference))
    if unknown:
        raise MetadataError(f"{estimated_tsv}: {len(unknown)} file(s) not in the reference {reference_tsv}: "
                            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    return (sed_eval_scores if reference_impl else event_scores)(reference, estimated)


def _pct(x: float | None) -> str:
    return "     -" if x is None or math.isnan(x) else f"{100 * x:6.2f}"


def format_table(scores: EventScores) -> str:
    """A readable per-class table (F1, P, R in %, n_ref, n_sys) with macro and micro averages."""
    data = scores.to_json()
    width = max(len(label) for label in data["class_wise"])
    lines = [f"{'class':<{width}}  {'F1 %':>6} {'P %':>6} {'R %':>6} {'n_ref':>6} {'n_sys':>6}"]
    for label, row in data["class_wise"].items():
        lines.append(f"{label:<{width}}  {_pct(row['f_measure'])} {_pct(row['precision'])} {_pct(row['recall'])} "
                     f"{row['n_ref']:>6} {row['n_sys']:>6}")
    lines.append("-" * len(lines[0]))
    n_ref, n_sys = sum(scores.n_ref), sum(scores.n_sys)
    for name in ("macro", "micro"):
        row = data[name]
        lines.append(f"{name:<{width}}  {_pct(row['f_measure'])} {_pct(row['precision'])} {_pct(row['recall'])} "
                     f"{n_ref:>6} {n_sys:>6}")
    lines.append("Event-based, onset collar 200 ms, offset collar max(200 ms, 20 % of length). '-': undefined\n"
                 "(no reference events). As in sed_eval, macro F and R average the classes with references,\n"
                 "macro P all 10 classes (a class without output has P = 0).")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdsed.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("reference", type=Path, help="reference strong-label TSV (filename onset offset event_label)")
    p.add_argument("estimated", type=Path, help="system output strong-label TSV")
    p.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    p.add_argument("--reference-impl", action="store_true", help="compute with sed_eval instead of the fast code")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        scores = score_files(args.reference, args.estimated, reference_impl=args.reference_impl)
    except (MetadataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(scores.to_json(), indent=2) if args.json else format_table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
