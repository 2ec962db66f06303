"""Where a training step's time goes on the CPU, by kind of operation, and what the usual remedies change.

    python benchmarks/profile_training.py [--models deep shallow] [--widths 0.5 0.25] [--steps 6]

For each model and width: `torch.profiler` over `--steps` training steps (forward, backward, Adam; batch 32,
240 x 64 inputs, all cores), each operator's own CPU time put in one of a few groups (convolutions,
the SRU's frame-by-frame scan, matrix products, batch norm, pooling, other element-wise work, the
optimizer), with the multiply-adds each group does, hence its GFLOP/s against the machine's fp32
`torch.mm` peak. Then the step's clips/s in the model's default layout (channels-last), in contiguous
layout, and under `torch.compile` (where it compiles on this machine). Measures; never asserts times.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Sequence

import torch
from bench_training import _train_step, matmul_gflops
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from kdsed.config import ModelConfig
from kdsed.constants import NUM_CLASSES
from kdsed.models import BiSRU, build_model

#: Operator name fragments -> group (first match wins; `aten::` prefixes dropped).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("SRU scan (per-frame addcmul)", ("addcmul",)),
    ("matrix products (SRU input, head)", ("addmm", "mm", "bmm", "linear", "matmul")),
    ("batch norm", ("batch_norm",)),
    ("pooling", ("max_pool", "pool2d")),
    ("optimizer (Adam)", ("_foreach", "adam")),
)


def group_of(name: str) -> str:
    op = name.removeprefix("aten::").lower()
    for group, fragments in GROUPS:
        if any(f in op for f in fragments):
            return group
    return "other element-wise, copies, reductions"


def group_macs(model: nn.Module, batch: int, frames: int, n_mels: int) -> dict[str, float]:
    """Multiply-adds of one training step (x3 of the forward pass) per group."""
    macs: dict[str, float] = defaultdict(float)

    def hook(module: nn.Module, inputs: tuple, output: Tensor | tuple) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs["convolution"] += 3 * output.numel() * module.in_channels // module.groups * kh * kw
        elif isinstance(module, nn.Linear):
            macs["matrix products (SRU input, head)"] += 3 * output.numel() * module.in_features
        elif isinstance(module, BiSRU):
            x = inputs[0]
            macs["matrix products (SRU input, head)"] += 3 * x.shape[0] * x.shape[1] * module.weight.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, BiSRU))]
    with torch.no_grad():
        model(torch.randn(batch, frames, n_mels))
    for h in handles:
        h.remove()
    return dict(macs)


def batch_of(batch: int, frames: int, n_mels: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, n_mels, generator=gen)
    frame_y = (torch.rand(batch, frames, NUM_CLASSES, generator=gen) < 0.2).float()
    return x, frame_y, frame_y.amax(dim=1)


def clips_per_s(model: nn.Module, step_model: nn.Module, batch: tuple[Tensor, Tensor, Tensor], steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):  # warm-up (and compilation)
        _train_step(step_model, optimizer, *batch)
    start = time.perf_counter()
    for _ in range(steps):
        _train_step(step_model, optimizer, *batch)
    return steps * batch[0].shape[0] / (time.perf_counter() - start)


def profile_model(name: str, width: float, args: argparse.Namespace, peak: float) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, width=width), n_mels=args.n_mels).train()  # type: ignore[arg-type]
    batch = batch_of(args.batch_size, args.frames, args.n_mels)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train_step(model, optimizer, *batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            _train_step(model, optimizer, *batch)
        wall = (time.perf_counter() - start) / args.steps
    own: dict[str, float] = defaultdict(float)
    ops = sorted(((e.self_cpu_time_total / 1e6 / args.steps, e.key, e.count // args.steps) for e in prof.key_averages()),
                 reverse=True)
    for seconds, key, _ in ops:
        own[group_of(key)] += seconds
    macs = group_macs(model, args.batch_size, args.frames, args.n_mels)
    total = sum(own.values())
    print(f"\n**{name}, width {width}**: {1e3 * wall:.0f} ms per step of {args.batch_size} clips under the profiler "
          f"({args.batch_size / wall:.0f} clips/s); operators' own time {1e3 * total:.0f} ms\n")
    print("| group | ms per step | share | GFLOP per step | GFLOP/s | % of matmul peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for group, seconds in sorted(own.items(), key=lambda kv: -kv[1]):
        gflop = 2 * macs.get(group, 0.0) / 1e9
        rate = f"{gflop / seconds:.1f}" if gflop else ""
        share = f"{100 * gflop / seconds / peak:.0f}" if gflop else ""
        print(f"| {group} | {1e3 * seconds:.1f} | {100 * seconds / total:.0f} % | "
              f"{f'{gflop:.2f}' if gflop else ''} | {rate} | {share} |")
    print("\nThe operators taking the most own time:\n\n| operator | group | ms per step | calls per step |\n|---|---|---:|---:|")
    for seconds, key, calls in ops[:args.top]:
        print(f"| `{key}` | {group_of(key)} | {1e3 * seconds:.1f} | {calls} |")
    contiguous = build_model(ModelConfig(name=name, width=width), n_mels=args.n_mels).train()  # type: ignore[arg-type]
    contiguous = contiguous.to(memory_format=torch.contiguous_format)
    rows = [("channels-last (the default)", clips_per_s(model, model, batch, args.steps)),
            ("contiguous", clips_per_s(contiguous, contiguous, batch, args.steps))]
    try:
        fresh = build_model(ModelConfig(name=name, width=width), n_mels=args.n_mels).train()  # type: ignore[arg-type]
        rows.append(("torch.compile", clips_per_s(fresh, torch.compile(fresh), batch, args.steps)))
    except Exception as e:  # no C++ compiler, unsupported op: say so
        rows.append((f"torch.compile: failed ({type(e).__name__}: {str(e).splitlines()[0][:80]})", float("nan")))
    print("\n| layout / mode | clips/s |\n|---|---:|")
    for label, rate in rows:
        print(f"| {label} | {rate:.1f} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["deep", "shallow"])
    parser.add_argument("--widths", nargs="+", type=float, default=[0.5, 0.25])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--top", type=int, default=10, help="operators listed by own time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--n-mels", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    peak = matmul_gflops()
    print(f"torch {torch.__version__}, {args.threads} threads; fp32 torch.mm peak {peak:.1f} GFLOP/s; "
          f"1-min load {os.getloadavg()[0]:.1f}")
    for name in args.models:
        for width in args.widths:
            profile_model(name, width, args, peak)


if __name__ == "__main__":
    main()
