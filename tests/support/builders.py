"""Builders of tiny test data shared by several test modules (as lhotse's testing/dummies.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from kdsed.bundle import write_class_bundle
from kdsed.config import FeatureConfig, ModelConfig
from kdsed.constants import CLASS_INDEX, CLASSES, NUM_CLASSES
from kdsed.events import Event
from kdsed.features import Normalizer
from kdsed.models import build_model
from kdsed.postprocess import events_to_frame_targets
from kdsed.search import PostprocessChoice

# ---- files ---------------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root` (hidden ones included) -> sha256 of its bytes ('dir' for folders)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(Path(folder, d), root)] = "dir"
        for f in files:
            out[os.path.relpath(Path(folder, f), root)] = hashlib.sha256(Path(folder, f).read_bytes()).hexdigest()
    return out


# ---- class bundles of a tiny model ----------------------------------------------------------------

TINY = ModelConfig(name="shallow", width=0.125)
SHARED = ("Cat", "Dog")  # these two classes' winners are one trained model
FEATURES = FeatureConfig()


def tiny_state(seed: int) -> dict[str, torch.Tensor]:
    """Random weights of the tiny shallow model, seeded."""
    torch.manual_seed(seed)
    return build_model(TINY).state_dict()


def dummy_normalizer() -> Normalizer:
    rng = np.random.default_rng(0)
    return Normalizer(rng.normal(-5, 1, 64).astype(np.float32), rng.uniform(0.5, 2, 64).astype(np.float32))


def class_params(class_name: str, pass_index: int = 1) -> dict:
    """Post-processing and provenance of a dummy winner (distinct per class and pass)."""
    c = CLASS_INDEX[class_name]
    return {"median_window": 2 * c + 1 + 2 * (pass_index - 1), "gaussian_sigma": 0.5 * (c % 3),
            "threshold": round(0.1 + 0.05 * c + 0.01 * (pass_index - 1), 2),
            "provenance": {"pass": pass_index, "variant": f"shallow-v{c % 3}", "val_f1": 0.3 + 0.01 * c,
                           "run_id": f"run-{pass_index}-{c}"}}


def model_seed(class_name: str, pass_index: int = 1) -> int:
    return 100 * pass_index + CLASS_INDEX[SHARED[0] if class_name in SHARED else class_name]


def make_class_bundles(root: Path, pass_index: int = 1, classes: tuple[str, ...] = CLASSES) -> dict[str, Path]:
    """One class bundle per class under `root`; SHARED classes get the same weights."""
    return {name: write_class_bundle(
        root / name, class_name=name, model_config=TINY, state_dict=tiny_state(model_seed(name, pass_index)),
        feature_config=FEATURES, normalizer=dummy_normalizer(), **class_params(name, pass_index))
        for name in classes}



# ---- post-processing search cases -----------------------------------------------------------------

CFG = FeatureConfig()
N_FRAMES = CFG.frames_per_clip


def random_case(seed: int, n_clips: int = 12) -> tuple[np.ndarray, dict[str, list[Event]], list[str], np.ndarray]:
    """Noisy probabilities around random reference events, some clips short (padding frames)."""
    rng = np.random.default_rng(seed)
    files = [f"clip{i}.wav" for i in range(n_clips)]
    n_valid = rng.choice([N_FRAMES, N_FRAMES, 150], size=n_clips)
    reference, x = {}, np.empty((n_clips, N_FRAMES, NUM_CLASSES))
    for i, name in enumerate(files):
        events = []
        for _ in range(rng.integers(0, 5)):
            onset = float(rng.uniform(0, 8.5))
            events.append(Event(round(onset, 3), round(onset + rng.uniform(0.2, 3.0), 3), CLASSES[rng.integers(4)]))
        reference[name] = events
        truth = events_to_frame_targets(events, CFG, N_FRAMES)
        x[i] = np.clip(truth * rng.uniform(0.3, 0.9) + rng.random((N_FRAMES, NUM_CLASSES)) ** 3 * 0.6, 0, 1)
    return x, reference, files, n_valid


def assert_same_choice(merged: PostprocessChoice, whole: PostprocessChoice) -> None:
    assert merged.median_windows == whole.median_windows
    assert merged.gaussian_sigmas == whole.gaussian_sigmas and merged.thresholds == whole.thresholds
    for name in ("f1", "precision", "recall"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)


