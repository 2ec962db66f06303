"""kdsed.registry: register class bundles in a real (SQLite) MLflow registry, pull them by alias, predict."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from kdsed.bundle import MANIFEST_FILE, load_bundle
from kdsed.constants import CHAMPION_ALIAS, CLASSES
from kdsed.features import FeatureSet
from kdsed.models import build_model
from kdsed.predict import predict_probs
from kdsed.registry import RegistryError, log_class_bundle, main, pull_bundle, point_aliases, register_class_bundle
from support.builders import TINY, class_params, make_class_bundles, model_seed, tiny_state

os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "1")
PASS2_CLASSES = ("Dog", "Speech")  # re-registered in pass 2, which becomes their champion


@dataclass
class Store:
    uri: str
    client: object
    root: Path


def _register_pass(client, experiment_id: str, root: Path, pass_index: int, classes: tuple[str, ...]) -> None:
    run_id = client.create_run(experiment_id, run_name=f"pass-{pass_index}").info.run_id
    for name, directory in make_class_bundles(root / f"pass{pass_index}", pass_index, classes).items():
        uri = log_class_bundle(client, run_id, directory, artifact_path=f"winners/{name}")
        p = class_params(name, pass_index)
        tags = {"pass": pass_index, "variant": p["provenance"]["variant"], "window": p["median_window"],
                "threshold": p["threshold"], "val_f1": p["provenance"]["val_f1"]}
        version = register_class_bundle(client, name, uri, run_id, tags)
        point_aliases(client, [version], [CHAMPION_ALIAS, f"pass-{pass_index}"])
    client.set_terminated(run_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One SQLite store: pass 1 registers every class; pass 2 re-registers PASS2_CLASSES as champions."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment("kdsed-test", artifact_location=str(root / "artifacts"))
    _register_pass(client, experiment_id, root, 1, CLASSES)
    _register_pass(client, experiment_id, root, 2, PASS2_CLASSES)
    return Store(uri, client, root)


def _pass_of(name: str, alias: str) -> int:
    return 2 if alias == CHAMPION_ALIAS and name in PASS2_CLASSES else 1


def test_versions_carry_tags_and_aliases(store: Store) -> None:
    dog = store.client.get_model_version_by_alias("kdsed-Dog", CHAMPION_ALIAS)
    assert str(dog.version) == "2" and dog.tags["pass"] == "2"
    assert dog.tags["window"] == str(class_params("Dog", 2)["median_window"])
    assert set(dog.aliases) == {CHAMPION_ALIAS, "pass-2"}
    assert str(store.client.get_model_version_by_alias("kdsed-Dog", "pass-1").version) == "1"
    cat = store.client.get_model_version_by_alias("kdsed-Cat", CHAMPION_ALIAS)
    assert str(cat.version) == "1" and set(cat.aliases) == {CHAMPION_ALIAS, "pass-1"}
    assert cat.tags["threshold"] == str(class_params("Cat")["threshold"]) and cat.tags["variant"] == "shallow-v2"


@pytest.mark.parametrize("alias", [CHAMPION_ALIAS, "pass-1"])
def test_pulled_bundle_has_the_registered_choices_and_models(store: Store, tmp_path: Path, alias: str) -> None:
    out = pull_bundle(tmp_path / "bundle", alias=alias, tracking_uri=store.uri)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    for name in CLASSES:
        expected = class_params(name, _pass_of(name, alias))
        spec = manifest["class_specs"][name]
        assert spec["postprocess"]["median_window"] == expected["median_window"]
        assert spec["postprocess"]["threshold"] == expected["threshold"]
        assert spec["provenance"] == expected["provenance"]
    shared = manifest["class_specs"]["Cat"]["model_file"] == manifest["class_specs"]["Dog"]["model_file"]
    assert shared == (alias == "pass-1")
    assert len(list((out / "models").iterdir())) == (9 if alias == "pass-1" else 10)

    bundle = load_bundle(out)
    rng = np.random.default_rng(3)
    fs = FeatureSet(["a", "b"], rng.normal(-5, 2, (2, 60, 64)).astype(np.float32), np.array([60, 40]))
    probs = predict_probs(bundle, fs)
    x = torch.from_numpy((fs.features - bundle.normalizer.mean) / bundle.normalizer.std)
    for c, name in enumerate(CLASSES):
        model = build_model(TINY)
        model.load_state_dict(tiny_state(model_seed(name, _pass_of(name, alias))))
        with torch.no_grad():
            direct = model.eval()(x, torch.from_numpy(fs.n_frames))[0].numpy()[:, :, c]
        np.testing.assert_allclose(probs[:, :, c], direct, atol=1e-6, err_msg=name)


def test_pull_replaces_a_previous_bundle(store: Store, tmp_path: Path) -> None:
    out = pull_bundle(tmp_path / "bundle", alias="pass-1", tracking_uri=store.uri)
    assert load_bundle(out).classes["Dog"].provenance["pass"] == 1
    pull_bundle(out, alias=CHAMPION_ALIAS, tracking_uri=store.uri)
    assert load_bundle(out).classes["Dog"].provenance["pass"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # downloads and temp dirs cleaned up


def test_missing_alias_names_every_class_without_it(store: Store, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"8 of 10 classes have no version with alias 'pass-2'") as err:
        pull_bundle(tmp_path / "b", alias="pass-2", tracking_uri=store.uri)
    message = str(err.value)
    assert all(f"{name} (kdsed-{name} has no alias 'pass-2')" in message
               for name in CLASSES if name not in PASS2_CLASSES)
    assert "Dog" not in message and "Speech" not in message
    assert not (tmp_path / "b").exists()


def test_cli_pull_prints_the_table_and_reports_errors(store: Store, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    assert main(["pull", "--out", str(out), "--tracking-uri", store.uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["class", "pass", "variant", "window", "sigma", "threshold", "val", "F1", "%"]
    speech = next(line for line in lines if line.startswith("Speech")).split()
    p = class_params("Speech", 2)
    assert speech == ["Speech", "2", p["provenance"]["variant"], str(p["median_window"]), f"{p['gaussian_sigma']:g}",
                      f"{p['threshold']:.2f}", f"{100 * p['provenance']['val_f1']:.2f}"]
    assert (out / MANIFEST_FILE).is_file()
    assert main(["pull", "--out", str(tmp_path / "x"), "--alias", "pass-9", "--tracking-uri", store.uri]) == 2
    assert "10 of 10 classes have no version with alias 'pass-9'" in capsys.readouterr().err
    missing = tmp_path / "none.db"
    assert main(["pull", "--out", str(tmp_path / "x"), "--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert f"{missing}: no MLflow store" in capsys.readouterr().err and not missing.exists()


def test_missing_registered_model_is_named(tmp_path: Path, store: Store) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    client.rename_registered_model("kdsed-Frying", "kdsed-Frying-old")
    try:
        with pytest.raises(RegistryError, match=r"1 of 10 .*Frying \(no registered model kdsed-Frying\)"):
            pull_bundle(tmp_path / "b", tracking_uri=store.uri)
    finally:
        client.rename_registered_model("kdsed-Frying-old", "kdsed-Frying")
