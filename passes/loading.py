"""The passes the load step runs on every model before anything is measured (they rewrite how its weights are read,
never what it computes), listed once: `converter/steps/load.py` runs them all, `inspect` the ones marked `listed`.
Kept apart from the load step so that `inspect` imports neither onnxruntime nor torch (tests/test_packaging.py; only
a weight that nodes compute with arithmetic, weight_norm's g * v / ||v||, is evaluated by onnxruntime,
passes/constant_weights.py). Also what makes a model a training-mode export, which the load step refuses and
`inspect` says (`training_mode_nodes`), and what makes its outputs depend on chance (`chance_nodes`)."""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from onnxprune.passes.base import PruneState
from onnxprune.passes.bypass_identity import BypassIdentity
from onnxprune.passes.constant_pads import ConstantPads
from onnxprune.passes.constant_weights import ConstantWeights
from onnxprune.passes.contrib_qdq import ContribQDQ
from onnxprune.passes.einsum_linear import EinsumLinear
from onnxprune.passes.loop_invariants import LoopInvariants
from onnxprune.passes.merge_copies import MergeCopies
from onnxprune.passes.qoperator import QOperatorToQDQ
from onnxprune.passes.scopes import all_constants, all_nodes, outer_reads
from onnxprune.plain import listed

# The passes that rewrite how a model's weights are read, in the order the load step runs them; `listed`: `inspect`
# runs it too, so that it lists the weights as prune reads them (it lists a weight's copies as they are; an Identity in
# front of a weight it bypasses as prune does: real models 51's chython-rxnmap, each layer applied 8 times, read once
# directly and 7 times through an Identity, was listed 20.9M of 21.1M weights "not considered prunable")
LOAD_PASSES = (
    (ContribQDQ, True),  # com.microsoft QuantizeLinear/DequantizeLinear: the ai.onnx ops they equal
    (QOperatorToQDQ, True),  # QLinearConv/QLinearMatMul/QGemm: the QDQ layer they are, so their weights fold
    (EinsumLinear, True),  # Einsum "bi,oi->bo" of a weight: the MatMul it is
    (BypassIdentity, True),  # W -> Identity -> MatMul per use: one tied W
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


def training_mode_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes that make a model a training-mode export (torch.onnx.export(..., training=TrainingMode.TRAINING), or
    a module left in .train()), in words: a Dropout whose training_mode is a constant true (and whose ratio is not 0)
    drops a random share of its input on every run, a BatchNormalization with training_mode=1 normalizes by each
    batch's own statistics. `prune` refuses such a model at load, `inspect` says so."""
    consts = all_constants(model.graph)
    found = []
    for node in all_nodes(model):
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2] in consts:
            ratio = numpy_helper.to_array(consts[node.input[1]]) if len(node.input) > 1 and node.input[1] in consts \
                else 0.5 if len(node.input) < 2 or not node.input[1] else None
            if bool(numpy_helper.to_array(consts[node.input[2]]).all()) and (ratio is None or float(ratio) > 0):
                found.append(f"Dropout '{node.name}' (training_mode true)")
        elif node.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i for a in node.attribute):
            found.append(f"BatchNormalization '{node.name}' (training_mode=1)")
    return found


# ops that draw new random numbers on every run (onnx's generator ops)
RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                        "Bernoulli"})


def chance_nodes(model: onnx.ModelProto) -> list[str]:
    """The random ops whose values reach a graph output, in words with the outputs they reach: a VAE's sampling
    z = mu + eps * sigma exported with torch.randn_like is a RandomNormalLike (sweep 33: "budget met" on a
    reconstruction that two runs of the input model give 35% apart; onnxruntime seeds each session alike, so the
    measurement held only while both models drew the same numbers in the same order). A random op in an If/Loop/Scan
    body counts for the node that holds it. `prune` refuses such a model at load, `inspect` says so."""
    graph = model.graph
    reached: dict[str, str] = {}  # tensor -> the random op it depends on
    for node in graph.node:
        source = next((reached[i] for i in _reads(node) if i in reached), None)
        if source is None:
            drawn = _draws(node)
            source = f"{drawn.op_type} '{drawn.name}'" if drawn is not None else None
        if source is not None:
            reached.update((o, source) for o in node.output if o)
    found: dict[str, list[str]] = {}
    for out in graph.output:
        if out.name in reached:
            found.setdefault(reached[out.name], []).append(f"'{out.name}'")
    return [f"{op} (output{'s' if len(outs) > 1 else ''} {listed(outs, 3)})" for op, outs in found.items()]


def _draws(node: onnx.NodeProto) -> onnx.NodeProto | None:
    """`node`, or the first node of its bodies (at any depth), that is a random op of the standard domain."""
    if node.domain in ("", "ai.onnx") and node.op_type in RANDOM_OPS:
        return node
    for attr in node.attribute:
        for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            drawn = next((d for d in map(_draws, body.node) if d is not None), None)
            if drawn is not None:
                return drawn
    return None


def _reads(node: onnx.NodeProto) -> set[str]:
    """What `node` reads, its bodies' reads from outside among them."""
    return {i for i in node.input if i} | outer_reads(node)


CHANCE_FIX = ("Export the model without the sampling for inference (a VAE's decoder on the mean mu, a dropout "
              "layer off), or give onnxprune only the part whose outputs are a function of its input.")


TRAINING_MODE_FIX = ("Export it for inference: model.eval() before torch.onnx.export, and "
                     "training=torch.onnx.TrainingMode.EVAL (the default).")
# sweep 36: an MC-dropout model, in .eval() and exported for inference, was told to call model.eval()
ALWAYS_DROPOUT_FIX = ("A dropout the forward applies whatever the module's mode (F.dropout(x, p, training=True), "
                      "Monte Carlo dropout) is exported so even after model.eval(): pass training=self.training, or "
                      "export a forward without it.")


def training_mode_fix(found: list[str]) -> str:
    """The advice for `training_mode_nodes`' findings: where only Dropouts were found, the model may well have been
    exported in .eval() with a dropout its forward always applies, which model.eval() does not turn off."""
    if found and all(f.startswith("Dropout ") for f in found):
        return f"{TRAINING_MODE_FIX} {ALWAYS_DROPOUT_FIX}"
    return TRAINING_MODE_FIX
