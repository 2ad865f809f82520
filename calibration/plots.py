"""Sensitivity as a table (the picture, the paper's Figure 6, is drawn once: converter.report_plots).

    layer   op    weights  50%    80%    90%   95%   99%   max s @1pp  residual  scan s
    fc1     Gemm  235,200  98.10  98.05  97.9  97.1  88.0  95%                   0.4
"""

from __future__ import annotations

import numpy as np

from onnxprune.calibration.sensitivity import SensitivityResult

TABLE_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)
SAFE_LOSS_PP = 1.0  # the table's "max sparsity within 1 pp" column


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
        for s in shown:  # "-": a level the budgeted scan did not measure for this layer
            i = min(range(len(lay.levels)), key=lambda k: abs(lay.levels[k] - s), default=None)
            row[f"{s:.0%}"] = f"{lay.values[i]:.2f}" if i is not None and abs(lay.levels[i] - s) < 1e-9 else "-"
        row[f"max s @{SAFE_LOSS_PP:g}pp"] = f"{max_sparsity_within(result, lay.name, SAFE_LOSS_PP):.0%}"
        row["residual"] = "yes" if lay.coupled else ""
        row["scan s"] = f"{lay.seconds:.1f}"
        rows.append(row)
    return rows
