"""Dead-neuron removal (paper §3.5): channels with no input or no output left go from every layer they touch,
so the dense shapes, and the runtime, shrink. Optionally the input is cut to the features some weight reads."""

from __future__ import annotations

from dataclasses import dataclass

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.errors import ConfigError, PassError, debugging, one_line
from onnxprune.passes.weights import find_prunable


@dataclass
class ShrinkConfig(StepConfig):
    neurons: bool = True  # False: --no-neurons, keep dead neurons
    crop_inputs: bool = False
    gather_inputs: bool = False

    def validate(self) -> None:
        if self.gather_inputs and self.crop_inputs:
            raise ConfigError("--gather-inputs and --crop-inputs both drop unread input features; pick one "
                              "(--crop-inputs is faster in onnxruntime).")
        if not self.neurons and (self.crop_inputs or self.gather_inputs):
            flag = "--crop-inputs" if self.crop_inputs else "--gather-inputs"
            raise ConfigError(f"{flag} is part of dead-neuron removal, which --no-neurons turns off; drop one of "
                              "them.")


@register_step("shrink")
class ShrinkStep(Step):
    """Remove dead neurons (and unread input features) from the pruned model."""

    main_only = True
    needs = ("pruned",)
    gives = ("shrunk", "neurons")
    optional = ("neurons",)

    def __init__(self, config: ShrinkConfig, *, asked: bool = True):
        super().__init__(config)
        self.config = config
        self.asked = asked  # the cropping is the user's (a flag, a recipe), not the automatic plan's own choice

    def run(self, state: RunState) -> None:
        c = self.config
        if state.quantized:  # folded QDQ weights on their grid, as the file will hold them (a refit's value under
            from onnxprune.converter.steps.prune import copy_model  # half a step from 0 is 0 there, and counts so)
            from onnxprune.passes.quantized_weights import snap

            if state.pruned is state.original:
                state.pruned = copy_model(state.pruned)
            snap(state.pruned, state.quantized)
        note = state.features.note(state.original, state.pruned) if state.features is not None else None
        if note:
            state.prune.notes.append(note)
        if not c.neurons:
            state.shrunk, state.neurons = state.pruned, None
            return
        from onnxprune.passes.base import run_passes
        from onnxprune.passes.dead_neurons import RemoveDeadNeurons

        remove = RemoveDeadNeurons(gather_inputs=c.gather_inputs, crop_inputs=c.crop_inputs)
        state.unshrunk = (dict(state.prune.masks), len(state.prune.notes))  # the pass slices masks into new arrays
        try:
            state.shrunk = run_passes([remove], state.pruned, state.prune).model  # masks are sliced with their weights
        except PassError as exc:
            if exc.__cause__ is None or debugging():  # --debug, -vv: the traceback
                raise
            # A channel rule's defect on a graph it did not expect (real models 45's F1: a Reshape to a scalar) is no
            # reason to lose the pruned model: its weights are whole and verified as they are; only the removal goes.
            state.shrunk, state.neurons = state.pruned, None
            why = one_line(exc.__cause__, 200)
            state.prune.notes.append(f"dead-neuron removal was skipped: it failed on this graph ({why}), an "
                                     "onnxprune defect: the pruned weights are written with every neuron kept (as "
                                     "--no-neurons does); rerun with --debug for the traceback and please report it")
            return
        state.slices = list(remove.report.slices)  # a folded quantized weight's scales go with its channels
        first = {w.name: w.node for w in state.inventory.prunable} if state.inventory is not None else {}
        layers = {}
        for lay in remove.report.layers:
            key = lay.weight or lay.node
            if key in layers and first.get(key) != lay.node:  # a tied weight's row counts its first reader's
                continue  # channels, as inspect does (sweep 34: a Conv kernel a ConvTranspose also read showed 1->1)
            layers[key] = {"node": lay.node, "op": lay.op, "before": lay.before, "after": lay.after}
        state.neurons = {"layers": layers, "removed": remove.report.removed, "folded": remove.report.folded,
                         "aligned": remove.report.aligned}
        if self.asked and (c.crop_inputs or c.gather_inputs) and not any(
                lay.op == "input" and lay.after < lay.before for lay in remove.report.layers):
            flag = "--crop-inputs" if c.crop_inputs else "--gather-inputs"  # said, not silent (README audit)
            state.prune.notes.append(f"{flag}: no input feature went: every one is read by a kept weight, or no "
                                     "input feeds a prunable layer whose columns could say it is unread")

