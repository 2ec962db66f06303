"""The metrics of DESED (DCASE 2020-2024 Task 4) from frame scores, through sed_scores_eval.

* PSDS1 (dtc = gtc = 0.7, alpha_st = 1, max_efpr = 100 per hour) and PSDS2 (dtc = gtc = 0.1,
  cttc = 0.3, alpha_ct = 0.5, alpha_st = 1, max_efpr = 100), as the DESED baselines compute them:
  exactly, over every threshold (sed_scores_eval), from the scores as given. kdsed passes raw frame
  probabilities, so PSDS does not depend on the post-processing kdsed tunes.
* Intersection-based F1 (dtc = gtc = 0.5, the DESED baselines') and collar-based F1 (onset collar
  200 ms, offset collar max(200 ms, 20 % of the length): the task's event F1), at given per-class
  thresholds on given (e.g. smoothed) scores. A frame is active when its score is `>=` the threshold,
  as in `kdsed.postprocess` (sed_scores_eval itself detects `>`: kdsed hands it 0/1 frames cut at 0.5).
  The counts are sed_scores_eval's; F, P and R follow sed_eval as everywhere in kdsed
  (`EventScores`: P = 0 for a class without output, macro over the classes with references).

Ground truth: every clip of the subset, with same-class events that overlap or touch merged
(sed_scores_eval refuses connected events). sed_scores_eval refuses classes without reference
events: they are left out of PSDS (their single-class value is None), as sed_eval leaves them out
of the macro F1, and their detections count as false positives in the F1s.
sed_scores_eval is imported inside the functions that use it (it imports sed_eval, lazy_dataset).
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from kdsed.constants import CLASSES, OFFSET_COLLAR_RATE, ONSET_COLLAR_S
from kdsed.events import EventTable
from kdsed.metrics.fast import EventScores
from kdsed.scores_io import frame_times, score_dataframe

GroundTruth = dict[str, list[tuple[float, float, str]]]
ScoreFrames = Mapping[str, pd.DataFrame]
#: Units of the eFPR of PSDS: false positives per hour.
UNIT_OF_TIME = "hour"


@dataclass(frozen=True)
class PsdsScenario:
    """The parameters of one PSDS scenario (Bilen et al., 2020)."""

    name: str
    dtc_threshold: float
    gtc_threshold: float
    cttc_threshold: float | None = None
    alpha_ct: float = 0.0
    alpha_st: float = 1.0
    max_efpr: float = 100.0


PSDS1 = PsdsScenario("psds1", dtc_threshold=0.7, gtc_threshold=0.7)
PSDS2 = PsdsScenario("psds2", dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5)
SCENARIOS = (PSDS1, PSDS2)
#: Detection and ground-truth intersection criteria of the DESED baselines' intersection-based F1.
INTERSECTION_DTC, INTERSECTION_GTC = 0.5, 0.5
#: sed_scores_eval rounds times to this many decimals before comparing them with a collar or criterion.
TIME_DECIMALS = 6


def ground_truth(reference: EventTable, clips: Sequence[str]) -> GroundTruth:
    """sed_scores_eval's ground truth of `clips` (all present, [] without events); connected same-class events merged."""
    unknown = [e.label for f in clips for e in reference.get(f, []) if e.label not in CLASSES]
    if unknown:
        raise ValueError(f"unknown class label {unknown[0]!r} in the reference; expected one of {', '.join(CLASSES)}")
    out: GroundTruth = {}
    for clip in clips:
        merged: list[list] = []
        for e in sorted(reference.get(clip, []), key=lambda e: (e.label, e.onset_s, e.offset_s)):
            if merged and merged[-1][2] == e.label and e.onset_s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e.offset_s)
            else:
                merged.append([e.onset_s, e.offset_s, e.label])
        out[clip] = [(float(a), float(b), label) for a, b, label in merged]
    return out


def classes_with_references(gt: GroundTruth) -> list[str]:
    """The classes (in `CLASSES` order) with at least one reference event."""
    present = {label for events in gt.values() for _, _, label in events}
    return [c for c in CLASSES if c in present]


def _sed_scores_eval(module: str) -> Any:
    """`sed_scores_eval.<module>`, imported without dcase_util's warning about pkg_resources (through sed_eval)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        return importlib.import_module(f"sed_scores_eval.{module}")


def psds(frames: ScoreFrames, gt: GroundTruth, durations_s: Mapping[str, float],
         scenario: PsdsScenario) -> tuple[float | None, dict[str, float | None]]:
    """PSDS of `frames` in one scenario, and each class's single-class PSDS (None without references).

    Computed over the classes with references; with fewer than two of them there is no PSDS (None).
    """
    intersection_based = _sed_scores_eval("intersection_based")

    scored = classes_with_references(gt)
    class_wise: dict[str, float | None] = dict.fromkeys(CLASSES)
    if len(scored) < 2:
        return None, class_wise
    value, single, _, _ = intersection_based.psds(
        only_classes(frames, scored), gt, dict(durations_s), dtc_threshold=scenario.dtc_threshold,
        gtc_threshold=scenario.gtc_threshold, cttc_threshold=scenario.cttc_threshold, alpha_ct=scenario.alpha_ct,
        alpha_st=scenario.alpha_st, unit_of_time=UNIT_OF_TIME, max_efpr=scenario.max_efpr,
        time_decimals=TIME_DECIMALS)
    class_wise.update({c: float(v) for c, v in single.items()})
    return float(value), class_wise


def only_classes(frames: ScoreFrames, classes: Sequence[str]) -> ScoreFrames:
    """`frames` with the columns of `classes` only (sed_scores_eval refuses a class without references)."""
    if list(classes) == list(CLASSES):
        return frames
    out = {}
    for clip, frame in frames.items():
        out[clip] = score_dataframe(frame[list(classes)].to_numpy(np.float64), frame_times(frame), classes)
    return out


def binarize_frames(frames: ScoreFrames, thresholds: float | Sequence[float]) -> dict[str, pd.DataFrame]:
    """0/1 frames: 1 where a class's score is `>=` its threshold (one value, or one per class in `CLASSES` order)."""
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(CLASSES),))
    out = {}
    for clip, frame in frames.items():
        values = (frame[list(CLASSES)].to_numpy(np.float64) >= thr).astype(np.float64)
        out[clip] = score_dataframe(values, frame_times(frame))
    return out


def collar_scores(binary: ScoreFrames, gt: GroundTruth) -> EventScores:
    """Collar-based counts (the task's collars) of 0/1 frames, as `EventScores` (sed_eval's F, P, R)."""
    collar_based = _sed_scores_eval("collar_based")

    return _counts(binary, gt, lambda frames: collar_based.accumulated_intermediate_statistics(
        frames, gt, onset_collar=ONSET_COLLAR_S, offset_collar=ONSET_COLLAR_S, offset_collar_rate=OFFSET_COLLAR_RATE,
        time_decimals=TIME_DECIMALS)[0])


def intersection_scores(binary: ScoreFrames, gt: GroundTruth, *, dtc_threshold: float = INTERSECTION_DTC,
                        gtc_threshold: float = INTERSECTION_GTC) -> EventScores:
    """Intersection-based counts of 0/1 frames (detections failing the DTC are false positives) as `EventScores`."""
    intersection_based = _sed_scores_eval("intersection_based")

    return _counts(binary, gt, lambda frames: intersection_based.accumulated_intermediate_statistics(
        frames, gt, dtc_threshold=dtc_threshold, gtc_threshold=gtc_threshold, time_decimals=TIME_DECIMALS)[0])


def _counts(binary: ScoreFrames, gt: GroundTruth, statistics: Callable[[ScoreFrames], Mapping[str, Any]]) -> EventScores:
    """Per-class TP/FP/FN of 0/1 frames cut at 0.5; a class without references: its detections are all FP."""
    scored = classes_with_references(gt)
    stats = statistics(only_classes(binary, scored)) if scored else {}
    tp, fp, fn = [], [], []
    for c in CLASSES:
        if c not in stats:
            tp.append(0), fn.append(0)
            fp.append(sum(_runs(frame[c].to_numpy()) for frame in binary.values()))
            continue
        cp_scores, counts = stats[c]
        cp_scores = np.asarray(cp_scores)
        # The statistics at a threshold t are those of the lowest change point above t (sed_scores_eval's rule).
        above = np.flatnonzero(cp_scores > 0.5)
        i = above[np.argmin(cp_scores[above])]
        tp.append(int(counts["tps"][i]))
        fp.append(int(counts["fps"][i]))
        fn.append(int(counts["n_ref"]) - tp[-1])
    return EventScores.from_counts(tp, fp, fn)


def _runs(active: np.ndarray) -> int:
    """Number of runs of active (> 0.5) frames."""
    on = np.concatenate([[False], active > 0.5])
    return int(np.count_nonzero(on[1:] & ~on[:-1]))


@dataclass
class DetectionScores:
    """PSDS1, PSDS2, intersection- and collar-based F1 of one system on one subset."""

    psds: dict[str, float | None]  # scenario name -> PSDS
    psds_class_wise: dict[str, dict[str, float | None]]  # scenario name -> class -> single-class PSDS
    intersection: EventScores
    collar: EventScores
    n_clips: int
    classes: list[str]  # the classes with reference events (those PSDS and the macro F1 average)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data: `psds1`, `psds2` ({"value", "class_wise"}), `intersection_f1`, `collar_f1` (EventScores)."""
        out: dict[str, Any] = {s: {"value": self.psds[s], "class_wise": self.psds_class_wise[s]} for s in self.psds}
        out.update({"intersection_f1": self.intersection.to_json(), "collar_f1": self.collar.to_json(),
                    "n_clips": self.n_clips, "classes": list(self.classes)})
        return out


def detection_scores(frames: ScoreFrames, reference: EventTable, durations_s: Mapping[str, float], *,
                     thresholds: float | Sequence[float] = 0.5, thresholded: ScoreFrames | None = None,
                     scenarios: Sequence[PsdsScenario] = SCENARIOS) -> DetectionScores:
    """PSDS of `frames` (every threshold) and both F1s of `thresholded` (default: `frames`) cut at `thresholds`.

    Every clip of `frames` is evaluated; a clip of `reference` without frames is an error.
    """
    clips = sorted(frames)
    missing = sorted(set(reference) - set(frames))
    if missing:
        raise ValueError(f"{len(missing)} clip(s) of the reference have no scores, e.g. {missing[0]!r}")
    gt = ground_truth(reference, clips)
    values = {s.name: psds(frames, gt, {c: durations_s[c] for c in clips}, s) for s in scenarios}
    binary = binarize_frames(frames if thresholded is None else thresholded, thresholds)
    return DetectionScores({k: v[0] for k, v in values.items()}, {k: v[1] for k, v in values.items()},
                           intersection_scores(binary, gt), collar_scores(binary, gt), len(clips),
                           classes_with_references(gt))


__all__ = ["INTERSECTION_DTC", "INTERSECTION_GTC", "PSDS1", "PSDS2", "SCENARIOS", "DetectionScores", "PsdsScenario",
           "binarize_frames", "classes_with_references", "collar_scores", "detection_scores", "ground_truth",
           "intersection_scores", "psds"]
