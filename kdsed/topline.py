"""The topline: the same models trained on the true strong labels of the training clips.

Only the synthetic set knows these labels (`PreparedData.hidden_reference`); a run on
real DCASE data has none and skips the topline. The topline uses hidden labels, so it
measures what the models could reach, never a result of the method.
"""

from __future__ import annotations

import numpy as np

from kdsed.constants import WEAK
from kdsed.events import EventTable, MetadataError
from kdsed.postprocess import events_to_frame_targets
from kdsed.prepare import PreparedData, weak_matrix
from kdsed.train import TargetSet

#: The one-line note a runner prints (and logs) when the data has no hidden labels.
TOPLINE_SKIPPED_NOTE = "topline skipped: the data set has no hidden strong labels of its training clips"


def hidden_events_of_training_clips(data: PreparedData) -> EventTable | None:
    """The true events of every training clip, in `data.train` order; None when the data set has no hidden labels."""
    hidden = data.hidden_reference()
    if hidden is None:
        return None
    missing = [(f, str(s)) for f, s in zip(data.train.filenames, data.train_subset) if f not in hidden]
    if missing:
        name, subset = missing[0]
        raise MetadataError(f"{len(missing)} training clip(s) have no hidden strong labels, e.g. {name!r} of subset "
                            f"{subset!r} (metadata/train/{subset}_strong.tsv); the topline needs them for every clip")
    return {f: hidden[f] for f in data.train.filenames}


def topline_training_set(data: PreparedData) -> TargetSet | None:
    """All training clips with frame targets from their true events; None on data without hidden labels.

    Clip targets: the weak clips' tags as given, and for the other clips the tags of their true events.
    """
    hidden = hidden_events_of_training_clips(data)
    if hidden is None:
        return None
    frames = data.train.features.shape[1]
    strong = np.stack([events_to_frame_targets(hidden[f], data.feature_config, frames) for f in data.train.filenames])
    hidden_tags = weak_matrix([tuple(sorted({e.label for e in hidden[f]})) for f in data.train.filenames])
    is_weak = (data.train_subset == WEAK)[:, None]
    weak = np.where(is_weak, data.weak_targets, hidden_tags).astype(np.float32)
    return TargetSet(data.train, weak=weak, strong=strong)


__all__ = ["TOPLINE_SKIPPED_NOTE", "hidden_events_of_training_clips", "topline_training_set"]
