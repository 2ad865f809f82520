"""Test oracles shared by the suite: run models in onnxruntime (optimisations off) and compare outputs."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.calibration.runtime import make_session, output_names, random_feeds


def runtime_version(version: str | None = None) -> tuple[int, ...]:
    """(major, minor, patch) of `version`, or of the installed onnxruntime."""
    if version is None:
        import onnxruntime

        version = onnxruntime.__version__
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def needs_onnxruntime(version: str | None, why: str) -> None:
    """Skip a test whose model or expected values need a newer onnxruntime than the installed one (the compatibility
    audit of 2026-12-06 ran the suite at onnxruntime 1.17.0 and at the floor, 1.18.1: these failed there because the
    runtime lacks the op or computes it otherwise, tests/corpus/RESULTS.md). `version` is the first one the test passed at of
    1.17.0, 1.18.1, 1.19.2, 1.20.1, 1.22.1, 1.23.2, 1.24.4, 1.26.0, 1.28.0, 1.30.0 and 1.31.1; None runs it."""
    if version is not None and runtime_version() < runtime_version(version):
        import onnxruntime

        pytest.skip(f"needs onnxruntime >= {version}: {why} (this is {onnxruntime.__version__})")


def needs_quantization_tool() -> None:
    """Skip a test that makes its model with onnxruntime.quantization (quantize_static, quantize_dynamic) where that
    tool cannot run: before onnxruntime 1.19 it reads onnx.mapping, which onnx 1.19 (the floor) no longer has
    (AttributeError at 1.17.0 and 1.18.1; the tool's own code never imports onnxruntime.quantization)."""
    if not hasattr(onnx, "mapping") and runtime_version() < (1, 19):
        import onnxruntime

        pytest.skip(f"onnxruntime.quantization of {onnxruntime.__version__} needs onnx.mapping, gone in onnx "
                    f"{onnx.__version__}")


def onnxruntime_since(version: str, why: str):
    """needs_onnxruntime as a decorator: `@onnxruntime_since("1.26.0", "a DeformConv kernel")`."""
    import onnxruntime

    return pytest.mark.skipif(runtime_version() < runtime_version(version),
                              reason=f"needs onnxruntime >= {version}: {why} (this is {onnxruntime.__version__})")


def with_initializer(model: onnx.ModelProto, name: str, fn) -> onnx.ModelProto:
    """A copy of `model` whose float initializer `name` is fn(its values): a hand-made "pruned" candidate."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    t = next(t for t in out.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t).copy()).astype(np.float32), name))
    return out


def with_initializers(model: onnx.ModelProto, which, fn) -> onnx.ModelProto:
    """A copy of `model` whose float initializers that `which(name)` picks are each fn(its values) (`with_initializer`
    on every one): a stream's or a decoder's weights scaled, an error it carries from call to call."""
    for name in [t.name for t in model.graph.initializer if which(t.name)]:
        model = with_initializer(model, name, fn)
    return model


def first_output(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    """The model's first output on `feed` (onnxruntime, optimisations off)."""
    return next(iter(run(model, feed).values()))


def run(model: onnx.ModelProto | bytes, feed: dict) -> dict[str, np.ndarray]:
    sess = make_session(model, optimize=False)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed)))


def assert_same_outputs(got_model, want_model, *, seeds=(0, 1, 2), batch=3, rtol=1e-5, feeds=None) -> None:
    """Both models on the same seeded inputs; the failing output is named."""
    feeds = feeds or [random_feeds(want_model, batch=batch, seed=s) for s in seeds]
    for feed in feeds:
        got, want = run(got_model, feed), run(want_model, feed)
        for name in output_names(want_model):
            g, w = np.asarray(got[name], np.float64), np.asarray(want[name], np.float64)
            assert g.shape == w.shape, f"output '{name}': shape {g.shape} != {w.shape}"
            scale = max(float(np.abs(w).max()), 1e-6)
            diff = float(np.abs(g - w).max())
            assert diff <= rtol * scale, f"output '{name}': max abs diff {diff:.3g} > {rtol:g} x scale {scale:.3g}"


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _graphs(g)


def zero_weights(model: onnx.ModelProto, masks: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The masking oracle: the original model with the masked weights zeroed in numpy (initializers and Constant
    nodes, in the main graph and in If/Loop/Scan bodies)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for graph in _graphs(out.graph):
        tensors = [t for t in graph.initializer if t.name in masks]
        tensors += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant" and n.output[0] in masks
                    for a in n.attribute if a.name == "value"]
        for t in tensors:
            name, proto = (t.name, t) if isinstance(t, onnx.TensorProto) else t
            arr = numpy_helper.to_array(proto)
            proto.CopyFrom(numpy_helper.from_array(np.where(masks[name], arr, 0).astype(arr.dtype), proto.name))
    return out


def check_full(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
