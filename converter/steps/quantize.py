"""Fewer bits per surviving weight (Deep Compression's second stage): fp16, or an n-bit k-means codebook per layer
(passes.quantize). The oracle itself takes the quantized values, so verification, the metrics and the budget are
all measured on what the final file computes."""

from __future__ import annotations

from dataclasses import dataclass

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.errors import ConfigError
from onnxprune.passes.base import run_passes
from onnxprune.passes.weights import constant_tensors


@dataclass
class QuantizeConfig(StepConfig):
    weight_bits: int | None = None  # 16: fp16; 1..8: an n-bit codebook per layer; None: values as trained

    def validate(self) -> None:
        from onnxprune.passes.quantize import BITS

        if self.weight_bits is not None and self.weight_bits not in BITS:
            raise ConfigError(f"--weight-bits {self.weight_bits} is not one of {', '.join(map(str, BITS))}.")


@register_step("quantize")
class QuantizeStep(Step):
    """Store the surviving weights in fewer bits; the oracle takes the quantized values."""

    main_only = True
    needs = ("pruned", "inventory")
    gives = ("pruned",)

    def __init__(self, config: QuantizeConfig):
        super().__init__(config)
        self.config = config

    def run(self, state: RunState) -> None:
        from onnxprune.passes.quantize import QuantizeWeights

        present = set(constant_tensors(state.pruned))
        names = [w.name for w in state.inventory.prunable if w.name in present]
        run_passes([QuantizeWeights(names, self.config.weight_bits)], state.pruned, state.prune)
