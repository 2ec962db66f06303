"""From a data config to normalised features and targets, ready for training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdsed.config import DataConfig, FeatureConfig
from kdsed.constants import CLASS_INDEX, EVAL, NUM_CLASSES, TEST, TRAIN_SUBSETS, WEAK
from kdsed.data import Clip, DcaseDataset, load_dataset
from kdsed.events import EventTable, MetadataError
from kdsed.features import FeaturePool, FeatureSet, Normalizer, load_features
from kdsed.postprocess import events_to_frame_targets


@dataclass
class PreparedData:
    """Normalised features of every subset, the weak targets and the references."""

    dataset: DcaseDataset
    feature_config: FeatureConfig
    normalizer: Normalizer
    subsets: dict[str, FeatureSet]  # subset name -> normalised features
    train: FeatureSet  # weak + in-domain + out-of-domain, in that order
    train_subset: np.ndarray  # (n_train,) subset name of each training clip
    weak_targets: np.ndarray  # (n_train, classes): true tags for weak clips, NaN for unlabeled

    @property
    def n_weak(self) -> int:
        return int(np.sum(self.train_subset == WEAK))

    def reference(self, subset: str) -> EventTable:
        return self.dataset.reference_table(subset)

    def strong_targets(self, subset: str) -> np.ndarray:
        """Frame targets (n, frames, classes) from a strongly labelled subset's references."""
        fs, ref = self.subsets[subset], self.reference(subset)
        return np.stack([events_to_frame_targets(ref.get(f, []), self.feature_config, fs.features.shape[1])
                         for f in fs.filenames])

    def hidden_reference(self) -> EventTable | None:
        """True strong labels of the training clips (synthetic set only)."""
        table: EventTable = {}
        for subset in TRAIN_SUBSETS:
            hidden = self.dataset.hidden_table(subset) if subset in self.dataset.clips else None
            if hidden is None:
                return None
            table.update(hidden)
        return {f: table[f] for f in self.train.filenames if f in table}


def resolve_data_root(cfg: DataConfig, *, progress: bool = True) -> Path:
    """The data folder: the configured one, or the synthetic set (generated on first use)."""
    if cfg.root:
        root = Path(cfg.root)
        if not root.is_dir():
            raise MetadataError(f"data.root {root}: not a folder; expected a DCASE 2018 Task 4 / DESED folder with "
                                "metadata/ and audio/")
        return root
    from kdsed.data.synth import generate

    root = Path(cfg.workdir) / "data" / f"synth-{cfg.synth_preset}-seed{cfg.synth_seed}"
    return generate(root, cfg.synth_preset, cfg.synth_seed, progress=progress)


def weak_matrix(tags: list[tuple[str, ...] | None]) -> np.ndarray:
    """Multi-hot clip targets; rows of None become NaN (no target)."""
    out = np.full((len(tags), NUM_CLASSES), np.nan, np.float32)
    for i, labels in enumerate(tags):
        if labels is not None:
            out[i] = 0.0
            out[i, [CLASS_INDEX[label] for label in labels]] = 1.0
    return out


def used_clips(dataset: DcaseDataset, cfg: DataConfig) -> dict[str, list[Clip]]:
    """The clips of every subset that a run reads (unlabeled subsets capped by `max_unlabeled_per_subset`)."""
    out = {}
    for subset in (*TRAIN_SUBSETS, TEST, EVAL):
        clips = dataset.subset(subset)
        if subset != WEAK and subset in TRAIN_SUBSETS and cfg.max_unlabeled_per_subset:
            clips = clips[: cfg.max_unlabeled_per_subset]
        out[subset] = clips
    return out


def prepare_data(data_cfg: DataConfig, feature_cfg: FeatureConfig, *, progress: bool = True) -> PreparedData:
    """Load the data set, extract (or load cached) features, normalise with training statistics."""
    root = resolve_data_root(data_cfg, progress=progress)
    dataset = load_dataset(root)
    cache = Path(data_cfg.workdir) / "features"
    clips_by_subset = used_clips(dataset, data_cfg)
    with FeaturePool() as pool:  # started at the first subset not in the cache, shared by the others
        raw = {subset: load_features(clips, feature_cfg, cache, pool=pool, progress=progress, label=subset)
               for subset, clips in clips_by_subset.items()}
    normalizer = Normalizer.fit([raw[s] for s in TRAIN_SUBSETS])
    subsets = {name: normalizer.apply(fs) for name, fs in raw.items()}
    train = FeatureSet(
        [f for s in TRAIN_SUBSETS for f in subsets[s].filenames],
        np.concatenate([subsets[s].features for s in TRAIN_SUBSETS]),
        np.concatenate([subsets[s].n_frames for s in TRAIN_SUBSETS]),
    )
    train_subset = np.array([s for s in TRAIN_SUBSETS for _ in subsets[s].filenames])
    tags = [c.weak_labels if s == WEAK else None for s in TRAIN_SUBSETS for c in clips_by_subset[s]]
    return PreparedData(dataset, feature_cfg, normalizer, subsets, train, train_subset, weak_matrix(tags))
