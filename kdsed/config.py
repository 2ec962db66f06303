"""Dataclass configs, one per concern, with a validated YAML form.

Every config is a frozen dataclass with defaults. `from_dict` checks each key
and type and names the offending key in its error, so a typo in a sweep YAML
fails at start-up and not an hour into a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kdsed.atomic import write_text_atomic
from kdsed.constants import (CLIP_DURATION_S, DEFAULT_STORAGE, DEFAULT_TRACKING_URI, DEFAULT_WORKDIR,
                             MLFLOW_EXPERIMENT, Seconds)
from kdsed.yaml_input import YamlInputError, read_yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration has an unknown key, a wrong type or an impossible value."""


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel features as in the report: 64 bands, 64 ms frames, 22.5 ms overlap.

    At 16 kHz a 64 ms window is 1024 samples and a 41.5 ms hop 664 samples;
    without centre padding a 10 s clip gives 1 + (160000 - 1024) // 664 = 240
    frames, the report's 240 x 64 input.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 664
    n_mels: int = 64
    fmin_hz: float = 0.0
    fmax_hz: float = 8000.0
    clip_duration_s: Seconds = CLIP_DURATION_S

    def validate(self) -> None:
        _require(self.sample_rate > 0, "sample_rate", "must be > 0")
        _require(0 < self.hop_length <= self.n_fft, "hop_length", "must be in (0, n_fft]")
        _require(self.n_mels > 0, "n_mels", "must be > 0")
        _require(0 <= self.fmin_hz < self.fmax_hz <= self.sample_rate / 2, "fmin_hz",
                 "must satisfy 0 <= fmin_hz < fmax_hz <= sample_rate / 2")
        _require(self.clip_samples >= self.n_fft, "clip_duration_s", "clip shorter than one frame")

    @property
    def hop_s(self) -> Seconds:
        return self.hop_length / self.sample_rate

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_duration_s * self.sample_rate))

    @property
    def frames_per_clip(self) -> int:
        return 1 + (self.clip_samples - self.n_fft) // self.hop_length

    @property
    def frame_offset_s(self) -> Seconds:
        """Start time of frame 0's hop-long cell: frame i covers [offset + i*hop, offset + (i+1)*hop)."""
        return (self.n_fft - self.hop_length) / 2 / self.sample_rate

    def frames_for_samples(self, n_samples: int) -> int:
        """Number of frames for a signal of `n_samples` (at least one, short clips are padded)."""
        return 1 + max(0, n_samples - self.n_fft) // self.hop_length

    def digest(self) -> str:
        return config_digest(self)


@dataclass(frozen=True)
class PostprocessConfig:
    """The grids searched per class: smoothing window (frames), Gaussian sigma (frames), threshold.

    Windows reach 121 frames (5.0 s at the 41.5 ms hop): long sounds (Vacuum cleaner, Frying, Running water)
    choose windows beyond the 33 frames (1.4 s) of kdsed's first grid (docs/ablations.md measures it).
    """

    median_windows: tuple[int, ...] = (1, 3, 5, 9, 13, 17, 25, 33, 49, 65, 81, 101, 121)
    gaussian_sigmas: tuple[float, ...] = (0.0,)
    thresholds: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))

    def validate(self) -> None:
        _require(len(self.median_windows) > 0 and all(w >= 1 for w in self.median_windows),
                 "median_windows", "must be a non-empty list of integers >= 1")
        _require(all(s >= 0 for s in self.gaussian_sigmas) and len(self.gaussian_sigmas) > 0,
                 "gaussian_sigmas", "must be a non-empty list of values >= 0")
        _require(len(self.thresholds) > 0 and all(0 < t < 1 for t in self.thresholds),
                 "thresholds", "must be a non-empty list of values in (0, 1)")


@dataclass(frozen=True)
class ModelConfig:
    """Which network and how wide: `width` scales every channel count (1.0 = the report's sizes)."""

    name: typing.Literal["deep", "shallow", "baseline"] = "deep"
    width: float = 1.0
    rnn_hidden: int = 128
    dropout: float = 0.0

    def validate(self) -> None:
        _require(self.width > 0, "width", "must be > 0")
        _require(self.rnn_hidden > 0, "rnn_hidden", "must be > 0")
        _require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one variant: Adam, early stopping on validation loss, seeded."""

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 5
    seed: int = 0
    weak_loss_weight: float = 1.0
    strong_loss_weight: float = 1.0
    device: str = "auto"
    num_threads: int = 0
    # autocast: bf16 on CUDA and on the CPU, fp16 (with a grad scaler) on CUDA only
    mixed_precision: typing.Literal["none", "bf16", "fp16"] = "none"

    def validate(self) -> None:
        _require(self.epochs >= 1, "epochs", "must be >= 1")
        _require(self.batch_size >= 1, "batch_size", "must be >= 1")
        _require(self.learning_rate > 0, "learning_rate", "must be > 0")
        _require(self.patience >= 1, "patience", "must be >= 1")
        _require(self.weak_loss_weight >= 0 and self.strong_loss_weight >= 0, "weak_loss_weight",
                 "loss weights must be >= 0")
        _require(self.num_threads >= 0, "num_threads", "must be >= 0 (0 = torch default)")
        _require_seed(self.seed, "seed")


Smoothing = typing.Literal["none", "median", "median+gaussian"]


@dataclass(frozen=True)
class VariantSpec:
    """One model variant of a pass >= 2: which network, trained on which smoothing of the pseudo-labels."""

    model: typing.Literal["deep", "shallow"] = "deep"
    smoothing: Smoothing = "none"

    @property
    def name(self) -> str:
        return f"{self.model}-{self.smoothing}"


ALL_VARIANTS: tuple[VariantSpec, ...] = tuple(
    VariantSpec(m, s) for m in ("deep", "shallow") for s in ("none", "median", "median+gaussian"))


@dataclass(frozen=True)
class DataConfig:
    """Where the clips come from: a DCASE 2018 / DESED folder, or the built-in synthetic set."""

    root: typing.Optional[str] = None
    synth_preset: str = "mini"
    synth_seed: int = 0
    max_unlabeled_per_subset: int = 0  # 0 = use every unlabeled clip
    workdir: str = DEFAULT_WORKDIR

    def validate(self) -> None:
        _require(self.max_unlabeled_per_subset >= 0, "max_unlabeled_per_subset", "must be >= 0")
        _require_seed(self.synth_seed, "synth_seed")


@dataclass(frozen=True)
class DistillConfig:
    """The passes of iterative knowledge distillation and how pseudo-labels are made."""

    passes: int = 4
    variants: tuple[VariantSpec, ...] = ALL_VARIANTS
    #: Pass 1's clip targets of unlabeled clips from the tagger's clip probabilities: "soft" keeps the
    #: probabilities, "tuned" thresholds them per class at the value that maximises the clip-level F1 of the tagger
    #: on the `test` tags (kdsed.baseline_recipe), "hard" at `pseudo_weak_threshold`. Soft is the default: pass 1
    #: scores +3.23 [+1.60, +4.86] points over tuned and tuned -2.00 [-3.72, -0.15] under hard (docs/ablations.md).
    pseudo_weak: typing.Literal["tuned", "soft", "hard"] = "soft"
    pseudo_weak_threshold: float = 0.5
    #: What a pass hands the next as frame targets: "hard" = the events its per-class winners detect under their own
    #: post-processing (median window, threshold) as 0/1 frames, "soft" = their frame probabilities. Hard is the
    #: default: pass 2 learns +1.57 [-0.49, +3.66] (deep) and +5.06 [+3.16, +7.24] (shallow) points better from them
    #: (docs/ablations.md).
    pseudo_strong: typing.Literal["hard", "soft"] = "hard"
    #: Which model of a pass makes those targets: "winners" = per class, the variant that scores best on `test`
    #: (the paper's choice); "ensemble" = the mean of all the pass's variants' frame probabilities, post-processed
    #: as the whole-grid search chooses on `test` for that mean (a pass of one variant hands on its own either way).
    #: The final results and the registry stay the per-class winners' (`python -m kdsed.ablations --only teacher`).
    pseudo_teacher: typing.Literal["winners", "ensemble"] = "winners"
    pseudo_median_window: int = 9
    pseudo_gaussian_sigma: float = 2.0
    mask_weak_clips: bool = True
    run_baseline: bool = True
    #: The upper reference: the deep and shallow models trained on the hidden true strong labels of the training
    #: clips (synthetic data only; skipped with a note elsewhere). Never a candidate for the registry.
    run_topline: bool = True

    def validate(self) -> None:
        _require(self.passes >= 1, "passes", "must be >= 1")
        _require(len(self.variants) >= 1, "variants", "must name at least one variant")
        names = [v.name for v in self.variants]
        _require(len(set(names)) == len(names), "variants", f"has duplicates: {names}")
        _require(0 < self.pseudo_weak_threshold < 1, "pseudo_weak_threshold", "must be in (0, 1)")
        _require(self.pseudo_median_window >= 1, "pseudo_median_window", "must be >= 1 frame")
        _require(self.pseudo_gaussian_sigma > 0, "pseudo_gaussian_sigma", "must be > 0 frames")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one run of the method (the `sweeps/*.yaml` form)."""

    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    deep: ModelConfig = ModelConfig(name="deep")
    shallow: ModelConfig = ModelConfig(name="shallow")
    baseline: ModelConfig = ModelConfig(name="baseline")
    tagging_train: TrainConfig = TrainConfig(strong_loss_weight=0.0)
    train: TrainConfig = TrainConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    distill: DistillConfig = DistillConfig()
    #: Training seeds: the whole method runs once per seed (training seeds `train.seed + i`, i < seeds; the data
    #: stay the same) and the results give the mean and spread over seeds (kdsed.results.format_seed_table).
    seeds: int = 1

    def validate(self) -> None:
        for key, name in (("deep", "deep"), ("shallow", "shallow"), ("baseline", "baseline")):
            _require(getattr(self, key).name == name, f"{key}.name", f"must be {name!r}")
        _require(self.seeds >= 1, "seeds", "must be >= 1")

    def seeded(self, i: int) -> "ExperimentConfig":
        """The config of the i-th seed of `seeds`: both trainings seeded `seed + i`, one seed."""
        return dataclasses.replace(self, seeds=1, tagging_train=dataclasses.replace(
            self.tagging_train, seed=self.tagging_train.seed + i), train=dataclasses.replace(self.train,
                                                                                            seed=self.train.seed + i))

    def model_config(self, model: str) -> ModelConfig:
        return {"deep": self.deep, "shallow": self.shallow, "baseline": self.baseline}[model]


@dataclass(frozen=True)
class RayConfig:
    """How the sweep uses Ray: where, with how many workers and resources per variant."""

    address: typing.Optional[str] = None  # None: a local Ray; "auto" or HOST:PORT: an existing cluster
    workers_per_variant: int = 1  # > 1: data-parallel training of one variant (DDP)
    use_gpu: typing.Literal["auto", "yes", "no"] = "auto"
    cpus_per_variant: float = 0.0  # 0: the cluster's CPUs shared evenly by the variants of a pass
    max_failures: int = 2  # Ray Train retries of a failed worker group
    tune_trials_per_variant: int = 3  # post-processing search: window ranges searched in parallel
    node_resource_prefix: str = ""  # e.g. "node_": record which custom node resource each variant ran on
    units_per_gpu: int = 0  # GPUs: 0 = the units of a pass share the GPUs evenly when they outnumber them; N = N workers per GPU

    def validate(self) -> None:
        _require(self.workers_per_variant >= 1, "workers_per_variant", "must be >= 1")
        _require(self.units_per_gpu >= 0, "units_per_gpu", "must be >= 0 (0 = share the GPUs evenly)")
        _require(self.cpus_per_variant >= 0, "cpus_per_variant", "must be >= 0")
        _require(self.max_failures >= 0, "max_failures", "must be >= 0")
        _require(self.tune_trials_per_variant >= 1, "tune_trials_per_variant", "must be >= 1")


@dataclass(frozen=True)
class TrackingConfig:
    """Where results go: the MLflow store and the sweep storage (checkpoints, Parquet pseudo-labels)."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = MLFLOW_EXPERIMENT
    storage: str = DEFAULT_STORAGE  # local folder, or s3://... on a cluster

    def validate(self) -> None:
        _require(bool(self.tracking_uri), "tracking_uri", "must not be empty")
        _require(bool(self.storage), "storage", "must not be empty")


def with_threads(cfg: ExperimentConfig, threads: int) -> ExperimentConfig:
    """`cfg` with both trainings (tagging and frame-level) on `threads` torch threads."""
    return dataclasses.replace(cfg, tagging_train=dataclasses.replace(cfg.tagging_train, num_threads=threads),
                               train=dataclasses.replace(cfg.train, num_threads=threads))


@dataclass(frozen=True)
class SweepConfig(ExperimentConfig):
    """An experiment plus how to distribute and track it (the `sweeps/*.yaml` form)."""

    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig()


def _require(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {what}")


#: Seeds are numpy / torch seeds: 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def _require_seed(seed: int, key: str) -> None:
    _require(0 <= seed <= MAX_SEED, key, f"{seed} is not a seed; expected an integer from 0 to {MAX_SEED}")


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 6, 6, 6, 80, 80


def short_repr(value: Any) -> str:
    """`repr(value)` cut to a few items and levels (an error message stays one short line for any input)."""
    return _SHORT.repr(value)


def config_digest(cfg: Any) -> str:
    """A short stable hash of a config (for cache keys)."""
    payload = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


#: Config keys that do not change what a sweep computes: where its files go, how Ray runs it, how many
#: passes it is asked for (more passes continue it), which data folder holds the clips (the data is
#: identified by its metadata instead) and where its work files and feature cache live.
NOT_RESULTS: tuple[str, ...] = (
    "tracking", "ray", "distill.passes", "data.root", "data.workdir",
    "train.device", "train.num_threads", "tagging_train.device", "tagging_train.num_threads",
)


def results_config(cfg: "SweepConfig", *, data_fingerprint: str | None = None) -> dict[str, Any]:
    """What defines a sweep's results, as flat `section.key -> value`: the config less NOT_RESULTS, plus the data.

    `data_fingerprint` identifies a data folder by its metadata (None: the synthetic set, fixed by its
    preset and seed).
    """
    flat = flat_dict(to_dict(cfg))
    out = {k: v for k, v in flat.items() if not any(k == d or k.startswith(d + ".") for d in NOT_RESULTS)}
    if data_fingerprint is not None:
        out["data.metadata_sha256"] = data_fingerprint
    return out


def results_digest(cfg: "SweepConfig", *, data_fingerprint: str | None = None) -> str:
    """A short stable hash of `results_config`: the key `--resume` matches a sweep by."""
    payload = json.dumps(results_config(cfg, data_fingerprint=data_fingerprint), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def flat_dict(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping with dotted keys (lists are values)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flat_dict(v, _join(prefix, str(k))))
    return out


def to_dict(cfg: Any) -> Any:
    """A config as plain YAML/JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(x) for x in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def from_dict(cls: type[T], data: Any, *, key: str = "") -> T:
    """Build dataclass `cls` from plain data, checking every key and type; errors name the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{key or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"{_join(key, unknown[0])}: unknown key; known keys here: {', '.join(sorted(fields))}"
        )
    values = {name: _coerce(hints[name], data[name], _join(key, name)) for name in data}
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as e:  # validate() names the field; prefix the section it sits in
            raise ConfigError(_join(key, str(e))) from None
    return obj


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key=key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: unexpected value {short_repr(value)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {short_repr(value)} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {short_repr(value)}")
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {short_repr(value)}")
        return {k: _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {short_repr(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {short_repr(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {short_repr(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {short_repr(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {short_repr(value)}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {short_repr(value)}")
        return Path(value)
    return value


def _check_unique_keys(node: yaml.Node | None, key: str = "") -> None:
    """Refuse a key given twice in one mapping (YAML itself keeps the last one silently); errors name its path."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            name, line = _join(key, str(key_node.value)), key_node.start_mark.line + 1
            if name in seen:
                raise ConfigError(f"{name}: given twice (lines {seen[name]} and {line}); expected each key once")
            seen[name] = line
            _check_unique_keys(value_node, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, f"{key}[{i}]")


def load_yaml(cls: type[T], path: Path | str) -> T:
    """Load and validate a config of type `cls` from a YAML file (bounded: kdsed.yaml_input, docs/limits.md)."""
    path = Path(path)
    try:
        node, data = read_yaml(path)
    except YamlInputError as e:
        raise ConfigError(str(e)) from None
    try:
        _check_unique_keys(node)
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def dump_yaml(cfg: Any, path: Path | str) -> None:
    """Write a config as YAML (the resolved form stored beside results), atomically."""
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


__all__ = [
    "ALL_VARIANTS", "ConfigError", "DataConfig", "DistillConfig", "ExperimentConfig", "FeatureConfig",
    "ModelConfig", "RayConfig", "Smoothing", "SweepConfig", "TrackingConfig", "TrainConfig", "VariantSpec", "PostprocessConfig", "config_digest", "dump_yaml", "flat_dict", "results_config", "results_digest",
    "field", "from_dict", "load_yaml", "to_dict",
]
