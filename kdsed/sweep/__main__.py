"""`python -m kdsed.sweep --passes 4`: run the iterative-distillation sweep (see --help)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from kdsed.config import SweepConfig, from_dict, load_yaml, to_dict
from kdsed.constants import DEFAULT_TRACKING_URI
from kdsed.sweep import preflight

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "sweeps" / "laptop.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kdsed.sweep", description="Run the kdsed distillation sweep.")
    p.add_argument("--passes", type=int, help="number of distillation passes (default: from the config)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="sweep YAML (default: sweeps/laptop.yaml, the synthetic 'mini' set on a laptop)")
    p.add_argument("--data", type=Path, help="a DCASE 2018 Task 4 / DESED folder (default: the synthetic set)")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default: {DEFAULT_TRACKING_URI})")
    p.add_argument("--storage", help="folder or s3://... for checkpoints and Parquet pseudo-labels")
    p.add_argument("--address", help="Ray cluster address: auto or HOST:PORT (default: start a local Ray)")
    p.add_argument("--resume", action="store_true", help="continue the latest sweep in the storage")
    p.add_argument("--seed", type=int, help="seed of training (and of the synthetic set)")
    return p.parse_args(argv)


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
    return from_dict(SweepConfig, to_dict(cfg))  # validate the overrides, with key names in errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = resolve_config(args)
        preflight.check_sweep(cfg)  # fails in seconds on an unusable storage, tracking store or data set
        from kdsed.sweep.coordinator import run_sweep, winner_table

        summary = run_sweep(cfg, resume=args.resume)
    except preflight.startup_errors() as e:
        print(f"kdsed.sweep: error: {e}", file=sys.stderr)
        return 2
    from kdsed.results import format_table

    print(format_table(summary.reports))
    print(winner_table(summary))
    t = summary.timings
    print(f"sweep {summary.sweep_id} done in {t['total']:.0f} s (data {t.get('data', 0):.0f} s, training {t['training']:.0f} s, "
          f"post-processing search {t['tuning']:.0f} s, MLflow {t['logging']:.0f} s)")
    print(f"compare runs:  mlflow ui --backend-store-uri {cfg.tracking.tracking_uri}   (parent run {summary.parent_run_id})")
    print(f"pull winners:  python -m kdsed.registry pull --out winners/ --tracking-uri {cfg.tracking.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
