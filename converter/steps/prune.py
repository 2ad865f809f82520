"""One-shot pruning: zero the weights the targets drop (no retraining)."""

from __future__ import annotations

import onnx

from onnxprune.converter.steps.base import RunState, Step, register_step
from onnxprune.passes.apply_masks import ApplyMasks
from onnxprune.passes.base import run_passes
from onnxprune.passes.magnitude import MagnitudePrune


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


@register_step("prune")
class PruneStep(Step):
    """Mask each layer to its target by magnitude and zero the masked weights."""

    needs = ("original", "inventory", "targets", "scoring")
    gives = ("pruned",)

    def run(self, state: RunState) -> None:
        state.pruned = copy_model(state.original)
        run_passes([MagnitudePrune(state.inventory, state.targets, state.scoring), ApplyMasks()], state.pruned,
                   state.prune)
