"""kdsed.models: shapes, probabilities, masking, padding invariance, determinism, sizes."""

from __future__ import annotations

import pytest
import torch

from kdsed.config import ModelConfig
from kdsed.constants import NUM_CLASSES
from kdsed.models import SedModel, build_model

NAMES = ("deep", "shallow", "baseline")


def _model(name: str, width: float = 0.25, seed: int = 0) -> SedModel:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name=name, width=width))


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("width", [0.25, 1.0])
@pytest.mark.parametrize("frames", [240, 100])
def test_output_shapes_and_probability_range(name: str, width: float, frames: int) -> None:
    model = _model(name, width).eval()
    with torch.no_grad():
        frame_probs, clip_probs = model(torch.randn(2, frames, 64))
    assert frame_probs.shape == (2, frames, NUM_CLASSES)
    assert clip_probs.shape == (2, NUM_CLASSES)
    assert bool(((frame_probs >= 0) & (frame_probs <= 1)).all())
    torch.testing.assert_close(clip_probs, frame_probs.mean(dim=1))


@pytest.mark.parametrize("name", NAMES)
def test_clip_output_is_mean_of_valid_frames(name: str) -> None:
    model = _model(name).train()  # the masking must hold in training mode too
    n_frames = torch.tensor([50, 31, 1])
    frame_probs, clip_probs = model(torch.randn(3, 50, 64), n_frames)
    for b, n in enumerate(n_frames.tolist()):
        torch.testing.assert_close(clip_probs[b], frame_probs[b, :n].mean(dim=0))
        assert bool((frame_probs[b, n:] == 0).all())


@pytest.mark.parametrize("name,width", [(n, 0.25) for n in NAMES] + [("deep", 1.0)])
def test_padding_does_not_change_valid_frames(name: str, width: float) -> None:
    model = _model(name, width, seed=3).eval()
    torch.manual_seed(4)
    lengths = [60, 37, 13]
    batch = torch.randn(3, 60, 64)
    batch[1, 37:] = 0.0  # what the caller's padding looks like
    batch[2, 13:] = 50 * torch.randn(47, 64)  # and garbage: must not matter either
    with torch.no_grad():
        frame_b, clip_b = model(batch, torch.tensor(lengths))
        for b, n in enumerate(lengths):
            frame_1, clip_1 = model(batch[b:b + 1, :n])
            torch.testing.assert_close(frame_b[b, :n], frame_1[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(clip_b[b], clip_1[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_parameters_and_outputs(name: str) -> None:
    first, second = _model(name, seed=7), _model(name, seed=7)
    other = _model(name, seed=8)
    for p1, p2 in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(p1, p2)
    assert not all(torch.equal(p1, p3) for p1, p3 in zip(first.parameters(), other.parameters()))
    x = torch.randn(2, 40, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(first.eval()(x), second.eval()(x)))


def test_parameter_counts_at_width_1() -> None:
    # Convs before BatchNorm have no bias; BN has weight + bias (2 * 64 = 128); the head is 256 -> 10.
    # Bi-SRU(d_in, 128): weight d_in x (2 directions * k * 128), k = 3 (x~, f, r) when d_in == 256,
    # k = 4 (plus the skip projection) otherwise; bias 2 directions * 2 gates * 128 = 512.
    head = 256 * 10 + 10  # 2,570
    # deep: conv 1->64 2x2 = 256; seven convs 64->64 2x2 = 7 * 16,384 = 114,688; 8 BN = 1,024;
    # 1x1 conv 64->256 + bias = 16,640; SRU 256 * 768 + 512 = 197,120; head 2,570.
    deep = 256 + 114_688 + 1_024 + 16_640 + 197_120 + head
    assert deep == 332_298
    assert _n_params(_model("deep", 1.0)) == deep
    # shallow: conv 1->64 3x3 = 576; two convs 64->64 3x3 = 73,728; 3 BN = 384;
    # SRU on 64 features: 64 * 1,024 + 512 = 66,048; head 2,570.
    shallow = 576 + 73_728 + 384 + 66_048 + head
    assert shallow == 143_306
    assert _n_params(_model("shallow", 1.0)) == shallow
    # baseline (biased convs, as Keras): 640 + 2 * 36,928 = 74,496; 3 BN = 384;
    # bi-GRU(64, 64), torch's two biases: 2 * 3 * (64 * 64 + 64 * 64 + 64 + 64) = 49,920; dense 128 -> 10 = 1,290.
    # (Keras's GRU has one bias: 125,706 in the original.)
    assert _n_params(_model("baseline", 1.0)) == 74_496 + 384 + 49_920 + 1_290


def test_width_scales_channels_but_not_the_sru() -> None:
    deep = _model("deep", 0.5)
    assert deep.convs[0].conv.out_channels == 32
    assert deep.conv1x1.out_channels == 128
    assert deep.rnn.hidden_size == 128 and deep.head.in_features == 256  # the report's SRU at any width
    for name in ("deep", "shallow"):
        quarter = _model(name, 0.25)
        assert quarter.convs[0].conv.out_channels == 16
        assert quarter.rnn.hidden_size == 128 and quarter.head.in_features == 256
    tiny = _model("shallow", 0.001)
    assert tiny.convs[0].conv.out_channels == 1 and tiny.rnn.hidden_size == 128
    assert build_model(ModelConfig(name="deep", width=0.25, rnn_hidden=32)).rnn.hidden_size == 32
    # deep at width 0.25: conv1x1 gives 64 channels x 1 frequency bin -> SRU input 64 != 2 * 128: skip projected.
    assert _model("deep", 0.25).rnn.input_size == 64 and _model("deep", 0.25).rnn.projects_skip
    assert _model("baseline", 0.5).gru.hidden_size == 32


@pytest.mark.parametrize("name", NAMES)
def test_training_step_reaches_every_parameter(name: str) -> None:
    model = _model(name).train()
    frame_probs, clip_probs = model(torch.randn(4, 30, 64), torch.tensor([30, 30, 20, 9]))
    target = torch.zeros(4, NUM_CLASSES)
    target[:, 3] = 1.0
    loss = torch.nn.functional.binary_cross_entropy(clip_probs, target)
    loss = loss + torch.nn.functional.binary_cross_entropy(frame_probs, torch.zeros_like(frame_probs))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), pname
        assert bool((p.grad != 0).any()), pname


def test_bad_inputs_raise_with_shapes() -> None:
    model = _model("shallow")
    with pytest.raises(ValueError, match=r"\(batch, frames, 64\), got \(2, 240, 40\)"):
        model(torch.randn(2, 240, 40))
    with pytest.raises(ValueError, match="n_frames must lie in"):
        model(torch.randn(2, 50, 64), torch.tensor([51, 3]))
    with pytest.raises(ValueError, match="n_frames must have shape"):
        model(torch.randn(2, 50, 64), torch.tensor([50]))
    with pytest.raises(ValueError, match="n_mels=32 is too small"):
        build_model(ModelConfig(name="deep"), n_mels=32)
    with pytest.raises(ValueError, match="'resnet' is not one of"):
        build_model(ModelConfig(name="resnet"))  # type: ignore[arg-type]
