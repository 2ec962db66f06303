"""Signal-building blocks for the synthetic sound families: noise, oscillators, filters, envelopes, reverb.

Every function is pure given its `rng` (a `numpy.random.Generator`) and works at sample rate `sr`.
Signals are float32 (the output is 16-bit anyway, and float32 sines and FFTs are several times
faster); oscillator phases are accumulated in float64 and wrapped before the float32 sine.
Signals returned by the generators are not level-normalised unless said so.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft as sp_fft
from scipy import signal as sps

Rng = np.random.Generator
F32 = np.float32
TWO_PI = F32(2 * np.pi)


def samples(duration_s: float, sr: int) -> int:
    """Number of samples of `duration_s` seconds (at least 1)."""
    return max(1, int(round(duration_s * sr)))


def rms(x: np.ndarray) -> float:
    """Root mean square of `x` (0 for an empty array)."""
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def unit_rms(x: np.ndarray) -> np.ndarray:
    """`x` scaled to RMS 1 (unchanged if silent)."""
    level = rms(x)
    return x / level if level > 1e-12 else x


def white(rng: Rng, n: int) -> np.ndarray:
    """Standard Gaussian white noise, float32."""
    return rng.standard_normal(n, dtype=F32)


def colored_noise(rng: Rng, n: int, slope_db_per_octave: float) -> np.ndarray:
    """Gaussian noise whose power spectrum falls by `slope_db_per_octave` (0 white, -3 pink, -6 brown), RMS 1."""
    return shaped_noise(rng, n, 2, slope_db_per_octave)


def shaped_noise(rng: Rng, n: int, sr: int, slope_db_per_octave: float = 0.0, low_hz: float | None = None,
                 high_hz: float | None = None, peaks: tuple[tuple[float, float, float], ...] = ()) -> np.ndarray:
    """Coloured noise with 2nd-order-like band skirts, boosted by (1 + gain) at resonant `peaks` (freq_hz, q, gain); RMS 1.

    The spectrum of white Gaussian noise is drawn directly (independent Gaussian real and imaginary
    parts) and shaped per frequency bin: one inverse FFT instead of noise, FFT and filters.
    """
    m = sp_fft.next_fast_len(n, real=True)
    size = m // 2 + 1
    spectrum = white(rng, 2 * size).view(np.complex64)
    f = np.arange(size, dtype=F32) * F32(sr / m)
    gain = _slope(size, round(slope_db_per_octave * 4) / 4).copy()
    if low_hz:
        gain *= 1 / np.sqrt(1 + (F32(low_hz) / np.maximum(f, F32(1e-3))) ** 4)
    if high_hz:
        gain *= 1 / np.sqrt(1 + (f / F32(high_hz)) ** 4)
    boost = np.ones_like(f)
    for freq_hz, q, g in peaks:
        detune = f / F32(freq_hz) - F32(freq_hz) / np.maximum(f, F32(1e-3))
        boost += F32(g) / (1 + (F32(q) * detune) ** 2)
    spectrum *= gain * boost
    return unit_rms(sp_fft.irfft(spectrum, m)[:n])


@lru_cache(maxsize=64)
def _slope(size: int, slope_db_per_octave: float) -> np.ndarray:
    f = np.arange(size, dtype=F32)
    f[0] = 1.0
    gain = f ** F32(slope_db_per_octave / (20 * np.log10(2)))
    gain[0] = 0.0
    return gain


def _biquad(kind: str, sr: int, freq_hz: float, q: float = 1 / np.sqrt(2)) -> list[float]:
    """One second-order section (b0 b1 b2 a0 a1 a2, normalised) of the RBJ audio-EQ cookbook."""
    w0 = 2 * np.pi * min(max(freq_hz, 1.0), 0.49 * sr) / sr
    cos, alpha = np.cos(w0), np.sin(w0) / (2 * q)
    b = {"lowpass": ((1 - cos) / 2, 1 - cos, (1 - cos) / 2),
         "highpass": ((1 + cos) / 2, -(1 + cos), (1 + cos) / 2),
         "bandpass": (alpha, 0.0, -alpha)}[kind]
    a0 = 1 + alpha
    return [b[0] / a0, b[1] / a0, b[2] / a0, 1.0, -2 * cos / a0, (1 - alpha) / a0]


def _first_order(kind: str, sr: int, freq_hz: float) -> list[float]:
    k = np.tan(np.pi * min(max(freq_hz, 1.0), 0.49 * sr) / sr)
    b = (k / (1 + k), k / (1 + k)) if kind == "lowpass" else (1 / (1 + k), -1 / (1 + k))
    return [b[0], b[1], 0.0, 1.0, (k - 1) / (k + 1), 0.0]


def band(x: np.ndarray, sr: int, low_hz: float | None = None, high_hz: float | None = None,
         order: int = 2) -> np.ndarray:
    """Butterworth high-, low- or band-pass of `x`, `order` (1 or 2) per edge."""
    if low_hz and high_hz and low_hz >= high_hz:
        high_hz = low_hz + 50
    design = _biquad if order == 2 else _first_order
    sections = ([design("highpass", sr, low_hz)] if low_hz else []) + ([design("lowpass", sr, high_hz)] if high_hz else [])
    if not sections:
        return x
    return sps.sosfilt(np.array(sections), x).astype(F32, copy=False)


def resonate(x: np.ndarray, sr: int, freq_hz: float, q: float) -> np.ndarray:
    """Second-order resonance (band-pass, 0 dB at its peak) at `freq_hz` with quality `q`."""
    sos = _biquad("bandpass", sr, freq_hz, q)
    return sps.lfilter(np.array(sos[:3], F32), np.array(sos[3:], F32), x.astype(F32, copy=False))


def formant_filter(x: np.ndarray, sr: int, freqs_hz, qs, gains) -> np.ndarray:
    """Parallel bank of resonances (formants) applied to a source `x`."""
    return sum(g * resonate(x, sr, f, q) for f, q, g in zip(freqs_hz, qs, gains))


def smooth_random(rng: Rng, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """A smooth random curve in about [-1, 1] with variations at about `rate_hz`."""
    n_knots = max(2, int(n / sr * rate_hz) + 2)
    knots = rng.uniform(-1.0, 1.0, n_knots).astype(F32)
    step = -(-n // (n_knots - 1))  # samples between knots (ceil), so the curve covers n
    ramp = np.tile(np.arange(step, dtype=F32) / F32(step), n_knots - 1)
    return (np.repeat(knots[:-1], step) + ramp * np.repeat(np.diff(knots), step))[:n]


def fade(n: int, sr: int, attack_s: float, release_s: float) -> np.ndarray:
    """Envelope with raised-cosine attack and release."""
    env = np.ones(n, dtype=F32)
    a, r = min(samples(attack_s, sr), n // 2), min(samples(release_s, sr), n // 2)
    if a:
        env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, a))
    if r:
        env[n - r:] *= 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, r))
    return env


def decay(n: int, sr: int, decay_s: float) -> np.ndarray:
    """Exponential decay reaching -60 dB after `decay_s` seconds."""
    return np.exp(np.arange(n, dtype=F32) * F32(-3.0 * np.log(10) / (decay_s * sr)))


def phase_from_frequency(rng: Rng, freq_hz: np.ndarray, sr: int) -> np.ndarray:
    """Running phase in cycles, wrapped to [0, 1) as float32, of an oscillator following `freq_hz` (random start)."""
    cycles = rng.random() + np.cumsum(freq_hz, dtype=np.float64) / sr
    return (cycles - np.floor(cycles)).astype(F32)


def sine(phase_cycles: np.ndarray, ratio: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """sin(2 pi (ratio * phase + offset)) of a wrapped float32 phase in cycles."""
    x = phase_cycles * F32(ratio) + F32(offset)
    return np.sin(TWO_PI * (x - np.floor(x)))


def _blep(t: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """PolyBLEP correction for a unit step at phase 0 (t, dt in cycles)."""
    out = np.zeros_like(t)
    lo = t < dt
    x = t[lo] / dt[lo]
    out[lo] = x + x - x * x - 1.0
    hi = t > 1.0 - dt
    x = (t[hi] - 1.0) / dt[hi]
    out[hi] = x * x + x + x + 1.0
    return out


def saw(rng: Rng, freq_hz: np.ndarray, sr: int) -> np.ndarray:
    """Band-limited (PolyBLEP) sawtooth following the frequency track `freq_hz`."""
    dt = np.clip(np.asarray(freq_hz, dtype=F32) / sr, 1e-6, 0.49)
    t = phase_from_frequency(rng, freq_hz, sr)
    return 2 * t - 1 - _blep(t, dt)


def pulse(rng: Rng, freq_hz: np.ndarray, sr: int, duty: float) -> np.ndarray:
    """Band-limited pulse wave (difference of two sawtooths) with duty cycle `duty`, zero mean."""
    dt = np.clip(np.asarray(freq_hz, dtype=F32) / sr, 1e-6, 0.49)
    t = phase_from_frequency(rng, freq_hz, sr)
    t2 = (t + F32(duty)) % 1
    y = (2 * t - _blep(t, dt)) - (2 * t2 - _blep(t2, dt))
    return y - y.mean()


def partials(rng: Rng, freq_hz: np.ndarray | float, n: int, sr: int, ratios, amps, decays_s=None) -> np.ndarray:
    """Sum of sinusoids at `ratios` x `freq_hz` (harmonic or not), each optionally decaying; none above Nyquist."""
    freq = np.broadcast_to(np.asarray(freq_hz, dtype=np.float64), (n,))
    phase = phase_from_frequency(rng, freq, sr)
    top = float(freq.max())
    out = np.zeros(n, dtype=F32)
    for i, (ratio, amp) in enumerate(zip(ratios, amps)):
        if amp == 0 or ratio * top >= 0.48 * sr:
            continue
        part = F32(amp) * sine(phase, ratio, rng.random())
        if decays_s is not None:
            part *= decay(n, sr, decays_s[i])
        out += part
    return out


def formant_harmonics(rng: Rng, f0_hz: np.ndarray, sr: int, formants_hz, bandwidths_hz, tilt: float) -> np.ndarray:
    """Additive voiced sound: harmonics of `f0_hz` weighted by formant peaks (tracks or constants)."""
    n_harm = int(0.45 * sr / f0_hz.max())
    k = np.arange(1, n_harm + 1, dtype=F32)[:, None]
    freqs = k * f0_hz.astype(F32)[None, :]
    gain = np.zeros_like(freqs)
    for fc, bw in zip(formants_hz, bandwidths_hz):
        gain += 1 / (1 + ((freqs - np.asarray(fc, dtype=F32)) / F32(bw)) ** 2)
    gain *= k ** F32(-tilt)
    phase = phase_from_frequency(rng, f0_hz, sr)[None, :] * k + rng.random((n_harm, 1), dtype=F32)
    return np.sum(gain * np.sin(TWO_PI * (phase - np.floor(phase))), axis=0)


def impulses(rng: Rng, n: int, sr: int, rate_hz: float, sigma: float = 1.0) -> np.ndarray:
    """Sparse Poisson impulse train with log-normal amplitudes and random signs."""
    out = np.zeros(n, dtype=F32)
    count = rng.poisson(rate_hz * n / sr)
    where = rng.integers(0, n, count)
    out[where] = rng.lognormal(0.0, sigma, count) * rng.choice([-1.0, 1.0], count)
    return out


def place(dst: np.ndarray, src: np.ndarray, start: int) -> None:
    """Add `src` into `dst` at sample `start`, cropping what falls outside."""
    lo, hi = max(0, start), min(dst.size, start + src.size)
    if hi > lo:
        dst[lo:hi] += src[lo - start:hi - start]


def reverb_ir(rng: Rng, sr: int, rt60_s: float, direct_to_reverb_db: float) -> np.ndarray:
    """Room impulse response: a direct path plus exponentially decaying, darkening noise; unit energy."""
    n = samples(rt60_s, sr)
    tail = white(rng, n) * decay(n, sr, rt60_s)
    tail = band(tail, sr, high_hz=rng.uniform(2500, 7000), order=1)
    tail[: samples(rng.uniform(0.003, 0.02), sr)] = 0.0
    tail *= 10.0 ** (-direct_to_reverb_db / 20) / max(np.sqrt(np.sum(tail**2)), 1e-12)
    tail[0] += 1.0
    return tail / np.sqrt(np.sum(tail**2))


def convolve(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """`x` convolved with `ir`, cut to the length of `x`."""
    return sps.fftconvolve(x.astype(F32, copy=False), ir.astype(F32, copy=False))[: x.size]
