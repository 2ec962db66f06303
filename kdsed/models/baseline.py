"""The official DCASE 2018 Task 4 baseline CRNN (DCASE-REPO/dcase2018_baseline, task4_crnn.yaml).

3 x [3x3 conv 64 "same" - BN - ReLU - 1x4 frequency max-pool - dropout 0.3],
bidirectional GRU 64 (input dropout 0.3, outputs concatenated), per-frame dense
+ sigmoid, global average pooling over time for the clip output.

Differences from the Keras original: PyTorch's GRU applies the reset gate after
the recurrent matrix product (Keras 2.1 applied it before, `reset_after=False`)
and has two bias vectors; Keras drops GRU inputs with one mask per sequence,
`nn.Dropout` per frame; the original used 500 frames of 20 ms at 44.1 kHz, kdsed
feeds its own features. Initialisation and BatchNorm settings follow Keras.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kdsed.config import ModelConfig
from kdsed.constants import NUM_CLASSES
from kdsed.models.rcnn import SedModel, check_n_mels, scaled, to_sequence

#: The baseline's fixed sizes (task4_crnn.yaml); `cfg.width` scales them, `cfg.rnn_hidden`
#: and `cfg.dropout` (the SRU models' settings) do not apply.
BASELINE_FILTERS = 64
BASELINE_GRU_HIDDEN = 64
BASELINE_DROPOUT = 0.3


class BaselineCRNN(SedModel):
    """DCASE 2018 Task 4 baseline: 3 conv blocks, bi-GRU, per-frame dense, average pooling."""

    def __init__(self, cfg: ModelConfig, n_mels: int = 64) -> None:
        super().__init__()
        self.n_mels = n_mels
        freq = check_n_mels(n_mels, 4 ** 3, "baseline")
        ch = scaled(BASELINE_FILTERS, cfg.width)
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else ch, ch, 3, padding=1) for i in range(3))
        # Keras BatchNormalization defaults: momentum 0.99 (torch 0.01), epsilon 1e-3.
        self.bns = nn.ModuleList(nn.BatchNorm2d(ch, eps=1e-3, momentum=0.01) for _ in range(3))
        self.pool4 = nn.MaxPool2d((1, 4))
        self.dropout = nn.Dropout(BASELINE_DROPOUT)
        self.gru = nn.GRU(ch * freq, scaled(BASELINE_GRU_HIDDEN, cfg.width), batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * self.gru.hidden_size, NUM_CLASSES)
        self._keras_init()

    def _keras_init(self) -> None:
        """Glorot-uniform kernels, orthogonal recurrent kernels, zero biases (Keras defaults)."""
        for layer in [*self.convs, self.head]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        hid = self.gru.hidden_size
        for name, param in self.gru.named_parameters():
            for gate in param.data.split(hid):  # reset, update, new: initialised per gate as Keras
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(gate)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(gate)
                else:
                    nn.init.zeros_(gate)

    def frame_logits(self, x: Tensor, n_frames: Tensor | None, time_mask: Tensor | None) -> Tensor:
        """(batch, frames, n_mels) -> (batch, frames, NUM_CLASSES)."""
        y = x.unsqueeze(1)
        for conv, bn in zip(self.convs, self.bns):
            y = torch.relu_(bn(conv(y)))
            if time_mask is not None:
                y = y * time_mask
            y = self.dropout(self.pool4(y))
        seq = self.dropout(to_sequence(y))
        frames = seq.shape[1]
        if n_frames is None:
            out, _ = self.gru(seq)
        else:
            packed = pack_padded_sequence(seq, n_frames.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=frames)
        return self.head(out)
