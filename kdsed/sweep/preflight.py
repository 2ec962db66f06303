"""Start-up checks of a sweep: what can be checked in seconds, before anything is written or trained.

`check_sweep(cfg)` raises one error naming the config key (and command-line flag) or the input file:

- `tracking.storage` (--storage): a local folder must exist, or be creatable, and be writable; a remote
  URI (s3://, gs://) must answer within `DEADLINE_S`.
- `tracking.tracking_uri` (--tracking-uri): for `sqlite:///FILE` the folder must be creatable and
  writable and an existing FILE a SQLite database; an http(s) server must answer; a plain path or
  file: URI must be a writable folder. Other stores (databricks, SQL servers) are left to MLflow.
- `ray.address` (--address): a HOST:PORT must accept a connection (`auto` is left to Ray).
- `data.root` (--data): the layout and metadata (`load_dataset`: labels, rows, times, every listed
  clip present) and the header of every audio file that the run reads (readable, not empty, not
  truncated, within the channel and rate bounds of `kdsed.limits`). Without a root,
  `data.synth_preset` must name a preset.
- sizes (`check_sizes`): values beyond `kdsed.limits.SWEEP_SIZE_BOUNDS` (e.g. `--passes 100000`)
  are refused unless `--allow-large`.
- `--resume` (`check_resume`): a sweep of the same results-defining config is in the storage, it
  has not finished more passes than asked, and a SQLite tracking store holds its MLflow runs.

A SQLite file that holds another program's tables is refused: MLflow would add its own to it.

Nothing is created: folders are probed in their nearest existing ancestor with a nameless
temporary file. Audio that is damaged beyond its header (undecodable samples, NaN) is refused
later, when features are extracted, with an error naming the file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from kdsed import schema
from kdsed.config import ConfigError, SweepConfig, to_dict
from kdsed.events import MetadataError
from kdsed.limits import SWEEP_SIZE_BOUNDS, lookup
from kdsed.stores import file_store_problem, sqlite_store_problem

DEADLINE_S = 20.0  # a remote storage or tracking server that has not answered by then counts as unreachable
#: Command-line flags of config keys, for errors.
FLAGS = {"distill.passes": "--passes", "seeds": "--seeds"}


class PreflightError(ConfigError):
    """The sweep's config names a storage, tracking store or cluster that cannot be used."""


def check_sweep(cfg: SweepConfig, *, allow_large: bool = False) -> dict[str, int]:
    """Run every start-up check of a sweep (cheapest first); raise on the first that fails.

    Returns the number of clips per subset that the sweep will read.
    """
    check_sizes(cfg, allow_large=allow_large)
    check_storage(cfg.tracking.storage)
    check_tracking(cfg.tracking.tracking_uri)
    check_ray_address(cfg.ray.address)
    return check_data(cfg)


def check_sizes(cfg: SweepConfig, *, allow_large: bool = False) -> None:
    """Refuse values beyond SWEEP_SIZE_BOUNDS (typos such as --passes 100000) unless `allow_large`."""
    if allow_large:
        return
    data = to_dict(cfg)
    for key, bound in SWEEP_SIZE_BOUNDS.items():
        value = lookup(data, key)
        if value is not None and value > bound:
            flag = f" ({FLAGS[key]})" if key in FLAGS else ""
            raise ConfigError(f"{key}{flag} {value:g}: more than {bound:g}, the bound for a sweep (see docs/limits.md); "
                              "pass --allow-large to run it anyway")


def startup_errors() -> tuple[type[BaseException], ...]:
    """The errors a sweep reports as one line and exit status 2: bad input, not bugs (which keep their traceback).

    An error class can only have been raised if its module was imported: the others are not imported here.
    """
    errors: list[type[BaseException]] = [ConfigError, MetadataError, FileNotFoundError]
    for module, name in (("kdsed.pseudolabels", "PseudoLabelError"), ("kdsed.sweep.storage", "StorageError"),
                         ("kdsed.sweep.tracking", "TrackingError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


# ---- storage and tracking -----------------------------------------------------------------------------

def check_storage(uri: str) -> None:
    """The sweep storage is a writable (or creatable) local folder, or a remote store that answers."""
    key = "tracking.storage (--storage)"
    if "://" not in uri or uri.startswith("file://"):
        _check_folder(Path(uri.removeprefix("file://")), key, uri)
        return

    def reach() -> None:
        import pyarrow.fs as pafs

        fs, root = pafs.FileSystem.from_uri(uri)
        fs.get_file_info(root)

    _reach(reach, f"{key} {uri!r}: the storage cannot be reached")


def check_tracking(uri: str) -> None:
    """The MLflow tracking store can be opened: see the module docstring for what is checked per kind."""
    key = "tracking.tracking_uri (--tracking-uri)"
    db = schema.sqlite_path(uri)
    if db is not None:
        _check_sqlite(db, key, uri)
    elif uri.startswith(("http://", "https://")):
        _reach(lambda: _http_answers(uri), f"{key} {uri!r}: the MLflow tracking server cannot be reached "
               "(start it with `mlflow server`, or pass another --tracking-uri)")
    elif uri.startswith("file:") or ":" not in uri and not uri.startswith("databricks"):
        problem = file_store_problem(uri)
        if problem:
            raise PreflightError(f"{key} {uri!r}: {problem}")
        _check_folder(Path(uri.removeprefix("file://").removeprefix("file:")), key, uri)




def _check_sqlite(db: Path, key: str, uri: str) -> None:
    _check_folder(db.parent, key, uri)
    if db.is_dir():
        raise PreflightError(f"{key} {uri!r}: {db} is a folder; expected a SQLite database file")
    if db.exists():
        problem = sqlite_store_problem(db, empty_ok=True)
        if problem:
            raise PreflightError(f"{key} {uri!r}: {problem}; expected an MLflow store, or a path where one can be created")



def _check_folder(folder: Path, key: str, value: str) -> None:
    """`folder` is a writable folder, or can be created: its nearest existing ancestor is a writable folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PreflightError(f"{key} {value!r}: {existing} is a file, not a folder; expected a folder that "
                             "exists or can be created")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        what = "write in" if existing == folder else f"create {folder} in"
        raise PreflightError(f"{key} {value!r}: cannot {what} {existing} ({e.strerror or e}); expected a "
                             "writable folder") from None


def _http_answers(uri: str) -> None:
    """Any HTTP answer (even 401 or 404) shows the server is up; what it thinks of us is MLflow's business."""
    context = None
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":  # as MLflow itself would
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=DEADLINE_S, context=context).close()
    except urllib.error.HTTPError:
        pass


def _reach(call: Callable[[], Any], what: str) -> None:
    """Run `call` in a daemon thread; raise `what` if it fails or has not returned within DEADLINE_S."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except Exception as e:  # pyarrow, urllib and socket raise many types for an unreachable service
            outcome.append(e)

    thread = threading.Thread(target=run, name="kdsed-preflight", daemon=True)
    thread.start()
    thread.join(DEADLINE_S)
    if not outcome:
        raise PreflightError(f"{what}: no answer within {DEADLINE_S:g} s")
    if outcome[0] is not None:
        e = outcome[0]
        reason = getattr(e, "reason", None) or e
        raise PreflightError(f"{what}: {type(e).__name__}: {str(reason).strip()[:300]}")


# ---- Ray ----------------------------------------------------------------------------------------------

def check_ray_address(address: str | None) -> None:
    """A HOST:PORT cluster address accepts a connection (no address: a local Ray; `auto`: left to Ray)."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise PreflightError(f"ray.address (--address) {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise PreflightError(f"ray.address (--address) {address!r}: no Ray cluster answers at {host}:{port} "
                             f"({e.strerror or e}); start one with `ray start --head`, or leave --address out "
                             "for a local Ray") from None


# ---- data -----------------------------------------------------------------------------------------------

def check_data(cfg: SweepConfig) -> dict[str, int]:
    """The configured data set's metadata and audio headers, or the synthetic preset's name; clips per subset."""
    if not cfg.data.root:
        from kdsed.data.synth import PRESETS

        if cfg.data.synth_preset not in PRESETS:
            raise ConfigError(f"data.synth_preset: {cfg.data.synth_preset!r} is not one of {', '.join(PRESETS)}")
        return dict(PRESETS[cfg.data.synth_preset].counts)
    from kdsed.data import load_dataset
    from kdsed.data.audio import AudioError, probe_audio
    from kdsed.prepare import resolve_data_root, used_clips
    from kdsed.data.audio import check_audio_header

    dataset = load_dataset(resolve_data_root(cfg.data))
    errors: list[AudioError] = []
    by_subset = used_clips(dataset, cfg.data)
    clips = [c for subset in by_subset.values() for c in subset]
    for clip in clips:
        try:
            probe_audio(clip.audio_path)
            check_audio_header(clip.audio_path)
        except AudioError as e:
            errors.append(e)
    if errors:
        more = f" ({len(errors) - 1} more of the {len(clips)} audio files are bad too)" if len(errors) > 1 else ""
        raise AudioError(f"{errors[0]}{more}")
    return {subset: len(c) for subset, c in by_subset.items()}


# ---- --resume ------------------------------------------------------------------------------------------

def check_resume(cfg: SweepConfig, resume: bool | str) -> None:
    """A sweep to resume exists in the storage with this config's results key, and its MLflow runs are in the store.

    Reads only: a local storage folder that does not exist is not created.
    """
    from kdsed.sweep.state import find_resumable, sweep_key
    from kdsed.sweep.storage import Storage

    uri = cfg.tracking.storage
    if ("://" not in uri or uri.startswith("file://")) and not Path(uri.removeprefix("file://")).is_dir():
        raise FileNotFoundError(f"--resume: no sweep to resume in {uri} (the folder does not exist)")
    state = find_resumable(Storage(uri), sweep_key(cfg), cfg.distill.passes, resume)
    db = schema.sqlite_path(cfg.tracking.tracking_uri)
    if state.parent_run_id and db is not None and not _has_run(db, state.parent_run_id):
        raise PreflightError(f"--resume: sweep {state.sweep_id}'s MLflow runs (parent run {state.parent_run_id}) are "
                             f"not in {cfg.tracking.tracking_uri}; resume with the --tracking-uri it was started with "
                             "(a moved SQLite store works if its file is moved whole)")


def _has_run(db: Path, run_id: str) -> bool:
    """Whether the SQLite MLflow store `db` holds run `run_id` (read only)."""
    import sqlite3

    if sqlite_store_problem(db, empty_ok=False):
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            return con.execute("select 1 from runs where run_uuid = ?", (run_id,)).fetchone() is not None
    except sqlite3.Error:
        return False
