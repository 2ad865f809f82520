"""Pruned weights on input features that have one value in every calibration sample are said (sweep 29's L1).

scikit-learn's scaler + PCA + SVC on MNIST, 250 calibration images: 2.19x "0 of 187 changed", 1.75% of 2,000 test
images changed; 5.0% of those with ink where no calibration image had any, 1.5% of the rest. Pruning a weight on a
feature that never varies moves every calibration sample alike (by nothing when the value is 0), so the budget never
measured what it does to an input that varies there: the run now says how many such weights it pruned."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.converter.coverage import feature_coverage
from onnxprune.models import builders, third_party_builders
from onnxprune.passes.weights import find_prunable
from tests.hardening.helpers import invoke


def _data(n: int, blank: int, seed: int = 0) -> np.ndarray:
    """n samples of 16 features, the first `blank` of them 0 in every sample (a pixel no image inks)."""
    x = np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)
    x[:, :blank] = 0.0
    return x


def test_features_with_one_value_are_found_for_first_layers_only():
    model = builders.mlp_gemm(in_features=16, hidden=(12,), out_features=4)
    weights = find_prunable(model).prunable
    x = _data(40, 5)
    x[:, 5] = 3.0  # one value, not 0: what a scaler makes of a blank pixel
    cov = feature_coverage(model, weights, [{"input": x[i:i + 8]} for i in range(0, 40, 8)])
    assert list(cov.unseen) == [weights[0].name]  # the second layer reads learned features: not judged here
    axis, unseen = cov.unseen[weights[0].name]
    assert unseen.tolist() == [True] * 6 + [False] * 10
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    for t in pruned.graph.initializer:
        if t.name == weights[0].name:
            w = np.moveaxis(onnx.numpy_helper.to_array(t).copy(), axis, 0)
            w[:2] = 0  # two blank features' weights pruned
            t.CopyFrom(onnx.numpy_helper.from_array(np.moveaxis(w, 0, axis), t.name))
    note = cov.note(model, pruned)
    assert note.startswith("24 pruned weight(s) read input features that have one value in every sample of --data")
    assert f"weight '{weights[0].name}': 6 of its 16 input features, features 0, 1, 2, 3, ..." in note
    # real models 48: one feature of four (a surrogate's one-dataset 'dataset') is named by its index
    x = _data(40, 0)[:, :16]
    x[:, 1] = 0.0
    one = feature_coverage(model, weights, [{"input": x[i:i + 8]} for i in range(0, 40, 8)])
    for t in pruned.graph.initializer:
        if t.name == weights[0].name:
            w = np.moveaxis(onnx.numpy_helper.to_array(t).copy(), axis, 0)
            w[1] = 0
            t.CopyFrom(onnx.numpy_helper.from_array(np.moveaxis(w, 0, axis), t.name))
    assert f"weight '{weights[0].name}': 1 of its 16 input features, feature 1):" in one.note(model, pruned)
    assert cov.note(model, model) is None  # none pruned: nothing said


def test_a_budgeted_run_says_it_pruned_them_and_full_data_says_nothing(tmp_path):
    model = builders.mlp_gemm(in_features=16, hidden=(32,), out_features=4)
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "blank.npz", input=_data(200, 6))
    np.savez(tmp_path / "full.npz", input=_data(200, 0))
    blank = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "a.onnx", "--data", tmp_path / "blank.npz",
                   "--sparsity", "0.5")
    assert blank.exit_code == 0, blank.output
    assert "read input features that have one value in every sample of --data" in " ".join(blank.output.split())
    full = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "b.onnx", "--data", tmp_path / "full.npz",
                  "--sparsity", "0.5")
    assert full.exit_code == 0 and "one value in every sample" not in full.output


def test_a_shared_layer_has_an_unseen_feature_only_where_every_crop_it_reads_has_one_value():
    """Sweep 38: a Keras Dense shared by four quadrants (one weight, four MatMuls) was judged by its first reader's
    crop alone: 72 of 196 features said to have one value in every sample, where none had in all four."""
    model = third_party_builders.shared_dense_crops(features=4, crops=2)
    onnx.checker.check_model(model, full_check=True)
    weights = find_prunable(model).prunable
    shared = next(w for w in weights if w.name == "shared.weight")
    assert shared.readers == 2
    x = _data(40, 0)[:, :8]
    x[:, 0] = 0.0  # feature 0 blank in the first crop, inked in the second
    x[:, 1], x[:, 5] = 0.0, 2.0  # feature 1 one value in each crop
    cov = feature_coverage(model, weights, [{"input": x[i:i + 8]} for i in range(0, 40, 8)])
    axis, unseen = cov.unseen["shared.weight"]
    assert axis == 0 and unseen.tolist() == [False, True, False, False]
    x[:, 5] = np.arange(40)  # feature 1 varies in the second crop: nothing unseen
    cov = feature_coverage(model, weights, [{"input": x[i:i + 8]} for i in range(0, 40, 8)])
    assert "shared.weight" not in cov.unseen
