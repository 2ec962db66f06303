"""The CP-JKU R-CNNs (report Tables 2 and 3) and the base class every kdsed model shares.

Every model keeps the time resolution (pooling is over frequency only), maps
(batch, frames, n_mels) to frame probabilities (batch, frames, NUM_CLASSES) and
averages the valid frames into clip probabilities.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kdsed.config import ModelConfig
from kdsed.constants import NUM_CLASSES
from kdsed.models.sru import BiSRU


def scaled(size: int, width: float) -> int:
    """A channel count or hidden size multiplied by `width`, rounded, at least 1."""
    return max(1, int(round(size * width)))


def valid_frames(n_frames: Tensor, frames: int) -> Tensor:
    """(batch, frames) bool: True where frame index < the clip's `n_frames`."""
    return torch.arange(frames, device=n_frames.device)[None, :] < n_frames[:, None]


class SedModel(nn.Module):
    """Base class: frame and clip probabilities from a normalised log-mel batch, padding-aware."""

    n_mels: int

    def frame_logits(self, x: Tensor, n_frames: Tensor | None, time_mask: Tensor | None) -> Tensor:
        """(batch, frames, NUM_CLASSES) logits; `time_mask` (batch, 1, frames, 1) zeroes padding."""
        raise NotImplementedError

    def forward(self, x: Tensor, n_frames: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (batch, frames, n_mels) -> (frame_probs (batch, frames, classes), clip_probs (batch, classes)).

        `n_frames` (batch,) is each clip's valid length; frames after it are
        ignored by the clip output and set to 0 in the frame output. They never
        change valid frames' outputs, except through BatchNorm's batch statistics
        in training mode, which count them as zeros.
        """
        self._check_input(x, n_frames)
        frames = x.shape[1]
        if n_frames is not None:
            n_frames = n_frames.to(device=x.device, dtype=torch.long)
        if n_frames is not None and bool((n_frames == frames).all()):
            n_frames = None  # no padding: skip the masking work
        valid = None if n_frames is None else valid_frames(n_frames, frames)
        time_mask = None
        if valid is not None:
            x = x * valid[:, :, None].to(x.dtype)  # whatever the caller padded with, the model sees zeros
            time_mask = valid[:, None, :, None].to(x.dtype)
        probs = torch.sigmoid(self.frame_logits(x, n_frames, time_mask))
        if valid is None:
            return probs, probs.mean(dim=1)
        probs = probs * valid[:, :, None].to(probs.dtype)
        return probs, probs.sum(dim=1) / n_frames[:, None].to(probs.dtype)

    def _check_input(self, x: Tensor, n_frames: Tensor | None) -> None:
        if x.dim() != 3 or x.shape[2] != self.n_mels:
            raise ValueError(f"expected input (batch, frames, {self.n_mels}), got {tuple(x.shape)}")
        if n_frames is None:
            return
        if n_frames.shape != (x.shape[0],):
            raise ValueError(f"n_frames must have shape ({x.shape[0]},), got {tuple(n_frames.shape)}")
        if bool((n_frames < 1).any()) or bool((n_frames > x.shape[1]).any()):
            raise ValueError(f"n_frames must lie in [1, {x.shape[1]}], got {n_frames.tolist()}")


def check_n_mels(n_mels: int, pooled_by: int, model: str) -> int:
    """Frequency bins left after pooling by `pooled_by`; raises if none are left."""
    if n_mels < pooled_by:
        raise ValueError(f"{model} model pools frequency by {pooled_by}; n_mels={n_mels} is too small")
    return n_mels // pooled_by


class ConvBnRelu(nn.Module):
    """Conv (no bias: BatchNorm follows) - BatchNorm - ReLU, then zero the padded frames if masked."""

    def __init__(self, c_in: int, c_out: int, kernel: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor, time_mask: Tensor | None = None) -> Tensor:
        """(batch, c_in, frames, freq) -> (batch, c_out, frames', freq')."""
        y = F.relu(self.bn(self.conv(x)), inplace=True)
        return y if time_mask is None else y * time_mask


def to_sequence(x: Tensor) -> Tensor:
    """(batch, channels, frames, freq) -> (batch, frames, channels * freq)."""
    batch, channels, frames, freq = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq)


class _SruRCNN(SedModel):
    """Shared tail of the R-CNNs: dropout `cfg.dropout` (0 in the report), bidirectional SRU, per-frame head.

    The SRU has `cfg.rnn_hidden` units per direction (128 in the report) whatever `cfg.width`:
    width thins the convolutions only.
    """

    def _init_tail(self, cfg: ModelConfig, features: int) -> None:
        self.dropout = nn.Dropout(cfg.dropout)
        self.rnn = BiSRU(features, cfg.rnn_hidden)
        # The report's "1x1 conv 10" on the (frames x 2*hidden) sequence is a per-frame linear layer.
        self.head = nn.Linear(2 * self.rnn.hidden_size, NUM_CLASSES)

    def _tail(self, seq: Tensor, n_frames: Tensor | None) -> Tensor:
        return self.head(self.rnn(self.dropout(seq), n_frames))


class DeepRCNN(_SruRCNN):
    """Table 2: 4 x [2x2 conv, 2x2 conv, 1x2 freq pool], 1x1 conv 256, 1x4 freq pool, bi-SRU, head."""

    def __init__(self, cfg: ModelConfig, n_mels: int = 64) -> None:
        super().__init__()
        self.n_mels = n_mels
        freq = check_n_mels(n_mels, 2 ** 4 * 4, "deep")
        ch, wide = scaled(64, cfg.width), scaled(256, cfg.width)
        # Each pair of 2x2 convs keeps the size: the first pads 1 on every side (frames + 1,
        # freq + 1), the second pads 0 (back to frames, freq), so an output frame sees input
        # frames t-1, t, t+1. Trains 13 % faster than ZeroPad2d + unpadded convs (12.7 vs
        # 11.3 clips/s on 2 cores), which DESIGN.md found 5x faster than padding="same".
        self.convs = nn.ModuleList()
        for block in range(4):
            self.convs.append(ConvBnRelu(1 if block == 0 else ch, ch, 2, padding=1))
            self.convs.append(ConvBnRelu(ch, ch, 2, padding=0))
        self.pool2 = nn.MaxPool2d((1, 2))
        self.conv1x1 = nn.Conv2d(ch, wide, 1, bias=True)
        self.pool4 = nn.MaxPool2d((1, 4))
        self._init_tail(cfg, wide * freq)

    def frame_logits(self, x: Tensor, n_frames: Tensor | None, time_mask: Tensor | None) -> Tensor:
        """(batch, frames, n_mels) -> (batch, frames, NUM_CLASSES)."""
        y = x.unsqueeze(1)
        for first, second in zip(self.convs[0::2], self.convs[1::2]):
            # The padded conv's extra frame only reaches the second conv's invalid frames,
            # so masking after the second conv is enough to keep padding out.
            y = self.pool2(second(first(y), time_mask))
        y = self.pool4(F.relu(self.conv1x1(y)))
        return self._tail(to_sequence(y), n_frames)


class ShallowRCNN(_SruRCNN):
    """Table 3: 3 x [3x3 conv - BN - ReLU, 1x4 freq pool], bi-SRU, head."""

    def __init__(self, cfg: ModelConfig, n_mels: int = 64) -> None:
        super().__init__()
        self.n_mels = n_mels
        freq = check_n_mels(n_mels, 4 ** 3, "shallow")
        ch = scaled(64, cfg.width)
        self.convs = nn.ModuleList(ConvBnRelu(1 if i == 0 else ch, ch, 3, padding=1) for i in range(3))
        self.pool4 = nn.MaxPool2d((1, 4))
        self._init_tail(cfg, ch * freq)

    def frame_logits(self, x: Tensor, n_frames: Tensor | None, time_mask: Tensor | None) -> Tensor:
        """(batch, frames, n_mels) -> (batch, frames, NUM_CLASSES)."""
        y = x.unsqueeze(1)
        for conv in self.convs:
            y = self.pool4(conv(y, time_mask))
        return self._tail(to_sequence(y), n_frames)
