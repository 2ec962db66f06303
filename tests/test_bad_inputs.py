"""Bad input, end to end: each gets one error naming the file (and line) or config key, a non-zero exit
without a traceback, and leaves every file that was there before byte-identical with no temporary left.

The sweep's start-up checks (`kdsed.sweep.preflight`) and one metadata case run the real CLI in a
subprocess; the rest call the library entry points (and `main()` of predict / evaluate).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from kdsed import evaluate, predict
from kdsed.bundle import assemble_bundle, write_class_bundle
from kdsed.config import ConfigError, FeatureConfig, SweepConfig, load_yaml
from kdsed.constants import CLASSES
from kdsed.data import AudioError, Clip, MissingAudioError, load_dataset
from kdsed.events import Event, MetadataError, read_strong_tsv, write_strong_tsv
from kdsed.features import LOG_EPS, FeatureError, load_features
from kdsed.pseudolabels import PseudoLabelError, PseudoLabels, read_pseudo_labels, write_pseudo_labels
from kdsed.sweep.preflight import DEADLINE_S, check_sweep
from support.builders import TINY, dummy_normalizer, make_class_bundles, snapshot, tiny_state

REPO = Path(__file__).resolve().parents[1]
CFG = FeatureConfig()
SR = CFG.sample_rate


# ---- helpers ------------------------------------------------------------------------------------------



def rewrite(path: Path, data: bytes | str) -> None:
    """Replace `path` by a new file (a new inode: the dataset copy shares the originals' by hard links)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


@pytest.fixture
def data_root(smoke_dataset: Path, tmp_path: Path) -> Path:
    """A copy of the synthetic smoke set to damage (hard links: change files only through `rewrite`)."""
    return Path(shutil.copytree(smoke_dataset, tmp_path / "data", copy_function=os.link))


def edit_line(path: Path, line: int, text: str) -> None:
    """Replace 1-based `line` of a text file."""
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    rewrite(path, "\n".join(lines) + "\n")


def first_clip(root: Path, metadata: str) -> str:
    return (root / metadata).read_text().splitlines()[1].split("\t")[0]


# ---- metadata and the data layout (load_dataset) ------------------------------------------------------

WEAK_CSV, TEST_CSV, EVAL_CSV = "metadata/train/weak.csv", "metadata/test/test.csv", "metadata/eval/eval.csv"


def _unknown_label(root: Path) -> None:
    edit_line(root / WEAK_CSV, 2, f"{first_clip(root, WEAK_CSV)}\tSpeech,Doggo")


def _malformed_row(root: Path) -> None:
    edit_line(root / TEST_CSV, 3, f"{first_clip(root, TEST_CSV)}\t1.0\tSpeech")


def _onset_after_offset(root: Path) -> None:
    edit_line(root / TEST_CSV, 2, f"{first_clip(root, TEST_CSV)}\t5.0\t5.0\tSpeech")


def _comma_separated(root: Path) -> None:
    edit_line(root / TEST_CSV, 4, f"{first_clip(root, TEST_CSV)},1.0,2.0,Speech")


def _not_utf8(root: Path) -> None:
    lines = (root / EVAL_CSV).read_bytes().split(b"\n")
    lines[1] = b"Y\xe9t\xe9.wav\t1.0\t2.0\tDog"  # saved as Latin-1
    rewrite(root / EVAL_CSV, b"\n".join(lines))


def _missing_audio(root: Path) -> None:
    (root / "audio/train/weak" / first_clip(root, WEAK_CSV)).unlink()


def _header_only(root: Path) -> None:
    rewrite(root / EVAL_CSV, "filename\tonset\toffset\tevent_label\n")


def _no_eval_audio(root: Path) -> None:
    shutil.rmtree(root / "audio/eval")


def _no_eval_metadata(root: Path) -> None:
    (root / EVAL_CSV).unlink()


METADATA_CASES = [
    (_unknown_label, MetadataError, rf"{WEAK_CSV}, line 2: unknown class label 'Doggo'; expected one of Alarm_bell"),
    (_malformed_row, MetadataError, rf"{TEST_CSV}, line 3: malformed row .*expected 'filename<TAB>onset<TAB>"),
    (_onset_after_offset, MetadataError, rf"{TEST_CSV}, line 2: onset 5.0 >= offset 5.0 for Y"),
    (_comma_separated, MetadataError, rf"{TEST_CSV}, line 4: .* looks like an event row separated by commas"),
    (_not_utf8, MetadataError, rf"{EVAL_CSV}, line 2: not UTF-8 text \(byte 35\)"),
    (_missing_audio, MissingAudioError, rf"{WEAK_CSV}: 1 of 24 listed clips have no audio file in .*audio/train/weak; "
                                        r"first 1: Y\S+\.wav \(line 2\)"),
    (_header_only, MetadataError, rf"{EVAL_CSV}, line 1: no clips listed; expected at least one row after the header"),
    (_no_eval_audio, MissingAudioError, rf"{EVAL_CSV}: 16 of 16 listed clips have no audio file in .*audio/eval"),
    (_no_eval_metadata, MetadataError, r"no metadata for subset 'eval'; expected one of .*metadata/eval/eval\.csv"),
]


@pytest.mark.parametrize("damage, error, message", METADATA_CASES, ids=lambda x: getattr(x, "__name__", ""))
def test_bad_metadata_names_the_file_and_line(data_root: Path, damage: Callable, error: type, message: str) -> None:
    damage(data_root)
    before = snapshot(data_root)
    with pytest.raises(error, match=message):
        load_dataset(data_root)
    assert snapshot(data_root) == before  # reading never writes


# ---- audio: refused (named) or accepted (with one note per kind) -----------------------------------------

def _clip(path: Path) -> Clip:
    return Clip(path.name, path, "test", None, None)


@pytest.fixture
def cache(data_root: Path, tmp_path: Path) -> tuple[Path, list[Clip]]:
    """A feature cache holding one entry (two good clips): the output that bad audio must not disturb."""
    good = [_clip(p) for p in sorted((data_root / "audio/eval").iterdir())[:2]]
    load_features(good, CFG, tmp_path / "cache", workers=1, progress=False)
    return tmp_path / "cache", good


def _truncated(path: Path) -> None:
    rewrite(path, path.read_bytes()[: path.stat().st_size // 2])


def _text_as_wav(path: Path) -> None:
    rewrite(path, "filename\tonset\toffset\tevent_label\nthis is a metadata file saved as .wav\n")


def _header_only_wav(path: Path) -> None:
    rewrite(path, path.read_bytes()[:44])


def _nan_samples(path: Path) -> None:
    x = np.zeros(SR, np.float32)
    x[100] = np.nan
    path.unlink()
    sf.write(path, x, SR, subtype="FLOAT")


@pytest.mark.parametrize("damage, message", [
    (_truncated, r"truncated audio file: its header declares 320000 bytes of samples but the file holds 159978 "
                 r"\(50 %\)"),
    (_text_as_wav, r"not a readable audio file \(.*Format not recognised.*\); expected a WAV/FLAC/OGG clip"),
    (_header_only_wav, r"truncated audio file: .* holds 0 \(0 %\)"),
    (_nan_samples, r"audio contains NaN or infinite samples"),
], ids=["truncated", "text-renamed-wav", "header-only", "nan-samples"])
def test_bad_audio_is_refused_naming_the_file(data_root: Path, cache: tuple[Path, list[Clip]],
                                              damage: Callable, message: str) -> None:
    cache_dir, good = cache
    bad = data_root / "audio/test" / first_clip(data_root, TEST_CSV)
    damage(bad)
    before = snapshot(cache_dir)
    with pytest.raises(AudioError, match=rf"^{bad}: {message}"):
        load_features([*good, _clip(bad)], CFG, cache_dir, workers=1, progress=False)
    assert snapshot(cache_dir) == before  # no new entry, no temporary folder, the old entry untouched


def test_valid_but_unusual_audio_is_converted_with_one_note_per_kind(tmp_path: Path, caplog) -> None:
    rng = np.random.default_rng(0)
    files = {"silent.wav": (np.zeros(10 * SR), SR),
             "stereo44k_a.wav": (0.1 * rng.standard_normal((10 * 44100, 2)), 44100),
             "stereo44k_b.wav": (0.1 * rng.standard_normal((5 * 44100, 2)), 44100),
             "long12s.wav": (0.1 * rng.standard_normal(12 * SR), SR)}
    for name, (x, rate) in files.items():
        sf.write(tmp_path / name, x.astype(np.float32), rate)
    with caplog.at_level(logging.WARNING, logger="kdsed.features"):
        fs = load_features([_clip(tmp_path / n) for n in files], CFG, tmp_path / "cache", workers=1, progress=False)
    assert np.all(np.isfinite(fs.features))
    assert fs.features[0].min() == fs.features[0].max() == pytest.approx(np.log(LOG_EPS))  # silence: finite
    np.testing.assert_array_equal(fs.n_frames, [240, 240, CFG.frames_for_samples(5 * SR), 240])  # 12 s cut to 10
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 4, notes  # one per kind, not one per clip
    text = "\n".join(notes)
    for expected in ("2 of 4 clips have several channels and were downmixed to mono; first: ",
                     "2 of 4 clips have another sample rate and were resampled to 16000 Hz; first: ",
                     "1 of 4 clips are longer than 10 s and were cut to 10 s; first: ",
                     "1 of 4 clips are silent (valid: their log-mels are log(1e-10) everywhere); first: "):
        assert expected in text, text
    assert "long12s.wav (12.00 s)" in text and "stereo44k_a.wav (2 channels)" in text


# ---- NaN and infinity in features and predictions -----------------------------------------------------

def test_corrupt_feature_cache_is_refused_naming_the_entry(cache: tuple[Path, list[Clip]]) -> None:
    cache_dir, good = cache
    [entry] = [p for p in cache_dir.iterdir()]
    features = np.load(entry / "features.npy", mmap_mode="r+")
    features[1, 7, 3] = np.nan
    features.flush()
    del features
    before = snapshot(cache_dir)
    with pytest.raises(FeatureError, match=rf"^{entry}/features.npy: damaged feature-cache entry: NaN or infinite "
                                           rf"values, the first in clip {good[1].filename} \(frame 7, band 3\); "
                                           rf"delete {entry} to extract the features again"):
        load_features(good, CFG, cache_dir, workers=1, progress=False)
    rewrite(entry / "features.npy", (entry / "features.npy").read_bytes()[:1000])
    with pytest.raises(FeatureError, match=rf"{entry}/features.npy: damaged feature-cache entry: cannot be read"):
        load_features(good, CFG, cache_dir, workers=1, progress=False)
    assert set(snapshot(cache_dir)) == set(before)  # nothing added or removed


def _labels(n: int = 3, frames: int = 240) -> PseudoLabels:
    rng = np.random.default_rng(0)
    return PseudoLabels([f"clip{i}.wav" for i in range(n)], rng.uniform(0, 1, (n, frames, 10)).astype(np.float32),
                        np.full(n, frames), {"pass": 1})


def test_nan_pseudo_labels_are_neither_written_nor_read(tmp_path: Path) -> None:
    path = write_pseudo_labels(tmp_path / "pass-1.parquet", _labels())
    before = snapshot(tmp_path)
    bad = _labels()
    bad.probs[2, 17, CLASSES.index("Dog")] = np.nan
    with pytest.raises(PseudoLabelError, match=rf"^{path}: refusing to write pseudo-labels with 1 NaN or infinite "
                                               r"values, the first of clip 'clip2.wav', frame 17, class Dog"):
        write_pseudo_labels(path, bad)
    assert snapshot(tmp_path) == before
    df = pd.read_parquet(path)
    df.loc[5, "Speech"] = np.inf
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "edited.parquet")
    with pytest.raises(PseudoLabelError, match=r"edited.parquet: holds 1 NaN or infinite values, the first of clip "
                                               r"'clip0.wav', frame 5, class Speech \(inf\)"):
        read_pseudo_labels(tmp_path / "edited.parquet")
    rewrite(tmp_path / "edited.parquet", b"PAR1 not really")
    with pytest.raises(PseudoLabelError, match="edited.parquet: not a readable pseudo-label Parquet file"):
        read_pseudo_labels(tmp_path / "edited.parquet")


def test_nan_predictions_are_refused_and_the_old_events_file_kept(tmp_path: Path, data_root: Path, capsys) -> None:
    classes = make_class_bundles(tmp_path / "classes")
    nan_state = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v  # a model that diverged
                 for k, v in tiny_state(0).items()}
    classes["Dog"] = write_class_bundle(tmp_path / "nan-dog", class_name="Dog", model_config=TINY, state_dict=nan_state,
                                        feature_config=CFG, normalizer=dummy_normalizer(), median_window=3,
                                        gaussian_sigma=0.0, threshold=0.5, provenance={})
    bundle = assemble_bundle(classes, tmp_path / "bundle")
    out = tmp_path / "events.tsv"
    write_strong_tsv(out, {"old.wav": [Event(1.0, 2.0, "Dog")]})
    before = snapshot(tmp_path / "classes"), out.read_bytes()
    wav = data_root / "audio/eval" / first_clip(data_root, EVAL_CSV)
    code = predict.main(["--models", str(bundle), str(wav), "--out", str(out), "--workers", "1", "--force"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"kdsed.predict: error: {bundle}/models/") and "gave NaN or infinite probabilities" in err
    assert f"the first for clip {wav.name}, frame 0, class Dog" in err
    assert (snapshot(tmp_path / "classes"), out.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "classes", "data", "events.tsv", "nan-dog"]


def test_events_with_nan_times_are_neither_read_nor_written(tmp_path: Path, capsys) -> None:
    ref = tmp_path / "ref.tsv"
    write_strong_tsv(ref, {"a.wav": [Event(0.5, 1.0, "Dog")]})
    before = ref.read_bytes()
    with pytest.raises(MetadataError, match=rf"^{ref}: event Dog of a.wav has onset nan / offset 1.0; expected"):
        write_strong_tsv(ref, {"a.wav": [Event(float("nan"), 1.0, "Dog")]})
    assert ref.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ref.tsv"]
    est = tmp_path / "est.tsv"
    est.write_text("filename\tonset\toffset\tevent_label\na.wav\tnan\t1.0\tDog\n")
    assert evaluate.main([str(ref), str(est)]) == 2
    assert capsys.readouterr().err == (f"error: {est}, line 2: onset nan / offset 1.0 must be finite and >= 0\n")
    empty = tmp_path / "empty.tsv"
    empty.write_text("filename\tonset\toffset\tevent_label\n")
    assert evaluate.main([str(empty), str(empty)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {empty}: no clips listed; expected at least one row")
    assert read_strong_tsv(ref) == {"a.wav": [Event(0.5, 1.0, "Dog")]}


# ---- sweep YAML ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("distill: {pases: 3}\n", r"distill\.pases: unknown key; known keys here: mask_weak_clips, passes"),
    ("train: {epochs: '6'}\n", r"train\.epochs: expected an integer, got '6'"),
    ("distill: {passes: 0}\n", r"distill\.passes: must be >= 1"),
    ("shallow: {name: shallow, width: -0.5}\n", r"shallow\.width: must be > 0"),
    ("deep: {name: deep, width: .nan}\n", r"deep\.width: expected a finite number, got nan"),
    ("distill:\n  passes: 4\n  passes: 2\n", r"distill\.passes: given twice \(lines 2 and 3\)"),
    ("distill: {variants: [{model: deep, smoothing: gauss}]}\n",
     r"distill\.variants\[0\]\.smoothing: 'gauss' is not one of 'none', 'median', 'median\+gaussian'"),
    ("ray: {use_gpu: maybe}\n", r"ray\.use_gpu: 'maybe' is not one of 'auto', 'yes', 'no'"),
], ids=["unknown-key", "wrong-type", "passes-0", "negative-width", "nan", "duplicate-key", "bad-variant", "literal"])
def test_invalid_sweep_yaml_names_the_file_and_key_path(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{path}: {message}"):
        load_yaml(SweepConfig, path)


# ---- the sweep's start-up checks, through the CLI -----------------------------------------------------------

@pytest.fixture
def sweep_dir(tmp_path: Path, data_root: Path) -> Path:
    """A sweep folder with outputs of an earlier sweep (storage, MLflow store) and a file where a folder could be."""
    cfg = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    cfg["data"] = {**cfg["data"], "root": str(data_root), "workdir": str(tmp_path / "work")}
    cfg["tracking"] = {"storage": str(tmp_path / "storage"), "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "storage/sweeps/20250101-000000-abcdef").mkdir(parents=True)
    (tmp_path / "storage/sweeps/20250101-000000-abcdef/state.json").write_text('{"sweep_id": "20250101-000000-abcdef"}')
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("create table runs (run_uuid text)")
    (tmp_path / "notes.txt").write_text("not a folder, not a database\n")
    return tmp_path


S3_NO_NETWORK = "s3://kdsed-bucket/sweeps?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
SWEEP_CASES = {
    "tracking-server-down": (["--tracking-uri", "http://127.0.0.1:9"],
                             r"tracking\.tracking_uri \(--tracking-uri\) 'http://127\.0\.0\.1:9': the MLflow tracking "
                             r"server cannot be reached .*Connection refused"),
    "tracking-dir-is-a-file": (["--tracking-uri", "sqlite:///{tmp}/notes.txt/mlflow.db"],
                               r"tracking\.tracking_uri \(--tracking-uri\) 'sqlite:///\S+/notes.txt/mlflow.db': "
                               r"\S+/notes.txt is a file, not a folder"),
    "tracking-dir-not-writable": (["--tracking-uri", "sqlite:////sys/kdsed/mlflow.db"],
                                  r"tracking\.tracking_uri \(--tracking-uri\) 'sqlite:////sys/kdsed/mlflow.db': cannot "
                                  r"create /sys/kdsed in /sys \(Permission denied\)"),
    "tracking-not-sqlite": (["--tracking-uri", "sqlite:///{tmp}/notes.txt"],
                            r"\S+/notes.txt is not a SQLite database \(it starts with b'not a fo'\)"),
    "storage-is-a-file": (["--storage", "{tmp}/notes.txt"],
                          r"tracking\.storage \(--storage\) '\S+/notes.txt': \S+/notes.txt is a file, not a folder"),
    "storage-s3-unreachable": (["--storage", S3_NO_NETWORK],
                               r"tracking\.storage \(--storage\) 's3://kdsed-bucket/sweeps\?\S+': the storage "
                               r"cannot be reached: OSError: .*(Could not connect|NETWORK_CONNECTION)"),
    "ray-cluster-down": (["--address", "127.0.0.1:9"],
                         r"ray\.address \(--address\) '127\.0\.0\.1:9': no Ray cluster answers at 127\.0\.0\.1:9"),
    "passes-0": (["--passes", "0"], r"distill\.passes: must be >= 1"),
    "unknown-label": (["--data", "{tmp}/bad-data"], r"\S+/bad-data/metadata/train/weak.csv, line 2: unknown class "
                                                     r"label 'Doggo'"),
    "truncated-audio": (["--data", "{tmp}/bad-data"], r"\S+/bad-data/audio/test/\S+\.wav: truncated audio file"),
}


#: Cases that wait for a network timeout (~9 s): the full suite runs them, the fast lane does not.
SLOW_SWEEP_CASES = {"storage-s3-unreachable"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_SWEEP_CASES else c
                                  for c in SWEEP_CASES])
def test_sweep_refuses_bad_setup_at_start_up(sweep_dir: Path, data_root: Path, case: str) -> None:
    if case == "tracking-dir-not-writable" and not os.path.isdir("/sys/kernel"):
        pytest.skip("needs a read-only /sys")
    args, message = SWEEP_CASES[case]
    if "bad-data" in " ".join(args):
        bad = Path(shutil.copytree(data_root, sweep_dir / "bad-data", copy_function=os.link))
        if case == "unknown-label":
            _unknown_label(bad)
        else:
            _truncated(bad / "audio/test" / first_clip(bad, TEST_CSV))
    before = snapshot(sweep_dir)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kdsed.sweep", "--config", str(sweep_dir / "sweep.yaml"),
         *(a.format(tmp=sweep_dir) for a in args)],
        cwd=sweep_dir, capture_output=True, text=True, timeout=120,
        env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"})
    elapsed_s = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "[kdsed.sweep" not in proc.stderr  # no traceback; the sweep never began
    assert proc.stderr.startswith("kdsed.sweep: error: ") and proc.stderr.count("error:") == 1, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert elapsed_s < DEADLINE_S + 10
    assert snapshot(sweep_dir) == before  # nothing created (not even a folder), nothing changed


def test_a_good_setup_passes_the_start_up_checks_and_they_create_nothing(sweep_dir: Path) -> None:
    cfg = load_yaml(SweepConfig, sweep_dir / "sweep.yaml")
    fresh = replace(cfg.tracking, storage=str(sweep_dir / "new/storage"),
                    tracking_uri=f"sqlite:///{sweep_dir}/new/m.db")
    before = snapshot(sweep_dir)
    for setup in (cfg, replace(cfg, tracking=fresh), replace(cfg, data=replace(cfg.data, root=None))):
        check_sweep(setup)
    assert snapshot(sweep_dir) == before


# ---- found by trying the CLI as a user would (issue 15) ----------------------------------------------------

def _filename_header(root: Path) -> None:
    edit_line(root / WEAK_CSV, 1, "Filename\tevent_labels")


def _strong_header_misspelt(root: Path) -> None:
    edit_line(root / TEST_CSV, 1, "filename\tOnset\tOffset\tevent_label")


def _duplicate_event_row(root: Path) -> None:
    lines = (root / TEST_CSV).read_text().splitlines()
    event = next(i for i, line in enumerate(lines) if line.count("\t") == 3 and i > 0)
    lines.insert(event + 2, lines[event])  # the row again, one line further down
    rewrite(root / TEST_CSV, "\n".join(lines) + "\n")


@pytest.mark.parametrize("damage, message", [
    (_filename_header, rf"{WEAK_CSV}, line 1: header \['Filename', 'event_labels'\] is not in lower case; expected "
                       r"'filename<TAB>event_labels'"),
    (_strong_header_misspelt, rf"{TEST_CSV}, line 1: header \['filename', 'Onset', 'Offset', 'event_label'\] is not "
                              r"in lower case"),
    (_duplicate_event_row, rf"{TEST_CSV}, line \d+: repeats line \d+ \(\S+\.wav [\d.]+ [\d.]+ \w+\); an event listed "
                           r"twice is counted twice: remove the repeated row"),
], ids=["Filename-header", "misspelt-strong-header", "duplicate-event-row"])
def test_header_spelling_and_repeated_rows_are_named(data_root: Path, damage: Callable, message: str) -> None:
    damage(data_root)
    before = snapshot(data_root)
    with pytest.raises(MetadataError, match=message) as err:
        load_dataset(data_root)
    assert "unknown class label" not in str(err.value)
    assert snapshot(data_root) == before


def test_evaluate_refuses_a_reference_with_a_repeated_event(tmp_path: Path, capsys) -> None:
    ref = tmp_path / "ref.tsv"
    ref.write_text("filename\tonset\toffset\tevent_label\na.wav\t0.5\t1.0\tDog\nb.wav\nA.wav\t0.5\t1.0\tDog\n"
                   "a.wav\t0.5\t1.0\tDog\n")
    est = tmp_path / "est.tsv"
    write_strong_tsv(est, {"a.wav": [Event(0.5, 1.0, "Dog")]})
    assert evaluate.main([str(ref), str(est)]) == 2  # before: read twice, a perfect estimate scored recall 0.5
    assert capsys.readouterr().err == (f"error: {ref}, line 5: repeats line 2 (a.wav 0.5 1 Dog); an event listed "
                                       "twice is counted twice: remove the repeated row\n")
    assert evaluate.main([str(est), str(ref)]) == 2  # a system output that repeats an event, likewise
    assert "line 5: repeats line 2" in capsys.readouterr().err


@pytest.mark.parametrize("device, message", [
    ("bogus", "--device 'bogus': not a torch device; expected cpu, cuda, cuda:N or auto"),
    ("cuda", "--device cuda: "),
    ("cuda:7", "--device cuda:7: "),
])
def test_predict_refuses_a_device_it_cannot_use_before_reading_audio(tmp_path: Path, data_root: Path, device: str,
                                                                     message: str, capsys, monkeypatch) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the GPUs asked for")
    extracted = []
    monkeypatch.setattr("kdsed.features.extract", lambda *a, **k: extracted.append(a))  # must never be reached
    bundle = assemble_bundle(make_class_bundles(tmp_path / "classes"), tmp_path / "bundle")
    wav = data_root / "audio/eval" / first_clip(data_root, EVAL_CSV)
    code = predict.main(["--models", str(bundle), str(wav), "--out", str(tmp_path / "e.tsv"), "--device", device])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"kdsed.predict: error: {message}") and err.count("\n") == 1, err
    assert "Traceback" not in err and not extracted and not (tmp_path / "e.tsv").exists()
    if device == "cuda" and not torch.backends.cuda.is_built():
        assert "was built without CUDA; use --device cpu" in err


@pytest.mark.parametrize("config, message", [
    ("{tmp}", "{tmp}: is a folder, not a file; expected a YAML file"),
    ("/dev/null", "/dev/null: is a character device, not a file; expected a YAML file"),
    ("{tmp}/broken.yaml", "{tmp}/broken.yaml, line 2, column 1: not valid YAML: expected ',' or ']', but got "
                          "'<stream end>' (while parsing a flow sequence)"),
], ids=["folder", "dev-null", "yaml-error"])
def test_sweep_config_that_is_not_a_yaml_file_is_one_line(tmp_path: Path, config: str, message: str) -> None:
    (tmp_path / "broken.yaml").write_text("train: {epochs: [1, 2\n")
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "kdsed.sweep", "--config", config.format(tmp=tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr == f"kdsed.sweep: error: {message.format(tmp=tmp_path)}\n"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args, message", [
    (["--seed", "-5"], "--seed -5: not a seed; expected an integer from 0 to 4294967295"),
    (["--passes", "100000"], "distill.passes (--passes) 100000: more than 20, the bound for a sweep (see "
                             "docs/limits.md); pass --allow-large to run it anyway"),
    (["--resume"], "--resume: no sweep to resume in {tmp}/storage (the folder does not exist)"),
], ids=["negative-seed", "absurd-passes", "nothing-to-resume"])
def test_sweep_arguments_are_refused_before_anything_is_created(tmp_path: Path, args: list[str], message: str) -> None:
    cfg = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    cfg["data"] = {**cfg["data"], "workdir": str(tmp_path / "work")}
    cfg["tracking"] = {"storage": str(tmp_path / "storage"), "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "kdsed.sweep", "--config", str(tmp_path / "sweep.yaml"), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr == f"kdsed.sweep: error: {message.format(tmp=tmp_path)}\n"
    assert snapshot(tmp_path) == before  # before: state, MLflow store and half a data folder were written


def test_report_out_an_existing_folder_is_one_line(tmp_path: Path, capsys) -> None:
    from kdsed import report

    (tmp_path / "results").mkdir()
    before = snapshot(tmp_path)
    assert report.main(["--tracking-uri", f"sqlite:///{tmp_path}/none.db", "--out", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err == (f"error: --out {tmp_path}/results: is a folder; expected the path of a file "
                                       "to write\n")
    assert snapshot(tmp_path) == before
