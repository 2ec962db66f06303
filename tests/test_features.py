"""Log-mel features: shapes, values against librosa, normalisation, and the feature cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import kdsed.features as features_mod
from kdsed.config import FeatureConfig
from kdsed.data import Clip
from kdsed.features import LOG_EPS, FeatureSet, Normalizer, load_features, log_mel

CFG = FeatureConfig()
SR = CFG.sample_rate


def tone(duration_s: float, freq_hz: float = 1000.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(duration_s * SR))) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


# --- log_mel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("duration_s, frames", [
    (10.0, 240),
    (6.0, 1 + (96000 - 1024) // 664),
    (12.5, 240),  # cut to the nominal clip
    (0.03, 1),  # shorter than one window: padded to one frame
])
def test_log_mel_shape(duration_s, frames):
    mel = log_mel(tone(duration_s), CFG)
    assert mel.shape == (frames, 64) and mel.dtype == np.float32
    assert frames == min(CFG.frames_per_clip, CFG.frames_for_samples(int(round(duration_s * SR))))


def test_log_mel_matches_librosa_and_peaks_at_the_tone():
    import librosa

    y = tone(2.0)
    mel = log_mel(y, CFG)
    direct = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=1024, hop_length=664, center=False, n_mels=64,
                                            fmin=0.0, fmax=8000.0, power=2.0)
    np.testing.assert_allclose(mel, np.log(direct + LOG_EPS).T, rtol=1e-5, atol=1e-4)
    centres_hz = librosa.mel_frequencies(n_mels=64 + 2, fmin=0.0, fmax=8000.0)[1:-1]
    nearest_band = int(np.argmin(np.abs(centres_hz - 1000.0)))
    assert np.all(mel.argmax(axis=1) == nearest_band)
    # a cut: frames beyond the tone carry the log floor of silence
    short = log_mel(np.concatenate([tone(0.5), np.zeros(SR, np.float32)]), CFG)
    assert short[-1].max() == pytest.approx(np.log(LOG_EPS), abs=1e-3)


def test_log_mel_rejects_multichannel_input():
    with pytest.raises(ValueError, match=r"mono waveform \(samples,\), got shape \(2, 16000\)"):
        log_mel(np.zeros((2, SR), np.float32), CFG)


def test_log_mel_follows_n_mels():
    assert log_mel(tone(1.0), FeatureConfig(n_mels=32)).shape == (CFG.frames_for_samples(SR), 32)


# --- FeatureSet and Normalizer ---------------------------------------------------------------------


def padded_set(names: list[str], n_frames: list[int], seed: int, frames: int = 20, bands: int = 4) -> FeatureSet:
    rng = np.random.default_rng(seed)
    x = (rng.normal(3.0, 2.0, (len(names), frames, bands)) * np.arange(1, bands + 1)).astype(np.float32)
    x[np.arange(frames)[None, :] >= np.asarray(n_frames)[:, None]] = 0.0
    return FeatureSet(list(names), x, np.asarray(n_frames, np.int64))


def test_select_keeps_the_requested_order_and_refuses_missing_names():
    fs = padded_set(["a", "b", "c"], [20, 5, 12], 0)
    sub = fs.select(["c", "a"])
    assert sub.filenames == ["c", "a"] and len(sub) == 2
    np.testing.assert_array_equal(sub.features, fs.features[[2, 0]])
    np.testing.assert_array_equal(sub.n_frames, [12, 20])
    with pytest.raises(KeyError, match=r"1 clips have no features, first: \['zzz'\]"):
        fs.select(["a", "zzz"])


def test_normalizer_standardises_valid_frames_and_keeps_padding_zero():
    sets = [padded_set(["a", "b", "c"], [20, 5, 12], 0), padded_set(["d", "e"], [7, 20], 1)]
    norm = Normalizer.fit(sets)
    valid = [fs.features[np.arange(20)[None, :] < fs.n_frames[:, None]] for fs in sets]
    np.testing.assert_allclose(norm.mean, np.concatenate(valid).mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.std, np.concatenate(valid).std(0), rtol=1e-5)
    out = [norm.apply(fs) for fs in sets]
    pooled = np.concatenate([o.features[np.arange(20)[None, :] < o.n_frames[:, None]] for o in out])
    assert len(pooled) == 20 + 5 + 12 + 7 + 20
    np.testing.assert_allclose(pooled.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(pooled.std(0), 1.0, atol=1e-5)
    for o in out:
        padding = o.features[np.arange(20)[None, :] >= o.n_frames[:, None]]
        assert padding.size > 0 and np.all(padding == 0.0)
        assert o.features.dtype == np.float32
    assert out[0].filenames == ["a", "b", "c"]


def test_normalizer_dict_round_trip_and_empty_fit():
    norm = Normalizer.fit([padded_set(["a"], [9], 3)])
    again = Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.mean, norm.mean)
    np.testing.assert_array_equal(again.std, norm.std)
    assert again.mean.dtype == np.float32
    with pytest.raises(ValueError, match="zero frames"):
        Normalizer.fit([])


# --- the feature cache -----------------------------------------------------------------------------


def write_clips(folder: Path, durations_s: dict[str, float]) -> list[Clip]:
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, (name, duration_s) in enumerate(durations_s.items()):
        sf.write(folder / name, tone(duration_s, 300.0 * (i + 1)), SR, subtype="FLOAT")
        clips.append(Clip(name, folder / name, "weak", ("Dog",), None))
    return clips


@pytest.fixture
def count_extractions(monkeypatch) -> list[str]:
    """Paths passed to `_extract_one`, which does the work of every cache miss."""
    calls: list[str] = []
    original = features_mod._extract_one

    def counting(args):
        calls.append(args[0])
        return original(args)

    monkeypatch.setattr(features_mod, "_extract_one", counting)
    return calls


def test_load_features_extracts_once_then_reads_the_cache(tmp_path, count_extractions):
    clips = write_clips(tmp_path / "audio", {"a.wav": 2.0, "b.wav": 1.0, "c.wav": 10.0})
    cache = tmp_path / "cache"
    first = load_features(clips, CFG, cache, workers=1, progress=False)
    assert len(count_extractions) == 3
    assert first.filenames == ["a.wav", "b.wav", "c.wav"]
    assert first.features.shape == (3, 240, 64)
    np.testing.assert_array_equal(first.n_frames, [CFG.frames_for_samples(2 * SR), CFG.frames_for_samples(SR), 240])
    assert np.all(first.features[1, first.n_frames[1]:] == 0.0)
    np.testing.assert_allclose(first.features[0, : first.n_frames[0]], log_mel(tone(2.0, 300.0), CFG), atol=1e-4)

    second = load_features(clips, CFG, cache, workers=1, progress=False)
    assert len(count_extractions) == 3  # nothing extracted again
    assert second.filenames == first.filenames
    np.testing.assert_array_equal(second.features, first.features)
    np.testing.assert_array_equal(second.n_frames, first.n_frames)
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_changed_config_clip_list_or_audio_extracts_again(tmp_path, count_extractions):
    clips = write_clips(tmp_path / "audio", {"a.wav": 2.0, "b.wav": 1.0})
    cache = tmp_path / "cache"
    load_features(clips, CFG, cache, workers=1, progress=False)
    assert len(count_extractions) == 2

    narrow = load_features(clips, FeatureConfig(n_mels=32), cache, workers=1, progress=False)
    assert len(count_extractions) == 4 and narrow.features.shape == (2, 240, 32)

    only_b = load_features(clips[1:], CFG, cache, workers=1, progress=False)
    assert len(count_extractions) == 5 and only_b.filenames == ["b.wav"]

    sf.write(clips[1].audio_path, tone(3.0), SR)  # a re-written file of another size
    changed = load_features(clips, CFG, cache, workers=1, progress=False)
    assert len(count_extractions) == 7
    assert changed.n_frames.tolist() == [CFG.frames_for_samples(2 * SR), CFG.frames_for_samples(3 * SR)]

    load_features(clips, CFG, cache, workers=1, progress=False)
    assert len(count_extractions) == 7
    assert len([p for p in cache.iterdir()]) == 4  # one entry per distinct (config, clip list)


def test_load_features_refuses_an_empty_clip_list(tmp_path):
    with pytest.raises(ValueError, match="weak: no clips"):
        load_features([], CFG, tmp_path, label="weak")


def test_cache_key_follows_the_config_and_the_file_mtime(tmp_path):
    clips = write_clips(tmp_path / "audio", {"a.wav": 1.0})
    key = features_mod.cache_key(clips, CFG)
    assert features_mod.cache_key(clips, FeatureConfig()) == key
    assert features_mod.cache_key(clips, FeatureConfig(hop_length=512)) != key
    st = os.stat(clips[0].audio_path)
    os.utime(clips[0].audio_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert features_mod.cache_key(clips, CFG) != key


def test_one_pool_serves_every_extraction_of_its_block_and_equals_one_process(tmp_path):
    from kdsed.features import FeaturePool, extract

    clips = write_clips(tmp_path / "audio", {f"{i}.wav": 1.0 + i / 4 for i in range(12)})
    alone = extract(clips, CFG, workers=1, progress=False)
    with FeaturePool(2) as pool:
        first = extract(clips[:10], CFG, pool=pool, progress=False)
        executor = pool._executor
        second = extract(clips[2:], CFG, pool=pool, progress=False)
        assert executor is not None and pool._executor is executor  # started once, for both
        assert len({p.pid for p in executor._processes.values()}) == 2
    assert pool._executor is None  # stopped at the end of the block
    np.testing.assert_array_equal(first.features, alone.features[:10])
    np.testing.assert_array_equal(second.features, alone.features[2:])
    np.testing.assert_array_equal(second.n_frames, alone.n_frames[2:])
    with FeaturePool(2) as pool:
        extract(clips[:8], CFG, pool=pool, progress=False)  # 8 clips or fewer: no processes
        assert pool._executor is None
