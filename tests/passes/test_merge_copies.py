"""merge-copies: bit-identical weight copies become one tied weight; outputs unchanged in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxprune import prune
from onnxprune.models import builders
from onnxprune.passes.base import PruneState
from onnxprune.passes.merge_copies import MergeCopies, duplicate_groups
from onnxprune.passes.weights import find_prunable
from tests.oracle import onnxruntime_since, run


def _feed(n=8):
    return {"input": np.random.default_rng(1).standard_normal((n, 16)).astype(np.float32)}


def _init(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def test_copies_merge_into_one_tied_weight_and_the_outputs_stay_bit_identical():
    model = builders.tied_cell(steps=3, copies=True)
    before = run(model, _feed())
    assert duplicate_groups(model) == [["cell.W.0", "cell.W.1", "cell.W.2"]]  # the equal biases are not weights
    state = PruneState()
    merged = MergeCopies()(model, state).model
    onnx.checker.check_model(merged, full_check=True)
    np.testing.assert_array_equal(run(merged, _feed())["output"], before["output"])
    names = {t.name for t in merged.graph.initializer}
    assert "cell.W.0" in names and not {"cell.W.1", "cell.W.2"} & names
    assert {"cell.b.0", "cell.b.1", "cell.b.2"} <= names  # two equal biases merged would block dead neurons
    tied = find_prunable(merged).by_name()["cell.W.0"]
    assert tied.readers == 3
    assert state.notes == ["2 bit-identical copies of 1 weight(s) ('cell.W.0') merged into one tied weight each: "
                           "pruned with one mask, counted once, 1.1 KB less in the file"]


def test_copies_read_differently_all_zero_or_a_graph_output_are_left_alone():
    model = builders.tied_cell(steps=3, copies=True)
    next(n for n in model.graph.node if n.name == "cell1").attribute.append(helper.make_attribute("alpha", 0.5))
    assert duplicate_groups(model) == [["cell.W.0", "cell.W.2"]]  # cell1 reads its copy another way: kept apart

    model = builders.tied_cell(steps=2, copies=True)
    for k in range(2):
        _init(model, f"cell.W.{k}").CopyFrom(numpy_helper.from_array(np.zeros((12, 12), np.float32), f"cell.W.{k}"))
    assert duplicate_groups(model) == []

    model = builders.tied_cell(steps=2, copies=True)
    model.graph.output.append(helper.make_tensor_value_info("cell.W.1", onnx.TensorProto.FLOAT, [12, 12]))
    assert duplicate_groups(model) == []
    assert not MergeCopies()(model, PruneState()).modified


def test_prune_of_copies_gives_one_pruned_weight_that_every_step_reads():
    """The run merges on load: one mask for the three steps, counted once, the written model verified."""
    model = builders.tied_cell(steps=3, copies=True)
    data = _feed(64)
    result = prune(model, data=data, sparsity=0.5)
    final = result.model
    cells = [n for n in final.graph.node if n.name.startswith("cell")]
    assert {n.input[1] for n in cells} == {"cell.W.0"}
    w = numpy_helper.to_array(_init(result.dense_model, "cell.W.0"))
    assert 0.4 < (w == 0).mean() < 0.6
    per_weight = {w.name for w in result.inventory.prunable}
    assert per_weight == {"inp.weight", "cell.W.0", "out.weight"}
    assert result.report["before"]["nonzeros"] == 16 * 12 + 12 * 12 + 12 * 4
    assert any("merged into one tied weight" in n for n in result.state.notes)
    original = {"input": data["input"]}
    ref = run(result.dense_model, original)["output"]
    np.testing.assert_allclose(run(final, original)["output"], ref, rtol=1e-5, atol=1e-5)
    assert {"cell.W.1", "cell.W.2"} <= {t.name for t in model.graph.initializer}  # the caller's model is untouched


def _function_called_twice() -> onnx.ModelProto:
    """A model-local function whose weight is a Constant node, called twice: inlined at load, one copy per call."""
    rng = np.random.default_rng(0)
    block = helper.make_function(
        "local", "Block", ["x"], ["y"],
        [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(
            rng.standard_normal((16, 16)).astype(np.float32), "w")),
         helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        opset_imports=[helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("Block", ["input"], ["a"], domain="local", name="b1"),
         helper.make_node("Block", ["a"], ["b"], domain="local", name="b2"),
         helper.make_node("MatMul", ["b", "head"], ["output"], name="head")], "g",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "head")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                              functions=[block])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


@onnxruntime_since("1.18.1", "a model of IR 10")
def test_a_functions_constant_weight_inlined_per_call_is_one_tied_weight():
    """Inlined, a function called twice held two Constant-node copies of its weight: counted twice ("8.83K -> 4.42K,
    2.00x" where the input's own weights are 4.74K) and written twice (the file 18.8 KB -> 34.8 KB at half the
    weights). Constant-node copies merge as initializer copies do: one weight, one mask, one copy in the file."""
    model = _function_called_twice()
    data = _feed(64)
    result = prune(model, data=data, sparsity=0.5)
    assert {w.name for w in result.inventory.prunable} == {next(iter(
        n.output[0] for n in result.dense_model.graph.node if n.op_type == "Constant")), "head"}
    assert result.report["before"]["nonzeros"] == 16 * 16 + 16 * 4
    assert any("merged into one tied weight" in n for n in result.state.notes)
    final = result.model
    onnx.checker.check_model(final, full_check=True)
    assert len(final.SerializeToString()) < len(model.SerializeToString()) + 1024  # one copy, not two
    original = {"input": data["input"]}
    np.testing.assert_allclose(run(final, original)["output"], run(result.dense_model, original)["output"],
                               rtol=1e-5, atol=1e-5)


@onnxruntime_since("1.18.1", "a model of IR 10")
def test_constant_node_copies_in_the_main_graph_merge_and_read_the_first():
    """Two Constant nodes with the same weight, each read by its own MatMul, become one: the second node goes and
    its reader reads the first's output; the outputs stay bit-identical."""
    from onnxprune.converter.modelio import inline_functions

    model = inline_functions(_function_called_twice())[0]
    constants = [n for n in model.graph.node if n.op_type == "Constant"]
    assert len(constants) == 2
    groups = duplicate_groups(model)
    assert groups == [[constants[0].output[0], constants[1].output[0]]]
    before = run(model, _feed())
    merged = MergeCopies()(model, PruneState()).model
    onnx.checker.check_model(merged, full_check=True)
    assert [n.output[0] for n in merged.graph.node if n.op_type == "Constant"] == [constants[0].output[0]]
    np.testing.assert_array_equal(run(merged, _feed())["output"], before["output"])


def test_an_identity_per_use_is_bypassed_so_the_weight_is_one_tied_weight():
    """torch's legacy exporter: W -> Identity -> Gemm once per use (ALBERT's shared layers, sweep 6: 84% of the
    weights refused as "shared with node 'Identity_147'"). Read directly, W is one tied weight; outputs unchanged."""
    from onnxprune.passes.bypass_identity import BypassIdentity, weight_identities

    model = builders.tied_cell(steps=3)
    for k, node in enumerate([n for n in model.graph.node if n.name.startswith("cell")]):
        node.input[1] = f"cell.W.id{k}"
        model.graph.node.insert(0, helper.make_node("Identity", ["cell.W"], [f"cell.W.id{k}"], name=f"Identity_{k}"))
    onnx.checker.check_model(model, full_check=True)
    assert "cell.W" not in find_prunable(model).by_name()
    before = run(model, _feed())
    assert weight_identities(model) == {f"cell.W.id{k}": "cell.W" for k in range(3)}
    out = BypassIdentity()(model, PruneState()).model
    onnx.checker.check_model(out, full_check=True)
    np.testing.assert_array_equal(run(out, _feed())["output"], before["output"])
    assert not [n for n in out.graph.node if n.op_type == "Identity"]
    assert find_prunable(out).by_name()["cell.W"].readers == 3
    fresh = builders.tied_cell(steps=1)
    fresh.graph.node.insert(0, helper.make_node("Identity", ["cell.W"], ["w_out"], name="Identity_out"))
    fresh.graph.output.append(helper.make_tensor_value_info("w_out", onnx.TensorProto.FLOAT, [12, 12]))
    assert weight_identities(fresh) == {}  # an Identity that is also a graph output stays


def test_a_bias_an_identity_shares_becomes_each_layers_own_so_dead_channels_go_and_the_refit_fits_it():
    """Sweep 21's torchvision FCOS (legacy export): the head's eight zero Conv biases were one initializer, seven
    layers reading it through an Identity. Dead-neuron removal kept every channel of those layers ("shared with
    'Identity_212', ...") and the refit left seven weights as pruned ("its bias ... is computed by the graph").
    Copied per reader at load, each layer owns its bias: outputs unchanged, a dead channel of both layers goes."""
    from onnxprune.converter.reconstruct import _computed_bias
    from onnxprune.passes.bypass_identity import BypassIdentity, bias_identities
    from onnxprune.passes.dead_neurons import remove_dead_neurons
    from tests.passes import _graphs as G

    g = G.G(seed=1)
    a = g.op("Relu", "a_relu", [g.conv("x", "a", 3, 4, 3, pad=1)])
    g.op("Identity", "Identity_1", ["a.bias"])
    w = g.weight("b.weight", (4, 4, 3, 3), 36)
    b = g.op("Relu", "b_relu", [g.op("Conv", "b", [a, w, "Identity_1_out"], pads=[1] * 4, kernel_shape=[3, 3])])
    x = g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [b])])
    g.gemm(x, "head", 4, 3)
    g.nodes[-1].output[0] = "y"
    model = g.model({"x": ["N", 3, 6, 6]}, {"y": ["N", 3]})
    G.zero(model, "b.weight", 1, [2])  # a's channel 2 is read by nobody (kind a)
    G.zero(model, "head.weight", 1, [1])  # b's channel 1 is read by nobody
    onnx.checker.check_model(model, full_check=True)
    _, report = remove_dead_neurons(model)
    assert report.removed == 0 and any("is shared with 'Identity_1'" in line for line in report.lines())
    assert bias_identities(model) == {"Identity_1_out": "a.bias"}
    before = onnx.ModelProto()
    before.CopyFrom(model)
    out = BypassIdentity()(model, PruneState()).model
    onnx.checker.check_model(out, full_check=True)
    assert not [n for n in out.graph.node if n.op_type == "Identity"]
    inits = {t.name: t for t in out.graph.initializer}
    node_b = next(n for n in out.graph.node if n.name == "b")
    assert _computed_bias(node_b, inits) is None
    G.assert_same(before, out)
    small, report = remove_dead_neurons(out)
    G.assert_same(before, small)
    assert G.shapes(small)["a.weight"][0] == 3 and G.shapes(small)["b.weight"][:2] == (3, 3)


def test_a_bias_two_layers_read_directly_is_copied_for_the_second():
    """Sweep 21's LeViT (dynamo): two zero-initialized heads read one 'head.linear.bias'; shared, it blocks
    dead-neuron removal of both ("initializer ... is shared with ..."). The second reader gets its own copy."""
    from onnxprune.passes.bypass_identity import BypassIdentity, shared_biases
    from onnxprune.passes.dead_neurons import remove_dead_neurons
    from tests.passes import _graphs as G

    g = G.G(seed=3)
    a = g.op("Relu", "a_relu", [g.op("Gemm", "a", ["x", g.weight("a.weight", (6, 5), 5), g.bias("ab", 6)],
                                     transB=1)])
    c = g.op("Relu", "c_relu", [g.op("Gemm", "c", [a, g.weight("c.weight", (6, 6), 6), "ab"], transB=1)])
    g.gemm(c, "head", 6, 3)
    g.nodes[-1].output[0] = "y"
    model = g.model({"x": ["N", 5]}, {"y": ["N", 3]})
    G.zero(model, "c.weight", 1, [4])  # a's neuron 4 read by nobody
    G.zero(model, "head.weight", 1, [1])  # c's neuron 1 read by nobody
    _, report = remove_dead_neurons(model)
    assert report.removed == 0
    before = onnx.ModelProto()
    before.CopyFrom(model)
    assert shared_biases(model) == [(2, "ab")]
    out = BypassIdentity()(model, PruneState()).model
    onnx.checker.check_model(out, full_check=True)
    assert [n.input[2] for n in out.graph.node if n.op_type == "Gemm"][:2] == ["ab", "ab.c"]
    small, _ = remove_dead_neurons(out)
    G.assert_same(before, small)
    assert G.shapes(small)["a.weight"] == (5, 5) and G.shapes(small)["c.weight"] == (5, 5)


def _shared_zero_bias(dead: bool) -> onnx.ModelProto:
    """Two Gemms read one zero bias 'ab' (tf2onnx's TFLite layers, dynamo's zero-initialized heads), then a head;
    `dead`: the second layer's neuron 1 read by nobody."""
    from tests.passes import _graphs as G

    g = G.G(seed=3)
    ab = g.init("ab", np.zeros(16, np.float32))
    a = g.op("Relu", "a_relu", [g.op("Gemm", "a", ["x", g.weight("a.weight", (16, 16), 16), ab], transB=1)])
    c = g.op("Relu", "c_relu", [g.op("Gemm", "c", [a, g.weight("c.weight", (16, 16), 16), ab], transB=1)])
    g.gemm(c, "head", 16, 16)
    g.nodes[-1].output[0] = "y"
    model = g.model({"x": ["N", 16]}, {"y": ["N", 16]})
    return G.zero(model, "head.weight", 1, [1]) if dead else model


@pytest.mark.parametrize("dead", [False, True])
def test_bias_copies_still_equal_when_the_model_is_written_are_one_bias_again(dead):
    """Real models 45: basic-pitch's TFLite layers share one zero bias; the load step gives each layer a copy (so a
    refit or a shrink can change one), and the file was written with 17 all-zero copies (2.4 KB; 225.04 -> 230.68 KB
    at 1.04x). Copies still bit-identical are one initializer again; one a shrink sliced stays its layer's own."""
    model = _shared_zero_bias(dead)
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    result = prune(model, data={"x": x}, seed=0, sparsity=0.5)
    onnx.checker.check_model(result.model, full_check=True)
    gemms = {n.name: n.input[2] for n in result.model.graph.node if n.op_type == "Gemm"}
    names = sorted(t.name for t in result.model.graph.initializer)
    if dead:  # c lost its neuron 1: its bias has 15 entries, a's 16
        assert gemms["a"] == "ab" and gemms["c"] == "ab.c" and "ab.c" in names
    else:
        assert gemms["a"] == gemms["c"] == "ab" and "ab.c" not in names
    np.testing.assert_allclose(run(result.model, {"x": x[:8]})["y"], run(result.dense_model, {"x": x[:8]})["y"],
                               rtol=1e-5, atol=1e-6)


def test_a_bias_the_readers_of_one_tied_weight_share_stays_one_bias():
    """Sweep 27's greedy decoder (a scripted loop unrolled by the legacy exporter): each step's Gemm reads the same
    weight and bias. The bias was copied for the 2nd and 3rd step, so the pruned file grew (194.5 -> 197.7 KB at
    1.45x fewer nonzeros); a tied weight's neurons go together, so one bias serves them."""
    from onnxprune.models.third_party_builders import greedy_decoder
    from onnxprune.passes.bypass_identity import shared_biases

    model = greedy_decoder(dim=16, vocab=6)
    assert shared_biases(model) == []
    x = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    for options in ({"sparsity": 0.5}, {"sparsity": 0.5, "neuron_sparsity": 0.5, "iterations": 1, "epochs": 1}):
        result = prune(model, data={"x": x}, seed=0, **options)
        onnx.checker.check_model(result.model, full_check=True)
        names = [t.name for t in result.model.graph.initializer]
        assert not [n for n in names if n.startswith("dec.bias.")], names
        gemms = [n for n in result.model.graph.node if n.name.startswith("/dec_") and n.op_type == "Gemm"]
        assert len(gemms) == 3 and {n.input[2] for n in gemms} == {"dec.bias"}
        np.testing.assert_allclose(run(result.model, {"x": x[:8]})["logits"],
                                   run(result.dense_model, {"x": x[:8]})["logits"], rtol=1e-5, atol=1e-6)


def test_a_bias_the_convs_of_one_kernel_share_at_other_dilations_stays_one_bias(tmp_path):
    """Sweep 34: TridentNet applies one 3x3 kernel and its bias at dilations 1, 2 and 3. Now a tied weight, its bias
    was still copied for the 2nd and 3rd Conv (their attributes differ), and the pruned file grew: 21.40 KB -> 21.71
    KB at 1.14x fewer nonzeros. The kernel's neurons go together, so one bias serves every reader."""
    from onnxprune.passes.bypass_identity import shared_biases

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((0.3 * rng.standard_normal(s)).astype(np.float32), n)
             for n, s in (("w", (4, 2, 3, 3)), ("b", (4,)), ("fc.weight", (3, 4)), ("fc.bias", (3,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], [f"c{d}"], name=f"/conv{d}", kernel_shape=[3, 3],
                              dilations=[d, d], pads=[d] * 4) for d in (1, 2, 3)]
    nodes += [helper.make_node("Sum", ["c1", "c2", "c3"], ["s"], name="/sum"),
              helper.make_node("ReduceMean", ["s"], ["m"], name="/mean", axes=[2, 3], keepdims=0),
              helper.make_node("Gemm", ["m", "fc.weight", "fc.bias"], ["logits"], name="/fc", transB=1)]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "trident", [vi("x", onnx.TensorProto.FLOAT, ["N", 2, 8, 8])],
                              [vi("logits", onnx.TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    assert shared_biases(model) == []
    x = rng.standard_normal((32, 2, 8, 8)).astype(np.float32)
    result = prune(model, data={"x": x}, seed=0, sparsity=0.5)
    onnx.checker.check_model(result.model, full_check=True)
    assert sorted(t.name for t in result.model.graph.initializer) == ["b", "fc.bias", "fc.weight", "w"]
    np.testing.assert_allclose(run(result.model, {"x": x[:8]})["logits"],
                               run(result.dense_model, {"x": x[:8]})["logits"], rtol=1e-5, atol=1e-6)


def test_a_matrix_stored_again_as_its_transpose_is_one_tied_weight(tmp_path):
    """Sweep 37's L2, session 43: a tied language model exported with the head's transpose folded into a constant of
    its own (torch's legacy exporter: 'emb.weight' [V, d] read by the Gather, 'head.weight_t' [d, V] = its transpose
    read by the head's MatMul) was pruned as two weights with two masks and stored twice. The copy's reader now reads
    Transpose(emb.weight): one tied weight, bit-identical outputs, one matrix less in the file. A copy one value off,
    and a pair whose kept matrix the inventory would then refuse (a Gather of it with a constant index), stay apart."""
    from onnxprune.models.third_party_builders import tied_lm
    from onnxprune.passes.merge_copies import transposed_copies
    from tests.oracle import assert_same_outputs

    model = tied_lm(form="legacy")
    onnx.checker.check_model(model, full_check=True)
    assert transposed_copies(model) == [("emb.weight", "head.weight_t")]
    before = {w.name for w in find_prunable(model).prunable}
    assert {"emb.weight", "head.weight_t"} <= before  # two weights, pruned apart
    state = PruneState()
    merged = MergeCopies()(tied_lm(form="legacy"), state).model
    onnx.checker.check_model(merged, full_check=True)
    assert "head.weight_t" not in {t.name for t in merged.graph.initializer}
    assert any("stored again as their transpose" in n and "'head.weight_t' as 'emb.weight'" in n for n in state.notes)
    tied = find_prunable(merged).by_name()["emb.weight"]
    assert (tied.node, tied.readers, tied.kind) == ("/head/MatMul", 2, "fc")
    ids = np.random.default_rng(0).integers(0, 20, (16, 6)).astype(np.int64)
    np.testing.assert_array_equal(run(merged, {"tokens": ids})["logits"], run(model, {"tokens": ids})["logits"])
    out = tmp_path / "o.onnx"
    prune(model, output=out, sparsity=0.5, sparse_format="dense")
    written = onnx.load(out)
    assert "head.weight_t" not in {t.name for t in written.graph.initializer}
    assert written.ByteSize() < model.ByteSize() - 20 * 8 * 4 * 0.9  # the copy's bytes are gone
    oracle = tied_lm(form="legacy")  # the input with the written table's zeros in both of its copies
    w = numpy_helper.to_array(next(t for t in written.graph.initializer if t.name == "emb.weight"))
    assert 0.4 <= np.mean(w == 0) <= 0.6
    written_w = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    for init in oracle.graph.initializer:
        if init.name in ("emb.weight", "head.weight_t", "mix.weight"):
            keep = (w != 0).T if init.name == "head.weight_t" else written_w[init.name] != 0
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * keep, init.name))
    assert_same_outputs(written, oracle, feeds=[{"tokens": ids}])

    off = tied_lm(form="legacy")
    t = next(t for t in off.graph.initializer if t.name == "head.weight_t")
    values = numpy_helper.to_array(t).copy()
    values[3, 4] += 1e-3
    t.CopyFrom(numpy_helper.from_array(values, t.name))
    assert transposed_copies(off) == []
    bank = tied_lm(form="legacy")
    bank.graph.initializer.append(numpy_helper.from_array(np.array(3, np.int64), "three"))
    bank.graph.node.append(helper.make_node("Gather", ["emb.weight", "three"], ["row3"], name="bank"))
    state = PruneState()
    kept = MergeCopies()(bank, state).model
    assert "head.weight_t" in {t.name for t in kept.graph.initializer} and not state.notes


def test_a_symmetric_copy_is_merged_once_as_an_identical_one():
    """Two bit-identical symmetric matrices are each other's copy and each other's transpose: merged as identical
    copies, the transposed merge finds nothing left to do (it ran first and left a name the other merge then read)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6)).astype(np.float32)
    sym = a + a.T
    nodes = [helper.make_node("MatMul", ["x", "s1"], ["h"], name="m1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "s2"], ["y"], name="m2")]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "sym", [vi("x", onnx.TensorProto.FLOAT, ["N", 6])],
                          [vi("y", onnx.TensorProto.FLOAT, ["N", 6])],
                          [numpy_helper.from_array(sym, "s1"), numpy_helper.from_array(sym.copy(), "s2")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    before = run(model, {"x": x})["y"]
    state = PruneState()
    merged = MergeCopies()(model, state).model
    onnx.checker.check_model(merged, full_check=True)
    assert [t.name for t in merged.graph.initializer] == ["s1"]
    assert len(state.notes) == 1 and "bit-identical" in state.notes[0]
    np.testing.assert_array_equal(run(merged, {"x": x})["y"], before)


def test_a_kept_model_written_as_given_does_not_claim_the_merged_copies_saving(tmp_path):
    """Sweep 49: a model whose exporter stored a weight twice (torch legacy's W and W.t() folded; dynamo's constant
    of W.t()) was kept unpruned and written as given, its copies in it, yet the notes said "1 bit-identical copies
    ... merged ...: 5.2 KB less in the file" beside "file 15.50 KB -> 15.50 KB". The input's bytes keep the copies,
    so the merge notes go; a model written from the rewrite keeps them (the first test)."""
    import json

    from tests.hardening.helpers import invoke

    model = builders.tied_cell(steps=3, copies=True)
    onnx.checker.check_model(model, full_check=True)
    path, out = tmp_path / "copies.onnx", tmp_path / "out.onnx"
    onnx.save(model, path)
    np.savez(tmp_path / "few.npz", input=_feed(8)["input"])  # 8 samples cannot certify 1 pp: the input is kept
    res = invoke("prune", path, "-o", out, "--data", tmp_path / "few.npz", "--max-loss", "1", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["budget"]["kept_input"] and out.read_bytes() == path.read_bytes()
    assert any("written as it was given" in n for n in report["notes"]), report["notes"]
    assert not any("bit-identical copies" in n or "less in the file" in n for n in report["notes"]), report["notes"]
    np.testing.assert_array_equal(run(onnx.load(out), _feed())["output"], run(model, _feed())["output"])
