"""The rule every kdsed command follows for what it writes: never delete or overwrite what kdsed did not create.

`check_output` is called by every command on every output path, before anything is read or written:

- An output may not be one of the command's inputs, lie inside one, or (a folder, which is replaced
  whole) contain one; a folder output may not be the working folder or a folder above it. No flag
  lifts this: such a command could only destroy its own input.
- An existing output is replaced only when kdsed made it (`made_by_kdsed`: a bundle's manifest, a
  report's first line, the marker file of a folder kdsed filled), when it is an empty folder, or
  when the user passes `--force`.
- A file output is never a folder, nor a folder output a file.
- The folder that will hold the output can be written (probed with a nameless temporary file).

Violations raise `OutputError`, which every command prints as one line, exit status 2.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Literal, Sequence

#: Written into folders that kdsed fills (e.g. a report's figures), so that a later run may replace them.
CREATED_MARKER = ".kdsed-created"


class OutputError(ValueError):
    """An output path that would destroy an input or a file kdsed did not create."""


def check_output(path: Path | str, *, flag: str, kind: Literal["file", "folder"], inputs: Sequence[Path | str] = (),
                 force: bool = False, made_by_kdsed: Callable[[Path], bool] | None = None,
                 replaced_whole: bool = True) -> Path:
    """Refuse `path` as an output (see the module docstring); returns it. `flag` names the option in errors.

    `replaced_whole=False`: a folder output that the command writes files into (rather than replacing it).
    """
    path = Path(path)
    where = f"{flag} {path}"
    resolved = path.resolve()
    if kind == "folder" and replaced_whole and Path.cwd().resolve().is_relative_to(resolved):
        raise OutputError(f"{where}: is the working folder or a folder above it, and would be replaced whole; "
                          f"name a new folder, e.g. {flag} winners")
    for given in map(Path, inputs):
        source = given.resolve()
        if resolved == source:
            raise OutputError(f"{where}: is an input of this command ({given}); choose another output path")
        if resolved.is_relative_to(source) and source.is_dir():
            raise OutputError(f"{where}: lies inside the input folder {given}; choose an output path outside it")
        if kind == "folder" and replaced_whole and source.is_relative_to(resolved):
            raise OutputError(f"{where}: holds the input {given} and would be replaced whole; choose another folder")
    if os.path.lexists(path):
        _check_existing(path, where, kind, force, made_by_kdsed, replaced_whole)
    _check_writable(path, where)
    return path


def _check_existing(path: Path, where: str, kind: str, force: bool, made_by_kdsed: Callable[[Path], bool] | None,
                    replaced_whole: bool) -> None:
    is_dir = path.is_dir() and not path.is_symlink()
    if kind == "file" and is_dir:
        raise OutputError(f"{where}: is a folder; expected the path of a file to write")
    if kind == "folder" and not is_dir:
        raise OutputError(f"{where}: is a file; expected the path of a folder to write")
    if force or (is_dir and not any(path.iterdir())) or (made_by_kdsed is not None and made_by_kdsed(path)):
        return
    what = "folder" if is_dir else "file"
    fate = ("files in it would be overwritten" if is_dir and not replaced_whole else
            f"it would be replaced{' with everything in it' if is_dir else ''}")
    raise OutputError(f"{where}: the {what} exists and kdsed did not write it; {fate}: pass --force to replace "
                      f"{'them' if is_dir and not replaced_whole else 'it'}, or choose another path")


def _check_writable(path: Path, where: str) -> None:
    """The nearest existing folder above `path` can be written (nothing is left behind)."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{where}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OutputError(f"{where}: cannot write in {folder} ({e.strerror or e})") from None


def mark_created(folder: Path | str, by: str) -> None:
    """Mark `folder` as filled by kdsed (`by`: the command), so that a later run of it may replace the folder."""
    (Path(folder) / CREATED_MARKER).write_text(f"{by}\n", encoding="utf-8")


def has_marker(folder: Path) -> bool:
    """Whether `folder` carries the marker of a folder kdsed filled."""
    return (folder / CREATED_MARKER).is_file()


def starts_with(prefix: str) -> Callable[[Path], bool]:
    """A `made_by_kdsed` test for text files kdsed writes with a fixed first line (e.g. a report's title)."""
    def test(path: Path) -> bool:
        try:
            with path.open("rb") as f:
                return f.read(len(prefix.encode())) == prefix.encode()
        except OSError:
            return False
    return test


__all__ = ["CREATED_MARKER", "OutputError", "check_output", "has_marker", "mark_created", "starts_with"]
