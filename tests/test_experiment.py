"""The serial runner: `python -m kdsed.experiment` (its results table is tests/test_results.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from kdsed.experiment import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("distill:\n  pases: 2\n")
    out = tmp_path / "out"
    assert main(["--config", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kdsed.experiment: error: {bad}: distill.pases: unknown key; known keys here: "
                   "mask_weak_clips, passes, pseudo_gaussian_sigma, pseudo_median_window, pseudo_strong, pseudo_teacher, "
                   "pseudo_weak, pseudo_weak_threshold, run_baseline, run_topline, variants"]
    smoke = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"
    assert main(["--config", str(smoke), "--passes", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "kdsed.experiment: error: distill.passes: must be >= 1"
    assert not out.exists()


def test_bad_jobs_and_synth_seed_are_one_line_and_exit_2(tmp_path, capsys):
    from kdsed.experiment import main

    smoke = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"
    out = tmp_path / "out"
    assert main(["--config", str(smoke), "--seeds", "2", "--jobs", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "kdsed.experiment: error: --jobs 0: expected a number of processes >= 1"
    assert main(["--config", str(smoke), "--synth-seed", "-1", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == ("kdsed.experiment: error: data.synth_seed: -1 is not a seed; "
                                               "expected an integer from 0 to 4294967295")
    assert not out.exists()


def test_prefixed_lines_prefix_every_line_once_across_partial_writes():
    import io

    from kdsed.experiment import PrefixedLines

    sink = io.StringIO()
    stream = PrefixedLines(sink, "[seed 2] ")
    stream.write("epoch 1")
    stream.write(" done\nepoch 2 done\nwarn")
    stream.write("ing\n")
    assert sink.getvalue() == "[seed 2] epoch 1 done\n[seed 2] epoch 2 done\n[seed 2] warning\n"


def test_with_threads_sets_both_trainings():
    from kdsed.config import ExperimentConfig, with_threads

    cfg = with_threads(ExperimentConfig(), 3)
    assert (cfg.tagging_train.num_threads, cfg.train.num_threads) == (3, 3)
    assert ExperimentConfig().train.num_threads == 0  # unchanged: torch's default


@pytest.mark.slow
def test_concurrent_seeds_give_what_each_seed_gives_alone_on_the_same_threads(tmp_path):
    """Two seeds in two processes (1 thread each) give, seed by seed, the reports of that seed run here alone
    on 1 thread: the same stages, F1s, intervals and PSDS, to the last digit (same machine, same threads)."""
    import json

    import torch

    from kdsed.config import SweepConfig, load_yaml, from_dict, to_dict
    from kdsed.experiment import run_experiment, run_seeds, with_threads

    smoke = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"
    cfg = load_yaml(SweepConfig, smoke)
    cfg = from_dict(SweepConfig, {**to_dict(cfg), "seeds": 2, "data": {**to_dict(cfg.data),
                                                                        "workdir": str(tmp_path / "work")}})
    runs = run_seeds(cfg, tmp_path / "seeds", jobs=2)
    assert (tmp_path / "seeds" / "results.md").read_text().startswith("## Eval macro F1 over 2 seeds")
    threads = torch.get_num_threads()
    try:
        alone = run_experiment(with_threads(cfg.seeded(1), 1), tmp_path / "alone")
    finally:
        torch.set_num_threads(threads)
    def scores(reports):
        return [(r.stage, r.val, r.eval, r.detection, r.comparisons, r.kd_topline_ratio) for r in reports]

    assert scores(runs[1]) == scores(alone)
    from kdsed.experiment import summarize_seeds

    best = summarize_seeds(tmp_path / "seeds").split("## Best epoch of each unit")[1]
    curve = json.loads((tmp_path / "alone" / "checkpoints" / "tagging" / "learning_curve.json").read_text())
    assert [e["epoch"] for e in curve] == [1, 2] and all(e["val_loss"] > 0 for e in curve)
    assert "\n| tagging | 2 | " in best and "\n| pass-2/shallow-median | 2 | " in best and best.count("of 2 |") == 8
    assert [r.val for r in runs[0]] != [r.val for r in runs[1]]  # the seeds differ


def test_summarize_rebuilds_the_tables_of_the_finished_seeds(tmp_path, capsys):
    import json
    from dataclasses import asdict

    from kdsed import schema
    from kdsed.config import ExperimentConfig, dump_yaml
    from kdsed.experiment import main, seeds_markdown
    from test_results import seeded_runs

    runs, cfg = seeded_runs(), ExperimentConfig()
    for i, run in enumerate(runs[:2]):  # two finished seeds; the third never finished
        folder = tmp_path / f"seed-{i}"
        folder.mkdir()
        dump_yaml(cfg.seeded(i), folder / schema.CONFIG_FILE)
        (folder / schema.RESULTS_JSON).write_text(json.dumps([asdict(r) for r in run]))
    (tmp_path / "seed-2").mkdir()
    assert main(["--summarize", str(tmp_path)]) == 0
    seeds = [cfg.train.seed, cfg.train.seed + 1]
    out = capsys.readouterr().out
    assert out.startswith(seeds_markdown(runs[:2], seeds) + "\n## Best epoch of each unit\n")
    assert out.endswith("| unit | epochs | seed 0 | seed 1 | best at the last epoch |\n|---|---|---|---|---|\n\n")  # no checkpoints
    assert "| target | seed 0 | seed 1 | met in |" in seeds_markdown(runs[:2], seeds)


def test_summarize_gives_older_seeds_the_pseudo_label_intervals_from_their_parquet_files(tmp_path, monkeypatch):
    """A finished seed of a version that kept no pseudo-label interval gets it from its hard pseudo-labels, and each
    pass its paired step from the pass before; a pass whose labels do not give the F1 it reported is left alone."""
    import numpy as np

    from kdsed import distill, schema
    from kdsed.config import ExperimentConfig
    from kdsed.constants import NUM_CLASSES
    from kdsed.experiment import HARD_LABELS, add_pseudo_label_steps
    from kdsed.pseudolabels import PseudoLabels, write_pseudo_labels
    from kdsed.results import StageReport
    from kdsed.search import apply_postprocessing
    from test_distill import CAT, DOG, FRAMES, tiny_data

    data = tiny_data()
    both = np.zeros((4, FRAMES, NUM_CLASSES), np.float32)
    both[2, 10:20, DOG], both[3, 5:30, CAT] = 1.0, 1.0
    events = apply_postprocessing(both, HARD_LABELS, data.feature_config, data.train.filenames,
                                  n_valid_frames=data.train.n_frames)
    monkeypatch.setattr(data, "hidden_reference", lambda: {f: events.get(f, []) for f in data.train.filenames})
    dog_only = both.copy()
    dog_only[3] = 0.0
    reports = []
    for k, labels in ((1, both), (2, dog_only), (3, dog_only)):
        write_pseudo_labels(tmp_path / schema.pseudo_labels_file(schema.pass_stage(k)),
                            PseudoLabels(data.train.filenames, labels, data.train.n_frames, {}))
        pseudo = distill.pseudo_label_counts(data, labels, HARD_LABELS).scores().to_json()
        reports.append(StageReport(f"pass {k}", {}, {}, 1.0, pseudo=pseudo))
    reports[2].pseudo = {**reports[2].pseudo, "macro": {**reports[2].pseudo["macro"], "f_measure": 0.3}}
    add_pseudo_label_steps(tmp_path, ExperimentConfig(), reports, data=data)
    assert reports[0].pseudo["macro"]["f_measure"] == 1.0 and schema.MACRO_INTERVAL in reports[0].pseudo
    assert schema.PSEUDO_VS_PREVIOUS not in reports[0].comparisons
    step = reports[1].comparisons[schema.PSEUDO_VS_PREVIOUS]
    assert step["against"] == "pass 1" and step["point"] == -0.5 and step["low"] <= -0.5 <= step["high"]
    assert schema.MACRO_INTERVAL not in reports[2].pseudo and not reports[2].comparisons
