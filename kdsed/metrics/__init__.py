"""Event-based metrics of the task: a fast exact implementation, bootstrap intervals, and sed_eval as the reference."""

from kdsed.metrics.bootstrap import (
    BootstrapScores,
    ClipCounts,
    Interval,
    PairedDifference,
    ScoreArrays,
    bootstrap_counts,
    bootstrap_scores,
    paired_difference,
    paired_difference_counts,
    resample_indices,
    resample_weights,
    resampled_scores,
    scores_from_counts,
)
from kdsed.metrics.fast import (
    EventArrays,
    EventScores,
    Fpr,
    class_counts,
    clip_class_counts,
    compatible_pairs,
    event_scores,
    fpr_from_counts,
    match_counts,
)
from kdsed.metrics.reference import sed_eval_scores

__all__ = [
    "BootstrapScores", "ClipCounts", "EventArrays", "EventScores", "Fpr", "Interval", "PairedDifference",
    "ScoreArrays", "bootstrap_counts", "bootstrap_scores", "class_counts", "clip_class_counts", "compatible_pairs",
    "event_scores", "fpr_from_counts", "match_counts", "paired_difference", "paired_difference_counts",
    "resample_indices", "resample_weights", "resampled_scores", "scores_from_counts", "sed_eval_scores",
]
