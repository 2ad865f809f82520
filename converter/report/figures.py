"""The report's figures (Fig. 4 sparsity pattern, 5 metric vs compression, 6 sensitivity, 7 weight histograms)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import onnx


from onnxprune.converter.report.document import _calibration_baseline, _max_loss

log = logging.getLogger(__name__)

HISTOGRAM_LAYERS = 3  # Figure 7 for the largest layers


@dataclass
class FigureOut:
    id: str
    title: str
    caption: str
    png: bytes


def make_figures(report, original, pruned, sensitivity, history, notes: list[str]) -> list[FigureOut]:
    """Every figure we can draw from what we were given, in the report's order; failures become notes."""
    from onnxprune.converter import report_plots as plots

    metrics = report.get("metrics") or {}
    metric = metrics.get("metric") or ("accuracy" if history or sensitivity else None)
    baseline = _calibration_baseline(report)
    scan_metric = report.get("sensitivity_metric") or metric
    makers = [
        ("metric-vs-pruned", "Metric vs. parameters pruned away",
         "After each pruning (and retraining) round, as in the paper's Figure 5; the numbers are the rounds.",
         lambda: plots.metric_vs_pruned(history, metric=metric, baseline=baseline,
                                        max_loss_pp=_max_loss(report)) if history else None),
        ("sensitivity", "Sensitivity of each layer",
         "The metric with one layer alone pruned to each level, the others dense (the paper's Figure 6).",
         lambda: plots.sensitivity_curves(sensitivity, kinds=_kinds(report), metric=scan_metric, baseline=baseline)
         if sensitivity else None),
        ("weight-histograms", "Weight distribution before and after pruning",
         "Left: all weights of the largest layers. Right: the nonzero weights after pruning (and retraining), "
         "same x range (the paper's Figure 7). Where the run recorded a magnitude threshold, the shaded band "
         "|w| \u2264 threshold is what was pruned.",
         lambda: _histograms(report, original, pruned)),
        ("sparsity-pattern", "Sparsity pattern of the largest fully-connected layer",
         "Black: connections kept; rows are output neurons, columns inputs (the paper's Figure 4). For a layer "
         "fed by a flattened image, the right panel counts the kept connections of each input pixel.",
         lambda: _spy(report, original, pruned)),
    ]
    figures = []
    for fid, title, caption, draw in makers:
        try:
            png = draw()
        except Exception as exc:  # a figure is never worth failing the run
            log.warning("report figure '%s' failed: %s", fid, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            notes.append(f"figure '{title}' could not be drawn ({type(exc).__name__}: {str(exc)[:200]}).")
            continue
        if png:
            figures.append(FigureOut(fid, title, caption, png))
    return figures


def _kinds(report: dict) -> dict[str, str]:
    kinds = {}
    for r in report.get("layers") or []:
        if r.get("kind"):
            kinds[r.get("weight")] = r["kind"]
            kinds[r.get("node")] = r["kind"]
    return kinds


def _weights(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Every constant by name; integer-quantized weights as the run saw them, dequantized (passes/quantized_weights)."""
    from onnxprune.passes import quantized_weights
    from onnxprune.passes.weights import constant_tensors

    if quantized_weights.foldable(model):
        folded = onnx.ModelProto()
        folded.CopyFrom(model)
        quantized_weights.fold(folded)
        model = folded
    return constant_tensors(model)


def _histograms(report, original, pruned) -> bytes | None:
    from onnx import numpy_helper

    from onnxprune.converter import report_plots as plots

    before_t, after_t = _weights(original), _weights(pruned)
    rows = [r for r in report.get("layers") or [] if r.get("weight") in before_t and r.get("weight") in after_t]
    rows = sorted(rows, key=lambda r: -(r.get("params") or 0))[:HISTOGRAM_LAYERS]
    if not rows:
        return None
    layers = [(r["weight"], numpy_helper.to_array(before_t[r["weight"]]), numpy_helper.to_array(after_t[r["weight"]]))
              for r in rows]
    return plots.weight_histograms(layers, {r["weight"]: r.get("threshold") for r in rows})


def _spy(report, original, pruned) -> bytes | None:
    from onnx import numpy_helper

    from onnxprune.converter import report_plots as plots

    after_t = _weights(pruned)
    fcs = [r for r in report.get("layers") or []
           if r.get("kind", "fc") == "fc" and r.get("weight") in after_t and len(r.get("shape") or []) == 2]
    if not fcs:
        return None
    row = max(fcs, key=lambda r: r.get("params") or 0)
    weight = numpy_helper.to_array(after_t[row["weight"]])
    in_axis, input_index = _axes(original, row)
    in_features = weight.shape[in_axis]
    pixels = _pixel_shape(original, row.get("node"), input_index, in_features)
    return plots.sparsity_pattern(weight, name=row["weight"], in_axis=in_axis, pixel_shape=pixels)


def _axes(model: onnx.ModelProto, row: dict) -> tuple[int, int]:
    """(storage axis of the inputs, index of the weight among the node's inputs)."""
    try:
        from onnxprune.passes.weights import find_prunable

        w = find_prunable(model, with_macs=False).by_name().get(row["weight"])
    except Exception:  # the figure falls back to the usual layouts
        w = None
    if w is not None and w.in_axis is not None:
        return w.in_axis, w.input_index
    node = next((n for n in model.graph.node if n.name == row.get("node")), None)
    if row.get("op") == "Gemm" and node is not None:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return (1 if trans_b else 0), 1
    return 0, 1


def _pixel_shape(model: onnx.ModelProto, node_name, weight_index: int, in_features: int) -> tuple[int, int] | None:
    """(H, W) when the layer reads a graph input through Flatten/Reshape and that input is an H x W image."""
    from onnxprune.calibration.runtime import input_specs

    producers = {o: n for n in model.graph.node for o in n.output}
    node = next((n for n in model.graph.node if n.name == node_name), None)
    if node is None or len(node.input) < 2:
        return None
    x = node.input[1 - weight_index] if weight_index in (0, 1) else node.input[0]
    while x in producers and producers[x].op_type in {"Flatten", "Reshape", "Identity", "Cast"}:
        x = producers[x].input[0]
    spec = next((s for s in input_specs(model) if s.name == x), None)
    if spec is None:
        return None
    dims = spec.shape[1:]
    if len(dims) >= 2 and all(d is not None for d in dims) and int(np.prod(dims)) == in_features \
            and int(np.prod(dims[:-2], dtype=np.int64)) == 1:
        return int(dims[-2]), int(dims[-1])
    side = math.isqrt(in_features)
    return (side, side) if side * side == in_features and side > 1 else None
