"""`onnxprune inspect` and the human-readable prune summary (rich tables on stdout)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onnxprune.converter.summary import fmt_bytes, fmt_count, layer_rows, skipped_rows, totals
from onnxprune.passes.weights import find_prunable, name_nodes


def inspect_model(path: Path) -> dict:
    from onnxprune.converter import modelio

    loaded = modelio.load_model(path)
    name_nodes(loaded.model)
    inventory = find_prunable(loaded.model)
    rows = layer_rows(loaded.model, inventory)
    for r in rows:  # how the file stores each weight: the encoding and its bytes per nonzero
        stored = loaded.storage.get(r["weight"])
        r["encoding"] = stored["encoding"] if stored else "dense"
        r["stored_bytes"] = stored["bytes"] if stored else r["params"] * _itemsize(loaded.model, r["weight"])
        r["bytes_per_nonzero"] = r["stored_bytes"] / r["nonzeros"] if r["nonzeros"] else None
    opsets = {o.domain or "ai.onnx": o.version for o in loaded.model.opset_import}
    return {
        "model": str(path),
        "file_size": loaded.file_size,
        "ir_version": loaded.model.ir_version,
        "opsets": opsets,
        "producer": f"{loaded.model.producer_name} {loaded.model.producer_version}".strip(),
        "layers": rows,
        "totals": totals(rows),
        "skipped": skipped_rows(inventory),
        "sparse_tensors_in_input": loaded.had_sparse,
    }


def _itemsize(model, name: str) -> int:
    from onnx import helper

    from onnxprune.passes.weights import constant_tensors

    tensor = constant_tensors(model).get(name)
    return helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize if tensor is not None else 4


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_inspection(info: dict, console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title=f"{info['model']}  ({fmt_bytes(info['file_size'])}, IR {info['ir_version']}, opsets {info['opsets']})")
    for col in ("node", "op", "weight", "shape", "neurons", "params", "nonzeros", "density", "MACs/sample", "stored as",
                "bytes", "B/nz"):
        table.add_column(col, justify="left" if col in ("node", "op", "weight", "shape", "stored as") else "right",
                         overflow="fold")
    for r in info["layers"]:
        via = f" (via {'/'.join(r['via'])})" if r["via"] else ""
        table.add_row(r["node"], r["op"], r["weight"] + via, "x".join(map(str, r["shape"])),
                      "-" if r["neurons"] is None else str(r["neurons"]), fmt_count(r["params"]),
                      fmt_count(r["nonzeros"]), _pct(r["density"]), fmt_count(r["macs"]), r["encoding"],
                      fmt_bytes(r["stored_bytes"]),
                      "-" if r["bytes_per_nonzero"] is None else f"{r['bytes_per_nonzero']:.2f}")
    t = info["totals"]
    stored = sum(r["stored_bytes"] for r in info["layers"])
    table.add_row("total", "", "", "", "", fmt_count(t["params"]), fmt_count(t["nonzeros"]), _pct(t["density"]),
                  fmt_count(t["macs"]), "", fmt_bytes(stored), f"{stored / t['nonzeros']:.2f}" if t["nonzeros"] else "-")
    console.print(table)
    if not info["layers"]:
        console.print("No prunable weights (float weights of Conv/ConvTranspose/Gemm/MatMul).")
    if info["skipped"]:
        skipped = Table(title="Not considered prunable")
        skipped.add_column("tensor")
        skipped.add_column("elements", justify="right")
        skipped.add_column("why")
        for s in info["skipped"]:
            skipped.add_row(s["name"], fmt_count(s["size"]), s["reason"])
        console.print(skipped)


def print_prune_summary(report: dict, console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title="Pruned layers")
    for col in ("node", "op", "weight", "params", "nonzeros", "W%", "q", "neurons", "Act%"):
        table.add_column(col, justify="left" if col in ("node", "op", "weight") else "right", overflow="fold")
    for r in report["layers"]:
        q = r.get("quality")
        neurons = f"{r['neurons_before']}->{r['neurons_after']}" if "neurons_before" in r else "-"
        act = f"{_pct(r.get('act_before'))}->{_pct(r.get('act'))}" if r.get("act") is not None else "-"
        table.add_row(r["node"], r["op"], r["weight"], fmt_count(r["params"]), fmt_count(r["nonzeros"]),
                      _pct(r["density"]), "-" if q is None else f"{q:.2f}", neurons, act)
    b, a = report["before"], report["after"]
    table.add_row("total", "", "", fmt_count(b["params"]), fmt_count(a["nonzeros"]), _pct(a["density"]), "", "", "")
    console.print(table)
    console.print(
        f"weights {fmt_count(b['nonzeros'])} -> {fmt_count(a['nonzeros'])} nonzero "
        f"({report['compression']:.1f}x fewer); file {fmt_bytes(report['file_size_before'])} -> "
        f"{fmt_bytes(report['file_size_after'])} ({report['sparse_format']} sparse format)"
    )
    neurons = report.get("neurons")
    if neurons and neurons["removed"]:
        changed = [f"{v['node']} {v['before']}->{v['after']}" for v in neurons["layers"].values() if v["before"] != v["after"]]
        console.print(f"dead neurons removed: {neurons['removed']} ({', '.join(changed)}); dense shapes shrink accordingly")
    latency = (report.get("latency") or {}).get("batches") or []
    if latency:
        runs = ", ".join(f"batch {b['batch']} {1e3 * b['a']['median_ms']:.1f} -> {1e3 * b['b']['median_ms']:.1f} us "
                         f"({b['speedup']:.2f}x)" for b in latency if b.get("speedup"))
        console.print(f"onnxruntime CPU latency vs the input model (median, interleaved): {runs}")
    p = report["parity"]
    console.print(
        f"verified in onnxruntime on {p['batches']} {'batches of your data' if p['inputs'] == 'data' else 'random inputs'}:"
        f" max abs diff {p['max_abs_diff']:.2g} vs the dense model with the same weights"
    )
    m = report.get("metrics")
    for name, s in (m or {}).get("sets", {}).items():
        err = s["output_error"]
        agree = f"top-1 agreement {100 * err['agreement']:.2f}%, " if err.get("agreement") is not None else ""
        console.print(
            f"{s['metric']} on {s['data']} ({name}): {100 * s['before']:.2f}% -> {100 * s['after']:.2f}% "
            f"(loss {s['loss_pp']:+.2f} pp); outputs vs the input model: {agree}"
            f"max rel error {err['max_rel']:.3g}, mean rel error {err['mean_rel']:.3g}"
        )
    budget = report.get("budget")
    if budget:
        console.print(f"budget: measured loss {budget['measured_loss_pp']:.2f} pp, --max-loss {budget['max_loss_pp']:g} pp: "
                      f"{'met' if budget['met'] else 'NOT met'}")
    for note in report.get("notes", []):
        console.print(f"note: {note}")
    if report.get("output"):
        console.print(f"wrote {report['output']}")


def _console() -> Console:
    """Wide tables when piped (CI logs), the terminal's width otherwise."""
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
