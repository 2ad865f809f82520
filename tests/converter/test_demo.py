"""`onnxprune demo` is the README's first command: it must run from the shipped files alone."""

import json

import onnx
from click.testing import CliRunner

from onnxprune.calibration.runtime import make_session
from onnxprune.converter.cli import cli
from onnxprune.models.mnist import load_npz
from onnxprune.models.paths import MNIST_SLICE


def test_demo_writes_a_verified_model_report_and_recipe(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(cli, ["demo", "-o", str(out), "--iterations", "3", "-q"])
    assert res.exit_code == 0, res.output
    model = out / "lenet300-pruned.onnx"
    for name in ("report.html", "report.json", "recipe.toml"):
        assert (out / name).stat().st_size > 0, name
    onnx.checker.check_model(onnx.load(model), full_check=True)
    document = json.loads((out / "report.json").read_text())
    assert document["summary"]["budget_met"] is True
    report = {**document, **document["run"]}  # the pipeline's numbers: shown above, the rest under "run"
    # the held-out accuracy the report states is what onnxruntime measures on the shipped slice
    x, y = load_npz(MNIST_SLICE)
    acc = float((make_session(str(model)).run(None, {"input": x})[0].argmax(1) == y).mean())
    sets = report["metrics"]["sets"]
    assert abs(sets["evaluation"]["after"] - acc) < 1e-9
    assert document["summary"]["compression"] > 2
    fc1 = report["neurons"]["layers"]["fc1.weight"]
    assert fc1["before"] == 300 and fc1["after"] < 300  # smaller dense shapes, not only zeros
