"""Non-target sounds and domestic backgrounds of the synthetic set.

Distractors (door knocks, footsteps, typing, birds, cars, music, rain) fill the out-of-domain
clips and sometimes appear in in-domain ones; they are never labelled. Several resemble a
target class on purpose (typing ~ Dishes/Frying, rain ~ Frying, music ~ Alarm, fan ~ Vacuum).
"""

from __future__ import annotations

import numpy as np

from kdsed.data.dsp import (
    F32, Rng, band, decay, fade, partials, phase_from_frequency, place, resonate, samples, saw, shaped_noise, sine,
    smooth_random, unit_rms, white,
)
from kdsed.data.sound_families import Family, Unit, series


def door_knock(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Knock groups: 2-5 low damped thuds with a click."""
    f = rng.uniform(100, 600)

    def knocks(rng: Rng) -> np.ndarray:
        count = rng.integers(2, 6)
        spacing = rng.uniform(0.1, 0.3)
        out = np.zeros(samples(count * spacing + 0.2, sr), dtype=F32)
        for i in range(count):
            m = samples(0.2, sr)
            hit = resonate(white(rng, m), sr, f * rng.uniform(0.95, 1.05), 8) * decay(m, sr, 0.12)
            place(out, unit_rms(hit) + band(white(rng, m), sr, 2000) * decay(m, sr, 0.005), samples(i * spacing, sr))
        return out

    return series(rng, sr, total_s, knocks, (0.5, 2.0), max_units=3)


def footsteps(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """A walk: periodic low thuds with a little heel scrape."""
    n = samples(total_s, sr)
    out = np.zeros(n, dtype=F32)
    step = 1 / rng.uniform(1.5, 2.5)
    for onset in np.arange(rng.uniform(0, step), total_s, step):
        m = samples(rng.uniform(0.03, 0.08) * 3, sr)
        thud = band(white(rng, m), sr, 40, rng.uniform(300, 900)) * decay(m, sr, 0.08)
        scrape = 0.2 * band(white(rng, m), sr, 2000, 6000) * decay(m, sr, 0.15)
        place(out, unit_rms(thud) + scrape, samples(onset + rng.normal(0, 0.02), sr))
    return [(0.0, out * fade(n, sr, 0.01, 0.01))]


def typing(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Keyboard typing: irregular bursts of short bright clicks with a small resonance."""
    n = samples(total_s, sr)
    out = np.zeros(n, dtype=F32)
    t = rng.uniform(0, 0.2)
    tick = rng.uniform(2000, 5000)
    while t < total_s:
        m = samples(0.03, sr)
        click = band(white(rng, m), sr, 1500) * decay(m, sr, 0.006)
        place(out, click + 0.3 * resonate(click, sr, tick, 15), samples(t, sr))
        t += rng.exponential(1 / rng.uniform(4, 12)) + (rng.uniform(0.3, 1.0) if rng.random() < 0.08 else 0)
    return [(0.0, out)]


def bird(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Chirps: fast frequency sweeps in trills."""
    f_lo, f_hi = rng.uniform(2000, 4000), rng.uniform(4000, 7000)

    def trill(rng: Rng) -> np.ndarray:
        chirps = []
        for _ in range(rng.integers(2, 8)):
            m = samples(rng.uniform(0.03, 0.15), sr)
            track = np.linspace(f_lo, f_hi, m) if rng.random() < 0.5 else np.linspace(f_hi, f_lo, m)
            chirp = sine(phase_from_frequency(rng, track, sr)) * np.hanning(m).astype(F32)
            chirps += [chirp, np.zeros(samples(rng.uniform(0.02, 0.1), sr), dtype=F32)]
        return np.concatenate(chirps)

    return series(rng, sr, total_s, trill, (0.2, 1.5), max_units=5)


def car_pass_by(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """A car passing: swelling low broadband noise with Doppler-shifted engine harmonics."""
    n = samples(total_s, sr)
    t = np.linspace(-1, 1, n, dtype=F32)
    swell = np.exp(-(t / rng.uniform(0.3, 0.6)) ** 2)
    f = rng.uniform(30, 80) * (1 - 0.08 * np.tanh(3 * t))
    engine = band(saw(rng, f, sr), sr, high_hz=800)
    tyres = shaped_noise(rng, n, sr, -3, 100, rng.uniform(1500, 4000))
    return [(0.0, (unit_rms(tyres) + rng.uniform(0.2, 0.8) * unit_rms(engine)) * swell)]


_CHORDS = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 3, 7, 10))


def music(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Chord progression: 3-4 harmonic notes per chord, plucked or sustained."""
    n = samples(total_s, sr)
    out = np.zeros(n, dtype=F32)
    chord_s = rng.uniform(0.5, 2.0)
    plucked = rng.random() < 0.5
    root = 110 * 2 ** (rng.integers(0, 24) / 12)
    for onset in np.arange(0, total_s, chord_s):
        m = samples(min(chord_s, total_s - onset), sr)
        base = root * 2 ** (rng.choice([0, 3, 5, 7, 8, 10]) / 12)
        for interval in _CHORDS[rng.integers(len(_CHORDS))]:
            note = partials(rng, base * 2 ** (interval / 12), m, sr, (1, 2, 3, 4, 5), (1, 0.5, 0.3, 0.2, 0.1))
            env = decay(m, sr, rng.uniform(0.5, 1.5)) if plucked else fade(m, sr, 0.05, 0.1)
            place(out, note * env, samples(onset, sr))
    return [(0.0, out * fade(n, sr, 0.05, 0.2))]


def rain(rng: Rng, sr: int, total_s: float) -> list[Unit]:
    """Rain on a window: dense tiny droplet clicks over soft broadband noise."""
    n = samples(total_s, sr)
    drops = np.zeros(n, dtype=F32)
    drop = band(white(rng, samples(0.01, sr)), sr, 1500) * decay(samples(0.01, sr), sr, 0.005)
    for where in rng.integers(0, n, rng.poisson(rng.uniform(50, 300) * total_s)):
        place(drops, drop * rng.lognormal(0, 0.7), int(where))
    wash = shaped_noise(rng, n, sr, -2, 300, 7000)
    return [(0.0, (unit_rms(drops) + rng.uniform(0.3, 1.0) * unit_rms(wash)) * fade(n, sr, 0.3, 0.3))]


DISTRACTORS: dict[str, Family] = {
    "door_knock": Family("door_knock", door_knock, (0.5, 4.0)),
    "footsteps": Family("footsteps", footsteps, (2.0, 8.0), long=True),
    "typing": Family("typing", typing, (2.0, 8.0), long=True),
    "bird": Family("bird", bird, (0.5, 5.0)),
    "car_pass_by": Family("car_pass_by", car_pass_by, (3.0, 8.0), long=True),
    "music": Family("music", music, (3.0, 10.0), long=True),
    "rain": Family("rain", rain, (4.0, 10.0), long=True),
}


def background(rng: Rng, sr: int, n: int) -> np.ndarray:
    """Domestic background: coloured noise of random slope, room rumble, fan resonance, mains hum; RMS 1."""
    peaks = []
    if rng.random() < 0.5:  # room rumble
        peaks.append((rng.uniform(30, 120), 0.7, rng.uniform(2, 20)))
    if rng.random() < 0.2:  # ventilation fan
        peaks.append((rng.uniform(300, 1500), rng.uniform(2, 6), rng.uniform(2, 10)))
    if rng.random() < 0.3:  # a room mode or a distant appliance
        peaks.append((rng.uniform(150, 3000), rng.uniform(1, 4), rng.uniform(1, 4)))
    x = shaped_noise(rng, n, sr, rng.uniform(-9, -2), low_hz=20, peaks=tuple(peaks))
    if rng.random() < 0.3:
        mains = rng.choice([50.0, 60.0])
        x += 10 ** (rng.uniform(-25, -8) / 20) * unit_rms(
            partials(rng, mains, n, sr, (1, 2, 3, 4, 5, 6), rng.uniform(0, 1, 6) ** 2))
    if rng.random() < 0.1:
        x += 10 ** (rng.uniform(-25, -10) / 20) * unit_rms(partials(rng, rng.uniform(100, 400), n, sr, (1, 2), (1, 0.4)))
    x *= np.clip(1 + rng.uniform(0.0, 0.3) * smooth_random(rng, n, sr, rng.uniform(0.1, 0.5)), 0.2, None)
    return unit_rms(x)
