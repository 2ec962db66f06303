"""Event-based F1 of a system's strong-label TSV against a reference TSV (sed_eval semantics),
or PSDS and friends of its raw frame scores (sed_scores_eval, as in DESED).

    python -m kdsed.evaluate REF.tsv EST.tsv [--json] [--reference-impl]
    python -m kdsed.evaluate REF.tsv --scores SCORES [--threshold T | --postprocessing JSON] [--json]

Event mode: clips of REF without rows in EST count as clips without output; a clip of EST
that is not in REF is an error. Scores mode: SCORES is a kdsed scores file (`eval.parquet` of a
stage, `scores.parquet` of `kdsed.predict --scores`) or sed_scores_eval's folder of one
`<clip id>.tsv` per clip (onset, offset, one column per class); every clip of REF needs scores
and every scored clip a row in REF. PSDS1 and PSDS2 use the scores as they are; the intersection-
and collar-based F1 cut them at `--threshold` (default 0.5, the DESED baselines'), or smooth and
cut them as a `postprocessing.json` of a kdsed run says.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kdsed.constants import CLASSES
from kdsed.events import EventTable, MetadataError, read_strong_tsv
from kdsed.metrics import EventScores, event_scores, sed_eval_scores
from kdsed.metrics.psds import detection_scores
from kdsed.scores_io import ScoresError, frame_times, read_scores, read_scores_folder, score_dataframe
from kdsed.search import PostprocessChoice, smooth_as_chosen


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


def read_any_scores(path: Path) -> tuple[dict[str, pd.DataFrame], dict[str, float], dict[str, np.ndarray]]:
    """Score frames, durations (s) and raw (frames, classes) values per clip of a scores file or folder."""
    if path.is_dir():
        frames = read_scores_folder(path)
        durations = {clip: float(frame["offset"].iloc[-1]) for clip, frame in frames.items()}
        return frames, durations, {clip: frame[list(CLASSES)].to_numpy() for clip, frame in frames.items()}
    if not path.is_file():
        raise ScoresError(f"{path}: no such scores file or folder")
    scores = read_scores(path)
    values = {f: scores.scores[i, :scores.n_frames[i]] for i, f in enumerate(scores.filenames)}
    return scores.to_sed_scores(), scores.durations_s(), values


def score_frame_scores(reference_tsv: Path | str, scores_path: Path | str, *, threshold: float = 0.5,
                       postprocessing: Path | str | None = None) -> dict:
    """PSDS1/PSDS2, intersection- and collar-based F1 of frame scores against REF (`DetectionScores.to_json`)."""
    reference = read_strong_tsv(reference_tsv)
    frames, durations, values = read_any_scores(Path(scores_path))
    frames, durations, values = (_keyed_as(reference, d, scores_path) for d in (frames, durations, values))
    missing = sorted(set(reference) - set(frames))
    if missing:
        raise MetadataError(f"{scores_path}: no scores for {len(missing)} clip(s) of {reference_tsv}: "
                            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    thresholds: float | tuple[float, ...] = threshold
    cut = frames
    if postprocessing is not None:
        choice = PostprocessChoice.from_dict(json.loads(Path(postprocessing).read_text()))
        thresholds = choice.thresholds
        cut = {clip: score_dataframe(smooth_as_chosen(v, choice), frame_times(frames[clip])) for clip, v in values.items()}
    out = detection_scores(frames, reference, durations, thresholds=thresholds, thresholded=cut).to_json()
    return {**out, "thresholds": list(thresholds) if postprocessing is not None else threshold}


def _keyed_as(reference: EventTable, by_clip: dict, where: Path | str) -> dict:
    """`by_clip` keyed by REF's filenames: a key is a filename of REF, or one without its extension (.tsv folders)."""
    by_stem = {Path(f).stem: f for f in reference}
    out = {}
    for key, value in by_clip.items():
        name = key if key in reference else by_stem.get(key)
        if name is None:
            raise MetadataError(f"{where}: scores of clip {key!r}, which is not in the reference")
        out[name] = value
    return out


def format_detection(scores: dict) -> str:
    """A readable per-class table of PSDS1, PSDS2 and the two F1s (%), with the overall values."""
    width = max(len(label) for label in CLASSES)
    lines = [f"{'class':<{width}}  {'PSDS1':>6} {'PSDS2':>6} {'iF1 %':>6} {'cF1 %':>6}"]
    for c in CLASSES:
        lines.append(f"{c:<{width}}  {_pct(scores['psds1']['class_wise'][c])} {_pct(scores['psds2']['class_wise'][c])} "
                     f"{_pct(scores['intersection_f1']['class_wise'][c]['f_measure'])} "
                     f"{_pct(scores['collar_f1']['class_wise'][c]['f_measure'])}")
    lines.append("-" * len(lines[0]))
    lines.append(f"{'overall':<{width}}  {_pct(scores['psds1']['value'])} {_pct(scores['psds2']['value'])} "
                 f"{_pct(scores['intersection_f1']['macro']['f_measure'])} "
                 f"{_pct(scores['collar_f1']['macro']['f_measure'])}")
    lines.append(f"{scores['n_clips']} clips. PSDS1 (dtc = gtc = 0.7, alpha_st = 1) and PSDS2 (dtc = gtc = 0.1, "
                 "cttc = 0.3,\nalpha_ct = 0.5, alpha_st = 1), max eFPR 100/h, of the scores as given (single-class "
                 "PSDS per class);\niF1: intersection-based F1 (dtc = gtc = 0.5), cF1: collar-based (the event F1), "
                 "both macro over the\nclasses with references. '-': a class without references.")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdsed.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("reference", type=Path, help="reference strong-label TSV (filename onset offset event_label)")
    p.add_argument("estimated", type=Path, nargs="?", help="system output strong-label TSV (event mode)")
    p.add_argument("--scores", type=Path, help="frame scores instead: a kdsed scores .parquet or a folder of "
                                               "<clip id>.tsv (sed_scores_eval's layout)")
    p.add_argument("--threshold", type=float, default=0.5, help="scores mode: threshold of the two F1s (0.5)")
    p.add_argument("--postprocessing", type=Path, help="scores mode: a kdsed postprocessing.json (per-class "
                                                       "median window and threshold) for the two F1s")
    p.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    p.add_argument("--reference-impl", action="store_true", help="compute with sed_eval instead of the fast code")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.estimated is None) == (args.scores is None):
        parser.error("give either EST.tsv (event mode) or --scores SCORES, not both or neither")
    try:
        if args.scores is not None:
            scores = score_frame_scores(args.reference, args.scores, threshold=args.threshold,
                                        postprocessing=args.postprocessing)
            print(json.dumps(scores, indent=2) if args.json else format_detection(scores))
            return 0
        event = score_files(args.reference, args.estimated, reference_impl=args.reference_impl)
    except (MetadataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(event.to_json(), indent=2) if args.json else format_table(event))
    return 0


if __name__ == "__main__":
    sys.exit(main())
