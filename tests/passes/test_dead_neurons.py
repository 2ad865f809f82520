"""Dead-neuron removal: genuinely smaller dense shapes, the same outputs (onnxruntime, optimisations off)."""

from __future__ import annotations

from functools import partial

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from onnxprune.passes.apply_masks import ApplyMasks
from onnxprune.passes.base import PruneState, run_passes
from onnxprune.passes.dead_neurons import RemoveDeadNeurons, remove_dead_neurons
from tests.oracle import assert_same_outputs, needs_onnxruntime, run, runtime_version
from tests.passes import _graphs as G


def prune(model, **kw):
    out, report = remove_dead_neurons(model, **kw)
    G.assert_same(model, out)
    return out, report, G.shapes(out)


def channels(report) -> dict[str, tuple[int, int]]:
    return {l.node: (l.before, l.after) for l in report.layers}


# -- MLPs ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trans_b", [1, 0])
def test_mlp_drops_unread_and_constant_neurons_and_folds_the_constants(trans_b):
    m = G.mlp((20, 12, 10, 4), trans_b=trans_b)
    out_ax, in_ax = (0, 1) if trans_b else (1, 0)
    G.zero(m, "fc1.weight", out_ax, [1, 3])  # (b) fc1 neurons 1, 3 are relu(bias) …
    G.set_init(m, "fc1.bias", np.where(np.isin(np.arange(12), [1, 3]), 0.5, G.init(m, "fc1.bias")))  # … > 0
    G.zero(m, "fc2.weight", in_ax, [5])  # (a) nobody reads fc1 neuron 5
    b2 = G.init(m, "fc2.bias")
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == ((9, 20) if trans_b else (20, 9)) and shp["fc1.bias"] == (9,)
    assert shp["fc2.weight"] == ((10, 9) if trans_b else (9, 10))
    assert not np.allclose(G.init(out, "fc2.bias"), b2)  # relu(b1[1,3]) · W2 rows went in
    assert channels(report) == {"fc1": (12, 9), "fc2": (10, 10), "fc3": (4, 4)}
    assert report.removed == 3 and report.folded == 2 and report.rounds == 1
    assert G.op_counts(out) == G.op_counts(m)


def test_nodes_and_the_graph_keep_their_metadata_and_doc_strings():
    """onnx-graphsurgeon drops metadata_props and doc strings; a torch dynamo export's per-node stack traces were
    gone after a shrink (a 189 KB transformer file read 74 KB, bytes the shrink had not saved)."""
    m = G.mlp((20, 12, 10, 4))
    G.zero(m, "fc2.weight", 1, [5])  # nobody reads fc1 neuron 5
    for i, node in enumerate(m.graph.node):
        onnx.helper.set_metadata_props(node, {"pkg.torch.onnx.stack_trace": f"File model.py, line {i}"})
        node.doc_string = f"node {i}"
    onnx.helper.set_metadata_props(m.graph, {"pkg.torch.export.graph_signature": "sig"})
    m.graph.doc_string = "the graph"
    out, report, _ = prune(m)
    assert report.removed == 1
    had = {n.name: n for n in m.graph.node}
    assert all(n.metadata_props == had[n.name].metadata_props and n.doc_string == had[n.name].doc_string
               for n in out.graph.node)
    assert out.graph.metadata_props == m.graph.metadata_props and out.graph.doc_string == "the graph"
    onnx.checker.check_model(out, full_check=True)


def test_removal_cascades_until_nothing_is_dead():
    m = G.mlp((8, 6, 5, 3))
    w2 = G.init(m, "fc2.weight").copy()  # [5, 6]
    w2[:, 2] = 0
    w2[4, 2] = 1.0  # fc1 neuron 2 feeds only fc2 neuron 4 …
    G.set_init(m, "fc2.weight", w2)
    G.zero(m, "fc3.weight", 1, [4])  # … which nobody reads
    out, report, shp = prune(m)
    assert channels(report) == {"fc1": (6, 5), "fc2": (5, 4), "fc3": (3, 3)}
    assert report.rounds == 2


def test_gemm_without_bias_gets_one_when_a_constant_is_folded():
    m = G.zero(G.mlp((6, 5, 3), bias=False), "fc1.weight", 0, [0])
    m = G.zero(m, "fc1.weight", 0, [1])  # relu(0) = 0: nothing to fold, still removable
    m.graph.node[1].op_type = "Sigmoid"  # sigmoid(0) = 0.5: something to fold
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (3, 6) and shp["fc2_bias"] == (3,)
    fc2 = [n for n in out.graph.node if n.name == "fc2"][0]
    assert list(fc2.input)[2] == "fc2_bias"


def test_gemm_alpha_and_beta_are_respected_when_folding():
    m = G.zero(G.mlp((8, 6, 3), act="Sigmoid"), "fc1.weight", 0, [1, 4])
    for node in m.graph.node:
        if node.name == "fc2":
            node.attribute.extend([onnx.helper.make_attribute("alpha", 0.7), onnx.helper.make_attribute("beta", 0.5)])
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (4, 8) and report.folded == 2


def test_scalar_constant_nodes_and_stale_value_info_are_fine():
    m = G.mlp((10, 8, 3), act="GeluErf")
    sqrt2 = [t for t in m.graph.initializer if t.name == "act1.sqrt2"][0]
    m.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["act1.sqrt2"], value=sqrt2))
    m.graph.initializer.remove(sqrt2)
    m = onnx.shape_inference.infer_shapes(G.zero(m, "fc1.weight", 0, [3]))  # value_info now says [N, 8]
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (7, 10) and report.folded == 1


@pytest.mark.parametrize("transposed", [True, False])
def test_matmul_with_bias_add_folds_into_the_add(transposed):
    m = G.matmul_mlp((16, 12, 5), transposed=transposed)
    out_ax, in_ax = (0, 1) if transposed else (1, 0)
    G.zero(m, "fc1.weight", out_ax, [0, 7])  # (b)
    G.zero(m, "fc2.weight", in_ax, [3])  # (a)
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == ((9, 16) if transposed else (16, 9)) and shp["fc1.bias"] == (9,)
    assert shp["fc2.weight"] == ((5, 9) if transposed else (9, 5))
    assert G.op_counts(out) == G.op_counts(m)  # folded into fc2's Add, no new node


def test_matmul_without_bias_gets_an_add_and_keeps_the_output_name():
    m = G.zero(G.matmul_mlp((16, 12, 5), bias=False), "fc1.weight", 0, [0, 7])
    m.graph.node[2].op_type = "Sigmoid"
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (10, 16) and shp["fc2_bias"] == (5,)
    assert G.op_counts(out)["Add"] == 1 and out.graph.output[0].name == "y"


@pytest.mark.parametrize("trans_a", [0, 1])
def test_a_weight_that_is_gemms_first_operand_loses_its_dead_rows(trans_a):
    """A column-major export (W·xᵀ: the activations [features, N], the biases [out, 1]): both kinds of dead neurons
    go, the constants fold into the next layer's column bias, the last Gemm (transA=1) reads the channels on axis 0.
    Before: every such layer was opaque ("uses transA"; a first operand was no weight), so nothing shrank."""
    m = G.column_major_mlp((20, 12, 10, 4), trans_a=trans_a, act="Sigmoid")
    G.zero(m, "fc1.weight", 0, [1, 3])  # (b): sigmoid(bias) folds into fc2's column bias
    G.zero(m, "fc2.weight", 1 - trans_a, [5])  # (a) nobody reads fc1 neuron 5
    G.zero(m, "fc3.weight", 1, [0, 9])  # (a) fc3 (transA=1, transB=1) reads no fc2 neurons 0 and 9
    b2 = G.init(m, "fc2.bias")
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (9, 20) and shp["fc1.bias"] == (9, 1)
    assert shp["fc2.weight"] == ((8, 9) if not trans_a else (9, 8)) and shp["fc2.bias"] == (8, 1)
    assert shp["fc3.weight"] == (4, 8) and shp["fc3.bias"] == (4,)
    assert not np.allclose(G.init(out, "fc2.bias"), np.delete(b2, [0, 9], 0))  # sigmoid(b1[1,3]) · W2 went in
    assert channels(report) == {"fc1": (12, 9), "fc2": (10, 8), "fc3": (4, 4)}
    assert report.folded == 2 and G.op_counts(out) == G.op_counts(m)


def test_a_first_operand_gemm_without_bias_gets_a_column_bias():
    m = G.zero(G.column_major_mlp((10, 8, 6, 3), bias=False, act="Sigmoid"), "fc1.weight", 0, [2])
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (7, 10) and shp["fc2_bias"] == (6, 1) and report.folded == 1


@pytest.mark.parametrize("bias", [True, False])
def test_a_first_operand_matmul_loses_its_dead_rows(bias):
    """W·X with X [N, in, 3]: the channels on axis -2; a folded constant goes into the column bias Add, or a new
    one [out, 1] keeping the output's name."""
    m = G.first_operand_matmul_mlp((16, 12, 5), bias=bias)
    if not bias:
        m.graph.node[2].op_type = "Sigmoid"  # sigmoid(0) = 0.5: a constant to fold
    G.zero(m, "fc1.weight", 0, [0, 7])  # (b)
    G.zero(m, "fc2.weight", 1, [3])  # (a)
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (9, 16) and shp["fc2.weight"] == (5, 9)
    if bias:
        assert shp["fc1.bias"] == (9, 1) and G.op_counts(out) == G.op_counts(m)
    else:
        assert shp["fc2_bias"] == (5, 1) and G.op_counts(out)["Add"] == 1 and out.graph.output[0].name == "y"


@pytest.mark.parametrize("act", ["LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Elu", "Selu",
                                 "Softplus", "Identity", "Clip", "GeluErf", "GeluTanh", "Dropout", "Sin", "Cos",
                                 "Exp", "Sign", "Reciprocal", "Celu", "Floor", "Ceil", "Round", "Atan", "Sinh",
                                 "Cosh", "Asinh"])
def test_constants_are_folded_through_every_activation(act):
    """Sweep 36 added exp, sign (LISTA's soft threshold) and 1/x: each maps a constant channel to a constant; sweep 37
    Celu (torch's nn.CELU, both exporters: "consumer Celu ... (op Celu) has no channel rule"); sweep 41 Floor, Ceil
    and Round (torch.remainder(h, 1.0) is h - Floor(h / 1) * 1: "consumer Floor ... has no channel rule"); sweep 42
    Asinh, Sinh, Cosh and Atan (torch.asinh, dynamo: "consumer Asinh ... has no channel rule")."""
    m = G.mlp((10, 8, 6, 3), act=act, seed=3)
    G.zero(m, "fc1.weight", 0, [2, 5])
    G.zero(m, "fc2.weight", 0, [1])
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (6, 10) and shp["fc2.weight"] == (5, 6) and report.folded == 3


def test_dead_and_constant_channels_pass_isnan_and_isinf_guards():
    """Sweep 42: torch.xlogy as dynamo writes it, Where(IsNaN(p), p, p log p), kept a dead softmax group ("consumer
    IsNaN ... (op IsNaN) has no channel rule"; keras.ops' guards the same, sweep 41). A constant channel is no NaN and
    no inf: the guards pass it, a dead unit goes and a constant one (bias 0.5) is folded into fc2's bias."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 8)).astype(np.float32)
    w1[:, [1, 2, 6]] = 0
    b1 = np.where(np.arange(8) == 6, 0.5, np.where(np.isin(np.arange(8), [1, 2]), 0.0, 0.1)).astype(np.float32)
    h = onnx.helper
    inits = [onnx.numpy_helper.from_array(a, n) for a, n in (
        (w1, "fc1.weight"), (b1, "fc1.bias"), (rng.standard_normal((8, 3)).astype(np.float32), "fc2.weight"),
        (np.zeros(3, np.float32), "fc2.bias"), (np.array(0.0, np.float32), "zero"))]
    nodes = [h.make_node("MatMul", ["x", "fc1.weight"], ["a"]), h.make_node("Add", ["a", "fc1.bias"], ["h"]),
             h.make_node("IsNaN", ["h"], ["nan"]), h.make_node("IsInf", ["h"], ["inf"], detect_negative=0),
             h.make_node("Where", ["nan", "zero", "h"], ["g1"]), h.make_node("Where", ["inf", "zero", "g1"], ["g2"]),
             h.make_node("MatMul", ["g2", "fc2.weight"], ["b"]), h.make_node("Add", ["b", "fc2.bias"], ["y"])]
    out, report, shp = _x6_y3(nodes, inits, "guards")  # onnxruntime's outputs on seeded inputs equal
    assert shp["fc1.weight"] == (6, 5) and shp["fc2.weight"] == (5, 3) and report.removed == 3
    assert not np.allclose(G.init(out, "fc2.bias"), 0)  # 0.5 · fc2's row 6 went in


def _x6_y3(nodes, inits, name: str):
    """`prune` (below: onnxruntime's outputs on seeded inputs equal) of the graph of `nodes` from x [N, 6] to y [N, 3],
    opset 17; the written model passes the full checker."""
    h = onnx.helper
    graph = h.make_graph(nodes, name, [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])], inits)
    out, report, shp = prune(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8))
    onnx.checker.check_model(out, full_check=True)
    return out, report, shp


def _top1_gate():
    """(rng, initializers, nodes) of a top-1 gate over h = Relu(x @ fc1 + b1), h's units 1 and 5 dead: the gate's
    logits g = h @ gate, the condition c = Equal(ArgMax(g, keepdims), 0) [N, 1] (expert 0 chosen)."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 8)).astype(np.float32)
    w1[:, [1, 5]] = 0
    b1 = np.where(np.isin(np.arange(8), [1, 5]), 0.0, 0.1).astype(np.float32)
    h = onnx.helper
    inits = [onnx.numpy_helper.from_array(a, n) for a, n in (
        (w1, "fc1.weight"), (b1, "fc1.bias"), (rng.standard_normal((8, 2)).astype(np.float32), "gate.weight"),
        (np.array(0, np.int64), "expert"))]
    nodes = [h.make_node("MatMul", ["x", "fc1.weight"], ["a"]), h.make_node("Add", ["a", "fc1.bias"], ["p"]),
             h.make_node("Relu", ["p"], ["h"]), h.make_node("MatMul", ["h", "gate.weight"], ["g"]),
             h.make_node("ArgMax", ["g"], ["k"], axis=1, keepdims=1), h.make_node("Equal", ["k", "expert"], ["c"])]
    return rng, inits, nodes


def test_a_dead_unit_goes_through_a_top1_gate_whose_condition_carries_no_channels():
    """Sweep 45: a top-1 mixture of experts, Where(Equal(ArgMax(gate(h)), 0) [N, 1], h, 0), kept every dead unit of h
    ("consumer Where ... selects with '/Equal_output_0', which carries no channels"). The condition selects for all
    of h's channels alike (size 1 on their axis): a dead unit is 0 on both sides and goes, with the gate's and fc2's
    columns; a live one varies with the condition."""
    rng, inits, nodes = _top1_gate()
    h = onnx.helper
    inits += [onnx.numpy_helper.from_array(a, n) for a, n in (
        (rng.standard_normal((8, 3)).astype(np.float32), "fc2.weight"), (np.zeros(3, np.float32), "fc2.bias"),
        (np.array(0.0, np.float32), "zero"))]
    nodes += [h.make_node("Where", ["c", "h", "zero"], ["sel"]),
             h.make_node("MatMul", ["sel", "fc2.weight"], ["b"]), h.make_node("Add", ["b", "fc2.bias"], ["y"])]
    out, report, shp = _x6_y3(nodes, inits, "top1")  # onnxruntime's outputs on seeded inputs equal
    assert shp["fc1.weight"] == (6, 6) and shp["gate.weight"] == (6, 2) and shp["fc2.weight"] == (6, 3)
    assert report.removed == 2


def test_a_dead_unit_tied_to_live_experts_by_zeros_like_is_kept_and_said():
    """Sweep 45: torch legacy's top-1 MoE writes `y = zeros_like(h)` as ConstantOfShape(Shape(h)) and each expert's
    Where(c, expert(h), y): h's channels and the experts' are one class, alive, so a dead unit of h stays; the
    note said nothing once the Where passed a channel-less condition (h's Shape was counted a reader of h)."""
    rng, inits, nodes = _top1_gate()
    h = onnx.helper
    inits += [onnx.numpy_helper.from_array(a, n) for a, n in (
        (rng.standard_normal((8, 8)).astype(np.float32), "ex.weight"),
        (rng.standard_normal((8, 3)).astype(np.float32), "fc2.weight"))]
    nodes += [h.make_node("MatMul", ["h", "ex.weight"], ["e"]), h.make_node("Shape", ["h"], ["s"]),
             h.make_node("ConstantOfShape", ["s"], ["z"]), h.make_node("Where", ["c", "e", "z"], ["sel"]),
             h.make_node("MatMul", ["sel", "fc2.weight"], ["y"])]
    graph = h.make_graph(nodes, "top1z", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])], inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (6, 8) and report.removed == 0
    said = [line for line in report.lines() if "each in a class with a channel that is read elsewhere" in line]
    assert len(said) == 1 and said[0].startswith("2 channel(s) no weight needs"), report.lines()


def test_dead_and_constant_units_pass_onnxruntimes_quickgelu():
    """Sweep 43: onnxruntime's com.microsoft QuickGelu, x sigmoid(1.702 x) (its optimizer fuses CLIP's activation into
    it), kept every dead unit before it ("consumer QuickGelu ... (op QuickGelu) has no channel rule"). It maps a
    constant unit to a constant: a dead one goes, a constant one (bias 0.5) is folded into fc2's bias at
    0.5 sigmoid(0.85), and onnxruntime's outputs on seeded inputs stay the same."""
    m = G.mlp((10, 8, 3), seed=4)
    act = next(n for n in m.graph.node if n.op_type == "Relu")
    act.op_type, act.domain = "QuickGelu", "com.microsoft"
    act.attribute.append(onnx.helper.make_attribute("alpha", 1.702))
    m.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    G.zero(m, "fc1.weight", 0, [1, 2, 6])
    G.set_init(m, "fc1.bias", np.where(np.isin(np.arange(8), [1, 2]), 0.0,
                                       np.where(np.arange(8) == 6, 0.5, G.init(m, "fc1.bias"))))
    b2 = G.init(m, "fc2.bias")
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal
    onnx.checker.check_model(out, full_check=True)
    assert shp["fc1.weight"] == (5, 10) and shp["fc2.weight"] == (3, 5)
    assert report.removed == 3 and report.folded == 3
    assert not np.allclose(G.init(out, "fc2.bias"), b2)  # 0.5 sigmoid(0.851) · fc2's column 6 went in


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_the_gelu_op_of_opset_20_folds_too(approximate):
    m = G.zero(G.mlp((10, 8, 3), act="Gelu", seed=5), "fc1.weight", 0, [0, 6])
    m.graph.node[1].attribute.append(onnx.helper.make_attribute("approximate", approximate))
    m.opset_import[0].version, m.ir_version = 20, 9
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (6, 10) and report.folded == 2


# -- CNNs -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flatten", ["Flatten", "Reshape"])
def test_lenet5_conv_channels_go_with_their_flattened_features(flatten):
    m = G.lenet5(flatten=flatten)
    G.zero(m, "c1.weight", 0, [2])  # (b): c2 has no padding, folds it
    G.zero(m, "c2.weight", 1, [4])  # (a)
    G.zero(m, "fc1.weight", 1, list(range(16 * 7, 16 * 8)))  # (a) c2 channel 7's 4×4 block
    G.zero(m, "c2.weight", 0, [11])  # (b) folded into fc1 through Flatten
    out, report, shp = prune(m)
    assert shp["c1.weight"] == (4, 1, 5, 5) and shp["bn1.var"] == (4,)
    assert shp["c2.weight"] == (14, 4, 5, 5) and shp["bn2.scale"] == (14,)
    assert shp["fc1.weight"] == (120, 14 * 16)
    assert report.folded == 2
    if flatten == "Reshape":
        shape = [t for t in out.graph.initializer if t.name.startswith("flat.shape")]
        assert [onnx.numpy_helper.to_array(t).tolist() for t in shape] == [[-1, 224]]


def test_padded_conv_consumer_cannot_fold_a_constant_channel():
    m = G.residual(branch_k=3)  # conv a (3×3, pad 1) reads the stem
    G.set_init(m, "stem.bias", np.where(np.arange(8) == 1, 0.2, G.init(m, "stem.bias")))  # Relu(0.2): not 0
    G.zero(m, "stem.weight", 0, [1])
    G.zero(m, "b.weight", 0, [1])  # stem 1 + b 1 is a constant … that a padded conv reads
    out, report, _ = prune(m)
    assert out is m and report.removed == 0
    # with its own bias (-0.056) stem 1 is Relu's 0, which the padded conv adds nothing for: it goes (sweep 22)
    m = G.zero(G.zero(G.residual(branch_k=3), "stem.weight", 0, [1]), "b.weight", 0, [1])
    out, report, shp = prune(m)
    assert shp["stem.weight"] == (7, 3, 3, 3) and shp["a.weight"] == (8, 7, 3, 3)


def test_residual_channel_goes_only_when_dead_across_the_add():
    m = G.zero(G.residual(), "a.weight", 1, [3])
    out, report, _ = prune(G.zero(m, "head.weight", 1, [3]))
    assert channels(report)["stem"] == (8, 7) and channels(report)["b"] == (8, 7)
    m = G.zero(G.residual(), "head.weight", 1, [3])  # conv a still reads stem channel 3
    out, report, _ = prune(m)
    assert report.removed == 0


def test_residual_constant_channel_is_folded_into_both_readers():
    m = G.zero(G.zero(G.residual(), "stem.weight", 0, [5]), "b.weight", 0, [5])
    out, report, shp = prune(m)
    assert shp["stem.weight"] == (7, 3, 3, 3) and shp["b.weight"] == (7, 8, 1, 1)
    assert shp["a.weight"] == (8, 7, 1, 1) and shp["head.weight"] == (5, 7)
    assert report.folded == 1


def test_concat_and_split_channels_are_removed_by_offset():
    m = G.concat_split()
    G.zero(m, "r.weight", 1, [2])  # (a) p channel 2 (concat offset 0)
    G.zero(m, "q.weight", 0, [3])  # (b) q channel 3 (concat offset 4), folded into r (1×1)
    G.zero(m, "v.weight", 1, [1])  # (a) r channel 5 = split part 2, index 1
    out, report, shp = prune(m)
    assert shp["p.weight"][0] == 3 and shp["q.weight"][0] == 5 and shp["r.weight"] == (9, 8, 1, 1)
    assert shp["u.weight"] == (5, 4, 1, 1) and shp["v.weight"] == (5, 5, 1, 1)
    sizes = [t for t in out.graph.initializer if t.name.startswith("split")]
    assert [onnx.numpy_helper.to_array(t).tolist() for t in sizes] == [[4, 5]]


def test_slices_along_the_channels_keep_their_range_as_channels_go():
    """Sweep 21: GhostNet's `cat([p, cheap])[:, :out]` and ReXNet's partial residual sliced the channel axis, and a
    Slice had no channel rule: every channel before one was kept (ghostnet_050, half its channels zeroed: 0 removed
    where the dynamo export, which has no Slice there, lost 1,756)."""
    m = G.ghost_slice()
    G.zero(m, "y.weight", 1, [1, 4])  # (a) p channel 1, read at cat 1 and through the depthwise cheap at cat 4
    G.zero(m, "head.weight", 1, [4])  # (a) y channel 4, the partial residual's tail
    out, report, shp = prune(m)
    assert shp["p.weight"] == (2, 3, 1, 1) and shp["dw.weight"] == (2, 1, 3, 3)
    assert shp["y.weight"] == (4, 3, 1, 1) and shp["head.weight"] == (3, 4)
    assert not [line for line in report.lines() if "Slice" in line]
    bounds = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in out.graph.initializer}
    slices = {n.name: [bounds.get(i) for i in n.input[1:3]] for n in out.graph.node if n.op_type == "Slice"}
    assert slices == {"ghost_slice": [[0], [3]], "head_slice": [[0], [3]], "tail_slice": [[0, 3], [10, 4]]}


def test_a_slice_with_a_step_on_the_channels_keeps_them_and_says_why():
    m = G.ghost_slice()
    steps = onnx.numpy_helper.from_array(np.array([2], dtype=np.int64), "gs.steps")
    m.graph.initializer.append(steps)
    node = next(n for n in m.graph.node if n.name == "ghost_slice")
    node.input.append("gs.steps")
    node.input[2] = "gs.ends_long"
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array([6], dtype=np.int64), "gs.ends_long"))
    yw = next(t for t in m.graph.initializer if t.name == "y.weight")
    yw.CopyFrom(onnx.numpy_helper.from_array(G.init(m, "y.weight")[:, :3].copy(), "y.weight"))
    G.zero(m, "p.weight", 0, [2])  # (b) p channel 2: a constant, which only the Slice's step could place
    out, report, shp = prune(m)
    assert shp["p.weight"] == (3, 3, 1, 1)
    assert any("slices the channel axis with step 2" in line for line in report.lines())


def test_a_grouped_conv_loses_a_local_channel_from_every_group_at_once():
    """Sweep 21's regnety_002 (group width 8): "a grouped Conv (group=46) has no channel rule" kept every channel
    around its 13 grouped Convs (a hand recipe with half the neurons masked removed 2,302 channels; with the rule,
    5,566). Local channel j of every group is one class, so the groups keep equal widths and `group` stays."""
    g = G.G(seed=4)
    p = g.op("Relu", "p_relu", [g.conv("x", "p", 3, 8, 3, pad=1)])
    q = g.op("Relu", "q_relu", [g.conv(p, "q", 8, 8, 1, group=2)])
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [q])]), "head", 8, 3)
    g.nodes[-1].output[0] = "y"
    m = g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]})
    G.zero(m, "q.weight", 1, [1])  # (a) local input 1 of both groups: p channels 1 and 5
    G.zero(m, "head.weight", 1, [2, 6, 3])  # (a) q's local output 2 of both groups; 3 of group 0 only: stays
    out, report, shp = prune(m)
    assert shp["p.weight"] == (6, 3, 3, 3) and shp["q.weight"] == (6, 3, 1, 1) and shp["head.weight"] == (3, 6)
    assert [a.i for n in out.graph.node if n.name == "q" for a in n.attribute if a.name == "group"] == [2]
    assert not [line for line in report.lines() if "has no channel rule" in line]
    # q's output 3 is read by no weight, but 7 (local 3 of group 1) is: the class stays, and the report says so
    partnered = [line for line in report.lines() if "each in a class with a channel that is read elsewhere" in line]
    assert len(partnered) == 1, report.lines()
    assert partnered[0].startswith("1 channel(s) no weight needs (unread, or a constant) are kept"), report.lines()
    assert partnered[0].endswith(": Conv 'q' 1"), report.lines()


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_filters_go_with_their_channel(multiplier):
    m = G.depthwise_separable(multiplier=multiplier)
    G.zero(m, "pw1.weight", 1, list(range(2 * multiplier, 3 * multiplier)))  # (a) channel 2's outputs are unread
    G.zero(m, "dw.weight", 0, list(range(5 * multiplier, 6 * multiplier)))  # (b): dw 5 is its bias, padding or not
    out, report, shp = prune(m)
    c = 6 * multiplier
    assert shp["pw0.weight"] == (6, 3, 1, 1) and shp["dw.weight"] == (c, 1, 3, 3) and shp["dw_bn.mean"] == (c,)
    assert shp["pw1.weight"] == (6, c, 1, 1)
    dw = [n for n in out.graph.node if n.name == "dw"][0]
    assert onnx.helper.get_node_attr_value(dw, "group") == 6


@pytest.mark.parametrize("pool, attrs, removable", [
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), True),
    ("AveragePool", dict(kernel_shape=[2, 2]), True),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0), True),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1), False),
    ("GlobalMaxPool", {}, True),
])
def test_pools_keep_a_constant_only_where_that_is_exact(pool, attrs, removable):
    m = G.zero(G.cnn_with_pool(pool, **attrs), "c1.weight", 0, [4])
    out, report, shp = prune(m)
    assert shp["c2.weight"][1] == (5 if removable else 6)


@pytest.mark.parametrize("op, keepdims, axes, removable", [
    ("ReduceMean", 0, (2, 3), True),   # torch's x.mean((2, 3))
    ("ReduceMean", 1, (-1, -2), True),
    ("ReduceMax", 0, (2, 3), True),
    ("ReduceSum", 0, (2, 3), True),    # axes as an input (opset 13+); the constant is scaled by 7 x 7
    ("ReduceMean", 1, (1,), False),    # over the channels: every channel reaches the same output
])
def test_reductions_over_other_axes_keep_channels_apart(op, keepdims, axes, removable):
    m = G.zero(G.cnn_with_reduce(op, keepdims, axes), "c1.weight", 0, [4])  # c1's channel 4: relu(bias), constant
    out, report = remove_dead_neurons(m)
    G.assert_same(m, out)
    shp = G.shapes(out)
    if removable:
        assert shp["c1.weight"][0] == 5 and shp["head.weight"] == (3, 5) and report.folded == 1
    else:
        assert out is m or shp["c1.weight"][0] == 6
        assert any("reduces over the channel axis" in why for why in report.blocked)


def test_a_layer_norm_over_the_channels_keeps_them_and_says_why():
    m = G.zero(G.channels_layer_norm(), "c1.weight", 0, [2])
    out, report = remove_dead_neurons(m)
    assert G.shapes(out)["c1.weight"][0] == 6
    assert any("normalizes across the channels" in why for why in report.blocked)


def test_conv_transpose_is_a_producer_and_a_consumer_that_cannot_fold():
    m = G.zero(G.conv_transpose(), "c1.weight", 0, [1])  # (b) read by ConvTranspose: kept
    G.set_init(m, "c1.bias", np.where(np.arange(6) == 1, 0.2, G.init(m, "c1.bias")))  # Relu(0.2), not 0
    G.zero(m, "t.weight", 0, [4])  # (a) c1 channel 4
    G.zero(m, "t.weight", 1, [2])  # (b) t channel 2, folded into c2 (1×1)
    out, report, shp = prune(m)
    assert shp["c1.weight"][0] == 5 and shp["t.weight"] == (5, 4, 3, 3) and shp["c2.weight"] == (4, 4, 1, 1)
    # its own bias (-0.024) makes c1 1 Relu's 0: a ConvTranspose adds nothing for it either, and it goes
    out, report, shp = prune(G.zero(G.conv_transpose(), "c1.weight", 0, [1]))
    assert shp["c1.weight"][0] == 5 and shp["t.weight"] == (5, 5, 3, 3)


def test_transpose_moves_the_channel_axis_to_a_channels_last_matmul():
    m = G.zero(G.zero(G.channels_last(), "c1.weight", 0, [2]), "fc.weight", 0, [4])
    out, report, shp = prune(m)
    assert shp["c1.weight"] == (4, 3, 1, 1) and shp["fc.weight"] == (4, 4) and report.folded == 1


def test_squeeze_and_unsqueeze_carry_channels():
    m = G.zero(G.zero(G.squeeze_unsqueeze(), "c1.weight", 0, [1]), "c2.weight", 1, [3])
    out, report, shp = prune(m)
    assert shp["c1.weight"][0] == 5 and shp["fc.weight"] == (4, 5) and shp["c2.weight"] == (4, 4, 1, 1)


def test_gating_mul_merges_the_gate_with_the_gated_channels():
    m = G.zero(G.squeeze_excite(), "c2.weight", 1, [4])  # c2 ignores channel 4, but fc1 still reads it
    out, report = remove_dead_neurons(m)
    assert out is m and report.removed == 0
    m = G.zero(m, "fc1.weight", 1, [4])  # now nobody reads channel 4: c1 and fc2 lose it together
    out, report, shp = prune(m)
    assert shp["c1.weight"][0] == 5 and shp["fc2.weight"] == (5, 3) and shp["fc2.bias"] == (5,)


def test_a_gated_product_is_dead_where_either_factor_is_zero():
    """Sweep 34's L1: in WaveNet's tanh(a) · sigmoid(b), a dead `a` row (weights and bias 0) makes tanh(a) 0 and the
    product 0 whatever b holds, yet the pair was kept (0 times a varying value was unknown). Now both rows of c1 go
    with c2's column. A dead `b` row leaves sigmoid(0) = 0.5 times tanh(a): alive, kept."""
    m = G.zero(G.zero(G.gated_conv(), "c1.weight", 0, [1]), "c1.bias", 0, [1])  # a's channel 1: tanh(0) = 0
    out, report, shp = prune(m)  # onnxruntime: the written model equals the zeroed one
    assert shp["c1.weight"] == (6, 3, 3, 3) and shp["c1.bias"] == (6,) and shp["c2.weight"] == (5, 3, 1, 1)
    assert report.removed == 2  # the pair's two rows of c1
    onnx.checker.check_model(out, full_check=True)
    split = next(n for n in out.graph.node if n.op_type == "Split")
    assert onnx.numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == split.input[1])).tolist() \
        == [3, 3]
    m = G.zero(G.zero(G.gated_conv(), "c1.weight", 0, [5]), "c1.bias", 0, [5])  # b's channel 1: sigmoid(0) = 0.5
    out, report = remove_dead_neurons(m)
    assert out is m and report.removed == 0


def test_prelu_slopes_per_channel_are_sliced_with_their_channels_and_a_shared_one_is_kept():
    """Sweep 3: an insightface-style net (Conv -> BN -> PRelu) kept every channel: PRelu had no channel rule."""
    from onnxprune.models.builders_sweep3 import prelu_net

    m = G.zero(G.zero(prelu_net(), "c2.weight", 1, [2]), "fc1.weight", 1, [1])  # c1 ch 2 and c2 ch 1 unread
    G.zero(m, "fc1.weight", 0, [3])  # fc1 unit 3 is constant: PRelu(bias) is folded into fc2's bias
    G.set_init(m, "fc1.bias", np.where(np.arange(8) == 3, -0.5, G.init(m, "fc1.bias")))
    out, report, shp = prune(m)
    assert shp["c1.weight"] == (5, 3, 3, 3) and shp["bn1.weight"] == (5,) and shp["act1.slope"] == (5, 1, 1)
    assert shp["c2.weight"] == (4, 5, 1, 1) and shp["act2.slope"] == (1,)
    assert shp["fc1.weight"] == (7, 4) and shp["act3.slope"] == (7,) and shp["fc2.weight"] == (4, 7)
    assert report.folded == 1 and G.op_counts(out)["PRelu"] == 3
    assert not any("PRelu" in n for n in report.blocked), report.blocked


@pytest.mark.parametrize("flag", ["crop_inputs", "gather_inputs"])
def test_an_input_nothing_reads_is_left_alone_and_not_reported_as_shrunk(flag):
    """Sweep 3: a model's unread input 'unused_mask' [N, 8] was reported as 'dead neurons removed: 7
    (unused_mask 8->1)' while its declaration, rightly, stayed [N, 8]."""
    from onnxprune.models import builders
    from onnxprune.models.builders_sweep3 import with_unread_input

    m = with_unread_input(G.zero(builders.mlp_gemm(), "fc2.weight", 1, [3]))  # fc1 unit 3 unread: one real removal
    out, report, shp = prune(m, **{flag: True})
    assert {l.node: (l.before, l.after) for l in report.layers if l.before != l.after} == {"/fc1/Gemm": (32, 31)}
    assert not any(l.node == "unused_mask" for l in report.layers) and report.removed == 1
    assert [i for i in out.graph.input if i.name == "unused_mask"][0] == m.graph.input[-1]
    assert G.op_counts(out) == G.op_counts(m)


def test_per_channel_sub_div_and_dropout_are_members():
    m = G.zero(G.zero(G.normalised_mlp(), "fc1.weight", 0, [1]), "fc2.weight", 1, [6])
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (6, 10) and shp["mean"] == (6,) and shp["std"] == (6,) and report.folded == 1


def test_concat_with_a_graph_input_and_an_equal_split():
    m = G.zero(G.concat_input_equal_split(), "c2.weight", 1, [1, 5])  # c1 channel 1 and input channel 2
    G.zero(m, "c3.weight", 1, [0])  # c2 channel 0
    out, report, shp = prune(m)
    assert shp["c1.weight"][0] == 3 and shp["c2.weight"] == (7, 6, 1, 1) and shp["c3.weight"] == (5, 3, 1, 1)
    assert any("input 'x'" in n for n in report.blocked)  # the input's feature stays: it is not ours to drop
    split = [n for n in out.graph.node if n.op_type == "Split"][0]
    sizes = [t for t in out.graph.initializer if t.name == split.input[1]][0]
    assert onnx.numpy_helper.to_array(sizes).tolist() == [3, 4]


# -- blocks ---------------------------------------------------------------------------------------------------------
def test_an_op_without_a_rule_blocks_removal_and_the_report_says_so():
    m = G.zero(G.with_op_between("LpNormalization", axis=1), "fc1.weight", 0, [2])
    out, report = remove_dead_neurons(m)
    assert out is m and report.removed == 0
    assert ("channels of Gemm 'fc1' kept: consumer LpNormalization 'mid' (op LpNormalization) has no channel rule "
            "(1 dead kept)" in report.blocked)


def test_a_mix_with_a_tensor_the_analysis_does_not_follow_says_so():
    """Sweep 46's L3: mLSTM's "combines the channels with '/Squeeze_2_output_0', which carries none" read as if the
    tensor held no channels, where it does (C @ q through a matrix memory) and the analysis lost them."""
    g = G.G(0)
    h = g.op("Relu", "act1", [g.gemm("x", "fc1", 10, 8)])
    g.gemm(g.op("Mul", "mix", [h, "z"]), "fc2", 8, 3)
    g.nodes[-1].output[0] = "y"
    m = G.zero(G.zero(g.model({"x": ["N", 10], "z": ["N", 8]}, {"y": ["N", 3]}), "fc1.weight", 0, [2]),
               "fc1.bias", 0, [2])
    out, report = remove_dead_neurons(m)
    assert report.removed == 0
    assert any("consumer Mul 'mix' combines the channels with 'z', which carries none the analysis follows" in line
               for line in report.blocked), report.blocked


def test_a_graph_output_in_the_middle_blocks_its_layer_only():
    m = G.zero(G.zero(G.middle_output(), "fc2.weight", 1, [1]), "fc3.weight", 1, [4])
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (8, 10) and shp["fc2.weight"] == (5, 8)
    assert any("tensor 'act1_out' is a graph output (1 dead kept)" in n for n in report.blocked)


def test_protected_names_block():
    m = G.zero(G.mlp((10, 8, 6, 3)), "fc1.weight", 0, [0])
    for name in ("fc1", "fc2.weight", "act1_out"):
        out, report = remove_dead_neurons(m, protected={name})
        assert out is m and report.removed == 0, name


def test_a_layer_is_never_emptied_and_keeps_its_strongest_channel():
    m = G.zero(G.mlp((6, 5, 3)), "fc2.weight", 1, [0, 1, 2, 3, 4])
    w1 = G.init(m, "fc1.weight")
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (1, 6)
    best = int(np.argmax(np.square(w1).sum(axis=1)))
    np.testing.assert_array_equal(G.init(out, "fc1.weight")[0], w1[best])


def test_model_metadata_ir_and_opsets_survive():
    m = G.zero(G.mlp((10, 8, 3)), "fc1.weight", 0, [0])
    m.doc_string, m.model_version = "doc", 7
    out, _, _ = prune(m)
    assert (out.ir_version, list(out.opset_import), out.doc_string, out.model_version) == (
        8, list(m.opset_import), "doc", 7)
    assert {p.key: p.value for p in out.metadata_props} == {"origin": "tests/passes/_graphs.py"}


def test_the_pass_slices_the_state_masks_with_their_weights():
    m = G.zero(G.zero(G.lenet5(), "c1.weight", 0, [2]), "fc1.weight", 1, list(range(16 * 7, 16 * 8)))
    masks = {t.name: G.init(m, t.name) != 0 for t in m.graph.initializer if t.name.endswith("weight")}
    state = PruneState(masks=dict(masks))
    remove = RemoveDeadNeurons()
    result = run_passes([remove, ApplyMasks()], m, state)
    G.assert_same(m, result.model)
    assert result.modified and any(line.startswith("Conv 'c1'") for line in remove.report.lines())
    for name, mask in state.masks.items():
        np.testing.assert_array_equal(mask, G.init(result.model, name) != 0, err_msg=name)
    assert state.masks["fc1.weight"].shape == (120, 240) and state.masks["c2.weight"].shape == (15, 5, 5, 5)
    unchanged = run_passes([RemoveDeadNeurons()], result.model, state)
    assert not unchanged.modified and unchanged.model is result.model


# -- gathered inputs ------------------------------------------------------------------------------------------------
def test_gather_inputs_drops_border_pixels_no_weight_reads():
    m = G.mlp((784, 30, 10), input_shape=["N", 1, 28, 28])
    border = [r * 28 + c for r in range(28) for c in range(28) if min(r, c, 27 - r, 27 - c) < 2]
    G.zero(m, "fc1.weight", 1, border)
    out, report, shp = prune(m, gather_inputs=True)
    assert shp["fc1.weight"] == (30, 784 - len(border)) and G.op_counts(out)["Gather"] == 1
    assert channels(report)["x"] == (784, 784 - len(border))
    out2, report2 = remove_dead_neurons(out, gather_inputs=True)
    assert out2 is out and report2.removed == 0
    untouched, report3 = remove_dead_neurons(m)
    assert untouched is m  # off by default


def test_gather_inputs_follows_later_rounds():
    m = G.mlp((12, 6, 3))
    G.zero(m, "fc1.weight", 1, [0, 1])
    w1 = G.init(m, "fc1.weight").copy()
    w1[:, 2] = 0
    w1[4, 2] = 1.0  # input 2 is read only by fc1 neuron 4 …
    G.set_init(m, "fc1.weight", w1)
    G.zero(m, "fc2.weight", 1, [4])  # … which nobody reads
    out, report, shp = prune(m, gather_inputs=True)
    assert shp["fc1.weight"] == (5, 9) and G.op_counts(out)["Gather"] == 1


# -- cropped inputs -------------------------------------------------------------------------------------------------
def _border(width: int, size: int = 28) -> list[int]:
    return [r * size + c for r in range(size) for c in range(size) if min(r, c, size - 1 - r, size - 1 - c) < width]


@pytest.mark.parametrize("flatten", ["Flatten", "Reshape"])
def test_crop_inputs_slices_the_image_to_the_box_of_read_pixels(flatten):
    m = G.mlp((784, 30, 10), input_shape=["N", 1, 28, 28])
    if flatten == "Reshape":  # an explicit feature count that must follow the crop
        m = G.reshape_instead_of_flatten(m, [-1, 784])
    inner = [r * 28 + c for r in range(28) for c in range(28) if 3 <= r < 25 and 2 <= c < 26]
    G.zero(m, "fc1.weight", 1, sorted(set(range(784)) - set(inner)))
    G.zero(m, "fc1.weight", 1, [5 * 28 + 5, 10 * 28 + 12])  # unread pixels inside the box stay (zero columns)
    out, report, shp = prune(m, crop_inputs=True)
    assert shp["fc1.weight"] == (30, 22 * 24) and channels(report)["x"] == (784, 22 * 24)
    assert G.op_counts(out).get("Gather", 0) == 0 and G.op_counts(out)["Slice"] == 1
    out2, report2 = remove_dead_neurons(out, crop_inputs=True)
    assert out2 is out and report2.removed == 0


def test_unread_pixels_inside_the_crop_box_are_said_to_stay_for_the_box():
    """Sweep 24 (an MLP on [N, 1, 28, 28] written with onnx.helper): 92 unread border pixels the crop's box keeps were
    said to be "kept, each in a class with a channel that is read elsewhere (a residual stream's channel ...)"."""
    m = G.mlp((784, 20, 10), input_shape=["N", 1, 28, 28])
    m = G.reshape_instead_of_flatten(m, [-1, 784])
    read = set(range(28 * 28)) - set(_border(2))
    G.zero(m, "fc1.weight", 1, sorted(set(range(784)) - read))
    w1 = G.init(m, "fc1.weight").copy()
    w1[:, 0], w1[:, 783] = 0.5, 0.5  # two corner pixels still read: the box is the whole image
    G.set_init(m, "fc1.weight", w1)
    out, report, shp = prune(m, crop_inputs=True)
    onnx.checker.check_model(out, full_check=True)
    assert shp["fc1.weight"] == (20, 784) and report.removed == 0
    lines = report.lines()
    assert not [line for line in lines if "each in a class with a channel that is read elsewhere" in line], lines
    boxed = [line for line in lines if "kept inside the box of the read ones" in line]
    assert len(boxed) == 1 and boxed[0].startswith(f"{len(_border(2)) - 2} input feature(s) no weight reads") and \
        boxed[0].endswith(": input 'x' " + str(len(_border(2)) - 2)), lines


def test_crop_inputs_on_a_flat_input_and_after_neurons_died():
    m = G.mlp((12, 6, 3))
    G.zero(m, "fc1.weight", 1, [0, 1, 11])
    w1 = G.init(m, "fc1.weight").copy()
    w1[:, 10] = 0
    w1[4, 10] = 1.0  # input 10 is read only by fc1 neuron 4 …
    G.set_init(m, "fc1.weight", w1)
    G.zero(m, "fc2.weight", 1, [4])  # … which nobody reads: the crop sees it unread
    out, report, shp = prune(m, crop_inputs=True)
    assert shp["fc1.weight"] == (5, 8) and G.op_counts(out)["Slice"] == 1


def test_crop_inputs_at_opset_9_uses_slice_attributes():
    m = G.mlp((784, 20, 10), input_shape=["N", 1, 28, 28])
    m.opset_import[0].version = 9
    G.zero(m, "fc1.weight", 1, _border(3))
    out, report, shp = prune(m, crop_inputs=True)
    (sl,) = [n for n in out.graph.node if n.op_type == "Slice"]
    assert {a.name for a in sl.attribute} == {"starts", "ends", "axes"} and shp["fc1.weight"] == (20, 22 * 22)


# -- properties -----------------------------------------------------------------------------------------------------
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _kill(draw, m, name: str, axis: int, n: int, most: int | None = None) -> None:
    idx = draw(st.lists(st.integers(0, n - 1), max_size=n if most is None else most, unique=True))
    G.zero(m, name, axis, idx)


@SETTINGS
@given(st.data())
def test_property_random_mlps_keep_outputs_and_lose_every_dead_neuron(data):
    draw = data.draw
    widths = [draw(st.integers(2, 9)) for _ in range(draw(st.integers(3, 5)))]
    trans_b = draw(st.sampled_from([0, 1]))
    act = draw(st.sampled_from(["Relu", "Tanh", "GeluErf", "Sigmoid"]))
    m = G.mlp(widths, trans_b=trans_b, act=act, seed=draw(st.integers(0, 9)))
    for i in range(1, len(widths) - 1):  # hidden layer i: (b) its rows, (a) the next layer's columns
        _kill(draw, m, f"fc{i}.weight", 0 if trans_b else 1, widths[i])
        _kill(draw, m, f"fc{i + 1}.weight", 1 if trans_b else 0, widths[i])
    dead0 = _mlp_dead(m, widths, trans_b)
    out, report, _ = prune(m)
    for i in range(1, len(widths) - 1):
        before, after = channels(report)[f"fc{i}"]
        assert after <= max(1, before - len(dead0[i])), (i, before, after, dead0[i])
        w_in, w_out = G.init(out, f"fc{i}.weight"), G.init(out, f"fc{i + 1}.weight")
        if not trans_b:
            w_in, w_out = w_in.T, w_out.T
        dead = (~w_in.any(axis=1)) | (~w_out.any(axis=0))  # every dead neuron left is a lone one
        assert after == 1 or not dead.any(), (i, after, np.flatnonzero(dead))


def _mlp_dead(m, widths, trans_b) -> dict[int, set[int]]:
    out = {}
    for i in range(1, len(widths) - 1):
        w_in, w_out = G.init(m, f"fc{i}.weight"), G.init(m, f"fc{i + 1}.weight")
        if not trans_b:
            w_in, w_out = w_in.T, w_out.T
        out[i] = set(np.flatnonzero(~w_in.any(axis=1) | ~w_out.any(axis=0)).tolist())
    return out


def _random_cnn(draw):
    """[conv (k 1|3, pad 0|1) ─ BN? ─ Relu ─ MaxPool?] × 1–3 ─ Flatten ─ Gemm fc ─ Relu ─ Gemm head, on 10×10."""
    g, x, c, hw = G.G(draw(st.integers(0, 9))), "x", 3, 10
    convs = []  # (name, channels, padded)
    for i in range(draw(st.integers(1, 3))):
        k, pad, n = draw(st.sampled_from([1, 3])), draw(st.integers(0, 1)), draw(st.integers(2, 6))
        pad = min(pad if hw >= k else 1, k // 2)
        x = g.conv(x, f"c{i}", c, n, k, pad=pad)
        x = g.op("Relu", f"r{i}", [g.bn(x, f"bn{i}", n) if draw(st.booleans()) else x])
        hw = hw - k + 1 + 2 * pad
        if draw(st.booleans()) and hw >= 4:
            x, hw = g.op("MaxPool", f"p{i}", [x], kernel_shape=[2, 2], strides=[2, 2]), hw // 2
        convs.append((f"c{i}", n, pad > 0))
        c = n
    hidden = draw(st.integers(2, 6))
    g.gemm(g.op("Relu", "rf", [g.gemm(g.op("Flatten", "flat", [x]), "fc", c * hw * hw, hidden)]), "head", hidden, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 10, 10]}, {"y": ["N", 3]}), convs, hw * hw


@SETTINGS
@given(st.data())
def test_property_random_cnns_keep_outputs_and_lose_every_removable_channel(data):
    m, convs, hw = _random_cnn(data.draw)
    for i, (name, n, _) in enumerate(convs):
        _kill(data.draw, m, f"{name}.weight", 0, n)  # (b)
        if i + 1 < len(convs):
            _kill(data.draw, m, f"{convs[i + 1][0]}.weight", 1, n)  # (a)
        else:
            for j in data.draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True)):
                G.zero(m, "fc.weight", 1, list(range(j * hw, (j + 1) * hw)))  # (a) through Flatten
    out, report, _ = prune(m)
    for i, (name, n, _) in enumerate(convs):
        w = G.init(out, f"{name}.weight")
        if i + 1 < len(convs):
            unread, foldable = ~G.init(out, f"{convs[i + 1][0]}.weight").any(axis=(0, 2, 3)), not convs[i + 1][2]
        else:
            fc = G.init(out, "fc.weight")
            unread, foldable = ~fc.reshape(len(fc), -1, hw).any(axis=(0, 2)), True
        removable = unread | (~w.reshape(len(w), -1).any(axis=1) & foldable)
        assert len(w) == 1 or not removable.any(), (name, len(w), np.flatnonzero(removable))
        assert len(w) <= n


GRAPHS = {
    "residual": G.residual, "residual 3x3": partial(G.residual, branch_k=3), "concat/split": G.concat_split,
    "depthwise": G.depthwise_separable, "depthwise x2 unpadded": partial(G.depthwise_separable, multiplier=2, pad=0),
    "lenet5 reshape": partial(G.lenet5, flatten="Reshape"), "squeeze-excite": G.squeeze_excite,
    "channels-last": G.channels_last, "squeeze/unsqueeze": G.squeeze_unsqueeze, "normalised": G.normalised_mlp,
    "conv-transpose": G.conv_transpose, "concat input + equal split": G.concat_input_equal_split,
    "matmul": G.matmul_mlp, "avgpool padded": partial(G.cnn_with_pool, "AveragePool", kernel_shape=[3, 3],
                                                       pads=[1, 1, 1, 1], count_include_pad=1),
    "prelu/resize": G.prelu_resize, "prelu/resize sizes": partial(G.prelu_resize, resize="sizes", mode="linear"),
    "per-position prelu/upsample": partial(G.prelu_resize, slope=(1, 6, 7, 7), resize="upsample"),
    "ghost/partial-residual slices": G.ghost_slice,
    "grouped conv": G.grouped_conv,
}


@SETTINGS
@given(st.data())
def test_property_random_dead_slices_in_every_test_graph_keep_outputs_and_reach_a_fixed_point(data):
    name = data.draw(st.sampled_from(sorted(GRAPHS)))
    assume(name != "group norm 21" or runtime_version() >= (1, 18))  # GroupNormalization-21: onnxruntime >= 1.18
    m = GRAPHS[name](seed=data.draw(st.integers(0, 9)))
    for t in list(m.graph.initializer):
        w = G.init(m, t.name)
        for axis in range(min(w.ndim, 2) if t.name.endswith("weight") else 0):
            _kill(data.draw, m, t.name, axis, w.shape[axis], most=max(1, w.shape[axis] // 2))
    out, report, _ = prune(m)
    again, report2 = remove_dead_neurons(out)
    assert again is out and report2.removed == 0, (name, report2.lines())


@SETTINGS
@given(st.data())
def test_property_crop_keeps_outputs_and_cuts_exactly_the_box_of_read_features(data):
    draw = data.draw
    c, h, w = draw(st.integers(1, 2)), draw(st.integers(2, 6)), draw(st.integers(2, 6))
    hidden = draw(st.integers(2, 5))
    m = G.mlp((c * h * w, hidden, 3), input_shape=["N", c, h, w], seed=draw(st.integers(0, 9)))
    _kill(draw, m, "fc1.weight", 1, c * h * w)  # unread input features
    _kill(draw, m, "fc1.weight", 0, hidden, most=hidden - 1)  # dead neurons: their inputs count as unread
    w1 = G.init(m, "fc1.weight")
    live_rows = w1.any(axis=1) & G.init(m, "fc2.weight").any(axis=0)
    read = (w1[live_rows] != 0).any(axis=0).reshape(c, h, w) if live_rows.any() else np.zeros((c, h, w), bool)
    out, report, shp = prune(m, crop_inputs=True)
    if read.any():
        box = [np.flatnonzero(read.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        want = int(np.prod([b[-1] - b[0] + 1 for b in box]))
        assert channels(report).get("x", (c * h * w, c * h * w))[1] == want
        assert shp["fc1.weight"][1] == want and ("Slice" in G.op_counts(out)) == (want < c * h * w)


@SETTINGS
@given(st.data())
def test_property_neuron_masks_then_removal_keep_outputs_and_shrink_each_layer(data):
    from onnxprune.passes.neuron_masks import neuron_map, neuron_masks
    from tests.oracle import zero_weights

    draw = data.draw
    widths = [draw(st.integers(2, 9)) for _ in range(draw(st.integers(3, 5)))]
    m = G.mlp(widths, trans_b=draw(st.sampled_from([0, 1])), seed=draw(st.integers(0, 9)))
    fraction = draw(st.floats(0.0, 0.95))
    names = {f"fc{i}.weight" for i in range(1, len(widths))}
    weights = {n: G.init(m, n) for n in names}
    masks, _ = neuron_masks(neuron_map(m, names), weights, {n: np.ones(a.shape, bool) for n, a in weights.items()},
                            fraction)
    masked = zero_weights(m, masks)
    out, report, _ = prune(masked)  # asserts onnxruntime(masked) == onnxruntime(out)
    for i in range(1, len(widths) - 1):
        before, after = channels(report)[f"fc{i}"]
        assert 1 <= after <= before - min(int(np.floor(fraction * before + 1e-9)), before - 1)


def test_a_non_tensor_graph_output_keeps_its_type_through_removal():
    """onnx-graphsurgeon exports ZipMap's sequence<map<int64, float>> as a sequence of untyped tensors."""
    from onnx import helper

    m = G.mlp((6, 5, 3))
    m.graph.node[-1].output[0] = "logits"
    m.graph.node.append(helper.make_node("ZipMap", ["logits"], ["probs"], domain="ai.onnx.ml",
                                         classlabels_int64s=[0, 1, 2], name="zipmap"))
    del m.graph.output[:]
    m.graph.output.append(helper.make_value_info("probs", helper.make_sequence_type_proto(
        helper.make_map_type_proto(onnx.TensorProto.INT64, helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [])))))
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    G.zero(m, "fc1.weight", 1, [])  # nothing in fc1's inputs …
    G.zero(m, "fc2.weight", 1, [2])  # … but neuron 2 of fc1 is unread
    out, report = remove_dead_neurons(m)
    assert channels(report)["fc1"] == (5, 4)
    assert out.graph.output[0] == m.graph.output[0]
    onnx.checker.check_model(out, full_check=True)
    from onnxprune.calibration.runtime import make_session

    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    got, want = (make_session(mm, optimize=False).run(None, {"x": x})[0] for mm in (out, m))
    assert [sorted(d) for d in got] == [sorted(d) for d in want]
    assert all(abs(g[k] - w[k]) <= 1e-5 * max(1.0, abs(w[k])) for g, w in zip(got, want) for k in w)


# -- PRelu and Resize (MTCNN, ArcFace, FPN necks) -------------------------------------------------------------------
@pytest.mark.parametrize("slope", [(1, 6, 1, 1), (6, 1, 1), (1,), (1, 6, 7, 7)])
def test_prelu_slope_entries_go_with_their_channels(slope):
    m = G.zero(G.prelu_resize(slope=slope), "c1.weight", 0, [1, 4])  # (b): constant channels, folded into c2
    G.zero(m, "c2.weight", 1, [2])  # (a): unread
    # a slope that varies per position keeps a constant channel constant only where it is >= 0
    folds = 2 if len(slope) < 4 else int((G.init(m, "c1.bias")[[1, 4]] >= 0).sum())
    out, report, shp = prune(m)
    kept = 5 - folds
    assert shp["c1.weight"][0] == kept and shp["c2.weight"] == (5, kept, 1, 1) and report.folded == folds
    sliced = [kept if d == 6 else d for d in slope]
    assert shp["slope"] == tuple(sliced)


def test_a_prelu_slope_shared_by_two_layers_ties_their_channels():
    """Two alike PRelus reading one slope: it is sliced once, so channel k of c1 and of c2 are one class (before
    branch chan, the shared slope blocked both). c1's channel 1 alone dead: c2's channel 1 lives, both stay."""
    from onnxprune.passes.dead_neurons import analyse
    m = G.zero(G.prelu_resize(shared_slope=True), "c1.weight", 0, [1])
    out, report = remove_dead_neurons(m)
    assert out is m and report.removed == 0
    cg = analyse(m)
    assert cg.roots("act1_out").tolist() == cg.roots("act2_out").tolist()


@pytest.mark.parametrize("resize, mode", [("scales", "nearest"), ("scales", "linear"), ("scales", "cubic"),
                                          ("sizes", "nearest"), ("axes", "linear"), ("upsample", "nearest")])
def test_an_upsampling_resize_carries_channels_and_their_constants(resize, mode):
    m = G.zero(G.prelu_resize(resize=resize, mode=mode), "c1.weight", 0, [0, 5])
    out, report, shp = prune(m)
    assert shp["c1.weight"][0] == 4 and shp["c2.weight"] == (5, 4, 1, 1) and report.folded == 2
    if resize == "sizes":
        assert G.init(out, "sizes").tolist() == [3, 4, 14, 14]


def test_a_resize_of_the_channel_axis_blocks():
    m = G.zero(G.prelu_resize(resize="channels"), "c1.weight", 0, [2])
    out, report = remove_dead_neurons(m)
    assert out is m and report.removed == 0
    assert "channels of Conv 'c1' kept: consumer Resize 'up' resizes the channel axis" in "\n".join(report.blocked)


def test_an_upsample_whose_scales_are_computed_blocks():
    m = G.zero(G.prelu_resize(resize="upsample"), "c1.weight", 0, [2])
    scales = next(t for t in m.graph.initializer if t.name == "scales")
    m.graph.initializer.remove(scales)  # the scales now come from a node: not a constant the rule can read
    m.graph.node.insert(0, onnx.helper.make_node("Identity", ["scales_in"], ["scales"], name="scales_id"))
    m.graph.input.append(onnx.helper.make_tensor_value_info("scales_in", onnx.TensorProto.FLOAT, [4]))
    out, report = remove_dead_neurons(m)
    assert out is m and report.removed == 0
    assert "consumer Upsample 'up' has scales or sizes that are not constants" in "\n".join(report.blocked)


def test_graphsurgeon_prints_nothing_on_a_zipmap_model(capfd):
    """skl2onnx's ZipMap output (a sequence of maps) made onnx-graphsurgeon print '[W] Could not convert:
    UNDEFINED ...' and '[W] colored module is not installed ...' on the user's terminal (sweep 4, a scaler + PCA +
    MLP pipeline), past -q; what it warns about is kept as it is."""
    import onnxruntime as ort

    from onnxprune.models.third_party_builders import sklearn_mlp

    m = G.zero(sklearn_mlp(), "fc1.weight", 1, [3])  # hidden neuron 3 has no input: folded, and the model exported
    out, report = remove_dead_neurons(m)
    assert report.removed == 1
    captured = capfd.readouterr()
    assert "[W]" not in captured.out + captured.err
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    before, after = (ort.InferenceSession(k.SerializeToString()).run(None, {"input": x}) for k in (m, out))
    assert before[0].tolist() == after[0].tolist()
    for a, b in zip(before[1], after[1]):
        assert a.keys() == b.keys() and np.allclose(list(a.values()), list(b.values()), atol=1e-6)


def test_a_block_that_kept_no_dead_channel_is_not_noted():
    """Notes explain dead channels that stayed: a block with nothing dead behind it changed nothing, and said so
    four times on the corpus encoder ("channels of input 'attention_mask' kept: consumer Shape …")."""
    from onnxprune.passes.dead_neurons import analyse

    model = G.with_op_between("Softmax", axis=1)  # nothing dead
    cg = analyse(model)
    assert cg.notes(set()) and cg.notes(set(), costly=True) == []
    _, report = remove_dead_neurons(model)
    assert report.blocked == []


# -- bodies -------------------------------------------------------------------------------------------------------
def test_an_outer_weight_only_bodies_read_stays_in_its_graph_once_after_a_shrink():
    """onnx-graphsurgeon exports an outer initializer read only inside an If's branches into each branch: after a
    shrink elsewhere in the model, silero_vad_op15's LSTM weights were written twice (0.77x 'fewer' weights)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = lambda *s: numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), "")  # noqa: E731
    inits = {"fc1.weight": w(6, 4), "fc1.bias": w(6), "fc2.weight": w(3, 6), "shared": w(4, 5), "zero": w()}
    inits["zero"] = numpy_helper.from_array(np.array(0.0, np.float32), "")
    fc1 = numpy_helper.to_array(inits["fc1.weight"]).copy()
    fc1[2] = 0  # hidden neuron 2 reads nothing and its bias goes negative: dead after the Relu
    inits["fc1.weight"] = numpy_helper.from_array(fc1, "")
    b = numpy_helper.to_array(inits["fc1.bias"]).copy()
    b[2] = -1.0
    inits["fc1.bias"] = numpy_helper.from_array(b, "")
    for name, t in inits.items():
        t.name = name
    vi = helper.make_tensor_value_info
    branch = lambda tag, act: helper.make_graph(  # noqa: E731
        [helper.make_node("MatMul", ["x", "shared"], [f"{tag}0"], name=f"/{tag}/mm"),
         helper.make_node(act, [f"{tag}0"], [f"{tag}_out"], name=f"/{tag}/act")],
        tag, [], [vi(f"{tag}_out", TensorProto.FLOAT, ["N", 5])])
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h0"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h0"], ["h"], name="relu"),
             helper.make_node("Gemm", ["h", "fc2.weight"], ["y"], transB=1, name="fc2"),
             helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0, name="mean"),
             helper.make_node("ReduceMean", ["m"], ["mm"], keepdims=0, name="mean2"),
             helper.make_node("Greater", ["mm", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["z"], then_branch=branch("then", "Relu"),
                              else_branch=branch("else", "Tanh"), name="select")]
    graph = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, ["N", 4])],
                              [vi("y", TensorProto.FLOAT, ["N", 3]), vi("z", TensorProto.FLOAT, ["N", 5])],
                              initializer=list(inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)], ir_version=8)
    out, report, shp = prune(model)
    assert report.removed == 1 and shp["fc1.weight"] == (5, 4)
    assert [t.name for t in out.graph.initializer].count("shared") == 1
    for node in out.graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                assert not attr.g.initializer, attr.g.name  # nothing copied into the branches
    onnx.checker.check_model(out, full_check=True)


# -- channel counts a Conv reads stay multiples of 4 ------------------------------------------------------------------
def _two_convs(c: int, depthwise: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x ─ a 1×1 (3→c) ─ Relu ─ [dw 3×3 (group c) ─ Relu] ─ b 3×3 (c→16, pad 1) ─ Relu ─ GAP ─ Gemm."""
    g = G.G(seed)
    x = g.op("Relu", "a_relu", [g.conv("x", "a", 3, c, 1)])
    if depthwise:
        x = g.op("Relu", "dw_relu", [g.conv(x, "dw", c, c, 3, pad=1, group=c)])
    x = g.op("Relu", "b_relu", [g.conv(x, "b", c, 16, 3, pad=1)])
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])]), "head", 16, 4)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 8, 8]}, {"y": ["N", 4]})


@pytest.mark.parametrize("c, dead, kept", [
    (32, 3, 32),  # 29 would leave the blocked kernel: all three stay
    (32, 5, 28),  # 27 -> 28: one stays
    (32, 8, 24),  # already a multiple of 4
    (12, 5, 7),   # 8 or fewer channels run below the kernel's block: no rule
    (30, 5, 25),  # the input model's count was no multiple of 4: nothing to keep
])
def test_channels_a_conv_reads_stay_a_multiple_of_4_where_they_were(c, dead, kept):
    m = G.zero(_two_convs(c), "b.weight", 1, list(range(1, 1 + dead)))  # (a): their outputs are unread
    out, report, shp = prune(m)
    assert shp["a.weight"][0] == kept and shp["b.weight"][1] == kept
    assert report.aligned == kept - (c - dead)
    assert (report.aligned_note() in report.lines()) == bool(report.aligned)
    # sweep 26 (YOLOv8n, hand recipe): the same channels were also said to be "kept, each in a class with a channel
    # that is read elsewhere": 210 channels in both notes, the second reason untrue
    assert not any("no weight needs" in line for line in report.lines()), report.lines()


def test_depthwise_channels_stay_a_multiple_of_4_and_the_strongest_dead_ones_stay():
    m = G.zero(_two_convs(32, depthwise=True), "b.weight", 1, [3, 4, 5, 6, 7, 8])  # (a): 26 would be left
    w = G.init(m, "a.weight").copy()
    w[[5, 8]] *= 10  # the two dead channels with the largest weights
    G.set_init(m, "a.weight", w)
    out, report, shp = prune(m)
    assert shp["dw.weight"] == (28, 1, 3, 3) and shp["b.weight"][1] == 28 and report.aligned == 2
    assert onnx.helper.get_node_attr_value([n for n in out.graph.node if n.name == "dw"][0], "group") == 28
    kept = G.init(out, "a.weight")
    assert all(any(np.array_equal(k, w[i]) for k in kept) for i in (5, 8))


def test_the_pass_notes_the_dead_channels_it_kept_for_alignment():
    m = G.zero(_two_convs(32), "b.weight", 1, [1, 2, 3])
    state = PruneState()
    run_passes([RemoveDeadNeurons()], m, state)
    assert any("3 dead channel(s) kept so that convolution inputs stay multiples of 4" in n for n in state.notes)


# -- sweep 22: an image-to-image net with InstanceNormalization; zero constants under padded Convs ----------------
def _two_padded_convs(bias_c1=None) -> onnx.ModelProto:
    """c1 3×3 pad 1 (3→8) ─ Relu ─ c2 3×3 pad 1 (8→6) ─ Relu ─ GAP ─ Flatten ─ Gemm (VGG's, a U-Net's blocks)."""
    g = G.G(0)
    x = g.op("Relu", "r1", [g.conv("x", "c1", 3, 8, 3, pad=1)])
    x = g.op("Relu", "r2", [g.conv(x, "c2", 8, 6, 3, pad=1)])
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])]), "head", 6, 3)
    g.nodes[-1].output[0] = "y"
    m = g.model({"x": ["N", 3, 8, 8]}, {"y": ["N", 3]})
    if bias_c1 is not None:
        G.set_init(m, "c1.bias", np.asarray(bias_c1, np.float32))
    return m


def test_a_zero_constant_channel_goes_under_a_padded_conv_and_a_nonzero_one_stays():
    # rows 1, 2 dead with a negative bias: Relu makes them 0 everywhere, which a padded 3×3 Conv adds nothing
    # for (before: kept, "neither unread nor a foldable constant"); row 3's Relu(0.3) is a constant the padded
    # border would see under part of the kernel only: it stays
    bias = [0.1, -0.5, -0.2, 0.3, 0.05, 0.1, -0.1, 0.2]
    m = G.zero(_two_padded_convs(bias), "c1.weight", 0, [1, 2, 3])
    out, report, shp = prune(m)
    assert shp["c1.weight"] == (6, 3, 3, 3) and shp["c2.weight"] == (6, 6, 3, 3)
    assert channels(report)["c1"] == (8, 6)
    kept_bias = G.init(out, "c1.bias").tolist()
    assert kept_bias == pytest.approx([0.1, 0.3, 0.05, 0.1, -0.1, 0.2])  # the positive constant stays


def test_roi_align_passes_channels_so_a_backbone_conv_before_it_shrinks():
    """c1 (3->8) - Relu - RoiAlign (3 rois, 2x2 bins) - Flatten - Gemm: a detector's box head after its backbone.
    Channels go through RoiAlign apart; dead rows of c1 go with the head's columns that read them."""
    g = G.G(0)
    x = g.op("Relu", "r1", [g.conv("x", "c1", 3, 8, 3, pad=1)])
    rois = g.init("rois", np.array([[0, 0, 5, 5], [1.5, 2, 7, 6.5], [-1, 3, 4, 9]], np.float32))
    batch = g.init("batch_idx", np.array([0, 1, 1], np.int64))
    x = g.op("RoiAlign", "roi", [x, rois, batch], output_height=2, output_width=2, sampling_ratio=2)
    g.gemm(g.op("Flatten", "flat", [x]), "head", 32, 4)
    g.nodes[-1].output[0] = "y"
    m = g.model({"x": [2, 3, 8, 8]}, {"y": [3, 4]})
    m.opset_import[0].version = max(m.opset_import[0].version, 16)
    G.zero(m, "c1.weight", 0, [1, 4, 6])
    G.set_init(m, "c1.bias", np.array([0.1, -0.3, 0.2, 0.1, -0.1, 0.3, -0.2, 0.1], np.float32))
    out, report, shp = prune(m)
    assert channels(report)["c1"] == (8, 5) and shp["head.weight"] == (4, 20)
    assert not any("RoiAlign" in why for why in report.blocked)


def test_instance_norm_passes_channels_and_their_scale_and_bias_go_with_them():
    from onnxprune.models import third_party_builders as tb
    m = tb.instance_norm_denoiser()  # n1.bias [-0.15, 0.34, -0.06, ...], n2.bias[1:3] < 0, n3.bias[1] = 0.34
    G.zero(m, "e1.weight", 0, [0, 2])  # constant -> IN -> B < 0 -> Relu 0: read by e2 and (Concat) d1, padded
    G.zero(m, "e1.weight", 0, [1])  # IN -> B = 0.34 > 0 under padded Convs: stays
    G.zero(m, "e2.weight", 0, [1, 2])  # through IN, Relu 0, Resize and Concat into d1 (padded): goes
    G.zero(m, "d1.weight", 0, [1])  # IN -> Relu(0.34) read by the 1×1 'out' Conv: folded into its bias
    out, report, shp = prune(m)
    assert channels(report) == {"/e1/Conv": (8, 6), "/e2/Conv": (16, 14), "/d1/Conv": (8, 7), "/out/Conv": (1, 1)}
    assert shp["n1.weight"] == shp["n1.bias"] == (6,) and shp["n2.bias"] == (14,) and shp["n3.weight"] == (7,)
    assert shp["d1.weight"] == (7, 20, 3, 3) and shp["out.weight"] == (1, 7, 1, 1)
    assert G.init(out, "out.bias") != pytest.approx(G.init(m, "out.bias"))  # Relu(0.34)·w went into it
    assert not any("InstanceNormalization" in why for why in report.blocked)


def test_instance_norm_with_a_computed_scale_blocks_and_says_why():
    from onnxprune.models import third_party_builders as tb
    m = tb.instance_norm_denoiser()
    sc = next(t for t in m.graph.initializer if t.name == "n3.weight")
    m.graph.initializer.remove(sc)
    m.graph.input.append(onnx.helper.make_tensor_value_info("n3.weight", onnx.TensorProto.FLOAT, [8]))
    G.zero(m, "d1.weight", 0, [1])
    out, report = remove_dead_neurons(m)
    assert channels(report)["/d1/Conv"] == (8, 8)
    assert any("consumer InstanceNormalization '/n3/InstanceNormalization' is not over axis 1 with a constant "
               "scale and bias per channel" in why for why in report.blocked)


def test_a_keras_flatten_to_a_computed_shape_shrinks_with_its_conv():
    # tf2onnx's Flatten reads the batch size from Shape and concatenates the feature count: before, the Shape
    # ("has no channel rule") and the Reshape ("not ... a constant shape") kept every Conv channel
    from onnxprune.models import third_party_builders as tb
    m = G.zero(tb.keras_flatten_cnn(), "conv.weight", 0, [1])  # Relu(bias) folded into the dense bias
    G.zero(m, "dense.weight", 0, [k * 4 + 3 for k in range(36)])  # channel 3 unread (NHWC: every 4th feature)
    out, report, shp = prune(m)
    assert shp["conv.weight"] == (2, 1, 3, 3) and shp["dense.weight"] == (72, 3) and report.folded == 1
    features = [t for t in out.graph.initializer if t.name.startswith("features")]
    assert [G.init(out, t.name).tolist() for t in features] == [[72]]
    assert not report.blocked


def test_a_keras3_flatten_behind_a_cast_shrinks_with_its_conv():
    # Keras 3's own ONNX export (torch backend) writes a Cast to FLOAT between the NHWC Transpose and the Flatten's
    # Reshape; the batch size read through it was not recognised ("consumer Reshape '/Reshape' is not a flattening
    # Reshape with a constant shape and static spatial sizes"), so the Conv before it kept every channel (sweep 26)
    from onnxprune.models import third_party_builders as tb
    m = G.zero(tb.keras3_flatten_cnn(), "conv.weight", 0, [1])  # Relu(bias) folded into the dense bias
    G.zero(m, "dense.weight", 0, [k * 4 + 3 for k in range(36)])  # channel 3 unread (NHWC: every 4th feature)
    out, report, shp = prune(m)
    assert shp["conv.weight"] == (2, 1, 3, 3) and shp["dense.weight"] == (72, 3) and report.folded == 1
    assert not report.blocked


def _shape_read(index: int) -> onnx.ModelProto:
    """c1 1×1 (3→6) ─ Relu ─ 'y'... with Shape(relu)[index] as a second output 'dim' (int64 [1])."""
    g = G.G(0)
    x = g.op("Relu", "r1", [g.conv("x", "c1", 3, 6, 1)])
    d = g.op("Gather", "dim", [g.op("Shape", "shape", [x]), g.init("index", np.array([index], np.int64))], axis=0)
    g.nodes[-1].output[0] = "dim"
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])]), "head", 6, 3)
    g.nodes[-1].output[0] = "y"
    m = g.model({"x": ["N", 3, 5, 5]}, {"y": ["N", 3]})
    m.graph.output.append(onnx.helper.make_tensor_value_info("dim", onnx.TensorProto.INT64, [1]))
    del d
    return m


@pytest.mark.parametrize("index, removed", [(0, 2), (2, 2), (1, 0), (-3, 0)])
def test_a_shape_read_for_other_dims_than_the_channels_lets_them_go(index, removed):
    m = G.zero(_shape_read(index), "head.weight", 1, [1, 4])
    out, report = remove_dead_neurons(m)
    assert report.removed == removed
    if removed:
        G.assert_same(m, out)
    else:
        assert "consumer Shape 'shape' gives the channel count to an op that reads it" in "\n".join(report.blocked)


def test_a_keras_flatten_to_minus_one_features_shrinks_without_an_edit():
    from onnxprune.models import third_party_builders as tb
    m = G.set_init(tb.keras_flatten_cnn(), "features", np.array([-1], np.int32))
    out, report, shp = prune(G.zero(m, "conv.weight", 0, [1, 2]))
    assert shp["conv.weight"] == (2, 1, 3, 3) and shp["dense.weight"] == (72, 3) and G.init(out, "features") == [-1]


def test_a_keras_mobile_block_shrinks_through_its_pad_and_its_channel_keeping_reshape():
    # tf2onnx's MobileNetV2 (alpha 0.35, 32x32): before, 16 of 53 layers kept every channel ("consumer Pad ... has no
    # channel rule"; "consumer Reshape ...mul_1__272 is not a flattening Reshape": [-1, 192, 1, 1] of a 1x1 map)
    from onnxprune.models import third_party_builders as tb
    m = G.zero(tb.keras_mobile_block(), "project.weight", 1, [1, 6])  # (a): the project conv reads none of them
    G.zero(m, "expand.weight", 0, [3])  # expand.bias[3] < 0: Clip gives 0, the Pad's zeros keep it 0 ...
    G.zero(m, "depthwise.weight", 0, [3])  # ... and the depthwise row reads nothing: Clip(bias) folded into project
    out, report, shp = prune(m)
    assert channels(report)["/expand/Conv"] == (8, 5) and channels(report)["/depthwise/Conv"] == (8, 5)
    assert shp["depthwise.weight"] == (5, 1, 3, 3) and shp["project.weight"] == (4, 5, 1, 1) and report.folded == 1
    reshape = next(n for n in out.graph.node if n.name == "/to_nchw/Reshape")
    assert G.init(out, reshape.input[1]).tolist() == [-1, 5, 1, 1]
    dw = next(n for n in out.graph.node if n.name == "/depthwise/Conv")
    assert onnx.helper.get_node_attr_value(dw, "group") == 5
    assert not report.blocked


def test_a_pad_with_computed_pads_blocks_and_says_why():
    from onnxprune.models import third_party_builders as tb
    m = G.zero(tb.keras_mobile_block(), "project.weight", 1, [1])
    pads = next(t for t in m.graph.initializer if t.name == "pads")
    m.graph.initializer.remove(pads)
    m.graph.input.append(onnx.helper.make_tensor_value_info("pads", onnx.TensorProto.INT64, [8]))
    out, report = remove_dead_neurons(m)
    assert report.removed == 0
    from onnxprune.passes.dead_neurons import analyse
    assert ("channels of Conv '/expand/Conv' kept: consumer Pad '/pad/Pad' has pads, axes or a value that are not "
            "constants") in analyse(m).notes(set())


@pytest.mark.parametrize("shape, ok", [([-1, 8, 1, 1], True), ([0, 8, 1, 1], True), ([-1, 8], True),
                                       ([-1, 1, 8, 1], True), ([-1, 2, 4, 1], False)])
def test_a_reshape_keeps_channels_only_where_they_stay_whole_on_an_axis(shape, ok):
    from onnxprune.models import third_party_builders as tb
    m = G.set_init(G.zero(tb.keras_mobile_block(), "project.weight", 1, [1]), "new_shape", np.array(shape, np.int64))
    if len(shape) == 2 or shape[1] != 8:  # the project conv needs [N, 8, 1, 1]: put a Reshape back before it
        back = onnx.helper.make_node("Reshape", ["/to_nchw/Reshape_output_0", "back_shape"], ["back"], name="back")
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1, 8, 1, 1], np.int64), "back_shape"))
        proj = next(n for n in m.graph.node if n.name == "/project/Conv")
        proj.input[0] = "back"
        m.graph.node.insert(list(m.graph.node).index(proj), back)
    out, report = remove_dead_neurons(m)
    assert (report.removed == 2) == ok  # the expand channel and its depthwise filter
    if ok:
        G.assert_same(m, out)


def _cascade() -> onnx.ModelProto:
    """openWakeWord's hey_jarvis as tf2onnx writes it: a first scorer's sigmoid, compared to 0.5 and reshaped to a
    scalar, is an If's condition; the then branch runs a second scorer on the same input, the else branch passes the
    first score on. Batch fixed at 1."""
    g = G.G(0)
    h = g.op("Relu", "act1", [g.gemm("x", "fc1", 12, 8)])
    score = g.op("Sigmoid", "sig", [g.gemm(h, "fc2", 8, 1)])
    cond = g.op("Reshape", "cond", [g.op("GreaterOrEqual", "ge", [score, g.init("half", np.float32(0.5))]),
                                    g.init("scalar", np.zeros(0, np.int64))])
    then = G.G(1)
    then.op("Sigmoid", "then_sig", [then.gemm("x", "then_fc", 12, 1)])
    then.nodes[-1].output[0] = "then_y"
    vi = lambda n: onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 1])  # noqa: E731
    branch = lambda nodes, out, inits: onnx.helper.make_graph(nodes, out, [], [vi(out)], inits)  # noqa: E731
    g.nodes.append(onnx.helper.make_node(
        "If", [cond], ["y"], name="verify", then_branch=branch(then.nodes, "then_y", then.inits),
        else_branch=branch([onnx.helper.make_node("Identity", [score], ["else_y"])], "else_y", [])))
    return g.model({"x": [1, 12]}, {"y": [1, 1]})


def test_a_reshape_to_a_scalar_condition_is_no_channel_reshape_and_the_layers_before_it_still_shrink():
    """Real models 45: openWakeWord's hey_jarvis reshapes its first scorer's `score >= 0.5` [1, 1] to [] as an If's
    condition; the Reshape rule read the empty target's first entry and the shrink failed with "pass 'dead-neurons'
    failed after [none]: IndexError: list index out of range" (and the search's dead-neuron estimate said nothing)."""
    m = G.zero(_cascade(), "fc1.weight", 0, [2, 5])
    m = G.set_init(m, "fc1.bias", np.where(np.isin(np.arange(8), [2, 5]), -1.0, G.init(m, "fc1.bias")))
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (6, 12) and shp["fc2.weight"] == (1, 6)
    assert channels(report)["fc1"] == (8, 6)
    rng = np.random.default_rng(0)
    feeds = [{"x": (3 * rng.standard_normal((1, 12))).astype(np.float32)} for _ in range(40)]
    first = onnx.helper.make_model(onnx.helper.make_graph(
        m.graph.node[:-1], "first", m.graph.input, [onnx.helper.make_tensor_value_info("sig_out", 1, [1, 1])],
        m.graph.initializer), opset_imports=m.opset_import, ir_version=m.ir_version)
    taken = {bool(run(first, f)["sig_out"].ravel()[0] >= 0.5) for f in feeds}
    assert taken == {True, False}  # both branches run, and give the same outputs after the shrink
    assert_same_outputs(out, m, feeds=feeds)


@pytest.mark.parametrize("to", [onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE])
def test_channels_pass_a_cast_chain_and_a_constant_keeps_its_cast_value(to):
    """Sweep 23: a float16 model written by onnxconverter-common (keep_io_types, op_block_list) has Casts between its
    layers, and each blocked the channels before it ("consumer Cast ... (op Cast) has no channel rule")."""
    m = G.mlp((20, 12, 10, 4))
    act = next(n for n in m.graph.node if n.name == "act1")
    fc2 = next(n for n in m.graph.node if "fc2.weight" in n.input)
    there = onnx.helper.make_node("Cast", [act.output[0]], ["low"], name="to_low", to=to)
    back = onnx.helper.make_node("Cast", ["low"], ["back"], name="to_float", to=onnx.TensorProto.FLOAT)
    fc2.input[0] = "back"
    m.graph.node.insert(list(m.graph.node).index(fc2), back)
    m.graph.node.insert(list(m.graph.node).index(back), there)
    G.zero(m, "fc1.weight", 0, [1, 3])  # relu(0.5) = 0.5, exact in float16: folded into fc2's bias
    G.set_init(m, "fc1.bias", np.where(np.isin(np.arange(12), [1, 3]), 0.5, G.init(m, "fc1.bias")))
    G.zero(m, "fc2.weight", 1, [5])  # nobody reads fc1 neuron 5
    out, report, shp = prune(m)
    assert channels(report)["fc1"] == (12, 9)
    assert shp["fc1.weight"] == (9, 20) and shp["fc2.weight"] == (10, 9)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_removes_a_dead_block_of_channels_and_space_to_depth_its_copies(mode):
    """Sweep 23: a pixel-shuffle inside a CNN kept every channel before it ("consumer DepthToSpace ... has no channel
    rule"). A DepthToSpace output channel is b*b input channels: they go together, and only when all are dead; a
    SpaceToDepth repeats each channel b*b times, and a dead one goes from every copy."""
    from onnxprune.models import third_party_builders as tb
    m = tb.pixel_shuffle_net(mode=mode)
    group = [1 * 4 + k for k in range(4)] if mode == "CRD" else [k * 4 + 1 for k in range(4)]  # output channel 1
    G.zero(m, "c1.weight", 0, group)
    G.set_init(m, "c1.bias", np.where(np.isin(np.arange(16), group), -0.5, G.init(m, "c1.bias")))  # relu -> 0
    G.zero(m, "c1.weight", 0, [0 if mode == "DCR" else 2])  # one of another block: not the whole block, stays
    G.zero(m, "c2.weight", 0, [2])
    G.set_init(m, "c2.bias", np.where(np.arange(4) == 2, -0.5, G.init(m, "c2.bias")))  # c2 channel 2 is 0
    out, report, shp = prune(m)
    assert channels(report)["/c1/Conv"] == (16, 12) and channels(report)["/c2/Conv"] == (4, 3)
    assert shp["c1.weight"] == (12, 2, 3, 3) and shp["c2.weight"] == (3, 3, 3, 3) and shp["c3.weight"] == (2, 12, 1, 1)


def test_flattened_positions_a_gemm_ignores_are_not_reported_as_kept_channels():
    """README audit: a newcomer's Conv -> Flatten -> Gemm at --sparsity 0.9 was told "3 channel(s) no weight reads
    are kept, each in a class with a channel that is read elsewhere (a residual stream's channel ...; a grouped
    Conv's local channel ...; a split's partner): Conv '/0/Conv' 3", where every kept channel was read: only some of
    its flattened positions had zero columns in the Gemm, as any sparse Gemm after a Flatten has. A channel counts
    only when none of its positions is read."""
    g = G.G(seed=5)
    p = g.op("Relu", "p_relu", [g.conv("x", "p", 2, 4, 3, pad=1)])
    g.gemm(g.op("Flatten", "flat", [p]), "head", 4 * 4 * 4, 3)
    g.nodes[-1].output[0] = "y"
    m = g.model({"x": ["N", 2, 4, 4]}, {"y": ["N", 3]})
    G.zero(m, "head.weight", 1, [0, 1, 17, 35, 63])  # a few positions of channels 0, 1, 2 and 3; each still read
    out, report, shp = prune(m)
    assert shp["p.weight"] == (4, 2, 3, 3)
    assert not [line for line in report.lines() if "no weight needs" in line], report.lines()
    G.zero(m, "head.weight", 1, list(range(16, 32)))  # every position of channel 1: removed, not kept
    out, report, shp = prune(m)
    assert shp["p.weight"] == (3, 2, 3, 3) and shp["head.weight"] == (3, 48)
    assert not [line for line in report.lines() if "no weight needs" in line], report.lines()


# -- a weight read by two towers (Siamese nets, shared encoders) ----------------------------------------------------
def _einsum_siamese():
    from onnxprune.models import third_party_builders as tb
    from onnxprune.passes.einsum_linear import EinsumLinear
    return EinsumLinear().run(tb.einsum_siamese(), PruneState()).model  # t.w1 [8, 16], t.w2 [16, 6]: [in, out]


def test_a_weight_both_towers_read_loses_a_channel_dead_in_both_and_is_sliced_once():
    """Sweep 23's siamese_einsum: "initializer 't.w1' is shared with '/t_1/Einsum'" kept every channel of both
    towers. Both readers' output channels are one class: a channel dead for both goes, from the one weight (and its
    shared bias), which both keep reading."""
    m = _einsum_siamese()
    G.zero(m, "t.w1", 1, [2, 5])  # hidden 2, 5: relu(b1) in both towers ...
    G.set_init(m, "t.b1", np.where(np.isin(np.arange(16), [2]), -0.3, np.where(np.arange(16) == 5, 0.4,
                                                                                     G.init(m, "t.b1"))))
    G.zero(m, "t.w2", 0, [9])  # ... hidden 9 read by no one in either tower
    out, report, shp = prune(m)
    assert shp["t.w1"] == (8, 13) and shp["t.b1"] == (13,) and shp["t.w2"] == (13, 6)
    assert channels(report)["/t/Einsum"] == channels(report)["/t_1/Einsum"] == (16, 13)
    assert sorted(n.input[1] for n in out.graph.node if n.op_type == "MatMul") == ["t.w1", "t.w1", "t.w2", "t.w2"]
    assert sum(t.name.startswith("t.w") for t in out.graph.initializer) == 2  # one copy each
    assert report.removed == 3  # the weight's channels, not counted once per tower
    assert not any("shared" in why for why in report.blocked)


def test_a_weight_read_alike_by_two_towers_keeps_a_channel_dead_in_one_tower_only():
    m = _einsum_siamese()
    m.graph.node[0].input[0], m.graph.node[5].input[0] = "left", "right"
    # a channel dead in the left tower only: give the right tower its own first layer, whose channel 4 lives
    g = G.G(1)
    right_w = g.weight("r.w1", (8, 16), 8)
    m.graph.initializer.extend(g.inits)
    m.graph.node[5].input[1] = right_w
    G.zero(m, "t.w1", 1, [4])
    G.set_init(m, "t.b1", np.where(np.arange(16) == 4, -0.3, G.init(m, "t.b1")))  # relu 0 on the left only
    out, report = remove_dead_neurons(m)
    assert report.removed == 0 and out is m  # t.w2 reads channel 4 of both towers: the right one lives


def _shared_reader(alike: bool = True, seed: int = 0):
    """left, right [N, 8] -> own Gemm each (a, b: 8 -> 6) -> Relu -> the same Gemm 'w' (6 -> 4) read by both (or by
    a Gemm and a MatMul, `alike=False`) -> Sub -> Gemm head -> 'y' [N, 2]."""
    g = G.G(seed)
    la = g.op("Relu", "ra", [g.gemm("left", "a", 8, 6)])
    rb = g.op("Relu", "rb", [g.gemm("right", "b", 8, 6)])
    w, bias = g.weight("shared.weight", (4, 6), 6), g.bias("wb", 4)
    lo = g.op("Gemm", "wl", [la, w, bias], transB=1)
    if alike:
        ro = g.op("Gemm", "wr", [rb, w, bias], transB=1)
    else:
        ro = g.op("Add", "wr_add", [g.op("MatMul", "wr", [rb, g.op("Transpose", "wt", [w], perm=[1, 0])]), bias])
    g.gemm(g.op("Sub", "d", [lo, ro]), "head", 4, 2)
    g.nodes[-1].output[0] = "y"
    return g.model({"left": ["N", 8], "right": ["N", 8]}, {"y": ["N", 2]})


def test_a_shared_weight_loses_an_input_channel_when_both_producers_lose_it():
    """The input side of a weight two towers read: producer a's channel k and producer b's channel k are one class
    (one column of w goes); dead in both, it goes from a, b and w; dead in a only, it stays."""
    m = G.zero(_shared_reader(), "a.weight", 0, [1, 3])
    G.set_init(m, "a.bias", np.where(np.isin(np.arange(6), [1, 3]), -0.2, G.init(m, "a.bias")))
    G.zero(m, "b.weight", 0, [1, 3, 4])
    G.set_init(m, "b.bias", np.where(np.isin(np.arange(6), [1, 3, 4]), -0.2, G.init(m, "b.bias")))
    G.zero(m, "shared.weight", 0, [2])  # its output 2: read by neither tower's Sub (wl and wr are one class), goes
    G.zero(m, "head.weight", 1, [2])
    out, report, shp = prune(m)
    assert shp["a.weight"] == shp["b.weight"] == (4, 8) and shp["shared.weight"] == (3, 4) and shp["wb"] == (3,)
    assert channels(report)["a"] == channels(report)["b"] == (6, 4)
    assert channels(report)["wl"] == channels(report)["wr"] == (4, 3)


def test_a_weight_shared_by_unlike_readers_still_blocks_and_says_why():
    m = G.zero(_shared_reader(alike=False), "a.weight", 0, [1])
    G.zero(m, "b.weight", 0, [1])
    out, report = remove_dead_neurons(m)
    assert channels(report)["a"] == channels(report)["b"] == (6, 6)
    assert any("initializer 'shared.weight' is shared with" in why for why in report.blocked)


# -- pixel_unshuffle written as Reshape -> Transpose -> Reshape ------------------------------------------------------
def test_pixel_unshuffle_as_reshapes_removes_a_dead_channel_and_its_four_copies():
    """Sweep 23: torch's pixel_unshuffle, exported as Reshape [N, C, H/2, 2, W/2, 2] -> Transpose -> Reshape
    [N, 4C, H/2, W/2], kept every channel before it ("not a flattening Reshape"). Input channel c is output channels
    4c ... 4c+3: it goes when all four are unread (or constants c2 folds), and both shapes follow."""
    from onnxprune.models import third_party_builders as tb
    m = tb.pixel_unshuffle_net()  # c1: 2 -> 4, c2 reads 16
    G.zero(m, "c2.weight", 1, [4 * 1 + k for k in range(4)])  # (a): channel 1's four copies unread
    G.zero(m, "c2.weight", 1, [4 * 2 + 1])  # one copy of channel 2 unread: stays
    G.zero(m, "c1.weight", 0, [3])  # (b): relu(bias) everywhere: constant, folded into the unpadded 1x1 c2
    out, report, shp = prune(m)
    assert channels(report)["/c1/Conv"] == (4, 2) and report.folded == 1
    assert shp["c1.weight"] == (2, 2, 3, 3) and shp["c2.weight"] == (3, 8, 1, 1)
    assert G.init(out, next(n.input[1] for n in out.graph.node if n.name == "/unshuffle/Reshape")).tolist() == \
        [-1, 2, 4, 2, 4, 2]
    assert G.init(out, next(n.input[1] for n in out.graph.node if n.name == "/unshuffle/merge/Reshape")).tolist() == \
        [-1, 8, 4, 4]
    assert not any("Reshape" in why for why in report.blocked)


def test_pixel_unshuffle_order_matches_torch():
    """The rule maps input channel c to outputs 4c ... 4c+3, as torch's pixel_unshuffle orders them."""
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from onnxprune.models import third_party_builders as tb
    m = tb.pixel_unshuffle_net()
    cut = onnx.helper.make_tensor_value_info("/unshuffle/merge/Reshape_output_0", onnx.TensorProto.FLOAT, None)
    pre = onnx.helper.make_tensor_value_info("/c1/Relu_output_0", onnx.TensorProto.FLOAT, None)
    m.graph.output.extend([cut, pre])
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    got, before = ort.InferenceSession(m.SerializeToString()).run([cut.name, pre.name], {"input": x})
    np.testing.assert_array_equal(got, torch.nn.functional.pixel_unshuffle(torch.from_numpy(before), 2).numpy())


# -- GroupNorm: a whole group goes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["op21", "op18", "legacy"])
def test_group_norm_loses_a_whole_dead_group_and_keeps_a_group_with_one_dead_channel(form):
    """Sweep 23: GroupNormalization (opset 18, 21) and torch's legacy export of nn.GroupNorm (Reshape [0, G, -1] -
    InstanceNormalization - Reshape - Mul - Add) kept every channel before them. A group's statistics are its own, so
    a whole group can go: one of constants comes out as constants (scale·(v - mean)/sqrt(var + eps) + bias, folded by
    the 1x1 Conv after it), one nobody reads goes as it is; num_groups (or the Reshape's G) follows. A group with one
    dead channel stays (removing it would change the group's mean and variance)."""
    needs_onnxruntime("1.18.1" if form == "op21" else None, "GroupNormalization of opset 21")
    from onnxprune.models import third_party_builders as tb
    m = tb.group_norm_net(form=form)  # 8 channels, 4 groups of 2
    G.zero(m, "c1.weight", 0, [2, 3])  # group 1: two different constants (c1's biases) in every position
    G.zero(m, "c2.weight", 1, [6, 7])  # group 3: read by nobody
    G.zero(m, "c1.weight", 0, [0])  # group 0: one constant channel beside a live one: stays
    if form == "op18":  # onnx's checker refuses GroupNormalization-18 itself ("deprecated"); onnxruntime runs it
        out, report = remove_dead_neurons(m)
        G.assert_same_outputs(out, m)
        shp = G.shapes(out)
    else:
        out, report, shp = prune(m)
    assert channels(report)["/c1/Conv"] == (8, 4) and report.folded == 1
    assert shp["c1.weight"] == (4, 2, 3, 3) and shp["c2.weight"] == (3, 4, 1, 1)
    if form == "legacy":
        groups = next(n for n in out.graph.node if n.name == "/gn/Reshape")
        assert G.init(out, groups.input[1]).tolist() == [0, 2, -1]
        norm = next(n for n in out.graph.node if n.op_type == "InstanceNormalization")
        assert G.init(out, norm.input[1]).shape == (2,) and shp["gn.weight"] == shp["gn.bias"] == (4, 1, 1)
    else:
        gn = next(n for n in out.graph.node if n.op_type == "GroupNormalization")
        assert onnx.helper.get_node_attr_value(gn, "num_groups") == 2
        assert shp["gn.weight"] == shp["gn.bias"] == ((2,) if form == "op18" else (4,))
    # group 0's dead channel is kept, said as a unit in a class alive through its group's live channel (sweep 47)
    said = [why for why in report.blocked if "whose weights are all zero are kept" in why]
    assert len(said) == 1 and said[0].startswith("1 unit(s) ") and "/c1/Conv" in said[0], report.blocked
    assert not any("normaliz" in why or "Reshape" in why for why in report.blocked if why not in said)


@pytest.mark.parametrize("form", ["op21", "legacy"])
def test_a_group_norm_group_of_zeros_comes_out_as_its_bias(form):
    """A dead group of zeros normalizes to 0/sqrt(eps) = 0: its outputs are the bias, folded into the reader."""
    needs_onnxruntime("1.18.1" if form == "op21" else None, "GroupNormalization of opset 21")
    from onnxprune.models import third_party_builders as tb
    m = G.zero(tb.group_norm_net(form=form), "c1.weight", 0, [4, 5])
    G.set_init(m, "c1.bias", np.where(np.isin(np.arange(8), [4, 5]), 0.0, G.init(m, "c1.bias")))
    out, report, shp = prune(m)
    assert channels(report)["/c1/Conv"] == (8, 6) and report.folded == 1


def test_a_legacy_group_norm_with_casts_around_its_instance_norm_loses_a_group():
    """onnxconverter-common's mixed float16 keeps InstanceNormalization in float32 between Casts, its scale and bias
    float16 constants through a Cast each (sweep 23's s2d_mixed16): the pattern reads through them."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.models import third_party_builders as tb
    m = tb.group_norm_net(form="legacy")
    norm = next(n for n in m.graph.node if n.op_type == "InstanceNormalization")
    at = list(m.graph.node).index(norm)
    casts = [helper.make_node("Cast", [norm.input[0]], ["in_cast"], name="in_cast", to=TensorProto.FLOAT)]
    for i, name in ((1, "gn.ones"), (2, "gn.zeros")):
        half = next(t for t in m.graph.initializer if t.name == name)
        half.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(half).astype(np.float16), name))
        casts.append(helper.make_node("Cast", [name], [f"{name}_cast"], name=f"{name}_cast", to=TensorProto.FLOAT))
        norm.input[i] = f"{name}_cast"
    norm.input[0] = "in_cast"
    back = next(n for n in m.graph.node if n.name == "/gn/back/Reshape")
    back.input[0] = "out_cast"
    casts.append(helper.make_node("Cast", [norm.output[0]], ["out_cast"], name="out_cast", to=TensorProto.FLOAT))
    for k, node in enumerate(casts[:-1]):
        m.graph.node.insert(at + k, node)
    m.graph.node.insert(list(m.graph.node).index(norm) + 1, casts[-1])
    G.zero(m, "c2.weight", 1, [2, 3])  # group 1 read by nobody
    out, report, shp = prune(m)
    assert channels(report)["/c1/Conv"] == (8, 6)
    norm = next(n for n in out.graph.node if n.op_type == "InstanceNormalization")
    cast = next(n for n in out.graph.node if n.output[0] == norm.input[1])
    assert G.init(out, cast.input[0]).dtype == np.float16 and G.init(out, cast.input[0]).shape == (3,)


def _test_graphs_of_branch_chan():
    from onnxprune.models import third_party_builders as tb
    return {"shared reader": _shared_reader, "pixel unshuffle": tb.pixel_unshuffle_net,
            "group norm 21": partial(tb.group_norm_net, form="op21"),
            "group norm legacy": partial(tb.group_norm_net, form="legacy"),
            "hf conv1d legacy": tb.hf_conv1d_mlp, "hf conv1d dynamo": partial(tb.hf_conv1d_mlp, form="dynamo")}


GRAPHS.update(_test_graphs_of_branch_chan())  # the property test above draws from these too


def test_channels_pass_a_folded_causal_pad_and_a_gather_of_the_last_time_step():
    """Sweep 24's TCN (torch legacy): F.pad's pads computed from constants (folded at load, passes/constant_pads.py)
    and `y[:, :, -1]` as Gather(axis=2) of a scalar: the hand recipe masked no neuron of 7 of 8 layers ("consumer
    Pad ... has pads, axes or a value that are not constants", then "consumer Gather '/Gather' (op Gather) has no
    channel rule"). A Gather across time keeps the channels; one along them stays blocked."""
    from onnxprune.models.third_party_builders import causal_tcn
    from onnxprune.passes.base import PruneState
    from onnxprune.passes.constant_pads import ConstantPads

    m = ConstantPads()(causal_tcn(width=8, seed=0), PruneState()).model
    G.zero(m, "c2.weight", 1, [2])  # c1's channel 2: read by no weight
    G.zero(m, "head.weight", 1, [1, 5])  # c2's channels 1 and 5, through the Gather
    out, report, shp = prune(m)
    onnx.checker.check_model(out, full_check=True)
    assert shp["c1.weight"] == (7, 3, 3) and shp["c2.weight"] == (6, 7, 3) and shp["head.weight"] == (4, 6)
    along = onnx.ModelProto.FromString(m.SerializeToString())  # the same Gather along the channel axis: a class of its own, blocked
    next(a for n in along.graph.node if n.op_type == "Gather" for a in n.attribute if a.name == "axis").i = 1
    along.graph.node[-1].op_type = "MatMul"
    del along.graph.node[-1].attribute[:]
    along.graph.node[-1].input[1] = "mm.weight"
    along.graph.node[-1].input.pop()
    along.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((6, 4), np.float32), "mm.weight"))
    out2, report2, shp2 = prune(along)  # c2's channels 0-6 are read by no weight, but the Gather picks among them
    assert shp2["c2.weight"][0] == 8 and shp2["c1.weight"][0] == 7


# -- Hugging Face's Conv1D (GPT-2's MLP): Reshape -> Gemm -> Reshape with computed shapes --------------------------
CONV1D_SIZES = [(1, 1), (2, 5), (5, 11)]  # batch and sequence sizes: the unflatten's shape is computed from them


def _conv1d_feeds(dim: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((n, s, dim)).astype(np.float32)} for n, s in CONV1D_SIZES]


def _shape_entries(model: onnx.ModelProto, reshape: str) -> list:
    """The Reshape's shape input when it is an initializer, else the initializers its Concat reads (None elsewhere)."""
    node = next(n for n in model.graph.node if n.name == reshape)
    inits = {t.name for t in model.graph.initializer}
    if node.input[1] in inits:
        return G.init(model, node.input[1]).tolist()
    concat = next(n for n in model.graph.node if node.input[1] in n.output)
    return [G.init(model, t).tolist() if t in inits else None for t in concat.input]


@pytest.mark.parametrize("form", ["legacy", "dynamo"])
def test_hf_conv1d_mlp_loses_dead_neurons_through_its_computed_reshapes(form):
    """Sweep 25, L1: torch exports GPT-2's Conv1D as Reshape [-1, C] -> Gemm -> Reshape [N, S, C_out], the N and S
    read from a Shape and, in the legacy export, C from the input's own Shape: every Conv1D kept every neuron
    ("consumer Reshape ... is not a flattening Reshape with a constant shape"). The unflatten's C_out and a constant
    [-1, C] follow the kept neurons (dynamo's one shape for both c_fc layers becomes one each); a C read from the
    input's Shape follows them by itself."""
    from onnxprune.models.third_party_builders import hf_conv1d_mlp
    from tests.oracle import assert_same_outputs

    m = G.zero(hf_conv1d_mlp(form=form), "h.0.mlp.c_proj.weight", 0, [1, 5])  # read by no weight
    G.zero(m, "h.0.mlp.c_fc.weight", 1, [3])  # gelu_new(bias): folded into c_proj's bias
    G.zero(m, "h.1.mlp.c_proj.weight", 0, [2])
    out, report, shp = prune(m)
    onnx.checker.check_model(out, full_check=True)
    assert_same_outputs(out, m, feeds=_conv1d_feeds())
    assert shp["h.0.mlp.c_fc.weight"] == (8, 13) and shp["h.0.mlp.c_proj.weight"] == (13, 8)
    assert shp["h.1.mlp.c_fc.weight"] == (8, 15) and shp["h.1.mlp.c_proj.weight"] == (15, 8)
    assert report.folded == 1 and not report.blocked
    if form == "legacy":
        for i, n in ((0, 13), (1, 15)):
            assert _shape_entries(out, f"/h.{i}/mlp/c_fc/Reshape_1")[2] == [n]
            assert _shape_entries(out, f"/h.{i}/mlp/c_proj/Reshape_1")[2] == [8]
            assert f"/h.{i}/mlp/c_proj/Shape_2" in {n.name for n in out.graph.node}  # the count read, not rewritten
    else:
        for i, n in ((0, 13), (1, 15)):
            assert _shape_entries(out, f"/h.{i}/mlp/c_fc/view_1")[2] == [n]
            assert _shape_entries(out, f"/h.{i}/mlp/c_proj/view") == [-1, n]
            assert _shape_entries(out, f"/h.{i}/mlp/c_proj/view_1")[2] == [8]


@pytest.mark.parametrize("form", ["legacy", "dynamo"])
def test_neuron_masks_on_hf_conv1d_layers_shrink_them_to_the_masked_models_outputs(form):
    """--neuron-sparsity's path: the weakest half of each c_fc's neurons masked whole, then removed; the shrunk model
    computes the masked one's outputs at batch and sequence sizes other than any it was analysed at."""
    from onnxprune.models.third_party_builders import hf_conv1d_mlp
    from onnxprune.passes.neuron_masks import neuron_map, neuron_masks, unmaskable
    from tests.oracle import assert_same_outputs, zero_weights

    m = hf_conv1d_mlp(form=form, seed=3)
    names = {f"h.{i}.mlp.{layer}.weight" for i in (0, 1) for layer in ("c_fc", "c_proj")}
    assert set(unmaskable(m, names)) == {f"Gemm '/h.{i}/mlp/c_proj/{'Gemm' if form == 'legacy' else 'addmm'}'"
                                         for i in (0, 1)}  # the residual stream's channels: a graph input's
    weights = {n: G.init(m, n) for n in names}
    masks, _ = neuron_masks(neuron_map(m, names), weights, {n: np.ones(a.shape, bool) for n, a in weights.items()},
                            0.5)
    masked = zero_weights(m, masks)
    out, report = remove_dead_neurons(masked)
    onnx.checker.check_model(out, full_check=True)
    assert_same_outputs(out, masked, feeds=_conv1d_feeds())
    assert {k: v for k, v in channels(report).items() if "c_fc" in k} == {
        f"/h.{i}/mlp/c_fc/{'Gemm' if form == 'legacy' else 'addmm'}": (16, 8) for i in (0, 1)}
    assert G.shapes(out)["h.1.mlp.c_proj.weight"] == (8, 8)


@pytest.mark.parametrize("form", ["legacy", "dynamo"])
def test_hf_conv1d_exported_at_a_fixed_sequence_length_shrinks_too(form):
    """[N, 5, C] -> [-1, C]: a constant shape of two entries whose second is not the flattened size took the flatten's
    path and blocked ("reshapes to [-1, 16], not [N, 80]"); it keeps the channel axis whole."""
    from onnxprune.models.third_party_builders import hf_conv1d_mlp
    from tests.oracle import assert_same_outputs

    m = G.zero(hf_conv1d_mlp(form=form, seq=5), "h.0.mlp.c_proj.weight", 0, [1, 5])
    out, report, shp = prune(m)
    assert shp["h.0.mlp.c_fc.weight"] == (8, 14) and not report.blocked
    rng = np.random.default_rng(0)
    assert_same_outputs(out, m, feeds=[{"x": rng.standard_normal((n, 5, 8)).astype(np.float32)} for n in (1, 4)])


def test_a_flatten_reading_the_count_of_another_tensor_follows_it_only_where_its_channels_are_the_same():
    """The channel count read from the Shape of another tensor than the one reshaped follows the kept channels where
    that tensor holds the same classes (c_fc's output before gelu_new: an element-wise chain), checked once every
    class is joined; the count of another layer's output (h.0's c_fc sizing h.1's c_proj input) keeps both layers'
    channels, and says why."""
    from onnxprune.models.third_party_builders import hf_conv1d_mlp
    from onnxprune.passes.neuron_masks import unmaskable

    m = G.zero(hf_conv1d_mlp(), "h.0.mlp.c_proj.weight", 0, [1, 5])
    shape = next(n for n in m.graph.node if n.name == "/h.0/mlp/c_proj/Shape_2")
    shape.input[0] = "/h.0/mlp/c_fc/Reshape_1_output_0"
    out, report, _ = prune(m)
    assert channels(report)["/h.0/mlp/c_fc/Gemm"] == (16, 14)

    m = G.zero(G.zero(hf_conv1d_mlp(), "h.0.mlp.c_proj.weight", 0, [1, 5]), "h.1.mlp.c_proj.weight", 0, [2])
    shape = next(n for n in m.graph.node if n.name == "/h.1/mlp/c_proj/Shape_2")
    shape.input[0] = "/h.0/mlp/c_fc/Reshape_1_output_0"
    out, report, _ = prune(m)
    assert channels(report)["/h.0/mlp/c_fc/Gemm"] == (16, 16) and channels(report)["/h.1/mlp/c_fc/Gemm"] == (16, 16)
    why = unmaskable(m, {"h.0.mlp.c_fc.weight", "h.1.mlp.c_fc.weight"})
    assert why["Gemm '/h.0/mlp/c_fc/Gemm'"] == why["Gemm '/h.1/mlp/c_fc/Gemm'"] == (
        "Reshape '/h.1/mlp/c_proj/Reshape' is sized by the channel count of '/h.0/mlp/c_fc/Reshape_1_output_0' but "
        "does not carry its channels")


def test_an_unflatten_into_heads_keeps_the_channels():
    """[N*S, C] -> [N, S, H, C/H] (attention's heads) splits the channel axis: no entry is the channel count, so the
    Conv1D keeps its neurons (as GPT-2's c_attn does)."""
    from onnxprune.models.third_party_builders import hf_conv1d_mlp
    from onnxprune.passes.neuron_masks import unmaskable

    m = G.zero(hf_conv1d_mlp(blocks=1), "h.0.mlp.c_proj.weight", 0, [1, 5])
    const = next(n for n in m.graph.node if n.name == "/h.0/mlp/c_fc/Constant_7")
    const.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array([2, 8], np.int64)))
    count = next(n for n in m.graph.node if n.name == "/h.0/mlp/c_proj/Concat")  # [-1, 16]: a constant count
    count.input[1] = "sixteen"
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array([16], np.int64), "sixteen"))
    out, report = remove_dead_neurons(m)
    assert channels(report)["/h.0/mlp/c_fc/Gemm"] == (16, 16)
    assert unmaskable(m, {"h.0.mlp.c_fc.weight"})["Gemm '/h.0/mlp/c_fc/Gemm'"].startswith(
        "consumer Reshape '/h.0/mlp/c_fc/Reshape_1' is not a flattening Reshape, nor one that keeps the channel axis "
        "whole")


def test_a_residual_add_of_channels_on_two_axes_is_left_whole_not_a_crash():
    """An MLP-Mixer block (sweep 29's fold_mixer, torch dynamo): h [N, 16 tokens, 64 features] plus the token-mixing
    layer's output transposed back, whose 16 channels lie on the token axis. The residual Add's rule computed its
    channels' values before checking that they line up: "operands could not be broadcast together with shapes (64,)
    (16,)", and `prune` failed in dead-neuron removal on the dense model. Now the Add keeps both sides whole; the
    head's dead inputs still go."""
    g = G.G(0)
    h = g.op("MatMul", "feat", ["x", g.weight("feat.weight", (8, 64), 8)])  # [N, 16, 64]
    t = g.op("Transpose", "t1", [h], perm=[0, 2, 1])  # [N, 64, 16]
    mixed = g.op("MatMul", "mix", [t, g.weight("mix.weight", (16, 16), 16)])
    back = g.op("Transpose", "t2", [mixed], perm=[0, 2, 1])
    r = g.op("Relu", "act", [g.op("Add", "res", [h, back])])
    hid = g.op("Relu", "hid_act", [g.op("MatMul", "hid", [r, g.weight("hid.weight", (64, 12), 64)])])
    g.op("MatMul", "head", [hid, g.weight("head.weight", (12, 4), 12)])
    g.nodes[-1].output[0] = "y"
    m = g.model({"x": ["N", 16, 8]}, {"y": ["N", 16, 4]})
    G.zero(m, "head.weight", 0, [2, 5])  # hid neurons 2 and 5 read by nothing
    out, report, shp = prune(m)
    assert shp["hid.weight"] == (64, 10) and shp["feat.weight"] == (8, 64) and shp["mix.weight"] == (16, 16)


def test_dead_features_pass_through_a_gcn_adjacency_that_mixes_the_nodes():
    """A @ H with A [9, 9] constant and H [N, 9, C]: feature j of the output is A @ H[..., j], so a dead feature of
    w1 is dead after the mixing too (sweep 35's GCN: "MatMul '/MatMul' reads '/w1/Add_output_0' on another axis",
    8 dead features kept)."""
    from onnxprune.models.third_party_builders import grid_gcn

    m = grid_gcn()
    G.zero(m, "w1.weight", 1, [0, 5])  # relu(0 + 0) = 0: nothing of features 0 and 5 reaches w2
    G.set_init(m, "w1.bias", np.where(np.isin(np.arange(8), [0, 5]), 0.0, G.init(m, "w1.bias")))
    G.zero(m, "w2.weight", 1, [2])  # w2's feature 2 holds its bias b2[2] everywhere before the second mixing
    out, report, shp = prune(m)
    assert shp["w1.weight"] == (4, 6) and shp["w1.bias"] == (6,) and shp["w2.weight"][0] == 6
    assert shp["A"] == (9, 9) and G.op_counts(out) == G.op_counts(m)
    # ... and b2[2] times A's row sums after it, which differ (corner, edge and centre nodes): it varies and stays
    assert shp["w2.weight"][1] == 8


@pytest.mark.parametrize("spread", ["Sqrt", "Log"])
def test_dead_channels_pass_an_x_vector_statistics_pooling(spread):
    """cat([mean(h), sqrt(var(h) + eps)]) over the frames (sweep 36's TDNN: "consumer Sqrt '/Sqrt' (op Sqrt) has no
    channel rule (8 dead kept)"): a dead channel's mean is 0 and its spread sqrt(eps) (or log(eps)), a constant the
    segment layer's bias takes; both of its columns there go."""
    from onnxprune.models.third_party_builders import stats_pooling_tdnn

    m = stats_pooling_tdnn(spread=spread)
    G.zero(m, "t.weight", 0, [1, 4])
    G.set_init(m, "t.bias", np.where(np.isin(np.arange(8), [1, 4]), 0.0, G.init(m, "t.bias")))
    bias = G.init(m, "seg.bias")
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal
    onnx.checker.check_model(out, full_check=True)
    assert shp["t.weight"] == (6, 6, 1) and shp["seg.weight"] == (3, 12) and report.folded == 2
    assert not np.allclose(G.init(out, "seg.bias"), bias)  # sqrt(eps) (log(eps)) times the spread columns went in
    assert G.op_counts(out) == G.op_counts(m)


def test_dead_channels_pass_a_chunk_whose_bounds_torch_computes_from_the_shape():
    """torch legacy's `x.chunk(2, dim=1)`: two Slices on the channel axis whose bounds are Div(Gather(Shape(x), 1),
    2) of a tensor whose channel count is fixed (sweep 36's RevNet: "consumer Slice '/Slice' has starts, ends, axes
    or steps that are not constant", 4 dead stem channels kept; sweep 34's legacy WaveNet, ShuffleNetV2). The load
    step stores the bounds as the constants they are; dead channels of either half then go, each Slice's bounds
    following the kept channels."""
    from onnxprune.models.third_party_builders import channel_split_cnn
    from onnxprune.passes.loading import run_load_passes

    m = channel_split_cnn(width=8, size=6, classes=3)
    loaded = onnx.ModelProto()
    loaded.CopyFrom(m)
    run_load_passes(loaded, PruneState())
    G.assert_same(m, loaded)  # the bounds stored: the same outputs in onnxruntime
    assert "Shape" not in G.op_counts(loaded) and G.op_counts(loaded)["Slice"] == 2
    for half in ([1], [5, 6]):  # a dead channel of the first half (read by Concat), of the second (by 'branch')
        z = G.zero(onnx.ModelProto.FromString(loaded.SerializeToString()), "stem.weight", 0, half)
        G.set_init(z, "stem.bias", np.where(np.isin(np.arange(8), half), 0.0, G.init(z, "stem.bias")))
        out, report, shp = prune(z)  # onnxruntime's outputs on seeded inputs equal the zeroed model's
        onnx.checker.check_model(out, full_check=True)
        assert shp["stem.weight"][0] == 8 - len(half) and report.removed >= len(half)
        # the first half's dead channel: the Concat's first part shrinks, the head reads 7; the second's: 'branch'
        # reads 2 of its 4 inputs
        assert (shp["head.weight"][1], shp["branch.weight"][1]) == ((7, 4) if half == [1] else (8, 2))
    batch = channel_split_cnn(width=8, size=6, classes=3)  # bounds read from the batch size stay computed
    G.set_init(batch, "split.axis", np.array(0, np.int64))
    run_load_passes(batch, PruneState())
    assert "Shape" in G.op_counts(batch)


def test_dead_channels_pass_a_mask_that_multiplies_every_channel_alike():
    """`h * mask` with mask [N, 1, T] a graph input (a padding mask over a sequence; CBAM's spatial attention map
    [N, 1, H, W] alike): a dead channel of h is 0 after it too and goes, the mask untouched (sweep 36: "Mul ...
    combines the channels with '...', which carries none"). A constant channel that is not 0 varies with the mask:
    it stays. A per-channel factor computed from the input (SKNet's branch weights [N, C, 1, 1]) still blocks."""
    from onnxprune.models.third_party_builders import masked_sequence_conv

    m = masked_sequence_conv()
    G.zero(m, "c1.weight", 0, [1, 2, 6])
    G.set_init(m, "c1.bias", np.where(np.isin(np.arange(8), [1, 2]), 0.0,
                                      np.where(np.arange(8) == 6, 0.5, G.init(m, "c1.bias"))))
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs (mask among them) equal
    onnx.checker.check_model(out, full_check=True)
    assert shp["c1.weight"] == (6, 4, 3) and shp["c2.weight"] == (3, 6, 1)  # relu(0.5) * mask varies: 6 stays
    assert G.op_counts(out) == G.op_counts(m)
    gated = masked_sequence_conv()
    mask = next(i for i in gated.graph.input if i.name == "mask")
    mask.type.tensor_type.shape.dim[1].dim_value = 8  # one factor per channel, from the input: no removal
    G.zero(gated, "c1.weight", 0, [1])
    G.set_init(gated, "c1.bias", np.where(np.arange(8) == 1, 0.0, G.init(gated, "c1.bias")))
    out, report, shp = prune(gated)
    assert shp["c1.weight"] == (8, 4, 3)


@pytest.mark.parametrize("where", [False, True, "or"], ids=["keras_threshold", "torch_where", "torch_hardshrink"])
def test_dead_channels_pass_a_threshold_made_of_a_comparison(where):
    """Keras' `ReLU(threshold=0.2)` as tf2onnx writes it (Greater -> Cast -> Mul by h, Not -> Cast -> Mul by the
    value below the threshold) and torch's `where(h > 0, h, 0.1 * h)` (Greater -> Where): a dead channel of h goes, a
    constant one (bias 0.5: above the threshold, 0.5 after it) is folded into fc2's bias and goes too (sweep 37:
    "consumer Greater ... (op Greater) has no channel rule (8 dead kept)"). A comparison with a tensor that carries
    no channels still blocks. torch legacy's Hardshrink(0.3) joins two comparisons: Where(Or(h > 0.3, h < -0.3), h,
    0) (sweep 37: "consumer Or ... (op Or) has no channel rule")."""
    from onnxprune.models.third_party_builders import thresholded_relu_mlp

    m = thresholded_relu_mlp(where=where)
    G.zero(m, "fc1.weight", 1, [1, 2, 6])
    G.set_init(m, "fc1.bias", np.where(np.isin(np.arange(8), [1, 2]), 0.0,
                                       np.where(np.arange(8) == 6, 0.5, G.init(m, "fc1.bias"))))
    b2 = G.init(m, "fc2.bias")
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal
    assert shp["fc1.weight"] == (6, 5) and shp["fc1.bias"] == (5,) and shp["fc2.weight"] == (5, 3)
    assert not np.allclose(G.init(out, "fc2.bias"), b2)  # 0.5 · fc2's row 6 went in
    assert report.removed == 3 and report.folded == 3  # each a constant (0, or -0.05 below the threshold; 0.5)
    assert G.op_counts(out) == G.op_counts(m)
    varying = thresholded_relu_mlp(where=where)
    cmp = next(n for n in varying.graph.node if n.op_type == "Greater")
    cmp.input[1] = "x_max"  # compared with a tensor the input computes: no removal
    varying.graph.node.insert(0, onnx.helper.make_node("ReduceMax", ["x"], ["x_max"], keepdims=1, axes=[1]))
    G.zero(varying, "fc1.weight", 1, [1])
    G.set_init(varying, "fc1.bias", np.where(np.arange(8) == 1, 0.0, G.init(varying, "fc1.bias")))
    out, report, shp = prune(varying)
    assert shp["fc1.weight"] == (6, 8)


@pytest.mark.parametrize("kind", ["snake", "jumprelu"])
def test_a_per_unit_parameter_two_elementwise_ops_read_is_sliced_once_for_both(kind):
    """Sweep 42: a Snake activation's alpha, h + sin(a h)^2 / a, is one initializer a Mul and a Div read; a JumpReLU's
    threshold t, Where(Less(t, h), Sub(h, t), 0), one a Less and a Sub read: "initializer 'act.p' is shared with
    '/act/Div' (4 dead kept)". Both readers tie its axis to h's channels and it is sliced once: a dead unit goes, a
    constant one (bias 0.5) is folded into fc2's bias. A third reader of another kind (an Identity to an output) still
    keeps them."""
    from onnxprune.models.third_party_builders import per_unit_parameter_mlp

    def dead(m):
        G.zero(m, "fc1.weight", 1, [1, 2, 6])
        G.set_init(m, "fc1.bias", np.where(np.isin(np.arange(8), [1, 2]), 0.0,
                                           np.where(np.arange(8) == 6, 0.5, G.init(m, "fc1.bias"))))
        return m

    m = dead(per_unit_parameter_mlp(kind=kind))
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal
    onnx.checker.check_model(out, full_check=True)
    assert shp["fc1.weight"] == (6, 5) and shp["act.p"] == (5,) and shp["fc2.weight"] == (5, 3)
    assert report.removed == 3
    other = dead(per_unit_parameter_mlp(kind=kind))
    other.graph.node.append(onnx.helper.make_node("Identity", ["act.p"], ["p_out"]))
    other.graph.output.append(onnx.helper.make_tensor_value_info("p_out", onnx.TensorProto.FLOAT, [8]))
    out, report, shp = prune(other)
    assert shp["fc1.weight"] == (6, 8) and shp["act.p"] == (8,)


def test_zero_columns_of_a_matrix_per_group_go_and_are_said_where_a_reshape_splits_them():
    """Sweep 42: a MatMul of a weight with a matrix per group (X [.., g, 1, K] @ W [g, K, M]: einsum-linear's rewrite
    of a capsule transform "nid,dio->nio"; torch.baddbmm's grouped linear) had no channel rule: its zero columns
    were neither removed nor said. Output channel j is column j of every group's matrix: zero in all of them, it goes
    (W [6, 4, 3] -> [6, 4, 2], the head's rows with it); behind a Reshape that splits the channels ("nid,iokd->niok")
    they are kept and said."""
    from onnxprune.models.third_party_builders import einsum_grouped
    from onnxprune.passes.einsum_linear import EinsumLinear

    m = EinsumLinear()(einsum_grouped(equation="nid,dio->nio", per_position_head=True), PruneState()).model
    G.zero(m, "caps.W", 2, [1])
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal
    onnx.checker.check_model(out, full_check=True)
    assert shp["caps.W"] == (6, 4, 2) and shp["fc.weight"] == (2, 4) and report.removed == 1
    m = EinsumLinear()(einsum_grouped(), PruneState()).model
    G.zero(m, "caps.W", 2, [0, 1])  # o = 0: columns 0 and 1 of [o·k]
    out, report, shp = prune(m)
    assert shp["caps.W"] == (6, 4, 6) and any("splits the channels" in line and "2 dead kept" in line
                                              for line in report.lines()), report.lines()


def test_dead_channels_pass_a_clip_made_of_min_and_max():
    """Keras' `ReLU(max_value=...)` is clip_by_value, which tf2onnx writes as Min(x, high) -> Max(., low): a dead
    channel goes and a constant one is folded at its clipped value (0.5 -> 0.4; -0.05 -> -0.02) (sweep 37: "consumer
    Min ... (op Min) has no channel rule (4 dead kept)"). Min/Max of three operands still block."""
    from onnxprune.models.third_party_builders import thresholded_relu_mlp

    m = thresholded_relu_mlp(clip=True)
    G.zero(m, "fc1.weight", 1, [1, 2, 6])
    G.set_init(m, "fc1.bias", np.where(np.isin(np.arange(8), [1, 2]), 0.0,
                                       np.where(np.arange(8) == 6, 0.5, G.init(m, "fc1.bias"))))
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal: the clipped values were folded
    assert shp["fc1.weight"] == (6, 5) and shp["fc2.weight"] == (5, 3)
    assert report.removed == 3 and report.folded == 3
    assert G.op_counts(out) == G.op_counts(m)
    three = thresholded_relu_mlp(clip=True)
    node = next(n for n in three.graph.node if n.op_type == "Min")
    node.input.append("high")
    G.zero(three, "fc1.weight", 1, [1])
    G.set_init(three, "fc1.bias", np.where(np.arange(8) == 1, 0.0, G.init(three, "fc1.bias")))
    out, report, shp = prune(three)
    assert shp["fc1.weight"] == (6, 8)


def test_dead_channels_pass_a_gather_nd_over_the_spatial_axes():
    """torch dynamo writes `adaptive_avg_pool2d(h, (3, 3))` of a 7x7 map as Transpose [H, W, N, C] -> GatherND of the
    overlapping windows -> Transpose -> ReduceMean: the GatherND copies the trailing [N, C] whole, so a dead channel
    goes and a constant one (bias 0.5) is folded into fc's bias (sweep 37: "consumer GatherND ... (op GatherND) has
    no channel rule (4 dead kept)"). A GatherND that indexes the channel axis still blocks."""
    from onnxprune.models.third_party_builders import adaptive_pool_gathernd

    m = adaptive_pool_gathernd()
    G.zero(m, "c1.weight", 0, [1, 2, 4])
    G.set_init(m, "c1.bias", np.where(np.isin(np.arange(6), [1, 2]), 0.0,
                                      np.where(np.arange(6) == 4, 0.5, G.init(m, "c1.bias"))))
    b2 = G.init(m, "fc.bias")
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal
    assert shp["c1.weight"] == (3, 4, 1, 1) and shp["fc.weight"] == (12, 3)
    assert not np.allclose(G.init(out, "fc.bias"), b2)
    assert report.removed == 3 and G.op_counts(out) == G.op_counts(m)
    across = adaptive_pool_gathernd(size=6)  # 6 channels, 6x6
    node = next(n for n in across.graph.node if n.op_type == "Transpose")
    del node.attribute[:]
    node.attribute.append(onnx.helper.make_attribute("perm", [1, 2, 0, 3]))  # [C, H, N, W]: indexes C and H
    G.zero(across, "c1.weight", 0, [1])
    G.set_init(across, "c1.bias", np.where(np.arange(6) == 1, 0.0, G.init(across, "c1.bias")))
    out, report, shp = prune(across)
    assert shp["c1.weight"] == (6, 4, 1, 1)


def test_a_dead_row_of_a_residual_branch_is_no_dead_class_kept_by_a_block():
    """fc2's rows 0, 1 are dead but h's channels 0, 1 live in the residual stream r = h + relu(fc2(h)): nothing could
    go, so the Shape that reads r keeps no dead class and says none (sweep 37: "channels of MatMul '/emb/MatMul'
    kept: consumer Shape ... (8 dead kept)" of a Set Transformer whose FFN rows were zero). With fc1's rows dead too
    the class is dead and the note counts it."""
    from onnxprune.models.third_party_builders import residual_shape_read

    m = residual_shape_read()
    G.zero(m, "fc2.weight", 1, [0, 1])
    G.set_init(m, "fc2.bias", np.where(np.arange(8) < 2, 0.0, G.init(m, "fc2.bias")))
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (6, 8) and report.removed == 0
    assert not any("dead kept" in line for line in report.blocked)
    G.zero(m, "fc1.weight", 1, [0, 1])
    G.set_init(m, "fc1.bias", np.where(np.arange(8) < 2, 0.0, G.init(m, "fc1.bias")))
    out, report, shp = prune(m)
    assert shp["fc1.weight"] == (6, 8)
    assert any("Shape '/res/Shape'" in line and "(2 dead kept)" in line for line in report.blocked), report.blocked


@pytest.mark.parametrize("fill", [0.0, 1.0], ids=["zeros_like", "ones_like"])
def test_dead_channels_pass_a_constant_of_the_shape_of_the_channels(fill):
    """tf.where(|h| > 0.5, h, zeros_like(h)) (Keras' hard_shrink, soft_shrink, sparse_plus) as tf2onnx writes it:
    the else branch is ConstantOfShape(Shape(h)), a tensor of h's channels each `fill`; a dead channel goes, a
    constant one (bias 0.7) is folded, and the Shape follows the channels left (sweep 37: "consumer Shape ... gives
    the channel count to an op that reads it (2 dead kept)")."""
    from onnxprune.models.third_party_builders import hard_shrink_mlp

    m = hard_shrink_mlp(fill=fill)
    G.zero(m, "fc1.weight", 1, [1, 2, 6])
    G.set_init(m, "fc1.bias", np.where(np.isin(np.arange(8), [1, 2]), 0.0,
                                       np.where(np.arange(8) == 6, 0.7, G.init(m, "fc1.bias"))))
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal
    assert shp["fc1.weight"] == (6, 5) and shp["fc2.weight"] == (5, 3)
    assert report.removed == 3 and not report.blocked
    assert G.op_counts(out) == G.op_counts(m)


def test_dead_channels_pass_a_zeros_like_of_the_nhwc_twin():
    """tf2onnx's zeros_like of a Keras conv's NHWC output reads the shape of its NCHW twin through a Gather [0, 2, 3,
    1]: the ConstantOfShape carries the channels on the last axis; a dead channel goes and a constant one (bias 0.7,
    |0.7| > 0.5) is folded into c2's bias (sweep 37: a Conv2D(activation="hard_shrink") kept its dead channels at
    "consumer Shape ... gives the channel count to an op that reads it")."""
    from onnxprune.models.third_party_builders import hard_shrink_conv

    m = hard_shrink_conv()
    G.zero(m, "c1.weight", 0, [1, 2, 4])
    G.set_init(m, "c1.bias", np.where(np.isin(np.arange(6), [1, 2]), 0.0,
                                      np.where(np.arange(6) == 4, 0.7, G.init(m, "c1.bias"))))
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal
    assert shp["c1.weight"] == (3, 2, 1, 1) and shp["c2.weight"] == (3, 3, 1, 1)
    assert report.removed == 3 and not report.blocked
    assert G.op_counts(out) == G.op_counts(m)


@pytest.mark.parametrize("op, axis, opset", [("Softmax", 3, 17), ("LogSoftmax", 2, 17), ("Softmax", 2, 11)])
def test_dead_channels_pass_a_softmax_over_the_positions(op, axis, opset):
    """A softmax over a map's positions keeps each channel apart: dead channels 1, 2 go and a constant one (bias
    0.5, the same at every position) is 1/n there (log(1/n) for LogSoftmax), folded into c2's bias; before opset 13
    axis 2 normalizes axes 2 and 3 together. Over the channel axis (torch's nn.Softmax2d, sweep 38) every output reads
    all channels: kept, and said so (it was "has no channel rule")."""
    from onnxprune.models.third_party_builders import spatial_softmax

    m = spatial_softmax(op=op, axis=axis, opset=opset)
    onnx.checker.check_model(m, full_check=True)
    G.zero(m, "c1.weight", 0, [1, 2, 4])
    G.set_init(m, "c1.bias", np.where(np.isin(np.arange(6), [1, 2]), 0.0,
                                      np.where(np.arange(6) == 4, 0.5, G.init(m, "c1.bias"))))
    b2 = G.init(m, "c2.bias")
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal
    assert shp["c1.weight"] == (3, 2, 1, 1) and shp["c2.weight"] == (6, 3, 1, 1)
    assert not np.allclose(G.init(out, "c2.bias"), b2)
    assert report.removed == 3 and G.op_counts(out) == G.op_counts(m)
    across = spatial_softmax(op=op, axis=1, opset=opset)
    G.zero(across, "c1.weight", 0, [1])
    G.set_init(across, "c1.bias", np.where(np.arange(6) == 1, 0.0, G.init(across, "c1.bias")))
    out, report, shp = prune(across)
    assert shp["c1.weight"] == (6, 2, 1, 1) and report.removed == 0
    assert any("normalizes across the channels (every output reads all channels)" in why for why in report.blocked)


# -- lookups in a constant table (nn.Embedding, Keras Embedding) ---------------------------------------------------
def _looked_up(shared: str = "") -> onnx.ModelProto:
    """'x' [N, 6] -> Gemm a (8) + Relu, 'ids' [N] -> Gather(emb.weight [5, 4]) (`shared="twice"`: a second lookup
    of 'ids2' in the same table, added to the first; `"head"`: the table read by a MatMul too), Concat -> Gemm fc
    -> 'y' [N, 3]: sweep 38's two-input models (a float image and an int hint id through an Embedding)."""
    g = G.G(0)
    a = G.activation(g, g.gemm("x", "a", 6, 8), "act", "Relu")
    table = g.weight("emb.weight", (5, 4), 4)
    e = g.op("Gather", "emb", [table, "ids"], axis=0)
    if shared == "twice":
        e = g.op("Add", "both", [e, g.op("Gather", "emb2", [table, "ids2"], axis=0)])
    h = g.op("Concat", "cat", [a, e], axis=1)
    g.gemm(h, "fc", 12, 3)
    g.nodes[-1].output[0] = "y"
    outputs = {"y": ["N", 3]}
    if shared == "head":
        g.op("MatMul", "head", [e, g.op("Transpose", "t", [table], perm=[1, 0])])
        g.nodes[-1].output[0] = "scores"
        outputs["scores"] = ["N", 5]
    m = g.model({"x": ["N", 6]}, outputs)
    for name in ["ids"] + (["ids2"] if shared == "twice" else []):
        m.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, ["N"]))
    return m


@pytest.mark.parametrize("shared", ["", "twice", "head"])
def test_a_zero_column_of_a_looked_up_table_is_a_dead_feature_and_goes(shared):
    """A lookup in a constant table (Gather on axis 0) produces its table's columns as channels: a zero column is a
    feature that is 0 whatever the ids, so it goes with the weight rows that read it (sweep 38's L7: torch's and
    Keras' Embedding concatenated into a Dense's input kept their zeroed columns and the run said nothing). Two alike
    lookups of one table slice it once; a table the head reads too (a tied language model) keeps its columns."""
    m = G.zero(_looked_up(shared), "emb.weight", 1, [1, 3])
    out, report, shp = prune(m)
    if shared == "head":
        assert shp["emb.weight"] == (5, 4) and shp["fc.weight"] == (3, 12) and report.removed == 0
        return
    assert shp["emb.weight"] == (5, 2) and shp["fc.weight"] == (3, 10)
    assert channels(report)["emb"] == (4, 2) and report.removed == 2
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((7, 6)).astype(np.float32), "ids": np.arange(7) % 5,
              "ids2": (np.arange(7) + 2) % 5}]
    feeds = [{k: v for k, v in f.items() if k in {i.name for i in m.graph.input}} for f in feeds]
    assert_same_outputs(out, m, feeds=feeds)


@pytest.mark.parametrize("form", ["shape", "concat", "other"])
def test_an_excitation_gate_expanded_to_the_map_keeps_its_channels_in_step(form):
    """`h * y.view(b, c, 1, 1).expand_as(h)`, an SE block as many torch codebases write it: Expand had no channel rule
    and the view read h's channel count from Shape(h), so a dead channel of c1 stayed (sweep 38's L3; legacy and
    dynamo exports alike). The count read from h's own shape follows the kept channels where the gate's channels
    are h's (the Mul joins them), a constant count is rewritten; when the expanded gate scales another conv's
    channels, Shape(h)'s count sizes channels that are not h's, and c1 keeps them."""
    m = G.zero(G.squeeze_excite_expand(form), "c1.weight", 0, [2, 4])  # c1's channels 2 and 4: relu(bias) …
    G.set_init(m, "c1.bias", np.where(np.isin(np.arange(6), [2, 4]), -1.0, G.init(m, "c1.bias")).astype(np.float32))
    out, report, shp = prune(m)  # … = 0: read by fc1 (through the pool) as nothing, by the Mul as a zero
    if form == "other":
        assert shp["c1.weight"][0] == 6
        assert any("is sized by the channel count of" in line for line in report.blocked)
        return
    assert shp["c1.weight"][0] == 4 and shp["fc2.weight"][0] == 4 and shp["c2.weight"][1] == 4
    assert channels(report)["c1"] == (6, 4)


def _shuffled(perm=(0, 2, 1, 3, 4), form: str = "dynamo") -> onnx.ModelProto:
    """c1 (3 -> 8) + Relu -> ShuffleNet's channel shuffle in 2 groups, as torch's dynamo writes it (Reshape to the
    constant [-1, 2, 4, 4, 4], Transpose `perm`, Reshape to [-1, 8, 4, 4]) or its legacy exporter with a dynamic
    batch (`form="legacy"`: the shapes computed from Shape(s), the group size c // 2 by a Div) -> c2 (1x1, 8 -> 4)
    -> head."""
    g = G.G(0)
    s = g.op("Relu", "r1", [g.conv("x", "c1", 3, 8, 3)])
    i64 = lambda name, v: g.init(name, np.array(v, np.int64))  # noqa: E731
    if form == "legacy":
        dim = [g.op("Gather", f"at{a}", [g.op("Shape", f"shape{a}", [s]), i64(f"i{a}", a)], axis=0) for a in range(4)]
        dim[1] = g.op("Div", "per_group", [dim[1], i64("groups", 2)])
        dim = [g.op("Unsqueeze", f"dim{a}", [d, i64(f"ax{a}", [0])]) for a, d in enumerate(dim)]
        split = g.op("Concat", "split.shape", [dim[0], i64("two", [2]), *dim[1:]], axis=0)
        merge = g.op("Concat", "merge.shape", [dim[0], i64("minus_one", [-1]), *dim[2:]], axis=0)
    else:
        split, merge = i64("split.shape", [-1, 2, 4, 4, 4]), i64("merge.shape", [-1, 8, 4, 4])
    v = g.op("Reshape", "split", [s, split])
    t = g.op("Transpose", "swap", [v], perm=list(perm))
    m = g.op("Reshape", "merge", [t, merge])
    G._head(g, g.conv(m, "c2", 8, 4, 1), 4)
    return g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]})


@pytest.mark.parametrize("form", ["dynamo", "legacy"])
@pytest.mark.parametrize("dead", [[1, 6], [1, 2]])
def test_a_channel_shuffle_carries_dead_channels_through_as_one_gather(dead, form):
    """ShuffleNet's shuffle (Reshape into groups, Transpose of the two group axes, Reshape back) permutes the channels:
    c1's dead channels go, and c2's input rows follow them in their shuffled order; channels going unevenly across
    the groups ([1, 2]: both in group 0) would break the reshapes, so the chain becomes one Gather of the kept
    channels (sweep 38's L2: "it splits the channels" kept them); the legacy export's shape computation goes with the
    chain. Another Transpose is no shuffle: they stay."""
    m = G.zero(_shuffled(form=form), "c1.weight", 0, dead)
    G.set_init(m, "c1.bias", np.where(np.isin(np.arange(8), dead), -1.0, G.init(m, "c1.bias")).astype(np.float32))
    out, report, shp = prune(m)
    assert shp["c1.weight"][0] == 6 and shp["c2.weight"][1] == 6
    assert G.op_counts(out).get("Transpose", 0) == 0 and G.op_counts(out)["Gather"] == 1
    assert not {"Shape", "Div", "Reshape"} & set(G.op_counts(out))
    other = G.zero(_shuffled(perm=(0, 1, 2, 4, 3), form=form), "c1.weight", 0, dead)
    G.set_init(other, "c1.bias", G.init(m, "c1.bias"))
    out, report, shp = prune(other)
    assert shp["c1.weight"][0] == 8


def test_a_constant_channel_a_grouped_conv_keeps_for_its_partners_is_said():
    """A channel that holds a constant (relu of its bias: its weights are zero) and is local channel j of a grouped
    Conv's input in one group only stays, since the group's channel j lives elsewhere; the run said nothing about it
    (sweep 38: "2 dead c1 rows before the grouped c2 kept silently"), where it says so for an unread one."""
    g = G.G(seed=4)
    p = g.op("Relu", "p_relu", [g.conv("x", "p", 3, 8, 3, pad=1)])
    q = g.op("Relu", "q_relu", [g.conv(p, "q", 8, 8, 1, group=2)])
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [q])]), "head", 8, 3)
    g.nodes[-1].output[0] = "y"
    m = G.zero(g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]}), "p.weight", 0, [2])  # local 2 of group 0 only
    out, report, shp = prune(m)
    assert shp["p.weight"][0] == 8
    assert any(line.startswith("1 channel(s) no weight needs (unread, or a constant) are kept") and
               line.endswith(": Conv 'p' 1") for line in report.lines()), report.lines()


@pytest.mark.parametrize("form", ["constant", "legacy"])
def test_features_expanded_along_a_new_axis_keep_their_channels_in_step(form):
    """`h[:, None, :].expand(-1, 3, -1)` -> a MatMul -> a mean over the copies: Expand keeps the channels on the last
    axis. torch's legacy exporter writes the target's -1s as Where(Equal(S, -1), 1, S), the 1s from a ConstantOfShape,
    all constants (folded to [1, 3, 1]); dynamo writes the constant. Sweep 38's L3: "Expand ... has no channel rule"."""
    g = G.G(0)
    h = G.activation(g, g.gemm("x", "a", 6, 8), "act", "Relu")
    h = g.op("Unsqueeze", "copies", [h, g.init("axis1", np.array([1], np.int64))])
    if form == "legacy":
        ones = g.op("ConstantOfShape", "ones", [g.init("three", np.array([3], np.int64))],
                    value=onnx.numpy_helper.from_array(np.array([1], np.int64)))
        minus = g.op("Mul", "minus", [ones, g.init("minus_one", np.array(-1, np.int64))])
        shape = g.init("target", np.array([-1, 3, -1], np.int64))
        target = g.op("Where", "fix", [g.op("Equal", "is_minus", [shape, minus]), ones, shape])
    else:
        target = g.init("target", np.array([1, 3, 1], np.int64))
    e = g.op("Expand", "expand", [h, target])
    y = g.op("MatMul", "mm", [e, g.weight("mm.weight", (8, 4), 8)])
    g.op("ReduceMean", "mean", [y], axes=[1], keepdims=0)
    g.nodes[-1].output[0] = "y"
    m = G.zero(g.model({"x": ["N", 6]}, {"y": ["N", 4]}), "a.weight", 0, [2, 5])
    G.set_init(m, "a.bias", np.where(np.isin(np.arange(8), [2, 5]), -1.0, G.init(m, "a.bias")).astype(np.float32))
    out, report, shp = prune(m)
    assert shp["a.weight"] == (6, 6) and shp["mm.weight"] == (6, 4)


# -- torch legacy's x.flatten(2): Reshape [Shape(x)[0:2], -1] -------------------------------------------------------
def _flatten2_pool(batch="N", constant: bool = False) -> onnx.ModelProto:
    """Conv [N, 1, 6, 6] -> Relu -> Conv 8 -> Relu -> x.flatten(2) as torch legacy writes it (Reshape to
    Concat(Slice(Shape(x), 0, 2), [-1]): [N, 8, 36]; `constant`: to a stored [0, 8, -1]) -> ReduceMean over the
    positions -> Gemm: attention or average pooling over a map's positions."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "c1.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
        "c1.bias": rng.standard_normal(4).astype(np.float32) * 0.1,
        "c2.weight": rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.5,
        "c2.bias": rng.standard_normal(8).astype(np.float32) * 0.1,
        "fc.weight": rng.standard_normal((3, 8)).astype(np.float32),
        "fc.bias": np.zeros(3, np.float32), "start": np.array([0]), "end": np.array([2]), "rest": np.array([-1]),
        "axes": np.array([2]), "fixed": np.array([0, 8, -1])}.items()]
    nodes = [helper.make_node("Conv", ["x", "c1.weight", "c1.bias"], ["h1"], pads=[1, 1, 1, 1], name="/c1/Conv"),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Conv", ["r1", "c2.weight", "c2.bias"], ["h2"], pads=[1, 1, 1, 1], name="/c2/Conv"),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Shape", ["r2"], ["s"], name="/Shape"),
             helper.make_node("Slice", ["s", "start", "end"], ["lead"]),
             helper.make_node("Concat", ["lead", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["r2", "fixed" if constant else "target"], ["flat"], name="/Reshape"),
             helper.make_node("ReduceMean", ["flat", "axes"], ["pooled"], keepdims=0),
             helper.make_node("Gemm", ["pooled", "fc.weight", "fc.bias"], ["y"], transB=1, name="/fc/Gemm")]
    graph = helper.make_graph(nodes, "flatten2", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                [batch, 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


@pytest.mark.parametrize("batch,constant", [("N", False), (2, False), ("N", True)],
                         ids=["dynamic", "fixed", "constant-shape"])
def test_dead_channels_pass_torchs_flatten_of_the_positions(batch, constant):
    """Sweep 39: attention pooling over a conv map's positions (torch legacy's h.flatten(2), Reshape to
    [Shape(h)[0], Shape(h)[1], -1]) kept every dead channel ("consumer Shape ... gives the channel count to an op
    that reads it", "consumer Reshape ... is not a flattening Reshape, nor one that keeps the channel axis whole"):
    a -1 after the channel axis was no fixed entry. With the entries before it the input's own leading sizes, the -1
    is what lies behind the channel axis, and the channel count read from its Shape follows the kept channels (a
    stored [0, 8, -1] is rewritten to [0, 4, -1])."""
    m = G.zero(G.zero(_flatten2_pool(batch, constant), "c2.weight", 0, [1, 2, 5, 6]), "c2.bias", 0, [1, 2, 5, 6])
    out, report, shp = prune(m)
    assert shp["c2.weight"] == (4, 4, 3, 3) and shp["fc.weight"] == (3, 4), channels(report)
    if constant:
        reshape = next(n for n in out.graph.node if n.name == "/Reshape")
        assert G.init(out, reshape.input[1]).tolist() == [0, 4, -1]
    else:
        assert "/Shape" in {n.name for n in out.graph.node}  # the count read from the Shape, not rewritten


def test_a_graph_with_local_functions_and_bodies_loses_its_dead_neurons():
    """Sweep 39: skl2onnx's KNNImputer (opset 18), inlined at load, is a graph of 64 If nodes whose branches call 5
    local functions; onnx_graphsurgeon's sort of functions recurses without end in such a graph, so the shrink step
    failed ("pass 'dead-neurons' failed ...: RecursionError"). The graph's nodes and bodies are sorted, the functions
    kept in their order."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    half = helper.make_function("local", "half", ["x"], ["y"], [
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.FLOAT, [], [0.5])),
        helper.make_node("Mul", ["x", "c"], ["y"])], [helper.make_opsetid("", 17)])
    branch = lambda name, op: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["r2"], [f"{name}_out"], domain="local" if op == "half" else "")], name, [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])
    inits = {"w1": rng.standard_normal((6, 4)), "b1": rng.standard_normal(6), "w2": rng.standard_normal((5, 6)),
             "b2": np.zeros(5), "w3": rng.standard_normal((3, 5)), "b3": np.zeros(3)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1, name="/l1/Gemm"),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "w2", "b2"], ["h2"], transB=1, name="/l2/Gemm"),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("If", ["flag"], ["g"], then_branch=branch("then", "half"),
                              else_branch=branch("else", "Identity")),
             helper.make_node("Gemm", ["g", "w3", "b3"], ["y"], transB=1, name="/l3/Gemm")]
    graph = helper.make_graph(nodes, "functions_and_bodies",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
                              + [numpy_helper.from_array(np.array(True), "flag")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                          functions=[half], ir_version=8)
    G.zero(G.zero(m, "w1", 0, [0, 3]), "b1", 0, [0, 3])
    out, report, shp = prune(m)
    assert shp["w1"] == (4, 4) and shp["w2"] == (5, 4), channels(report)
    assert [f.name for f in out.functions] == ["half"]


# -- a grouped ConvTranspose ------------------------------------------------------------------------------------
def _grouped_up() -> onnx.ModelProto:
    """Conv 1 -> 8 -> Relu -> ConvTranspose(8 -> 8, group 4, kernel 2, stride 2): group k reads channels 2k, 2k + 1
    and writes outputs 2k, 2k + 1 -> Relu -> Conv 8 -> 4 -> GlobalAveragePool -> Flatten -> 'y' [N, 4]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in {
        "c1.weight": rng.standard_normal((8, 1, 3, 3)), "c1.bias": rng.standard_normal(8) * 0.1,
        "up.weight": rng.standard_normal((8, 2, 2, 2)), "up.bias": rng.standard_normal(8) * 0.1,
        "c3.weight": rng.standard_normal((4, 8, 3, 3)), "c3.bias": np.zeros(4)}.items()]
    nodes = [helper.make_node("Conv", ["x", "c1.weight", "c1.bias"], ["h1"], pads=[1, 1, 1, 1], name="/c1/Conv"),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("ConvTranspose", ["r1", "up.weight", "up.bias"], ["u"], group=4, strides=[2, 2],
                              name="/up/ConvTranspose"),
             helper.make_node("Relu", ["u"], ["r2"]),
             helper.make_node("Conv", ["r2", "c3.weight", "c3.bias"], ["h3"], pads=[1, 1, 1, 1], name="/c3/Conv"),
             helper.make_node("GlobalAveragePool", ["h3"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "grouped_up", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  ["N", 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_dead_channels_go_through_a_grouped_conv_transpose_a_local_channel_of_every_group_at_once():
    """Sweep 39: a ConvTranspose2d(16, 16, groups=4) kept the dead channels before it ("a grouped or non-constant
    ConvTranspose"). As for a grouped Conv, local channel j of every group is one class on each side: it goes when it
    is dead in every group (the input's channels 0, 2, 4, 6; the outputs' 0, 2, 4, 6), `group` stays, and one group's
    dead channel alone stays."""
    m = G.zero(G.zero(_grouped_up(), "c1.weight", 0, [0, 2, 4, 6]), "c1.bias", 0, [0, 2, 4, 6])
    out, report, shp = prune(m)
    assert shp["c1.weight"] == (4, 1, 3, 3) and shp["up.weight"] == (4, 2, 2, 2), channels(report)
    up = next(n for n in out.graph.node if n.op_type == "ConvTranspose")
    assert next(a.i for a in up.attribute if a.name == "group") == 4
    m = G.zero(G.zero(_grouped_up(), "up.weight", 1, [0]), "up.bias", 0, [0, 2, 4, 6])
    out, report, shp = prune(m)
    assert shp["up.weight"] == (8, 1, 2, 2) and shp["up.bias"] == (4,) and shp["c3.weight"] == (4, 4, 3, 3)
    m = G.zero(G.zero(_grouped_up(), "c1.weight", 0, [0]), "c1.bias", 0, [0])  # group 0's alone
    out, report, shp = prune(m)
    assert shp["c1.weight"] == (8, 1, 3, 3) and shp["up.weight"] == (8, 2, 2, 2)


def test_an_upsample_by_tile_keeps_the_channels_in_step():
    """Keras' UpSampling1D as tf2onnx writes it: Unsqueeze, Tile [1, 1, 2, 1], Reshape back to [N, 2T, C] with N and
    C read from the input's Shape. Tile had no channel rule and the count came from another tensor's Shape (sweep 39's
    L2: forced dead Conv1D rows kept); both now follow the kept channels."""
    g = G.G(0)
    i64 = lambda name, v: g.init(name, np.array(v, np.int64))  # noqa: E731
    h = g.op("MatMul", "a", ["x", g.weight("a.weight", (5, 8), 5)])
    h = G.activation(g, g.op("Add", "a_bias", [h, g.bias("a.bias", 8)]), "act", "Relu")
    shape = g.op("Shape", "h_shape", [h])
    target = g.op("Concat", "target", [g.op("Slice", "n", [shape, i64("s0", [0]), i64("e0", [1])]), i64("t2", [8]),
                                       g.op("Slice", "c", [shape, i64("s2", [2]), i64("e2", [3])])], axis=0)
    tiled = g.op("Tile", "tile", [g.op("Unsqueeze", "u", [h, i64("ax2", [2])]), i64("reps", [1, 1, 2, 1])])
    y = g.op("MatMul", "mm", [g.op("Reshape", "up", [tiled, target]), g.weight("mm.weight", (8, 3), 8)])
    g.op("ReduceMean", "mean", [y], axes=[1], keepdims=0)
    g.nodes[-1].output[0] = "y"
    m = G.zero(g.model({"x": ["N", 4, 5]}, {"y": ["N", 3]}), "a.weight", 1, [2, 5])
    G.set_init(m, "a.bias", np.where(np.isin(np.arange(8), [2, 5]), -1.0, G.init(m, "a.bias")).astype(np.float32))
    out, report, shp = prune(m)
    assert shp["a.weight"] == (5, 6) and shp["mm.weight"] == (6, 3)


def _normalized(form: str) -> onnx.ModelProto:
    """a (6 -> 8) + Relu -> F.normalize over the features, as torch's exporters write it: ReduceL2 over axis 1
    (keepdims), Clip at eps, Expand to h's shape, h / that -> head (8 -> 3). The Expand's target: Shape(h) (legacy),
    Concat(Shape(x)[0:1], the constant 8) (dynamo), or Shape of another layer's 8 features ("other")."""
    g = G.G(0)
    h = g.op("Relu", "act", [g.gemm("x", "a", 6, 8)])
    norm = g.op("ReduceL2", "norm", [h], axes=[1], keepdims=1)
    norm = g.op("Clip", "clamp", [norm, g.init("eps", np.array(1e-12, np.float32))])
    if form == "dynamo":
        n = g.op("Slice", "n", [g.op("Shape", "x_shape", ["x"]), g.init("zero", np.array([0], np.int64)),
                                g.init("one", np.array([1], np.int64))])
        target = g.op("Concat", "target", [n, g.init("features", np.array([8], np.int64))], axis=0)
    elif form == "other":
        other = g.op("Relu", "other_act", [g.gemm("x", "o", 6, 8)])
        target = g.op("Shape", "other_shape", [other])
        g.gemm(other, "side", 8, 2)
        g.nodes[-1].output[0] = "side_y"
    else:
        target = g.op("Shape", "h_shape", [h])
    e = g.op("Expand", "expand", [norm, target])
    g.gemm(g.op("Div", "unit", [h, e]), "head", 8, 3)
    g.nodes[-1].output[0] = "y"
    outputs = {"y": ["N", 3], **({"side_y": ["N", 2]} if form == "other" else {})}
    return g.model({"x": ["N", 6]}, outputs)


@pytest.mark.parametrize("form", ["legacy", "dynamo", "other"])
def test_features_normalized_by_their_norm_lose_their_zero_features(form):
    """F.normalize(h): a feature that is 0 adds nothing to the norm (ReduceL2 over the features reads every one of
    them, as a weight layer of ones would) and 0 / norm stays 0, so it goes with the head's rows that read it; the
    Expand of the norm to h's count follows the kept features (read from h's Shape, or a constant rewritten). The
    session 44 closing note's left item: "ReduceL2 ... has no channel rule", "Div ... combines the channels with
    '/Expand_output_0', which carries none". Expanded to another layer's count, a's features stay."""
    m = G.zero(_normalized(form), "a.weight", 0, [1, 5])  # a's features 1 and 5: relu(bias) …
    G.set_init(m, "a.bias", np.where(np.isin(np.arange(8), [1, 5]), -1.0, G.init(m, "a.bias")).astype(np.float32))
    onnx.checker.check_model(m, full_check=True)
    out, report, shp = prune(m)  # … = 0 (prune compares onnxruntime's outputs before and after)
    if form == "other":
        assert shp["a.weight"][0] == 8
        assert any("is sized by the channel count of" in line for line in report.blocked)
        return
    onnx.checker.check_model(out, full_check=True)
    assert shp["a.weight"] == (6, 6) and shp["head.weight"] == (3, 6) and channels(report)["a"] == (8, 6)
    rng = np.random.default_rng(3)
    assert_same_outputs(out, m, feeds=[{"x": rng.standard_normal((5, 6)).astype(np.float32)}])


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceL2", "ReduceL1", "ReduceSumSquare", "ReduceMean", "ReduceMax"])
@pytest.mark.parametrize("value", [0.0, 0.5])
def test_a_sum_over_the_channels_lets_a_zero_channel_go_and_keeps_a_constant_one(op, value):
    """A sum of f(entry) with f(0) = 0 over the channel axis (ReduceSum, L1, L2, SumSquare) needs no channel that is 0
    everywhere; a nonzero constant one adds to every output and stays, as do all channels under a mean, a maximum
    or a minimum (a removed 0 changes the count, or the extremum where the others are below it)."""
    g = G.G(2)
    h = g.op("Relu", "act", [g.conv("x", "c1", 3, 6, 3)])
    axes = [g.init("axes", np.array([1], np.int64))] if op == "ReduceSum" else []
    s = g.op(op, "over_channels", [h, *axes], keepdims=1, **({} if op == "ReduceSum" else {"axes": [1]}))
    g.op("Mul", "scaled", [h, s])  # the map is read on: both the sum and the map
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [g.nodes[-1].output[0]])]), "head", 6, 3)
    g.nodes[-1].output[0] = "y"
    m = G.zero(g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]}), "c1.weight", 0, [2])
    bias = np.where(np.arange(6) == 2, value, G.init(m, "c1.bias")).astype(np.float32)
    G.set_init(m, "c1.bias", bias)  # channel 2 is relu(bias): `value` everywhere
    out, report, shp = prune(m)
    removable = value == 0.0 and op not in ("ReduceMean", "ReduceMax")
    assert shp["c1.weight"][0] == (5 if removable else 6), report.lines()
    if op in ("ReduceMean", "ReduceMax") and value == 0.0:  # the dead channel it kept is said
        assert any("reduces over the channel axis" in why for why in report.blocked)


@pytest.mark.parametrize("bias", ["shared", "map", "unread"])
def test_a_layer_norm_over_each_channels_positions_carries_the_channels(bias):
    """nn.LayerNorm([H, W]) of a map normalizes each channel over its own positions: channels pass (sweep 39's L3: "no
    channel rule for that yet" kept dead ones). A dead channel becomes the bias there: one value ("shared") folds into
    c2's bias and goes; a bias that varies over the positions ("map") is no constant and stays, unless c2 does not
    read it ("unread")."""
    g = G.G(5)
    h = g.op("Relu", "act", [g.conv("x", "c1", 3, 6, 3)])  # [N, 6, 4, 4]
    rng = np.random.default_rng(0)
    values = np.full((4, 4), 0.3) if bias == "shared" else rng.standard_normal((4, 4))
    ln = g.op("LayerNormalization", "ln", [h, g.init("ln.scale", rng.uniform(0.5, 1.5, (4, 4)).astype(np.float32)),
                                           g.init("ln.bias", values.astype(np.float32))], axis=2)
    c2 = g.op("Relu", "act2", [g.conv(ln, "c2", 6, 5, 1)])
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [c2])]), "head", 5, 3)
    g.nodes[-1].output[0] = "y"
    m = G.zero(g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]}), "c1.weight", 0, [1, 4])
    G.set_init(m, "c1.bias", np.where(np.isin(np.arange(6), [1, 4]), -1.0, G.init(m, "c1.bias")).astype(np.float32))
    if bias == "unread":
        G.zero(m, "c2.weight", 1, [1, 4])
    onnx.checker.check_model(m, full_check=True)
    out, report, shp = prune(m)  # onnxruntime's outputs compared before and after
    assert shp["c1.weight"][0] == (6 if bias == "map" else 4) and shp["c2.weight"][1] == shp["c1.weight"][0]
    assert not any("no channel rule for that yet" in why for why in report.blocked)


def test_a_layer_norm_over_the_channels_and_positions_keeps_them():
    """Over the channel axis and the positions (nn.LayerNorm([C, H, W])), every output reads all channels: kept."""
    g = G.G(5)
    h = g.op("Relu", "act", [g.conv("x", "c1", 3, 6, 3)])
    ln = g.op("LayerNormalization", "ln", [h, g.init("ln.scale", np.ones((6, 4, 4), np.float32))], axis=1)
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [ln])]), "head", 6, 3)
    g.nodes[-1].output[0] = "y"
    m = G.zero(g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]}), "c1.weight", 0, [1])
    G.set_init(m, "c1.bias", np.where(np.arange(6) == 1, -1.0, G.init(m, "c1.bias")).astype(np.float32))
    out, report, shp = prune(m)
    assert shp["c1.weight"][0] == 6
    assert any("normalizes across the channels" in why for why in report.blocked)


def _merged_channels(kind: str) -> onnx.ModelProto:
    """Conv 1 -> 4 -> Relu, then the channel axis merged with axes after it, -> Conv -> head 'y' [N, 3]. "repeat":
    torch legacy's repeat_interleave(2, dim=1), Unsqueeze -> Tile [1, 1, 2, 1, 1] -> Reshape to [Shape(t)[0], -1,
    Shape(t)[3:5]] (channel k becomes 2k, 2k + 1); "repeat-constant": the same to a constant [0, 8, 6, 6];
    "unshuffle": its pixel_unshuffle(2) with a dynamic batch, Unsqueeze -> Reshape [0, 0, -1, 2, 0] -> Reshape [0, 0,
    0, 0, -1, 2] -> Transpose -> Reshape [0, -1, 1, 1, 0, 0] -> Squeeze (channel k becomes 4k ... 4k + 3)."""
    g = G.G(0)
    i64 = lambda name, v: g.init(name, np.array(v, np.int64))  # noqa: E731
    h = g.op("Relu", "r1", [g.conv("x", "c1", 1, 4, pad=1)])
    if kind.startswith("repeat"):
        t = g.op("Tile", "tile", [g.op("Unsqueeze", "u", [h, i64("ax2", [2])]), i64("reps", [1, 1, 2, 1, 1])])
        if kind == "repeat":
            shape = g.op("Shape", "t_shape", [t])
            target = g.op("Concat", "target", [g.op("Slice", "n", [shape, i64("s0", [0]), i64("e0", [1])]),
                                               i64("minus", [-1]),
                                               g.op("Slice", "hw", [shape, i64("s3", [3]), i64("e5", [5])])], axis=0)
        else:
            target = i64("target", [0, 8, 6, 6])
        h, c = g.op("Reshape", "merge", [t, target]), 8
    else:
        h = g.op("Unsqueeze", "u", [h, i64("ax3", [3])])
        h = g.op("Reshape", "rows", [h, i64("t1", [0, 0, -1, 2, 0])])
        h = g.op("Reshape", "cols", [h, i64("t2", [0, 0, 0, 0, -1, 2])])
        h = g.op("Transpose", "perm", [h], perm=[0, 1, 3, 5, 2, 4])
        h = g.op("Reshape", "merge", [h, i64("t3", [0, -1, 1, 1, 0, 0])])
        h, c = g.op("Squeeze", "sq", [h, i64("ax23", [2, 3])]), 16
    G._head(g, g.op("Relu", "r2", [g.conv(h, "c2", c, 5, pad=1)]), 5)
    return g.model({"x": ["N", 1, 6, 6]}, {"y": ["N", 3]})


@pytest.mark.parametrize("kind, kept", [("repeat", (3, 6)), ("repeat-constant", (3, 6)), ("unshuffle", (3, 12))])
def test_dead_channels_go_through_a_reshape_that_merges_them_with_the_axes_after_them(kind, kept):
    """Sweep 40: torch legacy's repeat_interleave of the channels (a computed shape with a -1 for them) and its
    pixel_unshuffle with a dynamic batch (a 0 for the batch, a -1 for the channels) kept every channel before them
    ("not a flattening Reshape, nor one that ... merges it with the axes after it"). Channel k becomes the m
    consecutive channels k*m ... k*m+m-1; a dead one goes with its copies, a constant count is rewritten."""
    m = G.zero(G.zero(_merged_channels(kind), "c1.weight", 0, [1]), "c1.bias", 0, [1])
    out, report, shp = prune(m)
    assert shp["c1.weight"] == (kept[0], 1, 3, 3) and shp["c2.weight"] == (5, kept[1], 3, 3), channels(report)
    onnx.checker.check_model(out, full_check=True)


@pytest.mark.parametrize("multiplier, pad", [(1, 1), (2, 1), (2, 0)])
def test_a_zero_channel_through_a_padded_depthwise_conv_is_its_bias_and_goes(multiplier, pad):
    """Sweep 40: Keras' SeparableConv1D(padding="same") after a layer with dead channels kept them without a word: the
    depthwise filters of a channel are members of its class, and a padded depthwise Conv gave them no known value, so
    the pointwise Conv after it read them as varying. A channel that is 0 everywhere gives the filters' bias, padded or
    not (a constant one only unpadded)."""
    dead = [1, 3, 5, 6]  # 8 -> 4: the pointwise Conv's input stays a multiple of 4 (`_keep_aligned`)
    m = G.zero(G.zero(G.depthwise_separable(multiplier=multiplier, pad=pad), "pw0.weight", 0, dead), "pw0.bias", 0,
               dead)
    out, report, shp = prune(m)
    c = 4 * multiplier
    assert shp["pw0.weight"] == (4, 3, 1, 1) and shp["dw.weight"] == (c, 1, 3, 3) and shp["pw1.weight"] == (6, c, 1, 1)


def _unflattened(target) -> onnx.ModelProto:
    """Gemm 8 -> 24 -> Relu -> Reshape to `target` (nn.Unflatten(1, (6, 2, 2)): map channel j is units 4j ... 4j+3)
    -> Conv 6 -> 5 -> Relu -> head 'y' [N, 3]."""
    g = G.G(0)
    h = g.op("Relu", "r1", [g.gemm("x", "fc", 8, 24)])
    h = g.op("Reshape", "unflatten", [h, g.init("target", np.array(target, np.int64))])
    G._head(g, g.op("Relu", "r2", [g.conv(h, "c2", 6, 5, pad=1)]), 5)
    return g.model({"x": ["N", 8]}, {"y": ["N", 3]})


@pytest.mark.parametrize("target", [[-1, 6, 2, 2], [0, 6, 2, 2], [0, -1, 2, 2]])
def test_dead_units_go_through_a_reshape_that_splits_them_into_map_channels(target):
    """Sweep 41: a Linear's units unflattened into a conv map (torch's nn.Unflatten(1, (16, 4, 4)), dynamo's Reshape
    to [-1, 16, 4, 4]) kept every unit ("not a flattening Reshape ... it splits the channels"). A map channel's
    units are one class: a block all dead goes with its map channel; a block with one live unit stays whole."""
    dead = [4, 5, 6, 7, 16, 17]  # block 1 whole, half of block 4
    m = G.zero(G.zero(_unflattened(target), "fc.weight", 0, dead), "fc.bias", 0, dead)
    out, report, shp = prune(m)
    assert shp["fc.weight"] == (20, 8) and shp["c2.weight"] == (5, 5, 3, 3), channels(report)
    w = G.init(out, "fc.weight")  # block 4 (now units 12 ... 15): its dead units stay beside its live ones
    assert not w[12:14].any() and w[14:16].all()
    onnx.checker.check_model(out, full_check=True)


def test_units_with_zero_weights_inside_a_loop_body_are_said_to_stay():
    """Sweep 41: a Keras SimpleRNN stack (tf2onnx: a Loop per layer) with 4 hidden units zeroed kept them and the run
    said nothing: the walk does not enter bodies. The shrink's notes now count them by layer."""
    from onnxprune.models.third_party_builders import carried_loop_rnn

    _body_units_said(carried_loop_rnn, "R", (8, 8), "MatMul '/body/MatMul_1'")


def test_zero_columns_of_a_table_a_loop_body_reads_are_said_to_stay():
    """Sweep 42: torch legacy's `nn.EmbeddingBag(mode="max")` is a Loop over the bags whose body Gathers the table; 4
    of its columns zeroed were kept and the run said nothing (dynamo's Loop said "read inside a subgraph")."""
    from onnxprune.models.third_party_builders import loop_embedding_bag

    _body_units_said(loop_embedding_bag, "emb.weight", (12, 4), "Gather '/emb/Gather_5'", units=[0, 2])


def _body_units_said(build, weight, shape, layer, units=(0, 1)):
    """Two units of `weight` (axis 1) zeroed inside a body: kept, the model unchanged, and said by `layer`; none
    zeroed, nothing said."""
    state = PruneState()
    m = G.zero(build(), weight, 1, list(units))
    result = run_passes([RemoveDeadNeurons()], m, state)
    G.assert_same(m, result.model)
    assert G.shapes(result.model)[weight] == shape
    assert any(f"2 output unit(s) with all-zero weights kept in layers inside Loop/Scan/If bodies ({layer}: 2)" in n
               for n in state.notes), state.notes
    state = PruneState()
    run_passes([RemoveDeadNeurons()], build(), state)
    assert not any("inside Loop" in n for n in state.notes)


def _unrolled_rnn_cell(steps: int = 3, features: int = 5, hidden: int = 6) -> onnx.ModelProto:
    """torch's nn.RNNCell unrolled as its legacy export writes it: h0 = ConstantOfShape(Concat(Shape(x)[0], [H])),
    then for each step h = Tanh(Gemm(x_t, W_ih, b_ih) + Gemm(h, W_hh, b_hh)), both weights shared by every step ->
    Gemm head 'y' [N, 3]."""
    g = G.G(0)
    i64 = lambda name, v: g.init(name, np.array(v, np.int64))  # noqa: E731
    n = g.op("Unsqueeze", "n", [g.op("Gather", "n0", [g.op("Shape", "x_shape", ["x"]), i64("zero", 0)]),
                                i64("ax0", [0])])
    h = g.op("ConstantOfShape", "h0", [g.op("Concat", "h0_shape", [n, i64("width", [hidden])], axis=0)])
    w_ih, w_hh = g.weight("cell.weight_ih", (hidden, features), features), g.weight("cell.weight_hh", (hidden, hidden),
                                                                                     hidden)
    b_ih, b_hh = g.bias("cell.bias_ih", hidden), g.bias("cell.bias_hh", hidden)
    for t in range(steps):
        xt = g.op("Gather", f"x{t}", ["x", i64(f"t{t}", t)], axis=1)
        a = g.op("Gemm", f"ih{t}", [xt, w_ih, b_ih], transB=1)
        h = g.op("Tanh", f"step{t}", [g.op("Add", f"s{t}", [a, g.op("Gemm", f"hh{t}", [h, w_hh, b_hh], transB=1)])])
    g.gemm(h, "fc", hidden, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", steps, features]}, {"y": ["N", 3]})


def test_an_unrolled_rnn_cells_dead_hidden_units_go_with_its_zero_initial_state():
    """Sweep 40: nn.RNNCell unrolled over the rows kept its dead hidden units: the first step's Gemm reads W_hh with
    h0 = torch.zeros(N, H), a ConstantOfShape that carried no channels ("'cell.weight_hh' is shared with a reader whose
    input there carries no channels followed"). Zeros of a shape ending in a constant count, read only by Gemm/MatMul
    layers, take the classes the shared weight ties them to, and their count is rewritten."""
    m = _unrolled_rnn_cell()
    for name, axis in (("cell.weight_ih", 0), ("cell.weight_hh", 0), ("cell.bias_ih", 0), ("cell.bias_hh", 0)):
        m = G.zero(m, name, axis, [1, 4])
    out, report, shp = prune(m)
    assert shp["cell.weight_ih"] == (4, 5) and shp["cell.weight_hh"] == (4, 4) and shp["fc.weight"] == (3, 4)
    assert not [line for line in report.lines() if "ConstantOfShape" in line], report.lines()
    onnx.checker.check_model(out, full_check=True)
    m.graph.node.append(onnx.helper.make_node("ReduceSum", ["h0_out"], ["h0_sum"], keepdims=0))  # read otherwise too
    m.graph.output.append(onnx.helper.make_tensor_value_info("h0_sum", onnx.TensorProto.FLOAT, []))
    out, report, shp = prune(m)
    assert shp["cell.weight_hh"] == (6, 6)


def test_every_registered_pass_step_and_backend_is_a_class_named_as_filed():
    """A helper's function put between the registration and the class (sweep 41's merge) filed the function under
    'dead-neurons' and left the class named 'pass' in every failure message."""
    import onnxprune.converter.plan  # noqa: F401  (imports every step and pass module)
    from onnxprune.converter.auto.recovery import RECOVERY
    from onnxprune.converter.steps.base import STEPS
    from onnxprune.passes.base import PASSES
    from onnxprune.passes.dead_neurons import RemoveDeadNeurons

    assert PASSES["dead-neurons"] is RemoveDeadNeurons and RemoveDeadNeurons.name == "dead-neurons"
    for table in (PASSES, STEPS, RECOVERY):
        for name, cls in table.items():
            assert isinstance(cls, type) and cls.name == name, (name, cls)


def test_dead_and_constant_channels_pass_a_topk_over_time_and_stay_where_it_selects_across_them():
    """Sweep 43: a sort's middle as a median pool (torch legacy and dynamo write TopK) kept every dead channel before
    it ("consumer TopK ... (op TopK) has no channel rule"), as a text CNN's k-max pooling would. Over an axis other
    than the channels each channel's k largest are its own: dead filters go, a constant one (bias 0.5) is folded into
    the head's bias at its k positions; onnxruntime's outputs on seeded inputs stay the same. Along the channel axis,
    or with its indices read, the channels stay, said."""
    from onnxprune.models.third_party_builders import kmax_text_cnn

    def dead(m):
        G.zero(m, "conv.weight", 0, [1, 2, 6])
        G.set_init(m, "conv.bias", np.where(np.isin(np.arange(8), [1, 2]), 0.0,
                                            np.where(np.arange(8) == 6, 0.5, G.init(m, "conv.bias"))))
        return m

    m = dead(kmax_text_cnn())
    b = G.init(m, "fc.bias")
    out, report, shp = prune(m)  # onnxruntime's outputs on seeded inputs equal
    onnx.checker.check_model(out, full_check=True)
    assert shp["conv.weight"] == (5, 4, 3) and shp["fc.weight"] == (3, 15) and report.removed == 3
    assert not np.allclose(G.init(out, "fc.bias"), b)  # 0.5 times fc's columns of filter 6 went in
    for kwargs, why in (({"axis": 1}, "selects across the channels"), ({"indices": True}, "uses its indices output")):
        out, report, shp = prune(dead(kmax_text_cnn(**kwargs)))
        assert shp["conv.weight"] == (8, 4, 3) and report.removed == 0
        assert any("TopK" in line and why in line for line in report.lines()), report.lines()


@pytest.mark.parametrize("op", ["SimplifiedLayerNormalization", "RMSNormalization"])
def test_an_rms_norm_across_the_channels_keeps_them_and_says_why_and_one_after_them_passes_zeros(op):
    """Sweep 43: onnxruntime's SimplifiedLayerNormalization (its RMSNorm, written in the ai.onnx domain) kept dead
    units "(op SimplifiedLayerNormalization) has no channel rule", as ONNX's RMSNormalization (opset 23) would: right
    to keep (a removed unit, even 0, changes the root mean square), said as LayerNormalization's is. Over axes after
    the channels (a map's [H, W]) each channel is normalized apart: a dead one stays 0 and goes; onnxruntime's outputs
    on seeded inputs stay the same."""
    from onnxprune.models.third_party_builders import rms_normalized_mlp

    def shrunk(m):  # onnx's checker does not know onnxruntime's op: onnxruntime's outputs on seeded inputs equal
        out, report = remove_dead_neurons(m)
        assert_same_outputs(out, m)
        if op == "RMSNormalization":
            onnx.checker.check_model(out, full_check=True)
        return out, report, G.shapes(out)

    m = rms_normalized_mlp()
    norm = next(n for n in m.graph.node if n.op_type == "SimplifiedLayerNormalization")
    if op == "RMSNormalization":
        norm.op_type = op
        m.opset_import[0].version = 23
    G.zero(m, "fc1.weight", 1, [1, 2])
    G.set_init(m, "fc1.bias", np.where(np.isin(np.arange(8), [1, 2]), 0.0, G.init(m, "fc1.bias")))
    out, report, shp = shrunk(m)
    assert shp["fc1.weight"] == (6, 8) and report.removed == 0
    assert any("normalizes across the channels" in line and "root mean square" in line for line in report.lines())
    g = G.G(2)  # 'x' [N, 2, 4, 4] -> Conv (2->6) -> RMS norm over [H, W] (scale [4, 4]) -> Conv 1x1 (6->3) -> 'y'
    h = g.conv("x", "c1", 2, 6, 3, pad=1)
    scale = g.init("norm.scale", (0.5 + np.abs(g.rng.standard_normal((4, 4)))).astype(np.float32))
    h = g.op(op, "norm", [h, scale], axis=2)
    g.conv(h, "c2", 6, 3, 1)
    g.nodes[-1].output[0] = "y"
    m = g.model({"x": ["N", 2, 4, 4]}, {"y": ["N", 3, 4, 4]})
    m.opset_import[0].version = 23
    if op == "SimplifiedLayerNormalization":
        m.opset_import[0].version = 17
    G.zero(m, "c1.weight", 0, [0, 4])
    G.set_init(m, "c1.bias", np.where(np.isin(np.arange(6), [0, 4]), 0.0, G.init(m, "c1.bias")))
    out, report, shp = shrunk(m)
    assert shp["c1.weight"] == (4, 2, 3, 3) and shp["c2.weight"] == (3, 4, 1, 1) and report.removed == 2


def _pooled_head(nodes, inits, pooled: str, name: str, features: int = 5):
    """`nodes` over x [N, 4, features], then `pooled` averaged over axis 1 (the initializer 'axis1') and a head
    'head.weight' to y [N, 3]; pruned by this file's `prune` and checked in full."""
    h = onnx.helper
    nodes = nodes + [h.make_node("ReduceMean", [pooled, "axis1"], ["pooled_mean"], keepdims=0),
                     h.make_node("MatMul", ["pooled_mean", "head.weight"], ["y"])]
    graph = h.make_graph(nodes, name, [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4, features])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])], inits)
    out, report, shp = prune(h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], ir_version=8))
    onnx.checker.check_model(out, full_check=True)
    return out, report, shp


def test_dead_value_units_go_through_attention_and_an_attention_free_quotient():
    """Sweep 46: a MatMul of a computed matrix that carries no channels (attention's probabilities P) by values that
    carry them on the last axis kept every dead value unit ("consumer MatMul ... has no constant 2-D weight"); and an
    attention-free transformer's (P @ (exp(k) * v)) / (P @ exp(k)) kept them once that passed: 0 over a varying sum
    was taken to vary. Column j of P @ v is P @ v[..., j] and 0 / d is 0, so v's dead units 1 and 5 go, with k's
    (one class through exp(k) * v) and the head's rows; onnxruntime's outputs on seeded inputs stay the same."""
    rng, h = np.random.default_rng(0), onnx.helper
    w = {n: rng.standard_normal((6, 8)).astype(np.float32) for n in ("q", "t", "k", "v")}
    w["v"][:, [1, 5]] = 0
    bv = np.where(np.isin(np.arange(8), [1, 5]), 0.0, 0.1).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(a, f"{n}.weight") for n, a in w.items()] + [
        onnx.numpy_helper.from_array(bv, "v.bias"), onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        onnx.numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "head.weight")]
    nodes = [h.make_node("MatMul", ["x", f"{n}.weight"], [n]) for n in ("q", "t", "k")] + [
        h.make_node("MatMul", ["x", "v.weight"], ["v0"]), h.make_node("Add", ["v0", "v.bias"], ["v"]),
        h.make_node("Transpose", ["t"], ["tT"], perm=[0, 2, 1]), h.make_node("MatMul", ["q", "tT"], ["s"]),
        h.make_node("Softmax", ["s"], ["P"], axis=-1), h.make_node("MatMul", ["P", "v"], ["a"]),  # attention
        h.make_node("Exp", ["k"], ["e"]), h.make_node("Mul", ["e", "v"], ["ev"]),  # attention-free
        h.make_node("MatMul", ["P", "ev"], ["num"]), h.make_node("MatMul", ["P", "e"], ["den"]),
        h.make_node("Div", ["num", "den"], ["r"]), h.make_node("Add", ["a", "r"], ["ar"])]
    out, report, shp = _pooled_head(nodes, inits, "ar", "aft", features=6)
    assert shp["v.weight"] == (6, 6) and shp["v.bias"] == (6,) and shp["k.weight"] == (6, 6)
    assert shp["head.weight"] == (6, 3) and shp["q.weight"] == (6, 8) and shp["t.weight"] == (6, 8)


def test_dead_value_units_go_through_an_einsum_weighted_sum():
    """Sweep 47: criss-cross attention's `einsum("nhwv,nchv->nchw", P, v)` (dynamo keeps the Einsum) kept every dead
    value channel: "consumer Einsum ... (op Einsum) has no channel rule". Output channel c is P times v's channel c,
    so v's dead units 1 and 4 go with the head's rows; the scores' Einsum `"ntc,nuc->ntu"` pairs q's and k's channels
    and keeps theirs, said; onnxruntime's outputs on seeded inputs stay the same."""
    rng, h = np.random.default_rng(0), onnx.helper
    w = {n: rng.standard_normal((5, 6)).astype(np.float32) for n in ("q", "k", "v")}
    w["v"][:, [1, 4]] = 0
    w["q"][:, [2]] = 0
    inits = [onnx.numpy_helper.from_array(a, f"{n}.weight") for n, a in w.items()] + [
        onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        onnx.numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "head.weight")]
    nodes = [h.make_node("MatMul", ["x", f"{n}.weight"], [n]) for n in ("q", "k", "v")] + [
        h.make_node("Einsum", ["q", "k"], ["s"], equation="ntc,nuc->ntu"),
        h.make_node("Softmax", ["s"], ["P"], axis=-1),
        h.make_node("Einsum", ["P", "v"], ["a"], equation="ntu,nuc->ntc")]
    out, report, shp = _pooled_head(nodes, inits, "a", "einsum_attention")
    assert shp["v.weight"] == (5, 4) and shp["head.weight"] == (4, 3)
    assert shp["q.weight"] == (5, 6) and shp["k.weight"] == (5, 6)  # paired by the scores' Einsum: kept
    assert any("Einsum" in why and "multiplies 2 operands that carry channels ('ntc,nuc->ntu')" in why
               for why in report.blocked), report.blocked


def test_a_matmul_of_two_operands_that_carry_channels_says_so():
    """Sweep 47's TokenLearner: tokens = sigmoid(maps) @ features, both computed and both carrying channels (the maps'
    on the rows, the features' on the columns); the features' dead channels were kept "consumer MatMul ... has no
    constant 2-D weight", which since sweep 46's weighted sum is not why. Kept, said as what it is."""
    rng, h = np.random.default_rng(0), onnx.helper
    w = {n: rng.standard_normal((5, 6)).astype(np.float32) for n in ("maps", "feat")}
    w["feat"][:, [1, 4]] = 0
    inits = [onnx.numpy_helper.from_array(a, f"{n}.weight") for n, a in w.items()] + [
        onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        onnx.numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "head.weight")]
    nodes = [h.make_node("MatMul", ["x", "maps.weight"], ["m0"]), h.make_node("Sigmoid", ["m0"], ["m1"]),
             h.make_node("Transpose", ["m1"], ["m"], perm=[0, 2, 1]),
             h.make_node("MatMul", ["x", "feat.weight"], ["f"]), h.make_node("MatMul", ["m", "f"], ["tok"])]
    out, report, shp = _pooled_head(nodes, inits, "tok", "token_learner")
    assert shp["feat.weight"] == (5, 6)
    assert any("consumer MatMul" in why and "multiplies 2 operands that carry channels" in why
               for why in report.blocked), report.blocked
    assert not any("has no constant 2-D weight" in why for why in report.blocked), report.blocked


def test_dead_units_kept_in_a_class_alive_through_a_residual_stream_are_said():
    """Sweep 47: criss-cross attention's dead value channels, added by P·v to a residual stream whose channels live,
    were kept without a word once the Einsum passed them (before, the Einsum's "no channel rule" said something).
    They are kept (the stream's channel is read), and said; the stream's own dead units go with v's."""
    rng, h = np.random.default_rng(0), onnx.helper
    w = {n: rng.standard_normal((5, 6)).astype(np.float32) for n in ("s", "v")}
    w["v"][:, [1, 4]] = 0
    w["s"][:, [4]] = 0
    inits = [onnx.numpy_helper.from_array(a, f"{n}.weight") for n, a in w.items()] + [
        onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        onnx.numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "head.weight")]
    nodes = [h.make_node("MatMul", ["x", f"{n}.weight"], [n], name=n) for n in ("s", "v")] + [
        h.make_node("Einsum", ["x", "x"], ["g"], equation="ntd,nud->ntu"),
        h.make_node("Softmax", ["g"], ["P"], axis=-1),
        h.make_node("Einsum", ["P", "v"], ["a"], equation="ntu,nuc->ntc"), h.make_node("Add", ["s", "a"], ["r"])]
    out, report, shp = _pooled_head(nodes, inits, "r", "residual_attention")
    assert shp["v.weight"] == (5, 5) and shp["s.weight"] == (5, 5) and shp["head.weight"] == (5, 3)  # unit 4 went
    said = [why for why in report.blocked if "whose weights are all zero are kept" in why]
    assert len(said) == 1 and said[0].startswith("1 unit(s) ") and said[0].endswith("MatMul 'v' 1"), report.blocked


def test_dead_channels_go_through_gem_pooling_whose_exponent_is_computed_from_a_learned_p():
    """Sweep 47's GeM pooling, (mean clamp(x, 1e-6)^p)^(1/p) with p learned: torch's legacy export computes 1/p as
    Mul(Reciprocal(p), 1), and the second Pow kept every dead channel ("raises to a power that is not one constant").
    A dead channel is 1e-6 after the Clip and after both powers, a constant the head folds into its bias: it goes."""
    rng, h = np.random.default_rng(0), onnx.helper
    wc = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    bc = np.full(4, 0.1, np.float32)
    wc[[1, 3]] = 0
    bc[[1, 3]] = 0
    inits = [onnx.numpy_helper.from_array(wc, "c.weight"), onnx.numpy_helper.from_array(bc, "c.bias"),
             onnx.numpy_helper.from_array(np.array(3.0, np.float32), "p"),
             onnx.numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
             onnx.numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             onnx.numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "head.weight"),
             onnx.numpy_helper.from_array(np.zeros(3, np.float32), "head.bias")]
    nodes = [h.make_node("Conv", ["x", "c.weight", "c.bias"], ["c"], pads=[1, 1, 1, 1], name="c"),
             h.make_node("Relu", ["c"], ["r"]), h.make_node("Clip", ["r", "eps", ""], ["k"]),
             h.make_node("Pow", ["k", "p"], ["kp"]), h.make_node("GlobalAveragePool", ["kp"], ["m"]),
             h.make_node("Reciprocal", ["p"], ["ip"]), h.make_node("Mul", ["ip", "one"], ["e"]),
             h.make_node("Pow", ["m", "e"], ["g"]), h.make_node("Flatten", ["g"], ["f"]),
             h.make_node("Gemm", ["f", "head.weight", "head.bias"], ["y"], transB=1)]
    graph = h.make_graph(nodes, "gem", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2, 5, 5])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])], inits)
    out, report, shp = prune(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8))
    onnx.checker.check_model(out, full_check=True)
    assert shp["c.weight"] == (2, 2, 3, 3) and shp["head.weight"] == (3, 2), report.blocked
    assert report.folded == 2 and not any("Pow" in why for why in report.blocked), report.blocked


def _batch_ensemble(member_op: str = "Mul"):
    """x [N, f] -> Unsqueeze -> * r [m, f] -> MatMul w1 -> + b1 -> `member_op` s [m, hid] -> Relu -> MatMul w2 -> + b2
    -> ReduceMean over the m members -> y [N, k]: units 1 and 3 of w1 (and b1) zero."""
    rng, h = np.random.default_rng(0), onnx.helper
    f, hid, m, k = 6, 5, 3, 4
    w1 = rng.standard_normal((f, hid)).astype(np.float32)
    b1 = np.full(hid, 0.1, np.float32)
    w1[:, [1, 3]] = 0
    b1[[1, 3]] = 0
    arrays = {"r": 1 + 0.1 * rng.standard_normal((m, f)), "w1": w1, "b1": b1,
              "s": 1 + 0.1 * rng.standard_normal((m, hid)), "w2": rng.standard_normal((hid, k)), "b2": np.zeros(k),
              "axis": np.array([1], np.int64)}
    inits = [onnx.numpy_helper.from_array(a if a.dtype == np.int64 else a.astype(np.float32), n)
             for n, a in arrays.items()]
    nodes = [h.make_node("Unsqueeze", ["x", "axis"], ["x1"]), h.make_node("Mul", ["x1", "r"], ["xr"]),
             h.make_node("MatMul", ["xr", "w1"], ["a"], name="fc1"), h.make_node("Add", ["a", "b1"], ["ab"]),
             h.make_node(member_op, ["ab", "s"], ["as"]), h.make_node("Relu", ["as"], ["hr"]),
             h.make_node("MatMul", ["hr", "w2"], ["o"], name="fc2"), h.make_node("Add", ["o", "b2"], ["ob"]),
             h.make_node("ReduceMean", ["ob", "axis"], ["y"], keepdims=0)]
    graph = h.make_graph(nodes, "batch_ensemble", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", f])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", k])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], ir_version=8)


def test_dead_units_alone_in_their_class_are_not_said_to_live_through_another_channel():
    """A zero-weight unit a per-member bias s [m, hid] is added to holds a different value per member, which the next
    layer reads: it stays, but not "in a class that stays alive through another of its channels (a residual
    stream's ...)" (sweep 48's BatchEnsemble before its Mul was followed): it is a class of its own."""
    out, report, shp = prune(_batch_ensemble("Add"))
    onnx.checker.check_model(out, full_check=True)
    assert shp["w1"] == (6, 5)
    said = [line for line in report.blocked if "weights are all zero are kept" in line]
    assert len(said) == 1 and "a later layer reads them" in said[0] and "MatMul 'fc1' 2" in said[0], said
    assert "residual stream" not in said[0]


def test_dead_units_go_through_a_per_member_scale_that_varies_along_another_axis():
    """Sweep 48's BatchEnsemble: each of m members scales the shared layer's units by its own s [m, H], so the
    constant varies along the member axis as well as the channels; 0 times it was "not known" (NaN), and dead units
    of the shared layer were kept, said as "in a class that stays alive through another of its channels (a residual
    stream's ...)", though each was a class of its own. A unit that is 0 stays 0 times any finite factor: it goes,
    with its column of s and its row of the next layer."""
    f, m, k = 6, 3, 4
    out, report, shp = prune(_batch_ensemble("Mul"))
    onnx.checker.check_model(out, full_check=True)
    assert shp["w1"] == (f, 3) and shp["s"] == (m, 3) and shp["w2"] == (3, k), report.blocked


def test_dead_channels_go_through_a_product_with_a_one_channel_factor():
    """Sweep 48's partial convolution: the image branch's Conv (4 channels) times the coverage ratio, a Conv of the
    hole mask by a ones kernel (one channel), which broadcasts over them. "Mul ... combines tensors whose channels do
    not line up" kept every dead channel; 0 times the shared factor stays 0, so channels 1 and 3 go with the head's
    columns, and the one-channel coverage Conv stays."""
    rng, h = np.random.default_rng(0), onnx.helper
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    bias = np.full((1, 4, 1, 1), 0.1, np.float32)
    w[[1, 3]] = 0
    bias[:, [1, 3]] = 0
    arrays = {"c.weight": w, "c.bias": bias, "ones": np.ones((1, 1, 3, 3), np.float32),
              "nine": np.array(9.0, np.float32), "one": np.array(1.0, np.float32),
              "head.weight": rng.standard_normal((3, 4)).astype(np.float32), "head.bias": np.zeros(3, np.float32)}
    inits = [onnx.numpy_helper.from_array(a, n) for n, a in arrays.items()]
    nodes = [h.make_node("Conv", ["mask", "ones"], ["cov"], pads=[1, 1, 1, 1], name="coverage"),
             h.make_node("Clip", ["cov", "one", ""], ["covc"]), h.make_node("Div", ["nine", "covc"], ["ratio"]),
             h.make_node("Mul", ["x", "mask"], ["xm"]),
             h.make_node("Conv", ["xm", "c.weight"], ["raw"], pads=[1, 1, 1, 1], name="c"),
             h.make_node("Mul", ["raw", "ratio"], ["scaled"]), h.make_node("Add", ["scaled", "c.bias"], ["hb"]),
             h.make_node("Relu", ["hb"], ["r"]), h.make_node("GlobalAveragePool", ["r"], ["p"]),
             h.make_node("Flatten", ["p"], ["f"]),
             h.make_node("Gemm", ["f", "head.weight", "head.bias"], ["y"], transB=1, name="head")]
    graph = h.make_graph(nodes, "partial_conv",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 5, 5]),
                          h.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, ["N", 1, 5, 5])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])], inits)
    out, report, shp = prune(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8))
    onnx.checker.check_model(out, full_check=True)
    assert shp["c.weight"] == (2, 1, 3, 3) and shp["head.weight"] == (3, 2) and shp["ones"] == (1, 1, 3, 3), \
        report.blocked
