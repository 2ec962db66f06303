"""kdsed.bundle: class bundles, assembly with shared weights, verification, refusal of tampered bundles."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kdsed.bundle import (
    CLASS_FILE, MANIFEST_FILE, WEIGHTS_FILE, BundleError, assemble_bundle, load_bundle, read_class_bundle,
    sha256_file, write_class_bundle,
)
from kdsed.constants import CLASSES
from kdsed.features import Normalizer
from kdsed.models import build_model

from support.builders import FEATURES, SHARED, TINY, class_params, dummy_normalizer, make_class_bundles, model_seed, tiny_state

@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    return assemble_bundle(make_class_bundles(root / "classes"), root / "bundle")


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "copy"))


def test_class_bundle_holds_weights_configs_and_checksum(tmp_path: Path) -> None:
    state = tiny_state(7)
    d = write_class_bundle(tmp_path / "Dog", class_name="Dog", model_config=TINY, state_dict=state,
                           feature_config=FEATURES, normalizer=dummy_normalizer(), **class_params("Dog"))
    assert sorted(p.name for p in d.iterdir()) == [CLASS_FILE, WEIGHTS_FILE]  # no temp leftovers beside it
    assert [p.name for p in tmp_path.iterdir()] == ["Dog"]
    spec = json.loads((d / CLASS_FILE).read_text())
    assert spec["class_name"] == "Dog" and spec["model_config"] == {"name": "shallow", "width": 0.125,
                                                                    "rnn_hidden": 128, "dropout": 0.0}
    assert spec["postprocess"] == {"median_window": 9, "gaussian_sigma": 0.5, "threshold": 0.3}
    assert spec["provenance"]["variant"] == "shallow-v1" and spec["feature_config"]["n_mels"] == 64
    assert spec["sha256"] == sha256_file(d / WEIGHTS_FILE) and spec["format_version"] == 1
    np.testing.assert_allclose(spec["normalizer"]["std"], dummy_normalizer().std, rtol=1e-6)
    weights = torch.load(d / WEIGHTS_FILE, weights_only=True)
    assert weights.keys() == state.keys() and all(torch.equal(weights[k], state[k]) for k in state)
    cb = read_class_bundle(d)
    assert cb.spec.median_window == 9 and cb.spec.threshold == 0.3 and cb.feature_config == FEATURES


def test_same_weights_give_the_same_file(tmp_path: Path) -> None:
    a, b = make_class_bundles(tmp_path, classes=SHARED).values()
    assert sha256_file(a / WEIGHTS_FILE) == sha256_file(b / WEIGHTS_FILE)


def test_write_class_bundle_rejects_bad_values(tmp_path: Path) -> None:
    common = dict(model_config=TINY, state_dict=tiny_state(0), feature_config=FEATURES,
                  normalizer=dummy_normalizer(), median_window=3, gaussian_sigma=0.0, provenance={})
    with pytest.raises(BundleError, match="Doggo"):
        write_class_bundle(tmp_path / "x", class_name="Doggo", threshold=0.5, **common)
    with pytest.raises(BundleError, match="threshold=1.5"):
        write_class_bundle(tmp_path / "x", class_name="Dog", threshold=1.5, **common)
    assert not any(tmp_path.iterdir())


def test_assembled_bundle_shares_weights_and_keeps_per_class_choices(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    specs = manifest["class_specs"]
    assert manifest["classes"] == list(CLASSES)
    assert specs["Cat"]["model_file"] == specs["Dog"]["model_file"]
    assert len({s["model_file"] for s in specs.values()}) == 9
    assert len(list((bundle_dir / "models").iterdir())) == 9
    for name in CLASSES:
        expected = class_params(name)
        assert specs[name]["postprocess"]["median_window"] == expected["median_window"]
        assert specs[name]["postprocess"]["threshold"] == expected["threshold"]
        assert specs[name]["provenance"] == expected["provenance"]
        assert specs[name]["sha256"] == sha256_file(bundle_dir / specs[name]["model_file"])
    bundle = load_bundle(bundle_dir)
    assert len(bundle.models) == 9 and bundle.model_groups()[specs["Cat"]["model_file"]] == [2, 4]
    choice = bundle.postprocess_choice()
    assert choice.thresholds == tuple(class_params(n)["threshold"] for n in CLASSES)
    assert choice.f1[4] == pytest.approx(0.34)


def test_loaded_models_have_the_written_weights(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    x, n_frames = torch.randn(2, 240, 64), torch.tensor([240, 100])
    for name in ("Blender", "Dog"):
        reference = build_model(TINY)
        reference.load_state_dict(tiny_state(model_seed(name)))
        model = bundle.models[bundle.classes[name].model_file]
        with torch.no_grad():
            torch.testing.assert_close(model(x, n_frames)[0], reference.eval()(x, n_frames)[0], atol=0, rtol=0)
        assert not model.training


def test_flipped_byte_is_refused_naming_the_file(bundle_copy: Path) -> None:
    model_file = json.loads((bundle_copy / MANIFEST_FILE).read_text())["class_specs"]["Speech"]["model_file"]
    path = bundle_copy / model_file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{path.name}: sha256 mismatch"):
        load_bundle(bundle_copy)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_malicious_pickle_with_matching_checksum_is_refused_and_not_run(bundle_copy: Path, tmp_path: Path,
                                                                        fmt: str) -> None:
    marker = tmp_path / "pwned"
    manifest_path = bundle_copy / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    path = bundle_copy / manifest["class_specs"]["Blender"]["model_file"]
    if fmt == "torch.save":
        torch.save({"conv.weight": _Evil(marker)}, path)
        torch.load(path, weights_only=False)  # the payload is live ...
    else:
        path.write_bytes(pickle.dumps({"conv.weight": _Evil(marker)}, protocol=2))
        pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()
    manifest["class_specs"]["Blender"]["sha256"] = sha256_file(path)  # ... and its checksum matches
    manifest_path.write_text(json.dumps(manifest))
    expected = {"torch.save": r"refused by torch\.load\(weights_only=True\): (Unsupported global: GLOBAL (io|builtins)"
                              r"\.open was not an allowed global|Trying to load unsupported GLOBAL (io|builtins)\.open "
                              r"whose module (io|builtins) is blocked); expected a dict of tensors",
                "pickle": r"not a torch weights archive \(File is not a zip file\); expected a file written by "
                          r"torch\.save"}[fmt]  # refused from its headers, before any unpickling
    with pytest.raises(BundleError, match=rf"^{path}: {expected}") as err:
        load_bundle(bundle_copy)
    assert not marker.exists()
    message = str(err.value)
    assert "\n" not in message and "False" not in message and "trusted" not in message  # not torch's advice


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["class_specs"]["Dog"]["postprocess"].update(threshold=2.0), "threshold=2.0"),
    (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
    (lambda m: m["class_specs"].pop("Frying"), "class_specs has classes"),
    (lambda m: m["class_specs"]["Dog"].update(model_file="../../etc/passwd"), "points outside the bundle"),
    (lambda m: m["class_specs"]["Dog"]["model_config"].update(width=0.5), "Cat and Dog share models/.* but name"),
    (lambda m: m["class_specs"]["Frying"]["model_config"].update(width=0.5), "weights do not fit model config"),
    (lambda m: m["normalizer"].update(std=[1.0] * 3), "normalizer mean/std must have 64 values"),
])
def test_malformed_manifest_is_refused(bundle_copy: Path, edit, message: str) -> None:
    path = bundle_copy / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(bundle_copy)
    assert str(path) in str(err.value) or "models" in str(err.value)


def test_missing_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=rf"{tmp_path / MANIFEST_FILE}: not found"):
        load_bundle(tmp_path)


def test_assembly_replaces_an_existing_bundle_only_when_complete(tmp_path: Path) -> None:
    out = assemble_bundle(make_class_bundles(tmp_path / "p1", 1), tmp_path / "bundle")
    before = (out / MANIFEST_FILE).read_text()
    pass2 = make_class_bundles(tmp_path / "p2", 2)
    (pass2["Frying"] / WEIGHTS_FILE).write_bytes(b"torn")
    with pytest.raises(BundleError, match=r"Frying.weights\.pt: sha256 mismatch"):
        assemble_bundle(pass2, out)
    assert (out / MANIFEST_FILE).read_text() == before  # the old bundle is untouched
    wrong = dict(make_class_bundles(tmp_path / "p3", 2), Cat=pass2["Dog"])
    with pytest.raises(BundleError, match="holds class 'Dog', expected 'Cat'"):
        assemble_bundle(wrong, out)
    shutil.rmtree(pass2["Frying"])
    pass2["Frying"] = make_class_bundles(tmp_path / "p2b", 2, ("Frying",))["Frying"]
    assemble_bundle(pass2, out)
    assert load_bundle(out).classes["Frying"].provenance["pass"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "p1", "p2", "p2b", "p3"]  # no temp dirs


def test_assembly_needs_every_class_and_one_normalizer(tmp_path: Path) -> None:
    dirs = make_class_bundles(tmp_path / "c")
    with pytest.raises(BundleError, match=r"missing: \['Vacuum_cleaner'\]"):
        assemble_bundle({k: v for k, v in dirs.items() if k != "Vacuum_cleaner"}, tmp_path / "b")
    other = Normalizer(np.zeros(64, np.float32), np.ones(64, np.float32))
    dirs["Speech"] = write_class_bundle(tmp_path / "other", class_name="Speech", model_config=TINY,
                                        state_dict=tiny_state(1), feature_config=FEATURES, normalizer=other,
                                        **class_params("Speech"))
    with pytest.raises(BundleError, match="normalizer differs"):
        assemble_bundle(dirs, tmp_path / "b")
    assert not (tmp_path / "b").exists()
