"""Where a pass's units train: CPU shares, torch threads, and GPUs shared when units outnumber them.

The pure rule (`place_units`, `gpu_share`) is checked on cluster shapes; `plan_placement` and the sharing
itself on a local Ray that declares two GPUs it does not have (Ray schedules them like real ones).
"""

from __future__ import annotations

import time

import pytest

from kdsed.config import ConfigError, RayConfig, from_dict
from kdsed.sweep.workers import ClusterShape, gpu_share, place_units

LAPTOP = ClusterShape(cpus=2, gpus=0, largest_node_cpus=2)
ONE_GPU = ClusterShape(cpus=16, gpus=1, largest_node_cpus=16)
FOUR_GPUS = ClusterShape(cpus=64, gpus=4, largest_node_cpus=32)


def test_cpus_shared_evenly_with_one_thread_per_whole_cpu():
    six = place_units(LAPTOP, 6, 1, "auto", 0.0)
    assert (six.use_gpu, six.cpus_per_worker, six.threads, six.gpus_per_worker) == (False, 0.33, 1, 0.0)
    two = place_units(LAPTOP, 2, 1, "auto", 0.0)
    assert (two.cpus_per_worker, two.threads) == (1.0, 1)
    one = place_units(LAPTOP, 1, 1, "auto", 0.0)
    assert (one.cpus_per_worker, one.threads) == (2.0, 2)
    # Never more threads than whole CPUs given: 2.5 CPUs -> 2 CPUs asked, 2 threads.
    assert place_units(ClusterShape(5, 0, 5), 2, 1, "auto", 0.0).threads == 2


def test_gpus_whole_while_they_suffice_then_shared():
    assert place_units(FOUR_GPUS, 4, 1, "auto", 0.0).gpus_per_worker == 1.0
    six = place_units(ONE_GPU, 6, 1, "auto", 0.0)
    assert six.use_gpu and six.gpus_per_worker == 0.1666 and 6 * six.gpus_per_worker <= 1
    assert (six.cpus_per_worker, six.threads) == (0.0, 1)  # Ray Train's default CPU, one thread
    assert place_units(ONE_GPU, 6, 1, "auto", 2.0).cpus_per_worker == 2.0
    # 6 workers on 4 GPUs: 2 per GPU (3 x 0.66 would not fit two to a GPU, so only 4 could run at once).
    assert place_units(FOUR_GPUS, 6, 1, "auto", 0.0).gpus_per_worker == 0.5
    # Data-parallel units: 3 units x 2 workers on 4 GPUs -> 2 workers per GPU.
    assert place_units(FOUR_GPUS, 3, 2, "auto", 0.0).gpus_per_worker == 0.5


def test_units_per_gpu_is_obeyed_and_no_gpu_means_cpu():
    assert place_units(ONE_GPU, 6, 1, "auto", 0.0, units_per_gpu=3).gpus_per_worker == 0.3333
    assert place_units(FOUR_GPUS, 2, 1, "auto", 0.0, units_per_gpu=2).gpus_per_worker == 0.5
    assert not place_units(ONE_GPU, 6, 1, "no", 0.0).use_gpu
    assert gpu_share(0, 6) == 1.0  # use_gpu: yes without GPUs asks one each (and waits, as Ray does)
    assert gpu_share(2, 7) == 0.25 and gpu_share(3, 3) == 1.0


def test_units_per_gpu_key_is_checked():
    assert from_dict(RayConfig, {"units_per_gpu": 4}).units_per_gpu == 4
    with pytest.raises(ConfigError, match="units_per_gpu"):
        from_dict(RayConfig, {"units_per_gpu": -1})


@pytest.mark.slow
def test_six_units_share_two_declared_gpus_at_once():
    """On a Ray with 2 (declared) GPUs, 6 units get a third of a GPU each and all six hold theirs at once."""
    import ray

    from kdsed.sweep.workers import plan_placement

    ray.init(num_cpus=6, num_gpus=2, include_dashboard=False, log_to_driver=False,
             _system_config={"worker_maximum_startup_concurrency": 6})
    try:
        placement = plan_placement(6, 1, "auto", 0.0)
        assert placement.use_gpu and placement.gpus_per_worker == 0.3333 and placement.cpus_per_worker == 0.0

        @ray.remote(num_cpus=0)
        class Barrier:
            def __init__(self) -> None:
                self.arrived = 0

            def arrive(self) -> None:
                self.arrived += 1

            def count(self) -> int:
                return self.arrived

        barrier = Barrier.remote()

        @ray.remote(num_cpus=1, num_gpus=placement.gpus_per_worker)  # Ray Train's default CPU per worker
        def hold() -> tuple[int, list[int]]:
            """Take the share, then wait (at most 3 min) until all six hold theirs: they can only if they fit at once."""
            ray.get(barrier.arrive.remote())
            deadline = time.monotonic() + 180
            while ray.get(barrier.count.remote()) < 6 and time.monotonic() < deadline:
                time.sleep(0.2)
            return ray.get(barrier.count.remote()), [int(i) for i in ray.get_gpu_ids()]

        held = ray.get([hold.remote() for _ in range(6)])
        assert [n for n, _ in held] == [6] * 6, "the six units could not hold their GPU shares at once"
        assert sorted(sum(ids == [g] for _, ids in held) for g in (0, 1)) == [3, 3]
    finally:
        ray.shutdown()


def test_units_at_once_fill_the_cluster_and_a_round_that_does_not_fit_is_split():
    from kdsed.sweep.workers import units_at_once

    two_cores = ClusterShape(2, 0, 2)
    for n in (1, 2, 3, 4, 5, 6, 7):  # an even CPU share always lets every unit of the round run at once
        placement = place_units(two_cores, n, 1, "auto", 0.0)
        assert units_at_once(placement, 2, 0) == n, n
        assert n * placement.cpus_per_worker <= 2
    assert place_units(two_cores, 3, 1, "auto", 0.0).cpus_per_worker == 0.66  # cut, not rounded up to 0.67
    # A share asked for explicitly that does not fit: the round is split into trainers of what fits.
    assert units_at_once(place_units(two_cores, 6, 1, "auto", 2.0), 2, 0) == 1
    assert units_at_once(place_units(ClusterShape(8, 0, 8), 6, 2, "auto", 2.0), 8, 0) == 4
    # GPUs: 6 units at 1/2 GPU on one GPU -> 2 at once; GPU workers without a CPU share ask Ray Train's 1 CPU.
    gpu = place_units(ONE_GPU, 6, 1, "auto", 0.0, units_per_gpu=2)
    assert units_at_once(gpu, 16, 1) == 2 and units_at_once(gpu, 1, 1) == 1
