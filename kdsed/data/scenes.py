"""Soundscape composition: places target and distractor occurrences over a background and annotates them.

Annotation follows the DCASE 2018 Task 4 rules: every event lasts at least 250 ms, and events of
one class separated by less than 150 ms are merged. Times are handled in integer milliseconds so
the written labels obey the rules exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from kdsed.constants import CLASSES, CLIP_DURATION_S, Seconds
from kdsed.data.distractors import DISTRACTORS, background
from kdsed.data.dsp import F32, Rng, convolve, place, reverb_ir, rms, samples
from kdsed.data.sound_families import FAMILIES, Family, Unit
from kdsed.events import Event

SceneKind = Literal["weak", "in_domain", "out_of_domain", "strong"]
MIN_EVENT_MS = 250
MIN_GAP_MS = 150

#: Clip-tag counts of the DCASE 2018 weak set, used as the class prior of every target occurrence.
WEAK_SET_CLASS_COUNTS: dict[str, int] = {
    "Alarm_bell_ringing": 205, "Blender": 134, "Cat": 173, "Dishes": 184, "Dog": 214,
    "Electric_shaver_toothbrush": 103, "Frying": 171, "Running_water": 343, "Speech": 550, "Vacuum_cleaner": 167,
}


@dataclass(frozen=True)
class SceneConfig:
    """How clips are composed: length, levels, event counts, reverberation and the mix of kinds."""

    sample_rate: int = 16000
    clip_duration_s: Seconds = CLIP_DURATION_S
    snr_db: tuple[float, float] = (-5.0, 20.0)
    occurrences_p: tuple[float, ...] = (0.45, 0.3, 0.17, 0.08)
    p_empty: dict[str, float] = field(default_factory=lambda: {"weak": 0.0, "in_domain": 0.07, "strong": 0.03})
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
    """One placed occurrence: its label (None for a distractor), units in clip seconds, level, optional track."""

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


def render_scene(rng: Rng, cfg: SceneConfig, kind: SceneKind, *, keep_tracks: bool = False) -> Scene:
    """Compose one clip of `kind` from `rng`; `keep_tracks` keeps each source's scaled, reverberated track."""
    sr, n = cfg.sample_rate, cfg.clip_samples
    bg = background(rng, sr, n)
    ir = reverb_ir(rng, sr, rng.uniform(*cfg.rt60_s), rng.uniform(*cfg.direct_to_reverb_db))
    foreground = np.zeros(n, dtype=F32)
    sources = []
    for label, family in _choose_families(rng, cfg, kind):
        onset_s, units = _place(rng, family, cfg)
        dry = np.zeros(n, dtype=F32)
        for start_s, x in units:
            place(dry, x, samples(onset_s + start_s, sr))
        snr_db = rng.uniform(*cfg.snr_db)
        dry *= 10 ** (snr_db / 20) * rms(bg) / max(rms(np.concatenate([x for _, x in units])), 1e-12)
        foreground += dry
        spans = [(onset_s + s, onset_s + s + x.size / sr) for s, x in units]
        sources.append(Source(label, family.name, spans, snr_db, convolve(dry, ir) if keep_tracks else None))
    mix = bg + convolve(foreground, ir)
    gain = 10 ** (rng.uniform(*cfg.level_dbfs) / 20) / max(rms(mix), 1e-12)
    gain = min(gain, 0.99 / max(np.max(np.abs(mix)), 1e-12))
    for s in sources:
        if s.track is not None:
            s.track *= gain
    events = annotate([(s.label, u) for s in sources if s.label for u in s.units_s], cfg.clip_duration_s)
    return Scene((mix * gain).astype(np.float32), events, sources, bg * gain if keep_tracks else None)


def _choose_families(rng: Rng, cfg: SceneConfig, kind: SceneKind) -> list[tuple[str | None, Family]]:
    """The target classes and distractors of one clip."""
    chosen: list[tuple[str | None, Family]] = []
    if kind == "out_of_domain":
        n_targets = rng.integers(1, 3) if rng.random() < cfg.p_target_out_of_domain else 0
        n_distractors = rng.integers(cfg.ood_distractors[0], cfg.ood_distractors[1] + 1)
    else:
        empty = rng.random() < cfg.p_empty.get(kind, 0.0)
        n_targets = 0 if empty else 1 + rng.choice(len(cfg.occurrences_p), p=cfg.occurrences_p)
        n_distractors = int(rng.random() < cfg.p_distractor) + int(empty)
    weights = np.array([WEAK_SET_CLASS_COUNTS[c] for c in CLASSES], dtype=float)
    for _ in range(n_targets):
        label = CLASSES[rng.choice(len(CLASSES), p=weights / weights.sum())]
        if FAMILIES[label].long:
            weights[CLASSES.index(label)] = 0.0  # one occurrence per long class
        chosen.append((label, FAMILIES[label]))
    names = list(DISTRACTORS)
    chosen += [(None, DISTRACTORS[names[rng.integers(len(names))]]) for _ in range(n_distractors)]
    return chosen


def _place(rng: Rng, family: Family, cfg: SceneConfig) -> tuple[Seconds, list[Unit]]:
    """Render an occurrence of `family` and choose its onset in the clip (long ones may cross its edges)."""
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
