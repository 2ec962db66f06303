"""kdsed.data.stats: per-class event statistics of a synthetic set against the real annotations."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdsed.constants import EVAL, TEST
from kdsed.data.real_metadata import real_metadata
from kdsed.data.stats import class_stats, format_comparison, main, synthetic_tables
from kdsed.events import Event


def test_class_stats_counts_medians_and_short_shares() -> None:
    table = {"a.wav": [Event(0.0, 0.3, "Dog"), Event(1.0, 2.0, "Dog"), Event(3.0, 3.4, "Dog")], "b.wav": []}
    dog = class_stats(table)["Dog"]
    assert (dog.events, dog.median_s, dog.short_share) == (3, pytest.approx(0.4), pytest.approx(2 / 3))
    assert class_stats(table)["Cat"].events == 0
    text = format_comparison({"x": table})
    assert "| Dog | 3 · 0.40 s · 67 % |" in text and "| Cat | 0 |" in text and "| events per clip | 1.50 |" in text


def test_command_compares_a_synthetic_set_with_the_real_files(smoke_dataset: Path, capsys) -> None:
    assert main([str(smoke_dataset)]) == 0
    out = capsys.readouterr().out
    real = real_metadata()
    assert "| Speech | 255 · 1.20 s · 8 % | 1,499 · 1.13 s · 14 % |" in out  # real test, real eval
    assert "would alter 13 of 908 events in 5 clips" in out and "would alter 8 of 3328 events in 5 clips" in out
    tables = synthetic_tables(smoke_dataset)
    for subset in (TEST, EVAL):  # the synthetic columns are the real events of the chosen clips
        assert tables[subset] == {name: sorted(real.strong[subset][name]) for name in tables[subset]}


def test_command_refuses_a_folder_without_a_set(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"python -m kdsed.data.stats: error: {tmp_path}: no metadata")
