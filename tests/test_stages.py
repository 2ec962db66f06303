"""The stages written once: plans of units, and `score_stage`, through which both runners make their reports.

The slow tests read the session's `finished_sweep` (conftest.py: a smoke sweep killed in pass 2 and
resumed) and check that the serial path gives the sweep's stage reports field by field: first from the
sweep's own trained units (serial search instead of Ray Tune), then from a whole serial run
(`kdsed.experiment.run_experiment`) that trains everything again in this process.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from support.sweep_runs import sweep_folder

from kdsed import schema, stages
from kdsed.config import DistillConfig, ExperimentConfig, SweepConfig, VariantSpec, load_yaml


def test_units_of_every_stage():
    cfg = ExperimentConfig(distill=DistillConfig(passes=3, variants=(VariantSpec("deep", "none"),
                                                                     VariantSpec("shallow", "median"))))
    assert [(u.name, u.targets, u.model.name) for u in stages.first_units(cfg)] == [
        ("baseline", "weak", "baseline"), ("tagging", "weak", "deep")]
    # With hidden labels (the synthetic set) stage 0 trains the topline too: both models, the passes' budget.
    assert [(u.name, u.targets, u.model.name, u.train == cfg.train) for u in stages.first_units(cfg, hidden_labels=True)] == [
        ("baseline", "weak", "baseline", False), ("topline/deep", "hidden-strong", "deep", True),
        ("topline/shallow", "hidden-strong", "shallow", True), ("tagging", "weak", "deep", False)]
    [second] = stages.baseline_second_stage(cfg)
    assert (second.name, second.targets, second.model.name) == ("baseline-2stage", "baseline-tags", "baseline")
    assert (second.train.strong_loss_weight, second.train.weak_loss_weight) == (1.0, 0.0)
    no_baseline = replace(cfg, distill=replace(cfg.distill, run_baseline=False, run_topline=False))
    assert [u.name for u in stages.first_units(no_baseline, hidden_labels=True)] == ["tagging"]
    assert stages.baseline_second_stage(no_baseline) == []
    [first] = stages.pass_units(cfg, 1)
    assert (first.name, first.targets, first.train) == ("pass-1/deep", "pseudo-weak", cfg.tagging_train)
    assert [(u.name, u.stage, u.variant, u.folder_name, u.model.name, u.smoothing, u.train == cfg.train)
            for u in stages.pass_units(cfg, 3)] == [
        ("pass-3/deep-none", "pass-3", "deep-none", "pass-3__deep-none", "deep", "none", True),
        ("pass-3/shallow-median", "pass-3", "shallow-median", "pass-3__shallow-median", "shallow", "median", True)]


def test_a_unit_without_the_labels_it_trains_on_is_refused():
    cfg = ExperimentConfig()
    with pytest.raises(ValueError, match="pass-1/deep: pass 1 trains on the pseudo-weak labels"):
        stages.training_set(stages.pass_units(cfg, 1)[0], None, cfg.distill)
    with pytest.raises(ValueError, match="pass-2/deep-none: a variant trains on the previous pass's"):
        stages.training_set(stages.pass_units(cfg, 2)[0], None, cfg.distill)
    with pytest.raises(ValueError, match="baseline-2stage: stage 2 of the baseline trains on stage 1's tags"):
        stages.training_set(stages.baseline_second_stage(cfg)[0], None, cfg.distill)


def test_a_pass_hands_on_what_its_teacher_labels():
    """`pseudo_labels` turns the teacher's training-clip probabilities into targets under the teacher's own choice;
    without a teacher, the per-class winners' merged outputs under their choices."""
    from kdsed import distill
    from kdsed.constants import NUM_CLASSES
    from kdsed.results import StageReport
    from kdsed.search import PostprocessChoice
    from test_distill import FRAMES, tiny_data

    data = tiny_data()
    at = lambda t: PostprocessChoice(median_windows=(1,) * NUM_CLASSES, gaussian_sigmas=(0.0,) * NUM_CLASSES,  # noqa: E731
                                     thresholds=(t,) * NUM_CLASSES, f1=(0.5,) * NUM_CLASSES)
    ramp = np.broadcast_to(np.linspace(0, 1, FRAMES, dtype=np.float32)[None, :, None], (4, FRAMES, NUM_CLASSES))
    winners = distill.Outputs(ramp.copy(), None, None)
    cfg = DistillConfig()
    outcome = stages.StageOutcome("pass-2", {}, ["deep-none"] * NUM_CLASSES, at(0.5), winners,
                                  StageReport("pass 2", {}, {}, 0.0), {})
    labels = outcome.pseudo_labels(data, cfg)
    np.testing.assert_array_equal(labels.probs, distill.pseudo_strong_labels(data, ramp, at(0.5), cfg))
    assert labels.meta["teacher"] == "winners" and labels.probs[0, :, 0].sum() == FRAMES // 2
    outcome.teacher = stages.Teacher("ensemble", distill.Outputs(ramp * 0.5, None, None), at(0.25))
    labels = outcome.pseudo_labels(data, cfg)
    assert labels.meta["teacher"] == "ensemble" and labels.meta["winners"]["Dog"] == "deep-none"
    np.testing.assert_array_equal(labels.probs, distill.pseudo_strong_labels(data, ramp * 0.5, at(0.25), cfg))
    assert stages.teacher_grid(ExperimentConfig()) is None
    ensemble = ExperimentConfig(distill=DistillConfig(pseudo_teacher="ensemble"))
    assert stages.teacher_grid(ensemble) is ensemble.postprocess


# ---- on the finished smoke sweep -------------------------------------------------------------------


def sweep_setup(finished_sweep) -> tuple[SweepConfig, Path]:
    """The fixture sweep's config and its folder in the storage."""
    tmp, _, final = finished_sweep
    return load_yaml(SweepConfig, tmp / "sweep.yaml"), sweep_folder(tmp, final["sweep_id"])


def saved_stage(folder: Path, stage: str) -> dict:
    """A stage as the sweep saved it, without its wall time."""
    saved = json.loads((folder.parents[1] / schema.stage_path(folder.name, stage)).read_text())
    saved["report"].pop("wall_time_s")
    return saved


def comparable(outcome: stages.StageOutcome) -> dict:
    report = asdict(outcome.report)
    report.pop("wall_time_s")
    return {"report": report, "choice": outcome.choice.to_dict(), "winners": outcome.winners,
            "eval_counts": outcome.eval_counts.to_json(),
            "pseudo_counts": outcome.pseudo_counts.to_json() if outcome.pseudo_counts is not None else None}


@pytest.mark.slow
def test_score_stage_on_the_sweeps_units_gives_the_sweeps_reports(finished_sweep):
    """The sweep's trained units, scored again by the serial path (whole-grid search, no Ray Tune)."""
    from kdsed import distill
    from kdsed.prepare import prepare_data
    from kdsed.sweep.storage import Storage
    from kdsed.sweep.units import read_unit

    cfg, folder = sweep_setup(finished_sweep)
    data = prepare_data(cfg.data, cfg.features, progress=False)
    storage = Storage(str(folder.parents[1]))
    sweep_id = folder.name

    def score(stage: str, specs: list, **kw) -> stages.StageOutcome:
        units = {s.variant: distill.TrainedUnit(s.name, *_stored(s)) for s in specs}
        return stages.score_stage(stage, units, stages.search_choices(units, data, cfg.postprocess), data, **kw)

    def _stored(spec):
        unit = read_unit(storage, schema.unit_folder(sweep_id, spec.name), spec.train)
        return unit.result, unit.outputs

    first = stages.first_units(cfg, hidden_labels=True)
    pseudo_weak = distill.pseudo_weak_targets(data, _stored(first[-1])[1], cfg.distill)
    earlier, earlier_pseudo = {}, {}

    def scored(stage: str, specs: list, **kw) -> stages.StageOutcome:
        outcome = score(stage, specs, earlier=earlier, earlier_pseudo=earlier_pseudo, **kw)
        earlier[stage] = outcome.eval_counts
        if outcome.pseudo_counts is not None:
            earlier_pseudo[stage] = outcome.pseudo_counts
        return outcome

    outcomes = [scored(schema.BASELINE, first[:1]), scored(schema.TOPLINE, first[1:3]),
                scored(schema.TAGGING, first[3:], pseudo_weak=pseudo_weak),
                scored(schema.BASELINE_TWO_STAGE, stages.baseline_second_stage(cfg)),
                *(scored(schema.pass_stage(k), stages.pass_units(cfg, k)) for k in range(1, cfg.distill.passes + 1))]
    for outcome in outcomes:
        assert comparable(outcome) == saved_stage(folder, outcome.stage), outcome.stage
    # The passes' paired comparisons: against the stage before, the two-stage baseline and the topline; their
    # pseudo-labels against the previous pass's (pass 1 has none before it).
    assert set(outcomes[-1].report.comparisons) == set(schema.COMPARISONS)
    assert schema.PSEUDO_VS_PREVIOUS not in outcomes[4].report.comparisons
    assert outcomes[-1].report.kd_topline_ratio is not None
    # What the sweep hands from pass to pass: its Parquet files hold the merged outputs' labels (`pseudo_strong`).
    from kdsed.pseudolabels import read_pseudo_labels

    for outcome in outcomes[4:]:
        written = read_pseudo_labels(folder / schema.pseudo_labels_file(outcome.stage),
                                     frames=data.train.features.shape[1], order=data.train.filenames)
        expected = outcome.pseudo_labels(data, cfg.distill, sweep_id=sweep_id)
        np.testing.assert_array_equal(written.probs, expected.probs)
        assert {k: v for k, v in written.meta.items() if k not in ("schema_version", "classes")} == \
            json.loads(json.dumps(expected.meta))
    assert outcomes[2].report.pseudo is None or set(outcomes[2].report.pseudo) == {schema.TAGGING}
    # The raw scores a stage hands out are its merged outputs; its collar-based F1 (sed_scores_eval) is its event F1.
    from kdsed.scores_io import read_scores

    for outcome in outcomes:
        for subset, expected_scores in outcome.frame_scores(data).items():
            written = read_scores(folder / schema.stage_scores_folder(outcome.stage) / schema.scores_file(subset))
            assert written.filenames == expected_scores.filenames and written.meta["stage"] == outcome.stage
            np.testing.assert_array_equal(written.scores, expected_scores.scores)
        report = outcome.report
        collar = report.detection["collar_f1"]
        assert [collar["class_wise"][c]["n_sys"] for c in collar["class_wise"]] == \
            [report.eval["class_wise"][c]["n_sys"] for c in collar["class_wise"]]
        assert collar["macro"]["f_measure"] == pytest.approx(report.eval["macro"]["f_measure"], abs=1e-12)
        assert all(v is None or 0 <= v <= 1 for v in (report.detection["psds1"]["value"],
                                                     report.detection["psds2"]["value"]))


@pytest.mark.slow
def test_serial_runner_gives_the_sweeps_reports(finished_sweep, tmp_path):
    """`run_experiment` trains every unit again in this process: the same reports, choices and pseudo-labels."""
    import torch

    from kdsed.experiment import run_experiment
    from kdsed.pseudolabels import read_pseudo_labels

    cfg, folder = sweep_setup(finished_sweep)
    # The sweep's units trained with as many threads as there are CPUs (one unit at a time: `sweep_config`).
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        reports = run_experiment(cfg, tmp_path / "serial")
    finally:
        torch.set_num_threads(threads)
    expected = [saved_stage(folder, s)["report"] for s in schema.expected_stages(cfg.distill.passes, True, True)]
    got = [{k: v for k, v in asdict(r).items() if k != "wall_time_s"} for r in reports]
    assert [r["stage"] for r in got] == ["baseline", "baseline 2stage", "tagging", "pass 1", "pass 2", "topline"]
    for mine, theirs in zip(got, expected):
        assert mine == theirs, mine["stage"]
    for k in range(1, cfg.distill.passes + 1):
        stage = schema.pass_stage(k)
        serial = read_pseudo_labels(tmp_path / "serial" / schema.pseudo_labels_file(stage))
        sweep = read_pseudo_labels(folder / schema.pseudo_labels_file(stage))
        assert serial.filenames == sweep.filenames
        np.testing.assert_array_equal(serial.probs, sweep.probs)
        assert serial.meta == {key: v for key, v in sweep.meta.items() if key != "sweep_id"}


@pytest.mark.slow
def test_an_ensemble_teacher_hands_on_the_mean_of_the_pass_and_reports_its_labels(finished_sweep):
    """Pass 2 of the smoke sweep scored again with `pseudo_teacher: ensemble`: the same winners and eval scores,
    but its pseudo-labels (and their reported F1 against the hidden labels) are the mean of its two variants'
    probabilities under the whole-grid search's choice for that mean."""
    from kdsed import distill
    from kdsed.prepare import prepare_data
    from kdsed.sweep.storage import Storage
    from kdsed.sweep.units import read_unit

    cfg, folder = sweep_setup(finished_sweep)
    data = prepare_data(cfg.data, cfg.features, progress=False)
    storage = Storage(str(folder.parents[1]))
    specs = stages.pass_units(cfg, 2)
    units = {}
    for spec in specs:
        stored = read_unit(storage, schema.unit_folder(folder.name, spec.name), spec.train)
        units[spec.variant] = distill.TrainedUnit(spec.name, stored.result, stored.outputs)
    choices = stages.search_choices(units, data, cfg.postprocess)
    winners = stages.score_stage("pass-2", units, choices, data)
    ensemble = stages.score_stage("pass-2", units, choices, data, ensemble_grid=cfg.postprocess)
    assert winners.teacher is None and ensemble.teacher.kind == "ensemble"
    assert ensemble.winners == winners.winners and ensemble.report.eval == winners.report.eval
    mean = np.mean([u.outputs.train for u in units.values()], axis=0)
    np.testing.assert_allclose(ensemble.teacher.outputs.train, mean, rtol=1e-6)
    assert ensemble.teacher.choice == distill.search_choice(data, ensemble.teacher.outputs.test, cfg.postprocess)
    expected = distill.pseudo_label_counts(data, ensemble.teacher.outputs.train, ensemble.teacher.choice)
    assert ensemble.pseudo_counts.to_json() == expected.to_json()
    assert ensemble.report.pseudo["macro"]["f_measure"] == expected.scores().macro.f_measure
    labels = ensemble.pseudo_labels(data, cfg.distill)
    assert labels.meta["teacher"] == "ensemble"
    np.testing.assert_array_equal(labels.probs, distill.pseudo_strong_labels(
        data, ensemble.teacher.outputs.train, ensemble.teacher.choice, cfg.distill))
