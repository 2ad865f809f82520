"""make_session serializes a model once (no ByteSize() first: upb computes it by serializing); past protobuf's 2 GB
limit it goes through a file with external data."""

import numpy as np
import onnx

from onnxprune.calibration import runtime
from onnxprune.models import builders


def _feeds(seed):
    return {"input": np.random.default_rng(seed).standard_normal((3, 12)).astype(np.float32)}


def test_serialized_is_the_model_bytes():
    model = builders.mlp_gemm(in_features=12, hidden=(16,), out_features=5)
    assert runtime._serialized(model) == model.SerializeToString()


def test_too_large_for_bytes_goes_through_external_data(monkeypatch):
    model = builders.mlp_gemm(in_features=12, hidden=(16,), out_features=5)
    direct = runtime.make_session(model, optimize=False)
    saved = []
    real_save = onnx.save_model
    monkeypatch.setattr(runtime, "_serialized", lambda m: None)  # as if the bytes would pass 2 GB
    monkeypatch.setattr(onnx, "save_model", lambda *a, **kw: saved.append(kw) or real_save(*a, **kw))
    via_file = runtime.make_session(model, optimize=False)
    assert saved and saved[0]["save_as_external_data"] is True
    for seed in (0, 1, 2):
        want = direct.run(None, _feeds(seed))[0]
        got = via_file.run(None, _feeds(seed))[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=0, err_msg="output 'output' differs via external data")


def test_a_refused_serialization_means_external_data():
    class Refuses:
        def SerializeToString(self):
            raise ValueError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB")

    assert runtime._serialized(Refuses()) is None


