"""Storage: pruned weights written sparse where that makes the file smaller (passes.sparse_encode)."""

from __future__ import annotations

from dataclasses import dataclass

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.converter.steps.prune import copy_model
from onnxprune.converter.steps.shrink import params
from onnxprune.errors import ConfigError
from onnxprune.passes.base import run_passes
from onnxprune.passes.sparse_encode import FORMATS, SparseEncode
from onnxprune.passes.weights import constant_tensors


@dataclass
class EncodeConfig(StepConfig):
    sparse_format: str = "constant"

    def validate(self) -> None:
        if self.sparse_format not in FORMATS:
            raise ConfigError(f"--sparse-format '{self.sparse_format}' is not one of {', '.join(FORMATS)}.")


@register_step("encode")
class EncodeStep(Step):
    """Encode the pruned weights in the chosen storage format (the oracle `pruned` stays dense)."""

    main_only = True
    needs = ("shrunk", "pruned", "inventory")
    gives = ("final",)

    def __init__(self, config: EncodeConfig):
        super().__init__(config)
        self.config = config

    def run(self, state: RunState) -> None:
        state.params_after_shrink = params(state.shrunk)
        # the oracle stays dense; a new graph (after a shrink) is ours to encode in place
        final = copy_model(state.shrunk) if state.shrunk is state.pruned else state.shrunk
        state.shrunk = None
        present = set(constant_tensors(final))
        names = [w.name for w in state.inventory.prunable if w.name in present]
        run_passes([SparseEncode(names, self.config.sparse_format)], final, state.prune)
        state.final = final
