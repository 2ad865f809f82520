"""Models we did not write: the exporter-made models that ship inside the `onnx` package itself
(onnx/backend/test/data: `pytorch-converted`, `pytorch-operator`, `simple`, `light`; PyTorch's first exporter at
opset 6, plus onnx's own hand-made graphs and weight-free "light" zoo models).

Every one is either pruned, and then checked by the independent oracle of test_any_model (full checker; weights only
ever zeroed, largest kept; onnxruntime computes what the input with those weights zeroed computes, with and without
dead-neuron removal), or refused with one `Error:` line and nothing written. Measured with onnx 1.23.2 here: 149
models, 31 pruned, 78 with no prunable weights (no Conv/Gemm/MatMul weight, or weights built by ConstantOfShape),
40 that onnxruntime itself cannot load (float64 kernels, removed ops).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from tests.hardening.helpers import assert_clean_error, invoke
from tests.hardening.test_any_model import check_prune, feeds, run

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def _models() -> list[Path]:
    return sorted(DATA.glob("*/*/model.onnx")) + sorted(DATA.glob("light/*.onnx"))


def _has_weights(model: onnx.ModelProto) -> bool:
    """A Conv/Gemm/MatMul weight (not a bias) is a stored tensor of at least 16 values (the tool's own floor), read
    directly or through a Transpose (PyTorch's first exporter wrote Linear without bias as Transpose + MatMul)."""
    stored = {t.name: len(onnx.numpy_helper.to_array(t).ravel()) for t in model.graph.initializer}
    stored.update({n.output[0]: stored[n.input[0]] for n in model.graph.node
                   if n.op_type == "Transpose" and n.input[0] in stored})
    tables = {t.name for t in model.graph.initializer if len(t.dims) >= 2}  # an embedding: Gather(table, ids) on
    lookups = any(n.input[0] in tables and n.input[1] not in stored  # on axis 0, any size
                  and not any(a.name == "axis" and a.i != 0 for a in n.attribute)
                  for n in model.graph.node if n.op_type == "Gather")
    return lookups or any(stored.get(name, 0) >= 16 for n in model.graph.node if n.op_type in WEIGHT_OPS
                          for name in n.input[:2] if n.op_type == "MatMul" or name == n.input[1])


def _loads(model: onnx.ModelProto) -> bool:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # opset 6 models warn that onnxruntime only guarantees opset >= 7
    try:
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return True
    except Exception:  # noqa: BLE001 - any load failure sorts the model among the refusals
        return False


def _cases():
    pruned, refused = [], []
    for path in _models():
        model = onnx.load(path)
        case = pytest.param(path, id=str(path.relative_to(DATA).parent / path.stem).replace("/model", ""))
        (pruned if _has_weights(model) and _loads(model) else refused).append(case)
    return pruned, refused


PRUNED, REFUSED = _cases()


def test_the_onnx_package_ships_its_backend_models():
    assert len(PRUNED) >= 20 and len(REFUSED) >= 50, (len(PRUNED), len(REFUSED))


@pytest.mark.parametrize("path", PRUNED)
def test_exporter_models_are_pruned_and_verified_independently(path, tmp_path):
    model = onnx.load(path)
    run(model, feeds(model, 0))  # the fixture runs as it is
    _, report, _ = check_prune(model, tmp_path, 0.5)
    assert report["layers"], "nothing was pruned"


# Refusals are all alike once the reason is known: every one is run, in one test, to keep the suite fast.
def test_models_without_prunable_weights_or_that_onnxruntime_cannot_load_are_refused_in_one_line(tmp_path):
    # (onnx 1.19's backend models include a training-mode BatchNormalization, refused as such)
    reasons = {"has no prunable weights", "cannot load this model", "exported in training mode"}
    for i, case in enumerate(REFUSED):
        (path,) = case.values
        out = tmp_path / f"out{i}.onnx"
        res = invoke("prune", path, "-o", out, "--sparsity", "0.5")
        line = assert_clean_error(res, res.exit_code or 1, tuple(reasons))
        assert res.exit_code != 0, f"{case.id}: exit 0\n{res.output}"
        assert "internal error" not in line, f"{case.id}: {line}"
        assert not out.exists(), f"{case.id}: refused but wrote {out}"
