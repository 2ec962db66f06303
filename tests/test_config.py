"""Configs: YAML round trip, errors that name the key, digests, and the shipped sweep files."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from kdsed.config import (
    ALL_VARIANTS,
    ConfigError,
    DistillConfig,
    ExperimentConfig,
    FeatureConfig,
    ModelConfig,
    PostprocessConfig,
    RayConfig,
    SweepConfig,
    TrackingConfig,
    TrainConfig,
    VariantSpec,
    config_digest,
    dump_yaml,
    from_dict,
    load_yaml,
    to_dict,
)

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def non_default_sweep() -> SweepConfig:
    """A sweep config that differs from the defaults in every section (and in nested tuples)."""
    return SweepConfig(
        features=FeatureConfig(n_mels=32, fmax_hz=7000.0),
        deep=ModelConfig(name="deep", width=0.25, dropout=0.1),
        shallow=ModelConfig(name="shallow", rnn_hidden=16),
        tagging_train=TrainConfig(epochs=3, strong_loss_weight=0.0),
        train=TrainConfig(epochs=4, batch_size=8, learning_rate=3e-4, patience=2, seed=7),
        postprocess=PostprocessConfig(median_windows=(1, 5), gaussian_sigmas=(0.0, 1.5), thresholds=(0.3, 0.6)),
        distill=DistillConfig(passes=3, variants=(VariantSpec("shallow", "median+gaussian"), VariantSpec("deep")),
                              pseudo_weak="soft", mask_weak_clips=False),
        ray=RayConfig(address="auto", workers_per_variant=2, use_gpu="no", cpus_per_variant=1.5),
        tracking=TrackingConfig(tracking_uri="http://head:5000", storage="s3://bucket/sweep"),
    )


# --- feature geometry --------------------------------------------------------------------------


def test_feature_geometry_matches_the_report():
    cfg = FeatureConfig()
    assert cfg.frames_per_clip == 240
    assert cfg.hop_s == pytest.approx(0.0415)
    assert cfg.frame_offset_s == pytest.approx((1024 - 664) / 2 / 16000)
    assert cfg.clip_samples == 160000


@pytest.mark.parametrize("n_samples, frames", [
    (160000, 240), (96000, 1 + (96000 - 1024) // 664), (500, 1), (1024, 1), (1024 + 663, 1), (1024 + 664, 2),
])
def test_frames_for_samples(n_samples, frames):
    assert FeatureConfig().frames_for_samples(n_samples) == frames


def test_variants_and_model_lookup():
    assert [v.name for v in ALL_VARIANTS] == [
        "deep-none", "deep-median", "deep-median+gaussian", "shallow-none", "shallow-median", "shallow-median+gaussian"]
    cfg = ExperimentConfig()
    assert cfg.model_config("shallow") is cfg.shallow and cfg.model_config("deep").name == "deep"
    assert cfg.tagging_train.strong_loss_weight == 0.0 and cfg.train.strong_loss_weight == 1.0


# --- YAML round trip -------------------------------------------------------------------------------


def test_sweep_config_yaml_round_trip(tmp_path):
    cfg = non_default_sweep()
    path = tmp_path / "sweep.yaml"
    dump_yaml(cfg, path)
    loaded = load_yaml(SweepConfig, path)
    assert loaded == cfg
    assert loaded.distill.variants == (VariantSpec("shallow", "median+gaussian"), VariantSpec("deep", "none"))
    assert loaded.postprocess.gaussian_sigmas == (0.0, 1.5) and isinstance(loaded.postprocess.median_windows, tuple)
    assert "variants:" in path.read_text() and "model: shallow" in path.read_text()


def test_from_dict_of_to_dict_is_identity_and_fills_defaults():
    cfg = non_default_sweep()
    assert from_dict(SweepConfig, to_dict(cfg)) == cfg
    assert from_dict(SweepConfig, {}) == SweepConfig()
    assert from_dict(SweepConfig, None) == SweepConfig()
    partial = from_dict(SweepConfig, {"train": {"epochs": 2}, "ray": None})
    assert partial.train == TrainConfig(epochs=2) and partial.ray == RayConfig()
    assert from_dict(ModelConfig, {"width": 1}).width == 1.0 and isinstance(from_dict(ModelConfig, {"width": 1}).width, float)


def test_to_dict_is_plain_data():
    d = to_dict(non_default_sweep())
    assert d["distill"]["variants"] == [{"model": "shallow", "smoothing": "median+gaussian"},
                                        {"model": "deep", "smoothing": "none"}]
    assert d["postprocess"]["median_windows"] == [1, 5]
    assert d["ray"]["address"] == "auto" and d["data"]["root"] is None


# --- errors name the key ---------------------------------------------------------------------------


@pytest.mark.parametrize("data, message", [
    ({"distill": {"variants": [{"model": "deep", "smooth": "none"}]}}, "distill.variants[0].smooth: unknown key"),
    ({"ray": {"workers": 2}}, "ray.workers: unknown key"),
    ({"trian": {}}, "trian: unknown key"),
    ({"train": {"epochs": "3"}}, "train.epochs: expected an integer, got '3'"),
    ({"train": {"epochs": True}}, "train.epochs: expected an integer"),
    ({"train": {"learning_rate": "fast"}}, "train.learning_rate: expected a number"),
    ({"distill": {"mask_weak_clips": "yes"}}, "distill.mask_weak_clips: expected true or false"),
    ({"data": {"root": 3}}, "data.root: expected a string"),
    ({"postprocess": {"thresholds": 0.5}}, "postprocess.thresholds: expected a list"),
    ({"postprocess": {"median_windows": [1, "3"]}}, "postprocess.median_windows[1]: expected an integer"),
    ({"train": {"epochs": 0}}, "train.epochs: must be >= 1"),
    ({"postprocess": {"thresholds": [0.5, 1.0]}}, "postprocess.thresholds: must be a non-empty list of values in (0, 1)"),
    ({"distill": {"variants": [{"model": "big"}]}}, "distill.variants[0].model: 'big' is not one of 'deep', 'shallow'"),
    ({"distill": {"variants": [{"model": "deep"}, {"model": "deep", "smoothing": "none"}]}},
     "distill.variants: has duplicates"),
    ({"distill": {"variants": []}}, "distill.variants: must name at least one variant"),
    ({"distill": {"pseudo_weak": "fuzzy"}}, "distill.pseudo_weak: 'fuzzy' is not one of 'tuned', 'soft', 'hard'"),
    ({"ray": {"use_gpu": "maybe"}}, "ray.use_gpu: 'maybe' is not one of 'auto', 'yes', 'no'"),
    ({"deep": {"name": "shallow"}}, "deep.name: must be 'deep'"),
    ({"deep": {"name": "huge"}}, "deep.name: 'huge' is not one of"),
    ({"features": "log-mel"}, "features: expected a mapping, got str"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(SweepConfig, data)
    assert message in str(info.value)


def test_unknown_key_lists_the_known_keys():
    with pytest.raises(ConfigError, match="known keys here: .*workers_per_variant"):
        from_dict(SweepConfig, {"ray": {"workers": 2}})


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="^SweepConfig: expected a mapping, got list"):
        from_dict(SweepConfig, [1, 2])


@pytest.mark.parametrize("data, key", [
    ({"tagging_train": {"epochs": 0}}, "tagging_train.epochs"),
    ({"shallow": {"width": 0}}, "shallow.width"),
])
def test_validation_errors_name_the_section_the_value_is_in(data, key):
    with pytest.raises(ConfigError) as info:
        from_dict(SweepConfig, data)
    assert str(info.value).startswith(f"{key}:")


def test_load_yaml_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}: train\.epochs: must be >= 1"):
        load_yaml(SweepConfig, bad)

    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(missing))}: config file not found"):
        load_yaml(SweepConfig, missing)

    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(broken))}, line 2, column 1: not valid YAML: "):
        load_yaml(SweepConfig, broken)

    assert isinstance(ConfigError("x"), ValueError)


def test_empty_yaml_file_gives_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_yaml(SweepConfig, path) == SweepConfig()


# --- digest ----------------------------------------------------------------------------------------


def test_digest_is_stable_and_tracks_changes():
    cfg = FeatureConfig()
    digest = config_digest(cfg)
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert config_digest(FeatureConfig()) == digest == cfg.digest()
    assert config_digest(from_dict(FeatureConfig, to_dict(cfg))) == digest
    assert config_digest(FeatureConfig(n_mels=32)) != digest
    assert config_digest(dataclasses.replace(cfg, hop_length=665)) != digest
    sweep = non_default_sweep()
    assert config_digest(sweep) == config_digest(from_dict(SweepConfig, to_dict(sweep)))
    assert config_digest(dataclasses.replace(sweep, train=TrainConfig(seed=8))) != config_digest(sweep)


# --- the shipped sweep files -----------------------------------------------------------------------


def test_smoke_sweep_loads_with_its_settings():
    cfg = load_yaml(SweepConfig, SWEEPS / "smoke.yaml")
    assert cfg.data.synth_preset == "smoke" and cfg.distill.passes == 2
    assert cfg.distill.variants == (VariantSpec("deep", "none"), VariantSpec("shallow", "median"))
    assert cfg.deep == ModelConfig(name="deep", width=0.125)
    assert cfg.tagging_train.epochs == 2 and cfg.tagging_train.strong_loss_weight == 0.0
    assert cfg.ray.tune_trials_per_variant == 2


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_sweep_file_loads(path, tmp_path):
    cfg = load_yaml(SweepConfig, path)
    assert isinstance(cfg, SweepConfig)
    dump_yaml(cfg, tmp_path / "again.yaml")
    assert load_yaml(SweepConfig, tmp_path / "again.yaml") == cfg


def test_the_default_sweep_is_the_20_minute_budget_and_the_long_one_differs_only_in_its_budget():
    from kdsed.constants import DEFAULT_SWEEP_CONFIG

    assert DEFAULT_SWEEP_CONFIG == SWEEPS / "laptop-fast.yaml"
    fast = load_yaml(SweepConfig, DEFAULT_SWEEP_CONFIG)
    assert fast.data.synth_preset == "mini" and fast.distill.passes == 4
    assert (fast.deep.width, fast.shallow.width, fast.train.epochs, fast.train.batch_size) == (0.125, 0.125, 4, 8)
    laptop, long = load_yaml(SweepConfig, SWEEPS / "laptop.yaml"), load_yaml(SweepConfig, SWEEPS / "laptop-long.yaml")
    assert long.train == dataclasses.replace(laptop.train, epochs=12, patience=3, batch_size=8)
    # everything else as in laptop.yaml, except the pseudo-labels: laptop.yaml keeps those of the README's 3-seed table
    assert (laptop.distill.pseudo_weak, laptop.distill.pseudo_strong) == ("tuned", "soft")
    assert (long.distill.pseudo_weak, long.distill.pseudo_strong) == ("soft", "hard") == (fast.distill.pseudo_weak,
                                                                                          fast.distill.pseudo_strong)
    assert dataclasses.replace(long, train=laptop.train, distill=laptop.distill) == laptop
