"""The sweep's storage: a local folder or a remote URI (s3://, gs://) through pyarrow.fs.

Every local write goes through `kdsed.atomic` (a temporary sibling, then a
rename), so a crash leaves either the old file or the new one, never a
half-written one; object stores write whole objects, which is atomic already.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs

from kdsed.atomic import write_atomic, write_bytes_atomic


class StorageError(OSError):
    """The sweep storage cannot be reached or written."""


class Storage:
    """Files of one sweep storage root, addressed by relative paths."""

    def __init__(self, uri: str) -> None:
        self.is_local = "://" not in uri or uri.startswith("file://")
        if self.is_local:
            self.root_uri = str(Path(uri.removeprefix("file://")).resolve())
            self.fs, self.root = pafs.LocalFileSystem(), self.root_uri
            try:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageError(f"storage {uri}: cannot create folder: {e}") from None
        else:
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(uri)
            except Exception as e:  # pyarrow raises several types for a bad or unreachable URI
                raise StorageError(f"storage {uri}: cannot open: {e}") from None
            self.root_uri = uri.rstrip("/")

    def uri(self, rel: str) -> str:
        """The full path or URI of `rel` (what Ray's storage_path takes)."""
        return f"{self.root_uri}/{rel}" if rel else self.root_uri

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self._path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self._path(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write `data` to `rel` atomically; returns its URI."""
        if self.is_local:
            write_bytes_atomic(self._path(rel), data)
        else:
            with self.fs.open_output_stream(self._path(rel)) as f:
                f.write(data)
        return self.uri(rel)

    def put_file(self, local: Path | str, rel: str) -> str:
        """Copy a local file to `rel` atomically; returns its URI."""
        if self.is_local:
            write_atomic(self._path(rel), lambda tmp: shutil.copyfile(local, tmp))
            return self.uri(rel)
        return self.write_bytes(rel, Path(local).read_bytes())

    def get_file(self, rel: str, local: Path | str) -> Path:
        """Copy `rel` to a local file."""
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        Path(local).write_bytes(self.read_bytes(rel))
        return Path(local)

    def list_files(self, rel: str) -> list[str]:
        """Names of the files directly under `rel` (empty if it does not exist)."""
        selector = pafs.FileSelector(self._path(rel), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File)

    def list_dirs(self, rel: str) -> list[str]:
        """Names of the folders directly under `rel` (empty if it does not exist)."""
        selector = pafs.FileSelector(self._path(rel), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.Directory)


@contextlib.contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive lock on the local file `path` (created if absent) for processes of this machine.

    Guards what concurrent sweeps on one machine would otherwise race on: generating the synthetic set,
    creating a SQLite MLflow store, moving registry aliases. Without `fcntl` (Windows) it does nothing.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
