"""Training of one variant: the single function every higher layer calls.

`train_variant` takes a model config, a training config and arrays; it knows
nothing of Ray or MLflow. Progress goes to an optional `on_epoch` callback.
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from kdsed import schema
from kdsed.atomic import write_bytes_atomic
from kdsed.config import ModelConfig, TrainConfig, to_dict
from kdsed.constants import NUM_CLASSES
from kdsed.features import FeatureSet
from kdsed.models import build_model


@dataclass
class TargetSet:
    """Features of some clips with their targets; either kind of target may be absent.

    weak: (n, classes) clip targets in [0, 1] (NaN rows = no weak target for that clip).
    strong: (n, frames, classes) frame targets in [0, 1] (NaN rows = no strong target).
    """

    features: FeatureSet
    weak: np.ndarray | None = None
    strong: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, frames = len(self.features), self.features.features.shape[1]
        if self.weak is not None and self.weak.shape != (n, NUM_CLASSES):
            raise ValueError(f"weak targets have shape {self.weak.shape}, expected {(n, NUM_CLASSES)}")
        if self.strong is not None and self.strong.shape != (n, frames, NUM_CLASSES):
            raise ValueError(f"strong targets have shape {self.strong.shape}, expected {(n, frames, NUM_CLASSES)}")
        for name, arr in (("weak", self.weak), ("strong", self.strong)):
            if arr is not None and np.any(np.isinf(arr)):
                raise ValueError(f"{name} targets contain infinite values")
        if not np.all(np.isfinite(self.features.features)):
            raise ValueError("features contain NaN or infinite values")


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    clips_per_s: float
    elapsed_s: float


@dataclass
class VariantResult:
    """A trained variant: best weights, history and throughput."""

    model_config: ModelConfig
    train_config: TrainConfig
    state_dict: dict[str, torch.Tensor]
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    train_clips_per_s: float = 0.0
    train_time_s: float = 0.0
    n_mels: int = 64

    def model(self) -> nn.Module:
        """The trained model in eval mode, on the CPU."""
        model = build_model(self.model_config, n_mels=self.n_mels)
        model.load_state_dict(self.state_dict)
        return model.eval()


def resolve_device(name: str) -> torch.device:
    """`auto` means CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class DataParallel:
    """The processes that train one model together: this one's rank among them, their number, their
    torch.distributed process group (None: the default group). World 1 (`ALONE`) trains without DDP."""

    rank: int = 0
    world: int = 1
    group: object = None


ALONE = DataParallel()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """Mixed precision of the forward pass, when asked: bf16 on CUDA and on the CPU, fp16 on CUDA only.

    On the CPU, bf16 autocast runs convolutions and matrix products through oneDNN in bf16 (AMX or
    AVX512-BF16 where the CPU has them: 1.5-1.9x the training clips/s of fp32 at full width here,
    docs/speed.md). fp16 stays full precision on the CPU: few CPUs compute it natively.
    """
    if mode == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if mode == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, mode: str) -> torch.amp.GradScaler:
    """fp16 on CUDA scales the loss against gradient underflow; a pass-through otherwise."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and mode == "fp16")


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; to CUDA from pinned memory, without blocking."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def masked_bce(probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the entries where `mask` is true (0 when none are)."""
    losses = nn.functional.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), targets, reduction="none")
    weight = mask.to(losses.dtype)
    return (losses * weight).sum() / weight.sum().clamp_min(1.0)


class _Batches:
    """Tensors of a TargetSet on a device, cut into (optionally shuffled) batches."""

    def __init__(self, data: TargetSet, device: torch.device) -> None:
        fs = data.features
        self.n = len(fs)
        with warnings.catch_warnings():
            # Features shared through Ray's object store are read-only; they are only ever read here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.x = to_device(torch.from_numpy(np.ascontiguousarray(fs.features, dtype=np.float32)), device)
        self.n_frames = to_device(torch.from_numpy(np.asarray(fs.n_frames, dtype=np.int64)), device)
        frames = self.x.shape[1]
        frame_valid = torch.arange(frames, device=device)[None, :] < self.n_frames[:, None]
        self.weak, self.weak_mask = self._targets(data.weak, (self.n, NUM_CLASSES), device)
        self.strong, strong_mask = self._targets(data.strong, (self.n, frames, NUM_CLASSES), device)
        self.strong_mask = strong_mask & frame_valid[:, :, None]

    @staticmethod
    def _targets(arr: np.ndarray | None, shape: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if arr is None:
            return torch.zeros(shape, device=device), torch.zeros(shape, dtype=torch.bool, device=device)
        t = to_device(torch.from_numpy(np.asarray(arr, dtype=np.float32)), device)
        mask = ~torch.isnan(t)
        return torch.nan_to_num(t, nan=0.0), mask

    def batches(self, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
        order = torch.randperm(self.n, generator=generator) if generator is not None else torch.arange(self.n)
        return list(order.split(batch_size))


def _loss(model: nn.Module, b: _Batches, rows: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    rows = rows.to(b.x.device)
    n_frames = b.n_frames[rows]
    frames = int(n_frames.max())
    with autocast(b.x.device, cfg.mixed_precision):
        frame_probs, clip_probs = model(b.x[rows, :frames], n_frames)
    # The loss in full precision: binary cross-entropy is not safe under autocast.
    frame_probs, clip_probs = frame_probs.float(), clip_probs.float()
    loss = cfg.weak_loss_weight * masked_bce(clip_probs, b.weak[rows], b.weak_mask[rows])
    if cfg.strong_loss_weight:
        loss = loss + cfg.strong_loss_weight * masked_bce(
            frame_probs, b.strong[rows, :frames], b.strong_mask[rows, :frames])
    return loss


def _validation_loss(model: nn.Module, b: _Batches, cfg: TrainConfig) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for rows in b.batches(cfg.batch_size * 2, None):
            total += float(_loss(model, b, rows, cfg)) * len(rows)
    return total / b.n


def train_variant(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train: TargetSet,
    validation: TargetSet,
    *,
    on_epoch: Callable[[EpochLog], None] | None = None,
    checkpoint_dir: Path | str | None = None,
    parallel: DataParallel = ALONE,
) -> VariantResult:
    """Train one model with Adam and early stopping on validation loss; return the best weights.

    With `parallel` of world > 1 (processes of one torch.distributed group), the model is wrapped in DDP
    and every process trains on its share of each batch; only rank 0 writes checkpoints. Other processes
    of the same torch.distributed world (other units of a sweep's round) are not involved.
    """
    seed_everything(train_config.seed)
    if train_config.num_threads:
        torch.set_num_threads(train_config.num_threads)
    device = resolve_device(train_config.device)
    n_mels = train.features.features.shape[-1]
    model = build_model(model_config, n_mels=n_mels).to(device)
    rank, world = parallel.rank, parallel.world
    trained = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                      process_group=parallel.group)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.learning_rate)
    scaler = grad_scaler(device, train_config.mixed_precision)
    train_b, val_b = _Batches(train, device), _Batches(validation, device)
    generator = torch.Generator().manual_seed(train_config.seed)
    result = VariantResult(model_config, train_config, _cpu_state(model), n_mels=n_mels)
    best_val, since_best, start = float("inf"), 0, time.perf_counter()
    clips_seen, train_seconds = 0, 0.0
    for epoch in range(1, train_config.epochs + 1):
        model.train()
        epoch_start, total = time.perf_counter(), 0.0
        for rows in train_b.batches(train_config.batch_size, generator):
            if len(rows) < world:
                continue
            rows = rows[rank::world]
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(trained, train_b, rows, train_config)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.detach().item() * len(rows) * world
        epoch_s = time.perf_counter() - epoch_start
        clips_seen, train_seconds = clips_seen + train_b.n, train_seconds + epoch_s
        log = EpochLog(epoch, total / train_b.n, _validation_loss(model, val_b, train_config),
                       train_b.n / epoch_s, time.perf_counter() - start)
        result.history.append(log)
        if log.val_loss < best_val - 1e-6:
            best_val, since_best, result.best_epoch = log.val_loss, 0, epoch
            result.state_dict = _cpu_state(model)
            if checkpoint_dir is not None and rank == 0:
                save_checkpoint(result, checkpoint_dir)
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(log)
        if since_best >= train_config.patience:
            break
    result.train_clips_per_s = clips_seen / max(train_seconds, 1e-9)
    result.train_time_s = time.perf_counter() - start
    return result


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def predict(model: nn.Module, features: FeatureSet, *, batch_size: int = 64,
            device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Frame probabilities (n, frames, classes) and clip probabilities (n, classes) of a model."""
    dev = resolve_device(device)
    model = copy.deepcopy(model).to(dev).eval()
    n, frames = len(features), features.features.shape[1]
    frame_out = np.zeros((n, frames, NUM_CLASSES), np.float32)
    clip_out = np.zeros((n, NUM_CLASSES), np.float32)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x = to_device(torch.from_numpy(np.ascontiguousarray(features.features[start:start + batch_size],
                                                                dtype=np.float32)), dev)
            lengths = to_device(torch.from_numpy(np.asarray(features.n_frames[start:start + batch_size])), dev)
            frame_probs, clip_probs = model(x, lengths)
            frame_out[start:start + len(x)] = frame_probs.cpu().numpy()
            clip_out[start:start + len(x)] = clip_probs.cpu().numpy()
    mask = np.arange(frames)[None, :] < np.asarray(features.n_frames)[:, None]
    frame_out *= mask[:, :, None]
    return frame_out, clip_out


def save_checkpoint(result: VariantResult, directory: Path | str) -> Path:
    """Write weights (tensors only) and configs atomically to `directory/model.pt` (`schema.CHECKPOINT_FILE`)."""
    path = Path(directory) / schema.CHECKPOINT_FILE
    buf = io.BytesIO()
    torch.save({"state_dict": result.state_dict, "model_config": to_dict(result.model_config),
                "train_config": to_dict(result.train_config), "best_epoch": result.best_epoch,
                "n_mels": result.n_mels}, buf)
    return write_bytes_atomic(path, buf.getvalue())


def load_checkpoint(path: Path | str) -> tuple[ModelConfig, dict[str, torch.Tensor], int]:
    """(model config, weights, n_mels) of a checkpoint written by `save_checkpoint`, without unpickling objects."""
    from kdsed.config import from_dict

    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    return from_dict(ModelConfig, blob["model_config"]), blob["state_dict"], int(blob.get("n_mels", 64))


def epoch_printer(label: str, total_epochs: int) -> Callable[[EpochLog], None]:
    """An `on_epoch` callback printing one progress line per epoch, with an upper bound on the time left."""
    def show(log: EpochLog) -> None:
        print(format_epoch(label, log, total_epochs), file=sys.stderr, flush=True)
    return show


def format_epoch(label: str, log: EpochLog, total_epochs: int) -> str:
    """One progress line of an epoch: losses, throughput, and an upper bound on the time left (early stopping)."""
    return (f"[{label}] epoch {log.epoch}/{total_epochs}  train {log.train_loss:.4f}  val {log.val_loss:.4f}  "
            f"{log.clips_per_s:.0f} clips/s  {log.elapsed_s:.0f} s, at most {time_left_s(log, total_epochs):.0f} s left")


def time_left_s(log: EpochLog, total_epochs: int) -> float:
    """Seconds left at most for a training at `log` (it may stop early)."""
    return log.elapsed_s / log.epoch * (total_epochs - log.epoch)


def history_table(history: Sequence[EpochLog]) -> dict[str, list[float]]:
    """Per-epoch columns of a training history (for logging)."""
    return {
        "train_loss": [h.train_loss for h in history],
        "val_loss": [h.val_loss for h in history],
        "clips_per_s": [h.clips_per_s for h in history],
    }
