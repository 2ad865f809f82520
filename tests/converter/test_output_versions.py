"""The written model runs wherever the input ran (compatibility audit, 2026-12-06): its IR version and every
domain's opset are never above the input's, except where a storage format's decoder needs a higher opset
(`encode.STORAGE_OPSET`: the scatter chain at 9, compact's decoder at 11), and then the run says so and names the
format that keeps the input's opset. The audit loaded 166 outputs in onnxruntime 1.15.1-1.22.1 (tests/corpus/
RESULTS.md); this pins the rule those outputs followed. onnx 1.23.2's `make_model` stamps IR 14 on a model built
without `ir_version`, which onnxruntime 1.17.3 refuses ("Unsupported model IR version: 14, max supported IR version:
9"; 1.22.1: max 10): a pass that rebuilt the written model that way would fail here at once."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.calibration.runtime import make_session, random_feeds
from onnxprune.converter.cli import cli
from onnxprune.converter.steps.encode import STORAGE_OPSET
from onnxprune.models import builders


def _model(ir: int, opset: int, fp16: bool = False) -> onnx.ModelProto:
    model = builders.lenet300_like(hidden=(64, 32), seed=0)
    model.opset_import[0].version, model.ir_version = opset, ir
    if ir < 4:  # IR 3 lists every initializer among the graph inputs
        model.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                                 for t in model.graph.initializer)
    if fp16:
        model = builders.as_float16(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _prune(tmp_path, model, name, *flags) -> tuple[onnx.ModelProto, dict, str]:
    src, out = tmp_path / "in.onnx", tmp_path / f"{name}.onnx"
    onnx.save(model, src)
    res = CliRunner().invoke(cli, ["prune", str(src), "-o", str(out), "--json", *map(str, flags)])
    assert res.exit_code == 0, res.output
    return onnx.load(out), json.loads(res.output), str(out)


INPUTS = {"ir8-op17": (8, 17, False), "ir7-op13": (7, 13, False), "ir6-op11": (6, 11, False),
          "ir4-op9": (4, 9, False), "ir3-op8": (3, 8, False), "ir8-op17-fp16": (8, 17, True)}
RUNS = {"constant": ("--sparsity", "0.9"), "initializer": ("--sparsity", "0.9", "--sparse-format", "initializer"),
        "compact": ("--sparsity", "0.5", "--sparse-format", "compact"),
        "bits4": ("--sparsity", "0.5", "--weight-bits", "4"), "bits16": ("--sparsity", "0.5", "--weight-bits", "16")}
REFERENCE = {"constant": ("--sparsity", "0.9"), "initializer": ("--sparsity", "0.9"),
             "compact": ("--sparsity", "0.5"), "bits4": ("--sparsity", "0.5", "--weight-bits", "4"),
             "bits16": ("--sparsity", "0.5", "--weight-bits", "16")}


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("form", list(INPUTS))
def test_the_output_never_needs_a_newer_ir_or_opset_than_the_input_unless_its_format_does_and_says_so(
        tmp_path, form, run):
    ir, opset, fp16 = INPUTS[form]
    if fp16 and run == "bits16":
        pytest.skip("an fp16 model's weights are fp16 already")
    model = _model(ir, opset, fp16)
    final, report, path = _prune(tmp_path, model, run, *RUNS[run])
    assert final.ir_version <= model.ir_version, f"IR {model.ir_version} -> {final.ir_version}"
    before = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    after = {o.domain or "ai.onnx": o.version for o in final.opset_import}
    assert set(after) <= set(before), f"new domains {set(after) - set(before)}"
    raised = after["ai.onnx"] > before["ai.onnx"]
    said = [n for n in report["notes"] if f"opset raised {opset} -> {after['ai.onnx']}" in n]
    if raised:  # only to a storage format's own opset, said with the flag that keeps the input's
        assert after["ai.onnx"] in STORAGE_OPSET.values() and opset < after["ai.onnx"], after
        assert said and f"--sparse-format dense keeps opset {opset}" in said[0], report["notes"]
    else:
        assert not said
    if run != "initializer":  # a sparse initializer passes the plain checker only
        onnx.checker.check_model(final, full_check=True)
    else:
        onnx.checker.check_model(final)
    # the same run written dense (no storage raise there) gives the same outputs in onnxruntime
    dense, _, dense_path = _prune(tmp_path, model, "dense", *REFERENCE[run], "--sparse-format", "dense")
    assert dense.ir_version == model.ir_version and dense.opset_import[0].version == opset
    for seed in (0, 1):
        feed = random_feeds(model, batch=3, seed=seed)
        got, want = make_session(path).run(None, feed), make_session(dense_path).run(None, feed)
        for g, w in zip(got, want):
            g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
            scale = max(float(np.abs(w).max()), 1e-6)
            assert float(np.abs(g - w).max()) <= (1e-3 if fp16 else 1e-5) * scale
