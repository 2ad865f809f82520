"""Channel groups as data: which positions of which tensors hold the same class, who reads them, what blocks."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from onnxprune.passes.channel_groups import RULES, build_channel_groups
from onnxprune.passes.shapes import infer_shapes
from tests.passes import _graphs as G


def build(model, **kw):
    return build_channel_groups(gs.import_onnx(model).toposort(), infer_shapes(model), **kw)


def same_classes(cg, a: str, b: str) -> bool:
    return np.array_equal(cg.roots(a), cg.roots(b))


def notes(cg) -> str:
    return "\n".join(cg.notes(set()))


def test_rules_are_a_dict_of_functions_covering_the_documented_ops():
    documented = {"Gemm", "MatMul", "Conv", "ConvTranspose", "Add", "Sub", "Mul", "Div", "BatchNormalization",
                  "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Gelu", "Erf", "HardSwish", "HardSigmoid", "Elu",
                  "Selu", "Softplus", "Identity", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                  "Dropout", "Flatten", "Reshape", "Transpose", "Concat", "Split", "InstanceNormalization", "Shape", "Pad"}
    assert documented <= set(RULES)
    assert all(callable(f) for f in RULES.values())


def test_mlp_layers_each_make_a_group_read_by_the_next_gemm():
    cg = build(G.mlp((20, 12, 10, 4)))
    assert [(l.node, l.weight, len(l.rows)) for l in cg.layers] == [
        ("fc1", "fc1.weight", 12), ("fc2", "fc2.weight", 10), ("fc3", "fc3.weight", 4)]
    assert [(r.node.name, r.tensor, r.rows.shape) for r in cg.reads] == [
        ("fc2", "act1_out", (12, 10)), ("fc3", "act2_out", (10, 4))]
    assert sorted(g.size for g in cg.groups()) == [4, 10, 12]
    assert same_classes(cg, "fc1_out", "act1_out")


def test_gemm_without_trans_b_reads_rows_and_produces_columns():
    cg = build(G.mlp((6, 5, 3), trans_b=0))
    assert [r.rows.shape for r in cg.reads] == [(5, 3)]
    assert [l.rows.shape for l in cg.layers] == [(5, 6), (3, 5)]


def test_matmul_weight_behind_a_transpose_is_the_initializer_itself():
    cg = build(G.matmul_mlp((16, 12, 5), transposed=True))
    assert [l.weight for l in cg.layers] == ["fc1.weight", "fc2.weight"]
    assert same_classes(cg, "fc1_out", "act1_out")  # through the bias Add and the Relu
    assert cg.channels["fc1_out"].axis == -1 and not cg.blocks[:-1]


def test_flatten_turns_a_conv_channel_into_a_block_of_hw_features():
    cg = build(G.lenet5())
    c2, flat = cg.roots("c2_out"), cg.roots("flat_out")
    assert len(flat) == 256
    assert np.array_equal(flat, np.repeat(c2, 16))
    assert same_classes(cg, "c2_out", "p2_out")  # BN, Relu, MaxPool carry the class


def test_flattening_reshape_works_like_flatten():
    cg = build(G.lenet5(flatten="Reshape"))
    assert np.array_equal(cg.roots("flat_out"), np.repeat(cg.roots("c2_out"), 16))


def test_residual_add_merges_the_two_producers_into_one_class_per_channel():
    cg = build(G.residual())
    assert same_classes(cg, "stem_out", "b_out")
    assert same_classes(cg, "stem_out", "res_relu_out")
    assert not same_classes(cg, "stem_out", "a_out")
    merged = [g for g in cg.groups() if "stem_out" in g.tensors][0]
    assert merged.size == 8 and {l.node for l in merged.layers} == {"stem", "b"}
    assert {r.node.name for r in merged.reads} == {"a", "head"}


def test_concat_maps_by_offset_and_split_slices_by_offset():
    cg = build(G.concat_split())
    cat = cg.roots("cat_out")
    assert np.array_equal(cat, np.concatenate([cg.roots("p_out"), cg.roots("q_out")]))
    r = cg.roots("r_out")
    assert np.array_equal(cg.roots("split_out"), r[:4]) and np.array_equal(cg.roots("split_out1"), r[4:])
    assert same_classes(cg, "u_out", "v_out")  # the Add after the split merges u and v


def test_depthwise_conv_is_a_member_of_its_input_channels_group():
    cg = build(G.depthwise_separable())
    assert same_classes(cg, "pw0_out", "dw_out")
    assert "dw" not in {r.node.name for r in cg.reads}
    cg2 = build(G.depthwise_separable(multiplier=2))
    assert np.array_equal(cg2.roots("dw_out"), np.repeat(cg2.roots("pw0_out"), 2))


def test_an_op_without_a_rule_blocks_and_the_note_names_it():
    cg = build(G.with_op_between("LpNormalization", axis=1))
    assert set(cg.roots("fc1_out").tolist()) <= cg.blocked()
    assert ("channels of Gemm 'fc1' kept: consumer LpNormalization 'mid' (op LpNormalization) has no channel rule"
            in notes(cg))


def test_a_graph_output_in_the_middle_blocks_its_classes_only():
    cg = build(G.middle_output())
    assert set(cg.roots("act1_out").tolist()) <= cg.blocked()
    assert not set(cg.roots("act2_out").tolist()) & cg.blocked()
    assert "tensor 'act1_out' is a graph output" in notes(cg)


def test_shared_and_protected_initializers_block():
    m = G.mlp((6, 5, 5, 3))
    for node in m.graph.node:  # fc3 reads fc2's weight too
        if node.name == "fc3":
            node.input[1] = "fc2.weight"
            node.input[2] = "fc2.bias"
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    cg = build(m)  # alike readers (branch chan): tied, fc1's, fc2's and fc3's channel k one class
    assert cg.roots("fc1_out").tolist() == cg.roots("fc2_out").tolist() == cg.roots("y").tolist()
    assert "shared" not in notes(cg)
    next(n for n in m.graph.node if n.name == "fc3").attribute.append(onnx.helper.make_attribute("alpha", 0.5))
    cg = build(m)  # unlike readers (another alpha): the weight is frozen
    assert "initializer 'fc2.weight' is shared with 'fc3'" in notes(cg)
    cg = build(G.mlp((6, 5, 4, 3)), protected=frozenset({"fc2.weight"}))
    assert set(cg.roots("fc1_out").tolist()) <= cg.blocked()  # fc2 may not lose rows
    assert "initializer 'fc2.weight' is protected" in notes(cg)


def test_an_initializer_shared_by_many_nodes_names_three_and_counts_the_rest():
    """Sweep 5: torch's dynamo export of nn.RNN unrolls 60 steps that all read 'rnn.bias_hh_l0'; the note listed 60
    node names on one line."""
    from onnxprune.passes.channel_groups.builder import Builder

    const = gs.Constant("w", np.zeros((2, 2), np.float32))
    users = [gs.Node("MatMul", f"step{i}", inputs=[gs.Variable(f"x{i}"), const], outputs=[gs.Variable(f"y{i}")])
             for i in range(8)]
    why = Builder.frozen(type("B", (), {"protected": frozenset()})(), const, users[0])
    assert why == "initializer 'w' is shared with 'step1', 'step2', 'step3' (+4 more)"
    cg = build(G.mlp((6, 5, 4, 3)), protected=frozenset({"act1"}))
    assert "consumer Relu 'act1' is protected" in notes(cg)


def test_constant_values_follow_the_element_wise_chain():
    m = G.zero(G.lenet5(), "c1.weight", 0, [2])
    cg = build(m)
    c1 = G.init(m, "c1.bias")[2]
    s, b, mu, var = (G.init(m, f"bn1.{p}")[2] for p in ("scale", "bias", "mean", "var"))
    bn = (c1 - mu) / np.sqrt(var + 1e-5) * s + b
    assert cg.channels["c1_out"].value[2] == pytest.approx(c1)
    assert cg.channels["p1_out"].value[2] == pytest.approx(max(bn, 0.0), rel=1e-6)
    assert np.isnan(np.delete(cg.channels["p1_out"].value, 2)).all()


def test_gather_inputs_seeds_the_flattened_input_features():
    cg = build(G.lenet5(), gather_inputs=True)
    assert "x" not in cg.channels  # a 4-D input that is not flattened first is left alone
    cg = build(G.mlp((20, 12, 4)), gather_inputs=True)
    assert [l.op for l in cg.layers][0] == "input" and len(cg.channels["x"].ids) == 20
