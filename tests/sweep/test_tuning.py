"""Ray Tune's post-processing search (`kdsed.sweep.tuning`) chooses what the serial whole-grid search chooses."""

from __future__ import annotations

import numpy as np
import pytest
from support.builders import CFG, assert_same_choice, random_case

from kdsed.config import PostprocessConfig
from kdsed.search import search_postprocessing

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)  # a search waiting for CPUs would wait forever
def test_tune_postprocessing_equals_the_whole_grid_search(tmp_path):
    import ray

    from kdsed.sweep.tuning import tune_postprocessing

    cases = {name: random_case(seed, n_clips=8) for name, seed in (("deep-none", 20), ("shallow-median", 21))}
    _, reference, files, n_valid = cases["deep-none"]
    probs = {"deep-none": cases["deep-none"][0], "shallow-median": np.clip(cases["deep-none"][0] ** 1.5, 0, 1)}
    grid = PostprocessConfig(median_windows=(1, 3, 5, 9, 15), thresholds=(0.3, 0.5, 0.7))
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_config=ray.LoggingConfig(log_level="ERROR"))
    try:
        tuned = tune_postprocessing(probs, reference, files, n_valid, CFG, grid, n_ranges=2,
                                    storage_path=str(tmp_path / "tune"), name="test")
        # While a round of units holds every CPU, the coordinator's search asks for none and still runs.
        @ray.remote(num_cpus=2)
        class CpuHolder:  # holds its CPUs, like a round's Ray Train workers
            def ready(self) -> bool:
                return True

        holder = CpuHolder.remote()
        ray.get(holder.ready.remote())
        assert ray.available_resources().get("CPU", 0) == 0
        meanwhile = tune_postprocessing(probs, reference, files, n_valid, CFG, grid, n_ranges=2,
                                        storage_path=str(tmp_path / "tune"), name="test-meanwhile", cpus_per_trial=0)
    finally:
        ray.shutdown()
    for name in probs:
        assert_same_choice(meanwhile[name], tuned[name])
    assert set(tuned) == set(probs)
    for name, p in probs.items():
        assert_same_choice(tuned[name], search_postprocessing(p, reference, files, CFG, grid, n_valid_frames=n_valid))
    assert tuned["deep-none"].thresholds != tuned["shallow-median"].thresholds  # two different searches
