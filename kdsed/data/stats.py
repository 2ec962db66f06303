"""Event statistics of a synthetic set against the real DCASE 2018 annotations.

`python -m kdsed.data.stats DIR` prints, per class, the event count, the median event length and
the share of events under 0.5 s of the real `test`/`eval` files and of the set's subsets (hidden
labels of the training subsets), plus how many real events the DCASE annotation rules would alter.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdsed.constants import CLASSES, EVAL, TEST, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN, WEAK, Seconds
from kdsed.data.layout import load_dataset
from kdsed.data.real_metadata import BUNDLED_ROOT, named_duration_s, real_metadata
from kdsed.data.scenes import annotate
from kdsed.events import EventTable, MetadataError

SHORT_EVENT_S: Seconds = 0.5


@dataclass(frozen=True)
class ClassStats:
    """Events of one class in a set: how many, their median length and the share shorter than 0.5 s."""

    events: int
    median_s: float
    short_share: float


def class_stats(table: EventTable) -> dict[str, ClassStats]:
    """Per class (class order), the event count, median length (s) and share under 0.5 s of `table`."""
    out = {}
    for label in CLASSES:
        lengths = np.array([e.duration_s for events in table.values() for e in events if e.label == label])
        out[label] = ClassStats(len(lengths), float(np.median(lengths)) if len(lengths) else float("nan"),
                                float(np.mean(lengths < SHORT_EVENT_S)) if len(lengths) else float("nan"))
    return out


def rule_alterations(table: EventTable) -> tuple[int, int]:
    """(events the DCASE annotation rules would drop or change, clips they are in) in a real strong table."""
    events = clips = 0
    for filename, real in table.items():
        ruled = set(annotate([(e.label, (e.onset_s, e.offset_s)) for e in real], named_duration_s(filename)))
        altered = sum(e not in ruled for e in real)
        events, clips = events + altered, clips + bool(altered)
    return events, clips


def synthetic_tables(root: Path | str) -> dict[str, EventTable]:
    """The strong tables of a synthetic set: hidden labels of the training subsets, the references of test/eval."""
    ds = load_dataset(root, check_audio=False)
    tables = {}
    for subset in (WEAK, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN):
        hidden = ds.hidden_table(subset)
        if hidden is not None:
            tables[subset] = hidden
    return tables | {subset: ds.reference_table(subset) for subset in (TEST, EVAL)}


def format_comparison(columns: dict[str, EventTable]) -> str:
    """A Markdown table: per class and column, `events · median s · share < 0.5 s`; clips and events per clip."""
    stats = {name: class_stats(table) for name, table in columns.items()}
    lines = ["| class | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for label in CLASSES:
        cells = [stats[name][label] for name in columns]
        lines.append(f"| {label} | " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("| clips | " + " | ".join(f"{len(t):,}" for t in columns.values()) + " |")
    lines.append("| events per clip | " + " | ".join(
        f"{sum(map(len, t.values())) / max(len(t), 1):.2f}" for t in columns.values()) + " |")
    return "\n".join(lines)


def _cell(s: ClassStats) -> str:
    if not s.events:
        return "0"
    return f"{s.events:,} · {s.median_s:.2f} s · {100 * s.short_share:.0f} %"


def report(root: Path | str) -> str:
    """The comparison of the synthetic set at `root` with the bundled real annotations, and the rule count."""
    real = real_metadata(BUNDLED_ROOT)
    columns = {f"real {s}": real.strong[s] for s in (TEST, EVAL)}
    columns |= {f"synthetic {s}": table for s, table in synthetic_tables(root).items()}
    lines = ["Per class: events · median length · share of events under 0.5 s.", "", format_comparison(columns), ""]
    for subset in (TEST, EVAL):
        events, clips = rule_alterations(real.strong[subset])
        lines.append(f"real {subset}: the DCASE annotation rules (>= 250 ms, same-class gaps < 150 ms merged, "
                     f"cut at the clip end) would alter {events} of {sum(map(len, real.strong[subset].values()))} "
                     f"events in {clips} clips")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: print the comparison for a synthetic set."""
    parser = argparse.ArgumentParser(prog="python -m kdsed.data.stats", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder of a synthetic set (kdsed.data.synth --out)")
    args = parser.parse_args(argv)
    try:
        print(report(args.root))
    except MetadataError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
