"""Training throughput of the kdsed models on this machine, against its fp32 matmul peak.

    python benchmarks/bench_training.py --widths 1.0 0.5 0.25 --batch-size 32 --seconds 20

For each model and width: clips/s for forward + backward + Adam step on random
(frames x n_mels) inputs with frame and clip BCE losses; the training FLOPs per
clip (2 x multiply-adds of convs, linears and recurrences counted with forward
hooks, x 3 for forward + backward); the GFLOP/s that achieves and its share of
the best torch.mm rate. Prints a Markdown table; never asserts times.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kdsed.config import ModelConfig
from kdsed.constants import NUM_CLASSES
from kdsed.models import BiSRU, build_model

MODELS = ("deep", "shallow", "baseline")


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of torch.mm on two random size x size matrices."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _macs_hook(counter: list[int]):
    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            counter[0] += output.numel() * module.in_channels // module.groups * kh * kw  # type: ignore[union-attr]
        elif isinstance(module, nn.Linear):
            counter[0] += output.numel() * module.in_features  # type: ignore[union-attr]
        elif isinstance(module, BiSRU):
            x = inputs[0]
            counter[0] += x.shape[0] * x.shape[1] * module.weight.numel()
        elif isinstance(module, nn.GRU):
            x = inputs[0]
            steps = x.data.shape[0] if hasattr(x, "batch_sizes") else x.shape[0] * x.shape[1]
            hid = module.hidden_size
            counter[0] += steps * 2 * 3 * hid * (module.input_size + hid)
    return hook


def forward_macs(model: nn.Module, frames: int, n_mels: int) -> int:
    """Multiply-adds of one forward pass of one clip (convs, linears, SRU and GRU matrices)."""
    counter = [0]
    handles = [m.register_forward_hook(_macs_hook(counter)) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, BiSRU, nn.GRU))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, frames, n_mels))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return counter[0]


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, frame_y: Tensor,
                clip_y: Tensor) -> None:
    frame_probs, clip_probs = model(x)
    loss = F.binary_cross_entropy(frame_probs, frame_y) + F.binary_cross_entropy(clip_probs, clip_y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def training_throughput(model: nn.Module, *, batch_size: int, seconds: float, frames: int, n_mels: int,
                        windows: int = 2) -> float:
    """Clips/s of training steps: the best of `windows` windows of seconds / windows each (>= 2 steps)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, frames, n_mels, generator=gen)
    frame_y = (torch.rand(batch_size, frames, NUM_CLASSES, generator=gen) < 0.2).float()
    clip_y = frame_y.amax(dim=1)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train_step(model, optimizer, x, frame_y, clip_y)  # warm-up: oneDNN primitives, allocator
    best = 0.0
    for _ in range(windows):
        steps, start = 0, time.perf_counter()
        while steps < 2 or time.perf_counter() - start < seconds / windows:
            _train_step(model, optimizer, x, frame_y, clip_y)
            steps += 1
        best = max(best, steps * batch_size / (time.perf_counter() - start))
    return best


def _table_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, measure the matmul peak and every model x width, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--widths", nargs="+", type=float, default=[1.0, 0.5, 0.25])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="timing budget per model and width")
    parser.add_argument("--windows", type=int, default=2, help="timing windows per model and width; best kept")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--n-mels", type=int, default=64)
    parser.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last",
                        help="conv layout (build_model gives channels_last; contiguous to compare)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="default: all cores")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    peak = matmul_gflops()
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}; "
          f"fp32 torch.mm peak {peak:.1f} GFLOP/s; batch {args.batch_size}, {args.frames} x {args.n_mels} input, "
          f"{args.memory_format}\n")
    print(_table_row(["model", "width", "params", "clips/s", "GFLOP/clip (train)", "GFLOP/s", "% of matmul peak"]))
    print(_table_row(["---"] * 7))
    achieved = {}
    for name in args.models:
        for width in args.widths:
            params, train_gflop, clips_s = benchmark_model(name, width, args)
            achieved[name, width] = clips_s * train_gflop
            print(_table_row([name, width, f"{params:,}", f"{clips_s:.1f}", f"{train_gflop:.3f}",
                              f"{achieved[name, width]:.1f}", f"{100 * achieved[name, width] / peak:.0f}"]), flush=True)
    # Other processes can depress one peak measurement: report against the better of before and after.
    peak_after = matmul_gflops()
    if peak_after > peak:
        print(f"\nmatmul peak re-measured after the runs: {peak_after:.1f} GFLOP/s; % of peak with it:")
        for (name, width), gflops in achieved.items():
            print(_table_row([name, width, f"{100 * gflops / peak_after:.0f}"]))


def benchmark_model(name: str, width: float, args: argparse.Namespace) -> tuple[int, float, float]:
    """(parameters, training GFLOP per clip, clips/s) of one model at one width."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, width=width), n_mels=args.n_mels)  # type: ignore[arg-type]
    if args.memory_format == "contiguous":
        model = model.to(memory_format=torch.contiguous_format)
    params = sum(p.numel() for p in model.parameters())
    train_gflop = 3 * 2 * forward_macs(model, args.frames, args.n_mels) / 1e9
    clips_s = training_throughput(model, batch_size=args.batch_size, seconds=args.seconds, frames=args.frames,
                                  n_mels=args.n_mels, windows=args.windows)
    return params, train_gflop, clips_s

if __name__ == "__main__":
    main()
