"""Event-based metrics of the task: a fast exact implementation and sed_eval itself as the reference."""

from kdsed.metrics.fast import (
    EventArrays,
    EventScores,
    Fpr,
    class_counts,
    compatible_pairs,
    event_scores,
    fpr_from_counts,
    match_counts,
)
from kdsed.metrics.reference import sed_eval_scores

__all__ = [
    "EventArrays", "EventScores", "Fpr", "class_counts", "compatible_pairs", "event_scores", "fpr_from_counts",
    "match_counts", "sed_eval_scores",
]
