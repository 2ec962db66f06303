"""`kdsed.compare`: two sweeps' stages compared on the same eval clips, paired."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kdsed.compare import compare_sweeps, format_comparison, main
from kdsed.constants import NUM_CLASSES
from kdsed.metrics import ClipCounts, bootstrap_counts, paired_difference_counts


def random_counts(rng: np.random.Generator, n_clips: int = 120, hit_rate: float = 0.5) -> ClipCounts:
    n_ref = rng.integers(0, 4, size=(n_clips, NUM_CLASSES))
    n_sys = rng.integers(0, 4, size=(n_clips, NUM_CLASSES))
    tp = np.minimum(n_ref, n_sys) * (rng.random((n_clips, NUM_CLASSES)) < hit_rate)
    return ClipCounts(tuple(f"clip{i:04d}.wav" for i in range(n_clips)), tp.astype(np.int64), n_sys, n_ref)


def write_sweep(folder: Path, counts: dict[str, ClipCounts], synth_seed: int = 0) -> Path:
    (folder / "stages").mkdir(parents=True)
    for stage, c in counts.items():
        (folder / "stages" / f"{stage}.json").write_text(json.dumps({"report": {}, "eval_counts": c.to_json()}))
    (folder / "state.json").write_text(json.dumps({"results": {"data.synth_preset": "mini",
                                                               "data.synth_seed": synth_seed,
                                                               "data.workdir": str(folder)}}))
    return folder


def test_a_sweep_against_itself_differs_by_exactly_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    counts = {"pass-2": random_counts(rng), "tagging": random_counts(rng)}
    a = write_sweep(tmp_path / "a", counts)
    rows = compare_sweeps(a, a)
    assert [r.stage for r in rows] == ["tagging", "pass-2"]  # table order
    for r in rows:
        assert r.difference.point == r.difference.low == r.difference.high == 0.0
        assert r.a == r.b and r.share_a_better == 0.0


def test_the_difference_is_the_paired_bootstrap_of_the_stage_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    better, worse = random_counts(rng, hit_rate=0.8), random_counts(rng, hit_rate=0.3)
    worse = ClipCounts(better.filenames, np.minimum(worse.tp, better.n_ref), worse.n_sys, better.n_ref)
    a = write_sweep(tmp_path / "a", {"pass-1": better, "topline": better})
    b = write_sweep(tmp_path / "b", {"pass-1": worse})  # only the stages both have are compared
    [row] = compare_sweeps(a, b)
    expected = paired_difference_counts(better, worse)
    assert row.stage == "pass-1"
    assert row.difference == expected.macro_f1 and row.share_a_better == expected.share_a_better
    assert row.a == bootstrap_counts(better).macro_f1 and row.b == bootstrap_counts(worse).macro_f1
    assert row.difference.low > 0  # clearly better here
    assert row.difference.point == pytest.approx(better.scores().macro.f_measure - worse.scores().macro.f_measure)
    table = format_comparison([row], "long", "laptop")
    assert table.splitlines()[0].startswith("| stage | long [95 % CI] | laptop [95 % CI] | long - laptop")
    assert table.splitlines()[2].startswith(f"| pass 1 | {100 * row.a.point:.2f} [")


def test_different_clips_or_data_are_refused(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(2)
    c = random_counts(rng)
    fewer = ClipCounts(c.filenames[:-1], c.tp[:-1], c.n_sys[:-1], c.n_ref[:-1])
    a = write_sweep(tmp_path / "a", {"pass-1": c})
    with pytest.raises(ValueError, match=r"^pass-1: the two sweeps were scored on different eval clips or reference events \(120 and 119 clips\)"):
        compare_sweeps(a, write_sweep(tmp_path / "b", {"pass-1": fewer}))
    other_seed = write_sweep(tmp_path / "c", {"pass-1": c}, synth_seed=1)
    with pytest.raises(ValueError, match=r"^the two sweeps ran on different data \(data\.synth_seed: 0 and 1\)"):
        compare_sweeps(a, other_seed)
    assert main([str(a), str(tmp_path / "nowhere")]) == 2
    assert "no stages/ folder; expected a sweep's folder" in capsys.readouterr().err
