"""Training clips/s of each model through `kdsed.train.train_variant`, per mixed-precision setting.

    python benchmarks/bench_precision.py --device cuda --widths 1.0 --precisions none bf16 fp16

Random 240 x 64 inputs with weak and strong targets; each row trains `--epochs` epochs on `--clips` clips
(the loop the sweep runs: autocast, the fp16 grad scaler, pinned memory on CUDA) and reports the clips/s of
its training epochs without the first (warm-up: CUDA kernels, cuDNN choices). On the CPU, bf16 autocasts
(oneDNN, AMX or AVX512-BF16 where the CPU has them) and fp16 trains in fp32, so its row repeats fp32's work:

    python benchmarks/bench_precision.py --device cpu --widths 1.0 0.25 0.125 --precisions none bf16

Never asserts times.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch

from kdsed.config import ModelConfig, TrainConfig
from kdsed.constants import NUM_CLASSES
from kdsed.features import FeatureSet
from kdsed.train import EpochLog, TargetSet, train_variant

MODELS = ("deep", "shallow", "baseline")


def random_targets(n: int, frames: int, n_mels: int, seed: int) -> TargetSet:
    """`n` random clips with weak and strong targets (about 20 % of frames active)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, frames, n_mels)).astype(np.float32)
    strong = (rng.random((n, frames, NUM_CLASSES)) < 0.2).astype(np.float32)
    fs = FeatureSet([f"clip{i}.wav" for i in range(n)], x, np.full(n, frames))
    return TargetSet(fs, weak=strong.max(axis=1), strong=strong)


def clips_per_s(model: str, width: float, precision: str, args: argparse.Namespace) -> float:
    """Training clips/s of the epochs after the first."""
    train = random_targets(args.clips, args.frames, args.n_mels, 0)
    val = random_targets(max(args.batch_size, args.clips // 8), args.frames, args.n_mels, 1)
    cfg = TrainConfig(epochs=args.epochs, patience=args.epochs, batch_size=args.batch_size, device=args.device,
                      mixed_precision=precision)  # type: ignore[arg-type]
    logs: list[EpochLog] = []
    train_variant(ModelConfig(name=model, width=width), cfg, train, val, on_epoch=logs.append)  # type: ignore[arg-type]
    timed = logs[1:] or logs
    return len(timed) / sum(1 / log.clips_per_s for log in timed)  # clips over seconds, epochs of equal size


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--widths", nargs="+", type=float, default=[1.0])
    parser.add_argument("--precisions", nargs="+", choices=["none", "bf16", "fp16"], default=["none", "bf16", "fp16"])
    parser.add_argument("--clips", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--n-mels", type=int, default=64)
    args = parser.parse_args(argv)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    print(f"torch {torch.__version__} on {name}; {args.clips} clips x {args.epochs} epochs, batch {args.batch_size}\n")
    print("| model | width | precision | clips/s | seconds |")
    print("|---|---:|---|---:|---:|")
    for model in args.models:
        for width in args.widths:
            for precision in args.precisions:
                start = time.perf_counter()
                rate = clips_per_s(model, width, precision, args)
                print(f"| {model} | {width} | {precision} | {rate:.0f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
