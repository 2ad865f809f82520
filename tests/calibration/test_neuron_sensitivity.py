"""The neuron scan: each point is the metric of the model with that share of one group's neurons masked whole."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.calibration.neuron_sensitivity import neuron_scan
from onnxprune.calibration.sensitivity import SensitivityResult
from onnxprune.converter.cli import cli
from onnxprune.models import builders
from onnxprune.passes.neuron_masks import neuron_map, neuron_masks
from onnxprune.passes.weights import find_prunable, weight_array
from tests.calibration.test_sensitivity import evaluator
from tests.oracle import zero_weights
from tests.passes import _graphs as G

LEVELS = (0.25, 0.5, 0.75)


@pytest.mark.parametrize("model_fn, input_name", [
    (lambda: builders.mlp_gemm(in_features=12, hidden=(16, 8), out_features=5), "input"), (G.residual, "x")])
def test_every_point_is_the_masked_model_measured(model_fn, input_name):
    model = model_fn()
    ev = evaluator(model, metric="rel_l2", input_name=input_name)
    result = neuron_scan(model, find_prunable(model), ev, LEVELS)
    assert result.unit == "neurons" and result.levels == list(LEVELS) and result.layers
    names = {w.name for w in find_prunable(model).prunable}
    nmap = neuron_map(model, names)
    weights = {n: weight_array(model, n) for n in names}
    ones = {n: np.ones(w.shape, bool) for n, w in weights.items()}
    groups = [i for i, g in enumerate(nmap.groups) if any(r in nmap.candidates for r in g)]
    assert [lay.size for lay in result.layers] == [len(nmap.groups[i]) for i in groups]
    for lay, gi in zip(result.layers, groups):
        for share, value in zip(LEVELS, lay.values):
            fractions = [share if j == gi else 0.0 for j in range(len(nmap.groups))]
            want = 100.0 * ev.evaluate(zero_weights(model, neuron_masks(nmap, weights, ones, fractions)[0]))
            assert value == pytest.approx(want, abs=1e-9), (lay.node, share)
    again = SensitivityResult.from_json(result.to_json())
    assert again.unit == "neurons" and again.layers[0].values == result.layers[0].values


def test_residual_class_is_one_row_across_its_producers():
    model = G.residual()  # stem and branch conv b meet in the Add: one class, one row
    result = neuron_scan(model, find_prunable(model), evaluator(model, input_name="x"), LEVELS)
    rows = {lay.node: lay for lay in result.layers}
    assert rows["b, stem"].coupled and rows["b, stem"].size == 8 and not rows["a"].coupled


def test_cli_writes_the_neuron_scan_beside_the_weight_scan(tmp_path):
    model = builders.lenet300_like(hidden=(32, 16))
    onnx.save(model, tmp_path / "m.onnx")
    res = CliRunner().invoke(cli, ["sensitivity", str(tmp_path / "m.onnx"), "--data", "random", "--limit", "64",
                                   "--neurons", "--levels", "0.5,0.9", "-o", str(tmp_path / "scan")])
    assert res.exit_code == 0, res.output
    assert "whole neurons" in res.output
    result = SensitivityResult.from_json((tmp_path / "scan" / "neuron_sensitivity.json").read_text())
    assert [lay.size for lay in result.layers] == [32, 16] and result.levels == [0.5, 0.9]
    assert (tmp_path / "scan" / "neuron_sensitivity.png").stat().st_size > 0
