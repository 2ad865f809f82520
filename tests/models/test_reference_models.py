"""The shipped reference LeNets, their cards and the shipped MNIST slice agree with each other."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxprune.models import builders, mnist
from onnxprune.models.paths import MNIST_SLICE, REFERENCE_CARDS, REFERENCE_ONNX

NAMES = sorted(REFERENCE_ONNX)
WEIGHTS = {"lenet300": 784 * 300 + 300 * 100 + 100 * 10, "lenet5": 500 + 25_000 + 400_000 + 5_000}
LIKE = {"lenet300": builders.lenet300_like, "lenet5": builders.lenet5_like}


def card(name: str) -> dict:
    return json.loads(REFERENCE_CARDS[name].read_text())


def shape(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", NAMES)
def test_reference_model_is_valid_with_the_agreed_interface(name):
    model = onnx.load(REFERENCE_ONNX[name])
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8 and [o.version for o in model.opset_import if o.domain == ""] == [17]
    assert [(i.name, shape(i)) for i in model.graph.input] == [("input", ["N", 1, 28, 28])]
    assert [(o.name, shape(o)) for o in model.graph.output] == [("logits", ["N", 10])]


@pytest.mark.parametrize("name", NAMES)
def test_reference_sha256_and_parameter_counts_match_the_card(name):
    data = REFERENCE_ONNX[name].read_bytes()
    c = card(name)
    assert hashlib.sha256(data).hexdigest() == c["sha256"]
    assert len(data) == c["bytes"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load_from_string(data).graph.initializer}
    weights = sum(a.size for k, a in inits.items() if k.endswith(".weight"))
    biases = sum(a.size for k, a in inits.items() if k.endswith(".bias"))
    assert weights == c["parameters"]["weights"] == WEIGHTS[name]
    assert biases == c["parameters"]["biases"]
    for layer, row in c["parameters"]["per_layer"].items():
        assert list(inits[f"{layer}.weight"].shape) == row["weight_shape"]


def test_shipped_mnist_slice_layout():
    images, labels = mnist.load_npz(MNIST_SLICE)
    assert images.shape == (1000, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (1000,) and labels.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the first MNIST test digits


@pytest.mark.parametrize("name", NAMES)
def test_reference_error_on_shipped_slice_is_consistent_with_the_card(name):
    images, labels = mnist.load_npz(MNIST_SLICE)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(REFERENCE_ONNX[name]), opts, providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": images})[0]
    error = 100.0 * float(np.mean(logits.argmax(axis=1) != labels))
    card_error = card(name)["dense_test_error_percent"]
    assert error <= 3.0, f"{name}: {error:.1f}% errors on the 1,000-image slice"
    assert abs(error - card_error) <= 1.5, f"{name}: slice {error:.1f}% vs card {card_error}%"


@pytest.mark.parametrize("name", NAMES)
def test_like_builder_has_the_reference_graph_structure(name):
    ref, like = onnx.load(REFERENCE_ONNX[name]), LIKE[name](seed=0)
    assert [n.op_type for n in like.graph.node] == [n.op_type for n in ref.graph.node]
    assert {i.name: list(i.dims) for i in like.graph.initializer} == {i.name: list(i.dims) for i in ref.graph.initializer}
    assert [shape(v) for v in like.graph.input] == [shape(v) for v in ref.graph.input]
    assert [(v.name, shape(v)) for v in like.graph.output] == [(v.name, shape(v)) for v in ref.graph.output]


# --- the training / export code that produced them -------------------------------------------------

@pytest.fixture(scope="module")
def train_mod():
    return pytest.importorskip("onnxprune.models.train")


@pytest.mark.parametrize("name", NAMES)
def test_export_onnx_of_fresh_module_matches_torch_and_reference_layout(train_mod, name):
    import torch

    torch.manual_seed(0)
    module = train_mod.MODELS[name]()
    train_mod.caffe_xavier_(module)
    model = train_mod.export_onnx(module)  # runs check_model(full_check=True) itself
    assert model.ir_version == 8
    ref = onnx.load(REFERENCE_ONNX[name])
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in ref.graph.node]
    images = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    assert train_mod.check_parity(model, module, images) <= 1e-4


def test_check_parity_names_the_output_when_the_export_is_wrong(train_mod):
    from onnxprune.errors import ParityError

    module = train_mod.LeNet300()
    model = train_mod.export_onnx(module)
    bias = next(i for i in model.graph.initializer if i.name == "fc3.bias")
    bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + 1.0, "fc3.bias"))
    images = np.zeros((2, 1, 28, 28), dtype=np.float32)
    with pytest.raises(ParityError, match="output 'logits'"):
        train_mod.check_parity(model, module, images)


def test_training_is_deterministic_for_a_seed(train_mod):
    from onnxprune.models.paths import shared_mnist_dir

    mnist_dir = shared_mnist_dir()
    if mnist_dir is None:
        pytest.skip("full MNIST not found (../shared/data/mnist next to the repo, or $ONNXPRUNE_MNIST)")
    runs = [train_mod.train("lenet300", mnist_dir, recipe=train_mod.Recipe(epochs=1, seed=7)) for _ in range(2)]
    a, b = (r.module.state_dict() for r in runs)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    curves = [[{k: v for k, v in row.items() if k != "elapsed_s"} for row in r.history] for r in runs]
    assert curves[0] == curves[1]
    assert runs[0].iterations == 938 and runs[0].test_error_percent < 10.0
