"""Sound events and the DCASE strong-label TSV format (`filename onset offset event_label`)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from kdsed.atomic import write_atomic
from kdsed.constants import CLASS_INDEX, CLASSES, Seconds
from kdsed.limits import MAX_METADATA_BYTES

STRONG_HEADER = ("filename", "onset", "offset", "event_label")


class MetadataError(ValueError):
    """A metadata or label file does not have the expected content."""


@dataclass(frozen=True, order=True)
class Event:
    """One labelled event of a clip, in seconds from the clip start."""

    onset_s: Seconds
    offset_s: Seconds
    label: str

    @property
    def duration_s(self) -> Seconds:
        return self.offset_s - self.onset_s


#: Events of many clips, keyed by clip filename; a clip with no event maps to [].
EventTable = dict[str, list[Event]]


def _where(path: Path | str, line: int) -> str:
    return f"{path}, line {line}"


def check_label(label: str, path: Path | str, line: int) -> str:
    """Return `label` if it is one of the 10 classes, else raise naming the file and line."""
    if label not in CLASS_INDEX:
        raise MetadataError(
            f"{_where(path, line)}: unknown class label {label!r}; expected one of {', '.join(CLASSES)}"
        )
    return label


def _check_not_misseparated(field: str, path: Path | str, line: int) -> None:
    """Refuse a lone 'filename' that is really an event row separated by commas, semicolons or spaces."""
    for sep, name in ((",", "commas"), (";", "semicolons"), (None, "spaces")):
        parts = field.split(sep)
        if len(parts) == 4 and all(_is_number(x) for x in parts[1:3]):
            raise MetadataError(f"{_where(path, line)}: {field!r} looks like an event row separated by {name}; "
                                "expected 'filename<TAB>onset<TAB>offset<TAB>event_label'")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_event(fields: list[str], path: Path | str, line: int) -> tuple[str, Event | None]:
    """Parse one strong-label row (`filename`, or `filename onset offset label`)."""
    fields = [f.strip() for f in fields]
    while fields and fields[-1] == "":
        fields.pop()
    if len(fields) == 1 and fields[0]:
        _check_not_misseparated(fields[0], path, line)
        return fields[0], None
    if len(fields) != 4 or not fields[0]:
        raise MetadataError(
            f"{_where(path, line)}: malformed row {fields!r}; expected 'filename<TAB>onset<TAB>offset<TAB>event_label'"
            " or a filename alone for a clip without events"
        )
    filename, onset_text, offset_text, label = fields
    try:
        onset_s, offset_s = float(onset_text), float(offset_text)
    except ValueError:
        raise MetadataError(
            f"{_where(path, line)}: onset {onset_text!r} / offset {offset_text!r} are not numbers"
        ) from None
    if not (math.isfinite(onset_s) and math.isfinite(offset_s)) or onset_s < 0:
        raise MetadataError(f"{_where(path, line)}: onset {onset_s} / offset {offset_s} must be finite and >= 0")
    if onset_s >= offset_s:
        raise MetadataError(f"{_where(path, line)}: onset {onset_s} >= offset {offset_s} for {filename}")
    return filename, Event(onset_s, offset_s, check_label(label, path, line))


def read_tsv(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every row of a tab-separated UTF-8 text file (a byte-order mark is allowed).

    A file larger than MAX_METADATA_BYTES is refused unread; a first row whose first field is
    `filename` in another case (`Filename`) is refused as a misspelt header.
    """
    size = path.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise MetadataError(f"{path}: {size:,} bytes, more than {MAX_METADATA_BYTES:,} for a metadata file "
                            "(see docs/limits.md); expected a tab-separated list of clips")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise MetadataError(f"{_where(path, line)}: not UTF-8 text (byte {e.start}); "
                            "expected a tab-separated text file") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    try:
        rows = [(reader.line_num, fields) for fields in reader]
    except csv.Error as e:
        raise MetadataError(f"{_where(path, reader.line_num)}: {e}; expected a tab-separated text file") from None
    if rows and rows[0][0] == 1 and rows[0][1]:
        _check_header_case(rows[0][1], path)
    return rows


def _check_header_case(fields: list[str], path: Path | str) -> None:
    """Refuse a header spelt in another case: read as data, its names would be taken for a clip and a class."""
    names = [x.strip() for x in fields if x.strip()]
    if names and names[0].lower() == "filename" and names != [n.lower() for n in names]:
        raise MetadataError(f"{_where(path, 1)}: header {names!r} is not in lower case; expected "
                            f"{'<TAB>'.join(n.lower() for n in names)!r} (DCASE metadata headers are lower case)")


def read_strong_tsv(path: Path | str) -> EventTable:
    """Read a DCASE strong-label TSV into {filename: [Event, ...]} (header optional).

    An event row given twice is refused, naming both lines: it would be counted twice (with a
    reference listing every event twice, a perfect system scores recall 0.5).
    """
    path = Path(path)
    if not path.is_file():
        raise MetadataError(f"{path}: strong-label file not found")
    table: EventTable = {}
    first_line: dict[tuple[str, Event], int] = {}
    for line, fields in read_tsv(path):
        if not fields or all(not x.strip() for x in fields):
            continue
        if line == 1 and _is_header(fields, path):
            continue
        filename, event = parse_event(fields, path, line)
        events = table.setdefault(filename, [])
        if event is not None:
            earlier = first_line.setdefault((filename, event), line)
            if earlier != line:
                raise MetadataError(f"{_where(path, line)}: repeats line {earlier} ({filename} {event.onset_s:g} "
                                    f"{event.offset_s:g} {event.label}); an event listed twice is counted twice: "
                                    "remove the repeated row")
            events.append(event)
    return table


def _is_header(fields: list[str], path: Path) -> bool:
    """A strong-label header: `filename` alone or the four names; other spellings of it are refused, not read as data."""
    names = tuple(x.strip() for x in fields if x.strip())
    if names in (STRONG_HEADER, ("filename",)):
        return True
    if names and names[0] == "filename":
        raise MetadataError(f"{_where(path, 1)}: header {list(names)!r} differs from {'<TAB>'.join(STRONG_HEADER)!r}; "
                            "expected that header, or none")
    return False


def format_time(seconds: Seconds) -> str:
    """Three decimals as in the DCASE files, or full precision where three would change the value."""
    short = f"{seconds:.3f}"
    return short if float(short) == seconds else repr(float(seconds))


def write_strong_tsv(path: Path | str, table: Mapping[str, Iterable[Event]]) -> None:
    """Write {filename: events} as a DCASE strong-label TSV, atomically; clips without events get a bare row."""
    rows: list[list[str]] = []
    for filename in sorted(table):
        events = sorted(table[filename])
        if not events:
            rows.append([filename])
        for e in events:
            _check_writable(e, filename, path)
            rows.append([filename, format_time(e.onset_s), format_time(e.offset_s), e.label])

    write_tsv(path, STRONG_HEADER, rows)


def write_tsv(path: Path | str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Write a tab-separated metadata file with its header, atomically."""
    def fill(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)

    write_atomic(Path(path), fill)


def _check_writable(e: Event, filename: str, path: Path | str) -> None:
    """Refuse to write an event the reader would refuse: nothing unreadable ever reaches the disk."""
    if not (math.isfinite(e.onset_s) and math.isfinite(e.offset_s) and 0 <= e.onset_s < e.offset_s):
        raise MetadataError(f"{path}: event {e.label} of {filename} has onset {e.onset_s} / offset {e.offset_s}; "
                            "expected finite times with 0 <= onset < offset")
    if e.label not in CLASS_INDEX:
        raise MetadataError(f"{path}: event of {filename} has unknown class label {e.label!r}; "
                            f"expected one of {', '.join(CLASSES)}")
