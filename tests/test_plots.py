"""Figures: each function writes a PNG of the promised size that is not blank, with stable colours."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from kdsed.config import ALL_VARIANTS, FeatureConfig
from kdsed.constants import CLASS_INDEX, CLASSES, NUM_CLASSES
from kdsed.events import Event
from kdsed.plots import (
    CLASS_COLOURS,
    DPI,
    VARIANT_COLOURS,
    _shown_classes,
    plot_clip_predictions,
    plot_f1_over_passes,
    plot_loss_curves,
    plot_per_class_bars,
    plot_winner_matrix,
    series_colours,
)
from kdsed.postprocess import frame_centres_s, median_smooth

CFG = FeatureConfig()
N_FRAMES = CFG.frames_per_clip  # 240
REFERENCE = [Event(1.0, 3.5, "Dog"), Event(5.0, 8.0, "Speech")]
PASSES = ["tagging", "pass 1", "pass 2"]
VARIANTS = [v.name for v in ALL_VARIANTS]


def pixels(path: Path) -> np.ndarray:
    """The PNG as an (height, width, 3) uint8 array."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def assert_informative(path: Path, size_in: tuple[float, float] | None = None) -> np.ndarray:
    """The PNG exists, has figure size x DPI pixels and is not blank; returns its pixels."""
    assert path.is_file() and path.stat().st_size > 10_000
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.info["dpi"] == pytest.approx((DPI, DPI), abs=0.5)
        if size_in is not None:
            assert img.size == (round(size_in[0] * DPI), round(size_in[1] * DPI))
    rgb = pixels(path)
    assert rgb.std() > 15  # a white page with a little text is ~10
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    assert len(np.unique(packed)) > 100
    assert not list(path.parent.glob(f".{path.name}.tmp-*"))  # the temporary file was renamed away
    return rgb


def has_colour(rgb: np.ndarray, colour: str, min_pixels: int = 50) -> bool:
    """At least `min_pixels` pixels of exactly `colour`."""
    target = np.round(np.array(to_rgb(colour)) * 255).astype(np.uint8)
    return int((rgb == target).all(axis=-1).sum()) >= min_pixels


def bump(t: np.ndarray, onset_s: float, offset_s: float, height: float = 0.9) -> np.ndarray:
    """A smooth plateau of `height` between onset and offset."""
    rise = 1 / (1 + np.exp(-(t - onset_s) / 0.08))
    fall = 1 / (1 + np.exp((t - offset_s) / 0.08))
    return height * rise * fall


@pytest.fixture
def clip() -> dict:
    """A 240-frame clip with a Dog and a Speech event, probabilities shaped like bumps, and a Cat false alarm."""
    rng = np.random.default_rng(0)
    t = frame_centres_s(CFG, N_FRAMES)
    probs = np.full((N_FRAMES, NUM_CLASSES), 0.05) + rng.uniform(0, 0.05, (N_FRAMES, NUM_CLASSES))
    log_mel = rng.normal(-40.0, 4.0, (N_FRAMES, CFG.n_mels))
    for e in REFERENCE:
        probs[:, CLASS_INDEX[e.label]] += bump(t, e.onset_s, e.offset_s)
        log_mel[(t >= e.onset_s) & (t < e.offset_s), 8:40] += 25.0
    probs[:, CLASS_INDEX["Cat"]] += bump(t, 8.3, 9.0, height=0.8)
    probs = np.clip(probs + rng.normal(0, 0.05, probs.shape), 0, 1)
    return dict(log_mel=log_mel, feature_cfg=CFG, reference=REFERENCE, probs=probs,
                smoothed=median_smooth(probs, 9), thresholds=[0.5] * NUM_CLASSES)


def test_class_colours_are_distinct_stable_and_in_class_order() -> None:
    assert tuple(CLASS_COLOURS) == CLASSES
    assert len(set(CLASS_COLOURS.values())) == NUM_CLASSES
    assert CLASS_COLOURS["Alarm_bell_ringing"] == "#1f77b4"  # tab10, the same in every figure and run
    assert CLASS_COLOURS["Dog"] == "#9467bd"


def test_variant_colours_are_distinct_and_stable() -> None:
    assert set(VARIANTS) <= set(VARIANT_COLOURS)
    assert len(set(VARIANT_COLOURS.values())) == len(VARIANT_COLOURS)
    names = VARIANTS + ["final", "winners", "pass 4", "best single"]
    colours = series_colours(names)
    assert all(colours[v] == VARIANT_COLOURS[v] for v in VARIANTS)
    assert len(set(colours.values())) == len(names)
    assert series_colours(["final"]) == series_colours(["final"])  # hashed, not drawn at random
    assert set(colours.values()).isdisjoint(CLASS_COLOURS.values())


def test_shown_classes_are_referenced_or_detected(clip: dict) -> None:
    thr = np.asarray(clip["thresholds"])
    shown = _shown_classes(REFERENCE, clip["smoothed"], thr, N_FRAMES)
    assert [CLASSES[c] for c in shown] == ["Cat", "Dog", "Speech"]
    # The Cat bump (8.3-9.0 s) lies in the padding of a clip with 190 valid frames (~8.07 s).
    assert [CLASSES[c] for c in _shown_classes(REFERENCE, clip["smoothed"], thr, 190)] == ["Dog", "Speech"]
    quiet = np.full((N_FRAMES, NUM_CLASSES), 0.1)
    quiet[:, CLASS_INDEX["Frying"]] = 0.3
    assert _shown_classes([], quiet, thr, N_FRAMES) == [CLASS_INDEX["Frying"]]  # the closest one, not none


def test_clip_predictions_figure(tmp_path: Path, clip: dict) -> None:
    path = plot_clip_predictions(tmp_path / "figs" / "clip.png", title="clip 1", **clip)
    assert path == tmp_path / "figs" / "clip.png"
    rgb = assert_informative(path)
    assert rgb.shape[1] == 12 * DPI
    for label in ("Dog", "Speech", "Cat"):
        assert has_colour(rgb, CLASS_COLOURS[label])
    assert not has_colour(rgb, CLASS_COLOURS["Blender"], min_pixels=1)

    padded = plot_clip_predictions(tmp_path / "padded.png", title="short clip", n_valid_frames=190, **clip)
    assert pixels(padded).shape[0] < rgb.shape[0]  # one strip fewer: Cat fires only in the padding
    assert not has_colour(pixels(padded), CLASS_COLOURS["Cat"], min_pixels=1)


def test_clip_predictions_rejects_bad_shapes(tmp_path: Path, clip: dict) -> None:
    with pytest.raises(ValueError, match="thresholds"):
        plot_clip_predictions(tmp_path / "a.png", title="x", **{**clip, "thresholds": [0.5, 0.5]})
    with pytest.raises(ValueError, match=r"\(240, 10\)"):
        plot_clip_predictions(tmp_path / "a.png", title="x", **{**clip, "smoothed": clip["smoothed"][:200]})
    with pytest.raises(ValueError, match="n_valid_frames"):
        plot_clip_predictions(tmp_path / "a.png", title="x", n_valid_frames=0, **clip)
    assert not (tmp_path / "a.png").exists()


def test_f1_over_passes_with_nan(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    f1 = {name: rng.uniform(0, 1, len(PASSES)) for name in CLASSES}
    f1["Cat"][0] = np.nan
    f1["Dog"][:] = np.nan  # a class without validation references
    macro = [0.15, np.nan, 0.41]
    path = plot_f1_over_passes(tmp_path / "f1.png", f1, PASSES, macro=macro, title="event-F1 per pass")
    rgb = assert_informative(path, (10, 5.5))
    assert has_colour(rgb, "black", min_pixels=500)  # the thick macro line

    with pytest.raises(ValueError, match=r"fractions in \[0, 1\]"):
        plot_f1_over_passes(tmp_path / "pct.png", {"Cat": [15.0, 40.0, 41.0]}, PASSES, macro=macro, title="%")
    with pytest.raises(ValueError, match="one per pass label"):
        plot_f1_over_passes(tmp_path / "len.png", {"Cat": [0.1, 0.2]}, PASSES, macro=macro, title="len")
    with pytest.raises(ValueError, match="unknown class"):
        plot_f1_over_passes(tmp_path / "cls.png", {"Cat ": [0.1] * 3}, PASSES, macro=macro, title="typo")


def test_winner_matrix_colours_cells_by_variant(tmp_path: Path) -> None:
    winners = [[VARIANTS[(p + c) % len(VARIANTS)] for c in range(NUM_CLASSES)] for p in range(len(PASSES))]
    winners[0] = [""] * NUM_CLASSES  # tagging has no variant choice
    f1 = np.random.default_rng(2).uniform(0, 1, (len(PASSES), NUM_CLASSES))
    f1[1, 3] = np.nan
    path = plot_winner_matrix(tmp_path / "winners.png", winners, f1, PASSES, VARIANTS)
    rgb = assert_informative(path)
    assert rgb.shape[1] == 12 * DPI
    for name in VARIANTS:
        assert has_colour(rgb, VARIANT_COLOURS[name], min_pixels=2000)  # at least one whole cell

    with pytest.raises(ValueError, match="not among variant_names"):
        plot_winner_matrix(tmp_path / "bad.png", [["deep-median"] * NUM_CLASSES], f1[:1], PASSES[:1], ["deep-none"])
    with pytest.raises(ValueError, match="passes x classes"):
        plot_winner_matrix(tmp_path / "bad.png", winners, f1[:, :5], PASSES, VARIANTS)


def test_loss_curves(tmp_path: Path) -> None:
    epochs = np.arange(12)
    history = {"train_loss": 0.7 * np.exp(-epochs / 4) + 0.1,
               "val_loss": 0.7 * np.exp(-epochs / 3) + 0.15 + 0.01 * epochs}
    history["val_loss"][5] = np.nan
    best = int(np.nanargmin(history["val_loss"])) + 1
    path = plot_loss_curves(tmp_path / "loss.png", history, title="pass-2/deep-median", best_epoch=best)
    assert_informative(path, (8, 4.5))
    assert plot_loss_curves(tmp_path / "loss.png", {"train_loss": [0.5]}, title="one epoch") == path  # overwrite
    with pytest.raises(ValueError, match="count from 1"):
        plot_loss_curves(tmp_path / "x.png", history, title="x", best_epoch=0)


def test_per_class_bars(tmp_path: Path) -> None:
    scores = {"baseline": np.linspace(0.05, 0.3, NUM_CLASSES), "final": np.linspace(0.2, 0.7, NUM_CLASSES)}
    scores["final"][4] = np.nan
    path = plot_per_class_bars(tmp_path / "bars.png", scores, title="eval event-F1",
                               macro={"baseline": 0.15, "final": 0.41})
    rgb = assert_informative(path, (13, 5.5))
    for name, colour in series_colours(list(scores)).items():
        assert has_colour(rgb, colour, min_pixels=1000)
    with pytest.raises(ValueError, match="10 values per series"):
        plot_per_class_bars(tmp_path / "x.png", {"a": [0.1, 0.2]}, title="x")


def test_figures_can_be_drawn_from_threads(tmp_path: Path) -> None:
    def draw(i: int) -> Path:
        return plot_loss_curves(tmp_path / "loss.png" if i % 2 else tmp_path / f"loss{i}.png",
                                {"train_loss": np.linspace(1, 0.1, 5 + i)}, title=f"run {i}")

    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(draw, range(4)))
    for path in set(paths):
        assert_informative(path, (8, 4.5))
