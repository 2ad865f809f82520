"""The passes the load step runs on every model before anything is measured (they rewrite how its weights are read,
never what it computes), listed once: `converter/steps/load.py` runs them all, `inspect` the ones marked `listed`.
Kept apart from the load step so that `inspect` imports neither onnxruntime nor torch (tests/test_packaging.py; only
a weight that nodes compute with arithmetic, weight_norm's g * v / ||v||, is evaluated by onnxruntime,
passes/constant_weights.py)."""

from __future__ import annotations

import onnx

from onnxprune.passes.base import PruneState
from onnxprune.passes.bypass_identity import BypassIdentity
from onnxprune.passes.constant_pads import ConstantPads
from onnxprune.passes.constant_weights import ConstantWeights
from onnxprune.passes.einsum_linear import EinsumLinear
from onnxprune.passes.loop_invariants import LoopInvariants
from onnxprune.passes.merge_copies import MergeCopies
from onnxprune.passes.qoperator import QOperatorToQDQ

# The passes that rewrite how a model's weights are read, in the order the load step runs them; `listed`: `inspect`
# runs it too, so that it lists the weights as prune reads them (it lists a weight's copies and an Identity in front
# of it as they are)
LOAD_PASSES = (
    (QOperatorToQDQ, True),  # QLinearConv/QLinearMatMul/QGemm: the QDQ layer they are, so their weights fold
    (EinsumLinear, True),  # Einsum "bi,oi->bo" of a weight: the MatMul it is
    (BypassIdentity, False),  # W -> Identity -> MatMul per use: one tied W
    (ConstantWeights, True),  # a layer's weight computed from constants (Slice/Concat of a stored one): stored
    (MergeCopies, False),  # bit-identical copies of a weight: one tied weight
    (LoopInvariants, True),  # a weight a Loop carries unchanged: read from outside
    (ConstantPads, True),  # F.pad's pads computed from constants: one constant
)


def run_load_passes(model: onnx.ModelProto, prune: PruneState, *, listed_only: bool = False) -> None:
    """LOAD_PASSES on `model`, in place (`listed_only`: the ones `inspect` runs)."""
    for cls, listed in LOAD_PASSES:
        if listed or not listed_only:
            cls()(model, prune)
