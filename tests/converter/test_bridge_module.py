"""OnnxModule: forward parity with onnxruntime, training touches only trainable tensors, exact write-back,
all unsupported ops reported at once, dropout in train/eval mode, models exported by torch."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxprune.converter.bridge import OnnxModule
from onnxprune.errors import ConfigError, ConverterError, UnsupportedOpError

ATOL, RTOL = 1e-5, 1e-4
SEEDS = (0, 1, 2)




# ----------------------------------------------------------------------------------------------------- models


def _init(name, arr):
    return numpy_helper.from_array(arr, name)


def _model(nodes, inputs, outputs, inits, opset=17, ir=8):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    onnx.checker.check_model(model, full_check=True)
    return model


def mlp(seed=0, sizes=(8, 16, 12, 4)) -> onnx.ModelProto:
    """x -> Gemm/Relu -> Gemm/Relu -> Gemm; weights named like torch's ('fc1.weight')."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        w, b = f"fc{k}.weight", f"fc{k}.bias"
        inits += [_init(w, rng.uniform(-0.5, 0.5, (n_out, n_in)).astype(np.float32)),
                  _init(b, rng.uniform(-0.1, 0.1, n_out).astype(np.float32))]
        out = "y" if k == len(sizes) - 1 else f"h{k}"
        nodes.append(helper.make_node("Gemm", [prev, w, b], [out], name=f"fc{k}", transB=1))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"a{k}"], name=f"relu{k}"))
            out = f"a{k}"
        prev = out
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])], inits)


def cnn(seed=0) -> onnx.ModelProto:
    """x[N,1,8,8] -> Conv3x3 -> BN -> Relu -> MaxPool2 -> Flatten -> Gemm -> y[N,5]."""
    rng = np.random.default_rng(seed)
    u = lambda *s: rng.uniform(-0.5, 0.5, s).astype(np.float32)  # noqa: E731
    inits = [_init("conv.w", u(4, 1, 3, 3)), _init("conv.b", u(4)), _init("bn.scale", u(4) + 1),
             _init("bn.bias", u(4)), _init("bn.mean", u(4)), _init("bn.var", np.abs(u(4)) + 0.5),
             _init("fc.w", u(5, 64)), _init("fc.b", u(5))]
    nodes = [helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["n"],
                              name="bn"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)


def dropout_model(ratio=0.5, with_mask=False) -> onnx.ModelProto:
    outs = ["y", "mask"] if with_mask else ["y"]
    nodes = [helper.make_node("Dropout", ["x", "ratio"], outs, name="drop")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])]
    if with_mask:
        outputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, [64, 64]))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])], outputs,
                  [_init("ratio", np.array(ratio, np.float32))])


def run_ort(model: onnx.ModelProto, feeds: dict) -> list:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_module_matches_ort(module, model, feeds_list, atol=ATOL, rtol=RTOL):
    module.eval()
    names = [o.name for o in model.graph.output]
    for feeds in feeds_list:
        want = run_ort(model, feeds)
        with torch.no_grad():
            got = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        for name, w, g in zip(names, want, got):
            g = g.float().numpy() if g.dtype == torch.bfloat16 else g.numpy()
            assert g.shape == w.shape, f"output '{name}': shape {g.shape} != onnxruntime {w.shape}"
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output '{name}'")


def x_feeds(shape, seeds=SEEDS):
    return [{"x": np.random.default_rng(s).uniform(-1, 1, shape).astype(np.float32)} for s in seeds]


def initializer(model, name) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


# --------------------------------------------------------------------------------------------------- forward


def test_mlp_forward_matches_onnxruntime():
    model = mlp()
    assert_module_matches_ort(OnnxModule(model), model, x_feeds((5, 8)))


def test_cnn_forward_matches_onnxruntime():
    model = cnn()
    assert_module_matches_ort(OnnxModule(model, trainable=["conv.w", "fc.w"]), model, x_feeds((3, 1, 8, 8)))


def test_forward_takes_inputs_by_position_name_or_numpy():
    module = OnnxModule(mlp()).eval()
    x = torch.randn(2, 8)
    (a,), (b,), (c,) = module(x), module(x=x), module(x.numpy())
    assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(TypeError, match="missing graph input"):
        module()
    with pytest.raises(TypeError, match="'z' is not a graph input"):
        module(z=x)


def test_failing_node_is_named():
    with pytest.raises(ConverterError, match="Gemm node 'fc1'"):
        OnnxModule(mlp())(torch.randn(2, 7))


def test_old_ir_initializers_listed_as_inputs_are_initializers():
    model = mlp()
    model.ir_version = 3
    model.opset_import[0].version = 9
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    module = OnnxModule(model, trainable=["fc1.weight"])
    assert module._inputs == ("x",)
    assert_module_matches_ort(module, model, x_feeds((4, 8)))


def test_float64_module_matches_onnxruntime_and_writes_float32_back():
    model = cnn()
    module = OnnxModule(model, trainable=["conv.w"], dtype=torch.float64)
    assert module.onnx_parameters()["conv.w"].dtype == torch.float64
    assert_module_matches_ort(module, model, x_feeds((2, 1, 8, 8)))
    assert module.write_back(model).SerializeToString() == model.SerializeToString()


def test_intermediates_are_freed_after_their_last_consumer():
    module = OnnxModule(mlp())
    freed = {n for step in module._steps for n in step.free}
    assert {"h1", "a1", "h2", "a2"} <= freed and "y" not in freed
    last_use = {n: k for k, step in enumerate(module._steps) for n in step.inputs}
    for k, step in enumerate(module._steps):
        for n in step.free:
            assert last_use.get(n, k) == k, f"'{n}' freed at step {k}, still read at step {last_use[n]}"


def test_local_functions_are_inlined():
    fn = helper.make_function("local", "DoubleRelu", ["a"], ["b"],
                              [helper.make_node("Relu", ["a"], ["t"]), helper.make_node("Add", ["t", "t"], ["b"])],
                              [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("DoubleRelu", ["x"], ["y"], domain="local")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, functions=[fn], ir_version=8,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    assert_module_matches_ort(OnnxModule(model), model, x_feeds((3,)))


# -------------------------------------------------------------------------------------------------- training


def test_training_step_changes_only_trainable_parameters():
    model = cnn()
    trainable = ["conv.w", "fc.w"]
    module = OnnxModule(model, trainable=trainable).train()
    assert set(module.onnx_parameters()) == set(trainable)
    assert {id(p) for p in module.parameters()} == {id(p) for p in module.onnx_parameters().values()}
    before_params = {n: p.detach().clone() for n, p in module.onnx_parameters().items()}
    before_buffers = {n: b.clone() for n, b in module.named_buffers()}
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    x, target = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(module(x)[0], target).backward()
    opt.step()
    for name, p in module.onnx_parameters().items():
        assert not torch.equal(p.detach(), before_params[name]), f"trainable '{name}' did not change"
    for name, b in module.named_buffers():
        assert torch.equal(b, before_buffers[name]), f"constant '{name}' changed"
    written = module.write_back(model)
    for name in ["conv.b", "bn.mean", "bn.var", "bn.scale", "bn.bias", "fc.b"]:
        np.testing.assert_array_equal(initializer(written, name), initializer(model, name), err_msg=name)


def test_embedding_gather_trains_only_the_rows_it_reads():
    table = np.random.default_rng(0).uniform(-1, 1, (10, 4)).astype(np.float32)
    model = _model([helper.make_node("Gather", ["emb", "ids"], ["e"]),
                    helper.make_node("ReduceSum", ["e"], ["y"], keepdims=0)],
                   [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], [_init("emb", table)])
    module = OnnxModule(model, trainable=["emb"])
    module(torch.tensor([[1, 3, 3], [-1, 0, 1]]))[0].backward()
    grad = module.onnx_parameters()["emb"].grad
    np.testing.assert_array_equal(grad[:, 0].numpy(), [1, 2, 0, 2, 0, 0, 0, 0, 0, 1])


def test_parameter_keys_are_sanitized_and_map_back_to_onnx_names():
    module = OnnxModule(mlp(), trainable=["fc1.weight", "fc2.bias"])
    assert set(module.state_dict()) == {"params.fc1_weight", "params.fc2_bias"}
    assert module.onnx_parameters()["fc1.weight"] is module.params["fc1_weight"]


def test_bad_trainable_names_are_config_errors():
    with pytest.raises(ConfigError, match="not initializers"):
        OnnxModule(mlp(), trainable=["nope"])
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])], [_init("shape", np.array([6]))])
    with pytest.raises(ConfigError, match="not floating point"):
        OnnxModule(model, trainable=["shape"])


# ------------------------------------------------------------------------------------------------ write-back


def test_write_back_is_byte_identical_when_nothing_changed():
    model = cnn()
    module = OnnxModule(model, trainable=["conv.w", "conv.b", "bn.scale", "fc.w"])
    assert module.write_back(model).SerializeToString() == model.SerializeToString()


def test_write_back_round_trips_modified_values_exactly():
    model = cnn()
    trainable = ["conv.w", "bn.scale", "fc.w", "fc.b"]
    module = OnnxModule(model, trainable=trainable)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.onnx_parameters().values():
            p.copy_(torch.randn(p.shape, generator=gen))
    written = module.write_back(model)
    onnx.checker.check_model(written, full_check=True)
    for name, p in module.onnx_parameters().items():
        arr = initializer(written, name)
        assert arr.dtype == np.float32 and arr.shape == tuple(p.shape), name
        np.testing.assert_array_equal(arr, p.detach().numpy(), err_msg=name)
    assert [t.name for t in written.graph.initializer] == [t.name for t in model.graph.initializer]
    assert initializer(written, "conv.b").tobytes() == initializer(model, "conv.b").tobytes()
    assert_module_matches_ort(module, written, x_feeds((3, 1, 8, 8)))


def test_write_back_handles_initializers_stored_in_typed_fields():
    model = mlp()
    t = model.graph.initializer[0]
    arr = numpy_helper.to_array(t)
    t.CopyFrom(helper.make_tensor(t.name, TensorProto.FLOAT, arr.shape, arr.reshape(-1).tolist()))
    module = OnnxModule(model, trainable=[t.name])
    assert module.write_back(model).SerializeToString() == model.SerializeToString()
    with torch.no_grad():
        module.onnx_parameters()[t.name].mul_(2)
    np.testing.assert_array_equal(initializer(module.write_back(model), t.name), arr * 2, err_msg=t.name)


def half_model(elem=TensorProto.FLOAT16) -> onnx.ModelProto:
    np_dtype = {TensorProto.FLOAT16: np.float16, TensorProto.BFLOAT16: None}[elem]
    w = np.random.default_rng(0).uniform(-1, 1, (6, 3)).astype(np.float32)
    w_init = (numpy_helper.from_array(w.astype(np_dtype), "w") if np_dtype else
              helper.make_tensor("w", elem, w.shape, w.reshape(-1).tolist()))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    return _model(nodes, [helper.make_tensor_value_info("x", elem, [2, 6])],
                  [helper.make_tensor_value_info("y", elem, [2, 3])], [w_init])


def test_float16_parameters_train_in_float32_master_copies():
    model = half_model()
    module = OnnxModule(model, trainable=["w"])
    w = module.onnx_parameters()["w"]
    assert w.dtype == torch.float32
    feeds = [{"x": f["x"].astype(np.float16)} for f in x_feeds((2, 6))]
    assert_module_matches_ort(module, model, feeds, atol=2e-3, rtol=2e-3)
    y = module(torch.from_numpy(feeds[0]["x"]))[0]
    assert y.dtype == torch.float16
    assert module.write_back(model).SerializeToString() == model.SerializeToString()
    with torch.no_grad():
        w.add_(1e-4)  # below fp16 resolution for most values: the master keeps it, the export rounds it
    written = initializer(module.write_back(model), "w")
    assert written.dtype == np.float16
    np.testing.assert_array_equal(written, w.detach().numpy().astype(np.float16), err_msg="w")


def test_bfloat16_parameters_round_trip():
    model = half_model(TensorProto.BFLOAT16)
    module = OnnxModule(model, trainable=["w"])
    assert module.write_back(model).SerializeToString() == model.SerializeToString()
    y = module(torch.randn(2, 6, dtype=torch.bfloat16))[0]
    assert y.dtype == torch.bfloat16
    with torch.no_grad():
        module.onnx_parameters()["w"].mul_(-1)
    written = module.write_back(model)
    onnx.checker.check_model(written, full_check=True)
    want = module.onnx_parameters()["w"].detach().to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(initializer(written, "w").astype(np.float32), want, err_msg="w")


# ----------------------------------------------------------------------------------------------- unsupported


def test_unsupported_ops_are_all_listed_in_one_error():
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("FancyOp", ["a"], ["b"], name="fancy1", domain="com.acme"),
             helper.make_node("FancyOp", ["b"], ["c"], name="fancy2", domain="com.acme"),
             helper.make_node("Loop", ["", ""], [], name="loop0", body=body),  # neither M nor a condition
             helper.make_node("Resize", ["c", "", "scales"], ["d"], name="aa", mode="area"),
             helper.make_node("StringNormalizer", ["d"], ["y"], name="strings")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [_init("scales", np.array([2.0], np.float32))])
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 18),
                                                                   helper.make_opsetid("com.acme", 1)])
    with pytest.raises(UnsupportedOpError) as info:
        OnnxModule(model)
    msg = str(info.value)
    for name in ["'fancy1'", "'fancy2'", "'loop0'", "'aa'", "'strings'"]:
        assert name in msg, f"{name} missing from: {msg}"
    assert "control flow" in msg and "mode 'area'" in msg and "com.acme" in msg and "'ok'" not in msg
    assert len(info.value.unsupported) == 5


# ---------------------------------------------------------------------------------------------------- dropout


def test_dropout_is_active_in_train_mode_and_identity_in_eval():
    module = OnnxModule(dropout_model(0.5))
    assert module.dropout_ratios == {"drop": 0.5}
    x = torch.ones(64, 64)
    torch.manual_seed(0)
    y = module.train()(x)[0]
    kept = (y != 0).float().mean().item()
    assert 0.4 < kept < 0.6, f"kept {kept:.2f} of the units at ratio 0.5"
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 2.0))
    assert torch.equal(module.eval()(x)[0], x)


def test_dropout_ratio_rescales_from_the_node_ratio():
    module = OnnxModule(dropout_model(0.5)).train()
    assert module.set_dropout_scale(0.2) == {"drop": pytest.approx(0.1)}
    assert module.set_dropout_scale({"drop": 0.5}) == {"drop": pytest.approx(0.25)}  # not cumulative
    torch.manual_seed(0)
    y = module(torch.ones(64, 64))[0]
    dropped = (y == 0).float().mean().item()
    assert 0.18 < dropped < 0.32, f"dropped {dropped:.2f} at ratio 0.25"
    module.dropout_ratios = {"drop": 0.0}
    assert torch.equal(module(torch.ones(64, 64))[0], torch.ones(64, 64))
    with pytest.raises(ConfigError, match="not Dropout nodes"):
        module.set_dropout_scale({"nope": 1.0})
    with pytest.raises(ConfigError, match="outside"):
        module.set_dropout_scale(3.0)


def test_dropout_mask_output_marks_kept_units():
    module = OnnxModule(dropout_model(0.3, with_mask=True)).train()
    x = torch.rand(64, 64) + 1
    y, mask = module(x)
    assert mask.dtype == torch.bool
    assert torch.allclose(y[mask], x[mask] / 0.7) and torch.all(y[~mask] == 0)
    y, mask = module.eval()(x)
    assert torch.equal(y, x) and bool(mask.all())


# ------------------------------------------------------------------------------------------- torch exports


def export(net: torch.nn.Module, args: tuple, **kw) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, args, buf, dynamo=False, opset_version=17, **kw)
        except Exception as e:  # gone from this torch, or a module it cannot trace
            pytest.skip(f"the legacy exporter (dynamo=False) cannot export this module: {type(e).__name__}: {e}")
    return onnx.load_from_string(buf.getvalue())


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), torch.nn.BatchNorm2d(6), torch.nn.ReLU6(),
            torch.nn.AdaptiveAvgPool2d(1))
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class LSTMNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True)
        self.fc = torch.nn.Linear(14, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[-1])


class AttentionBlock(torch.nn.Module):
    """A pre-norm transformer block through MultiheadAttention's explicit (need_weights) path."""

    def __init__(self, d=16, heads=4):
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.attn = torch.nn.MultiheadAttention(d, heads, dropout=0.0)
        self.ff = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU(), torch.nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=True)[0]
        return x + self.ff(self.norm2(x))


def _randomize_bn(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


EXPORTS = {
    "small-cnn-with-bn": (SmallCNN, (2, 1, 12, 12), {"do_constant_folding": False}),
    "lstm-2-layer-bidirectional": (LSTMNet, (6, 3, 5), {}),
    "transformer-encoder-layer": (lambda: torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0), (5, 2, 16), {}),
    "attention-block": (AttentionBlock, (5, 2, 16), {}),
}


@pytest.mark.parametrize("name", list(EXPORTS))
def test_torch_exported_model_matches_onnxruntime(name):
    factory, shape, kw = EXPORTS[name]
    torch.manual_seed(0)
    net = factory().eval()
    _randomize_bn(net)
    model = export(net, (torch.randn(*shape),), input_names=["x"], output_names=["y"], **kw)
    floats = [t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) >= 1]
    module = OnnxModule(model, trainable=floats)
    assert_module_matches_ort(module, model, x_feeds(shape), atol=1e-4)
    with torch.no_grad():
        want = net(torch.from_numpy(x_feeds(shape)[0]["x"]))
    np.testing.assert_allclose(module(x_feeds(shape)[0]["x"])[0].detach().numpy(), want.numpy(), rtol=1e-4,
                               atol=1e-4, err_msg="output 'y' against the torch original")
    module.train()
    module(x_feeds(shape)[0]["x"])[0].square().sum().backward()
    no_grad = [n for n, p in module.onnx_parameters().items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"no gradient reached {no_grad}"


def test_dropout_ratio_from_a_graph_input_is_used_but_not_rescaled():
    model = _model([helper.make_node("Dropout", ["x", "r"], ["y"], name="drop")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64]),
                    helper.make_tensor_value_info("r", TensorProto.FLOAT, [])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])], [])
    module = OnnxModule(model).train()
    assert module.dropout_ratios == {"drop": None}
    torch.manual_seed(0)
    y = module(torch.ones(64, 64), torch.tensor(0.75))[0]
    assert 0.68 < (y == 0).float().mean().item() < 0.82
    assert module.set_dropout_scale(0.5) == {"drop": None}
    with pytest.raises(ConfigError, match="run-time tensor"):
        module.set_dropout_scale({"drop": 0.5})


def test_deepcopy_gives_an_independent_module():
    import copy

    module = OnnxModule(dropout_model(0.5)).eval()
    clone = copy.deepcopy(module)
    clone.set_dropout_scale(0.1)
    clone.train()
    assert module.dropout_ratios == {"drop": 0.5} and not module.training
    assert torch.equal(module(torch.ones(64, 64))[0], torch.ones(64, 64))
    assert clone._steps[0].ctx.run is clone._run
