"""kdsed.predict: per-class models and post-processing on features and on audio files, and the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kdsed.bundle import Bundle, assemble_bundle, load_bundle
from kdsed.constants import CLASSES
from kdsed.events import read_strong_tsv
from kdsed.features import FeatureSet, log_mel
from kdsed.models import build_model
from kdsed.predict import expand_audio_paths, main, predict_files, predict_probs
from kdsed.search import apply_postprocessing
from support.builders import TINY, make_class_bundles, model_seed, tiny_state

SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    root = tmp_path_factory.mktemp("predict")
    return load_bundle(assemble_bundle(make_class_bundles(root / "classes"), root / "bundle"))


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two clips at 16 kHz: `long.wav` (10 s) and `short.wav` (6 s), noise plus a tone burst."""
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(1)
    for name, duration_s in (("long.wav", 10.0), ("short.wav", 6.0)):
        t = np.arange(int(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
        y = 0.05 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * 1000 * t) * ((t > 1) & (t < 3))
        sf.write(root / name, y.astype(np.float32), SAMPLE_RATE)
    return root


@pytest.fixture(scope="module")
def predicted(bundle: Bundle, audio_dir: Path) -> dict:
    """`predict_files` on both clips."""
    return predict_files(bundle, [audio_dir / "long.wav", audio_dir / "short.wav"], workers=1)


def _random_features(n_frames: list[int], seed: int = 0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    x = rng.normal(-5, 2, (len(n_frames), max(n_frames), 64)).astype(np.float32)
    for i, n in enumerate(n_frames):
        x[i, n:] = 0.0
    return FeatureSet([f"clip{i}.wav" for i in range(len(n_frames))], x, np.array(n_frames))


def _direct_probs(bundle: Bundle, fs: FeatureSet, class_name: str) -> np.ndarray:
    """Class `class_name`'s frame probabilities from a freshly built copy of its model."""
    model = build_model(TINY)
    model.load_state_dict(tiny_state(model_seed(class_name)))
    x = (fs.features - bundle.normalizer.mean) / bundle.normalizer.std
    with torch.no_grad():
        frame_probs, _ = model.eval()(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(fs.n_frames))
    return frame_probs.numpy()[:, :, CLASSES.index(class_name)]


def test_predict_probs_takes_each_class_from_its_own_model(bundle: Bundle) -> None:
    fs = _random_features([60, 31, 7])
    probs = predict_probs(bundle, fs, batch_size=2)
    assert probs.shape == (3, 60, 10) and probs.dtype == np.float32
    for name in CLASSES:
        np.testing.assert_allclose(probs[:, :, CLASSES.index(name)], _direct_probs(bundle, fs, name), atol=1e-6)
    assert not probs[1, 31:].any() and not probs[2, 7:].any()
    normalized = bundle.normalizer.apply(fs)
    np.testing.assert_allclose(predict_probs(bundle, normalized, normalized=True), probs, atol=1e-6)


def test_predict_probs_checks_the_band_count(bundle: Bundle) -> None:
    fs = FeatureSet(["a.wav"], np.zeros((1, 240, 40), np.float32), np.array([240]))
    with pytest.raises(ValueError, match=r"shape \(1, 240, 40\), expected \(n_clips, frames, 64\)"):
        predict_probs(bundle, fs)


def test_predict_files_equals_features_models_and_postprocessing(bundle: Bundle, audio_dir: Path,
                                                                 predicted: dict) -> None:
    paths, table = [audio_dir / "long.wav", audio_dir / "short.wav"], predicted
    cfg = bundle.feature_config
    mels = [log_mel(sf.read(p, dtype="float32")[0], cfg) for p in paths]
    assert [len(m) for m in mels] == [240, 1 + (6 * SAMPLE_RATE - 1024) // 664]
    x = np.zeros((2, 240, 64), np.float32)
    for i, m in enumerate(mels):
        x[i, : len(m)] = m
    fs = FeatureSet(["long.wav", "short.wav"], x, np.array([len(m) for m in mels]))
    expected = apply_postprocessing(predict_probs(bundle, fs), bundle.postprocess_choice(), cfg, fs.filenames,
                                    fs.n_frames)
    assert table == expected
    assert sorted(table) == ["long.wav", "short.wav"]
    # Class thresholds start at 0.1 on untrained models (outputs near 0.5): some classes fire.
    assert sum(len(v) for v in table.values()) > 0
    assert all(e.offset_s <= 6.0 + cfg.hop_s for e in table["short.wav"])


def test_cli_writes_a_dcase_tsv(bundle: Bundle, audio_dir: Path, tmp_path: Path, predicted: dict,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "events.tsv"
    rc = main(["--models", str(bundle.directory), str(audio_dir), "--out", str(out), "--batch-size", "1",
               "--workers", "1"])
    assert rc == 0
    table, expected = read_strong_tsv(out), predicted
    assert sorted(table) == ["long.wav", "short.wav"]
    for name in table:
        assert [(e.label, round(e.onset_s, 3), round(e.offset_s, 3)) for e in table[name]] == \
            [(e.label, round(e.onset_s, 3), round(e.offset_s, 3)) for e in sorted(expected[name])]
    assert f"events in 2 files -> {out}" in capsys.readouterr().out


def test_cli_writes_the_raw_scores_the_events_were_cut_from(bundle: Bundle, audio_dir: Path, tmp_path: Path,
                                                          predicted: dict) -> None:
    from kdsed.scores_io import read_scores

    rc = main(["--models", str(bundle.directory), str(audio_dir), "--out", str(tmp_path / "events.tsv"),
               "--scores", str(tmp_path / "scores"), "--workers", "1"])
    assert rc == 0
    scores = read_scores(tmp_path / "scores" / "scores.parquet")
    assert scores.filenames == ["long.wav", "short.wav"] and list(scores.n_frames) == [240, 1 + (6 * SAMPLE_RATE - 1024) // 664]
    assert scores.meta["subset"] == "predict" and scores.hop_s == bundle.feature_config.hop_s
    cfg = bundle.feature_config
    again = apply_postprocessing(scores.scores, bundle.postprocess_choice(), cfg, scores.filenames, scores.n_frames)
    assert again == predicted
    # not over a file kdsed did not write
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "scores.parquet").write_text("my notes")
    assert main(["--models", str(bundle.directory), str(audio_dir), "--out", str(tmp_path / "e2.tsv"),
                 "--scores", str(tmp_path / "mine"), "--workers", "1"]) == 2
    assert (tmp_path / "mine" / "scores.parquet").read_text() == "my notes"


def test_cli_refuses_a_tampered_bundle_and_missing_audio(bundle: Bundle, audio_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    copy = Path(shutil.copytree(bundle.directory, tmp_path / "bundle"))
    victim = next((copy / "models").iterdir())
    victim.write_bytes(victim.read_bytes()[:-1])
    rc = main(["--models", str(copy), str(audio_dir), "--out", str(tmp_path / "e.tsv")])
    assert rc == 2 and f"{victim}: sha256 mismatch" in capsys.readouterr().err
    rc = main(["--models", str(bundle.directory), str(tmp_path / "nope.wav"), "--out", str(tmp_path / "e.tsv")])
    assert rc == 2 and f"{tmp_path / 'nope.wav'}: no such audio file or directory" in capsys.readouterr().err
    assert not (tmp_path / "e.tsv").exists()


def test_audio_arguments_expand_directories_and_refuse_clashing_names(bundle: Bundle, audio_dir: Path,
                                                                      tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not audio")
    shutil.copy(audio_dir / "short.wav", tmp_path / "long.wav")
    assert expand_audio_paths([audio_dir]) == [audio_dir / "long.wav", audio_dir / "short.wav"]
    assert expand_audio_paths([tmp_path]) == [tmp_path / "long.wav"]
    with pytest.raises(ValueError, match="have the same file name"):
        predict_files(bundle, [audio_dir / "long.wav", tmp_path / "long.wav"])
