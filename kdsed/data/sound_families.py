"""Procedural sound families for the 10 target classes of the synthetic DESED-like set.

Each family draws a source identity (a dog's size, a speaker's voice, a motor's speed) once per
occurrence and renders an occurrence as a list of units: `(start_s, signal)` relative to the
occurrence start. Every unit becomes one labelled event (at least 250 ms long); units of short
classes come in series (barks, meows, clink groups, utterances, rings), long classes are one unit.
Families that share mechanisms (motors, tones, voices) are deliberately confusable in parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from kdsed.data.dsp import (
    F32, Rng, band, decay, fade, formant_filter, formant_harmonics, impulses, partials, phase_from_frequency,
    place, pulse, resonate, samples, saw, shaped_noise, sine, smooth_random, unit_rms, white,
)

Unit = tuple[float, np.ndarray]
Render = Callable[[Rng, int, float], list[Unit]]
MIN_UNIT_S = 0.25
#: Gaps between the units that fill one annotated span: under the 150 ms that would split the event.
FILL_GAP_S = (0.01, 0.1)


@dataclass(frozen=True)
class Family:
    """A sound family: how to render one occurrence and how long occurrences usually last."""

    name: str
    render: Render
    duration_s: tuple[float, float]
    long: bool = False


def series(rng: Rng, sr: int, total_s: float, make_unit: Callable[[Rng], np.ndarray],
           gap_s: tuple[float, float], max_units: int = 10) -> list[Unit]:
    """Units from `make_unit`, separated by random gaps, started while time is left in `total_s`."""
    units: list[Unit] = []
    t = 0.0
    while len(units) < max_units and (not units or t < total_s):
        x = make_unit(rng).astype(F32, copy=False)
        units.append((t, x))
        t += x.size / sr + rng.uniform(*gap_s)
    return units


def fill_span(rng: Rng, family: Family, sr: int, duration_s: float) -> np.ndarray:
    """An occurrence of `family` that sounds over all of `duration_s`: its units back to back, gaps < 150 ms.

    Long families render the span as one unit (at least their shortest length, then its middle); short ones
    chain units (barks, utterances, clink groups) until the span is full, the last one cut with a
    short fade at the span's end.
    """
    n = samples(duration_s, sr)
    out = np.zeros(n, dtype=F32)
    shortest_s = family.duration_s[0] if family.long else MIN_UNIT_S  # long renderers need their minimum length
    pos = 0
    while pos < n:
        for _, x in family.render(rng, sr, max((n - pos) / sr, shortest_s)):
            x = _without_silent_tail(x, sr)
            if family.long and x.size > n - pos:  # rendered longer than the span: its middle, not its fade-in
                x = x[(x.size - (n - pos)) // 2:]
            place(out, x, pos)
            pos += x.size + samples(rng.uniform(*FILL_GAP_S), sr)
            if pos >= n:
                break
    return out * fade(n, sr, 0.002, 0.01)


def _without_silent_tail(x: np.ndarray, sr: int, floor_db: float = -40.0) -> np.ndarray:
    """`x` up to its last 10 ms frame within `floor_db` of its loudest (a clink's inaudible decay dropped)."""
    hop = samples(0.01, sr)
    frames = x[: x.size // hop * hop].reshape(-1, hop)
    if not len(frames):
        return x
    level = np.sqrt(np.mean(np.square(frames), axis=1))
    loud = np.flatnonzero(level >= level.max() * 10 ** (floor_db / 20))
    return x[: (loud[-1] + 1) * hop] if len(loud) else x


def _bump(t: np.ndarray, peak: float) -> np.ndarray:
    """Smooth 0 -> 1 -> 0 curve over t in [0, 1] peaking at `peak`."""
    rising = np.sin(0.5 * np.pi * np.clip(t / peak, 0, 1))
    falling = np.cos(0.5 * np.pi * np.clip((t - peak) / (1 - peak), 0, 1))
    return np.where(t < peak, rising, falling)


# --- voices: Dog, Cat, Speech -------------------------------------------------------------------

def dog(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Barks: short harmonic-plus-noise bursts through formants; sometimes a growl or a whine."""
    big = rng.random() < 0.3
    f0 = rng.uniform(150, 320) if big else rng.uniform(300, 720)
    formants = np.array([rng.uniform(450, 900), rng.uniform(1100, 2200), rng.uniform(2400, 3800)])
    noise_mix = rng.uniform(0.15, 0.6)

    def bark(rng: Rng) -> np.ndarray:
        kind = rng.random()
        if kind < 0.1:
            return _growl(rng, sr, f0 * rng.uniform(0.3, 0.5), formants * 0.7)
        if kind < 0.18:
            return _whine(rng, sr, f0 * rng.uniform(1.2, 1.8))
        n = samples(rng.uniform(MIN_UNIT_S, 0.5), sr)
        t = np.linspace(0, 1, n, dtype=F32)
        contour = f0 * rng.uniform(0.9, 1.1) * (1 + rng.uniform(0.1, 0.5) * _bump(t, rng.uniform(0.15, 0.4)))
        fm = formants * rng.uniform(0.93, 1.07)
        voiced = formant_harmonics(rng, contour, sr, fm, (120, 200, 300), tilt=0.6)
        noise = formant_filter(white(rng, n), sr, fm, (4, 5, 6), (1.0, 0.7, 0.4))
        x = (1 - noise_mix) * unit_rms(voiced) + noise_mix * unit_rms(noise)
        return x * fade(n, sr, 0.008, 0.02) * np.exp(-t * rng.uniform(1.5, 5))

    return series(rng, sr, total_s, bark, (0.05, 0.6))


def _growl(rng: Rng, sr: int, f0: float, formants: np.ndarray) -> np.ndarray:
    n = samples(rng.uniform(0.6, 1.8), sr)
    f = f0 * (1 + 0.1 * smooth_random(rng, n, sr, 20))
    src = saw(rng, f, sr) + rng.uniform(0.5, 1.5) * band(white(rng, n), sr, 100, 2000)
    rough = 1 + 0.6 * sine(phase_from_frequency(rng, np.full(n, rng.uniform(20, 40)), sr))
    x = formant_filter(src, sr, formants, (3, 4, 5), (1.0, 0.5, 0.25)) * rough
    return unit_rms(x) * fade(n, sr, 0.05, 0.1)


def _whine(rng: Rng, sr: int, f0: float) -> np.ndarray:
    n = samples(rng.uniform(0.4, 1.4), sr)
    t = np.linspace(0, 1, n)
    f = f0 * (1 + rng.uniform(-0.3, 0.3) * t + 0.03 * np.sin(2 * np.pi * 6 * t))
    x = formant_harmonics(rng, f, sr, (f0 * 1.2, f0 * 2.5), (300, 500), tilt=1.5)
    return unit_rms(x) * fade(n, sr, 0.05, 0.15)


def cat(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Meows: gliding harmonic tones with a moving formant ('mee-ow'); sometimes a purr."""
    f_base = rng.uniform(330, 800)
    scale = rng.uniform(0.85, 1.2)

    def meow(rng: Rng) -> np.ndarray:
        if rng.random() < 0.1:
            return _purr(rng, sr)
        n = samples(rng.uniform(0.35, 1.5), sr)
        t = np.linspace(0, 1, n)
        peak = rng.uniform(0.25, 0.6)
        contour = f_base * (rng.uniform(0.75, 0.95) + rng.uniform(0.15, 0.6) * _bump(t, peak))
        contour *= 1 + 0.015 * np.sin(2 * np.pi * rng.uniform(4, 7) * t * n / sr)
        f1 = scale * (500 + 450 * _bump(t, peak) - 100 * t)
        f2 = scale * (1700 + 900 * _bump(t, peak * 0.7) - 500 * t)
        x = formant_harmonics(rng, contour, sr, (f1, f2, scale * 3500), (150, 250, 400), tilt=0.8)
        return unit_rms(x) * fade(n, sr, rng.uniform(0.04, 0.1), rng.uniform(0.1, 0.3))

    return series(rng, sr, total_s, meow, (0.2, 1.5), max_units=4)


def _purr(rng: Rng, sr: int) -> np.ndarray:
    n = samples(rng.uniform(0.8, 2.5), sr)
    rate = np.full(n, rng.uniform(20, 30))
    pulses = np.abs(sine(phase_from_frequency(rng, rate / 2, sr))) ** rng.uniform(2, 6)
    breath = 0.6 + 0.4 * sine(phase_from_frequency(rng, np.full(n, rng.uniform(0.5, 1.0)), sr))
    x = band(white(rng, n), sr, 40, rng.uniform(500, 1000)) * pulses * breath
    return unit_rms(x) * fade(n, sr, 0.1, 0.2)


_VOWELS = np.array([(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
                    (570, 840, 2410), (660, 1720, 2410), (490, 1350, 1690), (440, 1020, 2240)], dtype=float)


def speech(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Utterances: syllable trains of formant-filtered glottal pulses with a pitch contour and fricatives."""
    voice = rng.choice(3, p=[0.45, 0.45, 0.1])
    f0 = (rng.uniform(85, 150), rng.uniform(160, 260), rng.uniform(250, 340))[voice]
    scale = (rng.uniform(0.88, 1.0), rng.uniform(1.05, 1.18), rng.uniform(1.2, 1.35))[voice]
    breath = rng.uniform(0.02, 0.25)
    syllable_s = rng.uniform(0.1, 0.22)

    def utterance(rng: Rng) -> np.ndarray:
        n_total = samples(rng.uniform(0.4, 2.8), sr)
        contour = f0 * (np.linspace(1.12, 0.88, n_total) + 0.08 * smooth_random(rng, n_total, sr, 3))
        out, pos = np.zeros(n_total + samples(0.5, sr), dtype=F32), 0
        while pos < n_total:
            syl = _syllable(rng, sr, contour[pos:], scale, breath, syllable_s)
            place(out, syl, pos)
            pos += syl.size + (samples(rng.uniform(0.0, 0.07), sr) if rng.random() < 0.4 else 0)
        return out[: max(pos, samples(MIN_UNIT_S, sr))]

    return series(rng, sr, total_s, utterance, (0.2, 1.0), max_units=4)


def _syllable(rng: Rng, sr: int, contour: np.ndarray, scale: float, breath: float, mean_s: float) -> np.ndarray:
    parts = []
    if rng.random() < 0.45:
        low, high = ((4500, 7500), (2200, 5000), (1500, 7000))[rng.integers(3)]
        m = samples(rng.uniform(0.04, 0.12), sr)
        parts.append(0.3 * unit_rms(band(white(rng, m), sr, low, high)) * fade(m, sr, 0.01, 0.01))
    elif rng.random() < 0.3:
        m = samples(0.012, sr)
        parts.append(0.5 * white(rng, m) * decay(m, sr, 0.01))
    n = samples(float(np.clip(rng.normal(mean_s, 0.05), 0.06, 0.35)), sr)
    f = contour[:n] if contour.size >= n else np.full(n, contour[-1] if contour.size else 120.0)
    src = band(saw(rng, f, sr), sr, high_hz=3500, order=1) + breath * white(rng, n)
    fm = _VOWELS[rng.integers(len(_VOWELS))] * scale * rng.uniform(0.95, 1.05, 3)
    vowel = formant_filter(src, sr, fm, fm / rng.uniform(60, 150, 3), (1.0, 0.6, 0.3))
    parts.append(unit_rms(vowel) * fade(n, sr, 0.015, 0.03))
    return np.concatenate(parts)


# --- impacts and tones: Dishes, Alarm_bell_ringing -----------------------------------------------

_MATERIALS = {  # base frequency range (Hz), decay range (s), ratio spread
    "glass": ((1800, 4000), (0.15, 0.7), 0.15),
    "ceramic": ((1000, 3000), (0.03, 0.15), 0.3),
    "metal": ((2000, 5000), (0.08, 0.4), 0.25),
}


def dishes(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Clink groups: damped inharmonic partials with a click; sometimes a cutlery rattle."""
    (f_lo, f_hi), (d_lo, d_hi), spread = _MATERIALS[rng.choice(list(_MATERIALS))]

    def group(rng: Rng) -> np.ndarray:
        if rng.random() < 0.15:
            return _rattle(rng, sr)
        onsets = np.cumsum(np.r_[0.0, rng.uniform(0.02, 0.14, rng.integers(0, 4))])
        tail_s = d_hi * 0.7
        out = np.zeros(samples(max(onsets[-1] + tail_s, MIN_UNIT_S), sr), dtype=F32)
        for onset in onsets:
            f = rng.uniform(f_lo, f_hi)
            ratios = np.array([1.0, 1.6, 2.5, 3.7, 5.1]) * rng.uniform(1 - spread / 3, 1 + spread / 3, 5)
            n = out.size - samples(onset, sr)
            decays = rng.uniform(d_lo, d_hi, 5) / np.sqrt(ratios)
            strike = partials(rng, f, n, sr, ratios, rng.uniform(0.2, 1.0, 5), decays)
            click = band(white(rng, n), sr, 3000) * decay(n, sr, 0.004)
            place(out, rng.uniform(0.3, 1.5) * unit_rms(strike) * decay(n, sr, 2 * d_hi) + click, samples(onset, sr))
        return out

    return series(rng, sr, total_s, group, (0.1, 0.9))


def _rattle(rng: Rng, sr: int) -> np.ndarray:
    n = samples(rng.uniform(0.3, 1.2), sr)
    ticks = band(impulses(rng, n, sr, rng.uniform(20, 60), 0.6), sr, 2500, 7500)
    ring = resonate(ticks, sr, rng.uniform(2500, 6000), rng.uniform(10, 30))
    return unit_rms(ticks + ring) * fade(n, sr, 0.01, 0.05)


def alarm(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Alarms and bells: beep trains, struck bells, two-tone phone rings or sweeping sirens."""
    variant = rng.choice(4, p=[0.35, 0.25, 0.25, 0.15])
    f = rng.uniform(800, 3500)
    amps = np.r_[1.0, rng.uniform(0, 0.5, 3) * rng.integers(0, 2, 3)]
    make = (_beeps, _bell, _phone, _sweep)[variant]
    gaps = ((0.2, 1.5), (0.3, 1.5), (0.3, 2.5), (0.3, 1.0))[variant]
    return series(rng, sr, total_s, lambda r: make(r, sr, f, amps), gaps, max_units=6)


def _beeps(rng: Rng, sr: int, f: float, amps: np.ndarray) -> np.ndarray:
    n = samples(rng.uniform(0.3, 3.0), sr)
    on_s, off_s = rng.uniform(0.06, 0.35), rng.uniform(0.04, 0.14)
    t = np.arange(n, dtype=F32) / sr
    gate = ((t % (on_s + off_s)) < on_s).astype(float)
    gate = np.convolve(gate, np.hanning(samples(0.006, sr)).astype(F32), "same")
    tone = partials(rng, f, n, sr, (1, 2, 3, 5), amps)
    return unit_rms(tone) * gate / max(gate.max(), 1e-9) * fade(n, sr, 0.003, 0.01)


def _bell(rng: Rng, sr: int, f: float, amps: np.ndarray) -> np.ndarray:
    n = samples(rng.uniform(0.6, 4.0), sr)
    t = np.arange(n, dtype=F32) / sr
    ratios = (1.0, rng.uniform(2.0, 2.8), rng.uniform(3.0, 4.5), rng.uniform(5.0, 6.5))
    tone = partials(rng, f * 0.7, n, sr, ratios, (1.0, 0.7, 0.5, 0.3))
    period = 1 / rng.uniform(12, 25)
    strikes = np.exp(-(t % period) / rng.uniform(0.015, 0.05))
    ring_out = np.where(t > t[-1] - 0.3, np.exp(-(t - t[-1] + 0.3) * 10), 1.0)
    return unit_rms(tone) * strikes * ring_out * fade(n, sr, 0.002, 0.05)


def _phone(rng: Rng, sr: int, f: float, amps: np.ndarray) -> np.ndarray:
    n = samples(rng.uniform(0.8, 2.0), sr)
    t = np.arange(n, dtype=F32) / sr
    f1 = f * 0.5
    track = np.where((t * rng.uniform(10, 25)) % 1 < 0.5, f1, f1 * rng.uniform(1.15, 1.35))
    return unit_rms(partials(rng, track, n, sr, (1, 3, 5), amps[:3])) * fade(n, sr, 0.005, 0.02)


def _sweep(rng: Rng, sr: int, f: float, amps: np.ndarray) -> np.ndarray:
    n = samples(rng.uniform(1.0, 5.0), sr)
    t = np.arange(n, dtype=F32) / sr
    lfo = (t * rng.uniform(0.7, 4.0)) % 1 if rng.random() < 0.5 else 0.5 + 0.5 * np.sin(2 * np.pi * t)
    track = f * 0.6 * (1 + rng.uniform(0.2, 0.5) * lfo)
    return unit_rms(partials(rng, track, n, sr, (1, 2, 3), amps[:3])) * fade(n, sr, 0.02, 0.05)


# --- long classes --------------------------------------------------------------------------------

def _speed_profile(rng: Rng, n: int, sr: int, changes: int) -> np.ndarray:
    """Motor speed ratio: spin-up, a few speed changes with short glides."""
    knots_t, knots_v = [0.0, rng.uniform(0.2, 0.8)], [rng.uniform(0.3, 0.6), 1.0]
    level = 1.0
    for when in np.sort(rng.uniform(knots_t[1], n / sr, changes)):
        knots_t += [when, when + rng.uniform(0.1, 0.3)]
        knots_v += [level, (level := rng.uniform(0.7, 1.4))]
    return np.interp(np.arange(n) / sr, np.maximum.accumulate(knots_t), knots_v).astype(F32)


def blender(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Motor hum harmonics plus chopping broadband noise, with spin-up and speed changes."""
    n = samples(total_s, sr)
    speed = _speed_profile(rng, n, sr, rng.integers(0, 3))
    f = rng.uniform(80, 350) * speed * (1 + rng.uniform(0.02, 0.08) * smooth_random(rng, n, sr, rng.uniform(2, 8)))
    motor = band(saw(rng, f, sr), sr, 60, 4000)
    motor = motor + resonate(motor, sr, rng.uniform(400, 2000), rng.uniform(2, 5))
    blade_phase = phase_from_frequency(rng, f * rng.integers(2, 5), sr)
    chop = shaped_noise(rng, n, sr, rng.uniform(-4, -1), 150, 6500)
    chop *= 1 + rng.uniform(0.2, 0.7) * sine(blade_phase)
    w = rng.uniform(0.3, 0.8)
    contents = np.clip(1 + rng.uniform(0.3, 0.8) * smooth_random(rng, n, sr, rng.uniform(4, 12)), 0.2, None)
    x = ((1 - w) * unit_rms(motor) + w * unit_rms(chop)) * contents * (0.4 + 0.6 * speed)
    return [(0.0, x * fade(n, sr, rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.4)))]


def vacuum_cleaner(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Broadband suction noise with a resonant fan whine, start-up ramp and nozzle movements."""
    n = samples(total_s, sr)
    t = np.arange(n, dtype=F32) / sr
    ramp = np.clip(t / rng.uniform(0.5, 1.5), 0.3, 1.0) if rng.random() < 0.4 else np.ones(n)
    bump = (rng.uniform(400, 2000), rng.uniform(1, 3), rng.uniform(1, 6))
    body = shaped_noise(rng, n, sr, rng.uniform(-5, -1), rng.uniform(80, 300), rng.uniform(3000, 7000), (bump,))
    fw = rng.uniform(700, 3500) * ramp * (1 + 0.005 * smooth_random(rng, n, sr, 5))
    whine = partials(rng, fw, n, sr, (1, 2, 3), (1.0, rng.uniform(0, 0.5), rng.uniform(0, 0.3)))
    hum = band(saw(rng, fw / rng.integers(6, 13), sr), sr, high_hz=1500)
    nozzle = smooth_random(rng, n, sr, rng.uniform(0.3, 1.5))
    muffled = band(body, sr, high_hz=rng.uniform(1000, 2000))
    body = body + rng.uniform(0, 0.8) * (0.5 + 0.5 * nozzle) * (unit_rms(muffled) - body)
    whine_gain = 10 ** (rng.uniform(-20, -4) / 20)
    x = unit_rms(body) + whine_gain * unit_rms(whine) + 0.1 * unit_rms(hum)
    x *= (1 + rng.uniform(0.15, 0.45) * nozzle) * ramp
    return [(0.0, x * fade(n, sr, rng.uniform(0.05, 0.3), rng.uniform(0.1, 0.5)))]


def frying(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Sizzle: sparse crackles and pops over a fluctuating high-frequency hiss."""
    n = samples(total_s, sr)
    hiss = shaped_noise(rng, n, sr, rng.uniform(-3, 0), rng.uniform(1000, 3000))
    hiss *= np.clip(1 + 0.3 * smooth_random(rng, n, sr, rng.uniform(0.5, 2)), 0.3, None)
    crackle = band(impulses(rng, n, sr, rng.uniform(15, 150), rng.uniform(0.8, 1.3)), sr, rng.uniform(1500, 4000))
    pops = resonate(impulses(rng, n, sr, rng.uniform(1, 8), 0.5), sr, rng.uniform(1000, 3000), rng.uniform(5, 15))
    w = rng.uniform(0.3, 0.85)
    x = (1 - w) * unit_rms(hiss) + w * unit_rms(crackle + 0.5 * unit_rms(pops))
    return [(0.0, x * fade(n, sr, rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5)))]


def running_water(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Band-limited noise with fast random modulation, bubbles (rising damped chirps) and splashes."""
    n = samples(total_s, sr)
    flow = shaped_noise(rng, n, sr, 0.0, rng.uniform(150, 800), rng.uniform(1800, 6500))
    flow *= np.clip(1 + rng.uniform(0.3, 0.7) * smooth_random(rng, n, sr, rng.uniform(15, 40)), 0.1, None)
    bubbles = np.zeros(n, dtype=F32)
    templates = [_bubble(rng, sr) for _ in range(8)]
    for where in rng.integers(0, n, rng.poisson(rng.uniform(5, 60) * total_s)):
        place(bubbles, templates[rng.integers(8)] * rng.lognormal(0, 0.5), int(where))
    x = unit_rms(flow) + rng.uniform(0.2, 0.8) * unit_rms(bubbles)
    if rng.random() < 0.5:
        splash = shaped_noise(rng, n, sr, 0.0, 100, 600) * np.clip(smooth_random(rng, n, sr, 3), 0, None)
        x += rng.uniform(0.2, 0.6) * unit_rms(splash)
    return [(0.0, x * fade(n, sr, rng.uniform(0.05, 0.4), rng.uniform(0.1, 0.5)))]


def _bubble(rng: Rng, sr: int) -> np.ndarray:
    dur = rng.uniform(0.005, 0.03)
    n = samples(dur * 2, sr)
    t = np.arange(n, dtype=F32) / sr
    f = rng.lognormal(np.log(1000), 0.5) * (1 + rng.uniform(0.5, 2.0) * t / dur)
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * decay(n, sr, dur)


def electric_shaver(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Buzz: harmonic-rich pulse wave through housing resonances, with contact tremolo and load dips."""
    n = samples(total_s, sr)
    f0 = rng.uniform(60, 160) if rng.random() < 0.5 else rng.uniform(150, 290)
    load = 1 - rng.uniform(0.03, 0.12) * np.clip(smooth_random(rng, n, sr, rng.uniform(1, 4)), 0, None)
    buzz = pulse(rng, f0 * load, sr, rng.uniform(0.1, 0.4))
    body = formant_filter(buzz, sr, rng.uniform(800, 4000, 2), rng.uniform(3, 10, 2), (1.0, 0.6))
    buzz = unit_rms(band(buzz, sr, 100, 7000)) + rng.uniform(0.5, 1.5) * unit_rms(body)
    friction = shaped_noise(rng, n, sr, 0.0, 2500, 7000)
    contact = np.clip(1 + rng.uniform(0.2, 0.6) * smooth_random(rng, n, sr, rng.uniform(2, 8)), 0.1, None)
    w = rng.uniform(0.05, 0.4)
    x = ((1 - w) * unit_rms(buzz) + w * unit_rms(friction) * contact) * (0.7 + 0.3 * contact)
    return [(0.0, x * fade(n, sr, rng.uniform(0.02, 0.15), rng.uniform(0.02, 0.2)))]


FAMILIES: dict[str, Family] = {
    "Alarm_bell_ringing": Family("Alarm_bell_ringing", alarm, (0.4, 6.0)),
    "Blender": Family("Blender", blender, (2.0, 10.0), long=True),
    "Cat": Family("Cat", cat, (0.4, 3.0)),
    "Dishes": Family("Dishes", dishes, (0.3, 3.5)),
    "Dog": Family("Dog", dog, (0.3, 4.0)),
    "Electric_shaver_toothbrush": Family("Electric_shaver_toothbrush", electric_shaver, (2.0, 10.0), long=True),
    "Frying": Family("Frying", frying, (3.0, 10.0), long=True),
    "Running_water": Family("Running_water", running_water, (2.0, 10.0), long=True),
    "Speech": Family("Speech", speech, (0.5, 6.0)),
    "Vacuum_cleaner": Family("Vacuum_cleaner", vacuum_cleaner, (3.0, 10.0), long=True),
}
