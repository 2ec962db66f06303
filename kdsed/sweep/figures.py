"""The figures the coordinator logs to MLflow (drawn by `kdsed.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from kdsed import plots, schema
from kdsed.constants import CLASSES, TEST
from kdsed.prepare import PreparedData
from kdsed.results import StageReport
from kdsed.search import PostprocessChoice, smooth_as_chosen
from kdsed.train import VariantResult

EXAMPLE_CLIPS = 3


def loss_curves(out: Path, name: str, result: VariantResult) -> Path:
    """Training and validation loss of one unit."""
    history = {schema.TRAIN_LOSS: [h.train_loss for h in result.history],
               schema.VAL_LOSS: [h.val_loss for h in result.history]}
    return plots.plot_loss_curves(out / schema.LOSS_CURVES_PNG, history, title=f"{name}: loss per epoch",
                                  best_epoch=result.best_epoch or None)


def example_clips(out: Path, stage: str, data: PreparedData, test_probs: np.ndarray,
                  choice: PostprocessChoice) -> list[Path]:
    """The report's Figure 1 for the first few validation clips that have events."""
    fs, ref = data.subsets[TEST], data.reference(TEST)
    rows = [i for i, f in enumerate(fs.filenames) if ref.get(f)][:EXAMPLE_CLIPS]
    smoothed = smooth_as_chosen(test_probs[rows], choice, fs.n_frames[rows])
    paths = []
    for k, i in enumerate(rows):
        paths.append(plots.plot_clip_predictions(
            out / schema.example_clip_png(k + 1), log_mel=fs.features[i], feature_cfg=data.feature_config,
            reference=ref[fs.filenames[i]], probs=test_probs[i], smoothed=smoothed[k],
            thresholds=choice.thresholds, title=f"{stage}: {fs.filenames[i]} (validation)",
            n_valid_frames=int(fs.n_frames[i])))
    return paths


def _class_f1(scores: dict) -> list[float]:
    return [np.nan if scores["class_wise"][c]["f_measure"] is None else scores["class_wise"][c]["f_measure"]
            for c in CLASSES]


def sweep_summary(out: Path, reports: Sequence[StageReport], variant_names: Sequence[str]) -> list[Path]:
    """Validation F1 per class over the stages, and the pass x class winner matrix."""
    stages = [r for r in reports if r.stage != schema.stage_title(schema.BASELINE)]
    labels = [r.stage for r in stages]
    per_class = np.array([_class_f1(r.val) for r in stages])
    paths = [plots.plot_f1_over_passes(
        out / schema.F1_OVER_PASSES_PNG, {c: per_class[:, j] for j, c in enumerate(CLASSES)}, labels,
        macro=[r.val["macro"]["f_measure"] or np.nan for r in stages], title="Validation event-F1 per class")]
    passes = [r for r in stages if r.winners]
    if passes:
        paths.append(plots.plot_winner_matrix(
            out / schema.WINNER_MATRIX_PNG, [r.winners for r in passes], np.array([_class_f1(r.val) for r in passes]),
            [r.stage for r in passes], list(dict.fromkeys([*variant_names, *(w for r in passes for w in r.winners)]))))
    return paths
