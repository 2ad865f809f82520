"""Sensitivity as a picture (the paper's Figure 6) and as a table.

    metric (%)                           conv layers | fc layers
      100 +--*--*--*--.                  one curve per layer: x = parameters pruned away (%),
          |            `*.               y = metric with only that layer pruned; the dense model at x = 0.
       90 +               `*             Layers coupled through a residual Add are drawn dashed.
          +----+----+----+----+-->
          0   25   50   75  100
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from onnxprune.calibration.sensitivity import SensitivityResult

TABLE_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)
SAFE_LOSS_PP = 1.0  # the table's "max sparsity within 1 pp" column
KIND_TITLES = {"conv": "conv layers", "fc": "fc layers"}


def plot_sensitivity(result: SensitivityResult, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write a PNG: one panel per layer kind (conv, fc), one curve per layer."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    kinds = [k for k in KIND_TITLES if any(lay.kind == k for lay in result.layers)] or ["fc"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.2 * len(kinds), 4.6), squeeze=False, sharey=True)
    low = min([result.dense] + [v for lay in result.layers for v in lay.values])
    for ax, kind in zip(axes[0], kinds):
        layers = [lay for lay in result.layers if lay.kind == kind]
        for lay in layers:
            xs = 100.0 * np.array([0.0, *lay.levels])
            ys = np.array([result.dense, *lay.values])
            label = f"{lay.node} ({lay.size:,})" + (" *residual" if lay.coupled else "")
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.4, linestyle="--" if lay.coupled else "-",
                    label=label)
        ax.set_title(KIND_TITLES[kind])
        ax.set_xlabel(f"{'neurons' if result.unit == 'neurons' else 'parameters'} pruned away (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(max(0.0, low - 2.0), min(100.0, result.dense + 2.0) if result.dense <= 100 else None)
        ax.grid(True, alpha=0.3)
        if layers:
            ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel(f"{result.metric} (%)")
    samples = f"{result.num_samples:,} samples" if result.num_samples else "calibration data"
    what = "one layer's neurons masked whole at a time" if result.unit == "neurons" else "one layer pruned at a time"
    fig.suptitle(title or f"Sensitivity: {result.metric} with {what} ({samples})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def max_sparsity_within(result: SensitivityResult, name: str, loss_pp: float) -> float:
    """The largest scanned level whose loss (monotone curve) stays within loss_pp; 0 if none."""
    lay = result.layer(name)
    worst = np.maximum.accumulate(np.array(lay.losses(result.dense)))
    ok = [s for s, loss in zip(lay.levels, worst) if loss <= loss_pp]
    return ok[-1] if ok else 0.0


def sensitivity_table(result: SensitivityResult, levels=TABLE_LEVELS) -> list[dict[str, str]]:
    """One row per layer, columns in display order: layer, op, weights, metric at a few levels (%), the largest
    sparsity within SAFE_LOSS_PP, residual coupling, scan time."""
    shown = [s for s in levels if any(abs(s - x) < 1e-9 for x in result.levels)] or list(result.levels)
    rows = []
    for lay in result.layers:
        row = {"layer": lay.node, "op": lay.op, result.unit: f"{lay.size:,}"}
        for s in shown:
            i = min(range(len(lay.levels)), key=lambda k: abs(lay.levels[k] - s))
            row[f"{s:.0%}"] = f"{lay.values[i]:.2f}"
        row[f"max s @{SAFE_LOSS_PP:g}pp"] = f"{max_sparsity_within(result, lay.name, SAFE_LOSS_PP):.0%}"
        row["residual"] = "yes" if lay.coupled else ""
        row["scan s"] = f"{lay.seconds:.1f}"
        rows.append(row)
    return rows
