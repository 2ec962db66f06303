"""The MLflow UI, in a real headless Chromium, on the `smoke` sweep's tracking store.

`mlflow server` is started on loopback against the sweep's sqlite store; Playwright drives Debian's
Chromium (`/usr/bin/chromium`, installed by `.ci/run`) through the pages a user would open: the
experiment list, the runs of pass 2, the comparison of its variants, the model registry, one class's
registered model, and from its champion the run and the pseudo-labels it came from. Screenshots go to `$KDSED_SCREENSHOTS` when set (else the test's tmp dir).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kdsed.constants import CLASSES, REGISTERED_MODEL_PREFIX
from support.mlflow_ui import capture_ui, find_chromium, mlflow_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui(finished_sweep, tmp_path_factory):
    pytest.importorskip("playwright", reason="the `playwright` package is missing: pip install -e '.[test]'")
    if find_chromium() is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    tmp, _, final = finished_sweep
    out = Path(os.environ.get("KDSED_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    with mlflow_server(f"sqlite:///{tmp}/mlflow.db", out / "mlflow_server.log") as url:
        findings = capture_ui(url, out, pass_index=2, class_name="Dog")
    return findings, final


def test_experiment_is_listed(ui):
    findings, _ = ui
    assert "kdsed" in findings.text["experiments"].splitlines()


def test_sweep_pass_and_variant_runs_are_visible(ui):
    findings, final = ui
    lines = findings.text["runs"].splitlines()
    assert f"sweep-{final['sweep_id']}" in lines
    assert {"pass-2", "pass-2/deep-none", "pass-2/shallow-median"} <= set(lines)


def test_comparison_shows_per_class_metric_of_both_variants(ui, finished_sweep):
    from mlflow import MlflowClient

    findings, _ = ui
    tmp, _, _ = finished_sweep
    text = findings.text["compare_all"]
    assert "pass-2/deep-none" in text and "pass-2/shallow-median" in text
    lines = text.splitlines()
    assert "eval_f1_Dog" in lines and "eval_f1_macro" in lines
    # The page shows the values MLflow stored (rounded to 3 decimals by the UI).
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("kdsed").experiment_id], "tags.`kdsed.pass` = '2'")
    for run in runs:
        if "/" in run.info.run_name:
            shown = f"{run.data.metrics['eval_f1_macro']:.3f}".rstrip("0").rstrip(".")
            assert shown in lines, (run.info.run_name, shown)


def test_registry_lists_every_class_and_shows_champion(ui):
    findings, _ = ui
    models = set(findings.text["models"].splitlines())
    assert {f"{REGISTERED_MODEL_PREFIX}{c}" for c in CLASSES} <= models
    registry = findings.text["registry"].replace("\xa0", " ")  # the UI writes "@ alias" with a no-break space
    assert "@ champion" in registry and "@ pass-2" in registry and "@ pass-1" in registry


def test_a_champion_links_to_the_run_that_made_it_and_the_pseudo_labels_it_trained_on(ui, finished_sweep):
    """The lineage walk of docs/mlflow.md: kdsed-Dog's champion version -> its source run (pass 2) -> the
    Parquet pseudo-labels of pass 1, listed on that run's overview with their digest, as training data."""
    from mlflow import MlflowClient

    findings, _ = ui
    tmp, _, _ = finished_sweep
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    champion = client.get_model_version_by_alias(f"{REGISTERED_MODEL_PREFIX}Dog", "champion")
    run = client.get_run(champion.run_id)
    [trained_on] = [i.dataset for i in run.inputs.dataset_inputs if i.dataset.name == "pseudo_labels/pass-1"]
    page = findings.text["lineage"]
    assert run.info.run_name == "pass-2" and "\npass-2\n" in page
    assert f"pseudo_labels/pass-1 ({trained_on.digest})" in page and "Training" in page


def test_a_units_loss_curves_are_charts_of_every_epoch(ui):
    """The per-epoch step metrics the units log while they train (issue 13) are drawn as charts in the UI."""
    findings, _ = ui
    lines = findings.text["loss_curves"].splitlines()
    assert "train_loss" in lines and "val_loss" in lines  # the charts found by typing "loss" in the chart search
    assert lines.count("Step") == 2  # both drawn against the epoch (MLflow's step), not as a single value


def test_screenshots_are_real_pictures(ui):
    import matplotlib.image

    findings, _ = ui
    assert set(findings.screenshots) == {"experiments", "runs", "compare", "models", "registry", "loss_curves",
                                       "lineage"}
    for name, path in findings.screenshots.items():
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1200, (name, pixels.shape)
        assert np.std(pixels[..., :3]) > 0.05, f"{name} screenshot is blank"
