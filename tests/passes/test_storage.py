"""Storage formats: the compact encoding (every candidate exact in onnxruntime, folded at load, valid ONNX), the
registry, and the quantization pass that feeds it."""

import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calibration.runtime import make_session, random_feeds
from onnxprune.passes.base import PruneState
from onnxprune.passes.quantize import QuantizeWeights, kmeans_1d, quantize_codebook, quantize_fp16
from onnxprune.passes.sparse_encode import SparseEncode
from onnxprune.passes.storage import FORMATS, compact, decode_model, describe_model, packing
from onnxprune.passes.storage.decoder import SHARED, DecoderBuilder, shared_tensors
from onnxprune.passes.weights import constant_tensors
from tests.oracle import assert_same_outputs, check_full
from tests.passes.test_sparse_encode import _copy, _pruned

DECODER_OPS = {"CumSum", "ScatterND", "NonZero", "ConstantOfShape", "Mod", "BitShift", "MatMulInteger", "Gather", "Where"}


def _weight_model(enc: packing.Encoding, opset: int = 17) -> onnx.ModelProto:
    """A model whose only output is the decoded weight: the decoder alone, nothing else between it and the test."""
    b = DecoderBuilder("w", enc, 0)
    b.build()
    dtype = helper.np_dtype_to_tensor_dtype(np.dtype(enc.dtype))
    graph = helper.make_graph(b.nodes, "g", [], [helper.make_tensor_value_info("w", dtype, list(enc.shape))],
                              initializer=b.tensors + shared_tensors(b.shared))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _sparse(rng, shape, density, dtype):
    return (rng.standard_normal(shape) * (rng.random(shape) < density)).astype(dtype)


def _optimized_ops(model: onnx.ModelProto) -> list[str]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = f"{tmp}/opt.onnx"
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=3), st.floats(0.0, 1.0), st.integers(0, 2**16),
       st.sampled_from([np.float32, np.float16, np.float64]), st.sampled_from([None, 16, 4, 1]))
def test_every_candidate_decodes_bit_exactly_in_onnxruntime(shape, density, seed, dtype, bits):
    rng = np.random.default_rng(seed)
    w = _sparse(rng, shape, density, dtype)
    if bits == 16 and dtype != np.float16:
        w = quantize_fp16(w, "w")
    elif bits:
        w = quantize_codebook(w, bits)
    for enc in packing.candidates(w):
        np.testing.assert_array_equal(packing.decode(enc.record(), enc.arrays), w, err_msg=enc.name)
        model = _weight_model(enc)
        check_full(model)
        got = make_session(model, optimize=False).run(None, {})[0]
        assert got.dtype == w.dtype and got.shape == w.shape, enc.name
        assert got.tobytes() == (w + 0).tobytes(), f"{enc.name}: decoded weight differs"  # +0: -0.0 -> 0.0


@pytest.mark.parametrize("bits", [None, 16, 8, 3])
def test_every_candidate_is_folded_by_onnxruntime_at_session_creation(bits):
    w = _sparse(np.random.default_rng(0), (40, 60), 0.2, np.float32)
    w = quantize_fp16(w, "w") if bits == 16 else quantize_codebook(w, bits) if bits else w
    for enc in packing.candidates(w):
        left = set(_optimized_ops(_weight_model(enc))) - {"Identity"}
        assert not left, f"{enc.name}: {sorted(left)} left after optimisation"


def test_long_gaps_are_padded_with_zero_fillers():
    w = np.zeros(1000, np.float32)
    w[[0, 600, 601]] = [1, 2, 3]
    gaps, slots = packing.gap_entries(np.flatnonzero(w), 255)
    assert gaps.tolist() == [0, 255, 255, 90, 1] and slots.tolist() == [0, 3, 4]
    enc = next(e for e in packing.candidates(w) if e.index == "gap16")
    assert enc.arrays["gaps"].tolist() == [0, 600, 1] and enc.arrays["gaps"].dtype == np.uint16


def test_choice_follows_density():
    rng = np.random.default_rng(0)
    assert packing.candidates(_sparse(rng, (300, 784), 0.02, np.float32))[0].index == "gap8"
    assert packing.candidates(_sparse(rng, (300, 784), 0.5, np.float32))[0].index == "bitmask"
    very_sparse = np.zeros((1000, 1000), np.float32)
    very_sparse.flat[::5000] = 1.5
    assert packing.candidates(very_sparse)[0].index == "gap16"
    assert packing.candidates(np.zeros((3, 3), np.float32))[0].index == "zeros"


@pytest.mark.parametrize("name", ["lenet300_like", "lenet5_like", "mlp_matmul", "residual_block"])
def test_compact_passes_full_check_matches_coo_and_is_folded_by_onnxruntime(name):
    dense, names = _pruned(name, 0.9)
    coo, out = _copy(dense), _copy(dense)
    SparseEncode(names, "constant")(coo, PruneState())
    assert SparseEncode(names, "compact")(out, PruneState()).modified
    check_full(out)
    onnx.shape_inference.infer_shapes(out, strict_mode=True)
    encoded = describe_model(out)
    assert set(encoded) == set(names) and not any(t.name in names for t in out.graph.initializer)
    assert sum(n.op_type == "ScatterND" for n in out.graph.node) == len(compact.read_records(out))
    assert out.ByteSize() <= coo.ByteSize()
    assert_same_outputs(out, dense, rtol=1e-6)  # optimisations off: the decoder runs, kernels may differ by an ulp
    for seed in (0, 1, 2):  # as deployed (optimisations on): folded to initializers, the very same bits
        feed = random_feeds(dense, batch=3, seed=seed)
        got, want = make_session(out).run(None, feed), make_session(coo).run(None, feed)
        assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want)), f"{name}: output differs from COO"
    assert not DECODER_OPS & set(_optimized_ops(out)), "decoder not folded at session creation"


def test_constant_node_and_transposed_weights_are_encoded():
    from onnxprune.models import builders

    model = builders.mlp_matmul(transposed_weights=True, hidden=(64, 32))
    w = numpy_helper.to_array(model.graph.initializer[0])
    name = model.graph.initializer[0].name
    w = np.where(np.abs(w) > np.quantile(np.abs(w), 0.9), w, 0).astype(w.dtype)
    del model.graph.initializer[0]
    model.graph.node.insert(0, helper.make_node("Constant", [], [name], value=numpy_helper.from_array(w)))
    out = _copy(model)
    assert SparseEncode([name], "compact")(out, PruneState()).modified
    assert not any(n.op_type == "Constant" for n in out.graph.node)
    assert any(n.op_type == "Transpose" and n.input[0] == name for n in out.graph.node)
    check_full(out)
    assert_same_outputs(out, model, rtol=1e-6)


def test_tiny_weights_take_coo_when_the_decoder_would_cost_more():
    dense, names = _pruned("mlp_matmul", 0.95)
    out = _copy(dense)
    SparseEncode(names, "compact")(out, PruneState())
    encodings = {v["encoding"] for v in describe_model(out).values()}
    assert "coo (constant)" in encodings
    check_full(out)
    assert_same_outputs(out, dense, rtol=1e-6)


def test_decoder_constants_are_shared_between_weights():
    dense, names = _pruned("lenet300_like", 0.9)
    SparseEncode(names, "compact")(dense, PruneState())
    shared = [t.name for t in dense.graph.initializer if t.name.startswith(SHARED)]
    assert len(shared) == len(set(shared)) >= 2


def test_old_opset_keeps_weights_dense_and_says_why():
    dense, names = _pruned()
    dense.opset_import[0].version = 8
    state, out = PruneState(), _copy(dense)
    assert not SparseEncode(names, "compact")(out, state).modified
    assert "opset >= 11" in state.notes[0] and out.SerializeToString() == dense.SerializeToString()


def test_small_weight_where_the_decoder_costs_more_stays_dense():
    dense, names = _pruned("mlp_matmul", 0.3)
    out = _copy(dense)
    assert not SparseEncode(names, "compact")(out, PruneState()).modified


def test_decode_gives_back_the_plain_initializers():
    dense, names = _pruned("lenet5_like", 0.9)
    out = _copy(dense)
    SparseEncode(names, "compact")(out, PruneState())
    assert sorted(decode_model(out)) == sorted(names)
    assert {n.op_type for n in out.graph.node} - {n.op_type for n in dense.graph.node} <= {"Constant"}  # tiny: COO
    assert not any(p.key == compact.METADATA for p in out.metadata_props)
    assert not any(t.name.startswith(SHARED) for t in out.graph.initializer)
    want = {n: numpy_helper.to_array(t) for n, t in constant_tensors(dense).items()}
    got = {n: numpy_helper.to_array(t) for n, t in constant_tensors(out).items()}
    assert set(got) == set(want)
    for n in want:
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)
    check_full(out)


def test_registry_lists_every_format():
    assert {"constant", "initializer", "dense", "compact"} <= set(FORMATS)
    assert all(f.encode and f.decode and f.describe for f in FORMATS.values())


def test_kmeans_linear_init_converges_to_cluster_means():
    x = np.concatenate([np.full(50, -1.0), np.full(30, 0.5), np.full(20, 2.0)])
    centroids, codes = kmeans_1d(x, 3)
    np.testing.assert_allclose(centroids, [-1.0, 0.5, 2.0])
    assert np.array_equal(centroids[codes], x)


@pytest.mark.parametrize("bits", [16, 8, 5, 2])
def test_quantize_keeps_the_mask_and_bounds_the_codebook(bits):
    dense, names = _pruned("lenet300_like", 0.9)
    q = _copy(dense)
    state = PruneState()
    assert QuantizeWeights(names, bits)(q, state).modified
    before = {t.name: numpy_helper.to_array(t) for t in dense.graph.initializer}
    for t in q.graph.initializer:
        if t.name in names:
            a = numpy_helper.to_array(t)
            assert np.array_equal(a != 0, before[t.name] != 0), t.name
            if bits == 16:
                assert np.array_equal(a.astype(np.float16).astype(np.float32), a)
            else:
                assert len(np.unique(a[a != 0])) <= 2**bits
    out = _copy(q)
    SparseEncode(names, "compact")(out, state)
    kinds = {r["values"] for r in compact.read_records(out).values()}
    assert kinds == ({"float16"} if bits == 16 else {"codebook"}), kinds
    assert_same_outputs(out, q, rtol=1e-6)


def test_fp16_overflow_is_refused():
    from onnxprune.errors import PassError

    with pytest.raises(PassError, match="fp16 range"):
        quantize_fp16(np.array([1e6, 0], np.float32), "big")


def test_quantize_takes_a_width_per_weight():
    dense, names = _pruned("lenet300_like", 0.9)
    q = _copy(dense)
    QuantizeWeights(names, {names[0]: 3, names[1]: 16})(q, PruneState())
    arrays = {n: numpy_helper.to_array(t) for n, t in constant_tensors(q).items()}
    before = {n: numpy_helper.to_array(t) for n, t in constant_tensors(dense).items()}
    assert len(np.unique(arrays[names[0]][arrays[names[0]] != 0])) <= 8
    assert np.array_equal(arrays[names[1]].astype(np.float16).astype(np.float32), arrays[names[1]])
    assert np.array_equal(arrays[names[2]], before[names[2]])


@pytest.mark.parametrize("name, sparsity", [("lenet5_like", 0.9), ("lenet300_like", 0.6)])
def test_a_float16_models_compact_decoder_is_folded_by_onnxruntime(name, sparsity):
    """A float16 decoder (Where, ScatterND in float16) has no CPU kernel to fold with: it ran at every inference, a
    helper's fp16 CNN 0.44x as fast as its input. It computes in float32 and casts once, folded at load."""
    from onnxprune.models.builders import as_float16

    dense32, names = _pruned(name, sparsity)
    dense = as_float16(dense32)
    coo, out = _copy(dense), _copy(dense)
    SparseEncode(names, "constant")(coo, PruneState())
    assert SparseEncode(names, "compact")(out, PruneState()).modified
    check_full(out)
    for seed in (0, 1):  # as deployed: the very bits of the weights the COO file holds
        feed = {k: v.astype(np.float16) for k, v in random_feeds(dense32, batch=3, seed=seed).items()}
        got, want = make_session(out).run(None, feed), make_session(coo).run(None, feed)
        assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want))
    assert not DECODER_OPS & set(_optimized_ops(out)), "decoder not folded at session creation"
    assert all(t.data_type == onnx.TensorProto.FLOAT16 for t in out.graph.initializer if t.name in names)
