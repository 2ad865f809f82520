"""Fuzzing: mutated model bytes (bit flips, truncations, splices, overwritten bytes of small valid models) and mutated
calibration arrays (dtypes, shapes, NaN/inf, labels) fed to the loader and to `inspect` / `prune`. The only
acceptable outcomes are a clean error (exit 1 or 2, one `Error:` line, no traceback, no "internal error", nothing
written) or a valid output (exit 0, and the written model passes onnx.checker).

The default run is small and derandomized (the same examples every time, so CI is stable). A longer, random run:
    ONNXPRUNE_FUZZ_EXAMPLES=2000 python -m pytest tests/hardening/test_fuzz.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxprune.converter import modelio
from onnxprune.errors import ConverterError
from onnxprune.models import builders, third_party_builders
from onnxprune.passes.sparse_encode import dense_to_sparse
from tests.hardening.helpers import assert_clean_error, invoke, leftovers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("ONNXPRUNE_FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="ONNXPRUNE_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _with_sparse_initializer() -> onnx.ModelProto:
    m = builders.mlp_gemm(in_features=8, hidden=(6,), out_features=3)
    t = m.graph.initializer[0]
    w = onnx.numpy_helper.to_array(t)
    w = np.where(np.abs(w) > 0.6, w, 0).astype(np.float32)
    m.graph.sparse_initializer.append(dense_to_sparse(w, t.name))
    del m.graph.initializer[0]
    return m


def _with_constant_weight() -> onnx.ModelProto:
    m = builders.mlp_matmul(in_features=8, hidden=(6,), out_features=3, transposed_weights=True)
    t = m.graph.initializer[0]
    const = onnx.helper.make_node("Constant", [], [t.name], value=t)
    del m.graph.initializer[0]
    m.graph.node.insert(0, const)
    return m


SEEDS = {
    "mlp": builders.mlp_gemm(in_features=8, hidden=(6,), out_features=3).SerializeToString(),
    "conv": builders.conv_bn_relu(in_channels=2, out_channels=3, kernel=3, size=4).SerializeToString(),
    "sparse": _with_sparse_initializer().SerializeToString(),
    "constant": _with_constant_weight().SerializeToString(),
    # weights stored as bfloat16 and read through Cast (folded at load, passes/quantized_weights.py `lowp`)
    "bf16": third_party_builders.bf16_weights(width=2, size=4, hidden=4, classes=3).SerializeToString(),
}


@st.composite
def mutated_models(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    n = len(data)
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "overwrite", "delete"]))
        n = len(data)
        if n == 0:
            break
        at = draw(st.integers(0, n - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            data = data[:at]
        elif kind == "splice":
            src = draw(st.integers(0, n - 1))
            data[at:at] = data[src: src + draw(st.integers(1, 64))]
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at: at + len(chunk)] = chunk
        else:
            del data[at: at + draw(st.integers(1, 16))]
    return bytes(data)


def _full_check_passes(model: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(model, full_check=True)
        return True
    except Exception:
        return False


@FUZZ
@given(data=mutated_models())
def test_loader_returns_a_model_or_raises_a_converter_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        path.write_bytes(data)
        try:
            loaded = modelio.load_model(path)
        except ConverterError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        assert not loaded.model.graph.sparse_initializer  # densified
        assert loaded.sha256 == modelio.sha256_file(path)


@FUZZ
@given(data=mutated_models())
def test_inspect_and_prune_give_a_clean_error_or_a_valid_output(data):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "m.onnx"
        path.write_bytes(data)
        res = invoke("inspect", path, "--json")
        event(f"inspect exit {res.exit_code}")
        if res.exit_code != 0:
            assert_clean_error(res, res.exit_code)
            assert res.exit_code in (1, 2)
        res = invoke("prune", path, "-o", tmp / "o.onnx", "--sparsity", "0.5")
        event(f"prune exit {res.exit_code}")
        assert path.read_bytes() == data, "the input changed"
        if res.exit_code != 0:
            assert_clean_error(res, res.exit_code)
            assert res.exit_code in (1, 2)
            assert leftovers(tmp) == []
            return
        written = onnx.load(tmp / "o.onnx")
        onnx.checker.check_model(written)
        # the full check (with shape inference) is promised when the input passes it; a mutated input may not
        if _full_check_passes(onnx.load_model_from_string(data)):
            onnx.checker.check_model(written, full_check=True)


# ---------------------------------------------------------------- calibration arrays

HAVE_READERS = (ROOT / "calibration" / "readers.py").exists()
DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64]


FAULTS = ["none", "dtype", "shape", "name", "nonfinite", "empty", "labels-length", "labels-range", "labels-dtype",
          "extra-array"]


@st.composite
def calibration_arrays(draw) -> dict[str, np.ndarray]:
    """Right data for a [N, 8] float model with three classes, then zero, one or two things made wrong."""
    faults = set(draw(st.lists(st.sampled_from(FAULTS), min_size=1, max_size=2)))
    n = 0 if "empty" in faults else draw(st.integers(1, 12))
    shape = draw(st.sampled_from([(n, 7), (n,), (n, 8, 1), (n, 2, 4), ()])) if "shape" in faults else (n, 8)
    dtype = draw(st.sampled_from(DTYPES[1:])) if "dtype" in faults else np.float32
    finite = np.dtype(dtype).kind != "f" or "nonfinite" not in faults
    elements = hnp.from_dtype(np.dtype(dtype), allow_nan=not finite, allow_infinity=not finite,
                              allow_subnormal=False, **({"min_value": -1e3, "max_value": 1e3} if finite and
                                                        np.dtype(dtype).kind == "f" else {}))
    values = draw(hnp.arrays(dtype, shape, elements=elements))
    if "nonfinite" in faults and values.size and np.dtype(dtype).kind == "f":
        values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    arrays = {draw(st.sampled_from(["x", "Input", "input_1"])) if "name" in faults else "input": values}
    if draw(st.booleans()) or faults & {"labels-length", "labels-range", "labels-dtype"}:
        length = draw(st.sampled_from([n + 1, max(n - 1, 0)])) if "labels-length" in faults else n
        high = 12 if "labels-range" in faults else 2
        low = -2 if "labels-range" in faults else 0
        labels_dtype = draw(st.sampled_from([np.float32, np.complex64, np.bool_])) if "labels-dtype" in faults \
            else draw(st.sampled_from([np.int64, np.int32, np.uint8]))
        arrays["labels"] = draw(hnp.arrays(np.int64, (length,), elements=st.integers(low, high))).astype(labels_dtype)
    if "extra-array" in faults:
        arrays["extra"] = np.zeros((n, 8), np.float32)
    event(f"faults: {', '.join(sorted(faults))}")
    return arrays


@pytest.mark.skipif(not HAVE_READERS, reason="calibration/readers.py is not written yet")
@FUZZ
@given(arrays=calibration_arrays(), metric=st.sampled_from(["agreement", "accuracy", "rel_l2", "cosine"]))
def test_prune_with_mutated_calibration_data_fails_cleanly_or_verifies(arrays, metric):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tmp / "m.onnx"
        model.write_bytes(SEEDS["mlp"])
        np.savez(tmp / "calib.npz", **arrays)
        res = invoke("prune", model, "-o", tmp / "o.onnx", "--sparsity", "0.5", "--data", tmp / "calib.npz",
                     "--metric", metric, "--batch-size", "4")
        event(f"prune --data exit {res.exit_code}")
        if res.exit_code != 0:
            assert_clean_error(res, res.exit_code)
            assert res.exit_code in (1, 2)
            assert leftovers(tmp) == []
            return
        onnx.checker.check_model(onnx.load(tmp / "o.onnx"), full_check=True)
        x = arrays.get("input")
        assert x is not None and x.ndim == 2 and x.shape[1] == 8 and len(x) > 0
        assert np.issubdtype(x.dtype, np.floating) and np.isfinite(x).all()
