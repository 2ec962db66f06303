"""Untrusted input is refused within bounded time and memory (docs/limits.md): crafted bundles, YAML, metadata, audio,
and sweep sizes beyond the bounds unless --allow-large."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kdsed.bundle import MANIFEST_FILE, BundleError, assemble_bundle, load_bundle
from kdsed.config import ConfigError, SweepConfig, load_yaml
from kdsed.data.audio import AudioError
from kdsed.events import MetadataError, read_strong_tsv
from kdsed.limits import (MAX_AUDIO_CHANNELS, MAX_CONFIG_BYTES, MAX_CONFIG_NODES, MAX_METADATA_BYTES,
                          MAX_MODEL_PARAMETERS, MAX_SAMPLE_RATE_HZ)
from kdsed.data.audio import check_audio_header
from kdsed.sweep.preflight import check_sizes
from support.crafted import billion_laughs, inflating_weights, swap_weights
from support.builders import make_class_bundles, tiny_state

REPO = Path(__file__).resolve().parents[1]

MEASURE = """
import resource, sys, time
{imports}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    {call}
    outcome = "accepted"
except Exception as e:
    outcome = f"{{type(e).__name__}}: {{e}}"
print(time.perf_counter() - start)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
print(outcome)
"""


def measured(imports: str, call: str) -> tuple[float, int, str]:
    """(seconds, growth of peak memory in bytes, outcome) of `call` in a fresh interpreter, after `imports`."""
    code = MEASURE.format(imports=imports, call=call)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds, grown, outcome = proc.stdout.splitlines()[-3:]
    return float(seconds), int(grown), outcome


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits")
    return assemble_bundle(make_class_bundles(root / "classes"), root / "bundle")


# ---- bundles ------------------------------------------------------------------------------------------

@pytest.mark.slow  # ~9 s: it writes a zip that inflates to gigabytes
def test_weights_that_inflate_are_refused_before_inflating(bundle: Path, tmp_path: Path) -> None:
    crafted = Path(shutil.copytree(bundle, tmp_path / "crafted"))
    weights = inflating_weights(tmp_path / "inflating.pt")
    assert weights.stat().st_size < 1_000_000  # 390 KB on disk, 400 MB once inflated
    target = swap_weights(crafted, "Dog", weights)
    imports = "from kdsed.bundle import load_bundle\nimport torch"
    seconds, grown, outcome = measured(imports, f"load_bundle({str(crafted)!r})")
    assert outcome.startswith(f"BundleError: {target}: member archive/data.pkl is compressed"), outcome
    assert "refused before inflating it" in outcome
    assert grown < 50 * 2**20 and seconds < 3.0, (seconds, grown)  # before: 5.4 s and +390 MB
    ok_seconds, ok_grown, ok = measured(imports, f"load_bundle({str(bundle)!r})")
    assert ok == "accepted" and grown < ok_grown + 20 * 2**20


def test_weights_larger_than_their_model_are_refused_unread(bundle: Path, tmp_path: Path) -> None:
    stored = tmp_path / "padded.pt"
    torch.save({**tiny_state(0), "padding": torch.zeros(1_000_000)}, stored)  # 4 MB: uncompressed, valid torch
    crafted = Path(shutil.copytree(bundle, tmp_path / "crafted"))
    target = swap_weights(crafted, "Speech", stored)
    with pytest.raises(BundleError, match=rf"^{target}: 4,0\d\d,\d\d\d bytes, more than the 2,1\d\d,\d\d\d of shallow "
                                          r"model's tensors \(50,400 bytes\) and headers \(see docs/limits\.md\); "
                                          r"refused unread$"):
        load_bundle(crafted)


def test_a_zip_that_declares_more_than_it_holds_is_refused(bundle: Path, tmp_path: Path) -> None:
    crafted = Path(shutil.copytree(bundle, tmp_path / "crafted"))
    manifest = json.loads((crafted / MANIFEST_FILE).read_text())
    path = crafted / manifest["class_specs"]["Cat"]["model_file"]
    with zipfile.ZipFile(path) as z:
        assert all(m.compress_type == zipfile.ZIP_STORED for m in z.infolist())  # what torch.save writes
    plain = tmp_path / "plain.pt"
    plain.write_bytes(b"\x80\x02}q\x00.")  # a bare pickle: not a torch archive
    target = swap_weights(crafted, "Cat", plain)
    with pytest.raises(BundleError, match=rf"^{target}: not a torch weights archive \(File is not a zip file\)"):
        load_bundle(crafted)


def test_an_absurd_model_config_is_refused_without_building_it(bundle: Path, tmp_path: Path) -> None:
    crafted = Path(shutil.copytree(bundle, tmp_path / "crafted"))
    manifest = json.loads((crafted / MANIFEST_FILE).read_text())
    for spec in manifest["class_specs"].values():
        spec["model_config"]["width"] = 1000.0  # 5e10 parameters: 200 GB if built
    (crafted / MANIFEST_FILE).write_text(json.dumps(manifest))
    start = time.perf_counter()
    with pytest.raises(BundleError, match=rf"has [\d,]+ parameters, more than {MAX_MODEL_PARAMETERS:,}"):
        load_bundle(crafted)
    assert time.perf_counter() - start < 5.0


def test_oversized_manifest_and_feature_settings_are_refused(bundle: Path, tmp_path: Path) -> None:
    crafted = Path(shutil.copytree(bundle, tmp_path / "crafted"))
    manifest = json.loads((crafted / MANIFEST_FILE).read_text())
    manifest["feature_config"]["n_fft"] = 2**24
    manifest["feature_config"]["hop_length"] = 2**24
    manifest["feature_config"]["sample_rate"] = 2**25
    manifest["feature_config"]["fmax_hz"] = 8000.0
    (crafted / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"feature_config .* is beyond the bounds"):
        load_bundle(crafted)
    (crafted / MANIFEST_FILE).write_text(json.dumps(manifest) + " " * (5 * 2**20))
    with pytest.raises(BundleError, match=r"manifest\.json: 5,2\d\d,\d\d\d bytes, more than 4,194,304"):
        load_bundle(crafted)


# ---- YAML -------------------------------------------------------------------------------------------------

def test_nested_aliases_are_refused_fast(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())  # 9 ** 9 = 387 million values once expanded; the old check took 275 s
    seconds, grown, outcome = measured("from kdsed.config import SweepConfig, load_yaml",
                                       f"load_yaml(SweepConfig, {str(path)!r})")
    assert outcome == (f"ConfigError: {path}, line 5: the document expands to more than {MAX_CONFIG_NODES:,} values "
                       "(nested aliases?); a sweep config has a few hundred (see docs/limits.md)")
    assert seconds < 0.5 and grown < 10 * 2**20, (seconds, grown)
    few = tmp_path / "anchors.yaml"  # anchors themselves are fine
    few.write_text("train: &t {epochs: 3}\ntagging_train: *t\n")
    assert load_yaml(SweepConfig, few).tagging_train.epochs == 3


def test_deep_nesting_and_huge_files_are_refused(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^{deep}, line 1: nested more than 20 levels deep"):
        load_yaml(SweepConfig, deep)
    assert time.perf_counter() - start < 5.0
    huge = tmp_path / "huge.yaml"
    huge.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=rf"^{huge}: [\d,]+ bytes; a sweep config is at most {MAX_CONFIG_BYTES:,}"):
        load_yaml(SweepConfig, huge)
    wide = tmp_path / "wide.yaml"
    wide.write_text("postprocess: {thresholds: [" + ", ".join(["0.5"] * 20_000) + "]}\n")
    with pytest.raises(ConfigError, match="expands to more than 10,000 values"):
        load_yaml(SweepConfig, wide)


def test_an_error_about_a_huge_value_stays_one_short_line(tmp_path: Path) -> None:
    path = tmp_path / "big-value.yaml"
    path.write_text("train: {epochs: [" + ", ".join(str(i) for i in range(5000)) + "]}\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(SweepConfig, path)
    assert str(err.value).startswith(f"{path}: train.epochs: expected an integer, got [0, 1, 2, 3, 4, 5, ...]")
    assert len(str(err.value)) < 200 and "\n" not in str(err.value)


# ---- metadata and audio -----------------------------------------------------------------------------------

def test_an_oversized_metadata_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.tsv"
    with path.open("wb") as f:
        f.truncate(MAX_METADATA_BYTES + 1)  # sparse: no disk used
    with pytest.raises(MetadataError, match=rf"^{path}: 67,108,865 bytes, more than {MAX_METADATA_BYTES:,}"):
        read_strong_tsv(path)


@pytest.mark.parametrize("channels, rate", [(MAX_AUDIO_CHANNELS + 8, 16000), (1, 2 * MAX_SAMPLE_RATE_HZ)])
def test_audio_beyond_the_header_bounds_is_refused_before_reading(tmp_path: Path, channels: int, rate: int) -> None:
    path = tmp_path / "wide.wav"
    sf.write(path, np.zeros((100, channels), np.float32), rate)
    with pytest.raises(AudioError, match=rf"^{path}: {channels} channels at {rate} Hz; kdsed reads at most "
                                         rf"{MAX_AUDIO_CHANNELS} channels at up to {MAX_SAMPLE_RATE_HZ} Hz"):
        check_audio_header(path)
    sf.write(path, np.zeros((100, 2), np.float32), 44100)
    check_audio_header(path)  # an ordinary stereo 44.1 kHz clip passes


# ---- sizes a sweep asks for ---------------------------------------------------------------------------------

def test_absurd_sweep_sizes_need_allow_large() -> None:
    cfg = load_yaml(SweepConfig, REPO / "sweeps" / "laptop.yaml")
    check_sizes(cfg)
    huge = replace(cfg, distill=replace(cfg.distill, passes=100_000))
    with pytest.raises(ConfigError, match=r"^distill\.passes \(--passes\) 100000: more than 20, the bound for a sweep "
                                          r"\(see docs/limits\.md\); pass --allow-large to run it anyway$"):
        check_sizes(huge)
    check_sizes(huge, allow_large=True)
    with pytest.raises(ConfigError, match=r"^train\.epochs 10000: more than 500"):
        check_sizes(replace(cfg, train=replace(cfg.train, epochs=10_000)))


def test_a_sweep_of_more_than_an_hour_says_so_before_it_starts(tmp_path: Path, monkeypatch, capsys) -> None:
    import yaml

    import kdsed.sweep.coordinator as coordinator
    from kdsed.sweep.__main__ import main

    cfg = yaml.safe_load((REPO / "sweeps" / "laptop.yaml").read_text())
    cfg["data"]["synth_preset"] = "full"  # 55,989 training clips: no data is made before the note
    cfg["data"]["workdir"] = str(tmp_path / "work")
    cfg["tracking"] = {"storage": str(tmp_path / "storage"), "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(cfg))

    def not_here(*args, **kwargs):
        raise ConfigError("the sweep would start here")

    monkeypatch.setattr(coordinator, "run_sweep", not_here)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert main(["--config", str(tmp_path / "full.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("kdsed.sweep: note: this sweep may take up to about 12.7 h on this machine's 2 CPU(s) "
                             "(21 models trained, on up to 55,989 clips each;"), err
    assert err[1] == "kdsed.sweep: error: the sweep would start here"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.yaml"]
    cfg["data"]["synth_preset"] = "smoke"
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(tmp_path / "full.yaml")]) == 2
    assert capsys.readouterr().err == "kdsed.sweep: error: the sweep would start here\n"  # short: no note
