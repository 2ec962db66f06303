"""The label structure of synthetic clips, taken from the real DCASE 2018 annotations.

`test`/`eval` clips carry a real clip's events unaltered; weak and unlabeled in-domain clips get a
tag combination and, for each tag, the layout of that class (its onsets and offsets) copied from a
random real `test` clip that has the class, cut to the clip's length and annotated under the DCASE
rules. Out-of-domain clips have no planned structure (their scene composes them freely).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

from kdsed.constants import Seconds
from kdsed.data.dsp import Rng
from kdsed.data.real_metadata import named_duration_s
from kdsed.data.scenes import MIN_EVENT_MS, annotate
from kdsed.events import Event

Layouts = Mapping[str, Sequence[tuple[Event, ...]]]


@dataclass(frozen=True)
class ClipPlan:
    """What one synthetic clip is: its name, length and target events (None: composed freely)."""

    filename: str
    duration_s: Seconds
    events: tuple[Event, ...] | None


def synthetic_filename(key: str) -> str:
    """A YouTube-like clip name, e.g. `YAbC-12_xYz9_30.000_40.000.wav`, unique per `key`."""
    digest = hashlib.blake2b(f"kdsed-synth:{key}".encode(), digest_size=12).digest()
    video_id = base64.urlsafe_b64encode(digest).decode()[:11]
    start = digest[-1] * 2 % 290
    return f"Y{video_id}_{start:.3f}_{start + 10:.3f}.wav"


def real_clip_plan(filename: str, events: Sequence[Event]) -> ClipPlan:
    """A real clip as it is: its name, the length its name gives, its events unaltered."""
    return ClipPlan(filename, named_duration_s(filename), tuple(sorted(events)))


def tagged_plan(rng: Rng, filename: str, duration_s: Seconds, tags: Sequence[str], layouts: Layouts) -> ClipPlan:
    """A clip with `tags`, each carrying the layout of its class in a random real clip, cut to `duration_s`."""
    return ClipPlan(filename, duration_s, draw_events(rng, tags, layouts, duration_s))


def draw_events(rng: Rng, tags: Sequence[str], layouts: Layouts, duration_s: Seconds) -> tuple[Event, ...]:
    """Events of `tags` copied from random layouts of `layouts` that start inside the clip; DCASE-annotated."""
    spans = []
    for tag in tags:
        fits = [layout for layout in layouts[tag] if layout[0].onset_s < duration_s - MIN_EVENT_MS / 1000]
        if not fits:
            raise ValueError(f"no real layout of {tag} starts within a {duration_s} s clip")
        layout = fits[rng.integers(len(fits))]
        spans += [(tag, (e.onset_s, min(e.offset_s, duration_s))) for e in layout if e.onset_s < duration_s]
    return annotate(spans, duration_s)
