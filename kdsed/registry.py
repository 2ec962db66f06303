"""The MLflow Model Registry of per-class winners, and pulling them into one bundle.

    python -m kdsed.registry pull --out DIR [--alias champion|pass-N] [--tracking-uri URI]

Each class has a registered model `kdsed-<class>`; each version's source is a
class-bundle directory logged as a run artifact (see `kdsed.bundle`), with tags
(pass, variant, window, threshold, val_f1) and aliases such as `champion` and
`pass-3`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from kdsed.bundle import BundleError, assemble_bundle, is_bundle, load_bundle
from kdsed.constants import CHAMPION_ALIAS, CLASSES, DEFAULT_TRACKING_URI, REGISTERED_MODEL_PREFIX
from kdsed.failures import EXIT_RUNTIME_FAILURE, os_error_line
from kdsed.safety import OutputError, check_output
from kdsed.schema import sqlite_path
from kdsed.stores import disable_mlflow_telemetry


class RegistryError(RuntimeError):
    """The registry lacks a model, version or alias that was asked for."""


def registered_model_name(class_name: str) -> str:
    """The registered model name of a class, e.g. `kdsed-Dog`."""
    if class_name not in CLASSES:
        raise ValueError(f"class {class_name!r} is not one of {', '.join(CLASSES)}")
    return f"{REGISTERED_MODEL_PREFIX}{class_name}"


def log_class_bundle(client: Any, run_id: str, directory: Path | str, *, artifact_path: str) -> str:
    """Log a class-bundle directory as artifacts of `run_id` under `artifact_path`; return its artifact URI."""
    client.log_artifacts(run_id, str(directory), artifact_path=artifact_path)
    root = client.get_run(run_id).info.artifact_uri.rstrip("/")
    return f"{root}/{artifact_path.strip('/')}"


def register_class_bundle(client: Any, class_name: str, artifact_uri: str, run_id: str,
                          tags: Mapping[str, Any]) -> Any:
    """Register a logged class bundle as a new version of `kdsed-<class>` and tag it (aliases: `point_aliases`)."""
    from mlflow.exceptions import MlflowException

    name = registered_model_name(class_name)
    try:
        client.create_registered_model(name, description=f"kdsed per-class winner for {class_name}")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.create_model_version(name, source=artifact_uri, run_id=run_id,
                                       tags={str(k): str(v) for k, v in tags.items()})


def point_aliases(client: Any, versions: Iterable[Any], aliases: Sequence[str]) -> None:
    """Point every alias in `aliases` of each version's registered model at that version."""
    for version in versions:
        for alias in aliases:
            client.set_registered_model_alias(version.name, alias, version.version)


def resolve_versions(client: Any, alias: str) -> dict[str, Any]:
    """The model version with `alias` of every class; raises naming every class that has none."""
    from mlflow.exceptions import MlflowException

    versions: dict[str, Any] = {}
    missing: list[str] = []
    for class_name in CLASSES:
        name = registered_model_name(class_name)
        try:
            versions[class_name] = client.get_model_version_by_alias(name, alias)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                missing.append(f"{class_name} (no registered model {name})")
            else:
                missing.append(f"{class_name} ({name} has no alias {alias!r})")
    if missing:
        raise RegistryError(f"{len(missing)} of {len(CLASSES)} classes have no version with alias {alias!r}: "
                            f"{', '.join(missing)}")
    return versions


def pull_bundle(out_dir: Path | str, *, alias: str = CHAMPION_ALIAS,
                tracking_uri: str = DEFAULT_TRACKING_URI, force: bool = False) -> Path:
    """Download every class's `alias` version, verify it and assemble the bundle at `out_dir`.

    `out_dir` is replaced once the new bundle is complete, if it is a bundle or an empty folder;
    another existing folder only with `force` (kdsed.safety).
    """
    import mlflow.artifacts
    from mlflow import MlflowClient

    db = sqlite_path(tracking_uri)
    check_output(out_dir, flag="--out", kind="folder", inputs=[db] if db else [], force=force,
                 made_by_kdsed=is_bundle)
    _check_store_exists(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    versions = resolve_versions(client, alias)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.download-", dir=out_dir.parent) as tmp:
        class_dirs: dict[str, Path] = {}
        for class_name, version in versions.items():
            dst = Path(tmp) / class_name
            dst.mkdir()
            local = mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dst),
                                                        tracking_uri=tracking_uri)
            class_dirs[class_name] = Path(local)
        try:
            return assemble_bundle(class_dirs, out_dir)
        except BundleError as e:
            raise BundleError(f"pulling alias {alias!r} from {tracking_uri}: {e}") from None


def _check_store_exists(tracking_uri: str) -> None:
    # MLflow would silently create an empty SQLite store for a mistyped path, or add its tables to another database.
    from kdsed.stores import read_store_problem

    path = sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        raise RegistryError(f"{path}: no MLflow store at {tracking_uri}; run the sweep first or pass "
                            "--tracking-uri with the sweep's URI")
    problem = read_store_problem(tracking_uri)
    if problem:
        raise RegistryError(f"--tracking-uri {tracking_uri}: {problem}")


def summary_rows(bundle_dir: Path | str) -> list[dict[str, Any]]:
    """One row per class of a bundle: class, pass, variant, window, sigma, threshold, val F1."""
    bundle = load_bundle(bundle_dir)
    rows = []
    for name in CLASSES:
        spec = bundle.classes[name]
        rows.append({"class": name, "pass": spec.provenance.get("pass", "?"),
                     "variant": spec.provenance.get("variant", "?"), "window": spec.median_window,
                     "sigma": spec.gaussian_sigma, "threshold": spec.threshold,
                     "val_f1": spec.provenance.get("val_f1")})
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of `summary_rows`."""
    def f1(v: Any) -> str:
        return f"{100 * float(v):.2f}" if isinstance(v, (int, float)) else "-"

    header = ("class", "pass", "variant", "window", "sigma", "threshold", "val F1 %")
    body = [(r["class"], str(r["pass"]), str(r["variant"]), str(r["window"]), f"{r['sigma']:g}",
             f"{r['threshold']:.2f}", f1(r["val_f1"])) for r in rows]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *body))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `pull` the per-class winners of an alias into a bundle directory."""
    parser = argparse.ArgumentParser(prog="python -m kdsed.registry", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pull = sub.add_parser("pull", help="assemble the per-class winner bundle")
    pull.add_argument("--out", required=True, type=Path,
                      help="bundle folder to write (an earlier bundle there is replaced; another folder only with --force)")
    pull.add_argument("--force", action="store_true", help="replace --out even if it is a folder kdsed did not write")
    pull.add_argument("--alias", default=CHAMPION_ALIAS, help="alias of every class's version: champion or pass-N")
    pull.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow tracking/registry URI")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "1")
    disable_mlflow_telemetry()
    start = time.perf_counter()
    try:
        out = pull_bundle(args.out, alias=args.alias, tracking_uri=args.tracking_uri, force=args.force)
    except (RegistryError, BundleError, OutputError) as e:
        print(f"kdsed.registry: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder that turned read-only: the old --out is left as it was
        print(f"kdsed.registry: error: {os_error_line(e)}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    print(format_table(summary_rows(out)))
    print(f"bundle for alias {args.alias!r} -> {out} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
