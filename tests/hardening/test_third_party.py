"""Third-party graphs that crashed with "internal error" (issue #13): each is a conversion or a one-line reason."""

import errno

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.converter import modelio
from onnxprune.converter.verify import check_parity
from onnxprune.errors import ConfigError, ParityError
from onnxprune.models import third_party_builders as tb
from tests.hardening.helpers import assert_clean_error, invoke


@pytest.fixture
def sklearn(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(tb.sklearn_mlp(), path)
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32))
    return path, tmp_path / "calib.npz"


def test_unwritable_output_path_is_one_line_naming_it(sklearn):
    model, _ = sklearn
    res = invoke("prune", model, "-o", "/proc/pruned.onnx", "--sparsity", "0.5")
    assert_clean_error(res, 2, "/proc/pruned.onnx", "choose another -o")


def test_write_failure_after_the_checks_is_one_line(sklearn, tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(modelio.os, "replace", full)
    with pytest.raises(ConfigError, match="out.onnx' cannot be written \\(No space left on device\\)"):
        modelio.save_model(tb.sklearn_mlp(), tmp_path / "out.onnx")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temp file left


def test_zipmap_output_is_verified_by_value(sklearn, tmp_path):
    model, data = sklearn
    for extra in ([], ["--data", data]):
        res = invoke("prune", model, "-o", tmp_path / "out.onnx", "--sparsity", "0.5", *extra)
        assert res.exit_code == 0, res.output
    out = onnx.load(tmp_path / "out.onnx")
    parity = check_parity(out, _dense(out), None)
    assert parity.max_abs < 1e-5


def _dense(model):
    """The written model's own dense twin (sparse Constant values densified): the oracle of its parity."""
    oracle = onnx.ModelProto()
    oracle.CopyFrom(model)
    modelio.densify_sparse(oracle)
    return oracle


def test_zipmap_that_differs_is_named():
    model = tb.sklearn_mlp()
    other = onnx.ModelProto()
    other.CopyFrom(model)
    w = next(t for t in other.graph.initializer if t.name == "fc2.weight")
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.5, "fc2.weight"))
    with pytest.raises(ParityError, match="output '(output_probability|output_label)'"):
        check_parity(other, model, None)


def test_unwritable_report_and_scan_folders_are_one_line(sklearn):
    model, data = sklearn
    res = invoke("prune", model, "-o", model.with_name("out.onnx"), "--sparsity", "0.5", "--report", "/proc/rep")
    assert_clean_error(res, 2, "--report '/proc/rep' cannot be written")
    res = invoke("sensitivity", model, "--data", data, "-o", "/proc/scan")
    assert_clean_error(res, 2, "-o '/proc/scan' cannot be written")
