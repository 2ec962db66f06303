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
from kdsed.data.real_metadata import class_layouts, named_duration_s, real_metadata
from kdsed.data.scenes import SceneConfig, annotate, sound_spans
from kdsed.data.sound_families import FAMILIES, fill_span
from kdsed.data.synth import MARKER, PRESETS, clip_filename, generate, main, plan_clip, real_order, render_clip
from kdsed.events import Event


def _files(root: Path) -> dict[str, bytes]:
    meta = {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "metadata").rglob("*")) if p.is_file()}
    wavs = sorted((root / "audio").rglob("*.wav"))
    return meta | {str(p.relative_to(root)): p.read_bytes() for p in wavs[::17]}


@pytest.mark.slow  # renders the smoke set again in worker processes
def test_same_seed_same_bytes_whatever_the_workers(smoke_dataset: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", "smoke", 0, progress=False, workers=1)
    first, second = _files(smoke_dataset), _files(again)
    assert first.keys() == second.keys() and len(first) > 10
    assert all(first[k] == second[k] for k in first)
    assert json.loads((again / MARKER).read_text()) == json.loads((smoke_dataset / MARKER).read_text())


def test_different_seed_differs() -> None:
    assert clip_filename(0, UNLABEL_IN_DOMAIN, 0) != clip_filename(1, UNLABEL_IN_DOMAIN, 0)
    a, b = render_clip(0, TEST, 0).audio, render_clip(1, TEST, 0).audio
    assert not np.array_equal(a[: min(a.size, b.size)], b[: min(a.size, b.size)])
    assert len({clip_filename(0, s, i) for s in SUBSETS for i in range(300)}) == 5 * 300
    for subset in (WEAK, TEST, EVAL):  # the real clips are taken in another order
        assert real_order(0, subset) != real_order(1, subset)
        assert sorted(real_order(0, subset)) == sorted(real_order(1, subset))
    differ = [plan_clip(0, UNLABEL_IN_DOMAIN, i).events != plan_clip(1, UNLABEL_IN_DOMAIN, i).events for i in range(40)]
    assert sum(differ) > 30  # in-domain structures are drawn anew


def test_levels_sane(smoke_dataset: Path) -> None:
    peaks, levels = [], []
    for path in sorted((smoke_dataset / "audio").rglob("*.wav")):
        x, sr = sf.read(path, dtype="float32")
        length_s = named_duration_s(path.name) if path.parent.name in (WEAK, TEST, EVAL) else 10.0
        assert sr == 16000 and x.shape == (int(length_s * 16000),) and np.all(np.isfinite(x))
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
    for subset in (WEAK, TEST, EVAL):  # the real clips that first bring each class come first
        assert {e.label for c in ds.subset(subset) for e in (c.hidden_events or c.events)} == set(CLASSES), subset


def test_test_and_eval_carry_exactly_the_real_events(smoke_dataset: Path) -> None:
    ds, real = load_dataset(smoke_dataset), real_metadata()
    for subset in (TEST, EVAL):
        reference = ds.reference_table(subset)
        assert list(reference) == sorted(real_order(0, subset)[:16])
        for name, events in reference.items():
            assert sorted(events) == sorted(real.strong[subset][name]), name
    full = [plan_clip(0, EVAL, i) for i in range(880)]
    assert {p.filename: list(p.events) for p in full} == {n: sorted(e) for n, e in real.strong[EVAL].items()}
    assert sum(not p.events for p in full) == 15 and sum(p.duration_s < 10 for p in full) == 14


def test_weak_clips_are_real_clips_with_test_layouts(smoke_dataset: Path) -> None:
    ds, real = load_dataset(smoke_dataset), real_metadata()
    test_layouts, eval_layouts = class_layouts(real.strong[TEST]), class_layouts(real.strong[EVAL])
    from_test = from_eval_only = 0
    for clip in ds.subset(WEAK):
        assert clip.weak_labels == real.weak_tags[clip.filename]
        length_s = named_duration_s(clip.filename)
        for label in clip.weak_labels:
            mine = tuple(e for e in clip.hidden_events if e.label == label)

            def fits(layout: tuple[Event, ...]) -> bool:
                cut = [(label, (e.onset_s, min(e.offset_s, length_s))) for e in layout if e.onset_s < length_s]
                return annotate(cut, length_s) == mine

            from_test += any(map(fits, test_layouts[label]))
            from_eval_only += not any(map(fits, test_layouts[label])) and any(map(fits, eval_layouts[label]))
    assert from_test == sum(len(c.weak_labels) for c in ds.subset(WEAK)) > 24 and from_eval_only == 0


def test_in_domain_clips_take_real_tag_combinations() -> None:
    combos = set(real_metadata().weak_tags.values())
    plans = [plan_clip(0, UNLABEL_IN_DOMAIN, i) for i in range(300)]
    tags = [tuple(c for c in CLASSES if c in {e.label for e in p.events}) for p in plans]
    assert all(t in combos for t in tags if t)
    assert 0.03 < np.mean([not t for t in tags]) < 0.12  # p_empty_in_domain = 0.07
    assert len(set(tags)) > 15 and {p.duration_s for p in plans} == {10.0}
    assert plan_clip(0, UNLABEL_OUT_OF_DOMAIN, 0).events is None


def test_target_sound_fills_each_event_span() -> None:
    short = next(i for i, name in enumerate(real_order(0, EVAL)) if named_duration_s(name) < 10)
    for index in (short, 0, 1, 2, 3):
        plan = plan_clip(0, EVAL, index)
        scene = render_clip(0, EVAL, index, keep_tracks=True)
        assert scene.audio.size == int(plan.duration_s * 16000) and scene.events == plan.events
        for source in (s for s in scene.sources if s.label):
            spans = sound_spans([(e.onset_s, e.offset_s) for e in plan.events if e.label == source.label],
                                plan.duration_s)
            np.testing.assert_allclose(source.units_s, spans, atol=1e-4)
            inside = np.zeros(scene.audio.size, bool)
            for on, off in spans:
                segment = source.track[int(on * 16000):int(off * 16000)]
                assert rms(segment[:int(0.05 * 16000)]) > 0 and rms(segment[-int(0.05 * 16000):]) > 0
                inside[int(on * 16000):int((off + 1.0) * 16000)] = True  # + reverberation tail
            if (~inside).any():
                assert rms(source.track[~inside]) < 0.01 * rms(source.track[inside])


def test_fill_span_sounds_over_the_whole_span() -> None:
    rng = np.random.default_rng(0)
    for name, family in FAMILIES.items():
        quiet = []
        for duration_s in (0.3, 0.3, 1.0, 1.0, 3.0, 3.0):
            x = fill_span(rng, family, 16000, duration_s)
            frames = x[: x.size // 800 * 800].reshape(-1, 800)  # 50 ms
            level = np.sqrt(np.mean(frames ** 2, axis=1))
            assert x.size == int(duration_s * 16000) and level[0] > 0.01 * rms(x), (name, duration_s)
            quiet.append(np.mean(level < 0.01 * rms(x)))  # 40 dB below the span's level
        assert np.mean(quiet) < 0.1 and max(quiet) < 0.5, (name, quiet)


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
    assert PRESETS["mini"].counts == {WEAK: 240, UNLABEL_IN_DOMAIN: 480, UNLABEL_OUT_OF_DOMAIN: 240,
                                      TEST: 288, EVAL: 880}
    assert PRESETS["full"].counts == {WEAK: 1578, UNLABEL_IN_DOMAIN: 14412, UNLABEL_OUT_OF_DOMAIN: 39999,
                                      TEST: 288, EVAL: 880}
    assert main(["--out", str(smoke_dataset), "--preset", "smoke", "--seed", "0"]) == 0
    captured = capsys.readouterr()
    assert "nothing to do" in captured.err and "took" in captured.out
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    assert main(["--out", str(tmp_path / "foreign"), "--preset", "smoke", "--quiet"]) == 2
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["--seed", "-5"], "--seed -5: expected an integer >= 0"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--workers", "0"], "--workers 0: expected an integer >= 1"),
    (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
])
def test_bad_arguments_are_one_line_before_anything_is_written(args: list[str], message: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    try:
        status = main(["--out", str(tmp_path / "set"), "--quiet", *args])
    except SystemExit as e:  # argparse's own refusals
        status = e.code
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "set").exists()
