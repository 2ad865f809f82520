"""A deformable convolution (DeformConv, opset 19; torchvision's deform_conv2d): its weight is pruned, verified in
onnxruntime, retrained by sgd through the bridge; the refit and dead-neuron removal leave it as it is and say so."""

import numpy as np
import onnx

from onnxprune.converter.pipeline import configure, run
from onnxprune.converter.reconstruct import ReconstructReport, reconstruct
from onnxprune.models.third_party_builders import deformable_cnn
from onnxprune.passes.weights import find_prunable, weight_array
from tests.oracle import assert_same_outputs, onnxruntime_since, zero_weights


def _data(n=256, seed=0):
    model = deformable_cnn()
    x = np.random.default_rng(seed).uniform(0, 1, (n, 3, 8, 8)).astype(np.float32)
    from onnxprune.calibration.runtime import make_session
    labels = make_session(model).run(None, {"image": x})[0].argmax(1)
    return model, {"image": x, "labels": labels}


@onnxruntime_since("1.26.0", "a DeformConv kernel")
def test_the_deformable_weight_is_found_and_pruned_and_the_output_verified():
    model, data = _data()
    inv = find_prunable(model)
    dcn = next(w for w in inv.prunable if w.name == "dcn.weight")
    assert dcn.op_type == "DeformConv" and dcn.macs == 8 * 8 * 9 * 64  # as the Conv it multiplies like
    result = run(model, configure(sparsity=0.5, data={"image": data["image"]}))
    onnx.checker.check_model(result.model, full_check=True)
    w = weight_array(result.model, "dcn.weight")
    assert (w == 0).mean() >= 0.5
    assert_same_outputs(result.model, result.dense_model, feeds=[{"image": data["image"][:16]}])


@onnxruntime_since("1.26.0", "a DeformConv kernel")
def test_a_model_with_a_deformable_conv_retrains_through_the_bridge():
    model, data = _data()
    result = run(model, configure(sparsity=0.6, data=data, iterations=1, epochs=1, neurons=False))
    last = result.history[-1]
    assert last["phase"] == "prune" and last["train_loss"] > 0  # retrained by sgd: the bridge runs DeformConv
    w = weight_array(result.model, "dcn.weight")
    assert (w == 0).mean() >= 0.6 - 1e-6
    assert_same_outputs(result.model, result.dense_model, feeds=[{"image": data["image"][:16]}])


@onnxruntime_since("1.26.0", "a DeformConv kernel")
def test_the_refit_leaves_it_as_pruned_and_says_why():
    model, data = _data()
    masks = {w.name: np.abs(weight_array(model, w.name)) > np.median(np.abs(weight_array(model, w.name)))
             for w in find_prunable(model).prunable}
    report = ReconstructReport()
    reconstruct(zero_weights(model, masks), model, masks, [{"image": data["image"][:64]}], report=report)
    assert "deformable convolution" in report.skipped["dcn.weight"]
    assert {"c1.weight", "offsets.weight", "fc.weight"} <= set(report.refit)
