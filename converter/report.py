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

import base64
import datetime as _dt
import html
import json
import logging
import math
import importlib
import platform
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune.plain import count, nbytes, plain

log = logging.getLogger(__name__)

REPORT_FORMAT = "onnxprune-report/1"
HISTOGRAM_LAYERS = 3  # Figure 7 for the largest layers
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class FigureOut:
    id: str
    title: str
    caption: str
    png: bytes


# ---------------------------------------------------------------- entry point


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


# ---------------------------------------------------------------- the numbers (report.json)


SHOWN_ABOVE = frozenset({"model", "output", "layers", "before", "after", "compression", "file_size_before",
                         "file_size_after", "sparse_format", "params_after_shrink", "metrics", "parity", "latency",
                         "history", "sensitivity", "skipped", "notes"})


def build_document(report: dict, *, sensitivity=None, history=None, latency=None, figures=(), extra_notes=()) -> dict:
    """Everything report.json holds; the HTML is rendered from this dict only, so both show the same numbers."""
    metrics = report.get("metrics") or None
    table = build_table(report)
    doc = {
        "format": REPORT_FORMAT,
        "generated": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "model": report.get("model"),
        "output": report.get("output"),
        "summary": {
            "compression": report.get("compression"),
            "weights": table["total"]["weights"],
            "nonzeros": table["total"]["nonzeros"],
            "w_pct": table["total"]["w_pct"],
            "flop_pct": table["total"]["flop_pct"],
            "file_size_before": report.get("file_size_before"),
            "file_size_after": report.get("file_size_after"),
            "file_ratio": _ratio(report.get("file_size_before"), report.get("file_size_after")),
            "sparse_format": report.get("sparse_format"),
            "metric": None if not metrics else metrics.get("metric"),
            "metric_before": None if not metrics else metrics.get("before"),
            "metric_after": None if not metrics else metrics.get("after"),
            "loss_pp": None if not metrics else metrics.get("loss_pp"),
            "max_loss_pp": _max_loss(report),
            "budget_met": (report.get("budget") or {}).get("met"),
            "params_after_shrink": report.get("params_after_shrink"),
        },
        "table": table,
        "metrics": metrics,
        "parity": report.get("parity"),
        "latency": latency,
        "history": history,
        "sensitivity": _normalise_sensitivity(sensitivity),
        "skipped": report.get("skipped") or [],
        "notes": list(report.get("notes") or []) + list(extra_notes),
        "figures": [{"id": f.id, "title": f.title, "caption": f.caption} for f in figures],
        "reproduction": reproduction(report),
        # the rest of the run's numbers; what the keys above already show is not repeated
        "run": {k: v for k, v in report.items() if k not in SHOWN_ABOVE},
    }
    return plain(doc)


def build_table(report: dict) -> dict:
    """The per-layer table of the paper's Tables 2-5, plus the totals row."""
    rows = [_table_row(r, report) for r in report.get("layers") or []]
    flops = [r["flops"] for r in rows]
    flops_after = [r["flops_after"] for r in rows]
    known = bool(rows) and all(f is not None for f in flops) and all(f is not None for f in flops_after)
    before, after = report.get("before") or {}, report.get("after") or {}
    weights = before.get("params", sum(r["weights"] or 0 for r in rows))
    nonzeros = after.get("nonzeros", sum(r["nonzeros"] or 0 for r in rows))
    total_flops, total_after = (sum(flops), sum(flops_after)) if known else (None, None)
    neurons = [r for r in rows if r["neurons_before"] is not None and r["neurons_after"] is not None]
    total = {
        "layer": "total",
        "weights": weights,
        "nonzeros": nonzeros,
        "flops": total_flops,
        "flops_after": total_after,
        "act_pct": None,
        "w_pct": _pct(nonzeros, weights),
        "flop_pct": _pct(total_after, total_flops),
        "neurons_before": sum(r["neurons_before"] for r in neurons) if neurons else None,
        "neurons_after": sum(r["neurons_after"] for r in neurons) if neurons else None,
        "compression": report.get("compression", _ratio(weights, nonzeros)),
        "flop_reduction": _ratio(total_flops, total_after),
    }
    return {
        "columns": ["layer", "weights", "flops", "act_pct", "w_pct", "flop_pct", "neurons_before", "neurons_after"],
        "flops_definition": "dense: 2 x MACs per sample; pruned: 2 x MACs x W% (zero activations not counted)",
        "rows": rows,
        "total": total,
    }


def _table_row(r: dict, report: dict) -> dict:
    params = r.get("params")
    nonzeros = r.get("nonzeros")
    density = r.get("density")
    if density is None and params:
        density = None if nonzeros is None else nonzeros / params
    macs = r.get("macs")
    flops = None if macs is None else 2 * int(macs)
    flops_after = None if flops is None or density is None else flops * float(density)
    neurons_before, neurons_after = _neurons(report, r)
    act = _per_layer(report, r, "act")
    act_before = r.get("act_before")
    target = r.get("target") or {}
    return {
        "layer": r.get("node"),
        "weight": r.get("weight"),
        "op": r.get("op"),
        "kind": r.get("kind"),
        "shape": r.get("shape"),
        "weights": params,
        "nonzeros_before": r.get("nonzeros_before"),
        "nonzeros": nonzeros,
        "flops": flops,
        "flops_after": flops_after,
        "act_pct": None if not _number(act) else 100.0 * float(act),
        "act_before_pct": None if not _number(act_before) else 100.0 * float(act_before),
        "w_pct": None if density is None else 100.0 * float(density),
        "flop_pct": _pct(flops_after, flops),
        "neurons_before": neurons_before,
        "neurons_after": neurons_after,
        "threshold": r.get("threshold"),
        "target": _target_text(target, None if density is None else 1.0 - float(density)),
    }


def _target_text(target, reached: float | None) -> str:
    """What the layer was asked, and the sparsity it reached where that differs (neuron masks, rounding)."""
    if not isinstance(target, Mapping):
        return str(target)
    text = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in target.items())
    asked = target.get("sparsity")
    if reached is not None and (asked is None or abs(reached - asked) > 5e-4):
        text += f" (reached {reached:.4g})" if text else f"reached {reached:.4g}"
    return text


def _per_layer(report: dict, row: dict, key: str):
    """A per-layer extra: in the row itself, or in report[key] (or report[key]["layers"]) by weight or node name."""
    if row.get(key) is not None:
        return row[key]
    table = report.get(key)
    if isinstance(table, Mapping) and isinstance(table.get("layers"), Mapping):
        table = table["layers"]
    if isinstance(table, Mapping):
        for name in (row.get("weight"), row.get("node")):
            if name in table:
                return table[name]
    return None


def _neurons(report: dict, row: dict) -> tuple[int | None, int | None]:
    """Output channels before -> after dead-neuron removal (row keys first, then report["neurons"])."""
    if row.get("neurons_before") is not None:
        return row["neurons_before"], row.get("neurons_after")
    value = _per_layer(report, {k: v for k, v in row.items() if k != "neurons"}, "neurons")
    if isinstance(value, Mapping):
        return value.get("before"), value.get("after")
    return None, None


def _number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


def _normalise_sensitivity(sensitivity) -> dict | None:
    if not sensitivity:
        return None
    out = {}
    for name, curve in sensitivity.items():
        if isinstance(curve, Mapping):
            out[str(name)] = {"levels": list(curve.get("levels") or []), "values": list(curve.get("values") or []),
                              "kind": curve.get("kind")}
        else:
            levels, values = curve
            out[str(name)] = {"levels": list(levels), "values": list(values), "kind": None}
    return out


def _max_loss(report: dict):
    """The loss budget in pp: the measured budget verdict, the resolved options, or a plain key."""
    for value in ((report.get("budget") or {}).get("max_loss_pp"), (report.get("options") or {}).get("max_loss"),
                  report.get("max_loss")):
        if value is not None:
            return value
    return None


def _calibration_baseline(report: dict):
    """The dense model's metric on the data the rounds and the scan were measured on."""
    metrics = report.get("metrics") or {}
    calib = (metrics.get("sets") or {}).get("calibration") or metrics
    return calib.get("before")


def reproduction(report: dict) -> dict:
    options = report.get("options") if isinstance(report.get("options"), Mapping) else {}
    command = report.get("command")
    if isinstance(command, (list, tuple)):
        command = shlex.join(str(c) for c in command)
    return {
        "command": command,
        "seed": report.get("seed", options.get("seed")),
        "input_sha256": report.get("input_sha256"),
        "recipe": report.get("recipe"),
        "options": options or None,
        "versions": versions(),
        "timings": report.get("timings") or report.get("seconds_by_step"),
        "seconds": report.get("seconds"),
    }


def versions() -> dict:
    out = {"onnxprune": _dist_version("onnxprune"), "python": platform.python_version()}
    for module in ("onnx", "onnxruntime", "numpy", "matplotlib"):
        mod = sys.modules.get(module)
        if mod is None:
            try:
                mod = importlib.import_module(module)
            except ImportError:
                out[module] = None
                continue
        out[module] = getattr(mod, "__version__", None)
    out["platform"] = platform.platform()
    return out


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _pct(part, whole):
    if part is None or not whole:
        return None
    return 100.0 * float(part) / float(whole)


def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


# ---------------------------------------------------------------- figures


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
    from onnxprune.passes.weights import constant_tensors

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


# ---------------------------------------------------------------- HTML


def render_html(doc: dict, figures: list[FigureOut]) -> str:
    from onnxprune.converter.auto.report import auto_section

    model = doc.get("model") or "model"
    sections = [
        _header(doc),
        _cards(doc),
        _section("Layers", _layer_table(doc["table"]), "layers"),
        _section("Metric", _metric_block(doc), "metric"),
        _figures_section(figures),
        _section("Rounds", _rounds_table(doc.get("history") or []), "rounds"),
        _section("Automatic search", auto_section((doc.get("run") or {}).get("auto"), doc.get("history")), "auto"),
        _section("Deployment", _deployment_block(doc), "deployment"),
        _skipped_block(doc.get("skipped") or []),
        _notes_block(doc.get("notes") or []),
        _section("Reproduce", _reproduction_block(doc["reproduction"]), "reproduce"),
    ]
    body = "\n".join(s for s in sections if s)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>onnxprune report: {_e(Path(str(model)).name)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n<footer>Generated by onnxprune {_e(doc['reproduction']['versions'].get('onnxprune'))}"
        f" on {_e(doc['generated'])}. Method: Han, Pool, Tran, Dally, <i>Learning both Weights and Connections for "
        "Efficient Neural Networks</i>, NIPS 2015.</footer>\n</main>\n</body>\n</html>\n"
    )


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _section(title: str, inner: str, anchor: str) -> str:
    if not inner:
        return ""
    return f"<section id=\"{anchor}\">\n<h2>{_e(title)}</h2>\n{inner}\n</section>"


def _header(doc: dict) -> str:
    s = doc["summary"]
    model = doc.get("model") or "<model>"
    out = f"<p class=\"muted\">output: <code>{_e(doc['output'])}</code></p>" if doc.get("output") else ""
    fmt = f" &middot; {_e(s['sparse_format'])} sparse format" if s.get("sparse_format") else ""
    return (f"<header>\n<div class=\"eyebrow\">onnxprune report</div>\n<h1>{_e(Path(str(model)).name)}</h1>\n"
            f"<p class=\"muted\">input: <code>{_e(model)}</code>{fmt}</p>\n{out}\n</header>")


def _card(key: str, value: str, sub: str = "", cls: str = "") -> str:
    return (f"<div class=\"card {cls}\"><div class=\"k\">{key}</div><div class=\"v\">{value}</div>"
            f"<div class=\"s\">{sub}</div></div>")


def _cards(doc: dict) -> str:
    s, t = doc["summary"], doc["table"]["total"]
    cards = [_card("Compression", f"{_x(s['compression'])}",
                   f"{count(s['weights'])} &rarr; {count(s['nonzeros'])} nonzero weights ({_p(s['w_pct'])})")]
    if t.get("neurons_before") is not None and t.get("neurons_after") is not None:
        dense = s.get("params_after_shrink")
        sub = f"dense weights after removal: {count(dense)}" if dense is not None else "output channels"
        cards.append(_card("Neurons", f"{t['neurons_before']:,} &rarr; {t['neurons_after']:,}", sub))
    if s.get("file_size_before") is not None:
        cards.append(_card("File size", f"{_e(nbytes(s['file_size_before']))} &rarr; "
                                        f"{_e(nbytes(s['file_size_after']))}",
                           f"{_x(s['file_ratio'])} smaller" if s.get("file_ratio") else ""))
    if t.get("flops") is not None:
        cards.append(_card("FLOPs / sample", f"{count(t['flops'])} &rarr; {count(t['flops_after'])}",
                           f"{_p(t['flop_pct'])} of dense ({_x(t['flop_reduction'])} fewer)"))
    if s.get("metric") is not None:
        loss = s.get("loss_pp")
        budget = s.get("max_loss_pp")
        met = s.get("budget_met")
        if met is None and budget is not None and loss is not None:
            met = loss <= budget
        cls = {True: "good", False: "bad"}.get(met, "")
        verdict = "" if met is None else ": met" if met else ": NOT met"
        within = "" if budget is None else f"; budget {budget:g} pp on --data{verdict}"
        held_out = "evaluation" in ((doc.get("metrics") or {}).get("sets") or {})
        cards.append(_card(_e(s["metric"]), f"{_m(s['metric_before'], s['metric'])} &rarr; "
                                            f"{_m(s['metric_after'], s['metric'])}",
                           f"{'held-out ' if held_out else ''}loss {_pp(loss)}{within}", cls))
    lat = _latency_headline(doc.get("latency"))
    if lat:
        cards.append(lat)
    p = doc.get("parity") or {}
    if p:
        cards.append(_card("Parity", f"max |&Delta;| {_g(p.get('max_abs_diff'))}",
                           f"vs dense model with the same weights, {_e(p.get('batches'))} "
                           f"{'batches of data' if p.get('inputs') == 'data' else 'random batches'}", "good"))
    return f"<div class=\"cards\">\n{''.join(cards)}\n</div>"


def _latency_headline(latency) -> str:
    batches = (latency or {}).get("batches") or []
    if not batches:
        return ""
    b = batches[-1]
    return _card(f"Latency, batch {_e(b['batch'])}",
                 f"{_ms(b['a']['median_ms'])} &rarr; {_ms(b['b']['median_ms'])}",
                 f"median, onnxruntime CPU; {_x(b.get('speedup'), 2)} speed-up")


COLUMNS = [  # (key, header, class, formatter)
    ("layer", "Layer", "name", None),
    ("op", "Op", "", None),
    ("shape", "Shape", "", None),
    ("weights", "Weights", "n", "count"),
    ("flops", "FLOP", "n", "count"),
    ("act_pct", "Act%", "n", "pct"),
    ("w_pct", "W%", "n", "pct"),
    ("flop_pct", "FLOP%", "n", "pct"),
    ("neurons", "Neurons", "n", None),
    ("threshold", "Threshold", "n", "g3"),
    ("target", "Target", "", None),
]


def _layer_table(table: dict) -> str:
    rows = table["rows"]
    if not rows:
        return "<p>No prunable layers.</p>"
    has_act = any(r["act_pct"] is not None for r in rows)
    has_neurons = any(r["neurons_before"] is not None for r in rows)
    cols = [c for c in COLUMNS if (c[0] != "act_pct" or has_act) and (c[0] != "neurons" or has_neurons)]
    head = "".join(f"<th class=\"{c[2]}\">{c[1]}</th>" for c in cols)
    body = "\n".join(f"<tr>{''.join(_cell(r, c) for c in cols)}</tr>" for r in rows)
    total = table["total"]
    total_cells = []
    for c in cols:
        if c[0] == "layer":
            total_cells.append("<td>Total</td>")
        elif c[0] in ("weights", "flops", "neurons"):
            total_cells.append(_cell(total, c))
        elif c[0] == "w_pct":
            total_cells.append(_cell(total, c, suffix=f" ({_x(total['compression'])})"))
        elif c[0] == "flop_pct":
            total_cells.append(_cell(total, c, suffix=f" ({_x(total['flop_reduction'])})"
                                     if total.get("flop_reduction") else ""))
        else:
            total_cells.append("<td></td>")
    notes = ["Weights and FLOP are the dense layer's (FLOP = 2 &times; MACs per sample); W% is the share of "
             "weights left, FLOP% the share of FLOPs left (2 &times; MACs &times; W%; zero activations not "
             "counted, so an upper bound of the paper's FLOP%). The total row gives the compression in brackets."]
    if has_act:
        notes.append("Act% is the share of nonzero output activations on the calibration data.")
    else:
        notes.append("Act% was not measured in this run.")
    return (f"<div class=\"scroll\"><table class=\"layers\">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n"
            f"<tr class=\"total\">{''.join(total_cells)}</tr>\n</tbody>\n</table></div>\n"
            f"<p class=\"note\">{' '.join(notes)}</p>")


def _cell(row: dict, col, suffix: str = "") -> str:
    key, _, cls, kind = col
    if key == "neurons":
        b, a = row.get("neurons_before"), row.get("neurons_after")
        text = "" if b is None else f"{b:,} &rarr; {a:,}" if a is not None else f"{b:,}"
        return f"<td class=\"n\" data-key=\"neurons\" data-value=\"{_e(json.dumps([b, a]))}\">{text}</td>"
    value = row.get(key)
    if key == "shape" and value is not None:
        text = _e("\u00d7".join(str(v) for v in value))
    elif key == "layer":
        weight = row.get("weight")
        text = _e(value) + (f"<div class=\"sub\">{_e(weight)}</div>" if weight and weight != value else "")
    elif kind == "count":
        text = "unknown" if value is None else f"<span title=\"{value:,}\">{count(value)}</span>"
    elif kind == "pct":
        text = "&ndash;" if value is None else _p(value)
    elif kind == "g3":
        text = "&ndash;" if value is None else _g(value, 3)
    else:
        text = _e(value)
    data = f" data-key=\"{key}\" data-value=\"{_e(json.dumps(value))}\"" if kind else ""
    return f"<td class=\"{cls}\"{data}>{text}{suffix}</td>"


def _metric_block(doc: dict) -> str:
    m = doc.get("metrics")
    if not m:
        return ("<p>No data was given, so the model's metric was not measured: the parity check below only shows "
                "that the written file computes what the pruned weights say. Pass <code>--data FILE.npz</code> "
                "(with labels for top-1 accuracy) to measure the loss.</p>")
    sets = m.get("sets") if isinstance(m.get("sets"), Mapping) and m.get("sets") else {"data": m}
    head = ("<tr><th>data</th><th>metric</th><th class=\"n\">input model</th><th class=\"n\">pruned model</th>"
            "<th class=\"n\">loss</th><th class=\"n\">top-1 agreement</th><th class=\"n\">max rel. error</th>"
            "<th class=\"n\">mean rel. error</th></tr>")
    rows = []
    for key, one in sets.items():
        err = one.get("output_error") or {}
        label = {"calibration": "calibration (--data)", "evaluation": "held out (--eval-data)"}.get(key, "")
        agreement = err.get("agreement")
        rows.append(
            f"<tr><td class=\"name\">{_e(one.get('data'))}<div class=\"sub\">{_e(label)}</div></td>"
            f"<td>{_e(one.get('metric'))}</td>"
            f"<td class=\"n\">{_m(one.get('before'), one.get('metric'))}</td>"
            f"<td class=\"n\">{_m(one.get('after'), one.get('metric'))}</td>"
            f"<td class=\"n\" data-key=\"loss_pp\" data-value=\"{_e(json.dumps(one.get('loss_pp')))}\">"
            f"{_pp(one.get('loss_pp'))}</td>"
            f"<td class=\"n\">{'&ndash;' if agreement is None else _p(100 * agreement)}</td>"
            f"<td class=\"n\">{_g(err.get('max_rel'), 3)}</td><td class=\"n\">{_g(err.get('mean_rel'), 3)}</td></tr>")
    s = doc["summary"]
    notes = ["Loss = input model's metric minus the pruned model's, in percentage points (pp)."]
    if s.get("max_loss_pp") is not None:
        verdict = {True: "met", False: "NOT met", None: "not checked"}[s.get("budget_met")]
        notes.append(f"Budget (--max-loss): {s['max_loss_pp']:g} pp on the calibration data: {verdict}.")
    return (f"<div class=\"scroll\"><table class=\"metrics\"><thead>{head}</thead>\n<tbody>{''.join(rows)}</tbody>"
            f"</table></div>\n<p class=\"note\">{_e(' '.join(notes))}</p>")


def _figures_section(figures: list[FigureOut]) -> str:
    if not figures:
        return ""
    parts = []
    for i, f in enumerate(figures, 1):
        data = base64.b64encode(f.png).decode("ascii")
        parts.append(f"<figure id=\"fig-{_e(f.id)}\">\n<h3>{_e(f.title)}</h3>\n"
                     f"<img src=\"data:image/png;base64,{data}\" alt=\"{_e(f.title)}\">\n"
                     f"<figcaption>Figure {i}. {_e(f.caption)}</figcaption>\n</figure>")
    return _section("Figures", "\n".join(parts), "figures")


def _deployment_block(doc: dict) -> str:
    s = doc["summary"]
    rows = []
    if s.get("file_size_before") is not None:
        ratio = f" ({_x(s['file_ratio'])} smaller)" if s.get("file_ratio") else ""
        rows.append(("file size",
                     f"{_e(nbytes(s['file_size_before']))} &rarr; {_e(nbytes(s['file_size_after']))}{ratio}"))
    if s.get("sparse_format"):
        rows.append(("storage", f"<code>{_e(s['sparse_format'])}</code> sparse format"))
    p = doc.get("parity") or {}
    if p:
        rows.append(("parity", f"max abs diff {_g(p.get('max_abs_diff'))}, max rel diff {_g(p.get('max_rel_diff'))}"
                               f" (worst output <code>{_e(p.get('worst_output'))}</code>) vs the dense model with the "
                               f"same weights, on {_e(p.get('batches'))} "
                               f"{'batches of the data' if p.get('inputs') == 'data' else 'seeded random batches'}, "
                               "onnxruntime optimisations off"))
    return _kv(rows) + _latency_table(doc.get("latency"))


def _latency_table(latency) -> str:
    if not latency or not latency.get("batches"):
        return "<p class=\"note\">Latency was not measured in this run.</p>"
    body = "\n".join(
        f"<tr><td class=\"n\">{_e(b['batch'])}</td>"
        f"<td class=\"n\" data-key=\"before_ms\" data-value=\"{_e(json.dumps(b['a']['median_ms']))}\">"
        f"{_ms(b['a']['median_ms'])} <span class=\"muted\">&plusmn; {_ms(b['a']['iqr_ms'] / 2, 2)}</span></td>"
        f"<td class=\"n\" data-key=\"after_ms\" data-value=\"{_e(json.dumps(b['b']['median_ms']))}\">"
        f"{_ms(b['b']['median_ms'])} <span class=\"muted\">&plusmn; {_ms(b['b']['iqr_ms'] / 2, 2)}</span></td>"
        f"<td class=\"n\">{_g(b.get('ratio'), 3)}</td><td class=\"n\">{_x(b.get('speedup'), 2)}</td>"
        f"<td class=\"n\">{_e(b.get('runs'))}</td></tr>"
        for b in latency["batches"])
    info = (f"onnxruntime {_e(latency.get('onnxruntime'))}, {_e(latency.get('provider'))}, "
            f"{_e(latency.get('threads'))} intra-op thread(s), graph optimisations on; the two models run "
            f"interleaved in one process, {_e(latency.get('warmup'))} warm-up pairs excluded. Median of one run; "
            "&plusmn; is half the interquartile range.")
    extra = "".join(f" {_e(n)}" for n in latency.get("notes") or [])
    return (f"<h3>onnxruntime latency</h3>\n<table class=\"latency\"><thead><tr><th class=\"n\">batch</th>"
            "<th class=\"n\">input model</th><th class=\"n\">pruned model</th><th class=\"n\">after / before</th>"
            "<th class=\"n\">speed-up</th><th class=\"n\">runs each</th></tr></thead>\n"
            f"<tbody>{body}</tbody></table>\n<p class=\"note\">{info}{extra}</p>")


def _rounds_table(history: list) -> str:
    """One row per prune -> retrain round: weights kept, neurons left per layer, the metric, the budget."""
    rows = [h for h in history if isinstance(h, dict) and "round" in h]
    if not rows:
        return ""
    budgeted = any("fits" in h for h in rows)
    body = "\n".join(
        f"<tr><td class=\"n\">{_e(h['round'])}</td><td>{_e(h.get('phase', ''))}</td>"
        f"<td class=\"n\">{_g(100 * h['overall_density'], 3) + '%' if h.get('overall_density') is not None else ''}</td>"
        f"<td>{_e(', '.join(f'{k} {v}' for k, v in (h.get('neurons') or {}).items()))}</td>"
        f"<td class=\"n\">{_g(100 * h['metric'], 4) + '%' if h.get('metric') is not None else ''}</td>"
        + (f"<td class=\"n\">{_g(h.get('loss_pp'), 2)}</td><td>{'yes' if h.get('fits') else 'no, undone'}</td>"
           if budgeted else "")
        + f"<td class=\"n\">{_g(h.get('seconds'), 3)}</td></tr>" for h in rows)
    budget_head = "<th class=\"n\">loss (pp)</th><th>within budget</th>" if budgeted else ""
    return ("<table class=\"rounds\"><thead><tr><th class=\"n\">round</th><th>phase</th><th class=\"n\">weights kept"
            "</th><th>neurons left</th><th class=\"n\">metric</th>" + budget_head + "<th class=\"n\">seconds</th></tr>"
            f"</thead>\n<tbody>{body}</tbody></table>")


def _skipped_block(skipped: list) -> str:
    if not skipped:
        return ""
    rows = "\n".join(f"<tr><td class=\"name\">{_e(s.get('name'))}</td><td class=\"n\">{count(s.get('size'))}</td>"
                     f"<td>{_e(s.get('reason'))}</td></tr>" for s in skipped)
    return (f"<section id=\"skipped\">\n<details>\n<summary>Left alone: {len(skipped)} tensor(s) not considered "
            "prunable</summary>\n<table><thead><tr><th>tensor</th><th class=\"n\">elements</th><th>why</th></tr>"
            f"</thead>\n<tbody>{rows}</tbody></table>\n</details>\n</section>")


def _notes_block(notes: list) -> str:
    if not notes:
        return ""
    return _section("Notes", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>", "notes")


def _reproduction_block(rep: dict) -> str:
    command = rep.get("command")
    cmd = (f"<pre><code>{_e(command)}</code></pre>" if command else
           "<p class=\"note\">No command line recorded (the run came from the Python API).</p>")
    rows = [("seed", _e(rep.get("seed")) if rep.get("seed") is not None else "not recorded"),
            ("input sha256", f"<code>{_e(rep.get('input_sha256') or 'not recorded (in-memory model)')}</code>")]
    if rep.get("recipe"):
        rows.append(("recipe", f"<code>{_e(rep['recipe'])}</code>"))
    rows += [(k, f"<code>{_e(v)}</code>") for k, v in rep["versions"].items()]
    options = rep.get("options")
    if isinstance(options, Mapping) and options:
        rows.append(("options", "<code>" + ", ".join(f"{_e(k)}={_e(json.dumps(v))}" for k, v in options.items())
                     + "</code>"))
    timings = rep.get("timings")
    if isinstance(timings, Mapping) and timings:
        rows.append(("timings", ", ".join(f"{_e(k)} {_e(_sec(v))}" for k, v in timings.items())))
    if rep.get("seconds") is not None:
        rows.append(("pipeline time", _e(_sec(rep["seconds"]))))
    return cmd + _kv(rows)


def _kv(rows) -> str:
    if not rows:
        return ""
    return "<table class=\"kv\">" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


# ---------------------------------------------------------------- formatting


def _p(x) -> str:
    if x is None:
        return "&ndash;"
    return f"{x:.2f}%" if x < 1 else f"{x:.1f}%"


def _x(x, digits: int = 1) -> str:
    return "&ndash;" if x is None else f"{x:.{digits}f}&times;"


def _g(x, digits: int = 2) -> str:
    return "&ndash;" if x is None else f"{x:.{digits}g}"


def _ms(x, digits: int = 3) -> str:
    return "&ndash;" if x is None else f"{x:.{digits}g} ms"


def _pp(x) -> str:
    return "&ndash;" if x is None else f"{x:.2f} pp"


def _sec(x) -> str:
    try:
        return f"{float(x):.1f} s"
    except (TypeError, ValueError):
        return str(x)


def _m(value, metric) -> str:
    from onnxprune.converter.report_plots import is_percent_metric

    if value is None:
        return "&ndash;"
    return f"{100 * value:.2f}%" if is_percent_metric(metric) else f"{value:.4g}"


CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d8dee4;--soft:#f6f8fa;--accent:#3b6ea8;--good:#1a7f37;--bad:#cf222e}
*{box-sizing:border-box}
body{margin:0;background:#fff;color:var(--fg);font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",
Helvetica,Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 32px 48px}
header{border-bottom:1px solid var(--line);padding-bottom:12px;margin-bottom:18px}
.eyebrow{color:var(--accent);font-weight:600;font-size:12px;letter-spacing:.08em;text-transform:uppercase}
h1{font-size:26px;margin:2px 0 4px;word-break:break-all}
h2{font-size:19px;margin:30px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 8px}
p{margin:6px 0}
.muted,.note,figcaption,footer{color:var(--muted)}
.note{font-size:12.5px;margin-top:8px}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px 12px;white-space:pre-wrap;
word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px;margin:8px 0 6px}
.card{border:1px solid var(--line);border-left:4px solid var(--accent);border-radius:6px;padding:10px 14px;
background:var(--soft)}
.card.good{border-left-color:var(--good)}
.card.bad{border-left-color:var(--bad)}
.card .k{font-size:11.5px;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
.card .v{font-size:18px;font-weight:600;font-variant-numeric:tabular-nums;line-height:1.3;margin:2px 0}
.card .s{font-size:12.5px;color:var(--muted)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;margin:6px 0}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:var(--soft);border-bottom:2px solid #c4ccd4;font-weight:600;white-space:nowrap}
.n{text-align:right;white-space:nowrap}
td.name{overflow-wrap:anywhere;min-width:140px}
td .sub{color:var(--muted);font-size:12px}
tr.total td{font-weight:600;border-top:2px solid var(--fg);border-bottom:none}
table.kv{width:auto}
table.kv th{font-weight:500;color:var(--muted);padding-right:24px;white-space:nowrap}
table.latency{width:auto}
figure{margin:14px 0 26px}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
figcaption{font-size:13px;margin-top:6px}
details summary{cursor:pointer;font-weight:600;margin:24px 0 8px}
footer{border-top:1px solid var(--line);margin-top:36px;padding-top:10px;font-size:12px}
@media print{main{max-width:none;padding:0}figure{break-inside:avoid}}
"""
