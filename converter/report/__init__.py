"""The run report: one self-contained `report.html` for people and `report.json` with the same numbers for machines.

The layout follows Han et al. (NIPS 2015): the per-layer table of Tables 2-5 (weights, FLOPs, Act%, W%, FLOP%,
neurons before -> after), then the metric and its loss, the figures (Fig. 5 metric vs compression over the rounds,
Fig. 6 sensitivity, Fig. 7 weight histograms, Fig. 4 sparsity pattern), what a deployment sees (file size,
onnxruntime latency, parity with the dense model), and how to reproduce the run.

    FLOPs (dense)  = 2 x MACs per sample                   W%   = nonzero weights / weights
    FLOPs (pruned) = 2 x MACs x W%                         FLOP% = FLOPs (pruned) / FLOPs (dense)

(The paper's FLOP% also counts zero input activations; we count weights only, so ours is an upper bound.)

The HTML has no scripts and no external references: CSS is inline, figures are base64 PNG data URIs, and a
Content-Security-Policy forbids anything else. Every string that came from the model or the user is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import onnx

from onnxprune.converter.report.document import (REPORT_FORMAT, build_document, build_table,  # noqa: F401
                                                  _target_text, reproduction, versions)
from onnxprune.converter.report.figures import FigureOut, _pixel_shape, make_figures  # noqa: F401
from onnxprune.converter.report.html import render_html  # noqa: F401

def write_report(
    report: dict,
    out_dir,
    *,
    original_model: onnx.ModelProto,
    pruned_dense_model: onnx.ModelProto,
    sensitivity: Mapping | None = None,
    history: list | None = None,
    latency: dict | None = None,
) -> tuple[Path, Path]:
    """Write `out_dir/report.html` and `out_dir/report.json` (atomically); return their paths.

    `sensitivity` (layer -> (levels, values) or {levels, values, kind}), `history` (rounds {round, density,
    metric, loss}) and `latency` (`converter.latency.measure_latency`) override the report's own keys of those names.
    A figure that cannot be drawn becomes a note; it never fails the run.
    """
    from onnxprune.converter.modelio import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sensitivity = sensitivity if sensitivity is not None else report.get("sensitivity")
    history = history if history is not None else report.get("history")
    latency = latency if latency is not None else report.get("latency")
    notes: list[str] = []
    figures = make_figures(report, original_model, pruned_dense_model, sensitivity, history, notes)
    doc = build_document(report, sensitivity=sensitivity, history=history, latency=latency,
                         figures=figures, extra_notes=notes)
    page = render_html(doc, figures)
    json_path = atomic_write_bytes(out / "report.json", (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode())
    html_path = atomic_write_bytes(out / "report.html", page.encode("utf-8"))
    return html_path, json_path
