"""Soundscape composition: target sounds over their planned events, distractors, background, reverberation.

A clip with planned events (weak, in-domain, test, eval) gets, per class, its family's sound filling
each event's span; those events are its annotation as given. An out-of-domain clip is composed
freely and annotated under the DCASE 2018 Task 4 rules (`annotate`): every event lasts at least
250 ms, and events of one class separated by less than 150 ms are merged. Times are handled in
integer milliseconds so the written labels obey the rules exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kdsed.constants import CLASSES, CLIP_DURATION_S, Seconds
from kdsed.data.distractors import DISTRACTORS, background
from kdsed.data.dsp import F32, Rng, convolve, place, reverb_ir, rms, samples
from kdsed.data.real_metadata import real_metadata
from kdsed.data.sound_families import FAMILIES, Family, Unit, fill_span
from kdsed.events import Event

SceneKind = Literal["weak", "in_domain", "out_of_domain", "strong"]
MIN_EVENT_MS = 250
MIN_GAP_MS = 150


@dataclass(frozen=True)
class SceneConfig:
    """How clips are composed: length, levels, distractors, reverberation and the out-of-domain mix."""

    sample_rate: int = 16000
    clip_duration_s: Seconds = CLIP_DURATION_S
    snr_db: tuple[float, float] = (-5.0, 20.0)
    p_empty_in_domain: float = 0.07
    p_distractor: float = 0.25
    ood_distractors: tuple[int, int] = (1, 3)
    p_target_out_of_domain: float = 0.3
    p_long_full_clip: float = 0.3
    p_long_cut: float = 0.25
    level_dbfs: tuple[float, float] = (-32.0, -18.0)
    rt60_s: tuple[float, float] = (0.15, 0.8)
    direct_to_reverb_db: tuple[float, float] = (-3.0, 12.0)

    @property
    def clip_samples(self) -> int:
        return samples(self.clip_duration_s, self.sample_rate)


@dataclass
class Source:
    """One class's (or distractor's) sound in a clip: label (None: distractor), spans in clip seconds, SNR, track."""

    label: str | None
    family: str
    units_s: list[tuple[Seconds, Seconds]]
    snr_db: float
    track: np.ndarray | None = None


@dataclass
class Scene:
    """A rendered clip: the mix, its annotated target events and what went into it."""

    audio: np.ndarray
    events: tuple[Event, ...]
    sources: list[Source]
    background: np.ndarray | None = None


#: A source before mixing: label (None: distractor), family, and its units as (start in the clip, signal).
_Placed = tuple[str | None, Family, list[tuple[Seconds, np.ndarray]]]


def render_scene(rng: Rng, cfg: SceneConfig, kind: SceneKind, events: tuple[Event, ...] | None = None, *,
                 keep_tracks: bool = False) -> Scene:
    """Compose one clip of `kind` whose targets sound exactly over `events` (out of domain: composed freely).

    The given events are the clip's annotation as they are; a free composition is annotated under
    the DCASE rules. `keep_tracks` keeps each source's scaled, reverberated track.
    """
    sr, n = cfg.sample_rate, cfg.clip_samples
    bg = background(rng, sr, n)
    ir = reverb_ir(rng, sr, rng.uniform(*cfg.rt60_s), rng.uniform(*cfg.direct_to_reverb_db))
    if kind == "out_of_domain":
        placed = _free_targets(rng, cfg) + _distractors(rng, cfg, rng.integers(cfg.ood_distractors[0],
                                                                               cfg.ood_distractors[1] + 1))
    else:
        if events is None:
            raise ValueError(f"a {kind} clip needs its planned events")
        placed = _planned_targets(rng, cfg, events) + _distractors(rng, cfg, int(rng.random() < cfg.p_distractor)
                                                                   + int(not events))
    foreground = np.zeros(n, dtype=F32)
    sources = []
    for label, family, units in placed:
        dry = np.zeros(n, dtype=F32)
        for start_s, x in units:
            place(dry, x, int(round(start_s * sr)))  # a long occurrence cut at the clip start begins before 0
        snr_db = rng.uniform(*cfg.snr_db)
        dry *= 10 ** (snr_db / 20) * rms(bg) / max(rms(np.concatenate([x for _, x in units])), 1e-12)
        foreground += dry
        spans = [(s, s + x.size / sr) for s, x in units]
        sources.append(Source(label, family.name, spans, snr_db, convolve(dry, ir) if keep_tracks else None))
    mix = bg + convolve(foreground, ir)
    gain = 10 ** (rng.uniform(*cfg.level_dbfs) / 20) / max(rms(mix), 1e-12)
    gain = min(gain, 0.99 / max(np.max(np.abs(mix)), 1e-12))
    for s in sources:
        if s.track is not None:
            s.track *= gain
    if events is None:
        events = annotate([(s.label, u) for s in sources if s.label for u in s.units_s], cfg.clip_duration_s)
    return Scene((mix * gain).astype(np.float32), events, sources, bg * gain if keep_tracks else None)


def _planned_targets(rng: Rng, cfg: SceneConfig, events: tuple[Event, ...]) -> list[_Placed]:
    """One source per class: its family's sound filling every span of the class's events (overlaps united)."""
    out: list[_Placed] = []
    for label in CLASSES:
        spans = sound_spans([(e.onset_s, e.offset_s) for e in events if e.label == label], cfg.clip_duration_s)
        family = FAMILIES[label]
        units = [(on, fill_span(rng, family, cfg.sample_rate, off - on)) for on, off in spans]
        if units:
            out.append((label, family, units))
    return out


def sound_spans(intervals: list[tuple[Seconds, Seconds]], clip_duration_s: Seconds) -> list[tuple[Seconds, Seconds]]:
    """The stretches where sound must be: overlapping intervals united, cut to the clip."""
    spans: list[list[Seconds]] = []
    for on, off in sorted(intervals):
        on, off = max(0.0, on), min(off, clip_duration_s)
        if off <= on:
            continue
        if spans and on <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], off)
        else:
            spans.append([on, off])
    return [(on, off) for on, off in spans]


def _distractors(rng: Rng, cfg: SceneConfig, count: int) -> list[_Placed]:
    names = list(DISTRACTORS)
    families = [DISTRACTORS[names[rng.integers(len(names))]] for _ in range(count)]
    return [(None, family, _place(rng, family, cfg)) for family in families]


def _free_targets(rng: Rng, cfg: SceneConfig) -> list[_Placed]:
    """Out of domain: 0-2 target occurrences (classes weighted by the real weak tags), placed freely."""
    n_targets = rng.integers(1, 3) if rng.random() < cfg.p_target_out_of_domain else 0
    counts = real_metadata().tag_counts()
    weights = np.array([counts[c] for c in CLASSES], dtype=float)
    out: list[_Placed] = []
    for _ in range(n_targets):
        label = CLASSES[rng.choice(len(CLASSES), p=weights / weights.sum())]
        if FAMILIES[label].long:
            weights[CLASSES.index(label)] = 0.0  # one occurrence per long class
        out.append((label, FAMILIES[label], _place(rng, FAMILIES[label], cfg)))
    return out


def _place(rng: Rng, family: Family, cfg: SceneConfig) -> list[Unit]:
    """An occurrence of `family` placed in the clip: units with clip start times (long ones may cross its edges)."""
    onset_s, units = _occurrence(rng, family, cfg)
    return [(onset_s + start_s, x) for start_s, x in units]


def _occurrence(rng: Rng, family: Family, cfg: SceneConfig) -> tuple[Seconds, list[Unit]]:
    """Render an occurrence of `family` and choose its onset in the clip."""
    sr, clip_s = cfg.sample_rate, cfg.clip_duration_s
    duration_s = min(rng.uniform(*family.duration_s), clip_s)
    if family.long:
        if rng.random() < cfg.p_long_full_clip:
            return 0.0, family.render(rng, sr, clip_s)
        units = family.render(rng, sr, duration_s)
        if rng.random() < cfg.p_long_cut and duration_s > 2.0:
            visible_s = rng.uniform(1.0, duration_s - 0.5)
            return (visible_s - duration_s if rng.random() < 0.5 else clip_s - visible_s), units
        return rng.uniform(0, clip_s - duration_s), units
    units = family.render(rng, sr, duration_s)
    while len(units) > 1 and _extent_s(units, sr) > clip_s:
        units.pop()
    return rng.uniform(0, max(0.0, clip_s - _extent_s(units, sr))), units


def _extent_s(units: list[Unit], sr: int) -> Seconds:
    return max(start + x.size / sr for start, x in units)


def annotate(spans: list[tuple[str, tuple[Seconds, Seconds]]], clip_duration_s: Seconds) -> tuple[Event, ...]:
    """Events under the DCASE rules: clip to the clip, >= 250 ms, same-class gaps < 150 ms merged."""
    clip_ms = int(round(clip_duration_s * 1000))
    per_class: dict[str, list[list[int]]] = {}
    for label, (onset_s, offset_s) in spans:
        on = max(0, int(round(onset_s * 1000)))
        off = min(clip_ms, max(int(round(offset_s * 1000)), on + MIN_EVENT_MS))
        on = min(on, off - MIN_EVENT_MS)
        per_class.setdefault(label, []).append([on, off])
    events = []
    for label, intervals in per_class.items():
        merged: list[list[int]] = []
        for on, off in sorted(intervals):
            if merged and on - merged[-1][1] < MIN_GAP_MS:
                merged[-1][1] = max(merged[-1][1], off)
            else:
                merged.append([on, off])
        events += [Event(on / 1000, off / 1000, label) for on, off in merged]
    return tuple(sorted(events))
