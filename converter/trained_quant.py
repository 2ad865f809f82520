"""Trained quantization (Deep Compression, Han, Mao & Dally 2016, §3): n-bit k-means codebooks per layer, then the
shared values fine-tuned through the torch bridge.

    pruned weights ──k-means (passes.quantize)──> codes + 2^n centroids per layer
                   ──MaskedTrainer.set_codebooks, `epochs` passes──> centroids trained; codes, masks unchanged

Each weight keeps its code: every step gives the members of a code the mean of their gradients and sets them to one
value again, so the layer never holds more than its 2^n values; pruned weights stay exactly 0. A centroid that
trains to exactly 0.0 is nudged to the smallest positive subnormal, so a survivor stays a survivor (the
sparsity pattern, and the file's indices, never change).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.passes.base import PruneState, run_passes
from onnxprune.passes.quantize import QuantizeWeights, shared_codes
from onnxprune.passes.weights import constant_tensors, weight_array

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """How the shared values are fine-tuned: `epochs` passes over `reader` (a fraction trains that share of one
    shuffled epoch) with SGD at `lr`, cosine-decayed, momentum 0.9."""

    epochs: float
    lr: float
    batch_size: int
    reg_strength: float = 0.0
    trainer_options: dict | None = None  # MaskedTrainer's loss, temperature, distill_weight, device, seed, ...


def trained_codebooks(model: onnx.ModelProto, names: list[str], bits: int | dict[str, int], reader,
                      settings: TrainSettings, teacher: onnx.ModelProto | None = None) -> tuple[onnx.ModelProto, dict]:
    """`model` with each named weight on a k-means codebook of `bits` (per weight when a dict), the shared values
    fine-tuned; and what the training did ({"steps", "loss", "seconds"}). `model` is not changed."""
    from onnxprune.converter.finetune import MaskedTrainer

    quantized = onnx.ModelProto()
    quantized.CopyFrom(model)
    run_passes([QuantizeWeights(names, bits)], quantized, PruneState())
    present = [n for n in names if n in constant_tensors(quantized)]
    codes = {n: shared_codes(weight_array(quantized, n)) for n in present}
    if settings.epochs <= 0:
        return quantized, {"steps": 0, "loss": None, "seconds": 0.0}
    masks = {n: c >= 0 for n, c in codes.items()}
    trainer = MaskedTrainer(quantized, masks, reader, teacher=teacher, **(settings.trainer_options or {}))
    trainer.set_codebooks(codes)
    stats = trainer.train(settings.epochs, settings.lr, momentum=0.9, reg_strength=settings.reg_strength,
                          lr_schedule="cosine", batch_size=settings.batch_size)
    out = trainer.export()
    for name in present:
        keep_survivors(out, name, codes[name])
    return out, {"steps": stats.steps, "loss": stats.loss, "seconds": round(stats.seconds, 3)}


def keep_survivors(model: onnx.ModelProto, name: str, codes: np.ndarray) -> None:
    """A coded weight that trained to exactly 0.0 becomes the smallest positive subnormal (all of its code alike)."""
    from onnx import numpy_helper

    tensor = constant_tensors(model)[name]
    w = numpy_helper.to_array(tensor).copy()
    lost = (codes >= 0) & (w == 0)
    if not lost.any():
        return
    tiny = np.finfo(w.dtype).smallest_subnormal
    w[lost] = tiny  # one code, one value: every member of a lost code gets the same nudge
    tensor.CopyFrom(numpy_helper.from_array(w, tensor.name))
    log.info("'%s': %d weight(s) whose shared value trained to 0 kept as %g", name, int(lost.sum()), tiny)
