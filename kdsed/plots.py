"""Figures a sweep logs to MLflow: arrays in, one PNG file out.

Every function draws on its own `matplotlib.figure.Figure` with the Agg canvas (no
pyplot, no global state, safe from threads), writes the PNG atomically (temporary
name, then rename) and returns its path. The saved image is exactly figure size x
`DPI` pixels. F1 values are fractions in [0, 1] (NaN allowed) and are drawn in %.
Each class has one colour (`CLASS_COLOURS`) and each variant or series name one
colour (`VARIANT_COLOURS`, `series_colours`) in every figure.
"""

from __future__ import annotations

import textwrap
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, MultipleLocator

from kdsed import schema
from kdsed.atomic import write_atomic
from kdsed.config import ALL_VARIANTS, FeatureConfig
from kdsed.constants import CLASS_INDEX, CLASSES, NUM_CLASSES
from kdsed.events import Event
from kdsed.postprocess import frame_centres_s

DPI = 120
#: At most this many class strips in a clip figure.
MAX_CLASS_STRIPS = 10

#: One colour per class (tab10), in CLASSES order.
CLASS_COLOURS: dict[str, str] = {name: to_hex(colormaps["tab10"](i)) for i, name in enumerate(CLASSES)}

# Paired palette: deep variants dark, shallow light; hue by smoothing (blue none, orange median, purple median+gauss).
_PAIRED = [to_hex(c) for c in colormaps["Paired"].colors]
_SMOOTHING_HUE = {"none": 0, "median": 6, "median+gaussian": 8}
#: One colour per known variant or stage name; other names get a stable colour from `series_colours`.
VARIANT_COLOURS: dict[str, str] = {
    **{v.name: _PAIRED[_SMOOTHING_HUE[v.smoothing] + (1 if v.model == "deep" else 0)] for v in ALL_VARIANTS},
    schema.BASELINE: "#7f7f7f",
    schema.TAGGING: "#b15928",
    schema.pass_stage(1): "#e31a1c",
}
# Dark2 and a few deep hues, kept away from the variant colours and from grey (baseline).
_OTHER_COLOURS = ("#1b9e77", "#d95f02", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#393b79", "#843c39")


def series_colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per name: `VARIANT_COLOURS` where known, else picked from the name's hash (distinct within `names`)."""
    out = {n: VARIANT_COLOURS[n] for n in names if n in VARIANT_COLOURS}
    for name in names:
        if name in out:
            continue
        start = zlib.crc32(name.encode())
        for k in range(len(_OTHER_COLOURS)):
            colour = _OTHER_COLOURS[(start + k) % len(_OTHER_COLOURS)]
            if colour not in out.values():
                break
        out[name] = colour
    return out


def _save(fig: Figure, path: Path | str) -> Path:
    """Write `fig` as PNG at `path` atomically (temporary sibling, then rename)."""
    return write_atomic(path, lambda tmp: FigureCanvasAgg(fig).print_png(tmp))


def _figure(width_in: float, height_in: float) -> Figure:
    """A figure of the given size (inches) at `DPI`, laid out by constrained layout."""
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def _class_label(name: str, width: int = 12) -> str:
    """`Electric_shaver_toothbrush` as wrapped words, for tick labels."""
    return textwrap.fill(name.replace("_", " "), width)


def _text_colour(background: str) -> str:
    """Black or white, whichever reads better on `background`."""
    r, g, b = to_rgb(background)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _check_f1(values: np.ndarray, what: str) -> np.ndarray:
    """`values` as float, required to be fractions in [0, 1] or NaN."""
    finite = values[np.isfinite(values)]
    if ((finite < 0) | (finite > 1)).any():
        raise ValueError(f"{what}: F1 must be fractions in [0, 1] (or NaN), got values in "
                         f"[{finite.min():.3g}, {finite.max():.3g}]")
    return values


# --------------------------------------------------------------------------- clip figure

def _shown_classes(reference: Sequence[Event], smoothed: np.ndarray, thresholds: np.ndarray,
                   n_valid: int) -> list[int]:
    """Classes with a reference event or a smoothed probability reaching the threshold; else the closest one."""
    peak = smoothed[:n_valid].max(axis=0)
    shown = {CLASS_INDEX[e.label] for e in reference} | set(np.flatnonzero(peak >= thresholds).tolist())
    if not shown:
        shown = {int(np.argmax(peak - thresholds))}
    return sorted(shown)[:MAX_CLASS_STRIPS]


def _check_clip_inputs(log_mel: np.ndarray, probs: np.ndarray, smoothed: np.ndarray, thresholds: np.ndarray,
                       reference: Sequence[Event], n_valid_frames: int | None) -> int:
    """Validate shapes and labels of a clip figure's inputs; the number of valid frames."""
    if log_mel.ndim != 2 or probs.shape != (log_mel.shape[0], NUM_CLASSES) or smoothed.shape != probs.shape:
        raise ValueError(f"expected log_mel (frames, n_mels) and probs, smoothed (frames, {NUM_CLASSES}) with the "
                         f"same frames, got {log_mel.shape}, {probs.shape}, {smoothed.shape}")
    if thresholds.shape != (NUM_CLASSES,):
        raise ValueError(f"expected {NUM_CLASSES} thresholds (one per class), got shape {thresholds.shape}")
    unknown = sorted({e.label for e in reference} - set(CLASS_INDEX))
    if unknown:
        raise ValueError(f"reference events with unknown labels {unknown}")
    n_valid = probs.shape[0] if n_valid_frames is None else int(n_valid_frames)
    if not 1 <= n_valid <= probs.shape[0]:
        raise ValueError(f"n_valid_frames must be in [1, {probs.shape[0]}], got {n_valid_frames}")
    return n_valid


def plot_clip_predictions(path: Path | str, *, log_mel: np.ndarray, feature_cfg: FeatureConfig,
                          reference: Sequence[Event], probs: np.ndarray, smoothed: np.ndarray,
                          thresholds: Sequence[float], title: str, n_valid_frames: int | None = None) -> Path:
    """Spectrogram, reference events, and raw / smoothed frame probabilities with thresholds of one clip."""
    log_mel, probs, smoothed = (np.asarray(a, dtype=np.float64) for a in (log_mel, probs, smoothed))
    thr = np.asarray(thresholds, dtype=np.float64)
    n_valid = _check_clip_inputs(log_mel, probs, smoothed, thr, reference, n_valid_frames)
    n_frames, n_mels = log_mel.shape
    shown = _shown_classes(reference, smoothed, thr, n_valid)
    start_s = feature_cfg.frame_offset_s
    end_s = start_s + n_frames * feature_cfg.hop_s
    t_max = min(end_s, feature_cfg.clip_duration_s) if n_frames >= feature_cfg.frames_per_clip else end_s
    pad_s = start_s + n_valid * feature_cfg.hop_s

    ref_h = 0.3 * len(shown) + 0.4
    fig = _figure(12, 3.2 + ref_h + 0.95 * len(shown) + 0.9)
    grid = fig.add_gridspec(2 + len(shown), 2, height_ratios=[2.6, ref_h] + [0.95] * len(shown),
                            width_ratios=[80, 1])
    ax_spec = fig.add_subplot(grid[0, 0])
    im = ax_spec.imshow(log_mel.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                        extent=(start_s, end_s, 0, n_mels))
    fig.colorbar(im, cax=fig.add_subplot(grid[0, 1]), label="ln(mel power)")
    ax_spec.set_ylabel("mel band (index)")
    ax_spec.set_title("log-mel spectrogram", loc="left", fontsize=9)
    ax_ref = fig.add_subplot(grid[1, 0], sharex=ax_spec)
    _draw_reference_bars(ax_ref, shown, reference)

    t = frame_centres_s(feature_cfg, n_frames)
    strips = [fig.add_subplot(grid[2 + i, 0], sharex=ax_spec) for i in range(len(shown))]
    for ax, c in zip(strips, shown):
        _draw_class_strip(ax, t, probs[:, c], smoothed[:, c], float(thr[c]), CLASSES[c],
                          [e for e in reference if CLASS_INDEX[e.label] == c], n_valid)
    for ax in [ax_spec, ax_ref, *strips]:
        if n_valid < n_frames:
            ax.axvspan(pad_s, end_s, facecolor="none", edgecolor="0.5", hatch="//", lw=0)
        if ax is not strips[-1]:
            ax.tick_params(labelbottom=False)
    strips[-1].set_xlabel("time (s)")
    ax_spec.set_xlim(0, t_max)
    ax_spec.xaxis.set_major_locator(MultipleLocator(1.0))

    handles = _clip_legend_handles(CLASS_COLOURS[CLASSES[shown[0]]], padded=n_valid < n_frames)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title)
    return _save(fig, path)


def _draw_reference_bars(ax: Axes, shown: Sequence[int], reference: Sequence[Event]) -> None:
    """One row per shown class (top to bottom), a bar in the class colour per reference event."""
    for row, c in enumerate(shown):
        spans = [(e.onset_s, e.duration_s) for e in reference if CLASS_INDEX[e.label] == c]
        ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=CLASS_COLOURS[CLASSES[c]])
    ax.set_yticks(range(len(shown)), [CLASSES[c] for c in shown], fontsize=8)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_title("reference events", loc="left", fontsize=9)


def _clip_legend_handles(detection_colour: str, *, padded: bool) -> list[Artist]:
    """Legend entries of the clip figure, drawn in neutral grey except the detection fill."""
    handles: list[Artist] = [
        Line2D([], [], color="0.3", lw=1, alpha=0.6, label="frame probability"),
        Line2D([], [], color="0.3", lw=2.2, label="smoothed"),
        Line2D([], [], color="0.3", lw=1, ls="--", label="threshold"),
        Patch(facecolor=detection_colour, alpha=0.3, label="detected (smoothed >= threshold)"),
        Patch(facecolor="0.85", label="reference event")]
    if padded:
        handles.append(Patch(facecolor="none", edgecolor="0.5", hatch="//", label="padding"))
    return handles


def _draw_class_strip(ax: Axes, t: np.ndarray, raw: np.ndarray, smooth: np.ndarray, threshold: float, name: str,
                      events: Sequence[Event], n_valid: int) -> None:
    """One class's strip: reference spans, raw and smoothed probability, detections and threshold."""
    colour = CLASS_COLOURS[name]
    for e in events:
        ax.axvspan(e.onset_s, e.offset_s, color="0.85", lw=0)
    ax.plot(t, raw, color=colour, lw=0.9, alpha=0.45)
    ax.plot(t, smooth, color=colour, lw=2.2)
    active = (smooth >= threshold) & (np.arange(len(t)) < n_valid)
    ax.fill_between(t, 0, smooth, where=active, color=colour, alpha=0.3, lw=0, step="mid")
    ax.axhline(threshold, color=colour, ls="--", lw=1)
    ax.set_ylim(0, 1.05)
    ax.set_yticks([0, 0.5, 1], ["0", ".5", "1"], fontsize=7)
    ax.set_ylabel("prob.", fontsize=8)
    ax.text(0.003, 0.93, name, transform=ax.transAxes, ha="left", va="top", fontsize=9, fontweight="bold",
            color=colour, bbox=dict(facecolor="white", alpha=0.8, lw=0, pad=1))
    ax.text(1.003, threshold, f"thr\n{threshold:.2f}", transform=ax.get_yaxis_transform(), ha="left",
            va="center", fontsize=7, color=colour)


# --------------------------------------------------------------------------- score figures

def plot_f1_over_passes(path: Path | str, f1: Mapping[str, Sequence[float]], pass_labels: Sequence[str], *,
                        macro: Sequence[float], title: str) -> Path:
    """Per-class event-F1 (class colours) and the macro F1 (thick black) over the passes."""
    n = len(pass_labels)
    unknown = sorted(set(f1) - set(CLASS_INDEX))
    if unknown:
        raise ValueError(f"f1 has unknown class names {unknown}")
    series = {name: _check_f1(np.asarray(v, dtype=np.float64), f"f1[{name!r}]") for name, v in f1.items()}
    macro_v = _check_f1(np.asarray(macro, dtype=np.float64), "macro")
    bad = {name: len(v) for name, v in {**series, "macro": macro_v}.items() if v.shape != (n,)}
    if bad:
        raise ValueError(f"expected {n} values (one per pass label) per series, got lengths {bad}")
    fig = _figure(10, 5.5)
    ax = fig.add_subplot()
    x = np.arange(n)
    for name in sorted(series, key=CLASS_INDEX.__getitem__):
        ax.plot(x, 100 * series[name], color=CLASS_COLOURS[name], lw=1.5, marker="o", ms=4, label=name)
    ax.plot(x, 100 * macro_v, color="black", lw=3.5, marker="s", ms=6, label="macro", zorder=5)
    for xi, m in zip(x, macro_v):
        if np.isfinite(m):
            ax.annotate(f"{100 * m:.1f}", (xi, 100 * m), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=8, fontweight="bold", zorder=6)
    ax.set_xticks(x, list(pass_labels))
    ax.set_xlim(-0.3, n - 0.7)
    ax.set_ylim(0, 100)
    ax.set_xlabel("pass")
    ax.set_ylabel("event-based F1 (%)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def plot_winner_matrix(path: Path | str, winners: Sequence[Sequence[str]], f1: np.ndarray,
                       pass_labels: Sequence[str], variant_names: Sequence[str], *,
                       title: str = "Per-class winning variant (validation event-F1 %)") -> Path:
    """Pass x class grid coloured by the winning variant, each cell annotated with its F1 in %."""
    f1 = _check_f1(np.asarray(f1, dtype=np.float64), "f1")
    shape = (len(pass_labels), NUM_CLASSES)
    if f1.shape != shape or len(winners) != shape[0] or any(len(row) != shape[1] for row in winners):
        raise ValueError(f"expected winners and f1 of shape {shape} (passes x classes), got f1 {f1.shape} and "
                         f"winners with row lengths {[len(row) for row in winners]}")
    unknown = sorted({w for row in winners for w in row if w} - set(variant_names))
    if unknown:
        raise ValueError(f"winners {unknown} are not among variant_names {list(variant_names)}")
    colours = series_colours(list(variant_names))
    rgb = np.ones(shape + (3,))
    for p, row in enumerate(winners):
        for c, w in enumerate(row):
            if w:
                rgb[p, c] = to_rgb(colours[w])
    fig = _figure(12, 1.6 + 0.55 * shape[0] + 1.2)
    ax = fig.add_subplot()
    ax.imshow(rgb, aspect="auto", interpolation="nearest")
    for p, row in enumerate(winners):
        for c, w in enumerate(row):
            text = "n/a" if not np.isfinite(f1[p, c]) else f"{100 * f1[p, c]:.1f}"
            ax.text(c, p, text, ha="center", va="center", fontsize=9,
                    color=_text_colour(colours[w]) if w else "black")
    ax.set_xticks(range(NUM_CLASSES), [_class_label(n) for n in CLASSES], fontsize=8)
    ax.set_yticks(range(shape[0]), list(pass_labels))
    ax.set_xticks(np.arange(NUM_CLASSES + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("class")
    ax.set_ylabel("pass")
    ax.set_title(title)
    handles = [Patch(facecolor=colours[v], label=v) for v in variant_names]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 7), fontsize=8,
               title="winning variant", title_fontsize=8, frameon=False)
    return _save(fig, path)


def plot_loss_curves(path: Path | str, history: Mapping[str, Sequence[float]], *, title: str,
                     best_epoch: int | None = None) -> Path:
    """Loss per epoch (epochs from 1) for each series, with the best epoch (1-based) marked."""
    if not history or not any(len(v) for v in history.values()):
        raise ValueError("history must hold at least one non-empty series")
    n_epochs = max(len(v) for v in history.values())
    if best_epoch is not None and not 1 <= best_epoch <= n_epochs:
        raise ValueError(f"best_epoch must be in [1, {n_epochs}] (epochs count from 1), got {best_epoch}")
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    palette = colormaps["tab10"].colors
    for i, (name, values) in enumerate(history.items()):
        y = np.asarray(values, dtype=np.float64)
        epochs = np.arange(1, len(y) + 1)
        ax.plot(epochs, y, color=palette[i % len(palette)], lw=1.8, marker="o" if len(y) <= 40 else None,
                ms=3.5, label=name.replace("_", " "))
        if best_epoch is not None and best_epoch <= len(y) and np.isfinite(y[best_epoch - 1]):
            ax.plot(best_epoch, y[best_epoch - 1], marker="*", ms=14, color=palette[i % len(palette)],
                    markeredgecolor="black", zorder=5)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="0.3", ls="--", lw=1, label=f"best epoch ({best_epoch})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, n_epochs + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (mean per clip)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title)
    return _save(fig, path)


def plot_per_class_bars(path: Path | str, scores: Mapping[str, Sequence[float]], *, title: str,
                        macro: Mapping[str, float] | None = None) -> Path:
    """Grouped bars of per-class F1 (%) per series, e.g. baseline vs final; an optional macro group last."""
    if not scores:
        raise ValueError("scores must hold at least one series")
    values = {name: _check_f1(np.asarray(v, dtype=np.float64), f"scores[{name!r}]") for name, v in scores.items()}
    bad = {name: v.shape for name, v in values.items() if v.shape != (NUM_CLASSES,)}
    if bad:
        raise ValueError(f"expected {NUM_CLASSES} values per series (CLASSES order), got shapes {bad}")
    labels = [_class_label(n) for n in CLASSES]
    if macro is not None:
        if set(macro) != set(values):
            raise ValueError(f"macro must name the same series as scores: {sorted(macro)} vs {sorted(values)}")
        values = {n: np.append(v, _check_f1(np.float64(macro[n]), "macro")) for n, v in values.items()}
        labels.append("macro")
    colours = series_colours(list(values))
    fig = _figure(13, 5.5)
    ax = fig.add_subplot()
    x, width = np.arange(len(labels)), 0.8 / len(values)
    for k, (name, v) in enumerate(values.items()):
        xs = x - 0.4 + (k + 0.5) * width
        bars = ax.bar(xs, np.nan_to_num(100 * v), width, color=colours[name], label=name)
        if len(values) <= 3:
            ax.bar_label(bars, [f"{100 * s:.0f}" if np.isfinite(s) else "n/a" for s in v], fontsize=7, padding=1)
    if macro is not None:
        ax.axvline(len(labels) - 1.5, color="0.6", lw=1)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylim(0, 105)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("class")
    ax.set_ylabel("event-based F1 (%)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=9)
    ax.set_title(title)
    return _save(fig, path)


__all__ = [
    "CLASS_COLOURS", "DPI", "MAX_CLASS_STRIPS", "VARIANT_COLOURS", "plot_clip_predictions", "plot_f1_over_passes",
    "plot_loss_curves", "plot_per_class_bars", "plot_winner_matrix", "series_colours",
]
