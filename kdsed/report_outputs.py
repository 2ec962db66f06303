"""What `python -m kdsed.report --out` may write, and from which store it may read (kdsed.safety's rule).

The report file may replace an earlier report (its first line is `# kdsed sweep `); its figures
folder, an earlier figures folder (kdsed leaves a marker file in it) or an empty one. Anything
else needs `--force`, and neither may be the MLflow store it reads.
"""

from __future__ import annotations

from pathlib import Path

from kdsed.schema import sqlite_path
from kdsed.safety import check_output, has_marker, mark_created, starts_with

REPORT_TITLE = "# kdsed sweep "  # the first line of every report (kdsed.report.render)


def figures_folder(out: Path) -> Path:
    """Where the figures of a report written to `out` go: `<stem>_figures/` beside it."""
    return out.parent / f"{out.stem}_figures"


def check_report_outputs(out: Path, *, tracking_uri: str, force: bool = False) -> None:
    """Refuse `--out` (and its figures folder) if writing them would destroy an input or a file kdsed did not write."""
    db = sqlite_path(tracking_uri)
    inputs = [db, db.parent / "mlartifacts"] if db is not None else []
    check_output(out, flag="--out", kind="file", inputs=inputs, force=force, made_by_kdsed=starts_with(REPORT_TITLE))
    check_output(figures_folder(out), flag="--out (its figures folder)", kind="folder", inputs=inputs, force=force,
                 made_by_kdsed=has_marker)


def mark_figures(folder: Path) -> None:
    """Mark a figures folder as written by kdsed.report (a later report may replace it)."""
    mark_created(folder, "kdsed.report")


def store_problem(tracking_uri: str) -> str | None:
    """Why `tracking_uri` is not an MLflow store to read, in one line (None if it may be one); reads only."""
    from kdsed.stores import read_store_problem

    problem = read_store_problem(tracking_uri)
    return f"--tracking-uri {tracking_uri}: {problem}" if problem else None


__all__ = ["REPORT_TITLE", "check_report_outputs", "figures_folder", "mark_figures", "store_problem"]
