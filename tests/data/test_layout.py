"""kdsed.data.layout and kdsed.data.audio: reading the DCASE 2018 / DESED layout and audio clips."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kdsed.constants import CLASSES, EVAL, SUBSETS, TEST, TRAIN_SUBSETS, UNLABEL_IN_DOMAIN, WEAK
from kdsed.data import (
    AudioError, MissingAudioError, load_audio, load_dataset, read_clip_list, read_weak_csv, write_clip_list,
    write_weak_csv,
)
from kdsed.data.real_metadata import named_duration_s
from kdsed.data.synth import PRESETS
from kdsed.events import Event, MetadataError, write_strong_tsv

SR = 16000


def _wav(path: Path, seconds: float = 1.0, sr: int = SR, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * 1000 * t)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, sr)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- round trip of the synthetic smoke set --------------------------------------------------------

def test_smoke_set_round_trip(smoke_dataset: Path) -> None:
    ds = load_dataset(smoke_dataset)
    assert ds.counts() == PRESETS["smoke"].counts
    for clip in ds.subset(WEAK):
        assert clip.weak_labels and clip.events is None and clip.hidden_events is not None
        assert clip.weak_labels == tuple(c for c in CLASSES if c in {e.label for e in clip.hidden_events})
    for subset in (UNLABEL_IN_DOMAIN, "unlabel_out_of_domain"):
        assert all(c.weak_labels is None and c.events is None for c in ds.subset(subset))
        assert ds.hidden_table(subset) is not None
    for subset in (TEST, EVAL):
        ref = ds.reference_table(subset)
        assert len(ref) == PRESETS["smoke"].counts[subset] and ds.hidden_table(subset) is None
        assert sum(len(v) for v in ref.values()) > len(ref)
        for clip in ds.subset(subset):
            assert clip.weak_labels == tuple(c for c in CLASSES if c in {e.label for e in clip.events})
    assert all(c.audio_path.is_file() and c.audio_path.parent.name for s in SUBSETS for c in ds.subset(s))


def test_smoke_hidden_labels_obey_annotation_rules(smoke_dataset: Path) -> None:
    ds = load_dataset(smoke_dataset)
    tables = [ds.hidden_table(s) for s in TRAIN_SUBSETS]  # test/eval carry the real events as they are
    n_events = 0
    for table in tables:
        for events in table.values():
            for label, group in groupby(sorted(events, key=lambda e: (e.label, e.onset_s)), key=lambda e: e.label):
                group = list(group)
                for e in group:
                    assert 0.0 <= e.onset_s and e.offset_s <= 10.0 and e.duration_s >= 0.25 - 1e-9, e
                for a, b in zip(group, group[1:]):
                    assert b.onset_s - a.offset_s >= 0.15 - 1e-9, (a, b)
                n_events += len(group)
    assert n_events > 100


def test_smoke_audio_loads_at_feature_rate(smoke_dataset: Path) -> None:
    clips = load_dataset(smoke_dataset, subsets=[TEST]).subset(TEST)
    clip = next(c for c in clips if named_duration_s(c.filename) == 10.0)
    x = load_audio(clip.audio_path, SR)
    assert x.shape == (160000,) and x.dtype == np.float32 and 0 < np.abs(x).max() <= 1.0
    assert load_audio(clip.audio_path, 8000).shape == (80000,)
    assert load_audio(clip.audio_path, SR, max_duration_s=2.5).shape == (40000,)


# --- readers -------------------------------------------------------------------------------------

def test_weak_csv_and_clip_list_round_trip(tmp_path: Path) -> None:
    write_weak_csv(tmp_path / "weak.tsv", {"b.wav": ["Speech"], "a.wav": ["Dog", "Cat"]})
    assert read_weak_csv(tmp_path / "weak.tsv") == {"a.wav": ("Cat", "Dog"), "b.wav": ("Speech",)}
    write_clip_list(tmp_path / "list.csv", ["z.wav", "y.wav"])
    assert read_clip_list(tmp_path / "list.csv") == ["y.wav", "z.wav"]
    assert (tmp_path / "weak.tsv").read_text().splitlines()[0] == "filename\tevent_labels"


def _mini_tree(root: Path, n_weak: int = 2) -> Path:
    names = [f"Y{i:011d}_0.000_10.000.wav" for i in range(n_weak)]
    write_weak_csv(root / "metadata/train/weak.csv", {n: ["Dog"] for n in names})
    for n in names:
        _wav(root / "audio/train/weak" / n)
    return root


@pytest.mark.parametrize("text, line, expected", [
    ("filename\tevent_labels\na.wav\tDog\nb.wav\tDgo\n", 3, "unknown class label 'Dgo'"),
    ("filename\tevent_labels\na.wav\tDog\tCat\n", 2, "malformed row"),
    ("filename\tevent_labels\na.wav\n", 2, "malformed row"),
    ("filename\tevent_labels\na.wav\tDog\na.wav\tCat\n", 3, "duplicate filename"),
])
def test_bad_weak_rows_name_file_and_line(tmp_path: Path, text: str, line: int, expected: str) -> None:
    path = _write(tmp_path / "metadata/train/weak.csv", text)
    with pytest.raises(MetadataError) as info:
        load_dataset(tmp_path, subsets=[WEAK])
    assert str(path) in str(info.value) and f"line {line}" in str(info.value) and expected in str(info.value)


def test_bad_strong_rows_name_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "metadata/test/test.csv",
                  "filename\tonset\toffset\tevent_label\na.wav\t1.0\t2.0\tDog\na.wav\t3.0\t3.0\tCat\n")
    with pytest.raises(MetadataError, match=r"line 3: onset 3.0 >= offset 3.0"):
        load_dataset(tmp_path, subsets=[TEST])
    _write(path, "filename\tonset\toffset\tevent_label\na.wav\t1.0\tDog\n")
    with pytest.raises(MetadataError, match=r"test\.csv, line 2: malformed row"):
        load_dataset(tmp_path, subsets=[TEST])


def test_bad_clip_list_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "metadata/train/unlabel_in_domain.csv", "filename\na.wav\nb.wav\tDog\n")
    with pytest.raises(MetadataError, match=rf"{path}, line 3: malformed row"):
        read_clip_list(path)


def test_missing_audio_counted_and_first_five_listed(tmp_path: Path) -> None:
    names = [f"c{i}.wav" for i in range(7)]
    path = tmp_path / "metadata/train/unlabel_in_domain.csv"
    write_clip_list(path, names)
    _wav(tmp_path / "audio/train/unlabel_in_domain/c3.wav")
    with pytest.raises(MissingAudioError) as info:
        load_dataset(tmp_path, subsets=[UNLABEL_IN_DOMAIN])
    msg = str(info.value)
    assert str(path) in msg and "6 of 7" in msg and "c0.wav (line 2)" in msg and "c5.wav" in msg
    assert "c6.wav" not in msg and "c3.wav" not in msg
    ds = load_dataset(tmp_path, subsets=[UNLABEL_IN_DOMAIN], check_audio=False)
    assert len(ds.subset(UNLABEL_IN_DOMAIN)) == 7


def test_empty_subset_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "metadata/train/weak.csv", "filename\tevent_labels\n")
    with pytest.raises(MetadataError, match=rf"{path}, line 1: no clips listed"):
        load_dataset(tmp_path, subsets=[WEAK])


def test_absent_subset_only_an_error_when_asked(tmp_path: Path) -> None:
    root = _mini_tree(tmp_path)
    ds = load_dataset(root, subsets=[WEAK])
    assert list(ds.clips) == [WEAK] and ds.hidden_table(WEAK) is None
    assert list(load_dataset(root, subsets=None).clips) == [WEAK]
    with pytest.raises(MetadataError) as info:
        load_dataset(root, subsets=[WEAK, TEST])
    assert "metadata/test/test.csv" in str(info.value) and "metadata/validation/validation.tsv" in str(info.value)
    with pytest.raises(KeyError, match="not loaded"):
        ds.subset(TEST)
    with pytest.raises(ValueError, match="unknown subset"):
        load_dataset(root, subsets=["train"])


def test_tsv_and_desed_names(tmp_path: Path) -> None:
    events = {"v1.wav": [Event(0.5, 2.0, "Speech"), Event(1.0, 1.5, "Dog")], "v2.wav": []}
    write_strong_tsv(tmp_path / "metadata/validation/validation.tsv", events)
    write_weak_csv(tmp_path / "metadata/train/weak.tsv", {"w.wav": ["Frying"]})
    _wav(tmp_path / "audio/train/weak_16k/w.wav")
    for name in events:
        _wav(tmp_path / "audio/validation/validation_16k" / name)
    ds = load_dataset(tmp_path, subsets=[WEAK, TEST])
    test = ds.subset(TEST)
    assert [c.filename for c in test] == ["v1.wav", "v2.wav"]
    assert test[0].audio_path == tmp_path / "audio/validation/validation_16k/v1.wav"
    assert test[0].events == (Event(0.5, 2.0, "Speech"), Event(1.0, 1.5, "Dog"))
    assert test[0].weak_labels == ("Dog", "Speech") and test[1].weak_labels == () and test[1].events == ()
    assert ds.subset(WEAK)[0].audio_path == tmp_path / "audio/train/weak_16k/w.wav"


def test_hidden_labels_loaded_and_checked(tmp_path: Path) -> None:
    root = _mini_tree(tmp_path)
    name = next(iter(read_weak_csv(root / "metadata/train/weak.csv")))
    write_strong_tsv(root / "metadata/train/weak_strong.tsv", {name: [Event(1.0, 2.0, "Dog")]})
    ds = load_dataset(root, subsets=[WEAK])
    assert ds.subset(WEAK)[0].hidden_events == (Event(1.0, 2.0, "Dog"),)
    assert ds.subset(WEAK)[1].hidden_events is None
    write_strong_tsv(root / "metadata/train/weak_strong.tsv", {"other.wav": []})
    with pytest.raises(MetadataError, match="not listed"):
        load_dataset(root, subsets=[WEAK])


# --- audio ---------------------------------------------------------------------------------------

def test_short_clip_loads_as_is(tmp_path: Path) -> None:
    x = load_audio(_wav(tmp_path / "short.wav", seconds=7.0), SR)
    assert x.shape == (7 * SR,) and x.dtype == np.float32
    assert load_audio(tmp_path / "short.wav", SR, max_duration_s=10.0).shape == (7 * SR,)


def test_stereo_44k_is_downmixed_and_resampled(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    t = np.arange(2 * 44100) / 44100
    left = 0.5 * np.sin(2 * np.pi * 1000 * t)
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 44100)
    x = load_audio(path, SR)
    assert x.shape == (2 * SR,)
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * SR / x.size - 1000) < 2
    assert np.sqrt(np.mean(x[1000:-1000] ** 2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize("content", [b"", b"this is not a wav file at all", b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_unreadable_audio_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=rf"{path}: not a readable audio file"):
        load_audio(path, SR)


def test_empty_and_missing_audio(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0), SR)
    with pytest.raises(AudioError, match=rf"{path}: empty audio file"):
        load_audio(path, SR)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav", SR)
    assert issubclass(AudioError, MetadataError)
