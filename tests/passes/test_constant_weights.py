"""passes/constant_weights.py: a layer's weight that nodes compute from constants is stored as the constant it is."""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.models.builders import BATCH, IR_VERSION, OPSET
from onnxprune.models.third_party_builders import scripted_lstm, unrolled_rnn
from onnxprune.passes.base import PruneState
from onnxprune.passes.constant_weights import ConstantWeights, computed_weights
from onnxprune.passes.loading import run_load_passes
from onnxprune.passes.scopes import all_nodes
from onnxprune.passes.weights import find_prunable, weight_array
from tests.oracle import assert_same_outputs, check_full, run

X = np.random.default_rng(3).standard_normal((5, 4, 4)).astype(np.float32)  # [T, N, F]


def _fold(model):
    state = PruneState()
    out = ConstantWeights()(copy.deepcopy(model), state).model
    return out, state


def _gates(w: np.ndarray, h: int) -> np.ndarray:
    """torch's i, f, g, o blocks along axis 0 in ONNX's i, o, f, c order."""
    return np.concatenate([w[:h], w[3 * h:], w[h: 3 * h]])


def test_a_scripted_lstm_reads_its_reordered_weights_as_initializers_with_the_same_outputs():
    """silero-vad's decoder (torch.jit.script): 132K of silero_vad_op15's 307K weights were 'not a weight ... (used
    by 6 nodes: Slice)'."""
    model = scripted_lstm(hidden=6)
    assert find_prunable(model).prunable == [] or all(w.op_type != "LSTM" for w in find_prunable(model).prunable)
    folded, state = _fold(model)
    check_full(folded)
    assert not any(n.op_type in ("Slice", "Concat", "Unsqueeze") and "rnn" in n.name for n in folded.graph.node
                   if n.name != "/rnn/Squeeze")
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert "rnn.weight_ih" not in inits and "rnn.weight_hh" not in inits  # held once, as the LSTM reads it
    np.testing.assert_array_equal(inits["rnn.weight_ih.folded"], _gates(stored["rnn.weight_ih"], 6)[None])
    np.testing.assert_array_equal(inits["rnn.weight_hh.folded"], _gates(stored["rnn.weight_hh"], 6)[None])
    bias = np.concatenate([_gates(stored["rnn.bias_ih"], 6), _gates(stored["rnn.bias_hh"], 6)])[None]
    lstm = next(n for n in folded.graph.node if n.op_type == "LSTM")
    np.testing.assert_array_equal(inits[lstm.input[3]], bias)
    np.testing.assert_array_equal(run(folded, {"x": X})["logits"], run(model, {"x": X})["logits"])
    assert_same_outputs(folded, model, rtol=1e-6)
    lstm_weights = {w.name for w in find_prunable(folded).prunable if w.op_type == "LSTM"}
    assert lstm_weights == {"rnn.weight_ih.folded", "rnn.weight_hh.folded"}
    assert any("3 layer weight(s) that nodes computed from constants" in n for n in state.notes)
    # the model's file holds no more values than before
    size = lambda m: sum(int(np.prod(t.dims)) for t in m.graph.initializer)  # noqa: E731
    assert size(folded) == size(model)


def test_both_branches_that_compute_the_same_weight_read_one_initializer():
    model = scripted_lstm(hidden=6, in_if=True)
    assert len(computed_weights(model)) == 6  # W, R, B of two LSTMs
    folded, _ = _fold(model)
    check_full(folded)
    lstms = [n for n in all_nodes(folded) if n.op_type == "LSTM"]
    assert len(lstms) == 2 and list(lstms[0].input[1:4]) == list(lstms[1].input[1:4])
    assert {t.name for t in folded.graph.initializer} >= set(lstms[0].input[1:4])
    assert not any(n.op_type == "Slice" for n in all_nodes(folded))
    for x in (np.abs(X), -np.abs(X)):  # each branch
        np.testing.assert_array_equal(run(folded, {"x": x})["logits"], run(model, {"x": x})["logits"])
    tied = [w for w in find_prunable(folded).prunable if w.op_type == "LSTM"]
    assert {w.name for w in tied} == {"rnn.weight_ih.folded", "rnn.weight_hh.folded"}


def test_the_load_step_folds_them_and_a_fixed_sparsity_prunes_the_lstm():
    from onnxprune.converter.pipeline import configure, run as run_pipeline

    model = scripted_lstm(hidden=6)
    loaded = copy.deepcopy(model)
    run_load_passes(loaded, PruneState())
    assert any(t.name == "rnn.weight_ih.folded" for t in loaded.graph.initializer)
    result = run_pipeline(model, configure(sparsity=0.5, data={"x": np.random.default_rng(0).standard_normal(
        (5, 32, 4)).astype(np.float32)}))
    w = weight_array(result.model, "rnn.weight_ih.folded")
    assert 0.4 <= float(np.mean(w == 0)) <= 0.6
    check_full(result.model)
    # the written model is the pruned weights' model: the same outputs as the input model with those zeros
    dense = copy.deepcopy(loaded)
    for t in dense.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(weight_array(result.model, t.name), t.name))
    np.testing.assert_allclose(run(result.model, {"x": X})["logits"], run(dense, {"x": X})["logits"], rtol=1e-5,
                               atol=1e-6)


def _linear(weight_nodes: list, inits: list, weight: str, extra_inputs=()) -> onnx.ModelProto:
    nodes = weight_nodes + [helper.make_node("MatMul", ["x", weight], ["y"], name="/fc/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, 8]),
                                           *extra_inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, 4])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def test_a_reshaped_flat_weight_is_folded():
    rng = np.random.default_rng(0)
    model = _linear([helper.make_node("Reshape", ["flat", "shape"], ["w"], name="/fc/Reshape")],
                    [_const("flat", rng.standard_normal(32).astype(np.float32)), _const("shape", np.array([8, 4]))],
                    "w")
    folded, _ = _fold(model)
    check_full(folded)
    assert [n.op_type for n in folded.graph.node] == ["MatMul"]
    assert {t.name for t in folded.graph.initializer} == {"flat.folded"}
    assert_same_outputs(folded, model, rtol=1e-6)


def test_what_the_inventory_reads_already_or_what_is_not_the_same_weight_is_left_alone():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    cases = {
        "a lone Transpose": ([helper.make_node("Transpose", ["wt"], ["w"], perm=[1, 0])], [_const("wt", w.T.copy())]),
        "a float16 weight behind a Cast": ([helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT)],
                                           [_const("w16", w.astype(np.float16))]),
        "an int8 weight behind DequantizeLinear": (
            [helper.make_node("DequantizeLinear", ["w8", "scale", "zp"], ["w"])],
            [_const("w8", np.round(w * 20).astype(np.int8)), _const("scale", np.float32(0.05)),
             _const("zp", np.int8(0))]),
    }
    for what, (nodes, inits) in cases.items():
        model = _linear(nodes, inits, "w")
        assert computed_weights(model) == [], what
        folded, _ = _fold(model)
        assert [n.op_type for n in folded.graph.node] == [n.op_type for n in model.graph.node], what
    # a fill the model never stored (onnx's "light" test models): folded, the file would grow by the whole tensor
    fill = helper.make_node("ConstantOfShape", ["shape"], ["w"], value=helper.make_tensor("v", TensorProto.FLOAT,
                                                                                          [1], [0.1]))
    assert computed_weights(_linear([fill], [_const("shape", np.array([8, 4]))], "w")) == []
    # ... also one shaped like a stored tensor (sweep 32's L5: skl2onnx's GaussianProcessRegressor, a WhiteKernel's
    # zeros [1, 400] from ConstantOfShape(Shape(X_train)), was stored as a weight of 400 params, 0 nonzero)
    shaped = [helper.make_node("Shape", ["train"], ["shape"]), fill]
    assert computed_weights(_linear(shaped, [_const("train", w)], "w")) == []
    # a weight computed from a graph input is not a constant
    model = _linear([helper.make_node("Reshape", ["flat", "shape_in"], ["w"])],
                    [_const("flat", rng.standard_normal(32).astype(np.float32))], "w",
                    [helper.make_tensor_value_info("shape_in", TensorProto.INT64, [2])])
    assert computed_weights(model) == []


def test_a_weight_norm_weight_is_folded_to_the_bits_onnxruntime_computes():
    """torch's weight_norm exported without constant folding computes each weight as g * v / ||v||: folded by onnx's
    reference evaluator, its last bits differed from what onnxruntime computes (sweep 27: wn_cnn's logits moved by up to
    3.8e-6 before any pruning); onnxruntime evaluates a chain that computes."""
    from onnxprune.models.third_party_builders import weight_norm_mlp

    model = weight_norm_mlp()
    assert not any(w.op_type == "Gemm" for w in find_prunable(model).prunable)
    folded, state = _fold(model)
    check_full(folded)
    assert {w.name for w in find_prunable(folded).prunable} == {"0.parametrizations.weight.original1.folded",
                                                               "2.parametrizations.weight.original1.folded"}
    assert not any(n.op_type in ("ReduceL2", "Div", "Mul") for n in folded.graph.node)
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(folded, {"x": x})["logits"], run(model, {"x": x})["logits"])
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    v, gain = stored["0.parametrizations.weight.original1"], stored["0.parametrizations.weight.original0"]
    np.testing.assert_allclose(inits["0.parametrizations.weight.original1.folded"],
                               gain * v / np.linalg.norm(v, axis=1, keepdims=True), rtol=1e-6)


def test_a_spectral_norm_weight_leaves_no_initializer_that_nothing_reads():
    """spectral_norm's sigma = u . (W v): the MatMul reading W v is itself a layer with a computed weight, folded on
    its own, and then dropped with the chain of W / sigma; its fold stayed in the file, read by nothing (sweep 27:
    inspect listed 'm.0.parametrizations.weight.original.folded' 'used by nothing', onnxruntime warned at load)."""
    from onnxprune.models.third_party_builders import spectral_norm_mlp

    model = spectral_norm_mlp()
    folded, state = _fold(model)
    check_full(folded)
    read = {i for n in folded.graph.node for i in n.input}
    assert [t.name for t in folded.graph.initializer if t.name not in read] == []
    assert [n.op_type for n in folded.graph.node] == ["Gemm", "LeakyRelu", "Gemm", "Identity"]
    assert len([w for w in find_prunable(folded).prunable if w.op_type == "Gemm"]) == 2
    assert any(n.startswith("2 layer weight(s) that nodes computed from constants (Div/MatMul of") and "2 constant(s)" in n
               for n in state.notes), state.notes
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    assert_same_outputs(folded, model, feeds=[{"x": x}], rtol=1e-6)


def test_a_weight_cut_at_a_fixed_dimension_read_through_shape_is_folded():
    """torch legacy's cross-attention (a Perceiver, sweep 35): in_proj_weight cut at E = q.shape[-1] was 'used by 2
    nodes: Slice', 21% of the model's weights never pruned. A cut at a dimension that is not a fixed number stays."""
    from onnxprune.converter.pipeline import configure, run as run_pipeline
    from onnxprune.models.third_party_builders import cross_attention_projections

    model = cross_attention_projections()
    assert find_prunable(model).prunable == []
    folded, state = _fold(model)
    check_full(folded)
    assert sorted(w.name for w in find_prunable(folded).prunable) == ["xa.in_proj_weight.folded",
                                                                      "xa.in_proj_weight.folded.1"]
    assert [w.shape for w in find_prunable(folded).prunable] == [(8, 8), (8, 16)]
    assert "Shape/Slice" in state.notes[0]
    x = np.random.default_rng(0).standard_normal((5, 3, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(folded, {"x": x})["y"], run(model, {"x": x})["y"])
    assert_same_outputs(folded, model, rtol=1e-6)
    # pruned at a fixed sparsity: the written model is the input model with the written zeros
    result = run_pipeline(model, configure(sparsity=0.5))
    check_full(result.model)
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    q, kv = inits["xa.in_proj_weight.folded"], inits["xa.in_proj_weight.folded.1"]
    assert 0.4 <= float(np.mean(np.concatenate([q.ravel(), kv.ravel()]) == 0)) <= 0.6
    zeroed = copy.deepcopy(model)
    stored = np.concatenate([q.T, kv.T])
    for t in zeroed.graph.initializer:
        if t.name == "xa.in_proj_weight":
            t.CopyFrom(numpy_helper.from_array(stored, t.name))
    np.testing.assert_allclose(run(result.model, {"x": x})["y"], run(zeroed, {"x": x})["y"], rtol=1e-5, atol=1e-6)
    # the width a name: E differs between the sizes it is given, so the weight depends on the input's shape
    assert computed_weights(cross_attention_projections(free_width=True)) == []


def test_a_weight_another_node_reads_as_it_is_is_not_stored_twice():
    """A DeepFM's V is read by x @ V and, as V ** 2, by x² @ V²: folding V ** 2 stored V twice and pruned the two
    copies apart (sweep 35: the written file grew 280.95 KB -> 329.84 KB at 1.29x fewer weights)."""
    from onnxprune.converter.pipeline import configure, run as run_pipeline
    from onnxprune.models.third_party_builders import factorization_machine

    model = factorization_machine()
    assert computed_weights(model) == []
    folded, state = _fold(model)
    assert [n.op_type for n in folded.graph.node] == [n.op_type for n in model.graph.node] and not state.notes
    result = run_pipeline(model, configure(sparsity=0.5))
    check_full(result.model)
    stored = [t.name for t in result.model.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 2]
    assert sorted(stored) == ["V", "fc.weight"]
    assert result.model.ByteSize() <= model.ByteSize()
    written = copy.deepcopy(model)  # the input model with the written weights: the same outputs
    for t in written.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(weight_array(result.model, t.name), t.name))
    assert_same_outputs(result.model, written, rtol=1e-5)


def test_a_weight_read_through_a_stored_permutation_of_its_rows_is_folded():
    """Sweep 39: `h @ torch.index_select(W, 0, perm).t()` exported with do_constant_folding=False reads W [128, 128]
    through Gather(W, perm) with perm a stored int64 vector of 128 values; an integer constant of more than MAX_INDEX
    (64) values was taken for no index, so W was "used by Gather", never pruned, and dead neurons before it were kept
    ("has no constant 2-D weight"). An index holds at most as many values as the weight it gives; one that holds more
    still stops the fold."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((96, 4)).astype(np.float32)
    perm = rng.permutation(96).astype(np.int64)
    nodes = [helper.make_node("Gather", ["W", "perm"], ["w"], axis=0, name="/Gather"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="/fc/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, 96])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, 4])],
                              initializer=[_const("W", w), _const("perm", perm)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    folded, _ = _fold(model)
    check_full(folded)
    assert [n.op_type for n in folded.graph.node] == ["MatMul"]
    np.testing.assert_array_equal(weight_array(folded, "W.folded"), w[perm])
    assert_same_outputs(folded, model, rtol=1e-6)
    assert [p.name for p in find_prunable(folded).prunable] == ["W.folded"]
    # 96 indices that give a weight of 32 values (a Slice after the Gather): no index of it, left as it is
    cut = helper.make_node("Slice", ["wp", "starts", "ends"], ["w8"], name="/Slice")
    graph = helper.make_graph([helper.make_node("Gather", ["W", "perm"], ["wp"], axis=0), cut,
                               helper.make_node("MatMul", ["x", "w8"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, 4])],
                              initializer=[_const("W", w), _const("perm", perm), _const("starts", np.array([0])),
                                           _const("ends", np.array([8]))])
    assert computed_weights(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                              ir_version=IR_VERSION)) == []


def test_a_per_channel_parameter_computed_from_a_stored_vector_is_folded_and_dead_channels_before_it_go():
    """Sweep 43: torch legacy writes a Glow ActNorm's `(h + b) * exp(log_scale)` with Exp of the stored vector (its
    constant folding has no Exp; dynamo folds it), so the Mul read a tensor "which carries none" and every dead channel
    before it stayed ("consumer Mul ... combines the channels with '/Exp_output_0', which carries none"). A chain of
    constants an element-wise op reads as an operand of more than one value is stored as the constant onnxruntime
    computes; one whose stored vector another node also reads stays computed."""
    from onnxprune.models.third_party_builders import actnorm_mlp
    from onnxprune.passes.dead_neurons import remove_dead_neurons
    from tests.passes import _graphs as G

    model = actnorm_mlp()
    folded, state = _fold(model)
    check_full(folded)
    assert not any(n.op_type == "Exp" for n in folded.graph.node)
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    assert "act.log_scale" not in inits
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_allclose(inits["act.log_scale.folded"], np.exp(stored["act.log_scale"]), rtol=1e-6)
    x = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    np.testing.assert_array_equal(run(folded, {"x": x})["y"], run(model, {"x": x})["y"])
    assert any("per-channel parameter" in n and "(Exp of a stored tensor)" in n for n in state.notes), state.notes
    assert not any("layer weight" in n for n in state.notes)
    # dead units of fc1 (relu(0) + b, a constant, times the folded scale) go, b and the scale sliced with them
    G.zero(folded, "fc1.weight", 1, [1, 5])
    G.set_init(folded, "fc1.bias", np.where(np.isin(np.arange(8), [1, 5]), 0.0, G.init(folded, "fc1.bias")))
    out, report = remove_dead_neurons(folded)
    G.assert_same(folded, out)  # onnxruntime's outputs on seeded inputs equal
    onnx.checker.check_model(out, full_check=True)
    assert report.removed == 2 and G.shapes(out)["act.log_scale.folded"] == (6,) and G.shapes(out)["act.b"] == (6,)
    # the stored vector read as it is by another node too: the chain stays (one copy, not two pruned apart)
    other = actnorm_mlp()
    other.graph.node.append(helper.make_node("Identity", ["act.log_scale"], ["log_scale_out"]))
    other.graph.output.append(helper.make_tensor_value_info("log_scale_out", TensorProto.FLOAT, [8]))
    assert any(n.op_type == "Exp" for n in _fold(other)[0].graph.node)
    # a scalar computed from constants (an attention's 1 / sqrt(d)) is no per-channel parameter: it stays
    scalar = actnorm_mlp(hidden=1)
    assert any(n.op_type == "Exp" for n in _fold(scalar)[0].graph.node)


def test_a_parameter_an_unrolled_loop_computes_at_every_step_is_said_as_the_constants_it_is():
    """Sweep 44: torch legacy's unrolled IndRNN clips its stored u at each of 28 steps; the note said "56
    per-channel parameter(s) ... stored as the constant(s) they are" for two stored vectors, counting too a reader
    that went inside another fold's chain (the first step's Mul(Clip(u), zeros)). It counts the readers left and
    says how many constants they are; the folded model runs as the input in onnxruntime."""
    from onnxprune.models.third_party_builders import indrnn_unrolled

    model = indrnn_unrolled(steps=3)
    folded, state = _fold(model)
    check_full(folded)
    assert not any(n.op_type == "Clip" for n in folded.graph.node)
    x = np.random.default_rng(0).standard_normal((16, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(run(folded, {"x": x})["y"], run(model, {"x": x})["y"], rtol=1e-6, atol=1e-6)
    notes = [n for n in state.notes if "per-channel parameter" in n]
    assert len(notes) == 1 and notes[0].startswith("3 per-channel parameter(s) ") and \
        "stored as the 2 constant(s) they are" in notes[0], notes


def test_a_weight_whose_shape_also_sizes_the_activations_is_stored_once():
    """tf2onnx's Keras einsum (g2p_id's BERT, real models 53): the stored kernel's Shape is read by the chain that
    reshapes it into the layer's weight and by a Reshape of the activations; the fold kept that Shape, so the kernel
    stayed beside its fold and the written file grew 1.24 MB -> 1.30 MB. The Shape is the constant it gives."""
    from onnxprune.converter.pipeline import configure, run as run_pipeline

    rng = np.random.default_rng(0)
    i64 = lambda *v: _const(f"c{len(v)}_{v[0]}", np.array(v, np.int64))  # noqa: E731
    nodes = [helper.make_node("Shape", ["kernel"], ["s"], name="/k/Shape"),
             helper.make_node("Gather", ["s", "one"], ["k_in"], name="/k/Gather"),  # the chain's: 8
             helper.make_node("Unsqueeze", ["k_in", "zero"], ["k_in1"], name="/k/Unsqueeze"),
             helper.make_node("Concat", ["k_in1", "c1_-1"], ["k_shape"], axis=0, name="/k/Concat"),
             helper.make_node("Reshape", ["kernel", "k_shape"], ["w"], name="/k/Reshape"),
             helper.make_node("Gather", ["s", "one"], ["x_in"], name="/x/Gather"),  # the activations': 8
             helper.make_node("Unsqueeze", ["x_in", "zero"], ["x_in1"], name="/x/Unsqueeze"),
             helper.make_node("Concat", ["c1_-1", "x_in1"], ["x_shape"], axis=0, name="/x/Concat"),
             helper.make_node("Reshape", ["x3", "x_shape"], ["x"], name="/x/Reshape")]
    inits = [_const("kernel", rng.standard_normal((1, 8, 2, 2)).astype(np.float32)), i64(-1),
             _const("one", np.array(1, np.int64)), _const("zero", np.array([0], np.int64))]
    model = _linear(nodes, inits, "w")
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("x3", TensorProto.FLOAT, [BATCH, 2, 4]))
    check_full(model)
    folded, state = _fold(model)
    check_full(folded)
    assert {t.name for t in folded.graph.initializer if t.data_type == TensorProto.FLOAT} == {"kernel.folded"}
    assert [n.op_type for n in folded.graph.node if n.name == "/k/Shape"] == ["Constant"]
    assert "Shape" not in {n.op_type for n in folded.graph.node} and state.notes
    assert_same_outputs(folded, model, rtol=1e-6)
    result = run_pipeline(model, configure(sparsity=0.5))
    check_full(result.model)
    assert result.model.ByteSize() <= model.ByteSize()


def _qda(classes: int = 2, d: int = 4) -> onnx.ModelProto:
    """skl2onnx's QuadraticDiscriminantAnalysis, small and seeded: per class k, z = (x - means_k) @ (rotations_k *
    scalings_k ** -0.5) and a score -0.5 * (sum(z²) + sum(log scalings_k)), the scores concatenated [N, classes].
    'scalings_k' is read twice: by Pow (the weight's chain) and by Log (the log-determinant)."""
    rng = np.random.default_rng(7)
    nodes, inits, scores = [], [numpy_helper.from_array(np.array(-0.5, np.float32), "half"),
                                numpy_helper.from_array(np.array([1], np.int64), "axis1")], []
    for k in range(classes):
        r = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
        inits += [numpy_helper.from_array(rng.standard_normal((1, d)).astype(np.float32), f"means{k}"),
                  numpy_helper.from_array(r, f"rotations{k}"),
                  numpy_helper.from_array(rng.uniform(0.5, 2, d).astype(np.float32), f"scalings{k}")]
        nodes += [helper.make_node("Pow", [f"scalings{k}", "half"], [f"p{k}"]),
                  helper.make_node("Mul", [f"rotations{k}", f"p{k}"], [f"w{k}"]),
                  helper.make_node("Sub", ["x", f"means{k}"], [f"c{k}"]),
                  helper.make_node("MatMul", [f"c{k}", f"w{k}"], [f"z{k}"]),
                  helper.make_node("Mul", [f"z{k}", f"z{k}"], [f"zz{k}"]),
                  helper.make_node("ReduceSum", [f"zz{k}", "axis1"], [f"q{k}"], keepdims=1),
                  helper.make_node("Log", [f"scalings{k}"], [f"l{k}"]),
                  helper.make_node("ReduceSum", [f"l{k}"], [f"ld{k}"], keepdims=1),
                  helper.make_node("Add", [f"q{k}", f"ld{k}"], [f"a{k}"]),
                  helper.make_node("Mul", [f"a{k}", "half"], [f"s{k}"])]
        scores.append(f"s{k}")
    nodes.append(helper.make_node("Concat", scores, ["scores"], axis=1))
    graph = helper.make_graph(nodes, "qda", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, d])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [BATCH, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    check_full(model)
    return model


def test_a_weight_whose_stored_tensor_another_node_reads_but_not_as_a_weight_is_folded():
    """Sweep 54b: scikit-learn's QDA through skl2onnx whitens each class by `rotations * scalings ** -0.5` (a
    MatMul's weight) and reads `scalings` again by Log for the log-determinant. The fold was refused as a second
    reader of the stored tensor (the DeepFM rule above), so the model had no prunable weights at all ("Nothing to
    do"). Log reads no weight the inventory prunes, so the two copies cannot be pruned apart: each class's weight is
    stored as the constant it is, 'scalings' stays for the Log, 'rotations' goes, and the outputs are the same."""
    model = _qda()
    assert len(computed_weights(model)) == 2
    folded, _ = _fold(model)
    check_full(folded)
    assert_same_outputs(folded, model, rtol=1e-6)
    stored = {t.name for t in folded.graph.initializer}
    assert {"scalings0", "scalings1"} <= stored and not {"rotations0", "rotations1"} & stored
    assert sorted(w.name for w in find_prunable(folded).prunable) == ["rotations0.folded", "rotations1.folded"]
    from onnxprune.converter.pipeline import configure, run as run_pipeline

    result = run_pipeline(model, configure(sparsity=0.5))
    check_full(result.model)
    assert sum(int(np.count_nonzero(weight_array(result.model, n))) for n in ("rotations0.folded",
                                                                             "rotations1.folded")) == 16


def test_a_matrix_every_unrolled_step_reads_through_one_transpose_is_one_tied_weight():
    # real models 59: torch 2.9's dynamo unrolls nn.LSTM, weight_hh -> Transpose -> one MatMul a step; the inventory
    # reads through a Transpose only one node reads, so 56% of an LSTM autoencoder's weights were "used by Transpose"
    model = unrolled_rnn(steps=4)
    folded, _ = _fold(model)
    check_full(folded)
    assert "Transpose" not in [n.op_type for n in folded.graph.node]
    assert "rnn.weight_hh" not in {t.name for t in folded.graph.initializer}
    np.testing.assert_array_equal(weight_array(folded, "rnn.weight_hh.folded"), weight_array(model, "rnn.weight_hh").T)
    assert_same_outputs(folded, model, rtol=1e-6)
    loaded = copy.deepcopy(model)
    run_load_passes(loaded, PruneState())
    weights = {w.name: w for w in find_prunable(loaded).prunable}
    assert weights["rnn.weight_hh.folded"].readers == 3 and weights["rnn.weight_hh.folded"].size == 64
    # read by a Mul of the data too, the transposed matrix is no weight only: left as it is
    also = unrolled_rnn(steps=4, also_added=True)
    assert [n.op_type for n in _fold(also)[0].graph.node] == [n.op_type for n in also.graph.node]


def test_a_fixed_sparsity_prunes_the_matrix_every_unrolled_step_reads_with_one_mask():
    from onnxprune.converter.pipeline import configure, run as run_pipeline

    model = unrolled_rnn(steps=4)
    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    result = run_pipeline(model, configure(sparsity=0.5, data={"x": x}))
    w = weight_array(result.model, "rnn.weight_hh.folded")
    assert 0.4 <= float(np.mean(w == 0)) <= 0.6
    check_full(result.model)
    # the written model computes what the input model computes with those zeros in its stored [H, H] matrix
    dense = copy.deepcopy(model)
    for t in dense.graph.initializer:
        value = weight_array(result.model, t.name + ".folded").T if t.name == "rnn.weight_hh" else weight_array(
            result.model, t.name)
        t.CopyFrom(numpy_helper.from_array(value, t.name))
    np.testing.assert_allclose(run(result.model, {"x": x})["logits"], run(dense, {"x": x})["logits"], rtol=1e-5,
                               atol=1e-6)
