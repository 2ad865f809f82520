"""--device: every onnxruntime session and torch follow it; 'cuda' without a GPU is a one-line usage error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.calibration import runtime
from onnxprune.converter.cli import cli
from onnxprune.errors import ConfigError
from onnxprune.models.paths import LENET300_ONNX, MNIST_TRAIN_SLICE

HAS_GPU = runtime.gpu_count() > 0 and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and onnxruntime's CUDA provider")
no_gpu = pytest.mark.skipif(HAS_GPU, reason="a GPU is present")


@pytest.fixture(autouse=True)
def back_to_cpu():
    yield
    runtime.use_device("cpu")


@no_gpu
@pytest.mark.parametrize("extra", [[], ["--data", str(MNIST_TRAIN_SLICE), "--iterations", "1", "--limit", "64"]])
def test_cuda_without_a_gpu_is_one_line_usage_error_whether_or_not_anything_trains(tmp_path, extra):
    out = tmp_path / "out.onnx"
    res = CliRunner().invoke(cli, ["prune", str(LENET300_ONNX), "-o", str(out), "--sparsity", "0.5",
                                   "--device", "cuda", *extra])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--device cuda" in errors[0] and "--device cpu" in errors[0], res.output
    assert "Traceback" not in res.output and not out.exists()


@no_gpu
def test_auto_without_a_gpu_runs_sessions_on_the_cpu():
    assert runtime.use_device("auto") == "cpu"
    session = runtime.make_session(onnx.load(str(LENET300_ONNX)))
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_an_unknown_device_is_refused():
    with pytest.raises(ConfigError, match="not one of auto, cpu, cuda"):
        runtime.use_device("tpu")


@needs_gpu
def test_cuda_runs_every_session_on_the_cuda_provider():
    assert runtime.use_device("cuda") == "cuda"
    session = runtime.make_session(onnx.load(str(LENET300_ONNX)), optimize=False)
    assert session.get_providers()[0] == "CUDAExecutionProvider"


@needs_gpu
def test_training_on_cuda_with_autocast_writes_weights_back_in_the_models_dtype():
    torch = pytest.importorskip("torch")
    from onnxprune.converter.finetune import finetune
    from onnxprune.passes.magnitude import sparsity_mask
    from onnxprune.passes.weights import find_prunable, weight_array

    model = onnx.load(str(LENET300_ONNX))
    masks = {w.name: sparsity_mask(weight_array(model, w.name), 0.8) for w in find_prunable(model).prunable}
    with np.load(MNIST_TRAIN_SLICE) as d:
        x, y = d["input"][:512], d["labels"][:512]
    out, stats = finetune(model, masks, (x, y), epochs=1, lr=0.02, batch_size=64, device="cuda")
    assert stats.device.startswith("cuda") and torch.cuda.is_available()
    for name, mask in masks.items():
        w = weight_array(out, name)
        assert w.dtype == weight_array(model, name).dtype and not w[~mask].any(), name
