import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.models import builders
from onnxprune.passes.weights import find_prunable, name_nodes


def _model(nodes, inits, inputs, outputs, opset=17, ir=8):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def test_finds_gemm_weights_and_explains_biases():
    inv = find_prunable(builders.mlp_gemm())
    assert [w.op_type for w in inv.prunable] == ["Gemm", "Gemm", "Gemm"]
    assert all(w.out_axis == 0 and w.in_axis == 1 for w in inv.prunable)  # transB=1
    assert all("bias" in s.reason for s in inv.skipped)
    assert len(inv.skipped) == 3


def test_conv_weights_have_output_channels_on_axis_0_and_macs_use_feature_map_size():
    m = builders.conv_bn_relu(in_channels=3, out_channels=8, kernel=3, size=8)
    inv = find_prunable(m)
    (w,) = inv.prunable
    assert (w.op_type, w.kind, w.out_axis, w.in_axis) == ("Conv", "conv", 0, 1)
    assert w.macs == 8 * 3 * 3 * 3 * 8 * 8  # weight size x output H x W (same padding)
    assert any("normalization" in s.reason for s in inv.skipped)


def test_weight_through_transpose_maps_axes_to_storage():
    m = builders.mlp_matmul(transposed_weights=True)
    inv = find_prunable(m)
    assert inv.prunable and all(w.via == ("Transpose",) for w in inv.prunable)
    # stored [out, in], transposed to [in, out] for MatMul: output channels are storage axis 0
    assert all(w.out_axis == 0 and w.in_axis == 1 for w in inv.prunable)


def test_plain_matmul_weight_outputs_on_last_axis():
    inv = find_prunable(builders.mlp_matmul())
    assert all(w.out_axis == 1 and w.in_axis == 0 and w.via == () for w in inv.prunable)


def test_shared_integer_and_quantized_weights_are_skipped_with_reasons():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, "N"])
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, ["N", 4])
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    wq = numpy_helper.from_array(np.ones((4, 4), np.int8), "Wq")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["y"], name="a"),
        helper.make_node("Gemm", ["W", "x"], ["z"], name="b", transB=1),  # the same tensor read another way: as
        # a first operand (a transposed second one, W^T, is the same weight: test_a_weight_read_as_w_and_...)
        helper.make_node("DequantizeLinear", ["Wq", "s"], ["Wd"], name="dq"),
        helper.make_node("MatMul", ["x", "Wd"], ["q"], name="c"),
    ]
    m = _model(nodes, [w, wq, scale], [x], [y, z, q])
    onnx.checker.check_model(m, full_check=True)
    inv = find_prunable(m)
    assert inv.prunable == []
    reasons = {s.name: s.reason for s in inv.skipped}
    assert "used in different ways" in reasons["W"]
    assert "DequantizeLinear" in reasons["Wq"]


def test_a_weight_several_nodes_read_the_same_way_is_one_tied_weight():
    """An unrolled cell (the same Gemm applied three times) is one prunable weight read by three nodes; a Gemm
    reading it with other attributes, or an LSTM's R, is not tied."""
    m = builders.tied_cell(steps=3)
    onnx.checker.check_model(m, full_check=True)
    inv = find_prunable(m)
    tied = inv.by_name()["cell.W"]
    assert (tied.node, tied.readers, tied.out_axis, tied.in_axis) == ("cell0", 3, 0, 1)
    assert tied.macs == 3 * 12 * 12  # every step multiplies
    assert inv.by_name()["inp.weight"].readers == 1
    next(n for n in m.graph.node if n.name == "cell1").attribute.append(helper.make_attribute("alpha", 0.5))
    assert find_prunable(m).by_name()["cell.W"].readers == 3  # read otherwise (alpha), still one elementwise mask
    cell = next(n for n in m.graph.node if n.name == "cell1")
    cell.input[0], cell.input[1] = cell.input[1], cell.input[0]  # cell.W as a first operand: read another way
    assert "used in different ways" in {s.name: s.reason for s in find_prunable(m).skipped}["cell.W"]


def test_constant_node_weights_and_fp16_are_prunable():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 3])
    w = numpy_helper.from_array(np.ones((4, 3), np.float16), "")
    nodes = [helper.make_node("Constant", [], ["W"], value=w, name="c"), helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    m = _model(nodes, [], [x], [y])
    (pw,) = find_prunable(m).prunable
    assert (pw.name, pw.source, pw.dtype, pw.shape) == ("W", "constant", "float16", (4, 3))


def test_weights_inside_if_branches_are_prunable_and_say_where_they_live():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    wi = numpy_helper.from_array(np.ones((4, 3), np.float32), "Wi")
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "Wi"], ["t"])], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])], [wi])
    else_g = helper.make_graph([helper.make_node("MatMul", ["x", "Wi2"], ["e"])], "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 3])], [numpy_helper.from_array(np.ones((4, 3), np.float32), "Wi2")])
    m = _model([helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="if")], [], [x, cond], [y])
    inv = find_prunable(m)
    found = {w.name: w for w in inv.prunable}
    assert sorted(found) == ["Wi", "Wi2"]
    assert found["Wi"].scope == "If 'if'/then_branch" and found["Wi2"].scope == "If 'if'/else_branch"
    assert (found["Wi"].out_axis, found["Wi"].in_axis, found["Wi"].kind) == (1, 0, "fc")


def test_old_ir_initializers_listed_as_inputs_are_prunable():
    m = builders.mlp_gemm()
    m.ir_version = 3
    m.opset_import[0].version = 8
    for t in m.graph.initializer:
        m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    onnx.checker.check_model(m)
    assert len(find_prunable(m).prunable) == 3


def test_unnamed_nodes_get_stable_names():
    m = builders.mlp_gemm()
    for n in m.graph.node:
        n.name = ""
    name_nodes(m)
    names = [n.name for n in m.graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert names[0].startswith(m.graph.node[0].op_type)


@pytest.mark.parametrize("name", sorted(builders.BUILDERS))
def test_every_builder_has_prunable_weights(name):
    inv = find_prunable(builders.BUILDERS[name]())
    assert inv.prunable, name
    assert all(w.size > 0 for w in inv.prunable)


@pytest.mark.parametrize("flatten", ["Reshape", "Flatten"])
def test_a_product_on_a_flattened_batch_counts_every_row_of_a_sample(flatten):
    """GPT-2 (torch dynamo): x [N, 4, 8] -> Reshape [-1, 8] -> Gemm / MatMul: 4 rows a sample, not 1 (inspect said
    12.3K MACs for 786K). A Gemm on a plain [N, 8] input stays one row; the outputs agree with onnxruntime."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal((6, 5)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([-1, 8], np.int64), "flat")]
    first = (helper.make_node("Reshape", ["x", "flat"], ["rows"], name="flat") if flatten == "Reshape"
             else helper.make_node("Flatten", ["x"], ["rows"], name="flat", axis=2))
    nodes = [first, helper.make_node("Gemm", ["rows", "w1"], ["h"], name="gemm"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="matmul")]
    m = _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["R", 5])])
    onnx.checker.check_model(m, full_check=True)
    got = {w.node: w.macs for w in find_prunable(m).prunable}
    assert got == {"gemm": 4 * 48, "matmul": 4 * 30}  # the MatMul reads the Gemm's rows: 4 a sample too
    x = rng.standard_normal((3, 4, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, x.reshape(-1, 8) @ w1 @ w2, rtol=1e-5, atol=1e-5)
    plain = builders.mlp_gemm()
    assert all(w.macs == w.size for w in find_prunable(plain).prunable)


def test_a_seq_first_product_counts_every_position_of_a_sample():
    """A torch seq-first transformer (sweep 8's ViT, dynamo): x [S=3, N, 8] -> MatMul (MACs unknown before: the batch
    is axis 1) -> Reshape [-1, 6] -> Gemm (one row, not 3)."""
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    w1, w2 = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal((6, 5)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([-1, 6], np.int64), "flat")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="matmul"),
             helper.make_node("Reshape", ["h", "flat"], ["rows"], name="flat"),
             helper.make_node("Gemm", ["rows", "w2"], ["y"], name="gemm")]
    m = _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, "N", 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["R", 5])])
    onnx.checker.check_model(m, full_check=True)
    assert {w.node: w.macs for w in find_prunable(m).prunable} == {"matmul": 3 * 48, "gemm": 3 * 30}
    x = rng.standard_normal((3, 2, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, (x @ w1).reshape(-1, 6) @ w2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qdq", [False, True])
def test_a_product_after_a_reshape_of_computed_heads_counts_every_row_of_a_sample(qdq):
    """Sweep 24's conformer (torch legacy nn.MultiheadAttention): out_proj's Gemm reads [S*N, E] from a Reshape whose
    source [S, N*H, E/H] has two unknown axes (the head size computed by Div and Cast from Shape): inspect counted
    2.3K MACs for 64.5K (one row a sample, not S). Inference at a batch of 1 and of 2 gives its rows: S a sample.
    Its QDQ-quantized copy (quantize_static) has a QuantizeLinear -> DequantizeLinear pair between: rows kept."""
    import onnxruntime as ort

    from onnxprune.models.third_party_builders import legacy_mha_rows

    m = legacy_mha_rows(seq=4, dim=8, heads=2, out=6, qdq=qdq)
    onnx.checker.check_model(m, full_check=True)
    assert {w.node: w.macs for w in find_prunable(m).prunable} == {"/in_proj/MatMul": 4 * 64, "/out_proj/Gemm": 4 * 48}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    flat = (x @ w["in_proj.weight"]).transpose(1, 0, 2).reshape(-1, 8)
    if qdq:
        flat = (np.clip(np.round(flat / 0.02) + 128, 0, 255) - 128) * np.float32(0.02)
    ref = (flat @ w["out_proj.weight"].T + w["out_proj.bias"]).reshape(4, 3, 6).transpose(1, 0, 2)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_layers_after_a_channel_split_computed_from_shape_count_their_macs():
    """Sweep 30's ShuffleNetV2 (torch legacy): `x.chunk(2, dim=1)` is two Slices whose bounds are Div(Gather(Shape(x),
    1), 2); onnx's data propagation stops at the Div, and MACs were unknown for 50 of 57 layers on a fully static
    input. onnxruntime's symbolic inference follows it; its sizes fill the ones onnx left unknown."""
    import onnxruntime as ort

    from onnxprune.models.third_party_builders import channel_split_cnn

    m = channel_split_cnn(width=8, size=6, classes=3)
    onnx.checker.check_model(m, full_check=True)
    assert {w.node: w.macs for w in find_prunable(m).prunable} == {
        "/stem/Conv": 8 * 2 * 9 * 36, "/branch/Conv": 4 * 4 * 36, "/head/Conv": 3 * 8 * 36}
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    (y,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}

    def conv(v, name, pad):
        v = np.pad(v, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        k = w[f"{name}.weight"]
        cols = np.lib.stride_tricks.sliding_window_view(v, k.shape[2:], axis=(2, 3))  # N, C, H, W, kh, kw
        return np.einsum("nchwij,ocij->nohw", cols, k) + w[f"{name}.bias"][None, :, None, None]

    h = np.maximum(conv(x, "stem", 1), 0)
    ref = conv(np.concatenate([h[:, :4], np.maximum(conv(h[:, 4:], "branch", 0), 0)], axis=1), "head", 0)
    np.testing.assert_allclose(y, ref.mean(axis=(2, 3)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("build, gates", [("lstm_classifier", 4), ("gru_classifier", 3), ("rnn_classifier", 1)])
def test_recurrent_weights_count_their_macs_once_a_time_step(build, gates):
    """W [D, G·H, I] and R [D, G·H, H] run at every step of X [T, N, I]: MACs a sample = size x T (was unknown)."""
    from onnxprune.models import builders_control

    m = getattr(builders_control, build)(features=8, hidden=16, steps=5)
    got = {w.name: (w.size, w.macs) for w in find_prunable(m).prunable if w.op_type in ("LSTM", "GRU", "RNN")}
    assert len(got) == 2 and all(macs == 5 * size for size, macs in got.values())
    assert sorted(size for size, _ in got.values()) == sorted([gates * 16 * 8, gates * 16 * 16])


def test_a_matrix_in_an_onnxruntime_fused_kernel_says_to_prune_before_fusing():
    """onnxruntime.transformers.optimizer's output (a helper's MiniLM: Attention's QKV weights, 2.66M, and
    EmbedLayerNormalization's tables) read "not a weight of Conv/.../RNN (used by Attention)". A fused kernel whose
    weight is a linear layer's (FusedMatMul, Attention: tests/passes/test_fused_kernels.py) is pruned; the others
    say to prune before fusing."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("EmbedLayerNormalization", ["ids", "", "table", "positions", "", "gamma", "beta"],
                          ["e", "mask"], domain="com.microsoft", name="embed"),
         helper.make_node("FusedMatMul", ["e", "W"], ["y"], domain="com.microsoft", name="fused"),
         helper.make_node("SkipLayerNormalization", ["y", "e", "gamma"], ["z"], domain="com.microsoft",
                          name="skip")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, ["N", 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, 8])],
        [numpy_helper.from_array(rng.standard_normal([8, 8]).astype(np.float32), "W"),
         numpy_helper.from_array(rng.standard_normal([30, 8]).astype(np.float32), "table"),
         numpy_helper.from_array(rng.standard_normal([4, 8]).astype(np.float32), "positions"),
         numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
         numpy_helper.from_array(np.zeros(8, np.float32), "beta")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    inv = find_prunable(model)
    reasons = {s.name: s.reason for s in inv.skipped}
    assert "W" in {w.name for w in inv.prunable}
    assert ("fused com.microsoft.EmbedLayerNormalization 'embed'" in reasons["table"]
            and "before onnxruntime fuses it" in reasons["table"])
    assert "fused" not in reasons["gamma"]  # a vector: not a matrix anyone would prune


def test_a_weight_as_the_first_matmul_operand_counts_a_multiply_add_per_column():
    """W [32, 28] @ x [N, 28, 64] (an MLP-Mixer's token mixing, torch dynamo): 32·28·64 MACs a sample, not 32·28·32."""
    rng = np.random.default_rng(0)
    m = _model([helper.make_node("MatMul", ["W", "x"], ["y"], name="mix")],
               [numpy_helper.from_array(rng.standard_normal([32, 28]).astype(np.float32), "W")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 28, 64])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32, 64])])
    (w,) = find_prunable(m).prunable
    assert w.name == "W" and w.macs == 32 * 28 * 64


def test_an_embedding_table_two_gathers_read_alike_is_one_weight():
    """Sweep 17: T5's shared embedding, read by the encoder's and the decoder's Gather, was "used in different ways".
    One table, one mask, two readers; a Gather with a constant index beside it keeps the refusal."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((20, 8)).astype(np.float32), "shared")
    w = numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "W")

    def model(second_ids: str, extra=()):
        nodes = [helper.make_node("Gather", ["shared", "ids"], ["e1"]),
                 helper.make_node("Gather", ["shared", second_ids], ["e2"]),
                 helper.make_node("Add", ["e1", "e2"], ["e"]), helper.make_node("MatMul", ["e", "W"], ["y"])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", 6])
                                               for n in ("ids", "dec_ids")],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 5])],
                                  [table, w, *extra])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    inv = find_prunable(model("dec_ids"))
    assert [(p.name, p.kind, p.readers) for p in inv.prunable] == [("shared", "embedding", 2), ("W", "fc", 1)]
    fixed = numpy_helper.from_array(np.zeros((1, 6), np.int64), "fixed_ids")
    inv = find_prunable(model("fixed_ids", (fixed,)))
    assert "shared" not in {p.name for p in inv.prunable}


def test_qoperator_gemm_weights_are_named_among_the_integer_weights():
    """onnxruntime's quantize_static in QOperator format writes a Linear as com.microsoft QGemm (weight at input 3):
    a CNN's refusal counted "7 of the 7 weights seen" (its QLinearConvs) and never named its two QGemm layers
    (sweep 18)."""
    from onnxprune.converter.steps.load import inventory_of
    from onnxprune.errors import ConverterError

    x = helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, ["N", 3])
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z"),
             numpy_helper.from_array(np.ones((3, 4), np.int8), "fc.weight_quantized"),
             numpy_helper.from_array(np.array(0.05, np.float32), "ws"), numpy_helper.from_array(np.array(0, np.int8), "wz")]
    node = helper.make_node("QGemm", ["x", "s", "z", "fc.weight_quantized", "ws", "wz", "", "s", "z"], ["y"],
                            name="fc_quant", domain="com.microsoft", transB=1)
    graph = helper.make_graph([node], "qgemm", [x], [y], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                          ir_version=8)
    reasons = {s.name: s.reason for s in find_prunable(m).skipped}
    assert reasons["fc.weight_quantized"].startswith("integer dtype (quantized weight of QGemm 'fc_quant')")
    with pytest.raises(ConverterError, match="1 of the 1 weights seen are integer-quantized .all.*QGemm"):
        inventory_of(m, where="m.onnx")


def test_an_integer_embedding_table_read_by_gather_then_dequantize_is_listed_with_what_to_do():
    """Sweep 26: all-MiniLM-L6-v2 through onnxruntime's quantize_dynamic: its uint8 word table [30522, 384], half the
    file, read by Gather and then DequantizeLinear, was in neither of inspect's lists (the inventory's total said
    10.6M weights of a 22.9 MB file)."""
    from onnxprune.models.third_party_builders import quantized_lookup_encoder
    from tests.oracle import check_full, run

    m = quantized_lookup_encoder()
    check_full(m)
    ids = np.random.default_rng(0).integers(0, 20, (3, 5)).astype(np.int64)
    assert run(m, {"input_ids": ids})["pooled"].shape == (3, 6)
    inv = find_prunable(m)
    reasons = {s.name: s.reason for s in inv.skipped}
    assert reasons["table_quantized"].startswith("an integer-quantized embedding table: Gather '/embed/Gather' reads its rows")
    assert "prune the float model, then quantize the pruned one" in reasons["table_quantized"]
    assert [p.name for p in inv.prunable] == ["proj.weight"]


def test_an_rms_norm_scale_is_listed_as_a_normalization_parameter():
    """Sweep 20: torch dynamo's nn.RMSNorm at opset 23 (RMSNormalization) had its scale listed as "not a weight of
    Conv/ConvTranspose/Gemm/MatMul/... (used by RMSNormalization)"."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("RMSNormalization", ["x", "scale"], ["n"]), helper.make_node("MatMul", ["n", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.ones(8, np.float32), "scale"),
         numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    reasons = {s.name: s.reason for s in find_prunable(model).skipped}
    assert reasons["scale"].startswith("normalization parameter of RMSNormalization"), reasons


def test_a_table_several_elementwise_ops_read_is_said_to_be_no_weight():
    """Sweep 24's rotary-embedding model (torch dynamo): the folded cos/sin tables, read by eight Muls each, were
    listed as "shared by 'node_mul_72', ..." as if a weight several layers shared."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    cos, w = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "cos"], ["a"], name="mul_a"),
             helper.make_node("Mul", ["a", "cos"], ["b"], name="mul_b"),
             helper.make_node("MatMul", ["b", "w"], ["y"], name="mm")]
    m = _model(nodes, [numpy_helper.from_array(cos, "cos"), numpy_helper.from_array(w, "w")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 3])])
    onnx.checker.check_model(m, full_check=True)
    inv = find_prunable(m)
    assert [w.name for w in inv.prunable] == ["w"]
    (reason,) = [s.reason for s in inv.skipped if s.name == "cos"]
    assert reason.startswith("not a weight of Conv/") and reason.endswith("(used by 2 nodes: Mul)"), reason
    x = rng.standard_normal((2, 4, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, (x * cos * cos) @ w, rtol=1e-5, atol=1e-5)


def test_a_layer_in_an_if_branch_has_its_macs_and_a_loop_bodys_stay_unknown():
    """Shape inference gives the shapes inside If branches too, but only the main graph's were read: every layer of
    sweep 27's torch.cond model (an If on a fully static [1, 1, 28, 28] input) had MACs "unknown". A Loop body's
    layer runs once an iteration: its MACs a sample stay unknown rather than one iteration's."""
    from onnxprune.models.third_party_builders import cond_while_rnn, scripted_lstm
    from onnxprune.passes.base import PruneState
    from onnxprune.passes.loading import run_load_passes

    model = scripted_lstm(in_if=True, hidden=6, classes=3)
    run_load_passes(model, PruneState())
    fc = find_prunable(model).by_name()["fc.weight"]
    assert fc.scope and fc.readers == 2 and fc.macs == 18  # one branch runs: 3 x 6 once
    model = cond_while_rnn()
    run_load_passes(model, PruneState())
    found = find_prunable(model).by_name()
    assert found["W"].macs is None and found["R"].macs is None and found["head.weight"].macs == 24


def test_a_constant_a_branch_returns_as_its_output_is_not_said_to_be_used_by_nothing():
    """torch dynamo's nn.EmbeddingBag (sweep 28's DLRM): an If branch returns a zero row 'row_result' [16] for an
    empty bag; inspect listed it "not a weight of Conv/... (used by nothing)"."""
    import numpy as np

    from tests.oracle import run

    zero = helper.make_node("Constant", [], ["row_result"], value=numpy_helper.from_array(np.zeros(4, np.float32)))
    then = helper.make_graph([zero], "then", [], [helper.make_tensor_value_info("row_result", TensorProto.FLOAT, [4])])
    other = helper.make_graph([helper.make_node("ReduceMean", ["rows"], ["mean"], axes=[0], keepdims=0)], "else", [],
                              [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [4])])
    graph = helper.make_graph(
        [helper.make_node("If", ["empty"], ["row"], then_branch=then, else_branch=other),
         helper.make_node("Unsqueeze", ["row", "zero"], ["row2"]), helper.make_node("MatMul", ["row2", "W"], ["y"])],
        "g", [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [3, 4]),
              helper.make_tensor_value_info("empty", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.ones((4, 2), np.float32), "W"), numpy_helper.from_array(np.zeros(1, np.int64), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(run(model, {"rows": rows, "empty": np.array(True)})["y"], np.zeros((1, 2)))
    reasons = {s.name: s.reason for s in find_prunable(model).skipped}
    assert reasons["row_result"] == "a constant a graph or If/Loop/Scan body returns as its output, read by no layer"


def test_an_integer_weight_of_an_onnxruntime_quantized_fused_kernel_is_listed_with_what_to_do():
    """quantize_dynamic of a transformer-optimized BERT (sweep 28): QAttention's int8 QKV [64, 192] and
    QEmbedLayerNormalization's int8 tables were in neither of inspect's lists (an integer tensor not read by a known
    quantized op was taken for an index or a shape)."""
    import numpy as np

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(-127, 127, (16, 48)).astype(np.int8), "qkv_weight_quantized"),
             numpy_helper.from_array(np.zeros(48, np.float32), "qkv_bias"),
             numpy_helper.from_array(np.array(0.1, np.float32), "w_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
             numpy_helper.from_array(np.array([3, 1], np.int64), "shape_like")]  # an int64 vector: no line
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "x_scale", "x_zero"]),
             helper.make_node("QAttention", ["xq", "qkv_weight_quantized", "qkv_bias", "x_scale", "w_scale", "",
                                             "x_zero", "w_zero"], ["att"], domain="com.microsoft", name="Attention_0_quant",
                              num_heads=2),
             helper.make_node("Reshape", ["att", "shape_like"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    reasons = {s.name: s.reason for s in find_prunable(model).skipped}
    assert reasons["qkv_weight_quantized"].startswith(
        "an integer-quantized weight of onnxruntime's com.microsoft.QAttention 'Attention_0_quant', which no pass folds "
        "back to float: prune the float model")
    assert "shape_like" not in reasons and "w_zero" not in reasons


def test_the_vectors_of_onnxruntimes_fused_normalizations_and_activations_are_named_for_what_they_are():
    """onnxruntime.transformers.optimizer's BERT (sweep 28): SkipLayerNormalization's gamma/beta and the layer bias it
    adds, BiasGelu's bias and EmbedLayerNormalization's gamma/beta all read "not a weight of Conv/... (used by
    SkipLayerNormalization)"."""
    import numpy as np

    vec = {n: numpy_helper.from_array(np.ones(8, np.float32), n) for n in ("gamma", "beta", "o.bias", "f1.bias")}
    nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "o.bias"], ["s"],
                              domain="com.microsoft", name="SkipLayerNorm_AddBias_0"),
             helper.make_node("BiasGelu", ["s", "f1.bias"], ["y"], domain="com.microsoft", name="Gelu_AddBias_0")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3, 8])
                                           for n in ("x", "skip")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8])], list(vec.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    reasons = {s.name: s.reason for s in find_prunable(model).skipped}
    for name in ("gamma", "beta"):
        assert reasons[name] == "normalization parameter of onnxruntime's SkipLayerNormalization 'SkipLayerNorm_AddBias_0'"
    assert reasons["o.bias"] == "a layer's bias, fused into onnxruntime's SkipLayerNormalization 'SkipLayerNorm_AddBias_0'"
    assert reasons["f1.bias"] == "a layer's bias, fused into onnxruntime's BiasGelu 'Gelu_AddBias_0'"


def _halved(model: onnx.ModelProto, name: str, shape: tuple, tmp_path) -> onnx.ModelProto:
    """`model` pruned at --sparsity 0.5 (stored dense), checked whole, its tied weight `name` about half zeros."""
    from onnxprune import prune

    out = tmp_path / "o.onnx"
    prune(model, output=out, sparsity=0.5, sparse_format="dense")
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    w = numpy_helper.to_array(next(t for t in written.graph.initializer if t.name == name))
    assert w.shape == shape and 0.4 <= np.mean(w == 0) <= 0.6
    return written


@pytest.mark.parametrize("form", ["legacy", "dynamo"])
def test_a_weight_read_as_w_and_as_its_transpose_is_one_tied_weight(tmp_path, form):
    """Sweep 33: a tied autoencoder (torch's F.linear(h, enc.weight.t()): one Gemm reads W with transB=1, the decoder's
    with transB=0) was "used in different ways" and kept whole, 99% of its weights. A mask is elementwise, so one
    serves both readers: the weight is prunable, its MACs count both, and a pruned model computes in onnxruntime what
    the input computes with the same entries zeroed in both readers; dynamo's form (a Transpose into the decoder's
    Gemm) too. A Conv reading it beside a Gemm stays refused."""
    from onnxprune.models.third_party_builders import tied_autoencoder
    from tests.oracle import assert_same_outputs

    model = tied_autoencoder(form=form)
    onnx.checker.check_model(model, full_check=True)
    tied = find_prunable(model).by_name()["enc.weight"]
    assert (tied.node, tied.readers, tied.out_axis, tied.in_axis, tied.macs) == ("/enc/Gemm", 2, 0, 1, 2 * 96)
    written = _halved(model, "enc.weight", (8, 12), tmp_path)
    reads = [i for n in written.graph.node if n.op_type in ("Gemm", "Transpose") for i in n.input]
    assert reads.count("enc.weight") == 2
    assert_same_outputs(written, _zeros_of(written, model))  # the input with the written model's zeros zeroed
    conv = tied_autoencoder()
    conv.graph.node.append(helper.make_node("Conv", ["input", "enc.weight"], ["c"], name="conv"))
    assert "used in different ways" in {s.name: s.reason for s in find_prunable(conv).skipped}["enc.weight"]


def test_a_kernel_a_conv_and_a_conv_transpose_read_is_one_tied_weight(tmp_path):
    """Sweep 34: a tied convolutional autoencoder (F.conv_transpose2d(h, enc.weight): a Conv and a ConvTranspose read
    one kernel, its axes 0 and 1 in opposite roles) had both kernels "used in different ways", 35% of its weights;
    TridentNet's kernel, read by Convs at three dilations, 91%.
    One mask serves both readers: the kernel is prunable, its MACs count both, its row names the Conv's output
    channels, and the written model computes in onnxruntime what the input computes with the same entries zeroed.
    A reader of another kind stays refused."""
    from onnxprune import prune
    from onnxprune.models.third_party_builders import tied_conv_autoencoder
    from tests.oracle import assert_same_outputs

    model = tied_conv_autoencoder()
    onnx.checker.check_model(model, full_check=True)
    tied = find_prunable(model).by_name()["enc.weight"]
    assert (tied.node, tied.readers, tied.out_axis, tied.macs) == ("/enc/Conv", 2, 0, 2 * 96 * 16)
    out = tmp_path / "o.onnx"
    report = prune(model, output=out, sparsity=0.5, sparse_format="dense")
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    w = numpy_helper.to_array(next(t for t in written.graph.initializer if t.name == "enc.weight"))
    assert w.shape == (6, 1, 4, 4) and 0.4 <= np.mean(w == 0) <= 0.6
    assert [i for n in written.graph.node for i in n.input].count("enc.weight") == 2
    row = next(r for r in report.report["layers"] if r["weight"] == "enc.weight")
    assert row["neurons_before"] == 6  # the Conv's channels, not the ConvTranspose's one
    assert_same_outputs(written, _zeros_of(written, model))
    trident = tied_conv_autoencoder()  # TridentNet: the kernel also applied at dilation 2, another Conv
    trident.graph.node.append(helper.make_node("Conv", ["input", "enc.weight"], ["d2"], name="dilated",
                                               kernel_shape=[4, 4], dilations=[2, 2], pads=[3, 3, 3, 3]))
    assert find_prunable(trident).by_name()["enc.weight"].readers == 3
    read = tied_conv_autoencoder()  # a reader that is no Conv/ConvTranspose weight input
    read.graph.node.append(helper.make_node("Neg", ["enc.weight"], ["n"], name="neg"))
    assert "used in different ways" in {s.name: s.reason for s in find_prunable(read).skipped}["enc.weight"]


def _zeros_of(written, model):
    """`model` with the written model's zeros of each '.weight' zeroed: the oracle a pruned tied weight is checked
    against in onnxruntime."""
    oracle = onnx.ModelProto()
    oracle.CopyFrom(model)
    pruned = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer if t.name.endswith(".weight")}
    for init in oracle.graph.initializer:
        if init.name in pruned:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * (pruned[init.name] != 0), init.name))
    return oracle


@pytest.mark.parametrize("form", ["dynamo", "gemm"])
def test_an_embedding_the_output_layer_reads_too_is_one_tied_weight(tmp_path, form):
    """Session 43: a char LM exported by dynamo reads its table `head.weight` with a Gather (the embedding) and, through
    a Transpose, with its output MatMul (torch's tied head): "used in different ways", kept whole, and in a language
    model it is the largest weight. A mask is elementwise, so one serves both readers. The output layer claims it: a
    weight op's kind (every row is multiplied by it: no unread rows to hold back), its MACs (the lookup has none);
    the sensitivity scan follows its own chain past the Gather; the layer-wise refit leaves it as pruned and says
    why; a pruned model computes in onnxruntime what the input computes with the same entries zeroed."""
    from onnxprune.calibration.sensitivity import _GraphIndex
    from onnxprune.converter.reconstruct import ReconstructReport, _layers
    from onnxprune.models.third_party_builders import tied_lm
    from tests.oracle import assert_same_outputs

    model = tied_lm(form=form)
    onnx.checker.check_model(model, full_check=True)
    inv = find_prunable(model)
    tied = inv.by_name()["emb.weight"]
    node = "/head/Gemm" if form == "gemm" else "/head/MatMul"
    steps = 1 if form == "gemm" else 6
    assert (tied.node, tied.kind, tied.readers, tied.macs) == (node, "fc", 2, steps * 8 * 20)
    assert tied.via == (() if form == "gemm" else ("Transpose",))
    assert not inv.skipped or "emb.weight" not in {s.name for s in inv.skipped}
    index = _GraphIndex(model)
    assert index.nodes[index.consumer_of(tied)].name == node
    report = ReconstructReport()
    masks = {n: np.ones(inv.by_name()[n].shape, bool) for n in ("emb.weight", "mix.weight")}
    _layers(model, masks, report)
    assert "also the embedding table of Gather" in report.skipped["emb.weight"]
    rng = np.random.default_rng(0)
    shape = (64,) if form == "gemm" else (64, 6)
    data = {"tokens": rng.integers(0, 20, shape).astype(np.int64)}
    written = _halved(model, "emb.weight", (20, 8), tmp_path)
    reads = [n.op_type for n in written.graph.node if "emb.weight" in n.input]
    assert sorted(reads) == sorted(["Gather", "Gemm" if form == "gemm" else "Transpose"])
    assert_same_outputs(written, _zeros_of(written, model), feeds=[{"tokens": data["tokens"][:16]}])
    # a Gather of the table with a constant index (a bank) beside the head stays refused
    bank = tied_lm(form=form)
    bank.graph.initializer.append(numpy_helper.from_array(np.array(3, np.int64), "three"))
    bank.graph.node.append(helper.make_node("Gather", ["emb.weight", "three"], ["row3"], name="bank"))
    assert "emb.weight" in {s.name for s in find_prunable(bank).skipped}


def test_a_weight_computed_into_more_values_than_stored_is_said_to_stay_computed():
    """Sweep 44: a quaternion layer's Hamilton-product weight, assembled in forward from w [4, 196, 32] (95% of the
    model's values), was "not a weight of Conv/... (used by Split)". constant_weights stores a computed weight as its
    constant only where the file does not grow; the reason now says that, with the sizes. A computed weight that
    holds no more values than stored (folded by constant_weights) is no such case."""
    from onnxprune.models.third_party_builders import hamilton_linear
    from onnxprune.passes.constant_weights import computed_weights

    m = hamilton_linear()
    onnx.checker.check_model(m, full_check=True)
    assert computed_weights(m) == []  # 96 values from 24 stored: not folded
    inv = find_prunable(m)
    assert [w.name for w in inv.prunable] == ["fc.weight"]
    reason = next(s.reason for s in inv.skipped if s.name == "w")
    assert reason.startswith("computed in the graph (Concat/Neg/Split/Squeeze) into the weight of MatMul '/q/MatMul'"
                             ), reason
    assert "96 values from 24 stored" in reason and "stays computed and is not pruned" in reason
    # a weight computed into as many values as stored (Neg of W [8, 12]) is none: constant_weights folds that one
    w = numpy_helper.from_array(np.ones((8, 12), np.float32), "W")
    graph = helper.make_graph([helper.make_node("Neg", ["W"], ["negW"]), helper.make_node("MatMul", ["x", "negW"],
                                                                                          ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])], initializer=[w])
    same = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert len(computed_weights(same)) == 1
    assert not any(s.reason.startswith("computed in the graph") for s in find_prunable(same).skipped)


def test_each_stored_source_of_a_weight_computed_into_more_values_is_said_to_stay_computed():
    """Sweep 46: a p4 lifting conv's kernel rotated in forward, Concat(w, rot1(w.t), rot2(w.t)) with w.t the legacy
    exporter's folded transpose of w. The stay-computed reason was given for w.t but w read "not a weight of
    Conv/... (used by Concat)": the Concat also reads a tensor computed from w.t, which the walk from w did not
    count as a constant. Both are now said so, with the same sizes (108 values from 72 stored); the model runs in
    onnxruntime as the rotations computed in numpy say."""
    import onnxruntime as ort

    from onnxprune.models.third_party_builders import p4_lifting_conv
    from onnxprune.passes.constant_weights import computed_weights

    m = p4_lifting_conv()
    onnx.checker.check_model(m, full_check=True)
    assert computed_weights(m) == []  # 108 values from 72 stored: not folded
    inv = find_prunable(m)
    assert [w.name for w in inv.prunable] == ["fc.weight"]
    reasons = {s.name: s.reason for s in inv.skipped}
    for name in ("w", "w.t"):
        assert reasons[name].startswith("computed in the graph ("), reasons[name]
        assert "into the weight of Conv '/lift/Conv', 108 values from 72 stored" in reasons[name], reasons[name]
        assert "stays computed and is not pruned" in reasons[name]
    consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    w = consts["w"]
    rot1 = w.transpose(0, 1, 3, 2)[:, :, ::-1]
    weight = np.concatenate([w, rot1, rot1.transpose(0, 1, 3, 2)[:, :, ::-1]])
    x = np.random.default_rng(0).standard_normal((5, 1, 6, 6)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.stack([np.einsum("nchw,ochw->no", xp[:, :, i:i + 3, j:j + 3], weight)
                     for i in range(6) for j in range(6)], 2) + consts["lift.bias"][None, :, None]
    want = np.maximum(conv, 0).mean(2) @ consts["fc.weight"].T + consts["fc.bias"]
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_bias_carried_unchanged_into_a_loop_is_said_by_what_reads_it_in_the_body():
    """Sweep 47's Keras `ops.while_loop` around a Dense (tf2onnx): the Dense's bias, a value the Loop carries
    unchanged into its body, was "not a weight of Conv/... (used by Loop)" in inspect's list. It is the body's bias:
    said by the node that reads it there."""
    from onnxprune.models.third_party_builders import carried_loop_rnn
    from tests.oracle import check_full, run

    model = carried_loop_rnn(seed=0, bias=True)
    check_full(model)
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    b = next(t for t in zeroed.graph.initializer if t.name == "B")
    b.CopyFrom(numpy_helper.from_array(np.zeros(8, np.float32), "B"))
    assert not np.allclose(run(model, {"x": x})["logits"], run(zeroed, {"x": x})["logits"])  # read in the body
    inv = find_prunable(model)
    why = {s.name: s.reason for s in inv.skipped}
    assert why["B"] == ("carried unchanged into Loop '/rnn/Loop': added by Add '/body/BiasAdd' (a bias, or a learned "
                        "position table)"), why
    assert {"R", "head.weight"} <= {w.name for w in inv.prunable}


def test_a_kernel_a_conv_reads_and_its_square_demodulates_is_prunable(tmp_path):
    """Sweep 49: StyleGAN2's modulated convolution, demodulated, as torch legacy exports it: a Conv reads W and
    Pow(W, 2) -> ReduceSum gives the per-sample demodulation. W, 87% of the model's weights, was "used in different
    ways". Both read the pruned kernel (a mask is elementwise): W is prunable, one layer with the Conv's MACs, and the
    written model computes in onnxruntime what the input computes with the same entries zeroed. Another reader of W
    (a Neg, a Mul by the data) stays refused."""
    from onnxprune import prune
    from onnxprune.models.third_party_builders import modulated_conv
    from tests.oracle import assert_same_outputs

    model = modulated_conv()
    onnx.checker.check_model(model, full_check=True)
    w = find_prunable(model).by_name()["W"]
    assert (w.node, w.readers, w.out_axis, w.macs) == ("/mod/Conv", 1, 0, 8 * 4 * 9 * 36)
    out = tmp_path / "o.onnx"
    prune(model, output=out, sparsity=0.5, sparse_format="dense")
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    kernel = numpy_helper.to_array(next(t for t in written.graph.initializer if t.name == "W"))
    assert kernel.shape == (8, 4, 3, 3) and 0.4 <= np.mean(kernel == 0) <= 0.6
    assert {n.op_type for n in written.graph.node if "W" in n.input} == {"Conv", "Pow"}
    oracle = onnx.ModelProto()
    oracle.CopyFrom(model)
    for init in oracle.graph.initializer:
        pruned = next(t for t in written.graph.initializer if t.name == init.name)
        if init.name in ("W", "style.weight", "head.weight"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * (numpy_helper.to_array(pruned) != 0),
                                                  init.name))
    assert_same_outputs(written, oracle)
    for op, other in (("Neg", []), ("Mul", ["image"])):
        read = modulated_conv()
        read.graph.node.append(helper.make_node(op, ["W", *other], ["n"], name="other"))
        assert "used in different ways" in {s.name: s.reason for s in find_prunable(read).skipped}["W"]


def test_an_expert_bank_several_gathers_slice_is_one_prunable_weight(tmp_path):
    """Sweep 57: HuggingFace transformers 5's Mixtral by torch's legacy exporter: the eager experts loop unrolled into
    one Gather an expert of the stacked bank `experts.gate_up_proj` [E, 2I, H] (a scalar index computed at run time)
    -> Transpose -> MatMul. The bank was "used in different ways" and kept whole: 82% of the model's weights. A mask
    is elementwise, so one serves every expert: the bank is prunable, its readers are the Gathers, the layer-wise
    refit leaves it as pruned and says why, and a pruned model computes in onnxruntime what the input computes with
    the same entries zeroed, whichever experts the data picks. A Gather whose matrix reaches another use stays
    refused."""
    from onnxprune.converter.reconstruct import ReconstructReport, _layers
    from onnxprune.models.third_party_builders import unrolled_experts
    from tests.oracle import assert_same_outputs

    model = unrolled_experts()
    onnx.checker.check_model(model, full_check=True)
    inv = find_prunable(model)
    bank = inv.by_name()["experts.weight"]
    assert (bank.node, bank.kind, bank.readers, bank.via, bank.out_axis, bank.in_axis) == (
        "/experts/0/MatMul", "fc", 4, ("Gather", "Transpose"), 1, 2)
    assert "experts.weight" not in {s.name for s in inv.skipped}
    report = ReconstructReport()
    _layers(model, {n: np.ones(inv.by_name()[n].shape, bool) for n in inv.by_name()}, report)
    assert "left as pruned" in report.skipped["experts.weight"]
    written = _halved(model, "experts.weight", (4, 12, 8), tmp_path)
    assert [n.op_type for n in written.graph.node if "experts.weight" in n.input] == ["Gather"] * 4
    rng = np.random.default_rng(0)
    feeds = [{"input": (rng.standard_normal((16, 8)) + shift).astype(np.float32)} for shift in (-2.0, 0.0, 2.0)]
    assert_same_outputs(written, _zeros_of(written, model), feeds=feeds)
    other = unrolled_experts()  # one expert's matrix also read by a Neg: no longer alike
    other.graph.node.append(helper.make_node("Neg", ["/experts/3/Gather_output_0"], ["neg"], name="neg"))
    assert "used in different ways" in {s.name: s.reason for s in find_prunable(other).skipped}["experts.weight"]


def test_an_expert_bank_a_gathernd_reads_one_matrix_a_sample_from_is_a_prunable_weight(tmp_path):
    """Sweep 57: the same Mixtral by torch's dynamo exporter (transformers 5's batched_mm experts): GatherND picks each
    token's expert matrix from the bank [E, 2I, H] ([T, 1] ids), the first operand of a batched MatMul. The bank was
    "not a weight of ... (used by GatherND)". Now it is a weight the rows multiply (a matrix's MACs a row, no
    channels), the layer-wise refit leaves it as pruned, a pruned model computes in onnxruntime what the input
    computes with the same entries zeroed, and an automatic run with labels retrains it through the torch bridge.
    A GatherND whose index picks more than whole matrices ([N, 2]) stays no weight."""
    from onnxprune import prune
    from onnxprune.converter.reconstruct import ReconstructReport, _layers
    from onnxprune.models.third_party_builders import gathered_experts
    from tests.oracle import assert_same_outputs, run

    model = gathered_experts()
    onnx.checker.check_model(model, full_check=True)
    inv = find_prunable(model)
    bank = inv.by_name()["experts.weight"]
    assert (bank.node, bank.input_index, bank.via, bank.out_axis, bank.macs) == (
        "/experts/MatMul", 0, ("GatherND",), None, 12 * 8)
    report = ReconstructReport()
    _layers(model, {n: np.ones(inv.by_name()[n].shape, bool) for n in inv.by_name()}, report)
    assert "left as pruned" in report.skipped["experts.weight"]
    written = _halved(model, "experts.weight", (4, 12, 8), tmp_path)
    rng = np.random.default_rng(0)
    assert_same_outputs(written, _zeros_of(written, model),
                        feeds=[{"input": rng.standard_normal((32, 8)).astype(np.float32)} for _ in range(3)])
    x = rng.standard_normal((400, 8)).astype(np.float32)
    labels = np.asarray(run(model, {"input": x})["logits"]).argmax(1)
    result = prune(model, output=tmp_path / "auto.onnx", data={"input": x, "labels": labels}, max_loss=1.0,
                   time_budget=10, seed=0)
    auto = onnx.load(tmp_path / "auto.onnx")
    onnx.checker.check_model(auto, full_check=True)
    assert result.report["metrics"]["loss_pp"] <= 1.0
    assert any(n.startswith("recovery by sgd (the torch bridge") for n in result.state.notes)
    pairs = gathered_experts()  # ids [N, 2]: a row of one matrix each, no whole weights
    nd = next(n for n in pairs.graph.node if n.op_type == "GatherND")
    pairs.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 2), np.int64), "pair"))
    nd.input[1] = "pair"
    assert "experts.weight" not in find_prunable(pairs).by_name()
