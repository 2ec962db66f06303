"""The DCASE 2018 Task 4 data layout (and its DESED successor names): metadata readers and `load_dataset`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from kdsed.constants import (
    CLASS_INDEX, EVAL, SUBSETS, TEST, TRAIN_SUBSETS, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN, WEAK,
)
from kdsed.events import Event, EventTable, MetadataError, check_label, read_strong_tsv, read_tsv, write_tsv

WEAK_HEADER = ("filename", "event_labels")
METADATA_SUFFIXES = (".csv", ".tsv")
HIDDEN_SUFFIX = "_strong"


class MissingAudioError(MetadataError):
    """Clips listed in a metadata file have no audio file."""


@dataclass(frozen=True)
class SubsetLayout:
    """Where one subset lives under the data root: a metadata file stem (+ .csv/.tsv) and candidate audio folders."""

    metadata: str
    audio_dirs: tuple[str, ...]


_DESED_VALIDATION_AUDIO = ("audio/validation", "audio/validation/validation_16k", "audio/validation/validation")

#: subset -> layouts tried in order: DCASE 2018 names first, then the DESED successor names.
LAYOUTS: dict[str, tuple[SubsetLayout, ...]] = {
    WEAK: (SubsetLayout("metadata/train/weak", ("audio/train/weak", "audio/train/weak_16k")),),
    UNLABEL_IN_DOMAIN: (SubsetLayout("metadata/train/unlabel_in_domain",
                                     ("audio/train/unlabel_in_domain", "audio/train/unlabel_in_domain_16k")),),
    UNLABEL_OUT_OF_DOMAIN: (SubsetLayout("metadata/train/unlabel_out_of_domain",
                                         ("audio/train/unlabel_out_of_domain",)),),
    TEST: (SubsetLayout("metadata/test/test", ("audio/test",)),
           SubsetLayout("metadata/validation/test_dcase2018", _DESED_VALIDATION_AUDIO),
           SubsetLayout("metadata/validation/validation", _DESED_VALIDATION_AUDIO)),
    EVAL: (SubsetLayout("metadata/eval/eval", ("audio/eval",)),
           SubsetLayout("metadata/validation/eval_dcase2018", _DESED_VALIDATION_AUDIO),
           SubsetLayout("metadata/eval/public", ("audio/eval/public", "audio/eval"))),
}
STRONG_SUBSETS = (TEST, EVAL)


@dataclass(frozen=True)
class Clip:
    """One audio clip of a subset with whatever labels the subset has."""

    filename: str
    audio_path: Path
    subset: str
    weak_labels: tuple[str, ...] | None
    events: tuple[Event, ...] | None
    hidden_events: tuple[Event, ...] | None = None


@dataclass
class DcaseDataset:
    """Clips of the loaded subsets, keyed by subset name, in metadata order."""

    root: Path
    clips: dict[str, list[Clip]]

    def subset(self, name: str) -> list[Clip]:
        """The clips of subset `name` (which must have been loaded)."""
        if name not in self.clips:
            raise KeyError(f"subset {name!r} not loaded from {self.root}; loaded: {', '.join(self.clips) or 'none'}")
        return self.clips[name]

    def reference_table(self, subset: str) -> EventTable:
        """{filename: [Event]} of a strongly labelled subset (test/eval)."""
        clips = self.subset(subset)
        if any(c.events is None for c in clips):
            raise ValueError(f"subset {subset!r} has no strong labels; strong subsets: {', '.join(STRONG_SUBSETS)}")
        return {c.filename: list(c.events or ()) for c in clips}

    def hidden_table(self, subset: str) -> EventTable | None:
        """{filename: [Event]} of the synthetic set's hidden strong labels of `subset`, or None if it has none."""
        clips = self.subset(subset)
        if all(c.hidden_events is None for c in clips):
            return None
        return {c.filename: list(c.hidden_events or ()) for c in clips}

    def counts(self) -> dict[str, int]:
        """Number of clips per loaded subset."""
        return {name: len(clips) for name, clips in self.clips.items()}


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped fields) of a tab-separated file, skipping blank lines and a 'filename...' header."""
    if not path.is_file():
        raise MetadataError(f"{path}: metadata file not found")
    for line, fields in read_tsv(path):
        fields = [x.strip() for x in fields]
        while fields and not fields[-1]:
            fields.pop()
        if not fields or (line == 1 and fields[0] == "filename"):
            continue
        yield line, fields


def _check_new(seen: dict[str, int], filename: str, path: Path, line: int) -> None:
    if filename in seen:
        raise MetadataError(f"{path}, line {line}: duplicate filename {filename!r} (first on line {seen[filename]})")
    seen[filename] = line


def _read_weak(path: Path) -> dict[str, tuple[int, tuple[str, ...]]]:
    out: dict[str, tuple[int, tuple[str, ...]]] = {}
    seen: dict[str, int] = {}
    for line, fields in _rows(path):
        if len(fields) != 2 or not fields[0]:
            raise MetadataError(f"{path}, line {line}: malformed row {fields!r}; expected "
                                "'filename<TAB>event_labels' with comma-separated class names")
        names = [name.strip() for name in fields[1].split(",") if name.strip()]
        if not names:
            raise MetadataError(f"{path}, line {line}: no event label for {fields[0]!r}; expected at least one")
        _check_new(seen, fields[0], path, line)
        labels = {check_label(name, path, line) for name in names}
        out[fields[0]] = (line, tuple(sorted(labels, key=CLASS_INDEX.__getitem__)))
    return out


def _read_list(path: Path) -> dict[str, int]:
    seen: dict[str, int] = {}
    for line, fields in _rows(path):
        if len(fields) != 1 or not fields[0]:
            raise MetadataError(f"{path}, line {line}: malformed row {fields!r}; expected a filename alone")
        _check_new(seen, fields[0], path, line)
    return seen


def read_weak_csv(path: Path | str) -> dict[str, tuple[str, ...]]:
    """Read a weak-label file (`filename<TAB>label,label`) into {filename: labels in class order}."""
    return {name: labels for name, (_, labels) in _read_weak(Path(path)).items()}


def read_clip_list(path: Path | str) -> list[str]:
    """Read an unlabeled clip list (header `filename`, one filename a row)."""
    return list(_read_list(Path(path)))


def write_weak_csv(path: Path | str, labels: dict[str, Iterable[str]]) -> None:
    """Write {filename: labels} as a weak-label file, sorted by filename."""
    write_tsv(path, WEAK_HEADER, ([name, ",".join(labels[name])] for name in sorted(labels)))


def write_clip_list(path: Path | str, filenames: Iterable[str]) -> None:
    """Write an unlabeled clip list, sorted by filename."""
    write_tsv(path, ("filename",), ([name] for name in sorted(filenames)))


def _find_metadata(root: Path, subset: str) -> tuple[Path, SubsetLayout] | None:
    for layout in LAYOUTS[subset]:
        for suffix in METADATA_SUFFIXES:
            path = root / (layout.metadata + suffix)
            if path.is_file():
                return path, layout
    return None


def expected_metadata(subset: str) -> list[str]:
    """The metadata paths (relative to the root) accepted for `subset`."""
    return [layout.metadata + suffix for layout in LAYOUTS[subset] for suffix in METADATA_SUFFIXES]


def _audio_dir(root: Path, layout: SubsetLayout, first_filename: str | None) -> Path:
    """The candidate audio folder holding the first clip, else the first that exists, else the first."""
    dirs = [root / d for d in layout.audio_dirs]
    for d in dirs:
        if first_filename and (d / first_filename).is_file():
            return d
    return next((d for d in dirs if d.is_dir()), dirs[0])


def _check_audio(audio_dir: Path, lines: dict[str, int], metadata: Path) -> None:
    present = {e.name for e in os.scandir(audio_dir)} if audio_dir.is_dir() else set()
    missing = [name for name in lines if name not in present]
    if missing:
        first = ", ".join(f"{name} (line {lines[name]})" for name in missing[:5])
        raise MissingAudioError(f"{metadata}: {len(missing)} of {len(lines)} listed clips have no audio file in "
                                f"{audio_dir}; first {min(5, len(missing))}: {first}")


def _strong_lines(path: Path) -> dict[str, int]:
    lines: dict[str, int] = {}
    for line, fields in _rows(path):
        lines.setdefault(fields[0], line)
    return lines


def _hidden(root: Path, layout: SubsetLayout, lines: dict[str, int]) -> EventTable | None:
    for suffix in (".tsv", ".csv"):
        path = root / (layout.metadata + HIDDEN_SUFFIX + suffix)
        if path.is_file():
            table = read_strong_tsv(path)
            unknown = [name for name in table if name not in lines]
            if unknown:
                raise MetadataError(f"{path}: {len(unknown)} clips not listed in the subset, e.g. {unknown[0]!r}")
            return table
    return None


def _load_subset(root: Path, subset: str, check_audio: bool) -> list[Clip]:
    found = _find_metadata(root, subset)
    if found is None:
        raise MetadataError(f"{root}: no metadata for subset {subset!r}; expected one of "
                            + ", ".join(str(root / p) for p in expected_metadata(subset)))
    path, layout = found
    weak: dict[str, tuple[int, tuple[str, ...]]] = {}
    strong: EventTable = {}
    if subset == WEAK:
        weak = _read_weak(path)
        lines = {name: line for name, (line, _) in weak.items()}
    elif subset in STRONG_SUBSETS:
        strong, lines = read_strong_tsv(path), _strong_lines(path)
    else:
        lines = _read_list(path)
    if not lines:
        raise MetadataError(f"{path}, line 1: no clips listed; expected at least one row after the header")
    audio_dir = _audio_dir(root, layout, next(iter(lines)))
    if check_audio:
        _check_audio(audio_dir, lines, path)
    hidden = _hidden(root, layout, lines) if subset in TRAIN_SUBSETS else None
    return [_make_clip(name, audio_dir, subset, weak, strong, hidden) for name in lines]


def _make_clip(name: str, audio_dir: Path, subset: str, weak: dict, strong: EventTable,
               hidden: EventTable | None) -> Clip:
    events = tuple(sorted(strong[name])) if subset in STRONG_SUBSETS else None
    if events is not None:
        labels: tuple[str, ...] | None = tuple(sorted({e.label for e in events}, key=CLASS_INDEX.__getitem__))
    else:
        labels = weak[name][1] if name in weak else None
    hidden_events = tuple(sorted(hidden[name])) if hidden is not None and name in hidden else None
    return Clip(name, audio_dir / name, subset, labels, events, hidden_events)


def load_dataset(root: Path | str, *, subsets: Iterable[str] | None = SUBSETS, check_audio: bool = True) -> DcaseDataset:
    """Load the asked subsets of a DCASE 2018 Task 4 (or DESED) tree; `subsets=None` loads whichever exist."""
    root = Path(root)
    if not root.is_dir():
        raise MetadataError(f"{root}: data root not found (expected a folder with metadata/ and audio/)")
    if subsets is None:
        names = [s for s in SUBSETS if _find_metadata(root, s) is not None]
        if not names:
            raise MetadataError(f"{root}: no subset metadata found; expected e.g. {root / expected_metadata(WEAK)[0]}")
    else:
        names = list(dict.fromkeys(subsets))
        unknown = [s for s in names if s not in LAYOUTS]
        if unknown:
            raise ValueError(f"unknown subset {unknown[0]!r}; expected one of {', '.join(SUBSETS)}")
    return DcaseDataset(root, {name: _load_subset(root, name, check_audio) for name in names})
