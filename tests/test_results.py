"""The results table (the layout of the README, of a sweep's results.md and of the serial runner's)."""

from __future__ import annotations

from kdsed.constants import CLASSES
from kdsed.results import StageReport, detection_table, format_table, short_class_name, variant_label

HEADER = ("| stage | F1 [95 % CI] | P | R | Alarm | Blender | Cat | Dishes | Dog | Shaver | Frying | Water | Speech | Vacuum "
          "| pseudo-label F1 | PSDS1 | PSDS2 | wall s |")


def scores(f1: float, p: float, r: float, first_class_f1: float = 0.0) -> dict:
    """Event scores in `EventScores.to_json` form: class k has F1 `first_class_f1 + k / 100`."""
    fpr = {"f_measure": f1, "precision": p, "recall": r}
    return {"macro": fpr, "micro": fpr,
            "class_wise": {c: {"f_measure": first_class_f1 + k / 100, "precision": None, "recall": None}
                           for k, c in enumerate(CLASSES)}}


def reports() -> list[StageReport]:
    variants = {"deep-none": {"val": scores(0.20, 0, 0), "eval": scores(0.11, 0.12, 0.13, 0.5)},
                "shallow-median+gaussian": {"val": scores(0.25, 0, 0), "eval": scores(0.14, 0.15, 0.16, 0.6)}}
    return [
        StageReport("baseline", scores(0.1, 0, 0), scores(0.0578, 0.036, 0.2286), wall_time_s=12.4),
        StageReport("tagging", scores(0.1, 0, 0), scores(0.0871, 0.0671, 0.1727, 0.1), wall_time_s=221.6,
                    pseudo={"tagging": {"f_measure": 0.7}}),
        StageReport("pass 1", scores(0.1, 0, 0), scores(0.0405, None, 0.2059), wall_time_s=85.0,
                    pseudo=scores(0.0388, 0, 0), winners=["deep"] * 10),
        StageReport("pass 2", scores(0.3, 0, 0), scores(0.1320, 0.1150, 0.2380, 0.2), wall_time_s=319.2,
                    pseudo=scores(0.12, 0, 0), winners=["deep-none"] * 10, variants=variants,
                    detection=detection(0.41234, 0.6)),
    ]


def detection(psds1: float, psds2: float) -> dict:
    """DESED metrics in `DetectionScores.to_json` form; intersection F1 = PSDS2 / 2, collar F1 = PSDS1 / 2."""
    return {"psds1": {"value": psds1, "class_wise": {}}, "psds2": {"value": psds2, "class_wise": {}},
            "intersection_f1": scores(psds2 / 2, 0.1, 0.2), "collar_f1": scores(psds1 / 2, 0.3, 0.4)}


def test_sweep_table_layout_and_values():
    lines = format_table(reports()).splitlines()
    assert lines[0] == HEADER
    assert lines[1] == "|" + "---|" * 18
    classes = lambda start: " | ".join(f"{start + k:.2f}" for k in range(10))  # noqa: E731
    assert lines[2:] == [
        f"| baseline, stage 1 only (DCASE 2018 CRNN) | 5.78 | 3.60 | 22.86 | {classes(0)} |  |  |  |  |",
        f"| tagging model (deep, weak labels) | 8.71 | 6.71 | 17.27 | {classes(10)} |  |  |  | 222 (with baseline) |",
        f"| pass 1 | 4.05 | n/a | 20.59 | {classes(0)} | 3.88 |  |  | 85 |",
        f"| pass 2, per-class winners | **13.20** | 11.50 | 23.80 | {classes(20)} | **12.00** | 41.23 | 60.00 | 319 |",
        # the best single variant is the best on validation (shallow), not on eval; PSDS is the stage's only
        f"| pass 2, best single (shallow, median+Gauss) | 14.00 | 15.00 | 16.00 | {classes(60)} |  |  |  |  |",
    ]


def test_detection_table_lists_the_stages_with_desed_metrics():
    assert detection_table(reports()).splitlines() == [
        "| stage | PSDS1 | PSDS2 | intersection F1 | P | R | collar F1 | P | R |", "|" + "---|" * 9,
        "| pass 2, per-class winners | 41.23 | 60.00 | 30.00 | 10.00 | 20.00 | 20.62 | 30.00 | 40.00 |"]
    assert detection_table(reports()[:3]) == ""


def test_serial_runner_times_baseline_and_tagging_apart():
    lines = format_table(reports(), baseline_with_tagging=False).splitlines()
    assert lines[2].endswith("|  | 12 |") and lines[3].endswith("|  | 222 |")
    # without a baseline there is nothing to share the tagging time with
    assert format_table(reports()[1:]).splitlines()[2].endswith("|  | 222 |")


def test_no_bold_without_a_comparison_or_above_zero():
    zero = [StageReport("pass 1", scores(0, 0, 0), scores(0.0, 0.0, 0.0), 1.0, pseudo=scores(0.0, 0, 0)),
            StageReport("pass 2", scores(0, 0, 0), scores(0.0, 0.0, 0.0), 1.0, pseudo=scores(0.0, 0, 0))]
    assert "**" not in format_table(zero) and "**" not in format_table(reports()[:1])


def test_short_names_and_variant_labels():
    assert [short_class_name(c) for c in CLASSES] == ["Alarm", "Blender", "Cat", "Dishes", "Dog", "Shaver", "Frying",
                                                      "Water", "Speech", "Vacuum"]
    assert variant_label("deep-none") == "deep, no smoothing"
    assert variant_label("shallow-median") == "shallow, median"
    assert variant_label("deep") == "deep"


def test_macro_f1_is_followed_by_its_interval_and_the_best_is_still_bold():
    from kdsed import schema

    with_interval = scores(0.1578, 0.1349, 0.2291)
    with_interval[schema.MACRO_INTERVAL] = {"f_measure": [0.1321, 0.1805], "level": 0.95}
    rows = format_table([StageReport("pass 1", scores(0.1, 0, 0), scores(0.05, 0, 0), wall_time_s=1.0),
                         StageReport("pass 2", scores(0.1, 0, 0), with_interval, wall_time_s=2.0)]).splitlines()
    assert rows[2].split(" | ")[1] == "5.00"
    assert rows[3].split(" | ")[1] == "**15.78** [13.21, 18.05]"


def test_interval_survives_the_mlflow_metric_round_trip():
    from kdsed import schema

    js = scores(0.1578, 0.1349, 0.2291)
    js[schema.MACRO_INTERVAL] = {"f_measure": [0.1321, 0.1805], "level": 0.95, "n_clips": 880}
    metrics = schema.score_metrics("eval", js)
    assert metrics["eval_f1_macro_ci_low"] == 0.1321 and metrics["eval_f1_macro_ci_high"] == 0.1805
    back = schema.scores_from_metrics(metrics, "eval")
    assert back[schema.MACRO_INTERVAL]["f_measure"] == [0.1321, 0.1805]
    assert format_table([StageReport("pass 1", js, back, 1.0)]) == format_table([StageReport("pass 1", js, js, 1.0)])


def test_comparisons_table_reads_the_paired_differences_in_points():
    from kdsed import schema
    from kdsed.results import StageReport, format_comparisons, results_markdown

    empty = {"macro": {"f_measure": 0.1, "precision": 0.1, "recall": 0.1},
             "class_wise": {c: {"f_measure": 0.1} for c in CLASSES}}
    plain = StageReport("tagging", empty, empty, 1.0)
    assert format_comparisons([plain]) == ""
    assert results_markdown([plain]) == format_table([plain])
    passed = StageReport("pass 2", empty, empty, 1.0, kd_topline_ratio=0.5, comparisons={
        schema.VS_PREVIOUS: {"against": "pass 1", "point": -0.0123, "low": -0.031, "high": 0.0052,
                             "share_a_better": 0.09},
        schema.VS_TOPLINE: {"against": "topline", "point": -0.2, "low": -0.25, "high": -0.15, "share_a_better": 0.0}})
    lines = format_comparisons([plain, passed]).splitlines()
    assert lines[2:] == ["| pass 2 | - pass 1 | -1.23 [-3.10, +0.52] | 9.0 % |  |",
                         "| pass 2 | - topline | -20.00 [-25.00, -15.00] | 0.0 % | 0.50 |"]
    assert "Paired differences" in results_markdown([plain, passed])


def test_seed_table_gives_mean_spread_and_each_seeds_interval():
    from kdsed import schema
    from kdsed.results import StageReport, format_seed_table

    def report(stage: str, f1: float) -> StageReport:
        ev = {"macro": {"f_measure": f1, "precision": f1, "recall": f1},
              "class_wise": {c: {"f_measure": f1} for c in CLASSES},
              schema.MACRO_INTERVAL: {"f_measure": [f1 - 0.01, f1 + 0.02]}}
        return StageReport(stage, ev, ev, 1.0)

    runs = [[report("tagging", 0.10), report("pass 1", 0.20)], [report("tagging", 0.12), report("pass 1", 0.26)],
            [report("tagging", 0.14), report("pass 1", 0.23)]]
    lines = format_seed_table(runs, [0, 1, 2]).splitlines()
    assert lines[0] == ("| stage | mean | sd | min | max | PSDS1 mean | PSDS2 mean | seed 0 [95 % CI] | seed 1 [95 % CI] "
                        "| seed 2 [95 % CI] |")
    assert lines[2] == ("| tagging model (deep, weak labels) | 12.00 | 2.00 | 10.00 | 14.00 |  |  | 10.00 [9.00, 12.00] | "
                        "12.00 [11.00, 14.00] | 14.00 [13.00, 16.00] |")
    assert lines[3].startswith("| pass 1 | 23.00 | 3.00 | 20.00 | 26.00 |  |  | 20.00 [19.00, 22.00] |")
    for run, (p1, p2) in zip(runs, ((0.30, 0.50), (0.33, 0.51), (0.36, 0.56))):
        run[1].detection = detection(p1, p2)
    assert format_seed_table(runs, [0, 1, 2]).splitlines()[3].startswith(
        "| pass 1 | 23.00 | 3.00 | 20.00 | 26.00 | 33.00 | 52.33 | 20.00 [19.00, 22.00] |")


def test_seeded_config_seeds_both_trainings_and_keeps_the_data():
    from kdsed.config import ExperimentConfig

    cfg = ExperimentConfig(seeds=3)
    third = cfg.seeded(2)
    assert (third.seeds, third.tagging_train.seed, third.train.seed) == (1, 2, 2)
    assert third.data == cfg.data and third.deep == cfg.deep


def seeded_runs() -> list[list[StageReport]]:
    """Three seeds of baseline 2stage, tagging, passes 1-3 and the topline, with the comparisons a run logs."""
    from kdsed import schema

    def diff(against: str, point: float, low: float, high: float) -> dict:
        return {"against": against, "point": point, "low": low, "high": high, "share_a_better": 0.5}

    runs = []
    for base, last, low, ratio, pseudo in ((0.10, 0.31, 0.15, 0.80, (0.2, 0.3, 0.4)),
                                           (0.12, 0.29, 0.12, 0.70, (0.2, 0.1, 0.4)),
                                           (0.09, 0.33, -0.01, 0.90, (0.2, 0.3, 0.35))):
        p1 = StageReport("pass 1", scores(0.2, 0, 0), scores(0.2, 0, 0), 1.0, pseudo=scores(pseudo[0], 0, 0),
                         comparisons={schema.VS_PREVIOUS: diff("tagging", 0.01 - low / 10, -0.01, 0.03)})
        p2 = StageReport("pass 2", scores(0.2, 0, 0), scores(0.25, 0, 0), 1.0, pseudo=scores(pseudo[1], 0, 0))
        p3 = StageReport("pass 3", scores(0.2, 0, 0), scores(last, 0, 0), 1.0, pseudo=scores(pseudo[2], 0, 0),
                         comparisons={schema.VS_BASELINE: diff("baseline 2stage", last - base, low, low + 0.2)},
                         kd_topline_ratio=ratio)
        runs.append([StageReport("baseline 2stage", scores(0.1, 0, 0), scores(base, 0, 0), 1.0),
                     StageReport("tagging", scores(0.1, 0, 0), scores(0.19, 0, 0), 1.0), p1, p2, p3])
    return runs


def test_targets_are_read_seed_by_seed_and_comparisons_need_their_interval():
    from kdsed.results import format_targets

    lines = format_targets(seeded_runs(), [0, 1, 2]).splitlines()
    assert lines[0] == "| target | seed 0 | seed 1 | seed 2 | met in |"
    assert lines[2] == "| last pass ≥ 30 % eval macro F1 | 31.00 (pass 3) ✓ | 29.00 (pass 3) ✗ | 33.00 (pass 3) ✓ | 2 of 3 |"
    # seed 1: 2.42x is under 3x; seed 2: 3.67x but the paired interval reaches below 0
    assert lines[3] == ("| ≥ 3× the two-stage baseline, paired interval above 0 | 3.10× (+21.00 [+15.00, +35.00]) ✓ | "
                        "2.42× (+17.00 [+12.00, +32.00]) ✗ | 3.67× (+24.00 [-1.00, +19.00]) ✗ | 1 of 3 |")
    assert lines[4] == "| kd_topline_ratio ≥ 0.75 | 0.80 ✓ | 0.70 ✗ | 0.90 ✓ | 2 of 3 |"
    assert lines[5] == ("| pass 1 ≥ tagging model (the point; its paired interval beside it) | -0.50 [-1.00, +3.00] ✗ | "
                        "-0.20 [-1.00, +3.00] ✗ | +1.10 [-1.00, +3.00] ✓ | 1 of 3 |")
    assert lines[6] == ("| pseudo-label F1 rising, pass 1 → 2 → 3 | 20.00 → 30.00 → 40.00 ✓ | 20.00 → 10.00 → 40.00 ✗ | "
                        "20.00 → 30.00 → 35.00 ✓ | 2 of 3 |")


def test_seed_comparisons_count_the_intervals_above_and_below_zero():
    from kdsed.results import format_seed_comparisons

    lines = format_seed_comparisons(seeded_runs(), [4, 5, 6]).splitlines()
    assert lines[0] == "| stage | difference | seed 4 | seed 5 | seed 6 | above 0 / below 0 |"
    assert lines[2:] == [
        "| pass 1 | - tagging | -0.50 [-1.00, +3.00] | -0.20 [-1.00, +3.00] | +1.10 [-1.00, +3.00] | 0 / 0 of 3 |",
        "| pass 3 | - baseline 2stage | +21.00 [+15.00, +35.00] | +17.00 [+12.00, +32.00] | +24.00 [-1.00, +19.00] "
        "| 2 / 0 of 3 |"]
    assert format_seed_comparisons([r[:2] for r in seeded_runs()], [4, 5, 6]) == ""


def test_the_sweeps_winner_table_shows_the_last_pass_not_the_topline_after_it():
    from kdsed.search import PostprocessChoice
    from kdsed.sweep.coordinator import SweepSummary, winner_table

    last_pass = reports()[-1]
    topline = StageReport("topline", scores(0.5, 0, 0), scores(0.45, 0, 0, 0.4), wall_time_s=20.0)
    choice = PostprocessChoice(median_windows=(9,) * 10, gaussian_sigmas=(0.0,) * 10, thresholds=(0.5,) * 10,
                               f1=(0.25,) * 10)
    summary = SweepSummary("id", "run", [*reports(), topline], last_pass, choice, ["deep-none"] * 10, {})
    rows = winner_table(summary).splitlines()[2:]
    # eval F1 of class k: 0.2 + k / 100 in pass 2, 0.4 + k / 100 in the topline
    assert rows[0] == f"| {CLASSES[0]} | deep-none | 9 | 0.50 | 25.00 | 20.00 |"
    assert rows[9].endswith("| 29.00 |")


def test_pseudo_label_f1_carries_its_interval_and_the_targets_its_paired_steps():
    from kdsed import schema
    from kdsed.results import format_comparisons, format_targets

    def pseudo(f1: float, low: float, high: float) -> dict:
        return {**scores(f1, 0, 0), schema.MACRO_INTERVAL: {"f_measure": [low, high], "level": 0.95}}

    def step(against: str, point: float, low: float, high: float) -> dict:
        return {"against": against, "point": point, "low": low, "high": high, "share_a_better": 0.1}

    run = [StageReport("pass 1", scores(0.2, 0, 0), scores(0.2, 0, 0), 1.0, pseudo=pseudo(0.2, 0.18, 0.22)),
           StageReport("pass 2", scores(0.2, 0, 0), scores(0.3, 0, 0), 1.0, pseudo=pseudo(0.3254, 0.30, 0.35),
                       comparisons={schema.PSEUDO_VS_PREVIOUS: step("pass 1", 0.1254, 0.10, 0.15)}),
           StageReport("pass 3", scores(0.2, 0, 0), scores(0.3, 0, 0), 1.0, pseudo=pseudo(0.3083, 0.29, 0.33),
                       comparisons={schema.PSEUDO_VS_PREVIOUS: step("pass 2", -0.0171, -0.0312, -0.0035)})]
    table = format_table(run).splitlines()
    assert table[3].split(" | ")[-4] == "**32.54** [30.00, 35.00]"  # pass 2's pseudo-label F1: the best, in bold
    assert table[4].split(" | ")[-4] == "30.83 [29.00, 33.00]"
    assert format_targets([run], [0]).splitlines()[-1] == (
        "| pseudo-label F1 rising, pass 1 → 2 → 3 | 20.00 → 32.54 → 30.83 (steps +12.54 [+10.00, +15.00], "
        "-1.71 [-3.12, -0.35]) ✗ | 0 of 1 |")
    assert "| pass 3 | pseudo-label F1 - pass 2's | -1.71 [-3.12, -0.35] | 10.0 % |  |" in format_comparisons(run)
    metrics = schema.comparison_metrics(run[2].comparisons, None)
    assert metrics["pseudo_f1_macro_diff_vs_previous_ci_high"] == -0.0035
    assert schema.comparisons_from_metrics(metrics)[schema.PSEUDO_VS_PREVIOUS]["point"] == -0.0171
