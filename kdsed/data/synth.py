"""The built-in synthetic DESED-like data set, written in the DCASE 2018 Task 4 layout.

`python -m kdsed.data.synth --out DIR --preset smoke|mini|full --seed N`

The label structure is the real one (`kdsed.data.structure`): `test` and `eval` clips are real
clips of the bundled DCASE 2018 annotations, with their names and exactly their events; weak clips
are real weak clips with their tags, their event timings copied from real `test` layouts. The
sounds, backgrounds and levels are synthetic.

Each clip is rendered from its own RNG, seeded by (seed, subset, index), and the real clips of a
subset are taken in an order seeded by (seed, subset), so a clip's bytes do not depend on the
preset, the number of workers or the order of work; smaller presets are prefixes of larger ones.
Hidden strong labels of the training subsets are written beside their metadata
(`metadata/train/<subset>_strong.tsv`) for analysis only. `synth.json` is written last and marks a
complete set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import NoReturn

import numpy as np
import soundfile as sf

from kdsed.atomic import write_text_atomic
from kdsed.constants import (
    CLASS_INDEX, EVAL, SUBSETS, TEST, TRAIN_SUBSETS, UNLABEL_IN_DOMAIN, UNLABEL_OUT_OF_DOMAIN, WEAK,
)
from kdsed.data.layout import HIDDEN_SUFFIX, LAYOUTS, write_clip_list, write_weak_csv
from kdsed.data.real_metadata import class_layouts, named_duration_s, real_metadata
from kdsed.data.scenes import Scene, SceneConfig, SceneKind, render_scene
from kdsed.data.structure import ClipPlan, real_clip_plan, synthetic_filename, tagged_plan
from kdsed.events import Event, MetadataError, write_strong_tsv

GENERATOR_VERSION = 2
MARKER = "synth.json"
PARTIAL_MARKER = "synth.partial.json"
SUBSET_KIND: dict[str, SceneKind] = {
    WEAK: "weak", UNLABEL_IN_DOMAIN: "in_domain", UNLABEL_OUT_OF_DOMAIN: "out_of_domain", TEST: "strong", EVAL: "strong",
}
#: Subsets made of real clips (names, lengths and labels of the bundled DCASE 2018 metadata).
REAL_SUBSETS = (WEAK, TEST, EVAL)
_PLAN_STREAM, _ORDER_STREAM = 1, 2  # RNG streams beside a clip's sound stream


@dataclass(frozen=True)
class SynthPreset:
    """Clip counts per subset and the scene settings of a synthetic set."""

    counts: dict[str, int]
    scene: SceneConfig = field(default_factory=SceneConfig)


PRESETS: dict[str, SynthPreset] = {
    "smoke": SynthPreset({WEAK: 24, UNLABEL_IN_DOMAIN: 24, UNLABEL_OUT_OF_DOMAIN: 16, TEST: 16, EVAL: 16}),
    "mini": SynthPreset({WEAK: 240, UNLABEL_IN_DOMAIN: 480, UNLABEL_OUT_OF_DOMAIN: 240, TEST: 288, EVAL: 880}),
    "full": SynthPreset({WEAK: 1578, UNLABEL_IN_DOMAIN: 14412, UNLABEL_OUT_OF_DOMAIN: 39999, TEST: 288, EVAL: 880}),
}


def clip_rng(seed: int, subset: str, index: int, stream: int = 0) -> np.random.Generator:
    """The RNG of clip `index` of `subset` (independent of every other clip); stream 0 draws its sound."""
    return np.random.default_rng([GENERATOR_VERSION, seed, SUBSETS.index(subset), index, stream])


def clip_filename(seed: int, subset: str, index: int) -> str:
    """A YouTube-like name for a clip that is not a real one, unique per (seed, subset, index)."""
    return synthetic_filename(f"{seed}:{subset}:{index}")


@lru_cache(maxsize=16)
def real_order(seed: int, subset: str) -> tuple[str, ...]:
    """The real clips of `subset` (weak, test or eval) in the order seed `seed` takes them.

    A seeded shuffle, in which the clips that first bring each class come first: any preset with at
    least 10 clips of the subset (`smoke` too) has every class in it.
    """
    real = real_metadata()
    labels = real.weak_tags if subset == WEAK else {n: {e.label for e in ev} for n, ev in real.strong[subset].items()}
    names = list(labels)
    order = np.random.default_rng([GENERATOR_VERSION, seed, SUBSETS.index(subset), 0, _ORDER_STREAM]).permutation(
        len(names))
    shuffled = [names[i] for i in order]
    first, covered = [], set()
    for name in shuffled:
        if not covered.issuperset(labels[name]):
            first.append(name)
            covered.update(labels[name])
    chosen = set(first)
    return tuple(first + [name for name in shuffled if name not in chosen])


@lru_cache(maxsize=1)
def _test_layouts() -> dict[str, list[tuple[Event, ...]]]:
    return class_layouts(real_metadata().strong[TEST])


def plan_clip(seed: int, subset: str, index: int, scene: SceneConfig = SceneConfig()) -> ClipPlan:
    """Name, length and target events of clip `index` of `subset` (pure: same arguments, same plan)."""
    rng = clip_rng(seed, subset, index, _PLAN_STREAM)
    real = real_metadata()
    if subset in (TEST, EVAL):
        name = real_order(seed, subset)[index]
        return real_clip_plan(name, real.strong[subset][name])
    if subset == WEAK:
        name = real_order(seed, subset)[index]
        return tagged_plan(rng, name, named_duration_s(name), real.weak_tags[name], _test_layouts())
    name = clip_filename(seed, subset, index)
    if subset == UNLABEL_OUT_OF_DOMAIN:
        return ClipPlan(name, scene.clip_duration_s, None)
    combos = list(real.weak_tags.values())
    tags = () if rng.random() < scene.p_empty_in_domain else combos[rng.integers(len(combos))]
    return tagged_plan(rng, name, scene.clip_duration_s, tags, _test_layouts())


def render_clip(seed: int, subset: str, index: int, scene: SceneConfig = SceneConfig(), *,
                keep_tracks: bool = False) -> Scene:
    """Render clip `index` of `subset` (pure: same arguments, same samples)."""
    return _render(seed, subset, index, plan_clip(seed, subset, index, scene), scene, keep_tracks)


def _render(seed: int, subset: str, index: int, plan: ClipPlan, scene: SceneConfig, keep_tracks: bool) -> Scene:
    cfg = replace(scene, clip_duration_s=plan.duration_s)
    return render_scene(clip_rng(seed, subset, index), cfg, SUBSET_KIND[subset], plan.events, keep_tracks=keep_tracks)


def audio_dir(root: Path, subset: str) -> Path:
    """Where the synthetic set writes the audio of `subset` (the DCASE 2018 name)."""
    return root / LAYOUTS[subset][0].audio_dirs[0]


def _render_job(job: tuple[str, int, int, str, SceneConfig]) -> tuple[str, str, tuple[Event, ...]]:
    root, seed, index, subset, scene = job
    plan = plan_clip(seed, subset, index, scene)
    clip = _render(seed, subset, index, plan, scene, False)
    sf.write(audio_dir(Path(root), subset) / plan.filename, clip.audio, scene.sample_rate, subtype="PCM_16",
             format="WAV")
    return subset, plan.filename, clip.events


def _marker(preset: str, seed: int) -> dict:
    counts = PRESETS[preset].counts
    return {"generator": "kdsed.data.synth", "version": GENERATOR_VERSION, "preset": preset, "seed": seed,
            "counts": {s: counts[s] for s in SUBSETS}, "scene": asdict(PRESETS[preset].scene),
            "label_structure": "real DCASE 2018 Task 4 metadata (kdsed/data/dcase2018)"}


def is_complete(root: Path | str, preset: str, seed: int) -> bool:
    """Whether `root` holds a complete set of this preset, seed and generator version."""
    path = Path(root) / MARKER
    if not path.is_file():
        return False
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    expected = _marker(preset, seed)
    return all(found.get(k) == expected[k] for k in ("version", "preset", "seed", "counts"))


def _prepare(root: Path) -> None:
    """Make `root` ready for a fresh set, clearing only what an earlier kdsed set left there."""
    ours = (root / MARKER).is_file() or (root / PARTIAL_MARKER).is_file()
    if root.is_dir() and any(root.iterdir()) and not ours:
        raise FileExistsError(f"{root}: folder is not empty and holds no kdsed synthetic set; choose another --out")
    if ours:
        for name in ("audio", "metadata"):
            shutil.rmtree(root / name, ignore_errors=True)
        (root / MARKER).unlink(missing_ok=True)
    for subset in SUBSETS:
        audio_dir(root, subset).mkdir(parents=True, exist_ok=True)


def generate(out: Path | str, preset: str = "mini", seed: int = 0, *, progress: bool = True,
             workers: int | None = None) -> Path:
    """Generate the synthetic set `preset` with `seed` under `out` (skipped if already complete); returns the root."""
    check_arguments(preset, seed, workers)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root}: is a file, not a folder; choose another --out")
    if is_complete(root, preset, seed):
        _say(progress, f"{root}: complete synthetic set (preset {preset}, seed {seed}) already there; nothing to do")
        return root
    _prepare(root)
    write_text_atomic(root / PARTIAL_MARKER, json.dumps(_marker(preset, seed), indent=2))
    cfg = PRESETS[preset]
    jobs = [(str(root), seed, i, s, cfg.scene) for i in range(max(cfg.counts.values()))
            for s in SUBSETS if i < cfg.counts[s]]
    results = _run_jobs(jobs, workers, progress)
    _write_metadata(root, results)
    write_text_atomic(root / MARKER, json.dumps(_marker(preset, seed), indent=2))
    (root / PARTIAL_MARKER).unlink()
    return root


def check_arguments(preset: str, seed: int, workers: int | None = None) -> None:
    """Refuse a bad preset, seed or worker count (ValueError naming the option) before anything is written."""
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r}: unknown preset; expected one of {', '.join(PRESETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"--seed {seed!r}: expected an integer >= 0")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"--workers {workers!r}: expected an integer >= 1")
    real = real_metadata()
    sizes = {WEAK: len(real.weak_tags), TEST: len(real.strong[TEST]), EVAL: len(real.strong[EVAL])}
    for subset in REAL_SUBSETS:
        if PRESETS[preset].counts[subset] > sizes[subset]:
            raise ValueError(f"preset {preset!r}: {PRESETS[preset].counts[subset]} {subset} clips asked, "
                             f"the real metadata has {sizes[subset]}")


def _run_jobs(jobs: list, workers: int | None, progress: bool) -> list[tuple[str, str, tuple[Event, ...]]]:
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) // 8 or 1))
    start, results = time.perf_counter(), []
    every = max(1, min(500, len(jobs) // 10))
    pool = ProcessPoolExecutor(workers, mp_context=_mp_context()) if workers > 1 else None
    try:
        stream = pool.map(_render_job, jobs, chunksize=4) if pool else map(_render_job, jobs)
        for done, result in enumerate(stream, start=1):
            results.append(result)
            if done % every == 0 or done == len(jobs):
                rate = done / (time.perf_counter() - start)
                _say(progress, f"{done}/{len(jobs)} clips, {rate:.1f} clips/s, eta {(len(jobs) - done) / rate:.0f} s")
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return results


def _mp_context() -> BaseContext:
    """Fork when it is safe (a single-threaded process: fast, no re-import); spawn otherwise (e.g. under Ray)."""
    if threading.active_count() == 1 and "fork" in get_all_start_methods():
        return get_context("fork")
    return get_context("spawn")


def _write_metadata(root: Path, results: list[tuple[str, str, tuple[Event, ...]]]) -> None:
    tables: dict[str, dict[str, list[Event]]] = {s: {} for s in SUBSETS}
    for subset, filename, events in results:
        tables[subset][filename] = list(events)
    for subset, table in tables.items():
        meta = root / (LAYOUTS[subset][0].metadata + ".csv")
        if subset in TRAIN_SUBSETS:
            write_strong_tsv(root / (LAYOUTS[subset][0].metadata + HIDDEN_SUFFIX + ".tsv"), table)
        if subset == WEAK:
            write_weak_csv(meta, {f: sorted({e.label for e in ev}, key=CLASS_INDEX.__getitem__)
                                  for f, ev in table.items()})
        elif subset in (TEST, EVAL):
            write_strong_tsv(meta, table)
        else:
            write_clip_list(meta, table)


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(f"[kdsed.data.synth] {message}", file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Command line: generate a synthetic set."""
    parser = _Parser(prog="python -m kdsed.data.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write the set into")
    parser.add_argument("--preset", default="mini", choices=sorted(PRESETS), help="size of the set (default: mini)")
    parser.add_argument("--seed", default=0, type=int, help="random seed, an integer >= 0 (default: 0)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        check_arguments(args.preset, args.seed, args.workers)
        generate(args.out, args.preset, args.seed, progress=not args.quiet, workers=args.workers)
    except (OSError, MetadataError) as e:  # a foreign or unwritable --out, a full disk: one line, no traceback
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # check_arguments: a bad option
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{s} {n}" for s, n in PRESETS[args.preset].counts.items())
    print(f"synthetic set {args.preset} (seed {args.seed}) at {args.out}: {counts}; "
          f"took {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
