"""The serial runner: `python -m kdsed.experiment` (its results table is tests/test_results.py)."""

from __future__ import annotations

from pathlib import Path


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from kdsed.experiment import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("distill:\n  pases: 2\n")
    out = tmp_path / "out"
    assert main(["--config", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kdsed.experiment: error: {bad}: distill.pases: unknown key; known keys here: "
                   "mask_weak_clips, passes, pseudo_gaussian_sigma, pseudo_median_window, pseudo_weak, "
                   "pseudo_weak_threshold, run_baseline, run_topline, variants"]
    smoke = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"
    assert main(["--config", str(smoke), "--passes", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "kdsed.experiment: error: distill.passes: must be >= 1"
    assert not out.exists()
