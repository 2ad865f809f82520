"""A run is an ordered list of registered steps over one typed run state.

Each step declares the state fields it `needs` and the ones it `gives`; the runner checks both, times every
step, and names a failing step together with the steps that ran before it (onnx_ir's PassManager, Olive's pass
flows). One-shot, scheduled, budgeted and automatic runs differ only in their step lists (`converter.plan`).

    load → inventory → data → targets → [scan → allocate|fit-budget] → prune|retrain|budget-search
         → shrink → encode → verify → measure → report → [budget-check]

Each step owns a small config dataclass (`StepConfig`), validated where it is defined; `converter.plan`
builds them from the command line, the Python API or a recipe file, and `--plan` prints them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import onnx

from onnxprune.errors import ConfigError, ConverterError, PassError, one_line
from onnxprune.passes.base import PruneState
from onnxprune.registry import registrar

log = logging.getLogger(__name__)

Progress = Callable[..., None]  # (task, done, total, info="")


def _silent(*_args, **_kwargs) -> None:
    return None


@dataclass
class RunState:
    """Everything one run knows. Steps read what they need and fill in what they give."""

    source: Any  # a path or a ModelProto: what the user gave
    config: Any = None  # converter.plan.RunConfig: every step's settings (for recipes and checkpoints)
    progress: Progress = _silent
    loaded: Any = None  # modelio.LoadedModel
    original: onnx.ModelProto | None = None  # the input model, never changed
    # optional inputs --data leaves out: `original` runs without them, the written model takes them again
    unfed: list = field(default_factory=list)  # (position, ValueInfoProto) each: modelio.run_without
    inventory: Any = None  # passes.weights.Inventory
    data: Any = None  # converter.steps.data.Data: readers and evaluators, opened once
    random_shapes: dict | None = None  # without real data: input -> dims random inputs are drawn at (steps.shapes)
    scannable: Any = None  # the Inventory a budget allocates over (excluded and fixed layers left out)
    targets: dict | None = None  # weight name -> passes.magnitude.Target
    unread_rows: dict = field(default_factory=dict)  # embedding table -> bool [rows, 1...]: rows no sample reads,
    #                                                   given back their input values after pruning (steps/rows.py)
    scoring: Any = None  # passes.criteria.Scoring: the run's criterion, bound to its calibration statistics
    sensitivity: Any = None  # calibration.sensitivity.SensitivityResult
    allocation: dict | None = None  # how the budget chose the targets (for the report)
    pruned: onnx.ModelProto | None = None  # dense, pruned weights zeroed, original shapes: the parity oracle
    prune: PruneState = field(default_factory=PruneState)  # masks, thresholds, notes
    history: list[dict] = field(default_factory=list)  # one entry per retraining round or candidate
    shrunk: onnx.ModelProto | None = None  # after dead-neuron removal (may be `pruned` itself)
    neurons: dict | None = None  # channels per layer before/after the shrink
    slices: list = field(default_factory=list)  # dead-neuron removal's (initializer, axis, keep), in order
    unshrunk: tuple | None = None  # (masks, notes count) before the shrink: the verify step's undo of a wrong one
    quantized: list = field(default_factory=list)  # QDQ weights folded to float at load (passes.quantized_weights),
    #                                                 quantized back when written; sessions run them as written
    params_after_shrink: int | None = None
    nonzeros_after_shrink: int | None = None  # the written layers' nonzeros (a removed neuron's weights are gone)
    final: onnx.ModelProto | None = None  # encoded: what gets written
    sparse_format: str | None = None  # how `final` stores its pruned weights (--sparse-format, or the input's own)
    parity: Any = None  # converter.verify.Parity
    read_parity: Any = None  # converter.verify.Parity of the model as read against the input as given (read-check)
    metrics: dict | None = None  # the metric before/after on each data set
    final_outputs: list | None = None  # the calibration set's scored outputs of `final`, per batch (measure: the
    #                                    budget check judges this pass instead of running the model again)
    features: Any = None  # converter/coverage.FeatureCoverage: first-layer features one value in all the data
    activations: tuple | None = None  # (Act% per layer of the input model, of the pruned model)
    carried: dict | None = None  # a model feeding a state back, run as a stream (steps.verify.carried_check)
    decoded_budget: dict | None = None  # a greedy decoder's per-call budget over its decodes' length (steps.verify)
    streamed: dict | None = None  # a stream's calls judged as it runs them (steps.verify.streamed_decisions)
    report: dict | None = None
    auto: dict | None = None  # what the automatic search decided and why (converter.auto)
    quantize: dict | None = None  # --weight-bits: the width kept, the rule, each width tried (converter.steps.quantize)
    started: float = 0.0  # time.perf_counter() when the run started (deadlines count from it); given (the CLI:
    #                       its process's start), run_steps counts the time before its first step as "startup"
    deadline: float | None = None  # time.perf_counter() the whole run should end by (--time-budget), or None
    reports: bool = False  # the caller writes --report after the run: its time budget reserves the writing
    clock: Any = None  # with --time-budget, converter.auto.timing.RunClock: the budget and the reserve after the search
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        return self.prune.notes


@dataclass
class StepConfig:
    """A step's settings. Subclasses add fields and `validate()`; `options()` maps field -> CLI flag."""

    def validate(self) -> None:
        """Raise ConfigError naming the flag and the valid choices."""

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class Step:
    """One stage of a run. Subclasses set `name`, `needs`, `gives` and implement `run(state)`."""

    name: ClassVar[str] = "step"
    needs: ClassVar[tuple[str, ...]] = ()
    gives: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()  # gives that may legitimately stay empty (None)
    main_only: ClassVar[bool] = False  # under torchrun, only rank 0 runs it (the others train, then stop)

    def __init__(self, *configs: StepConfig):
        self.configs = configs

    def run(self, state: RunState) -> None:
        raise NotImplementedError

    def check(self, state: RunState) -> None:
        """Checks against the model, run for every step of the plan as soon as the inventory is known, so a
        mistyped layer name fails before the scan and the retraining, not after them."""

    def settings(self) -> dict:
        """What `--plan` prints for this step: its configs' resolved values."""
        out: dict = {}
        for c in self.configs:
            out.update(c.as_dict())
        return out

    def describe(self) -> str:
        """The docstring's first paragraph on one line (its first line alone cut the load step mid-sentence)."""
        return " ".join((self.__doc__ or self.name).strip().split("\n\n")[0].split())


STEPS: dict[str, type[Step]] = {}


register_step = registrar(STEPS, "step")


def check_plan(steps: list[Step], given: tuple[str, ...] = ("source",)) -> None:
    """Every step's needs are given by an earlier step; raise ConfigError naming the gap otherwise."""
    have = set(given)
    for i, step in enumerate(steps):
        missing = [n for n in step.needs if n not in have]
        if missing:
            before = ", ".join(s.name for s in steps[:i]) or "none"
            raise ConfigError(f"step '{step.name}' needs {', '.join(missing)}, which no step before it gives "
                              f"(steps before it: {before}).")
        have.update(step.gives)


def run_steps(steps: list[Step], state: RunState, *, is_main: bool = True) -> RunState:
    """Run the steps in order over `state`. A failure names the step and the steps already run. On a torchrun
    process other than rank 0 (`is_main` False) the main-only steps are skipped."""
    check_plan(steps)
    done: list[str] = []
    start = time.perf_counter()
    if state.started and state.started < start:  # the interpreter, the imports and the options before the steps
        state.seconds["startup"] = round(start - state.started, 3)
        start = state.started
    state.started = start
    for step in steps:
        if step.main_only and not is_main:
            continue
        t = time.perf_counter()
        try:
            step.run(state)
        except (ConverterError, KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # a bug or a graph we did not expect: say where it happened
            raise PassError(f"step '{step.name}' failed after [{', '.join(done) or 'none'}]: {one_line(exc)}") from exc
        missing = [g for g in step.gives if g not in step.optional and getattr(state, g) is None]
        if missing:
            raise PassError(f"step '{step.name}' did not give {', '.join(missing)} (after [{', '.join(done)}]).")
        state.seconds[step.name] = round(state.seconds.get(step.name, 0.0) + time.perf_counter() - t, 3)
        done.append(step.name)
        if "inventory" in step.gives:
            for later in steps[len(done):]:
                later.check(state)
        log.debug("step %s done in %.3f s", step.name, state.seconds[step.name])
    state.seconds["total"] = round(time.perf_counter() - start, 3)
    return state
