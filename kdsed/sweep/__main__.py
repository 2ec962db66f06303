"""`python -m kdsed.sweep --passes 4`: run the iterative-distillation sweep (see --help).

Exit status: 0 done; 2 bad arguments, config, data or setup, refused before anything is created
(one line); 1 a failure of the machine during the run, such as a full disk (one line); 130 / 143
stopped by Ctrl-C / SIGTERM (one line). In every case what was finished is saved and `--resume`
continues.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from kdsed.config import MAX_SEED, ConfigError, SweepConfig, from_dict, load_yaml, to_dict
from kdsed.constants import DEFAULT_SWEEP_CONFIG, DEFAULT_TRACKING_URI
from kdsed.failures import EXIT_RUNTIME_FAILURE, disk_full
from kdsed.limits import ESTIMATE_ABOVE_S
from kdsed.stores import disable_mlflow_telemetry
from kdsed.sweep import console, interrupts, preflight

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kdsed.sweep", description="Run the kdsed distillation sweep.")
    p.add_argument("--passes", type=int, help="number of distillation passes (default: from the config)")
    p.add_argument("--config", type=Path, default=DEFAULT_SWEEP_CONFIG,
                   help="sweep YAML (default: sweeps/laptop-fast.yaml, the synthetic 'mini' set on a laptop in "
                        "about 20 minutes)")
    p.add_argument("--data", type=Path, help="a DCASE 2018 Task 4 / DESED folder (default: the synthetic set)")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: {DEFAULT_TRACKING_URI})")
    p.add_argument("--storage", help="folder or s3://... for checkpoints and Parquet pseudo-labels")
    p.add_argument("--address", help="Ray cluster address: auto or HOST:PORT (default: start a local Ray)")
    p.add_argument("--resume", action="store_true", help="continue the latest sweep in the storage")
    p.add_argument("--seed", type=int, help="seed of training (and of the synthetic set)")
    p.add_argument("--seeds", type=int, help="run the sweep once per training seed (seed, seed + 1, ...) and give "
                                             "the mean and spread over seeds (default: the config's `seeds`, 1)")
    p.add_argument("--allow-large", action="store_true",
                   help="run sizes beyond the bounds of docs/limits.md (e.g. more than 20 passes)")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's and MLflow's own output (worker logs, Ray Train and Tune messages)")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse flag values no config could fix, naming the flag (before the config is even read)."""
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed {args.seed}: not a seed; expected an integer from 0 to {MAX_SEED}")
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: expected a number of seeds >= 1")


def resolve_config(args: argparse.Namespace) -> SweepConfig:
    """The config file with the command-line overrides applied (and validated again)."""
    cfg = load_yaml(SweepConfig, args.config)
    if args.passes is not None:
        cfg = replace(cfg, distill=replace(cfg.distill, passes=args.passes))
    if args.data is not None:
        cfg = replace(cfg, data=replace(cfg.data, root=str(args.data)))
    if args.tracking_uri:
        cfg = replace(cfg, tracking=replace(cfg.tracking, tracking_uri=args.tracking_uri))
    if args.storage:
        cfg = replace(cfg, tracking=replace(cfg.tracking, storage=args.storage))
    if args.address:
        cfg = replace(cfg, ray=replace(cfg.ray, address=args.address))
    if args.seed is not None:
        cfg = replace(cfg, data=replace(cfg.data, synth_seed=args.seed),
                      tagging_train=replace(cfg.tagging_train, seed=args.seed), train=replace(cfg.train, seed=args.seed))
    if args.seeds is not None:
        cfg = replace(cfg, seeds=args.seeds)
    return from_dict(SweepConfig, to_dict(cfg))  # validate the overrides, with key names in errors


def main(argv: list[str] | None = None) -> int:
    with interrupts.installed():
        try:
            return _main(argv)
        except KeyboardInterrupt:  # the first Ctrl-C or SIGTERM, wherever the sweep was
            return interrupts.stop(_shutdown_ray)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    disable_mlflow_telemetry()
    console.configure(args.verbose)
    try:
        check_args(args)
        cfg = resolve_config(args)
        counts = preflight.check_sweep(cfg, allow_large=args.allow_large)  # seconds; creates nothing
        if args.resume:
            preflight.check_resume(cfg, args.resume)
        _print_estimate(cfg, counts)
        from kdsed.sweep.coordinator import run_sweep, winner_table

        summaries = [run_sweep(cfg.seeded(i), resume=args.resume) for i in range(cfg.seeds)]
    except preflight.startup_errors() as e:
        print(f"kdsed.sweep: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        full = disk_full(e)
        if full is None:
            raise
        print(f"kdsed.sweep: error: {full}; finished units and stages are saved: free space and run the same "
              "command with --resume", file=sys.stderr)
        _shutdown_ray()
        return EXIT_RUNTIME_FAILURE
    from kdsed.results import results_markdown, seeds_summary

    summary = summaries[-1]
    if len(summaries) > 1:
        seeds = [cfg.seeded(i).train.seed for i in range(cfg.seeds)]
        print(f"eval macro F1 over {len(seeds)} seeds (%), sweeps {', '.join(s.sweep_id for s in summaries)}:")
        print(seeds_summary([s.reports for s in summaries], seeds))
        print(f"the last seed's sweep ({seeds[-1]}):")
    print(results_markdown(summary.reports))
    print(winner_table(summary))
    t = summary.timings
    print(f"sweep {summary.sweep_id} done in {t['total']:.0f} s (data {t.get('data', 0):.0f} s, training {t['training']:.0f} s, "
          f"post-processing search {t['tuning']:.0f} s, MLflow {t['logging']:.0f} s)")
    print(f"compare runs:  mlflow ui --backend-store-uri {cfg.tracking.tracking_uri}   (parent run {summary.parent_run_id})")
    print(f"pull winners:  python -m kdsed.registry pull --out winners/ --tracking-uri {cfg.tracking.tracking_uri}")
    # Here, not in Ray's atexit hook: a finished sweep relying on the hook once left a Ray Train controller
    # running (parent init) after its raylet was gone.
    _shutdown_ray()
    return 0


def _print_estimate(cfg: SweepConfig, counts: dict[str, int]) -> None:
    """Say how long a sweep of more than an hour may take, before it starts."""
    from kdsed.sweep.estimate import estimate_sweep

    estimate = estimate_sweep(cfg, counts, os.cpu_count() or 1)
    if estimate.seconds > ESTIMATE_ABOVE_S:
        print(f"kdsed.sweep: note: this sweep may take {estimate.describe()}; it saves after every unit, so "
              "Ctrl-C stops it and --resume continues", file=sys.stderr, flush=True)


def _shutdown_ray() -> None:
    """Stop this sweep's local Ray (its processes end with it) or leave a cluster it joined."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


if __name__ == "__main__":
    sys.exit(main())
