"""One-shot pruning: zero the weights the targets drop (no retraining)."""

from __future__ import annotations

import onnx

from onnxprune.converter.steps.base import RunState, Step, register_step
from onnxprune.passes.apply_masks import ApplyMasks
from onnxprune.passes.base import PruneState, run_passes
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
        state.pruned = pruned_copy(state.original, state.inventory, state.targets, state.scoring, state.prune)


def pruned_copy(model: onnx.ModelProto, inventory, targets: dict, scoring, prune: PruneState | None = None
                ) -> onnx.ModelProto:
    """A copy of `model` masked to `targets` by the run's criterion, as the prune step writes it (`prune`: the
    PruneState that keeps its masks and notes; a throwaway one when only the model is wanted)."""
    out = copy_model(model)
    run_passes([MagnitudePrune(inventory, targets, scoring), ApplyMasks()], out,
               prune if prune is not None else PruneState())
    return out
