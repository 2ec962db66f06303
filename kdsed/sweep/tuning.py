"""Ray Tune search of per-class post-processing for every variant of a pass.

One trial scores a whole slice of the grid (a range of median windows x every
threshold) for all classes at once with the fast exact metric; trials are
(variant x window range), so a pass with 6 variants and 3 ranges is 18
trials, not thousands. Per class, the best over the ranges is taken with the
same tie-break as the serial search (smaller window first; `kdsed.search.merge_ranges`),
so the result is exactly what `kdsed.search.search_postprocessing` gives over the whole
grid (tests/test_search.py checks both on random inputs).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np
from ray import tune

# Plain output: no per-pass banner tables and no per-trial TensorBoard chatter (the coordinator logs to MLflow).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.WARNING)

from kdsed.config import FeatureConfig, PostprocessConfig
from kdsed.events import EventTable
from kdsed.sweep.interrupts import keep_handlers
from kdsed.search import PostprocessChoice, merge_ranges, search_postprocessing, window_ranges


def _trial(config: dict[str, Any], inputs: dict[str, Any]) -> None:
    grid = replace(inputs["grid"], median_windows=tuple(config["windows"]))
    choice = search_postprocessing(inputs["probs"][config["variant"]], inputs["reference"], inputs["filenames"],
                                   inputs["feature_config"], grid, n_valid_frames=inputs["n_frames"])
    tune.report({"choice": json.dumps(choice.to_dict())})


def _trial_resources(cpus: float) -> dict[str, float]:
    """A trial's Ray resources. Tune refuses a request of nothing: a trial of no CPU asks for 64 MiB of memory
    (Ray's logical memory resource, which a round of units does not hold)."""
    return {"cpu": cpus} if cpus else {"cpu": 0, "memory": 64 * 2**20}


def tune_postprocessing(probs: Mapping[str, np.ndarray], reference: EventTable, filenames: Sequence[str],
                        n_frames: np.ndarray, feature_cfg: FeatureConfig, grid: PostprocessConfig, *,
                        n_ranges: int, storage_path: str, name: str, cpus_per_trial: float = 1,
                        ) -> dict[str, PostprocessChoice]:
    """Per variant, the per-class (window, threshold) choice, searched with Ray Tune trials.

    `cpus_per_trial=0`: for a search run while a round of units holds the cluster's CPUs (which would
    otherwise keep every trial waiting for the round to end); its trials then run one at a time in one
    reused actor, sharing the cores with the units.
    """
    inputs = {"probs": dict(probs), "reference": reference, "filenames": list(filenames), "n_frames": n_frames,
              "feature_config": feature_cfg, "grid": grid}
    ranges = window_ranges(grid.median_windows, n_ranges)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, inputs=inputs), _trial_resources(cpus_per_trial)),
        param_space={"variant": tune.grid_search(list(probs)), "windows": tune.grid_search(ranges)},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=None if cpus_per_trial else 1),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0),
    )
    with keep_handlers():  # Tune installs signal handlers per search and leaves them (kdsed.sweep.interrupts)
        results = tuner.fit()
    parts: dict[str, list] = {v: [] for v in probs}
    for result in results:
        if result.error:
            raise RuntimeError(f"post-processing trial {result.config} failed: {result.error}")
        parts[result.config["variant"]].append(
            (tuple(result.config["windows"]), PostprocessChoice.from_dict(json.loads(result.metrics["choice"]))))
    return {v: merge_ranges(p) for v, p in parts.items()}
