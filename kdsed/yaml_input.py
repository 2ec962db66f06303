"""Reading an untrusted YAML file in bounded time and memory (docs/limits.md), with one-line errors.

The file must be a regular UTF-8 file of at most MAX_CONFIG_BYTES; its nesting and the number of
values its aliases expand to are counted on PyYAML's event stream (linear in the file's size)
before the document is composed, so nested aliases ("billion laughs") are refused at once.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from kdsed.limits import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_CONFIG_NODES


class YamlInputError(ValueError):
    """A YAML file that cannot be read within the bounds, or is not valid YAML; the message names file and line."""


def read_yaml(path: Path | str) -> tuple[yaml.Node | None, Any]:
    """(composed node, loaded data) of a YAML file, refusing what is beyond the bounds before composing it."""
    path = Path(path)
    text = _read_config_text(path)
    try:
        _check_expansion(text)
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise YamlInputError(f"{path}{_yaml_problem(e)}") from None
    except YamlInputError as e:  # from _check_expansion: "line N: ..."
        raise YamlInputError(f"{path}, {e}") from None
    except RecursionError:
        raise YamlInputError(f"{path}: nested too deeply to be a sweep config; expected a few levels of mappings") from None


def _read_config_text(path: Path) -> str:
    """The text of a config file; errors say what the path is when it is not a readable regular file."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise YamlInputError(f"{path}: config file not found") from None
    except OSError as e:
        raise YamlInputError(f"{path}: cannot be read ({e.strerror or e}); expected a YAML file") from None
    if not stat.S_ISREG(info.st_mode):
        raise YamlInputError(f"{path}: is {_file_kind(info.st_mode)}, not a file; expected a YAML file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise YamlInputError(f"{path}: {info.st_size:,} bytes; a sweep config is at most {MAX_CONFIG_BYTES:,} bytes "
                             "(see docs/limits.md)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise YamlInputError(f"{path}: cannot be read ({e.strerror or e}); expected a YAML file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlInputError(f"{path}: not UTF-8 text (byte {e.start}); expected a YAML file") from None


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line from PyYAML's multi-line message: ", line L, column C: not valid YAML: what is wrong"."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def _check_expansion(text: str) -> None:
    """Refuse a document nested too deeply, or whose aliases expand beyond MAX_CONFIG_NODES values (streamed)."""
    sizes: dict[str, int] = {}  # anchor -> node count of what it names, aliases expanded
    stack: list[list] = []  # [node count, anchor] of each open collection
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append([1, event.anchor])
            total += 1
            if len(stack) > MAX_CONFIG_DEPTH:
                raise YamlInputError(f"line {event.start_mark.line + 1}: nested more than {MAX_CONFIG_DEPTH} levels "
                                     "deep; a sweep config has three (see docs/limits.md)")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            size, anchor = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            size, anchor = 1, event.anchor
            total += 1
        elif isinstance(event, yaml.AliasEvent):
            size, anchor = sizes.get(event.anchor, 1), None
            total += size
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        if stack:
            stack[-1][0] += size
        if total > MAX_CONFIG_NODES:
            raise YamlInputError(f"line {event.start_mark.line + 1}: the document expands to more than "
                                 f"{MAX_CONFIG_NODES:,} values (nested aliases?); a sweep config has a few hundred "
                                 "(see docs/limits.md)")


__all__ = ["YamlInputError", "read_yaml"]
