"""sed_eval itself, with the task's settings: the reference the fast metrics are checked against."""

from __future__ import annotations

import warnings
from typing import Any

from kdsed.constants import CLASS_INDEX, CLASSES, OFFSET_COLLAR_RATE, ONSET_COLLAR_S
from kdsed.events import Event, EventTable
from kdsed.metrics.fast import EventScores, Fpr


def _import_sed_eval() -> Any:
    try:
        with warnings.catch_warnings():
            # dcase_util imports pkg_resources, which warns about its own deprecation.
            warnings.simplefilter("ignore")
            import sed_eval
    except ImportError as e:
        raise ImportError(f"sed_eval is needed for the reference metrics (pip install 'sed_eval>=0.2.1'): {e}") from e
    return sed_eval


def task_event_metric(sed_eval: Any) -> Any:
    """A fresh `sed_eval.sound_event.EventBasedMetrics` with the DCASE 2018 Task 4 settings."""
    return sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(CLASSES),
        evaluate_onset=True,
        evaluate_offset=True,
        t_collar=float(ONSET_COLLAR_S),
        percentage_of_length=float(OFFSET_COLLAR_RATE),
        event_matching_type="optimal",
        empty_system_output_handling="zero_score",
    )


def _event_dicts(filename: str, events: list[Event]) -> list[dict[str, Any]]:
    for e in events:
        if e.label not in CLASS_INDEX:
            raise ValueError(f"{filename}: unknown class label {e.label!r}; expected one of {', '.join(CLASSES)}")
    return [{"filename": filename, "onset": e.onset_s, "offset": e.offset_s, "event_label": e.label} for e in events]


def sed_eval_scores(reference: EventTable, estimated: EventTable) -> EventScores:
    """Event-based scores computed by sed_eval, file by file over every clip of `reference`."""
    unknown = sorted(set(estimated) - set(reference))
    if unknown:
        raise ValueError(f"estimated events for {len(unknown)} file(s) not in the reference, e.g. {unknown[0]!r}")
    sed_eval = _import_sed_eval()
    metric = task_event_metric(sed_eval)
    for filename in sorted(reference):
        metric.evaluate(_event_dicts(filename, reference[filename]),
                        _event_dicts(filename, estimated.get(filename, [])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN column
        macro = metric.results_class_wise_average_metrics()["f_measure"]
        micro = metric.overall_f_measure()
    counts = [metric.class_wise[label] for label in CLASSES]
    class_wise = tuple(_fpr(metric.class_wise_f_measure(label)) for label in CLASSES)
    return EventScores(
        tp=tuple(int(c["Ntp"]) for c in counts),
        fp=tuple(int(c["Nfp"]) for c in counts),
        fn=tuple(int(c["Nfn"]) for c in counts),
        class_wise=class_wise,
        macro=_fpr(macro),
        micro=_fpr(micro),
    )


def _fpr(d: dict[str, float]) -> Fpr:
    return Fpr(float(d["f_measure"]), float(d["precision"]), float(d["recall"]))
