"""The layout reader on the real DCASE 2018 Task 4 metadata, and kdsed.data.real_metadata / kdsed.data.stats.

The real files are found through KDSED_DCASE2018_METADATA, else in `../shared/dcase2018/metadata`
beside the repository (where CI puts them). The bundled copies (`kdsed/data/dcase2018/`) are
always there and are checked against the same figures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kdsed.constants import CLASSES, EVAL, TEST, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN, WEAK
from kdsed.data import MissingAudioError, load_dataset
from kdsed.data.real_metadata import BUNDLED_FILES, BUNDLED_ROOT, class_layouts, named_duration_s, real_metadata
from kdsed.data.stats import class_stats, rule_alterations
from kdsed.events import Event, MetadataError

REPO = Path(__file__).resolve().parents[2]
ENV = "KDSED_DCASE2018_METADATA"

#: Events per class of the real files (their README), class order.
TEST_EVENTS = (112, 40, 95, 122, 120, 28, 24, 76, 255, 36)
EVAL_EVENTS = (308, 56, 246, 445, 450, 37, 70, 161, 1499, 56)
WEAK_TAGS = (205, 134, 173, 184, 214, 103, 171, 343, 550, 167)


def _real_metadata_dir() -> Path | None:
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    shared = REPO.parent / "shared" / "dcase2018" / "metadata"
    return shared if shared.is_dir() else None


REAL = _real_metadata_dir()
needs_real = pytest.mark.skipif(REAL is None, reason=f"real DCASE 2018 metadata not found: set {ENV} or put it in "
                                                     f"{REPO.parent}/shared/dcase2018/metadata")


@needs_real
def test_reader_loads_every_real_file_with_audio_absent() -> None:
    ds = load_dataset(REAL.parent, check_audio=False)
    assert ds.counts() == {WEAK: 1578, UNLABEL_IN_DOMAIN: 14412, UNLABEL_OUT_OF_DOMAIN: 39999, TEST: 288, EVAL: 880}
    weak = {c.filename: c.weak_labels for c in ds.subset(WEAK)}
    assert weak["YKK227gPpRn4_30.000_40.000.wav"] == ("Alarm_bell_ringing", "Speech")
    assert sum(len(tags) == 3 for tags in weak.values()) == 74 and len(set(weak.values())) == 32
    assert tuple(sum(c in tags for tags in weak.values()) for c in CLASSES) == WEAK_TAGS
    in_domain = ds.subset(UNLABEL_IN_DOMAIN)
    assert in_domain[0].filename == "Y--CE2f-ttEQ_30.000_40.000.wav" and in_domain[0].weak_labels is None
    assert ds.subset(UNLABEL_OUT_OF_DOMAIN)[-1].audio_path.parent == REAL.parent / "audio/train/unlabel_out_of_domain"
    test, eval_ = ds.reference_table(TEST), ds.reference_table(EVAL)
    assert sum(map(len, test.values())) == 908 and not any(not v for v in test.values())
    assert sum(map(len, eval_.values())) == 3328
    empty = sorted(name for name, events in eval_.items() if not events)
    assert len(empty) == 15 and "YU0Cg_t_3TdI_30.000_40.000.wav" in empty
    assert tuple(s.events for s in class_stats(test).values()) == TEST_EVENTS
    assert tuple(s.events for s in class_stats(eval_).values()) == EVAL_EVENTS
    assert test["Y00pbt6aJV8Y_350.000_360.000.wav"] == [Event(0.0, 9.971, "Vacuum_cleaner")]


@needs_real
def test_real_files_without_audio_are_refused_when_audio_is_checked() -> None:
    with pytest.raises(MissingAudioError, match=r"test\.csv: 288 of 288 listed clips have no audio file"):
        load_dataset(REAL.parent, subsets=[TEST])


@needs_real
@pytest.mark.parametrize("subset", sorted(BUNDLED_FILES))
def test_bundled_copies_are_the_real_files(subset: str) -> None:
    relative = BUNDLED_FILES[subset].removeprefix("metadata/")
    assert (BUNDLED_ROOT / BUNDLED_FILES[subset]).read_bytes() == (REAL / relative).read_bytes()
    licence = REAL.parent / "LICENSE"
    if licence.is_file():
        assert (BUNDLED_ROOT / "LICENSE").read_bytes() == licence.read_bytes()


def test_bundled_metadata_has_the_real_figures() -> None:
    real = real_metadata()
    assert len(real.weak_tags) == 1578 and tuple(real.tag_counts().values()) == WEAK_TAGS
    assert {s: (len(t), sum(map(len, t.values()))) for s, t in real.strong.items()} == {TEST: (288, 908),
                                                                                       EVAL: (880, 3328)}
    assert sum(not v for v in real.strong[EVAL].values()) == 15
    assert "MIT License" in (BUNDLED_ROOT / "LICENSE").read_text()
    assert "5c5a0f6a" in (BUNDLED_ROOT / "README.md").read_text()


def test_clip_lengths_from_real_names() -> None:
    real = real_metadata()
    assert named_duration_s("YSb0169-lqLs_0.000_9.000.wav") == 9.0
    assert named_duration_s("Y-Zjgm_sZd10_0.000_4.000.wav") == 4.0
    lengths = {s: [named_duration_s(name) for name in t] for s, t in real.strong.items()}
    assert sum(x < 10 for x in lengths[TEST]) == 3 and sum(x < 10 for x in lengths[EVAL]) == 14
    assert sum(named_duration_s(name) < 10 for name in real.weak_tags) == 29 and min(lengths[TEST]) == 3.0
    past_end = [(name, e) for s, t in real.strong.items() for name, events in t.items() for e in events
                if e.offset_s > named_duration_s(name)]
    assert len(past_end) == 4 and max(e.offset_s for _, e in past_end) == 10.115  # 10 s clips only
    with pytest.raises(MetadataError, match="_<start>_<end>.wav"):
        named_duration_s("clip.wav")


def test_class_layouts_are_the_events_of_one_class_per_clip() -> None:
    table = {"a.wav": [Event(1.0, 2.0, "Dog"), Event(0.5, 0.9, "Dog"), Event(3.0, 4.0, "Cat")], "b.wav": [],
             "c.wav": [Event(0.0, 10.0, "Frying")]}
    layouts = class_layouts(table)
    assert layouts["Dog"] == [(Event(0.5, 0.9, "Dog"), Event(1.0, 2.0, "Dog"))]
    assert layouts["Frying"] == [(Event(0.0, 10.0, "Frying"),)] and layouts["Speech"] == []
    real = class_layouts(real_metadata().strong[TEST])
    assert [len(real[c]) for c in ("Speech", "Frying")] == [102, 24]  # clips with the class (as awk counts)


def test_annotation_rules_alter_few_real_events() -> None:
    real = real_metadata()
    assert rule_alterations(real.strong[TEST]) == (13, 5)  # same-class spans given both whole and in parts
    assert rule_alterations(real.strong[EVAL]) == (8, 5)  # gaps under 150 ms, offsets past 10 s
    stats = class_stats(real.strong[EVAL])
    assert stats["Dishes"].median_s == pytest.approx(0.38, abs=0.005) and round(stats["Dog"].short_share, 2) == 0.30
