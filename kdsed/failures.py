"""One line for the failures of the machine that a command meets while it runs: a full disk, a folder it
may not write. Bad input is refused before anything runs (exit 2); these happen during the run (exit 1).

A full disk reaches the top in many wrappings: an OSError from an atomic write, the same error
raised in a Ray worker and wrapped in a RayTaskError (whose text carries the remote traceback),
SQLite's "database or disk is full" inside an MLflow exception, pyarrow's IOError. `disk_full`
finds it in any of them and names the file that could not be written.
"""

from __future__ import annotations

import errno
import re
from typing import Iterator

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
EXIT_RUNTIME_FAILURE = 1

_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] [^\n:']*(?::\s*'([^'\n]+)')?")
_SQLITE_FULL = "database or disk is full"
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded")


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and everything that caused it: __cause__, __context__ and Ray's `.cause`, each once."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(x for x in (getattr(e, "cause", None), e.__cause__, e.__context__) if isinstance(x, BaseException))


def disk_full(error: BaseException) -> str | None:
    """"no space left on device (ENOSPC) writing PATH" if `error` comes from a full disk or quota, else None."""
    chain = list(causes(error))
    for e in chain:
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return _no_space(errno.errorcode[e.errno], e.filename)
    text = "\n".join(str(e) for e in chain)
    for match in _ERRNO_TEXT.finditer(text):
        if int(match.group(1)) in DISK_FULL_ERRNOS:
            return _no_space(errno.errorcode[int(match.group(1))], match.group(2))
    if _SQLITE_FULL in text:
        return "no space left on device (SQLite: database or disk is full) writing the MLflow store"
    if any(t in text for t in _NO_SPACE_TEXT):
        return _no_space("ENOSPC", None)
    return None


def _no_space(code: str, path: object) -> str:
    where = f" writing {_target(str(path))}" if path else ""
    return f"no space left on device ({code}){where}"


def _target(path: str) -> str:
    """`path` with every temporary sibling `.NAME.tmp-host-pid-random` of kdsed.atomic shown as the NAME it stands for."""
    return "/".join(_TEMPORARY.sub(r"\1", part) for part in path.split("/"))


_TEMPORARY = re.compile(r"^\.(.+)\.(?:tmp|old)-.+-\d+-[0-9a-f]+$")


def os_error_line(error: OSError, what: str = "write") -> str:
    """"cannot write PATH: Permission denied (EACCES)" for an OSError (a full disk as `disk_full` says it)."""
    full = disk_full(error)
    if full:
        return full
    code = errno.errorcode.get(error.errno or 0)
    where = f" {_target(str(error.filename))}" if error.filename else ""
    return f"cannot {what}{where}: {error.strerror or error}" + (f" ({code})" if code else "")


__all__ = ["DISK_FULL_ERRNOS", "EXIT_RUNTIME_FAILURE", "causes", "disk_full", "os_error_line"]
