"""The run's numbers as one dict (report.json's source): layers before/after, totals, neurons, sizes, parity,
metrics, history, the settings of every step."""

from __future__ import annotations

import onnx

from onnxprune.converter.steps.base import RunState, Step, register_step
from onnxprune.converter.steps.load import where
from onnxprune.converter.summary import float_nonzeros, layer_rows, packed_weights, skipped_rows, totals
from onnxprune.passes.magnitude import quality_for_sparsity
from onnxprune.passes.storage import describe_model
from onnxprune.passes.weights import weight_array


@register_step("report")
class ReportStep(Step):
    """Assemble the numbers of the run (what report.json, report.html and the summary show)."""

    main_only = True
    needs = ("original", "inventory", "pruned", "final", "parity", "targets")
    gives = ("report",)

    def run(self, state: RunState) -> None:
        from onnxprune.converter.plan import recipe_of

        original, inventory = state.original, state.inventory
        fallback = state.scoring.note() if state.scoring is not None else None  # weights its statistics missed
        if fallback and fallback not in state.notes:
            state.notes.append(fallback)
        before, after = layer_rows(original, inventory), layer_rows(state.pruned, inventory)
        report = {
            "model": where(state),
            "input_sha256": state.loaded.sha256,
            "layers": _merge_rows(before, after, state),
            "skipped": skipped_rows(inventory),
            "before": totals(before),
            "after": totals(after),
            "neurons": state.neurons,
            "params_after_shrink": state.params_after_shrink,
            "nonzeros_after_shrink": state.nonzeros_after_shrink,
            "file_size_before": state.loaded.file_size,
            "file_size_after": state.final.ByteSize(),
            "sparse_format": state.sparse_format,
            "criterion": state.scoring.criterion if state.scoring is not None else None,
            "weight_bits": state.config.quantize.weight_bits if state.config is not None else None,
            "storage": describe_model(state.final),  # per weight: encoding, bytes, nonzeros
            "parity": state.parity.as_dict(),
            "read_check": state.read_parity.as_dict() if state.read_parity is not None else None,
            "notes": state.notes,
            "history": state.history,
            "options": recipe_of(state.config) if state.config is not None else {},
        }
        if state.random_shapes:
            report["random_inputs"] = {name: list(dims) for name, dims in state.random_shapes.items()}  # None: batch
        if state.allocation is not None:
            report["allocation"] = state.allocation
        if state.auto is not None:
            report["auto"] = state.auto
        if state.quantize is not None:
            report["quantize"] = state.quantize
        report.update(_sensitivity_report(state.sensitivity))
        # from the input's own nonzeros: zeros it already had are not ours
        counted, nonzeros = report["before"]["nonzeros"] or report["before"]["params"], report["after"]["nonzeros"]
        report["compression"] = counted / nonzeros if nonzeros else float("inf")
        # the written file's ratio: dead-neuron removal takes the nonzero weights of removed neurons with them (a
        # Conv-Flatten-Gemm at --sparsity 0.9: 10.0x pruned, 18.6x written, as `inspect` of the output counts)
        written = state.nonzeros_after_shrink
        report["compression_written"] = counted / written if written else report["compression"]
        # in the input's shapes, as the prunable weights' ratio above (encode has let go of the shrunk model)
        packed, what = packed_weights(original)  # never pruned: the same before and after
        report["all_weights"] = {"before": float_nonzeros(original) + packed,
                                 "after": float_nonzeros(state.pruned) + packed, "packed": packed, "packed_what": what}
        if state.metrics is not None:
            report["metrics"] = state.metrics
            act_before, act_after = state.activations
            for row in report["layers"]:
                row["act_before"] = act_before.get(row["weight"])
                row["act"] = act_after.get(row["weight"])
            report["act"] = act_after
            if state.carried is not None:
                report["carried"] = state.carried
            note = _unbounded_loss(state)  # a note with the others (a warning would precede --json's document)
            if note and note not in state.notes:
                state.notes.append(note)
        state.report = report


UNBOUNDED_LOSS_PP = 5.0  # a recipe run without --max-loss that loses more than this says so


def _unbounded_loss(state: RunState) -> str | None:
    """A note when a run without --max-loss (a hand recipe: --sparsity, --quality, --iterations) lost more than
    UNBOUNDED_LOSS_PP on its data: sweep 21's harsh recipe on a DenseNet (half of every layer's weights and neurons,
    one round) fell to chance accuracy and wrote its file with the loss only in the summary line."""
    budget = getattr(getattr(state.config, "budget", None), "max_loss", None)
    figures = state.metrics  # the headline set's: --eval-data's when given, else the calibration data's
    if budget is not None or not figures or figures.get("loss_pp") is None:
        return None
    loss = float(figures["loss_pp"])
    if not loss > UNBOUNDED_LOSS_PP:
        return None
    data = str(figures.get("data") or "the data").split(":", 1)[0]
    return (f"this recipe loses {loss:.1f} pp of {figures.get('metric')} on {data}, and no --max-loss bounds it: "
            "add --max-loss L (pp) to let the tool keep within L, or prune more gently")


def _sensitivity_report(sensitivity) -> dict:
    if sensitivity is None:
        return {}
    layers = {lay.name: {"node": lay.node, "kind": lay.kind, "levels": list(lay.levels), "values": list(lay.values),
                         "coupled": lay.coupled} for lay in sensitivity.layers}
    return {"sensitivity": layers, "sensitivity_metric": sensitivity.metric}


def _kept_targets(state: RunState) -> dict:
    """The targets of the model that was kept: a budget search's best round, else the targets given."""
    kept = [h for h in state.history if h.get("fits") and h.get("targets")]
    if kept:
        return {n: {"sparsity": s} for n, s in kept[-1]["targets"].items()}
    return {n: ({"sparsity": t.sparsity} if t.sparsity is not None else {"quality": t.quality})
            for n, t in (state.targets or {}).items()}


def _merge_rows(before: list[dict], after: list[dict], state: RunState) -> list[dict]:
    targets, neurons = _kept_targets(state), state.neurons or {}
    stored = {w.name: w.integer.data_type for w in state.quantized}  # folded at load: the type the file holds
    rows = []
    for b, a in zip(before, after):
        row = dict(b)
        if b["weight"] in stored:
            row["dtype"] = onnx.helper.tensor_dtype_to_np_dtype(stored[b["weight"]]).name
        row["nonzeros_before"] = b["nonzeros"]
        row["nonzeros"] = a["nonzeros"]
        row["density"] = a["density"]
        row["threshold"] = state.prune.thresholds.get(b["weight"])
        sparsity = 1.0 - a["density"] if a["density"] is not None else None
        row["quality"] = (quality_for_sparsity(weight_array(state.original, b["weight"]), sparsity)
                          if sparsity else None)
        channels = neurons.get("layers", {}).get(b["weight"])
        if channels:
            row["neurons_before"], row["neurons_after"] = channels["before"], channels["after"]
        row["target"] = targets.get(b["weight"])
        rows.append(row)
    return rows
