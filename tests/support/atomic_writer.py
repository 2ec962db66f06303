"""A large target written by kdsed's own writers, for the tests that kill a writer.

`python atomic_writer.py KIND PATH SEED`

Imports only what KIND needs, so that a subprocess starts quickly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def write_version(kind: str, path: Path | str, seed: int) -> None:
    """Write version `seed` (the same seed, the same bytes) of a large target of `kind` at `path`."""
    rng = np.random.default_rng(seed)
    if kind == "pseudo":
        from kdsed.constants import NUM_CLASSES
        from kdsed.pseudolabels import PseudoLabels, write_pseudo_labels

        n = 2000  # 480,000 rows, 19 MB of probabilities
        probs = rng.uniform(0, 1, (n, 240, NUM_CLASSES)).astype(np.float32)
        write_pseudo_labels(path, PseudoLabels([f"clip{i}.wav" for i in range(n)], probs, np.full(n, 240),
                                               {"seed": seed}))
        return
    import torch

    from kdsed.config import FeatureConfig, ModelConfig, TrainConfig

    weights = {"big": torch.from_numpy(rng.standard_normal(8_000_000).astype(np.float32))}  # 32 MB
    if kind == "checkpoint":
        from kdsed.train import VariantResult, save_checkpoint

        save_checkpoint(VariantResult(ModelConfig(name="shallow"), TrainConfig(seed=seed), weights), path)
    else:
        from kdsed.bundle import write_class_bundle
        from kdsed.features import Normalizer

        write_class_bundle(path, class_name="Dog", model_config=ModelConfig(name="shallow"), state_dict=weights,
                           median_window=3, gaussian_sigma=0.0, threshold=0.5, feature_config=FeatureConfig(),
                           normalizer=Normalizer(np.zeros(64, np.float32), np.ones(64, np.float32)),
                           provenance={"seed": seed})


if __name__ == "__main__":
    write_version(sys.argv[1], sys.argv[2], int(sys.argv[3]))
