"""The numbers of a run, as report.json holds them: the per-layer table, the summary, reproduction."""

from __future__ import annotations

import datetime as _dt
import importlib
import logging
import math
import platform
import shlex
import sys
from collections.abc import Mapping

import numpy as np

from onnxprune.plain import plain

log = logging.getLogger(__name__)

REPORT_FORMAT = "onnxprune-report/1"


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
            "budget_by_output": (report.get("budget") or {}).get("by_output"),  # --max-loss OUTPUT=L
            # outputs a stream (the model fed its own state) took over the budget met one call at a time
            "budget_streamed_over": (report.get("carried") or {}).get("over"),
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
