"""`kdsed.ablations`: the table of paired before/after rows, and the cache of trained units it keeps."""

from __future__ import annotations

import numpy as np
import pytest

from kdsed import schema
from kdsed.ablations import Arm, _load_unit, _row, _save_unit, format_ablations
from kdsed.config import ModelConfig, TrainConfig
from kdsed.constants import NUM_CLASSES
from kdsed.distill import Outputs, TrainedUnit, scores_with_interval
from kdsed.metrics import ClipCounts
from kdsed.models import build_model
from kdsed.stages import UnitSpec
from kdsed.train import EpochLog, VariantResult


def counts(tp_per_clip: list[int], n_ref: int = 2) -> ClipCounts:
    """Clips with `n_ref` Dog events each, of which the system finds `tp` (and outputs nothing else)."""
    n = len(tp_per_clip)
    tp = np.zeros((n, NUM_CLASSES), np.int64)
    tp[:, 0] = tp_per_clip
    ref = np.zeros((n, NUM_CLASSES), np.int64)
    ref[:, 0] = n_ref
    return ClipCounts(tuple(f"c{i}.wav" for i in range(n)), tp, tp.copy(), ref)


def arm(label: str, c: ClipCounts) -> Arm:
    return Arm(label, scores_with_interval(c), c, best_epoch=3, epochs=5, val_losses=[0.5, 0.4])


def test_rows_are_paired_differences_after_minus_before():
    before, after = counts([0, 1, 1, 2] * 10), counts([1, 2, 1, 2] * 10)
    row = _row("windows", "windows to 121 frames", arm("short", before), arm("long", after))
    f1_before = before.scores().class_wise[0].f_measure
    f1_after = after.scores().class_wise[0].f_measure
    assert row.difference["point"] == f1_after - f1_before  # only Dog has references: macro F1 = Dog's F1
    assert row.difference["low"] <= row.difference["point"] <= row.difference["high"]
    same = _row("same", "nothing", arm("a", before), arm("b", before))
    assert (same.difference["point"], same.difference["low"], same.difference["high"]) == (0.0, 0.0, 0.0)
    table = format_ablations([row]).splitlines()
    low, high = row.before.eval_scores[schema.MACRO_INTERVAL]["f_measure"]
    assert table[2].startswith(f"| windows to 121 frames | short: {100 * f1_before:.2f} [{100 * low:.2f}, "
                               f"{100 * high:.2f}] | long: {100 * f1_after:.2f} ")
    assert table[2].endswith(f"| {100 * row.difference['point']:+.2f} [{100 * row.difference['low']:+.2f}, "
                             f"{100 * row.difference['high']:+.2f}] | 3/5, 3/5 |")


def test_a_trained_unit_survives_the_cache(tmp_path):
    model_cfg, train_cfg = ModelConfig(name="shallow", width=0.125), TrainConfig(epochs=2)
    state = build_model(model_cfg).state_dict()
    rng = np.random.default_rng(0)
    outputs = Outputs(*(rng.random(shape, dtype=np.float32) for shape in ((3, 8, 10), (2, 8, 10), (2, 8, 10))),
                      train_clip=rng.random((3, 10), dtype=np.float32), test_clip=None)
    result = VariantResult(model_cfg, train_cfg, state, [EpochLog(1, 0.7, 0.6, 100.0, 1.5)], 1, 100.0, 1.5)
    spec = UnitSpec("topline/shallow", "hidden-strong", model_cfg, train_cfg)
    _save_unit(tmp_path / "u.pt", TrainedUnit(spec.name, result, outputs))
    back = _load_unit(tmp_path / "u.pt", spec)
    for name in ("train", "test", "eval", "train_clip"):
        np.testing.assert_array_equal(getattr(back.outputs, name), getattr(outputs, name))
    assert back.outputs.test_clip is None
    assert back.result.history == result.history and back.result.best_epoch == 1
    assert all(np.array_equal(back.result.state_dict[k], v) for k, v in state.items())


def test_the_precision_ablation_trains_each_topline_unit_in_fp32_and_bf16(monkeypatch, tmp_path):
    from kdsed import ablations
    from kdsed.config import SweepConfig

    trained: list[UnitSpec] = []

    def fake_train(self, spec: UnitSpec, **targets) -> TrainedUnit:
        trained.append(spec)
        rate = 150.0 if spec.train.mixed_precision == "bf16" else 100.0
        result = VariantResult(spec.model, spec.train, {}, [], 1, rate, 1.0)
        return TrainedUnit(spec.name, result, Outputs(None, None, None, None, None))

    monkeypatch.setattr(ablations.Ablations, "train", fake_train)
    monkeypatch.setattr(ablations, "_arm", lambda label, data, unit, grid: arm(label, counts([1, 2] * 10)))
    data = type("Data", (), {"hidden_reference": lambda self: object()})()
    rows = ablations.Ablations(SweepConfig(), data, tmp_path).precision()
    assert [(s.stage, s.model.name, s.train.mixed_precision) for s in trained] == [
        (schema.TOPLINE, "deep", "none"), (schema.TOPLINE, "deep", "bf16"),
        (schema.TOPLINE, "shallow", "none"), (schema.TOPLINE, "shallow", "bf16")]
    assert [r.name for r in rows] == ["precision-deep", "precision-shallow"]
    assert rows[0].note.startswith("training clips/s: fp32 100.0, bf16 150.0 (1.50x;")
    assert rows[0].difference["point"] == 0.0


def test_bad_threads_and_synth_seed_are_one_line_and_exit_2(tmp_path, capsys):
    from kdsed.ablations import main
    from support.sweep_runs import REPO

    out, smoke = tmp_path / "out", str(REPO / "sweeps" / "smoke.yaml")
    assert main(["--config", smoke, "--threads", "0", "--out", str(out), "--only", "teacher"]) == 2
    assert capsys.readouterr().err.strip() == "kdsed.ablations: error: --threads 0: expected a number of threads >= 1"
    assert main(["--config", smoke, "--synth-seed", "-1", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == ("kdsed.ablations: error: data.synth_seed: -1 is not a seed; "
                                               "expected an integer from 0 to 4294967295")
    assert not out.exists()


@pytest.mark.slow
def test_the_teacher_ablation_trains_pass_2_once_and_pass_3_per_teacher(smoke_workdir, tmp_path):
    """On the smoke set, for real: pass 2's variants are trained once; pass 3's once per teacher. The ensemble row's
    arm is the mean of pass 2's variants scored on eval; the label rows pair both teachers over the training clips.
    Run again, every unit comes from the cache and the rows are the same."""
    from dataclasses import replace

    from kdsed import ablations, distill, stages
    from kdsed.config import SweepConfig, load_yaml
    from kdsed.prepare import prepare_data
    from support.sweep_runs import REPO

    cfg = load_yaml(SweepConfig, REPO / "sweeps" / "smoke.yaml")
    cfg = replace(cfg, data=replace(cfg.data, workdir=str(smoke_workdir)))
    data = prepare_data(cfg.data, cfg.features, progress=False)
    rows = ablations.Ablations(cfg, data, tmp_path).teacher()
    assert [r.name for r in rows] == ["teacher-ensemble-eval", "teacher-labels-pass-2", "teacher-pass-3",
                                      "teacher-labels-pass-3"]
    variants = len(cfg.distill.variants)
    # tagger, pass 1, pass 2's variants, pass 3's variants twice
    assert len(list((tmp_path / "units").glob("*.pt"))) == 2 + variants + 2 * variants
    again = ablations.Ablations(cfg, data, tmp_path)
    second = {s.variant: again.train(replace(s, name=f"{s.name}-hard-from-soft"))
              for s in stages.pass_units(cfg, 2)}  # from the cache: no training targets needed
    mean = distill.ensemble_outputs({v: distill.VariantOutcome(v, u.result, u.outputs, None) for v, u in second.items()})
    ens = stages.ensemble_teacher({v: distill.VariantOutcome(v, u.result, u.outputs, None) for v, u in second.items()},
                                  data, cfg.postprocess)
    expected = distill.eval_counts(data, mean.eval, ens.choice)
    assert rows[0].after.counts.to_json() == expected.to_json()
    for row in rows:  # each arm's interval holds its point; each difference is after - before
        for a in (row.before, row.after):
            low, high = a.eval_scores[schema.MACRO_INTERVAL]["f_measure"]
            assert low <= a.eval_scores["macro"]["f_measure"] <= high
        assert row.difference["low"] <= row.difference["point"] <= row.difference["high"]
        after, before = row.after.counts.scores().macro.f_measure, row.before.counts.scores().macro.f_measure
        assert abs(row.difference["point"] - (after - before)) < 1e-12
    assert rows[2].note.startswith("winners teacher: eval F1 pass 2 -> 3 ")
    assert "-" in format_ablations(rows).splitlines()[2].split("|")[-2]  # no best epoch for a stage's arms
    assert [r.difference for r in again.teacher()] == [r.difference for r in rows]
    assert len(list((tmp_path / "units").glob("*.pt"))) == 2 + 3 * variants
