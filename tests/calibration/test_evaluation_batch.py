"""The evaluation batch is sized by the activations one batch computes (calibration/shapes.py, steps/data.py):
64 for small models, fewer where 64 samples' tensors would pass ACTIVATION_BYTES, --batch-size as given."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calibration.shapes import ACTIVATION_BYTES, MAX_BATCH, activation_bytes, evaluation_batch
from onnxprune.converter.steps.data import Data, DataConfig


def _wide(width: int) -> onnx.ModelProto:
    """x [N, 8] -> Tile to [N, 8 * width] -> Relu -> ReduceSum over axis 1 -> y [N, 1]: large activations from
    small weights, 4 * (16 * width + 1) bytes computed per sample."""
    reps = helper.make_tensor("reps", TensorProto.INT64, [2], [1, width])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    g = helper.make_graph([helper.make_node("Tile", ["x", "reps"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                           helper.make_node("ReduceSum", ["r", "axes"], ["y"], keepdims=1)], "wide",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], [reps, axes])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_activation_bytes_sums_every_computed_tensor():
    model = _wide(100)
    assert activation_bytes(model, {"x": np.zeros((3, 8), np.float32)}) == 3 * 4 * (16 * 100 + 1)


def test_batch_is_cut_only_where_activations_are_large():
    small = _wide(100)
    assert evaluation_batch(small, {"x": np.zeros((2, 8), np.float32)}, 2)[0] == MAX_BATCH
    per = 4 * (16 * 1_000_000 + 1)  # 64 MB a sample
    batch, measured = evaluation_batch(_wide(1_000_000), {"x": np.zeros((1, 8), np.float32)}, 1)
    assert measured == per and batch == ACTIVATION_BYTES // per < MAX_BATCH


def test_unsizable_graph_keeps_the_limit():
    model = _wide(10)
    model.graph.node[0].op_type = "NoSuchOp"
    assert evaluation_batch(model, {"x": np.zeros((1, 8), np.float32)}, 1)[0] == MAX_BATCH


@pytest.mark.parametrize("given,expected", [(None, 16), (7, 7)])
def test_data_step_reads_the_chosen_batch(tmp_path, monkeypatch, given, expected):
    """A run's reader batches come out at the chosen size (budget lowered so a small graph needs it), and an
    explicit --batch-size wins; the model's output on them is unchanged (onnxruntime)."""
    import onnxruntime as ort

    from onnxprune.calibration import runtime, shapes

    model = _wide(1000)
    x = np.random.default_rng(1).normal(size=(100, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    per = 4 * (16 * 1000 + 1)
    monkeypatch.setattr(shapes, "ACTIVATION_BYTES", 16 * per + 1)
    with runtime.arena_scope():  # a cut batch turns the arena off: not past this test
        data = Data(model, DataConfig(data=str(tmp_path / "d.npz"), batch_size=given))
        batches = [f["x"] for f, _ in data.reader().batches()]
    assert data.batch_size == expected and len(batches[0]) == expected
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"x": b})[0] for b in batches])
    np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_a_cut_batch_turns_the_arena_off_for_the_run_only(tmp_path, monkeypatch):
    from onnxprune.calibration import runtime, shapes

    model = _wide(1000)
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 8), np.float32))
    monkeypatch.setattr(shapes, "ACTIVATION_BYTES", 4 * 4 * (16 * 1000 + 1))
    with runtime.arena_scope():
        assert Data(model, DataConfig(data=str(tmp_path / "d.npz"))).batch_size == 4
        assert runtime._ARENA[0] is False
    assert runtime._ARENA[0] is True


def _wide_rows(width: int) -> onnx.ModelProto:
    """x [N, T] (T open) -> ReduceMean over T -> MatMul W [1, width] -> Relu -> MatMul W2 [width, 1] -> y [N, 1]:
    two [N, width] tensors from a few weights; files of other T are read a complete feed each, as they are."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, width], rng.normal(size=width).astype(np.float32))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [width, 1], rng.normal(size=width).astype(np.float32))
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    g = helper.make_graph([helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
                           helper.make_node("MatMul", ["m", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                           helper.make_node("MatMul", ["r", "w2"], ["y"])], "wide_rows",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], [w, w2, axes])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_a_feed_read_as_it_is_that_cannot_fit_in_memory_is_refused_before_it_runs(tmp_path, monkeypatch, caplog):
    """Real models 48's L1: a file that is one feed is run whole (it cannot be cut into batches), and one too large
    for the machine ran until the kernel killed it, with no word of its size. Its largest tensor alone past the
    memory available is refused in one line before anything runs; all its tensors together past it (an upper bound:
    onnxruntime frees as it goes) are warned about; the model's outputs on such feeds are onnxruntime's either way."""
    import onnxruntime as ort

    from onnxprune.calibration import runtime
    from onnxprune.converter.cli import cli
    from onnxprune.errors import CalibrationError

    model = _wide_rows(1000)
    folder = tmp_path / "feeds"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, t in enumerate((8, 9)):
        np.savez(folder / f"{i}.npz", x=rng.normal(size=(2, t)).astype(np.float32))
    largest = 2 * 1000 * 4  # the MatMul's and the Relu's [2, 1000] float32 each, the first feed
    total = 2 * largest + 2 * 2 * 4  # and the mean [2, 1], y [2, 1]
    with runtime.arena_scope():
        monkeypatch.setattr(runtime, "available_memory", lambda: largest - 1)
        data = Data(model, DataConfig(data=str(folder)))
        said = (r"the first feed of --data '.*feeds' \('x' \[2, 8\]\) runs whole, as one feed, and its pass "
                r"computes a tensor of .* split it into smaller feeds")
        with pytest.raises(CalibrationError, match=said):
            data.batch_size
        monkeypatch.setattr(runtime, "available_memory", lambda: total - 1)
        with caplog.at_level("WARNING"):
            assert Data(model, DataConfig(data=str(folder))).batch_size == MAX_BATCH
        assert "tensors in all" in caplog.text and "if the run is killed, split it" in caplog.text
        monkeypatch.setattr(runtime, "available_memory", lambda: total + 1)
        caplog.clear()
        data = Data(model, DataConfig(data=str(folder)))
        assert data.batch_size == MAX_BATCH and "tensors in all" not in caplog.text
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        for feed, _ in data.reader().batches():  # feeds as the files hold them
            m = feed["x"].mean(1, keepdims=True)
            np.testing.assert_allclose(session.run(None, feed)[0],
                                       np.maximum(m @ numpy_helper.to_array(model.graph.initializer[0]), 0)
                                       @ numpy_helper.to_array(model.graph.initializer[1]), rtol=1e-4, atol=1e-5)
        monkeypatch.setattr(runtime, "available_memory", lambda: largest - 1)
        onnx.save(model, tmp_path / "m.onnx")
        result = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out.onnx"),
                                          "--data", str(folder), "--max-loss", "1"])
    assert result.exit_code == 1 and "split it into smaller feeds" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.onnx").exists()
