"""Neuron sensitivity: the paper's per-layer scan (Figure 6), for whole neurons instead of single weights.

For every channel group that has neurons to lose (one layer's neurons, or a residual class across layers), mask
the weakest share of its neurons whole — the `--neuron-sparsity` score of `passes.neuron_masks`, nothing else
touched — and measure the metric on the calibration data. The curves say which layers take
`--neuron-layer NAME=S` well:

    accuracy (%)   fc1 ─────────*──*──*.         fc1 can lose 80% of its neurons for 0.1 pp,
                   fc2 ───*──*.        `*.       fc2 only 40%
                         neurons pruned away (%)

The result is a `SensitivityResult` with `unit = "neurons"`: the same JSON file, table and plot as the weight scan.
"""

from __future__ import annotations

import time

import numpy as np
import onnx

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.sensitivity import (
    LayerSensitivity,
    Progress,
    SensitivityResult,
    _check_levels,
    _dense_pct,
    _Ticker,
)
from onnxprune.passes.apply_masks import ApplyMasks
from onnxprune.passes.base import PruneState
from onnxprune.passes.neuron_masks import NeuronMap, neuron_map, neuron_masks
from onnxprune.passes.weights import Inventory, weight_array

DEFAULT_NEURON_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def neuron_scan(model: onnx.ModelProto, inventory: Inventory, evaluator: Evaluator, levels=DEFAULT_NEURON_LEVELS,
                progress: Progress | None = None) -> SensitivityResult:
    """Sensitivity of every channel group to losing a share of its neurons, one group at a time."""
    levels = _check_levels(levels)
    t0 = time.perf_counter()
    names = {w.name for w in inventory.prunable}
    nmap = neuron_map(model, names)
    weights = {n: weight_array(model, n) for n in names}
    ones = {n: np.ones(w.shape, dtype=bool) for n, w in weights.items()}
    result = SensitivityResult(metric=evaluator.metric, dense=_dense_pct(model, evaluator), levels=list(levels),
                               num_samples=evaluator.num_samples, data=evaluator.reader.description, unit="neurons")
    groups = [i for i, classes in enumerate(nmap.groups) if any(r in nmap.candidates for r in classes)]
    tick = _Ticker(progress, len(groups) * len(levels))
    by_weight = {w.name: w for w in inventory.prunable}
    for gi in groups:
        t1 = time.perf_counter()
        scores = []
        for share in levels:
            fractions = [share if j == gi else 0.0 for j in range(len(nmap.groups))]
            masks, _ = neuron_masks(nmap, weights, ones, fractions)
            trial = onnx.ModelProto()
            trial.CopyFrom(model)
            scores.append(100.0 * evaluator.evaluate(ApplyMasks()(trial, PruneState(masks=masks)).model))
            tick.advance(1, f"{_label(nmap, gi)} {share:.0%}")
        result.layers.append(_group_row(nmap, gi, by_weight, levels, scores, time.perf_counter() - t1))
    result.seconds = time.perf_counter() - t0
    return result


def _producers(nmap: NeuronMap, gi: int, by_weight) -> list:
    return [by_weight[n] for n in sorted(nmap.names[gi]) if n in by_weight]


def _label(nmap: NeuronMap, gi: int) -> str:
    return ", ".join(sorted({nmap.origins[r] for r in nmap.groups[gi] if r in nmap.origins}))


def _group_row(nmap: NeuronMap, gi: int, by_weight, levels, scores, seconds) -> LayerSensitivity:
    producers = _producers(nmap, gi, by_weight)
    first = producers[0]
    return LayerSensitivity(name=", ".join(w.name for w in producers), node=", ".join(w.node for w in producers),
                            op=first.op_type, kind=first.kind, size=len(nmap.groups[gi]), levels=list(levels),
                            values=[float(v) for v in scores], coupled=len(producers) > 1, seconds=seconds,
                            path="neurons")
