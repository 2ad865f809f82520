"""Inputs that are not plain tensors (sequence, optional, map types): each is fed, or refused in one line.

Before: a seq(tensor) input was read as a 0-d tensor ("model input 'xs' expects []", inspect wrote
`np.zeros(())`), an optional(tensor) input likewise, and `prune --sparsity` on either failed with an IndexError
in the random-shapes step or "pass --input-shape", which cannot help. Now an optional tensor is its tensor (onnxruntime
takes an array for it); a sequence of tensors is fed from an array of its elements stacked on axis 0, one file a
feed (sessions hand onnxruntime the list: calibration.runtime.SequenceFeeds); a map (scikit-learn's
DictVectorizer) cannot be fed by any data of ours, and every command that needs data says so.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxprune.calibration.runtime import input_specs, make_session
from onnxprune.models.builders_control import container_input
from tests.hardening.helpers import invoke


def _outputs(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(None, f)[0] for f in feeds]


def _pruned_agrees(tmp_path, model, out, feeds):
    """The written model loads in stock onnxruntime, passes the full check, and computes what the dense model with
    its (pruned) weights computes; its weights are sparser than the input's."""
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    dense = onnx.load(model)
    pruned = {t.name: onnx.numpy_helper.to_array(t) for t in written.graph.initializer}
    for t in dense.graph.initializer:
        if t.name in pruned and pruned[t.name].shape == tuple(t.dims):
            t.CopyFrom(onnx.numpy_helper.from_array(pruned[t.name], t.name))
    onnx.save(dense, tmp_path / "oracle.onnx")
    for got, want in zip(_outputs(out, feeds), _outputs(tmp_path / "oracle.onnx", feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return sum(int(np.count_nonzero(v)) for v in pruned.values())


def test_specs_read_the_tensor_inside():
    seq, opt, mapped = (input_specs(container_input(c))[0] for c in ("sequence", "optional", "map"))
    assert (seq.kind, seq.shape, seq.dtype) == ("sequence", (None, None, 16), np.float32)
    assert (opt.kind, opt.shape) == ("tensor", (None, 16))
    assert mapped.kind == "map(int64, float32)"


def test_a_session_takes_a_sequence_as_its_stacked_elements():
    session = make_session(container_input("sequence"))
    assert isinstance(session, ort.InferenceSession)  # whatever checks for a session still sees one
    x = np.random.default_rng(0).standard_normal((3, 2, 16)).astype(np.float32)
    (stacked,) = session.run(None, {"input": x})
    (listed,) = session.run(None, {"input": list(x)})
    np.testing.assert_array_equal(stacked, listed)
    assert stacked.shape == (6, 5)


@pytest.mark.parametrize("container", ["sequence", "optional"])
def test_inspect_and_prune_without_data(tmp_path, container):
    model = tmp_path / f"{container}.onnx"
    onnx.save(container_input(container), model)
    info = json.loads(invoke("inspect", model, "--json").output)
    want = {"sequence": "np.zeros((2, 1, 16), np.float32)", "optional": "input=np.zeros((64, 16), np.float32)"}
    assert want[container] in info["npz_example"], info["npz_example"]
    res = invoke("prune", model, "-o", tmp_path / "out.onnx", "--sparsity", "0.5")
    assert res.exit_code == 0, res.output
    assert "verified in onnxruntime" in res.output
    x = np.random.default_rng(1).standard_normal((2, 3, 16)).astype(np.float32)
    feeds = [{"input": list(x)}] if container == "sequence" else [{"input": x[0]}]
    assert _pruned_agrees(tmp_path, model, tmp_path / "out.onnx", feeds) < 16 * 24 + 24 * 5


def test_a_sequence_input_is_calibrated_a_file_a_feed_under_a_budget(tmp_path):
    """inspect's own line, with real values: a folder of files, each the stacked elements of one sequence."""
    model = tmp_path / "seq.onnx"
    onnx.save(container_input("sequence"), model)
    rng = np.random.default_rng(2)
    (tmp_path / "calib").mkdir()
    for i in range(120):
        np.savez(tmp_path / "calib" / f"{i:03d}.npz", input=rng.standard_normal((2, 1, 16)).astype(np.float32))
    res = invoke("prune", model, "-o", tmp_path / "out.onnx", "--data", tmp_path / "calib", "--max-loss", "1",
                 "--time-budget", "1m")
    assert res.exit_code == 0, res.output
    assert "120 feed(s) used as is" in " ".join(res.output.split()), res.output
    feeds = [{"input": list(rng.standard_normal((2, 1, 16)).astype(np.float32))} for _ in range(4)]
    _pruned_agrees(tmp_path, model, tmp_path / "out.onnx", feeds)
    # a stacked file of samples is not a sequence's elements: said, with the shape it needs
    np.savez(tmp_path / "flat.npz", input=rng.standard_normal((50, 16)).astype(np.float32))
    res = invoke("prune", model, "-o", tmp_path / "o2.onnx", "--data", tmp_path / "flat.npz", "--max-loss", "1")
    assert res.exit_code != 0 and "expects [?, ?, 16]" in res.output and "Traceback" not in res.output


def test_an_optional_input_is_calibrated_as_its_tensor(tmp_path):
    model = tmp_path / "opt.onnx"
    onnx.save(container_input("optional"), model)
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "calib.npz", input=rng.standard_normal((200, 16)).astype(np.float32))
    res = invoke("prune", model, "-o", tmp_path / "out.onnx", "--data", tmp_path / "calib.npz", "--max-loss", "1",
                 "--time-budget", "1m")
    assert res.exit_code == 0, res.output
    _pruned_agrees(tmp_path, model, tmp_path / "out.onnx", [{"input": rng.standard_normal((8, 16)).astype(np.float32)}])


def test_a_map_input_is_refused_in_one_line_by_every_command_that_needs_data(tmp_path):
    model = tmp_path / "map.onnx"
    onnx.save(container_input("map"), model)
    text = " ".join(invoke("inspect", model).output.split())
    assert "input 'input' is map(int64, float32): onnxprune feeds tensors, optional tensors and sequences of " \
           "tensors" in text
    assert "np.savez" not in text  # no line of numpy that cannot feed it
    np.savez(tmp_path / "calib.npz", input=np.zeros((4, 16), np.float32))
    for extra in (["--sparsity", "0.5"], ["--data", tmp_path / "calib.npz", "--max-loss", "1"],
                  ["--data", "random", "--sparsity", "0.5"]):
        res = invoke("prune", model, "-o", tmp_path / "out.onnx", *extra)
        assert res.exit_code != 0 and "Traceback" not in res.output and "internal error" not in res.output
        assert "input 'input' is map(int64, float32): onnxprune feeds tensors" in " ".join(res.output.split()), \
            res.output
        assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("container", ["sequence", "optional"])
def test_retraining_runs_through_the_torch_bridge(tmp_path, container):
    """The bridge runs the sequence ops (a seq input unbound from its stacked array) and the Optional ops, so masked
    retraining trains these models instead of falling back to the layer-wise refit."""
    model = tmp_path / f"{container}.onnx"
    onnx.save(container_input(container), model)
    rng = np.random.default_rng(4)
    if container == "sequence":
        (tmp_path / "calib").mkdir()
        for i in range(40):
            np.savez(tmp_path / "calib" / f"{i:03d}.npz", input=rng.standard_normal((2, 1, 16)).astype(np.float32))
        data, feeds = tmp_path / "calib", [{"input": list(rng.standard_normal((2, 1, 16)).astype(np.float32))}]
    else:
        np.savez(tmp_path / "calib.npz", input=rng.standard_normal((64, 16)).astype(np.float32))
        data, feeds = tmp_path / "calib.npz", [{"input": rng.standard_normal((8, 16)).astype(np.float32)}]
    res = invoke("prune", model, "-o", tmp_path / "out.onnx", "--data", data, "--sparsity", "0.5", "--iterations", "1")
    assert res.exit_code == 0, res.output
    assert "torch bridge cannot run" not in res.output and "layer-wise reconstruction instead" not in res.output
    _pruned_agrees(tmp_path, model, tmp_path / "out.onnx", feeds)


def _optional_prior(seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 16] -> MLP -> logits [N, 5], plus an optional(tensor) input 'prior' [N, 5] added to the logits when
    given (OptionalHasElement -> If, opset 18): a model its callers may run without 'prior'."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) / 4).astype(np.float32), n)
             for n, s in (("w1", (16, 24)), ("w2", (24, 5)))]
    z = helper.make_tensor_value_info
    then = helper.make_graph([helper.make_node("OptionalGetElement", ["prior"], ["p"]),
                              helper.make_node("Add", ["z", "p"], ["zt"])], "then", [],
                             [z("zt", TensorProto.FLOAT, ["N", 5])])
    other = helper.make_graph([helper.make_node("Identity", ["z"], ["ze"])], "else", [],
                              [z("ze", TensorProto.FLOAT, ["N", 5])])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["z"]), helper.make_node("OptionalHasElement", ["prior"], ["has"]),
             helper.make_node("If", ["has"], ["logits"], then_branch=then, else_branch=other)]
    prior = helper.make_value_info("prior", helper.make_optional_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, ["N", 5])))
    graph = helper.make_graph(nodes, "optional_prior", [z("x", TensorProto.FLOAT, ["N", 16]), prior],
                              [z("logits", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


@pytest.mark.parametrize("retrain", [False, True])
def test_data_that_leaves_an_optional_input_out_prunes_the_model_run_without_it(tmp_path, retrain):
    """Sweep 54: an MLP with an optional input 'prior' (added to the logits when given), which onnxruntime runs
    without it, calibrated as its callers run it: the data holds 'x' alone. It was refused: "lacks model input(s)
    ['prior'] ... Name the arrays after the model inputs". The run now works on the model with 'prior' an empty
    Optional (the torch bridge runs one: retraining is not the refit's fallback), says so, and writes a model that
    takes 'prior' again and computes what its pruned weights say with and without it."""
    from onnxprune.calibration.readers import left_out_optionals

    model = tmp_path / "prior.onnx"
    onnx.save(_optional_prior(), model)
    onnx.checker.check_model(onnx.load(model), full_check=True)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((120, 16)).astype(np.float32)
    assert _outputs(model, [{"x": x}])[0].shape == (120, 5)  # onnxruntime runs it without 'prior'
    np.savez(tmp_path / "calib.npz", x=x)
    assert left_out_optionals(tmp_path / "calib.npz", onnx.load(model)) == ["prior"]
    assert left_out_optionals({"x": x, "prior": x[:, :5]}, onnx.load(model)) == []
    how = ["--sparsity", "0.5", "--iterations", "1"] if retrain else ["--max-loss", "1", "--time-budget", "30s"]
    res = invoke("prune", model, "-o", tmp_path / "out.onnx", "--data", tmp_path / "calib.npz", *how)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "optional input(s) 'prior' not in --data: the model is run and judged without them" in text, res.output
    assert "torch bridge cannot run" not in text and "layer-wise reconstruction instead" not in text
    written = onnx.load(tmp_path / "out.onnx")
    assert [i.name for i in written.graph.input] == ["x", "prior"]
    assert "Optional" not in [n.op_type for n in written.graph.node]
    feeds = [{"x": x[:8]}, {"x": x[:8], "prior": rng.standard_normal((8, 5)).astype(np.float32)}]
    nonzeros = _pruned_agrees(tmp_path, model, tmp_path / "out.onnx", feeds)
    if retrain:
        assert nonzeros <= (16 * 24 + 24 * 5) // 2 + 2


def test_an_optional_input_other_commands_need_is_refused_saying_it_is_optional(tmp_path):
    """Where a command reads data without the run's data step (the sensitivity scan), data that leaves an optional
    input out is refused in one line that says the input is optional and what to add (was: "Name the arrays after the
    model inputs", as for a misnamed array)."""
    model = tmp_path / "prior.onnx"
    onnx.save(_optional_prior(), model)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(4).standard_normal((120, 16)).astype(np.float32))
    res = invoke("sensitivity", model, "--data", tmp_path / "calib.npz", "-o", tmp_path / "scan")
    assert res.exit_code != 0 and "Traceback" not in res.output and "internal error" not in res.output
    text = " ".join(res.output.split())
    assert "lacks model input(s) ['prior']" in text and "'prior' is optional" in text, res.output
