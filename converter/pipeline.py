"""Run a plan: the steps of `converter.plan` over one `RunState`. The CLI, the demo and the Python API all go
through `run`.

The model stays dense until the very end; the oracle for the final parity check is that dense model with the
pruned weights zeroed and the retrained weights written back, so every later step is checked end to end.
"""

from __future__ import annotations

import contextlib
import sys

import logging
from dataclasses import dataclass, field
from typing import Any

import onnx

from onnxprune.converter.plan import RunConfig, build_plan, configure
from onnxprune.converter.steps.base import Progress, RunState, run_steps
from onnxprune.converter.steps.budget import budget_error
from onnxprune.passes.base import PruneState
from onnxprune.passes.weights import Inventory

log = logging.getLogger(__name__)

__all__ = ["PruneResult", "RunConfig", "budget_error", "configure", "run"]


@dataclass
class PruneResult:
    model: onnx.ModelProto  # final: shrunk and encoded, what gets written
    dense_model: onnx.ModelProto  # the oracle: same weights, dense, original shapes
    original: onnx.ModelProto
    state: PruneState  # masks (sliced with their weights when neurons were removed), thresholds, notes
    inventory: Inventory
    report: dict
    sensitivity: Any = None  # calibration.sensitivity.SensitivityResult when a scan ran
    history: list[dict] = field(default_factory=list)
    deadline: float | None = None  # time.perf_counter() the run should end by (--time-budget), or None

    def __repr__(self) -> str:
        """The figures a notebook wants, not every mask array and model proto (a helper's print(result) did)."""
        r = self.report or {}
        budget = r.get("budget") or {}
        loss = (r.get("metrics") or {}).get("loss_pp")
        parts = [f"compression={r.get('compression', float('nan')):.2f}x"]
        if loss is not None:
            parts.append(f"loss_pp={loss:.3f}")
        if budget:
            parts.append(f"budget_met={budget.get('met')}")
        if r.get("output"):
            parts.append(f"output={r['output']!r}")
        return f"PruneResult({', '.join(parts)}, layers={len(r.get('layers') or [])}, notes={len(r.get('notes') or [])})"


def run(source, config: RunConfig, progress: Progress | None = None,
        started: float | None = None, *, reports: bool = False) -> PruneResult | None:
    """Validate the settings, build the plan and run it. Raises the ConverterError family. `started`
    (time.perf_counter()) is when the run's clock starts, default now: the command line gives its process's start,
    so that --time-budget holds what the user waits for, the interpreter and the imports included. `reports`: the
    caller writes a report after the run (convert's `report_dir`), which the time budget reserves.

    Under torchrun every process runs the plan: rank 0 alone scans, verifies and reports (the main-only steps),
    the others take part in choosing and retraining and return None."""
    from onnxprune.calibration import runtime
    from onnxprune.converter import distributed

    from onnxprune.converter.threads import apply_threads

    config.validate()
    apply_threads(config.retrain.threads)  # sensible torch/onnxruntime threads on shared machines, or --threads
    runtime.use_device(config.retrain.device, distributed.local_rank())  # every onnxruntime session; cuda w/o GPU fails
    backend = distributed.setup(config.retrain.device)  # torchrun's processes join here; alone: nothing happens
    state = RunState(source=source, config=config, progress=progress or (lambda *a, **k: None),
                     started=started or 0.0, reports=reports)
    from onnxprune.calibration.feeds import probed_outputs
    from onnxprune.converter.auto.decide import decision_scope

    from onnxprune.passes.quantized_weights import as_written

    def written(model):  # folded QDQ weights (load step) run as they would be written, never as their float stand-in
        return as_written(model, state.quantized, state.slices) if state.quantized else model

    from onnxprune.converter.threads import restore_threads

    torch = sys.modules.get("torch")  # a host that turned gradients off (torch.no_grad) must not stop retraining
    grads = torch.enable_grad() if torch is not None else contextlib.nullcontext()
    try:
        with decision_scope(config.budget.confidence), runtime.session_view(written), grads, \
                probed_outputs(_named_outputs(config.data.metric)):  # an output --metric leaves out: not probed
            # every decision rule of the run takes --confidence's margin
            run_steps(build_plan(config), state, is_main=backend.is_main)
    finally:
        restore_threads()  # the host's torch thread count (a Python caller's process goes on after the run)
    if config.budget.confidence is not None:
        state.report["confidence"] = config.budget.confidence
    if not backend.is_main:
        return None
    state.report.update(backend.report())  # world_size, samples per process
    state.report["seconds_by_step"] = dict(state.seconds)
    state.report["seconds"] = state.seconds["total"]
    if state.deadline is not None:  # --time-budget: how the run spent it (converter.auto.timing)
        from onnxprune.converter.auto.timing import spent

        clock = state.clock  # the one-shot fallback has no search report, but the same clock
        state.report["time_budget"] = spent(state.seconds, clock.budget, clock.after.as_dict())
    dense, original = state.pruned, state.original
    if state.quantized:  # the caller gets the models as a file would hold them, not the float stand-ins
        dense, original = as_written(dense, state.quantized) if dense is not None else None, as_written(
            original, state.quantized)
    return PruneResult(model=state.final, dense_model=dense, original=original, state=state.prune,
                       inventory=state.inventory, report=state.report, sensitivity=state.sensitivity,
                       history=state.history, deadline=state.deadline)


def _named_outputs(metric) -> frozenset[str] | None:
    """The outputs --metric names when only they count (OUTPUT=KIND and no bare KIND); None: every output counts.
    A spec the data step will refuse is left to it (None here)."""
    from onnxprune.calibration.metric_choice import parse_metric_spec
    from onnxprune.errors import ConfigError

    try:
        headline, named = parse_metric_spec(metric)
    except ConfigError:
        return None
    return frozenset(named) if named and headline is None else None
