"""Sound event detection on new audio with a per-class winner bundle.

    python -m kdsed.predict --models DIR AUDIO... --out events.tsv [--scores DIR] [--batch-size N] [--device cpu]
                            [--force]

Each audio argument is a file or a directory (every .wav directly inside it).
Class c's events come from class c's model, smoothed and thresholded with class
c's window, sigma and threshold; each distinct model runs once per batch.
Clips shorter than the nominal length are fine; longer ones are cut to it.
Every argument is checked before any feature is extracted: the bundle, the device, the audio
headers (docs/limits.md) and `--out`, which may be neither an input nor an existing file that
kdsed did not write (kdsed.safety; `--force` replaces such a file).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from kdsed import schema
from kdsed.bundle import Bundle, BundleError, load_bundle
from kdsed.config import FeatureConfig
from kdsed.constants import CLASSES, NUM_CLASSES
from kdsed.events import EventTable, MetadataError, write_strong_tsv
from kdsed.failures import EXIT_RUNTIME_FAILURE, os_error_line
from kdsed.features import FeatureSet
from kdsed.data.audio import check_audio_header
from kdsed.safety import OutputError, check_output
from kdsed.scores_io import FrameScores, write_scores
from kdsed.search import apply_postprocessing

AUDIO_SUFFIXES = (".wav",)
CHUNK_FILES = 256  # files whose features are held in memory at once


def predict_probs(bundle: Bundle, features: FeatureSet, *, batch_size: int = 32, normalized: bool = False,
                  device: str = "cpu") -> np.ndarray:
    """Frame probabilities (n_clips, frames, classes): class c's column from class c's model.

    `features` are raw log-mels (the bundle's normalizer is applied) unless `normalized`.
    Frames after a clip's `n_frames` are 0.
    """
    from kdsed.train import predict

    x = features.features
    if x.ndim != 3 or x.shape[2] != bundle.feature_config.n_mels:
        raise ValueError(f"features have shape {x.shape}, expected (n_clips, frames, "
                         f"{bundle.feature_config.n_mels})")
    fs = features if normalized else bundle.normalizer.apply(features)
    out = np.zeros((len(fs), x.shape[1], NUM_CLASSES), np.float32)
    for model_file, class_ids in bundle.model_groups().items():
        frame_probs, _ = predict(bundle.models[model_file], fs, batch_size=batch_size, device=device)
        out[:, :, class_ids] = frame_probs[:, :, class_ids]
        bad = ~np.isfinite(frame_probs[:, :, class_ids])
        if bad.any():
            clip, frame, c = (int(i[0]) for i in np.nonzero(bad))
            raise BundleError(f"{bundle.directory / model_file}: gave NaN or infinite probabilities "
                              f"({int(bad.sum())} values; the first for clip {fs.filenames[clip]}, frame {frame}, "
                              f"class {CLASSES[class_ids[c]]}); expected probabilities in [0, 1]: the weights are "
                              "unusable (a training run that diverged?)")
    return out


def predict_files(bundle: Bundle, paths: Sequence[Path | str], *, batch_size: int = 32, workers: int | None = None,
                  device: str = "cpu", progress: bool = False) -> EventTable:
    """Detected events of every audio file, keyed by the file's basename."""
    return predict_files_with_scores(bundle, paths, batch_size=batch_size, workers=workers, device=device,
                                     progress=progress)[0]


def predict_files_with_scores(bundle: Bundle, paths: Sequence[Path | str], *, batch_size: int = 32,
                              workers: int | None = None, device: str = "cpu",
                              progress: bool = False) -> tuple[EventTable, FrameScores]:
    """Detected events of every audio file (keyed by basename) and the raw frame scores they were cut from."""
    from kdsed.data import Clip
    from kdsed.features import extract

    paths = [Path(p) for p in paths]
    _check_unique_names(paths)
    choice = bundle.postprocess_choice()
    cfg = bundle.feature_config
    table: EventTable = {}
    chunks: list[tuple[list[str], np.ndarray, np.ndarray]] = []
    start = time.perf_counter()
    for first in range(0, len(paths), CHUNK_FILES):
        chunk = paths[first:first + CHUNK_FILES]
        clips = [Clip(p.name, p, "predict", None, None) for p in chunk]
        fs = extract(clips, cfg, workers=workers, progress=False)
        probs = predict_probs(bundle, fs, batch_size=batch_size, device=device)
        table.update(apply_postprocessing(probs, choice, cfg, fs.filenames, fs.n_frames))
        chunks.append((list(fs.filenames), probs, np.asarray(fs.n_frames)))
        if progress:
            done, elapsed_s = first + len(chunk), time.perf_counter() - start
            print(f"[kdsed.predict] {done}/{len(paths)} files, {done / max(elapsed_s, 1e-9):.1f} files/s",
                  file=sys.stderr, flush=True)
    return table, _joined_scores(chunks, cfg)


def _joined_scores(chunks: list[tuple[list[str], np.ndarray, np.ndarray]], cfg: FeatureConfig) -> FrameScores:
    """The chunks' frame scores as one `FrameScores` (padded to the widest chunk)."""
    width = max(probs.shape[1] for _, probs, _ in chunks)
    padded = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0))) for _, p, _ in chunks]
    return FrameScores.from_outputs([f for names, _, _ in chunks for f in names], np.concatenate(padded),
                                    np.concatenate([n for _, _, n in chunks]), cfg, subset="predict")


def expand_audio_paths(items: Sequence[Path | str]) -> list[Path]:
    """Files as given and every .wav directly inside each directory, in order; errors name the bad argument."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise MetadataError(f"{item}: directory has no {'/'.join(AUDIO_SUFFIXES)} files")
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            raise MetadataError(f"{item}: no such audio file or directory")
    return paths


def check_device(name: str) -> str:
    """The device to run on for `--device name` (`auto`: CUDA when available, else CPU); DeviceError if there is none."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {name!r}: not a torch device; expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise DeviceError(f"--device {name}: this torch ({torch.__version__}) was built without CUDA; "
                              "use --device cpu, or install a CUDA build of torch")
        count = torch.cuda.device_count()
        if count == 0:
            raise DeviceError(f"--device {name}: no CUDA GPU is visible to this process; use --device cpu")
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {name}: there are {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {name}: Apple's MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {name}: kdsed.predict runs on cpu, cuda or mps, not {device.type}")
    return name


class DeviceError(ValueError):
    """A --device this torch build or machine cannot run on."""


def _check_unique_names(paths: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for p in paths:
        if p.name in seen and seen[p.name].resolve() != p.resolve():
            raise MetadataError(f"{p} and {seen[p.name]} have the same file name; events are keyed by file name, "
                                "so predict them in separate runs")
        seen[p.name] = p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: predict events of audio files with a bundle and write a DCASE TSV."""
    parser = argparse.ArgumentParser(prog="python -m kdsed.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, type=Path, help="bundle directory (from kdsed.registry pull)")
    parser.add_argument("audio", nargs="+", help="audio files or directories of .wav files")
    parser.add_argument("--out", required=True, type=Path, help="events TSV to write (not an existing file kdsed "
                                                               "did not write, unless --force)")
    parser.add_argument("--scores", type=Path, help="also write the raw frame scores to SCORES/scores.parquet "
                                                    "(for python -m kdsed.evaluate REF.tsv --scores)")
    parser.add_argument("--force", action="store_true", help="replace --out even if kdsed did not write it")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per forward pass")
    parser.add_argument("--workers", type=int, default=None, help="feature extraction processes (default: cores)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or auto")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    start = time.perf_counter()
    try:
        device = check_device(args.device)
        paths = expand_audio_paths(args.audio)
        check_output(args.out, flag="--out", kind="file", inputs=[args.models, *paths], force=args.force)
        scores_file = args.scores / schema.PREDICT_SCORES_FILE if args.scores else None
        if scores_file is not None:
            check_output(scores_file, flag="--scores", kind="file", inputs=[args.models, *paths, args.out],
                         force=args.force)
        bundle = load_bundle(args.models)
        for path in paths:
            check_audio_header(path)
        table, scores = predict_files_with_scores(bundle, paths, batch_size=args.batch_size, workers=args.workers,
                                                  device=device, progress=len(paths) > CHUNK_FILES or sys.stderr.isatty())
    except (BundleError, MetadataError, OutputError, DeviceError) as e:
        print(f"kdsed.predict: error: {e}", file=sys.stderr)
        return 2
    try:
        write_strong_tsv(args.out, table)
        if scores_file is not None:
            write_scores(scores_file, scores)
    except OSError as e:  # a folder in the way, a full disk ...: an existing file stays as it was
        print(f"kdsed.predict: error: {os_error_line(e)}", file=sys.stderr)
        return EXIT_RUNTIME_FAILURE
    n_events = sum(len(v) for v in table.values())
    print(f"{n_events} events in {len(table)} files -> {args.out} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
