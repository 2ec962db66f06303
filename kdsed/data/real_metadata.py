"""The real DCASE 2018 Task 4 annotations bundled with kdsed (`kdsed/data/dcase2018/`, MIT licence).

They are read through the project's own layout reader, audio absent. The synthetic set takes its
label structure from them: the real `test`/`eval` events, the real weak tag combinations, and the
per-class event layouts of the real `test` clips (never `eval`, which stays unseen).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from kdsed.constants import CLASSES, EVAL, TEST, WEAK, Seconds
from kdsed.data.layout import load_dataset
from kdsed.events import Event, EventTable, MetadataError

#: Root of the bundled copies, in the DCASE 2018 layout (`metadata/train/weak.csv`, ...).
BUNDLED_ROOT = Path(__file__).parent / "dcase2018"
#: The bundled files, relative to BUNDLED_ROOT (the unlabeled name lists are not bundled).
BUNDLED_FILES: dict[str, str] = {
    WEAK: "metadata/train/weak.csv", TEST: "metadata/test/test.csv", EVAL: "metadata/eval/eval.csv",
}
_NAME_SPAN = re.compile(r"_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.wav$")


@dataclass(frozen=True)
class RealMetadata:
    """The real weak tags (metadata order) and the strong events of `test` and `eval`."""

    weak_tags: dict[str, tuple[str, ...]]
    strong: dict[str, EventTable]

    def tag_counts(self) -> dict[str, int]:
        """Weak clips tagged with each class, in class order."""
        return {c: sum(c in tags for tags in self.weak_tags.values()) for c in CLASSES}


@lru_cache(maxsize=None)
def real_metadata(root: Path = BUNDLED_ROOT) -> RealMetadata:
    """Read the real weak, test and eval metadata under `root` (default: the bundled copies)."""
    ds = load_dataset(root, subsets=(WEAK, TEST, EVAL), check_audio=False)
    weak = {c.filename: c.weak_labels or () for c in ds.subset(WEAK)}
    return RealMetadata(weak, {s: ds.reference_table(s) for s in (TEST, EVAL)})


def named_duration_s(filename: str) -> Seconds:
    """The length a YouTube clip name gives (`Y<id>_<start>_<end>.wav`), e.g. 9.0 for `Y..._0.000_9.000.wav`."""
    match = _NAME_SPAN.search(filename)
    if not match or float(match[2]) <= float(match[1]):
        raise MetadataError(f"{filename!r}: expected a clip name ending in _<start>_<end>.wav with start < end")
    return round(float(match[2]) - float(match[1]), 3)


def class_layouts(table: EventTable) -> dict[str, list[tuple[Event, ...]]]:
    """Per class, the events of that class in each clip of `table` that has one (clips in table order)."""
    layouts: dict[str, list[tuple[Event, ...]]] = {c: [] for c in CLASSES}
    for events in table.values():
        for label in CLASSES:
            mine = tuple(sorted(e for e in events if e.label == label))
            if mine:
                layouts[label].append(mine)
    return layouts
