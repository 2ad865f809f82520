"""The report's figures, after Han et al. (NIPS 2015). Each function takes plain numbers and returns PNG bytes.

    weight_histograms      Figure 7: a layer's weights before pruning (one bell around zero) and the nonzero
                           weights after (two lobes with a gap where |w| <= threshold).
    sparsity_pattern       Figure 4: which connections of a fully-connected weight survive (black = kept), and
                           for a layer fed by a flattened image, how many survive per input pixel.
    metric_vs_pruned       Figure 5 style: the metric after each pruning round against the share of parameters
                           pruned away.
    sensitivity_curves     Figure 6: the metric when one layer alone is pruned to each level; conv and fc panels.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global state, no display.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from onnxprune.plain import count

PERCENT_METRICS = {"accuracy", "top1", "top5", "agreement", "expected_accuracy"}
BEFORE, AFTER, ACCENT, GRID = "#3B6EA8", "#D9822B", "#B23A48", "#DDDDDD"
DPI = 110
MAX_SAMPLES = 2_000_000  # histograms of huge layers use a seeded subsample
MAX_SPY = 1200  # larger matrices are shown as the kept fraction per block

STYLE = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 9.5,
    "axes.edgecolor": "#555555",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.6,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
}


def _styled(draw):
    """Run a figure function under the report's rc style (read when artists are created and drawn)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def is_percent_metric(metric: str | None) -> bool:
    return (metric or "accuracy") in PERCENT_METRICS


# ---------------------------------------------------------------- Figure 7


@_styled
def weight_histograms(
    layers: Sequence[tuple[str, np.ndarray, np.ndarray]],
    thresholds: Mapping[str, float | None] | None = None,
    *,
    bins: int = 121,
) -> bytes:
    """One row per layer: all weights before pruning | the nonzero weights after, on the same x range."""
    thresholds = thresholds or {}
    fig = _figure(9.6, 2.5 * max(len(layers), 1))
    axes = fig.subplots(max(len(layers), 1), 2, squeeze=False)
    for i, (row, (name, before, after)) in enumerate(zip(axes, layers)):
        before = _sample(np.asarray(before, dtype=np.float64).ravel())
        after_all = np.asarray(after, dtype=np.float64).ravel()
        kept = _sample(after_all[after_all != 0])
        lim = float(np.percentile(np.abs(before), 99.9)) if before.size else 1.0
        lim = max(lim, float(np.max(np.abs(kept))) if kept.size else 0.0, 1e-12)
        edges = np.linspace(-lim, lim, bins + 1)
        thr = thresholds.get(name)
        ax_b, ax_a = row
        ax_b.hist(np.clip(before, -lim, lim), bins=edges, color=BEFORE, alpha=0.9)
        ax_b.set_title(f"{_short(name)}: before  ({count(np.asarray(after).size)} weights)", loc="left")
        if kept.size:
            ax_a.hist(kept, bins=edges, color=AFTER, alpha=0.9)
        ax_a.set_title(f"{_short(name)}: after, nonzero only  ({count(int(np.count_nonzero(after_all)))})",
                       loc="left")
        if thr:
            for ax in row:
                ax.axvspan(-thr, thr, color=ACCENT, alpha=0.07, lw=0)
                for x in (-thr, thr):
                    ax.axvline(x, color=ACCENT, lw=0.9, ls="--")
            ax_b.text(0.99, 0.95, f"pruned: |w| \u2264 {thr:.3g}", transform=ax_b.transAxes, ha="right", va="top",
                      color=ACCENT, fontsize=8.5)
        for ax in row:
            ax.set_xlim(-lim, lim)
            ax.set_ylabel("count")
            ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
        if i == len(layers) - 1:
            for ax in row:
                ax.set_xlabel("weight value")
    if not layers:
        _empty(axes[0][0], "no weights")
        axes[0][1].set_axis_off()
    return _png(fig)


# ---------------------------------------------------------------- Figure 4


@_styled
def sparsity_pattern(
    weight: np.ndarray,
    *,
    name: str = "",
    in_axis: int = 1,
    pixel_shape: tuple[int, int] | None = None,
) -> bytes:
    """Black = kept connection; rows are output neurons, columns inputs. With `pixel_shape` (H, W), also the
    number of surviving connections of each input pixel, as an H x W image."""
    w = np.asarray(weight)
    mask = (w != 0).reshape(w.shape[0], -1) if w.ndim != 2 else (w != 0)
    if w.ndim == 2 and in_axis == 0:
        mask = mask.T
    rows, cols = mask.shape
    with_pixels = pixel_shape is not None and pixel_shape[0] * pixel_shape[1] == cols
    height = float(np.clip(9.0 * rows / max(cols, 1) + 1.2, 3.4 if with_pixels else 2.6, 7.0))
    fig = _figure(11.0 if with_pixels else 9.6, height)
    if with_pixels:
        gs = fig.add_gridspec(1, 2, width_ratios=[2.3, 1.0], wspace=0.06)
        ax, ax_px = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    else:
        ax, ax_px = fig.add_subplot(1, 1, 1), None
    kept = int(mask.sum())
    if rows > MAX_SPY or cols > MAX_SPY:
        shown, note = _block_density(mask, MAX_SPY), "kept fraction per block"
        im = ax.imshow(shown, cmap="gray_r", vmin=0, vmax=1, aspect="auto", interpolation="nearest",
                       extent=(0, cols, rows, 0))
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label=note)
    else:
        ax.imshow(mask, cmap="gray_r", vmin=0, vmax=1, aspect="auto", interpolation="nearest",
                  extent=(0, cols, rows, 0))
    ax.grid(False)
    ax.set_xlabel(f"input ({cols:,})")
    ax.set_ylabel(f"output neuron ({rows:,})")
    ax.set_title(f"{_short(name)}: {kept:,} of {mask.size:,} connections kept ({100 * kept / max(mask.size, 1):.1f}%)",
                 loc="left")
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)
    if with_pixels:
        counts = mask.sum(axis=0).reshape(pixel_shape)
        im = ax_px.imshow(counts, cmap="magma", vmin=0, vmax=max(int(counts.max()), 1), interpolation="nearest")
        ax_px.grid(False)
        ax_px.set_xticks([])
        ax_px.set_yticks([])
        ax_px.set_title(f"kept connections per input pixel ({pixel_shape[0]}\u00d7{pixel_shape[1]})", loc="left")
        cb = fig.colorbar(im, ax=ax_px, fraction=0.046, pad=0.03)
        cb.set_label(f"kept, of {rows:,} outputs")
    return _png(fig)


def _block_density(mask: np.ndarray, limit: int) -> np.ndarray:
    """Mean of the mask over blocks, so at most `limit` blocks per side remain."""
    fr, fc = math.ceil(mask.shape[0] / limit), math.ceil(mask.shape[1] / limit)
    r, c = math.ceil(mask.shape[0] / fr) * fr, math.ceil(mask.shape[1] / fc) * fc
    padded = np.full((r, c), np.nan)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    return np.nanmean(padded.reshape(r // fr, fr, c // fc, fc), axis=(1, 3))


# ---------------------------------------------------------------- Figure 5


@_styled
def metric_vs_pruned(
    history: Sequence[Mapping],
    *,
    metric: str | None = "accuracy",
    baseline: float | None = None,
    max_loss_pp: float | None = None,
) -> bytes:
    """x: parameters pruned away (%), y: the metric; one point per round, joined.

    A round is {round, metric, overall_density} (or a float `density`); phase "final" (the closing fine-tune)
    is labelled "<round>F"; a round with `fits` False (over the loss budget) is circled.
    """
    scale = 100.0 if is_percent_metric(metric) else 1.0
    points = []
    for i, h in enumerate(history, 1):
        density = h.get("overall_density", h.get("density"))
        if _finite(density) and _finite(h.get("metric")):
            label = f"{h.get('round', i)}" + ("F" if h.get("phase") == "final" else "")
            points.append((label, 100.0 * (1.0 - float(density)), float(h["metric"]) * scale, h.get("fits")))
    fig = _figure(7.6, 3.9)
    ax = fig.add_subplot(1, 1, 1)
    if not points:
        _empty(ax, "no rounds with a measured metric")
        return _png(fig)
    rounds, xs, ys, fits = zip(*points)
    if baseline is not None and _finite(baseline):
        base = float(baseline) * scale
        ax.axhline(base, color="#777777", ls="--", lw=1, label=f"dense model: {_fmt(base, scale)}")
        if max_loss_pp is not None and scale == 100.0:
            ax.axhspan(base - max_loss_pp, base, color="#2E8B57", alpha=0.08, lw=0,
                       label=f"within the budget ({max_loss_pp:g} pp)")
    ax.plot(xs, ys, "-o", color=BEFORE, lw=1.6, ms=5.5, label=f"after each round ({_metric_name(metric)})", zorder=3)
    over = [(x, y) for x, y, f in zip(xs, ys, fits) if f is False]
    if over:
        ax.plot(*zip(*over), "o", ms=8, mfc="white", mec=ACCENT, mew=1.8, ls="none", zorder=4,
                label="over the budget (not kept)")
    for r, x, y in zip(rounds, xs, ys):
        ax.annotate(f"{r}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8,
                    color="#333333")
    ax.set_xlabel("parameters pruned away (%)")
    ax.set_ylabel(_metric_label(metric, scale))
    lo, hi = min(xs), max(xs)
    pad = max(2.0, 0.08 * (hi - lo))
    ax.set_xlim(max(0.0, lo - pad), min(100.0, hi + pad) if hi + pad > lo else lo + 1)
    _pad_y(ax, list(ys) + ([float(baseline) * scale] if baseline is not None and _finite(baseline) else []))
    ax.legend(loc="lower left")
    ax.set_title("Metric vs. compression, one point per pruning round (cf. paper Fig. 5)", loc="left")
    return _png(fig)


# ---------------------------------------------------------------- Figure 6


# layers a sensitivity panel names in its legend, the most sensitive (lowest metric) first; more were drawn unnamed
# (real models 52: CapSpot's YOLOX detector, 83 layers: matplotlib's "constrained_layout not applied because axes
# sizes collapsed to zero" warning in the terminal, and a figure of legend alone)
LEGEND_LAYERS = 16


@_styled
def sensitivity_curves(
    curves: Mapping[str, object],
    *,
    kinds: Mapping[str, str] | None = None,
    metric: str | None = "accuracy",
    baseline: float | None = None,
    values_in_percent: bool | None = None,
    unit: str = "parameters",
    coupled: frozenset[str] | set[str] = frozenset(),
    title: str | None = None,
) -> bytes:
    """One curve per layer: the metric with that layer alone pruned to each level. Panels: conv, then fc.
    Layers in `coupled` (their output meets a residual Add) are drawn dashed; `unit` names what was pruned.

    `curves[name]` is `(levels, values)` or `{"levels", "values", "kind"}`; levels are fractions pruned (0..1) or
    percentages; `kinds[name]` ("conv"/"fc") wins over a curve's own "kind", which wins over guessing by name.
    Values are the metric as a fraction, or in % (`values_in_percent`; None: any value above 1 means %).
    `baseline` (the dense model's metric) is a fraction like the report's metrics.
    """
    scale = 100.0 if is_percent_metric(metric) else 1.0
    if values_in_percent is None:  # calibration.sensitivity stores percentages; plain fractions are accepted too
        values_in_percent = scale == 100.0 and any(
            _finite(v) and float(v) > 1.0 + 1e-9 for c in curves.values() for v in _curve(c)[1])
    value_scale = 1.0 if values_in_percent else scale
    panels: dict[str, list] = {"conv": [], "fc": []}
    for name, curve in curves.items():
        levels, values, kind = _curve(curve)
        kind = (kinds or {}).get(name) or kind or ("conv" if "conv" in name.lower() else "fc")
        pts = [(x, y) for x, y in zip(levels, values) if _finite(x) and _finite(y)]
        if pts:
            pct = max(p[0] for p in pts) > 1.0
            xs = [float(x) if pct else 100.0 * float(x) for x, _ in pts]
            panels.setdefault(kind, []).append((name, xs, [float(y) * value_scale for _, y in pts]))
    used = [(k, v) for k, v in panels.items() if v]
    fig = _figure(9.6 if len(used) > 1 else 7.6, 3.9)
    axes = fig.subplots(1, max(len(used), 1), squeeze=False)[0]
    if not used:
        _empty(axes[0], "no sensitivity scan")
        return _png(fig)
    cmap = _palette(max(len(v) for _, v in used))
    for ax, (kind, series) in zip(axes, used):
        ys_all = []
        named = {name for name, _, ys in sorted(series, key=lambda s: min(s[2]))[:LEGEND_LAYERS]}
        for (name, xs, ys), color in zip(series, cmap):
            order = np.argsort(xs)
            label = _short(name, 28) + (" *residual" if name in coupled else "") if name in named else None
            ax.plot(np.asarray(xs)[order], np.asarray(ys)[order], "--o" if name in coupled else "-o", ms=3.5,
                    lw=1.4, color=color, label=label)
            ys_all += ys
        if len(series) > len(named):  # the rest drawn, unnamed: a legend of 83 rows collapsed the axes (cap_det)
            ax.plot([], [], " ", label=f"(+{len(series) - len(named)} less sensitive layers, unnamed)")
        if baseline is not None and _finite(baseline):
            ax.axhline(float(baseline) * scale, color="#777777", ls="--", lw=1, label="dense model")
            ys_all.append(float(baseline) * scale)
        ax.set_title(f"{'Conv' if kind == 'conv' else 'FC' if kind == 'fc' else kind} layers", loc="left")
        ax.set_xlabel(f"{unit} pruned away (%)")
        ax.set_ylabel(_metric_label(metric, scale))
        _pad_y(ax, ys_all)
        ax.legend(loc="lower left", ncols=1 if len(series) <= 6 else 2)
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig)


def scan_figure(result) -> bytes:
    """Figure 6 of a calibration.sensitivity.SensitivityResult (what `onnxprune sensitivity -o` writes)."""
    curves = {lay.node: {"levels": list(lay.levels), "values": list(lay.values), "kind": lay.kind}
              for lay in result.layers}
    samples = f"{result.num_samples:,} samples" if result.num_samples else "calibration data"
    what = "one layer's neurons masked whole at a time" if result.unit == "neurons" else "one layer pruned at a time"
    return sensitivity_curves(curves, metric=result.metric, baseline=result.dense / 100.0, values_in_percent=True,
                              unit="neurons" if result.unit == "neurons" else "parameters",
                              coupled={lay.node for lay in result.layers if lay.coupled},
                              title=f"Sensitivity: {result.metric} with {what} ({samples})")


def _curve(curve) -> tuple[list, list, str | None]:
    if isinstance(curve, Mapping):
        return list(curve.get("levels") or []), list(curve.get("values") or []), curve.get("kind")
    levels, values = curve
    return list(levels), list(values), None


# ---------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _sample(values: np.ndarray) -> np.ndarray:
    if values.size <= MAX_SAMPLES:
        return values
    return np.random.default_rng(0).choice(values, MAX_SAMPLES, replace=False)


def _empty(ax, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777777")


def _pad_y(ax, ys: list[float]) -> None:
    lo, hi = min(ys), max(ys)
    pad = max(0.08 * (hi - lo), 0.5 if hi - lo < 1 else 0.0, 1e-6)
    ax.set_ylim(lo - pad, hi + pad)


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _metric_name(metric: str | None) -> str:
    return metric or "metric"


def _metric_label(metric: str | None, scale: float) -> str:
    return f"{_metric_name(metric)} (%)" if scale == 100.0 else _metric_name(metric)


def _fmt(value: float, scale: float) -> str:
    return f"{value:.2f}%" if scale == 100.0 else f"{value:.4g}"


def _thousands(value: float, _pos=None) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else "\u2026" + name[-(limit - 1):]
