import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnxprune.calibration.branches import taken_branches, untaken_weights
from onnxprune.converter import modelio
from onnxprune.converter.verify import check_parity
from onnxprune.models import builders_control
from onnxprune.passes.scopes import all_constants
from onnxprune.passes.weights import find_prunable
from tests.hardening.helpers import invoke


def _positive(n: int, seed: int) -> np.ndarray:  # mean > 0 in every batch: if_network always takes then_branch
    return (np.abs(np.random.default_rng(seed).standard_normal((n, 16))) + 0.1).astype(np.float32)


def test_weights_read_only_in_a_branch_the_data_never_takes_are_found():
    model = builders_control.if_network(seed=0)
    weights = find_prunable(model).prunable
    batches = [{"input": _positive(8, s)} for s in range(4)]
    assert taken_branches(model, batches) == {"/select": {True}}
    assert untaken_weights(model, weights, batches) == {"else.fc2.weight": "If '/select'/else_branch"}
    both = batches + [{"input": -_positive(8, 9)}]  # one batch with a negative mean takes else_branch
    assert taken_branches(model, both) == {"/select": {True, False}}
    assert untaken_weights(model, weights, both) == {}


def test_a_budget_leaves_an_untaken_branch_dense_and_says_so(tmp_path):
    # silero-VAD's 8 kHz network sits in the else branch of an If on its sample rate: 16 kHz calibration audio
    # never ran it, the budget pruned it unmeasured, and its decisions at 8 kHz then agreed 75% with the original
    model = builders_control.if_network(seed=1)
    onnx.save(model, tmp_path / "m.onnx")
    x = _positive(300, 0)
    np.savez(tmp_path / "calib.npz", input=x)
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--max-loss", "1", "--one-shot",
                 "--data", tmp_path / "calib.npz")
    assert res.exit_code == 0, res.output
    assert "1 weight(s) read only in If '/select'/else_branch left dense" in res.output
    out = modelio.load_model(tmp_path / "out.onnx").model
    before = {k: numpy_helper.to_array(v) for k, v in all_constants(model.graph).items()}
    after = {k: numpy_helper.to_array(v) for k, v in all_constants(out.graph).items()}
    np.testing.assert_array_equal(after["else.fc2.weight"], before["else.fc2.weight"])
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"))
    parity = check_parity(onnx.load(tmp_path / "out.onnx"), out, [{"input": x[i:i + 32]} for i in (0, 32, 64)])
    assert parity.max_abs < 1e-5
    ort.InferenceSession((tmp_path / "out.onnx").as_posix(), providers=["CPUExecutionProvider"])
