"""Sound event detection models: the CP-JKU deep and shallow R-CNNs and the DCASE 2018 baseline."""

from __future__ import annotations

import torch

from kdsed.config import ModelConfig
from kdsed.models.baseline import BaselineCRNN
from kdsed.models.rcnn import DeepRCNN, SedModel, ShallowRCNN
from kdsed.models.sru import BiSRU, linear_scan, sru_reference

_MODELS: dict[str, type[SedModel]] = {"deep": DeepRCNN, "shallow": ShallowRCNN, "baseline": BaselineCRNN}


def build_model(cfg: ModelConfig, n_mels: int = 64) -> SedModel:
    """The network named by `cfg.name`, at `cfg.width`, for inputs of `n_mels` bands."""
    cfg.validate()
    if cfg.name not in _MODELS:
        raise ValueError(f"model.name: {cfg.name!r} is not one of {', '.join(map(repr, _MODELS))}")
    model = _MODELS[cfg.name](cfg, n_mels)
    # channels_last: 14-54 % more training clips/s on CPU (oneDNN), measured for all three models.
    return model.to(memory_format=torch.channels_last)


__all__ = [
    "BaselineCRNN", "BiSRU", "DeepRCNN", "SedModel", "ShallowRCNN", "build_model", "linear_scan", "sru_reference",
]
