import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.converter import modelio
from onnxprune.errors import ConfigError, ModelError
from onnxprune.models import builders
from onnxprune.passes.sparse_encode import dense_to_sparse
from tests.oracle import assert_same_outputs


def test_load_densifies_sparse_initializers_and_constants(tmp_path):
    m = builders.mlp_gemm()
    w = numpy_helper.to_array(m.graph.initializer[0])
    w = np.where(np.abs(w) > 0.5, w, 0).astype(np.float32)
    name = m.graph.initializer[0].name
    dense = onnx.ModelProto()
    dense.CopyFrom(m)
    dense.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, name))
    del m.graph.initializer[0]
    m.graph.sparse_initializer.append(dense_to_sparse(w, name))
    path = tmp_path / "sparse.onnx"
    onnx.save(m, path)
    loaded = modelio.load_model(path)
    assert loaded.had_sparse == [name]
    assert not loaded.model.graph.sparse_initializer
    assert_same_outputs(loaded.model, dense, rtol=0)


def test_constants_in_list_and_scalar_forms_are_read_as_the_tensors_they_are_and_pruned(tmp_path):
    """Sweep 28: LeNet-300-100 with fc1's weight as `Constant(value_floats) -> Reshape` lost its 235K weights from
    `inspect` altogether (neither a row nor "not considered prunable"): the passes read a Constant's `value` only.
    Loading rewrites value_floats/value_ints/value_float/value_int as `value` tensors (same outputs, bit for bit);
    the load passes then fold the Reshape and every Gemm's weight is pruned, the written model running in onnxruntime
    as the masked weights say."""
    from onnxprune.converter.pipeline import configure, run
    from onnxprune.models.third_party_builders import constant_list_mlp
    from onnxprune.passes.weights import find_prunable, weight_array
    from tests.oracle import check_full

    model = constant_list_mlp()
    check_full(model)
    assert not any(w.name == "w1" for w in find_prunable(model).prunable)
    path = tmp_path / "forms.onnx"
    onnx.save(model, path)
    loaded = modelio.load_model(path)
    assert not [a.name for n in loaded.model.graph.node for a in n.attribute if a.name.startswith("value_")]
    check_full(loaded.model)
    assert_same_outputs(loaded.model, model, rtol=0)
    result = run(str(path), configure(sparsity=0.5))
    written = result.model
    check_full(written)
    gemms = [w for w in find_prunable(written).prunable if w.op_type == "Gemm"]
    assert len(gemms) == 2
    nonzeros = sum(int(np.count_nonzero(weight_array(written, w.name))) for w in gemms)
    assert nonzeros <= (128 + 58) // 2 + 1  # half of w1's 128 and w2's 58 nonzeros
    # the masked dense model holds the input's values where it keeps them, and the written one computes it
    masked = {w.name: weight_array(result.dense_model, w.name) for w in find_prunable(result.dense_model).prunable}
    w1 = next(v for k, v in masked.items() if k.startswith("w1"))
    kept = w1 != 0
    stored = np.asarray(model.graph.node[0].attribute[0].floats, np.float32).reshape(16, 8)  # value_floats, as built
    assert w1.shape == stored.shape and kept.sum() == 64
    np.testing.assert_array_equal(w1[kept], stored[kept])
    assert_same_outputs(written, result.dense_model, rtol=1e-5)


def test_an_onnxruntime_op_of_the_default_domain_is_loaded_pruned_and_verified(tmp_path, caplog):
    """Sweep 43: SimplifiedLayerNormalization (onnxruntime's RMSNorm, which its transformer optimizer writes in the
    ai.onnx domain) was refused with "SimplifiedLayerNormalization is in no ONNX opset (onnxruntime cannot run it
    either)" though onnxruntime ran the model; past the load, the written model's onnx.checker call called it a bug.
    An op no ONNX domain defines in a model onnxruntime loads is said and run in onnxruntime as it is; an op
    onnxruntime cannot load either is still refused in one line."""
    import logging

    from onnxprune.converter.pipeline import configure, run
    from onnxprune.models.third_party_builders import rms_normalized_mlp
    from onnxprune.passes.weights import find_prunable, weight_array
    from tests.oracle import random_feeds

    model = rms_normalized_mlp()
    with pytest.raises(onnx.checker.ValidationError, match="No Op registered for SimplifiedLayerNormalization"):
        onnx.checker.check_model(model)
    # onnxruntime's own kernel is the RMSNorm it names: y = relu(x / sqrt(mean(x^2) + eps) * gamma) @ W2 + b2
    from onnxprune.calibration.runtime import make_session

    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    feed = random_feeds(model, batch=4, seed=0)
    h = feed["x"] @ init["fc1.weight"] + init["fc1.bias"]
    h = np.maximum(h / np.sqrt((h ** 2).mean(-1, keepdims=True) + 1e-5) * init["norm.gamma"], 0)
    got = make_session(model, optimize=False).run(["y"], feed)[0]
    np.testing.assert_allclose(got, h @ init["fc2.weight"] + init["fc2.bias"], rtol=1e-4, atol=1e-5)
    path = tmp_path / "rms.onnx"
    onnx.save(model, path)
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        loaded = modelio.load_model(path)
    assert any("SimplifiedLayerNormalization" in r.getMessage() and "onnxruntime runs it" in r.getMessage()
               for r in caplog.records)
    assert_same_outputs(loaded.model, model, rtol=0)
    result = run(str(path), configure(sparsity=0.5))
    written = result.model
    assert [n.op_type for n in written.graph.node].count("SimplifiedLayerNormalization") == 1
    fc1 = weight_array(result.dense_model, "fc1.weight")
    assert fc1 is not None and np.count_nonzero(fc1) <= fc1.size // 2 + 1
    assert {w.name for w in find_prunable(written).prunable} >= {"fc1.weight", "fc2.weight"}
    assert_same_outputs(written, result.dense_model, rtol=1e-5)
    # an op no ONNX domain defines and onnxruntime cannot load either: the one line stands
    model.graph.node[2].op_type = "RMSNormNobodyDefines"
    with pytest.raises(ModelError, match=r"No Op registered for RMSNormNobodyDefines .*; RMSNormNobodyDefines is in "
                                         r"no ONNX opset \(onnxruntime cannot run it either\)"):
        modelio.check_model(model, where="m.onnx")


def test_save_is_atomic_and_refuses_the_input(tmp_path):
    m = builders.mlp_gemm()
    src = tmp_path / "in.onnx"
    onnx.save(m, src)
    before = modelio.sha256_file(src)
    with pytest.raises(ConfigError, match="is the input model"):
        modelio.save_model(m, src, protect=(src,))
    assert modelio.sha256_file(src) == before
    out = modelio.save_model(m, tmp_path / "out.onnx", protect=(src,))
    assert onnx.load(out).SerializeToString() == m.SerializeToString()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_save_to_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        modelio.save_model(builders.mlp_gemm(), tmp_path / "nope" / "x.onnx")


def test_external_data_roundtrip_keeps_sparse_tensors_external(tmp_path):
    m = builders.lenet300_like()
    for t in list(m.graph.initializer)[:1]:
        arr = numpy_helper.to_array(t)
        arr = np.where(np.abs(arr) > 0.08, arr, 0).astype(np.float32)
        m.graph.sparse_initializer.append(dense_to_sparse(arr, t.name))
    keep = [t for t in m.graph.initializer if t.name not in {s.values.name for s in m.graph.sparse_initializer}]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    out = modelio.save_model(m, tmp_path / "big.onnx", external_data=True)
    data = tmp_path / "big.onnx.data"
    assert data.exists() and data.stat().st_size > 0
    raw = onnx.load(out, load_external_data=False)
    assert raw.graph.sparse_initializer[0].values.data_location == onnx.TensorProto.EXTERNAL
    loaded = modelio.load_model(out)
    ref = onnx.ModelProto()
    ref.CopyFrom(m)
    modelio.densify_sparse(ref)
    assert_same_outputs(loaded.model, ref, rtol=0)


def test_a_write_with_external_data_leaves_another_runs_temp_files_alone(tmp_path):
    """CI audit: the data file was staged as '.NAME.data.tmp', one fixed name: two runs writing one output at once
    (or a run beside a killed one's leftover) wrote into the same file, and renamed it from under each other. Each
    write stages its data under a name of its own, as the graph's temp file always was."""
    other = tmp_path / ".big.onnx.data.tmp"  # another run's data, half written
    other.write_bytes(b"another run")
    m = builders.lenet300_like()
    out = modelio.save_model(m, tmp_path / "big.onnx", external_data=True)
    assert other.read_bytes() == b"another run"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".big.onnx.data.tmp", "big.onnx", "big.onnx.data"]
    assert_same_outputs(modelio.load_model(out).model, m, rtol=0)


def _point_outside(t, location):
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
    onnx.external_data_helper.set_external_data(t, location, offset=0, length=16)
    t.data_location = onnx.TensorProto.EXTERNAL
    t.ClearField("raw_data")


@pytest.mark.parametrize("location", ["../evil.bin", "/etc/passwd"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    m = builders.mlp_gemm()
    _point_outside(m.graph.initializer[0], location)
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "evil.bin").write_bytes(b"\0" * 4096)
    path = sub / "m.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(ModelError, match="refusing"):
        modelio.load_model(path)


def test_symlinked_external_data_leaving_the_folder_is_refused(tmp_path):
    m = builders.mlp_gemm()
    _point_outside(m.graph.initializer[0], "w.bin")
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    os.symlink(tmp_path / "secret.bin", sub / "w.bin")
    (sub / "m.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(ModelError, match="leaves the model's folder"):
        modelio.load_model(sub / "m.onnx")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty"),
        (b"this is not a model at all, just text\n" * 3, "is a text file, not a binary ONNX model; pass the binary"),
        (None, "not a readable ONNX model|not a valid ONNX model|holds no graph"),  # truncated
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.onnx"
    if content is None:
        content = builders.mlp_gemm().SerializeToString()[:200]
    path.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        modelio.load_model(path)


def test_crafted_huge_dims_are_refused_before_allocation(tmp_path):
    m = builders.mlp_gemm()
    t = m.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([10**6, 10**6])
    path = tmp_path / "huge.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(ModelError, match="above the limit"):
        modelio.load_model(path, check=False)


def test_opset_newer_than_onnx_knows_is_named(tmp_path):
    m = builders.mlp_gemm()
    m.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
    path = tmp_path / "future.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(ModelError, match="newer than this onnx"):
        modelio.load_model(path)


def test_an_interrupt_during_the_write_probe_leaves_no_probe_file(tmp_path, monkeypatch):
    """check_output_path creates and removes a probe beside the output; Ctrl-C or SIGTERM (KeyboardInterrupt) right
    after the probe exists must not leave it behind (it did: the interrupt tests caught '.out.onnx.<hex>.tmp')."""
    import builtins

    from onnxprune.converter import modelio

    real_open = builtins.open

    class Interrupted:
        def __init__(self, path, mode):
            self.f = real_open(path, mode)  # the probe now exists

        def __enter__(self):
            return self.f

        def __exit__(self, *exc):
            self.f.close()
            raise KeyboardInterrupt

    monkeypatch.setattr(modelio, "open", Interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        modelio.check_output_path(tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    modelio.check_output_path(tmp_path / "out.onnx")  # and the plain probe still leaves nothing
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["probe", "cleanup"])
def test_a_signal_landing_inside_a_temp_files_removal_waits_until_it_is_gone(tmp_path, monkeypatch, where):
    """SIGINT raised as the probe (or a failed write's temp file) is being removed: held until the unlink is done, so
    nothing is left (a KeyboardInterrupt between the `finally` and the unlink left '.out.onnx.<hex>.tmp' in CI)."""
    import os
    import signal

    from onnxprune.converter import modelio
    from onnxprune.models import builders

    real_unlink = os.unlink

    def unlink_after_a_signal(path, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Python's handler raises KeyboardInterrupt at the next bytecode
        real_unlink(path, *args, **kwargs)

    if where == "cleanup":  # a write that fails after its temp file exists
        monkeypatch.setattr(modelio.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    monkeypatch.setattr(modelio.os, "unlink", unlink_after_a_signal)
    # a test runner started in the background of a non-interactive shell inherits SIGINT ignored, and Python then
    # never raises KeyboardInterrupt: install Python's own handler for this test, as a terminal has it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            if where == "probe":
                modelio.check_output_path(tmp_path / "out.onnx")
            else:
                modelio.save_model(builders.mlp_gemm(), tmp_path / "out.onnx", external_data=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_tensors_read_from_external_data_are_written_without_an_explicit_default_location(tmp_path):
    """Sweep 26: a tensor whose `data_location` is set to DEFAULT (rather than left unset) costs 2 bytes more in the
    file; a model read from external data kept that field on every tensor it loaded."""
    m = builders.lenet300_like(hidden=(16, 8))
    inline = sum(t.ByteSize() for t in m.graph.initializer)  # before onnx.save moves the data out of `m`
    onnx.save(m, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    loaded = modelio.load_model(tmp_path / "ext.onnx").model
    assert not any(t.HasField("data_location") for t in loaded.graph.initializer)
    assert sum(t.ByteSize() for t in loaded.graph.initializer) == inline


def _zip(path, files):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


@pytest.mark.parametrize("name, write, said", [
    ("calib.npz", lambda p: np.savez(p, input=np.zeros((2, 3), np.float32)),
     "is a NumPy .npz archive (calibration data?), not a binary ONNX model; pass the .onnx model first and this file with --data"),
    ("model.pt", lambda p: _zip(p, {"archive/data.pkl": b"\x80\x02.", "archive/version": b"3"}),
     "is a PyTorch checkpoint (torch.save), not a binary ONNX model; export the model with torch.onnx.export first"),
    ("bundle.zip", lambda p: _zip(p, {"m/model.onnx": b"x"}),
     "is a zip archive holding m/model.onnx, not a binary ONNX model; unzip it and pass the .onnx file"),
    ("x.npy", lambda p: np.save(p, np.zeros(3)), "is a NumPy .npy array, not a binary ONNX model"),
    ("m.h5", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64), "is an HDF5 file (a Keras .h5 model?)"),
    ("m.tflite", lambda p: p.write_bytes(b"\x1c\0\0\0TFL3" + b"\0" * 64), "is a TensorFlow Lite model"),
    ("m.ort", lambda p: p.write_bytes(b"\x10\0\0\0ORTM" + b"\0" * 64), "is an onnxruntime .ort model"),
    ("m.safetensors", lambda p: p.write_bytes((20).to_bytes(8, "little") + b'{"w": {"dtype": "F32"}}'),
     "is a safetensors file (weights without a graph)"),
    ("m.pkl", lambda p: p.write_bytes(b"\x80\x04\x95" + b"\0" * 40), "is a Python pickle (a scikit-learn model?)"),
    ("m.txt", lambda p: p.write_text(str(builders.mlp_gemm())),
     "is an ONNX model in text form (textproto or onnx.parser's syntax), not a binary ONNX model; write it as the binary"),
])
def test_a_file_of_another_format_is_named(tmp_path, name, write, said):
    """A newcomer's mix-ups (the calibration file or a framework's checkpoint passed as the model) were "not a
    readable ONNX model (truncated or corrupted protobuf: ... Wire format was corrupt); re-export or re-download
    it": true, but it sent them to re-export a file that was never an ONNX model. Now the file's first bytes name
    what it is and what to do, in load_model and in the streaming writer's reader alike."""
    from onnxprune.converter import streaming

    path = tmp_path / name
    write(path)
    with pytest.raises(ModelError) as got:
        modelio.load_model(path)
    assert said in str(got.value) and str(got.value).startswith(f"'{path}' is "), got.value
    with pytest.raises(ModelError, match="not a binary ONNX model"):
        streaming._load_graph(path)


def test_a_real_model_is_not_taken_for_another_format(tmp_path):
    """The sniffing runs only when parsing fails; and an ONNX file's own first bytes match none of the formats."""
    path = tmp_path / "m.onnx"
    onnx.save(builders.mlp_gemm(), path)
    assert modelio._other_format(path) is None
    assert modelio.load_model(path).model.graph.node


def test_the_textproto_line_it_gives_converts_the_file(tmp_path):
    """The fix the error names for a textproto model works as written."""
    import subprocess
    import sys

    path = tmp_path / "m.txt"
    path.write_text(str(builders.mlp_gemm()))
    with pytest.raises(ModelError) as got:
        modelio.load_model(path)
    command = str(got.value).split("first: ")[1].split(" (onnx.parser")[0]
    assert command.startswith("python -c ")
    done = subprocess.run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert modelio.load_model(tmp_path / "model.onnx").model.graph.node


def test_nodes_out_of_topological_order_are_sorted_at_load(tmp_path):
    """Sweep 29: onnxruntime.transformers' float16 conversion (keep_io_types) appends the Cast of each float32 input
    after the nodes that read it; onnxruntime runs such a model, onnx's checker refuses it, and so did `prune`:
    "not a valid ONNX model: Nodes in a graph must be topologically sorted". The nodes are sorted at load (an If
    branch's too) and the model computes the same; a node reading a name nothing defines is still refused."""
    from onnx import TensorProto, helper

    from onnxprune.models.builders_control import if_network

    model = if_network(seed=0)
    shuffled = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = list(shuffled.graph.node)
    del shuffled.graph.node[:]
    shuffled.graph.node.extend(reversed(nodes))
    for node in shuffled.graph.node:  # the branches' nodes too
        for a in node.attribute:
            if a.HasField("g") and len(a.g.node) > 1:
                body = list(a.g.node)
                del a.g.node[:]
                a.g.node.extend(reversed(body))
    _repaired_at_load(shuffled, model, tmp_path / "shuffled.onnx", "topologically sorted")
    broken = onnx.ModelProto.FromString(model.SerializeToString())
    broken.graph.node.append(helper.make_node("Relu", ["nowhere"], ["dangling"]))
    broken.graph.node.insert(0, broken.graph.node.pop())
    onnx.save(broken, tmp_path / "broken.onnx")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        modelio.load_model(tmp_path / "broken.onnx")


def test_an_output_that_declares_no_shape_is_given_the_one_onnxruntime_computes(tmp_path, caplog):
    """Sweep 38: skl2onnx writes BayesianRidge's `return_std` output 'std' with an element type and no shape;
    onnxruntime runs the model, onnx's checker refuses it ("Field 'shape' of 'type' is required but missing"), and
    so did `prune` ("fix or re-export it"). At load the output is given the shape onnxruntime computes (the batch
    axis named as the input's, fixed sizes as they are) and the model computes the same; one onnxruntime cannot run
    is still refused."""
    model = builders.mlp_gemm()
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    model.graph.output[0].type.tensor_type.ClearField("shape")
    with pytest.raises(onnx.checker.ValidationError, match="of 'type' is required but missing"):
        onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "noshape.onnx")
    with caplog.at_level("WARNING"):
        loaded = modelio.load_model(tmp_path / "noshape.onnx").model
    onnx.checker.check_model(loaded, full_check=True)
    dims = [d.dim_param or d.dim_value for d in loaded.graph.output[0].type.tensor_type.shape.dim]
    batch = loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert batch and dims == [batch, builders.mlp_gemm().graph.output[0].type.tensor_type.shape.dim[1].dim_value]
    assert "declared no shape" in caplog.text and f"'output' [{batch}, {dims[1]}]" in caplog.text
    assert_same_outputs(loaded, builders.mlp_gemm())
    from onnx import TensorProto, helper

    total = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(total, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              tmp_path / "scalar.onnx")
    scalar = modelio.load_model(tmp_path / "scalar.onnx").model  # a scalar: a shape with no dims
    assert scalar.graph.output[0].type.tensor_type.HasField("shape")
    assert len(scalar.graph.output[0].type.tensor_type.shape.dim) == 0
    model.graph.node[0].op_type = "NoSuchOp"  # onnxruntime cannot run it: nothing given, the checker's line stands
    onnx.save(model, tmp_path / "broken.onnx")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        modelio.load_model(tmp_path / "broken.onnx")


def test_a_model_with_external_data_is_checked_by_its_file_before_the_weights_are_read(tmp_path, monkeypatch):
    """bench_large's VGG-16 with 528 MB of external weights peaked at 3.15x them in `inspect`: onnx's checker ran on
    the loaded proto (serialised, then parsed again). The file itself is checked first, before the weights are read
    (2.0x, the largest tensor's read beside the rest); a model the checker refuses so is checked in memory after
    loading and refused with the same message as before; an inline model is checked in memory as before."""
    calls = []
    real = modelio.check_model
    monkeypatch.setattr(modelio, "check_model", lambda model, where: calls.append(where) or real(model, where=where))
    model = builders.mlp_gemm()
    onnx.save(builders.mlp_gemm(), tmp_path / "ext.onnx", save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)  # (onnx.save moves the saved proto's weights out: a copy of its own)
    loaded = modelio.load_model(tmp_path / "ext.onnx")
    assert calls == [] and loaded.model.graph.initializer[0].HasField("raw_data")
    assert_same_outputs(model, loaded.model)
    onnx.save(model, tmp_path / "inline.onnx")
    modelio.load_model(tmp_path / "inline.onnx")
    assert calls == [str(tmp_path / "inline.onnx")]
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    bad.graph.node[0].op_type = "NoSuchOp"
    onnx.save(bad, tmp_path / "bad.onnx", save_as_external_data=True, location="bad.onnx.data", size_threshold=0)
    with pytest.raises(ModelError, match=r"'.*bad.onnx' is not a valid ONNX model: .*NoSuchOp"):
        modelio.load_model(tmp_path / "bad.onnx")


def test_a_model_kept_unpruned_is_written_as_given_though_its_rewrite_is_smaller(tmp_path):
    """Real models 51's L2: chython-rxnmap, kept unpruned, was written as the tool's rewrite of it (Identity nodes
    bypassed, Mul, Div, Gather and Shape folded), 30 KB smaller; its attention moved by 3.7e-7 and the package's
    greedy atom mapping changed on 66 of 100 reactions. A kept model is now the input's bytes, whatever the sizes;
    asked for storage (--weight-bits) it is not."""
    import json

    import onnxruntime as ort
    from onnx import helper

    from tests.hardening.helpers import invoke

    m = builders.lenet300_like()
    name = m.graph.input[0].name
    weights = {t.name for t in m.graph.initializer}
    layer = next(n for n in m.graph.node if n.op_type in ("Gemm", "MatMul") and n.input[1] in weights)
    weight = layer.input[1]
    layer.input[1] = "read_weight"  # an exporter's Identity between a weight and its layer: the rewrite drops it
    m.graph.node.insert(0, helper.make_node("Identity", [weight], ["read_weight"]))
    onnx.checker.check_model(m, full_check=True)
    path, out = tmp_path / "ids.onnx", tmp_path / "out.onnx"
    onnx.save(m, path)
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    np.savez(tmp_path / "few.npz", **{name: x})  # 8 samples cannot certify 1 pp: kept
    res = invoke("prune", path, "-o", out, "--data", tmp_path / "few.npz", "--max-loss", "1", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["budget"]["kept_input"] and out.read_bytes() == path.read_bytes()
    assert report["file_size_after"] == report["file_size_before"] == path.stat().st_size
    assert any("written as it was given" in n and "bit for bit" in n for n in report["notes"]), report["notes"]
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]  # noqa
    np.testing.assert_array_equal(run(out), run(path))
    res = invoke("prune", path, "-o", out, "--data", tmp_path / "few.npz", "--max-loss", "1", "--weight-bits", "8",
                 "--json", "--force")
    assert res.exit_code == 0, res.output
    assert out.read_bytes() != path.read_bytes() and "written as it was given" not in res.output


def test_a_kept_model_is_stored_as_an_explicit_sparse_format_asks(tmp_path):
    """Sweep 49's L7: a MADE whose masks made half its weights zeros was kept unpruned and written as given with
    `--sparse-format compact`, the storage the run's own note advised for those zeros. A storage flag given is
    storage asked for: the file is written in it (smaller here), and its outputs are the input's."""
    import json

    import onnxruntime as ort
    from onnx import numpy_helper

    from tests.hardening.helpers import invoke

    m = builders.lenet300_like()
    name = m.graph.input[0].name
    big = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(big).copy()
    w[np.random.default_rng(1).random(w.shape) < 0.7] = 0.0  # the input's own zeros (an exporter's folded mask)
    big.CopyFrom(numpy_helper.from_array(w, big.name))
    path, out = tmp_path / "masked.onnx", tmp_path / "out.onnx"
    onnx.save(m, path)
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    np.savez(tmp_path / "few.npz", **{name: x})  # 8 samples cannot certify 1 pp: kept
    res = invoke("prune", path, "-o", out, "--data", tmp_path / "few.npz", "--max-loss", "1", "--json",
                 "--sparse-format", "compact")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["budget"]["kept_input"]
    assert not any("written as it was given" in n for n in report["notes"])
    assert out.stat().st_size < 0.6 * path.stat().st_size  # the zeros stored compactly
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]  # noqa
    np.testing.assert_allclose(run(out), run(path), rtol=1e-5, atol=1e-6)
    res = invoke("prune", path, "-o", out, "--data", tmp_path / "few.npz", "--max-loss", "1", "--json")
    assert res.exit_code == 0 and out.read_bytes() == path.read_bytes()  # no flag: as given


def _repaired_at_load(broken: onnx.ModelProto, model: onnx.ModelProto, path, refusal: str) -> onnx.ModelProto:
    """`broken` (which onnx's checker refuses with `refusal`) saved at `path` and loaded: the loaded model passes the
    full check and computes what `model` does in onnxruntime."""
    with pytest.raises(onnx.checker.ValidationError, match=refusal):
        onnx.checker.check_model(broken)
    onnx.save(broken, path)
    loaded = modelio.load_model(path).model
    onnx.checker.check_model(loaded, full_check=True)
    assert_same_outputs(loaded, model)
    return loaded


def test_an_ir3_models_initializers_left_out_of_its_inputs_are_listed_at_load(tmp_path):
    """Sweep 55: onnxruntime's saved optimized graph (optimized_model_filepath, ORT_ENABLE_EXTENDED) of torch's
    opset-7 export (IR 3, every initializer a graph input) adds its Conv+BatchNorm fusions' initializers without
    listing them as inputs; onnxruntime runs it, onnx's checker refuses it, and so did `prune` ("not a valid ONNX
    model: ConvBnFusion_W_f.2.weight in initializer but not in graph input; fix or re-export it"). They are listed
    at load and the model computes the same; an IR-4 model's inputs are left as they are."""
    from onnx import helper

    model = builders.conv_bn_relu()
    old = onnx.ModelProto.FromString(model.SerializeToString())
    old.ir_version = 3
    del old.opset_import[:]
    old.opset_import.append(helper.make_opsetid("", 7))
    for t in list(old.graph.initializer)[:-2]:  # as ORT writes it: the fused tensors not listed
        old.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    loaded = _repaired_at_load(old, model, tmp_path / "ir3.onnx", "in initializer but not in graph input")
    assert loaded.ir_version == 3 and {i.name for i in loaded.graph.input} >= {t.name for t in loaded.graph.initializer}
    assert modelio.input_initializers(model) == [] and len(model.graph.input) == 1
