"""kdsed.data.synth and kdsed.data.scenes: the synthetic DESED-like set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kdsed.constants import CLASSES, EVAL, SUBSETS, TEST, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN, WEAK
from kdsed.data import load_dataset
from kdsed.data.dsp import rms
from kdsed.data.scenes import SceneConfig, annotate
from kdsed.data.sound_families import FAMILIES
from kdsed.data.synth import MARKER, PRESETS, clip_filename, generate, main, render_clip
from kdsed.events import Event


def _files(root: Path) -> dict[str, bytes]:
    meta = {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "metadata").rglob("*")) if p.is_file()}
    wavs = sorted((root / "audio").rglob("*.wav"))
    return meta | {str(p.relative_to(root)): p.read_bytes() for p in wavs[::17]}


def test_same_seed_same_bytes_whatever_the_workers(smoke_dataset: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", "smoke", 0, progress=False, workers=1)
    first, second = _files(smoke_dataset), _files(again)
    assert first.keys() == second.keys() and len(first) > 10
    assert all(first[k] == second[k] for k in first)
    assert json.loads((again / MARKER).read_text()) == json.loads((smoke_dataset / MARKER).read_text())


def test_different_seed_differs() -> None:
    assert clip_filename(0, WEAK, 0) != clip_filename(1, WEAK, 0)
    a, b = render_clip(0, WEAK, 0).audio, render_clip(1, WEAK, 0).audio
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert len({clip_filename(0, s, i) for s in SUBSETS for i in range(300)}) == 5 * 300


def test_levels_sane(smoke_dataset: Path) -> None:
    peaks, levels = [], []
    for path in sorted((smoke_dataset / "audio").rglob("*.wav")):
        x, sr = sf.read(path, dtype="float32")
        assert sr == 16000 and x.shape == (160000,) and np.all(np.isfinite(x))
        peaks.append(np.abs(x).max())
        levels.append(20 * np.log10(rms(x)))
    assert max(peaks) <= 0.99 + 1e-4
    assert -40 < min(levels) and max(levels) < -15
    assert sf.info(path).subtype == "PCM_16"


def test_snr_range_respected() -> None:
    cfg = SceneConfig()
    measured = []
    for i in range(8):
        scene = render_clip(0, TEST, i, cfg, keep_tracks=True)
        bg_level = rms(scene.background)
        for source in scene.sources:
            assert cfg.snr_db[0] <= source.snr_db <= cfg.snr_db[1]
            active = np.zeros(scene.audio.size, bool)
            for onset_s, offset_s in source.units_s:
                active[max(0, int(onset_s * 16000)):max(0, int(offset_s * 16000))] = True
            snr = 20 * np.log10(rms(source.track[active]) / bg_level)
            measured.append(snr)
            assert abs(snr - source.snr_db) < 3.0, (source.family, snr, source.snr_db)
    assert len(measured) >= 8 and max(measured) - min(measured) > 8


def test_annotation_rules() -> None:
    spans = [("Dog", (1.0, 1.1)), ("Dog", (1.2, 1.6)), ("Dog", (2.0, 2.5)), ("Cat", (9.9, 10.5)), ("Cat", (-1, 0.1))]
    assert annotate(spans, 10.0) == (Event(0.0, 0.25, "Cat"), Event(1.0, 1.6, "Dog"), Event(2.0, 2.5, "Dog"),
                                     Event(9.75, 10.0, "Cat"))


def test_subset_composition(smoke_dataset: Path) -> None:
    ds = load_dataset(smoke_dataset)
    with_targets = {s: np.mean([bool(c.hidden_events) for c in ds.subset(s)])
                    for s in (WEAK, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN)}
    assert with_targets[WEAK] == 1.0 and with_targets[UNLABEL_IN_DOMAIN] > 0.8
    assert with_targets[UNLABEL_OUT_OF_DOMAIN] < 0.6
    classes = {e.label for s in (WEAK, TEST, EVAL) for c in ds.subset(s) for e in (c.hidden_events or c.events)}
    assert len(classes) >= 8 and classes <= set(CLASSES)


def test_every_family_renders_varied_units() -> None:
    assert set(FAMILIES) == set(CLASSES)
    for name, family in FAMILIES.items():
        lengths = []
        for seed in range(3):
            units = family.render(np.random.default_rng(seed), 16000, family.duration_s[0] + 1.0)
            assert units and all(x.dtype == np.float32 and np.all(np.isfinite(x)) for _, x in units), name
            assert all(x.size >= 0.25 * 16000 - 1 for _, x in units), name
            lengths += [x.size for _, x in units]
        assert family.long or len(set(lengths)) > 1, name


def test_presets_and_cli(smoke_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert PRESETS["mini"].counts == {WEAK: 240, UNLABEL_IN_DOMAIN: 480, UNLABEL_OUT_OF_DOMAIN: 240, TEST: 160, EVAL: 160}
    assert PRESETS["full"].counts == {WEAK: 1578, UNLABEL_IN_DOMAIN: 14412, UNLABEL_OUT_OF_DOMAIN: 39999,
                                      TEST: 288, EVAL: 880}
    assert main(["--out", str(smoke_dataset), "--preset", "smoke", "--seed", "0"]) == 0
    captured = capsys.readouterr()
    assert "nothing to do" in captured.err and "took" in captured.out
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    assert main(["--out", str(tmp_path / "foreign"), "--preset", "smoke", "--quiet"]) == 2
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
