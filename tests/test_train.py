"""Training one variant: the masked loss, determinism, early stopping, prediction and checkpoints."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from kdsed.config import ModelConfig, TrainConfig
from kdsed.constants import NUM_CLASSES
from kdsed.features import FeatureSet
from kdsed.train import (
    TargetSet,
    VariantResult,
    history_table,
    load_checkpoint,
    masked_bce,
    predict,
    save_checkpoint,
    train_variant,
)

TINY = ModelConfig(name="shallow", width=0.125)
FAST = TrainConfig(epochs=2, batch_size=4, learning_rate=1e-2, seed=0)


def features(n: int, seed: int, frames: int = 60, n_mels: int = 64) -> FeatureSet:
    rng = np.random.default_rng(seed)
    n_frames = rng.integers(frames // 2, frames + 1, n)
    n_frames[0] = frames
    x = rng.standard_normal((n, frames, n_mels)).astype(np.float32)
    x[np.arange(frames)[None, :] >= n_frames[:, None]] = 0.0
    return FeatureSet([f"clip{i}.wav" for i in range(n)], x, n_frames)


def targets(n: int, seed: int, frames: int = 60) -> TargetSet:
    rng = np.random.default_rng(seed + 100)
    return TargetSet(features(n, seed, frames),
                     weak=(rng.random((n, NUM_CLASSES)) < 0.3).astype(np.float32),
                     strong=(rng.random((n, frames, NUM_CLASSES)) < 0.3).astype(np.float32))


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def losses(result: VariantResult) -> list[tuple[int, float, float]]:
    return [(h.epoch, h.train_loss, h.val_loss) for h in result.history]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train fastest on one thread; two threads contend with other tests on 2 shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[TargetSet, TargetSet]:
    return targets(12, 0), targets(4, 1)


# --- masked_bce ------------------------------------------------------------------------------------


def test_masked_bce_against_a_hand_computation():
    probs = torch.tensor([[0.9, 0.2, 0.7], [0.5, 1.0, 0.3]], dtype=torch.float64)
    target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [False, True, True]])
    # kept: -ln 0.9, -ln 0.8, -ln(1 - clamp(1.0)) = -ln 1e-7, -ln 0.3
    expected = (-math.log(0.9) - math.log(0.8) - math.log(1e-7) - math.log(0.3)) / 4
    assert float(masked_bce(probs, target, mask)) == pytest.approx(expected, rel=1e-6)
    assert float(masked_bce(probs, target, torch.zeros_like(mask))) == 0.0
    every = masked_bce(probs, target, torch.ones_like(mask))
    assert float(every) == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), target)))


# --- TargetSet -------------------------------------------------------------------------------------


def test_target_set_refuses_bad_features_and_targets():
    fs = features(3, 0)
    bad = dataclasses.replace(fs, features=fs.features.copy())
    bad.features[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="features contain NaN or infinite"):
        TargetSet(bad)
    bad.features[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="features contain NaN or infinite"):
        TargetSet(bad)
    weak = np.zeros((3, NUM_CLASSES), np.float32)
    weak[0, 0] = np.inf
    with pytest.raises(ValueError, match="weak targets contain infinite"):
        TargetSet(fs, weak=weak)
    with pytest.raises(ValueError, match=r"weak targets have shape \(3, 9\), expected \(3, 10\)"):
        TargetSet(fs, weak=np.zeros((3, 9), np.float32))
    with pytest.raises(ValueError, match=r"strong targets have shape \(3, 59, 10\), expected \(3, 60, 10\)"):
        TargetSet(fs, strong=np.zeros((3, 59, NUM_CLASSES), np.float32))
    weak[0, 0] = np.nan  # NaN is allowed: "no target"
    assert np.isnan(TargetSet(fs, weak=weak).weak[0, 0])


# --- train_variant ---------------------------------------------------------------------------------


def test_training_is_deterministic_for_a_seed(data):
    train, val = data
    a = train_variant(TINY, FAST, train, val)
    b = train_variant(TINY, FAST, train, val)
    assert same_state(a.state_dict, b.state_dict)
    assert losses(a) == losses(b) and a.best_epoch == b.best_epoch
    other = train_variant(TINY, dataclasses.replace(FAST, seed=1), train, val)
    assert not same_state(a.state_dict, other.state_dict)
    assert losses(other) != losses(a)
    assert len(a.history) == 2 and all(math.isfinite(v) for _, t, v in losses(a) for v in (t, v))
    assert a.train_clips_per_s > 0 and a.train_time_s > 0
    assert history_table(a.history)["val_loss"] == [h.val_loss for h in a.history]


def test_improving_run_keeps_the_last_epoch(data):
    train, _ = data
    ones = TargetSet(train.features, weak=np.ones((12, NUM_CLASSES), np.float32))
    cfg = TrainConfig(epochs=4, batch_size=4, learning_rate=1e-2, patience=2, strong_loss_weight=0.0)
    seen = []
    result = train_variant(TINY, cfg, ones, ones, on_epoch=seen.append)
    val = [h.val_loss for h in result.history]
    assert val == sorted(val, reverse=True) and len(set(val)) == 4  # strictly better every epoch
    assert result.best_epoch == 4 and [h.epoch for h in seen] == [1, 2, 3, 4]


def test_early_stopping_after_patience_epochs_without_improvement(data, tmp_path):
    train, val = data
    # training pushes every output to 1 while validation wants 0: only epoch 1 is a best
    up = TargetSet(train.features, weak=np.ones((12, NUM_CLASSES), np.float32))
    down = TargetSet(val.features, weak=np.zeros((4, NUM_CLASSES), np.float32))
    cfg = TrainConfig(epochs=10, batch_size=4, learning_rate=1e-2, patience=2, strong_loss_weight=0.0)
    result = train_variant(TINY, cfg, up, down, checkpoint_dir=tmp_path)
    val_losses = [h.val_loss for h in result.history]
    assert result.best_epoch == 1 and len(result.history) == 1 + cfg.patience
    assert min(val_losses) == val_losses[0] and val_losses[1] > val_losses[0]
    # the returned weights are those of the best epoch: they reproduce its validation loss
    _, clip = predict(result.model(), down.features, device="cpu")
    assert float(np.mean(-np.log(1 - np.clip(clip, 1e-7, 1 - 1e-7)))) == pytest.approx(val_losses[0], rel=1e-4)
    _, saved, _ = load_checkpoint(tmp_path / "model.pt")
    assert same_state(saved, result.state_dict)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["best_epoch"] == 1


def test_nan_targets_are_masked(data):
    train, val = data
    weak = train.weak.copy()
    weak[::2] = np.nan  # half the clips have no clip target
    strong = train.strong.copy()
    strong[1::2] = np.nan  # the other half no frame target
    result = train_variant(TINY, FAST, TargetSet(train.features, weak=weak, strong=strong), val)
    assert all(math.isfinite(h.train_loss) and math.isfinite(h.val_loss) for h in result.history)
    assert all(torch.isfinite(t).all() for t in result.state_dict.values() if t.is_floating_point())

    unlabeled = TargetSet(train.features, weak=np.full_like(weak, np.nan))
    nothing = train_variant(TINY, FAST, unlabeled, TargetSet(val.features))
    assert [(h.train_loss, h.val_loss) for h in nothing.history] == [(0.0, 0.0), (0.0, 0.0)]


def test_trains_on_features_with_another_number_of_bands():
    fs = features(4, 0, n_mels=128)  # the shallow model pools frequency by 4 x 4 x 4 = 64
    data = TargetSet(fs, weak=np.zeros((4, NUM_CLASSES), np.float32))
    result = train_variant(TINY, dataclasses.replace(FAST, epochs=1), data, data)
    frames, _ = predict(result.model(), fs, device="cpu")
    assert frames.shape == (4, 60, NUM_CLASSES) and result.n_mels == 128


# --- predict and checkpoints -----------------------------------------------------------------------


def test_predict_shapes_padding_and_clip_average(data):
    train, _ = data
    model = train_variant(TINY, dataclasses.replace(FAST, epochs=1), train, train).model()
    fs = train.features
    frames, clips = predict(model, fs, batch_size=5, device="cpu")
    assert frames.shape == (12, 60, NUM_CLASSES) and clips.shape == (12, NUM_CLASSES)
    assert frames.dtype == np.float32 and clips.dtype == np.float32
    assert np.all((frames >= 0) & (frames <= 1)) and np.all((clips > 0) & (clips < 1))
    for i, n in enumerate(fs.n_frames):
        assert np.all(frames[i, n:] == 0.0)
        np.testing.assert_allclose(clips[i], frames[i, :n].mean(axis=0), rtol=1e-4, atol=1e-6)
    one_batch, _ = predict(model, fs, batch_size=64, device="cpu")
    np.testing.assert_allclose(one_batch, frames, atol=1e-5)


def test_checkpoint_round_trip(data, tmp_path):
    train, val = data
    result = train_variant(TINY, dataclasses.replace(FAST, epochs=1), train, val)
    path = save_checkpoint(result, tmp_path / "ckpt")
    assert path == tmp_path / "ckpt" / "model.pt"
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left
    model_cfg, state, n_mels = load_checkpoint(path)
    assert model_cfg == TINY
    assert same_state(state, result.state_dict)
    blob = torch.load(path, weights_only=True)
    assert blob["train_config"]["epochs"] == 1 and blob["best_epoch"] == result.best_epoch
    again = VariantResult(model_cfg, result.train_config, state).model()
    f1, _ = predict(again, val.features, device="cpu")
    f2, _ = predict(result.model(), val.features, device="cpu")
    np.testing.assert_array_equal(f1, f2)


def test_fp16_is_full_precision_on_the_cpu(data):
    """fp16 autocast applies on CUDA only: on the CPU the same seed gives the same weights as `none`."""
    from kdsed.train import autocast, grad_scaler

    cpu = torch.device("cpu")
    assert not grad_scaler(cpu, "fp16").is_enabled() and not grad_scaler(cpu, "bf16").is_enabled()
    with autocast(cpu, "fp16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    train, val = data
    plain = train_variant(TINY, FAST, train, val)
    fp16 = train_variant(TINY, dataclasses.replace(FAST, mixed_precision="fp16"), train, val)
    assert same_state(plain.state_dict, fp16.state_dict) and losses(plain) == losses(fp16)


def test_bf16_trains_in_bf16_on_the_cpu(data):
    """bf16 autocast applies on the CPU: convolutions and products run in bf16, the weights stay fp32, and the
    losses follow the fp32 run's closely without being equal to them."""
    from kdsed.models import build_model
    from kdsed.train import autocast

    cpu = torch.device("cpu")
    model = build_model(TINY)
    with autocast(cpu, "bf16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv(torch.randn(2, conv.in_channels, 8, 8)).dtype == torch.bfloat16
        frame_probs, clip_probs = model(torch.randn(2, 240, 64), torch.tensor([240, 200]))
    assert torch.isfinite(frame_probs.float()).all() and torch.isfinite(clip_probs.float()).all()
    train, val = data
    plain = train_variant(TINY, FAST, train, val)
    bf16 = train_variant(TINY, dataclasses.replace(FAST, mixed_precision="bf16"), train, val)
    assert all(v.dtype == torch.float32 for v in bf16.state_dict.values() if v.is_floating_point())
    assert not same_state(plain.state_dict, bf16.state_dict)
    np.testing.assert_allclose(losses(bf16), losses(plain), rtol=0.05)


def test_mixed_precision_key_is_checked():
    from kdsed.config import ConfigError, from_dict

    assert from_dict(TrainConfig, {"mixed_precision": "bf16"}).mixed_precision == "bf16"
    with pytest.raises(ConfigError, match="mixed_precision"):
        from_dict(TrainConfig, {"mixed_precision": "fp8"})
