"""A rough upper bound of a sweep's duration, printed before a long sweep starts.

Work is counted in training clip-epochs per unit (early stopping can only shorten it) plus one
prediction over every clip per unit, and divided by the training speeds of the README's benchmark
(`benchmarks/bench_training.py`, 2 cores): deep R-CNN 14.6 clips/s at width 1.0 and 140.5 at 0.25,
shallow 53.9 and 391.0, the baseline 34.2 at 1.0 (at 0.25 taken to scale as the shallow model);
between and beyond, a power law through the two points. On the laptop sweep this gives 1,010 s of
training for the 948 s measured. Speed is taken to grow with the CPUs
of this machine (a cluster's are not known before Ray starts). Model start-up (~20 s per unit), the
post-processing search and MLflow logging are not counted: the figure is an order of magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kdsed.config import ModelConfig, SweepConfig
from kdsed.constants import EVAL, TEST, TRAIN_SUBSETS, WEAK

#: Training clips/s on 2 cores at width 1.0 and 0.25 (README, "Speed").
MEASURED_CLIPS_PER_S = {"deep": (14.6, 140.5), "shallow": (53.9, 391.0), "baseline": (34.2, 34.2 * 391.0 / 53.9)}
MEASURED_CPUS = 2
PREDICT_SPEEDUP = 3.0  # a forward pass without the backward pass


@dataclass(frozen=True)
class Estimate:
    seconds: float
    cpus: int
    training_clips: int
    units: int

    def describe(self) -> str:
        return (f"up to about {_duration(self.seconds)} on this machine's {self.cpus} CPU(s) ({self.units} models "
                f"trained, on up to {self.training_clips:,} clips each; a rough figure from measured speeds)")


def clips_per_s(model: ModelConfig, cpus: int) -> float:
    """Training speed of `model` at its width on `cpus` CPUs (see the module docstring)."""
    full, quarter = MEASURED_CLIPS_PER_S[model.name]
    exponent = math.log(quarter / full) / math.log(4.0)
    return full * model.width ** (-exponent) * max(1, cpus) / MEASURED_CPUS


def estimate_sweep(cfg: SweepConfig, counts: dict[str, int], cpus: int) -> Estimate:
    """Seconds the sweep of `cfg` may take on `cpus` CPUs, for `counts` clips per subset (all stages, no resume)."""
    cap = cfg.data.max_unlabeled_per_subset
    train = sum(min(n, cap) if cap and s != WEAK else n for s, n in counts.items() if s in TRAIN_SUBSETS)
    weak, scored = counts.get(WEAK, 0), counts.get(TEST, 0) + counts.get(EVAL, 0)
    everything = train + scored

    def unit(model: ModelConfig, clips: int, epochs: int) -> float:
        speed = clips_per_s(model, cpus)
        per_epoch = clips / speed + counts.get(TEST, 0) / (speed * PREDICT_SPEEDUP)
        return epochs * per_epoch + everything / (speed * PREDICT_SPEEDUP)

    tag_epochs, epochs = cfg.tagging_train.epochs, cfg.train.epochs
    seconds = unit(cfg.deep, weak, tag_epochs) + unit(cfg.deep, train, tag_epochs)  # tagging, pass 1
    units = 2
    if cfg.distill.run_baseline:
        seconds += unit(cfg.baseline, weak, tag_epochs)
        units += 1
    per_pass = sum(unit(cfg.model_config(v.model), train, epochs) for v in cfg.distill.variants)
    seconds += (cfg.distill.passes - 1) * per_pass
    units += (cfg.distill.passes - 1) * len(cfg.distill.variants)
    return Estimate(seconds, cpus, train, units)


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


__all__ = ["Estimate", "MEASURED_CLIPS_PER_S", "clips_per_s", "estimate_sweep"]
