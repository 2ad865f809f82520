"""calibration.shapes: the size random inputs get for non-batch symbolic dims, chosen once per run."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calibration import shapes as shapes_mod
from onnxprune.calibration.runtime import make_session, random_feeds
from onnxprune.calibration.shapes import SIZE_LADDER, batch_axes, choose_random_shapes
from onnxprune.errors import ConfigError, ModelError
from onnxprune.models import builders
from onnxprune.models import third_party_builders as tb


def _runs(model, shapes) -> bool:
    try:
        make_session(model, optimize=False).run(None, random_feeds(model, seed=0, shapes=shapes))
    except Exception:
        return False
    return True


def test_batch_like_dims_are_axis_0_the_time_major_axis_1_and_a_lone_state_axis():
    assert batch_axes(tb.streaming_vad()) == {"audio": {0}, "sr": set(), "state": {1}}
    assert batch_axes(tb.time_major_lstm()) == {"x": {1}}
    assert batch_axes(tb.strided_detector()) == {"image": {0}}
    state = tb.streaming_vad()
    for vi in state.graph.input:  # unnamed dims, as silero_vad declares them: [?, 16], [2, ?, 8]
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.Clear()
    assert batch_axes(state) == {"audio": {0}, "sr": set(), "state": {1}}


def test_a_strided_stack_gets_the_first_size_it_runs_at_and_a_note_saying_so():
    model = tb.strided_detector()
    assert not _runs(model, None)  # the old default: every symbolic dim at 2
    chosen = choose_random_shapes(model)
    assert SIZE_LADDER == (2, 32, 64, 224)
    assert chosen.size == 32 and chosen.shapes == {"image": (None, 3, 32, 32)}
    assert "'image' [N, 3, 32, 32]" in chosen.note and "symbolic dims at 2 (Conv '/conv" in chosen.note
    assert "\n" not in chosen.note
    feed = random_feeds(model, seed=0, shapes=chosen.shapes)
    assert feed["image"].shape == (2, 3, 32, 32)  # batch-like dims stay the caller's batch
    assert random_feeds(model, batch=1, seed=0, shapes=chosen.shapes)["image"].shape == (1, 3, 32, 32)
    assert _runs(model, chosen.shapes)


def test_a_model_that_runs_at_2_keeps_2_and_says_nothing():
    chosen = choose_random_shapes(tb.variable_width())
    assert chosen.size == 2 and chosen.shapes == {"image": (None, 3, 2, 2)} and chosen.note is None


def test_without_non_batch_symbolic_dims_nothing_is_probed(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("no session should be built")

    monkeypatch.setattr(shapes_mod, "make_session", refuse)
    assert choose_random_shapes(builders.lenet300_like(hidden=(8, 4))) == shapes_mod.RandomShapes({}, None, None)
    given = {"image": (1, 3, 20, 20)}  # --input-shape covers every symbolic dim: used as given
    assert choose_random_shapes(tb.strided_detector(), given).shapes == given
    with pytest.raises(ConfigError, match="does not fit the declared shape"):
        choose_random_shapes(tb.strided_detector(), {"image": (1, 20, 20)})


def test_a_model_that_runs_at_no_size_is_one_line_naming_shapes_and_both_fixes():
    model = tb.fixed_size_map()
    assert _runs(model, {"image": (1, 3, 48, 48)})
    with pytest.raises(ModelError) as err:
        choose_random_shapes(model)
    msg = str(err.value)
    assert "\n" not in msg and "symbolic dims at 2, 32, 64, 224" in msg
    assert "(declared: 'image' [N, 3, H, W])" in msg and "Add '/pos/Add'" in msg
    assert "--input-shape image=1,3,H,W (numbers in place of H, W)" in msg and "real samples with --data" in msg


def _scalar_rate_model() -> onnx.ModelProto:
    """audio [N, T] reshaped to rows of 24 (T fixed in the graph, not the declaration) and a scalar 'sr'."""
    w = numpy_helper.from_array(np.ones((24, 2), np.float32), "fc.weight")
    rows = numpy_helper.from_array(np.array([-1, 24], np.int64), "rows")
    nodes = [helper.make_node("Reshape", ["audio", "rows"], ["flat"], name="/flat/Reshape"),
             helper.make_node("Cast", ["sr"], ["srf"], name="/sr/Cast", to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["flat", "fc.weight"], ["mm"], name="/fc/MatMul"),
             helper.make_node("Mul", ["mm", "srf"], ["out"], name="/out/Mul")]
    graph = helper.make_graph(nodes, "rate", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", "T"]),
                                              helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["M", 2])],
                              initializer=[w, rows])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_scalar_input_is_said_to_need_real_data():
    with pytest.raises(ModelError) as err:
        choose_random_shapes(_scalar_rate_model())
    msg = str(err.value)
    assert "'sr' is a scalar that random values cannot stand in for: pass real samples with --data" in msg
    assert "--input-shape audio=1,T" in msg and "'audio' [N, T], 'sr' []" in msg
    chosen = choose_random_shapes(_scalar_rate_model(), {"audio": (2, 12)})  # runs: the scalar is still named
    assert chosen.size is None and "'sr' (int64) drawn at random ([0, 2))" in chosen.note


def test_sizes_too_big_to_allocate_are_not_tried():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "A", "B", "C"])  # 2 * 224^3 > 2^24 elements
    pos = numpy_helper.from_array(np.zeros((1, 5, 5, 5), np.float32), "pos")
    graph = helper.make_graph([helper.make_node("Add", ["x", "pos"], ["y"], name="/Add")], "cube", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[pos])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(ModelError, match=r"symbolic dims at 2, 32, 64 \(declared"):
        choose_random_shapes(model)


def test_a_crafted_huge_fixed_dim_is_not_allocated_but_left_to_the_verifier(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("no session should be built")

    monkeypatch.setattr(shapes_mod, "make_session", refuse)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10**7, "T"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="/Relu")], "huge", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert choose_random_shapes(model) == shapes_mod.RandomShapes({}, None, None)


def test_a_model_onnxruntime_cannot_load_is_left_to_the_verifier_to_name():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T"])
    graph = helper.make_graph([helper.make_node("Fancy", ["x"], ["y"], name="/Fancy", domain="com.example")], "custom",
                              [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
                              ir_version=8)
    assert choose_random_shapes(model, {"x": (1, 7)}) == shapes_mod.RandomShapes({"x": (1, 7)}, None, None)
    assert choose_random_shapes(model) == shapes_mod.RandomShapes({}, None, None)


def test_a_dim_named_by_arithmetic_of_others_is_that_arithmetic():
    """torch dynamo names an attention mask's length "P + 1" beside a past of length "P" (sweep 29's Qwen2 decoding
    step): every size gave the mask the past's length and the model ran at none ("GatherND ... invalid index")."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.calibration.shapes import choose_random_shapes, dim_expression

    assert [dim_expression(n, 32) for n in ("P + 1", "2*s0", "(s0 + 1)//2", "s0 - 40", "Max(1, s0)", "seq")] == \
        [33, 64, 16, 32, 32, 32]
    assert dim_expression("N + 1", 32, {"N"}) == 32  # a batch name inside: not read
    nodes = [helper.make_node("MatMul", ["past", "W"], ["h"], name="fc"),  # [N, P, 4] @ [4, 4]
             helper.make_node("ReduceSum", ["h", "last"], ["score"], keepdims=0),  # [N, P]
             helper.make_node("Slice", ["mask", "one", "big", "one"], ["tail"]),  # [N, P + 1] -> [N, P]
             helper.make_node("Shape", ["score"], ["shape"]),
             helper.make_node("Reshape", ["tail", "shape"], ["fitted"]),  # fails unless the mask is P + 1 long
             helper.make_node("Mul", ["score", "fitted"], ["y"])]
    inits = [numpy_helper.from_array(np.eye(4, dtype=np.float32), "W"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([1 << 30], np.int64), "big")]
    graph = helper.make_graph(nodes, "past", [helper.make_tensor_value_info("past", TensorProto.FLOAT, ["N", "P", 4]),
                                              helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", "P + 1"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "P"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    chosen = choose_random_shapes(model)
    assert chosen.size == 2 and chosen.shapes["mask"] == (None, 3) and chosen.shapes["past"] == (None, 2, 4)


def _decoding_step(mask_dim: str = "P + 1") -> onnx.ModelProto:
    """A decoding step as torch.onnx's dynamo declares one (sweep 29's Qwen2): 'x' [N, 1, 4] -> MatMul -> the new
    key [N, 2, 1, 4], Concat with 'past' [N, 2, P, 4] on axis 2, times 'mask' [N, P + 1] on the positions."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32), "W")
    shape = numpy_helper.from_array(np.array([0, 2, 1, 4], np.int64), "kshape")
    axes = numpy_helper.from_array(np.array([1, 3], np.int64), "axes")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["k"]), helper.make_node("Reshape", ["k", "kshape"], ["k4"]),
             helper.make_node("Concat", ["past", "k4"], ["keys"], axis=2),
             helper.make_node("Unsqueeze", ["mask_f", "axes"], ["m4"]),
             helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["keys", "m4"], ["y"])]
    nodes = [nodes[0], nodes[1], nodes[2], nodes[4], nodes[3], nodes[5]]
    graph = helper.make_graph(nodes, "step", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4]),
        helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", mask_dim]),
        helper.make_tensor_value_info("past", TensorProto.FLOAT, ["N", 2, "P", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, mask_dim, 4])], [w, shape, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_dim_declared_as_an_expression_of_another_is_drawn_at_its_value():
    """Sweep 29: torch.onnx's dynamo declared a Qwen2 decoding step's 'attention_mask' [N, P + 1] beside its past
    [N, 2, P, 16]; both got one size of the ladder, none ran ("GatherND: invalid index"), and `prune --sparsity 0.5`
    without --data failed. "P + 1" is now drawn at P + 1."""
    model = _decoding_step()
    chosen = choose_random_shapes(model)
    assert chosen.shapes["mask"][1] == chosen.shapes["past"][2] + 1
    assert _runs(model, chosen.shapes)


def test_the_flags_offered_when_no_size_runs_name_every_input_with_a_batch():
    """The flags offered set the batch to 1; an input whose only symbolic dim is its batch ('x' [N, 1, 4]) was not
    named, kept its default batch of 2, and a user who passed the flags as offered met "Axis 0 has mismatched
    dimensions of 2 and 1" (sweep 29's Qwen2 decoding step)."""
    model = _decoding_step(mask_dim="Q")  # no relation said: no size runs
    with pytest.raises(ModelError) as err:
        choose_random_shapes(model)
    assert "--input-shape x=1,1,4 --input-shape mask=1,Q --input-shape past=1,2,P,4" in str(err.value)
