"""Read-only checks that a tracking URI names an MLflow store (shared by the sweep's preflight, the report and
`registry pull`): a missing file, another program's SQLite database or a retired file store is named, and
nothing is created or migrated, unlike opening it with MLflow."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kdsed.schema import sqlite_path

SQLITE_MAGIC = b"SQLite format 3\x00"
#: Tables of an MLflow store (any one of them shows that a SQLite file is MLflow's).
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs", "metrics", "params", "tags",
                           "registered_models", "model_versions"})


def disable_mlflow_telemetry() -> None:
    """Turn MLflow's usage telemetry off (unless the user chose) before the first `import mlflow`.

    Where the internet is out of reach (a cluster, CI), MLflow 3's telemetry thread fails to fetch its
    config and then deletes an environment variable while the main thread's first HTTP request iterates
    os.environ for proxies: KeyError '_MLFLOW_TELEMETRY_SESSION_ID', at random, against http:// stores.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def file_store_problem(uri: str) -> str | None:
    """Why a plain path or file: URI cannot be a tracking store: MLflow 3 refuses its file store (unless told)."""
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() == "true":
        return None
    path = Path(uri.removeprefix("file://").removeprefix("file:"))
    hint = (f"; it is a SQLite database: did you mean sqlite:///{path}?" if path.is_file()
            and path.read_bytes()[:len(SQLITE_MAGIC)] == SQLITE_MAGIC else "")
    return (f"a plain path names MLflow's retired file store, which MLflow 3 refuses; expected sqlite:///FILE.db or "
            f"http(s)://HOST{hint}")


def read_store_problem(uri: str) -> str | None:
    """Why `uri` is not an existing MLflow store to read (report, registry pull); None if it may be one.

    Read only: a missing or foreign SQLite file is named, never created or migrated by MLflow.
    """
    db = sqlite_path(uri)
    if db is not None:
        if not db.exists():
            return f"no MLflow store at {db}"
        return sqlite_store_problem(db, empty_ok=False)
    if uri.startswith("file:") or ":" not in uri:
        return file_store_problem(uri)
    return None


def sqlite_store_problem(db: Path, *, empty_ok: bool) -> str | None:
    """Why `db` is not an MLflow SQLite store (None if it is one; with `empty_ok`, also an empty database).

    Read only (opened with `mode=ro`): nothing is created or migrated, unlike opening it with MLflow.
    """
    import sqlite3

    if not db.is_file():
        return f"{db} is not a file"
    try:
        with db.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        return f"{db} cannot be read ({e.strerror or e})"
    if not head:
        return None if empty_ok else f"{db} is empty, not an MLflow store"
    if head != SQLITE_MAGIC:
        return f"{db} is not a SQLite database (it starts with {head[:8]!r})"
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.Error as e:
        return f"{db} is not a readable SQLite database ({e})"
    if tables & MLFLOW_TABLES or (empty_ok and not tables):
        return None
    shown = ", ".join(sorted(tables)[:5]) or "none"
    return f"{db} is a SQLite database of another program (tables: {shown}), not an MLflow store"
