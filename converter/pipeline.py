"""The pipeline: load → find weights → choose per-layer targets → prune (→ retrain) → remove dead neurons →
sparse-encode → verify. Everything the CLI and the Python API do goes through `run`.

The model is kept dense until the very end; the oracle for the final parity check is that dense model with the
pruned weights zeroed (and retrained weights written back), so every later step is checked end to end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import onnx

from converter import modelio
from converter.errors import ConfigError, ConverterError
from converter.summary import layer_rows, skipped_rows, totals
from converter.verify import check_parity
from passes.apply_masks import ApplyMasks
from passes.base import PruneState, run_passes
from passes.magnitude import MagnitudePrune, Target, resolve_targets
from passes.sparse_encode import FORMATS, SparseEncode
from passes.weights import Inventory, find_prunable, name_nodes

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (task description, done, total)


@dataclass
class PruneOptions:
    """Every choice a run makes; the recipe file is this, written out."""

    sparsity: float | None = None
    quality: float | None = None
    layers: dict[str, float] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    max_loss: float | None = None
    sparse_format: str = "constant"
    data: Any = None
    eval_data: Any = None
    labels: str | None = None
    metric: str | None = None
    batch_size: int = 64
    limit: int | None = None
    seed: int = 0
    verify_batches: int = 4
    neurons: bool = True
    gather_inputs: bool = False

    def validate(self) -> None:
        if self.sparse_format not in FORMATS:
            raise ConfigError(f"--sparse-format '{self.sparse_format}' is not one of {', '.join(FORMATS)}.")
        if self.max_loss is not None:
            if self.sparsity is not None or self.quality is not None:
                raise ConfigError("--max-loss chooses per-layer sparsities itself; drop --sparsity/--quality.")
            if self.data is None:
                raise ConfigError("--max-loss needs data to measure the loss on; pass --data FILE.npz.")
            if not 0 <= self.max_loss <= 100:
                raise ConfigError(f"--max-loss {self.max_loss} must be in percentage points, between 0 and 100.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} must be >= 1.")


@dataclass
class PruneResult:
    model: onnx.ModelProto  # final: sparse-encoded, what gets written
    dense_model: onnx.ModelProto  # the oracle: same weights, dense
    state: PruneState
    inventory: Inventory
    report: dict


def load(source) -> modelio.LoadedModel:
    loaded = modelio.from_proto(source) if isinstance(source, onnx.ModelProto) else modelio.load_model(source)
    name_nodes(loaded.model)
    return loaded


def inventory_of(model: onnx.ModelProto, *, where: str) -> Inventory:
    inventory = find_prunable(model)
    if not inventory.prunable:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in inventory.skipped[:5]) or "no weights at all"
        raise ConverterError(
            f"'{where}' has no prunable weights (float weights of Conv/ConvTranspose/Gemm/MatMul). "
            f"Seen: {reasons}. Nothing to do."
        )
    return inventory


def run(source, options: PruneOptions, progress: Progress | None = None) -> PruneResult:
    options.validate()
    t0 = time.perf_counter()
    loaded = load(source)
    original = loaded.model
    where = str(loaded.path) if loaded.path else "<model>"
    inventory = inventory_of(original, where=where)
    rows_before = layer_rows(original, inventory)

    work = onnx.ModelProto()
    work.CopyFrom(original)
    state = PruneState()
    targets = choose_targets(work, inventory, options, progress)
    run_passes([MagnitudePrune(inventory, targets), ApplyMasks()], work, state)
    dense_pruned = work

    shrunk, neurons = _shrink(dense_pruned, options, state)
    final = onnx.ModelProto()
    final.CopyFrom(shrunk)
    names = [w.name for w in inventory.prunable if w.name in _constant_names(final)]
    run_passes([SparseEncode(names, options.sparse_format)], final, state)

    feeds = _verification_feeds(original, options)
    parity = check_parity(final, dense_pruned, feeds)
    rows_after = layer_rows(dense_pruned, inventory)
    shrunk_inventory = find_prunable(shrunk)
    report = {
        "model": where,
        "input_sha256": loaded.sha256,
        "layers": _merge_rows(rows_before, rows_after, state, targets),
        "skipped": skipped_rows(inventory),
        "before": totals(rows_before),
        "after": totals(rows_after),
        "neurons": neurons,
        "params_after_shrink": sum(w.size for w in shrunk_inventory.prunable),
        "file_size_before": loaded.file_size,
        "file_size_after": final.ByteSize(),
        "sparse_format": options.sparse_format,
        "parity": parity.as_dict(),
        "notes": state.notes,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    before, after = report["before"], report["after"]
    report["compression"] = before["params"] / after["nonzeros"] if after["nonzeros"] else float("inf")
    if options.data is not None:
        report["metrics"] = measure(original, final, options)
    return PruneResult(model=final, dense_model=dense_pruned, state=state, inventory=inventory, report=report)


def _shrink(model: onnx.ModelProto, options: PruneOptions, state: PruneState):
    """Dead-neuron removal (paper §3.5): smaller dense shapes. Returns the model and per-layer channel counts."""
    if not options.neurons:
        return model, None
    from passes.dead_neurons import remove_dead_neurons

    shrunk, report = remove_dead_neurons(model, gather_inputs=options.gather_inputs)
    state.notes.extend(report.blocked[:10])
    layers = {
        lay.weight or lay.node: {"node": lay.node, "op": lay.op, "before": lay.before, "after": lay.after}
        for lay in report.layers
    }
    return shrunk, {"layers": layers, "removed": report.removed, "folded": report.folded}


def _constant_names(model: onnx.ModelProto) -> set[str]:
    from passes.weights import constant_tensors

    return set(constant_tensors(model))


def choose_targets(model, inventory, options: PruneOptions, progress) -> dict[str, Target]:
    return resolve_targets(
        inventory,
        sparsity=options.sparsity,
        quality=options.quality,
        layers=options.layers,
        exclude=options.exclude,
    )


def measure(original: onnx.ModelProto, final: onnx.ModelProto, options: PruneOptions) -> dict:
    """The metric of the input and of the output model on the user's data, and how far the outputs moved."""
    from calibration.metrics import Evaluator, output_error
    from calibration.readers import open_data

    source = options.eval_data if options.eval_data is not None else options.data
    reader = open_data(source, original, labels=options.labels, batch_size=options.batch_size, limit=options.limit)
    evaluator = Evaluator(reader, options.metric, reference_model=original)
    before = evaluator.evaluate(original)
    after = evaluator.evaluate(final)
    error = output_error(evaluator.outputs(original), evaluator.outputs(final))
    return {
        "data": reader.description,
        "metric": evaluator.metric,
        "before": before,
        "after": after,
        "loss_pp": (before - after) * 100.0,
        "output_error": error,
    }


def _verification_feeds(model: onnx.ModelProto, options: PruneOptions):
    """A few batches of the user's data when given (real inputs hit real activations), else random inputs."""
    if options.data is None:
        return None
    from calibration.readers import open_data

    reader = open_data(options.data, model, labels=options.labels, batch_size=options.batch_size, limit=options.limit)
    feeds = []
    for feed in reader:
        feeds.append(feed)
        if len(feeds) >= options.verify_batches:
            break
    return feeds or None


def _merge_rows(before: list[dict], after: list[dict], state: PruneState, targets: dict) -> list[dict]:
    rows = []
    for b, a in zip(before, after):
        row = dict(b)
        row["nonzeros_before"] = b["nonzeros"]
        row["nonzeros"] = a["nonzeros"]
        row["density"] = a["density"]
        row["threshold"] = state.thresholds.get(b["weight"])
        t = targets.get(b["weight"])
        row["target"] = None if t is None else ({"sparsity": t.sparsity} if t.sparsity is not None else {"quality": t.quality})
        rows.append(row)
    return rows
