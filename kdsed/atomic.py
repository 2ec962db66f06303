"""Atomic writes of files and folders: fill a temporary sibling, then rename it over the target.

Every writer of results (pseudo-labels, checkpoints, bundles, event TSVs, metadata, figures, the
feature cache, resolved configs) goes through here, so a reader, or a writer killed at any moment,
sees either the old target or the complete new one, never a torn one. The temporary sibling is
`.<name>.tmp-<host>-<pid>-<random>` in the target's folder (same file system: the rename is atomic).
A killed writer leaves its temporary sibling behind; the next write of the same target on the same
host removes those whose process is gone.

A folder is swapped in with Linux's `renameat2(RENAME_EXCHANGE)`, atomic like a file rename. Where
that is not available, the old folder is first moved aside (`.<name>.old-...`) and then replaced; a
writer killed between those two renames leaves no target, and the next write puts the old one back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import socket
import sys
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["replace_dir_atomic", "write_atomic", "write_bytes_atomic", "write_text_atomic"]


def write_atomic(path: Path | str, fill: Callable[[Path], None]) -> Path:
    """Write `path` by calling `fill(tmp)` on a temporary sibling, then renaming it into place; returns `path`.

    If `fill` raises, the temporary file is removed and an existing `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    tmp = _sibling(path, "tmp")
    try:
        fill(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise _naming(e, path) from None
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _naming(error: OSError, target: Path) -> OSError:
    """`error`, naming `target` when it names no file (a write on a full disk names none)."""
    if error.filename is not None or error.errno is None:
        return error
    named = OSError(error.errno, error.strerror, str(target))
    named.__cause__ = error.__cause__
    return named


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def replace_dir_atomic(target: Path | str, fill: Callable[[Path], None], *, keep_existing: bool = False) -> Path:
    """Fill a temporary folder with `fill(tmp)`, then swap it in as `target`; returns `target`.

    An existing `target` survives any failure of `fill`. With `keep_existing`, an existing `target` is
    kept and the new folder discarded (for caches: whoever finished first wins).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(target)
    tmp = _sibling(target, "tmp")
    tmp.mkdir()
    try:
        fill(tmp)
        for file in (p for p in tmp.rglob("*") if p.is_file()):
            _fsync(file)
        _fsync_dir(tmp)
        if keep_existing or not target.exists():
            try:
                os.rename(tmp, target)
            except OSError:
                if not (keep_existing and target.is_dir()):
                    raise
        elif _exchange(tmp, target):  # tmp now holds the old folder
            pass
        else:
            old = _sibling(target, "old")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
    finally:
        _remove(tmp)
    _fsync_dir(target.parent)
    return target


# ---- temporary names and the leftovers of killed writers -------------------------------------------

_HOST = socket.gethostname().replace("/", "_") or "host"


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def _leftovers(path: Path, kind: str) -> Iterator[Path]:
    """Siblings of `path` of `kind` written by processes of this host that no longer run."""
    prefix = f".{path.name}.{kind}-{_HOST}-"
    try:
        names = [e.name for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            yield path.parent / name


def _clean_stale(path: Path) -> None:
    """Put back a folder lost between two renames by a killed writer, and remove killed writers' temporaries."""
    if not path.exists():
        olds = sorted(_leftovers(path, "old"), key=lambda p: p.stat().st_mtime)
        if olds:  # the newest is the version that was in place when its writer was killed
            os.replace(olds[-1], path)
    for leftover in [*_leftovers(path, "tmp"), *_leftovers(path, "old")]:
        _remove(leftover)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: alive
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---- durability ---------------------------------------------------------------------------------------

def _fsync(path: Path) -> None:
    """Flush a file's data to disk, so that the rename never publishes a file the disk does not hold yet."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (the rename itself); not possible everywhere, and then skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- an atomic swap of two folders (Linux) -----------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` in one step with renameat2(RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc < 2.28, or another C library
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):  # file system or kernel cannot
        return False
    raise OSError(err, os.strerror(err), str(b))
