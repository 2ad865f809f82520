"""Small decision sets (a helper's crash hunt, session 21): the input model kept because no candidate can be
certified is within any budget (it is the reference), and a split whose decision part cannot certify the budget
where all of --data can decides on all of it (one-shot) instead of keeping the input model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.calibration.runtime import make_session
from onnxprune.converter.cli import cli
from onnxprune.models import builders
from tests.oracle import assert_same_outputs


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    model = builders.mlp_matmul(seed=1)
    folder = tmp_path_factory.mktemp("small_sets")
    onnx.save(model, folder / "m.onnx")
    return model, folder


def _data(model, n: int, seed: int = 0) -> dict:
    name = model.graph.input[0].name
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    return {name: np.random.default_rng(seed).standard_normal([n, *dims]).astype(np.float32)}


def _prune(model, folder, name: str, feeds: dict, *extra) -> tuple[int, dict, str]:
    np.savez(folder / f"{name}.npz", **feeds)
    result = CliRunner().invoke(cli, ["prune", str(folder / "m.onnx"), "-o", str(folder / f"{name}.onnx"), "--data",
                                      str(folder / f"{name}.npz"), "--max-loss", "1", "--json", *extra])
    out = result.output
    return result.exit_code, (json.loads(out[out.index("{"):]) if result.exit_code == 0 else {}), out


def test_the_input_model_kept_for_want_of_samples_meets_the_budget_with_labels(mlp):
    """80 labelled samples cannot certify 1 pp (Wilson's bound with none changed: 1.23 pp): the input model is
    kept, and the run used to end "measured loss 0.000 pp exceeds --max-loss 1; nothing written" (exit 3)."""
    model, folder = mlp
    feeds = _data(model, 80)
    out_name = model.graph.output[0].name
    feeds["labels"] = make_session(model).run(None, feeds)[0].argmax(-1).astype(np.int64)
    code, report, text = _prune(model, folder, "labelled80", feeds)
    assert code == 0, text
    assert report["budget"]["met"] and report["budget"].get("kept_input") and report["compression"] == 1.0
    assert any("cannot certify --max-loss 1" in n for n in report["notes"])
    inputs = {k: v for k, v in feeds.items() if k != "labels"}
    assert_same_outputs(onnx.load(str(folder / "labelled80.onnx")), model, feeds=[inputs])  # the input model
    assert out_name


def test_a_decision_part_too_small_to_certify_hands_the_decision_to_all_of_the_data(mlp):
    """125 label-free samples: the automatic search's split leaves 93 to decide on, under the 99 that certify 1 pp
    of changed classes; all 125 can, so the one-shot search decides on them (as 99 samples, too few to split, do)."""
    model, folder = mlp
    code, small, text = _prune(model, folder, "free99", _data(model, 99))
    assert code == 0, text
    code, mid, text = _prune(model, folder, "free125", _data(model, 125))
    assert code == 0, text
    assert any("held out to decide on cannot certify --max-loss 1, all 125 of --data can" in n for n in mid["notes"])
    assert mid["budget"]["met"] and not mid["budget"].get("kept_input")
    assert mid["budget"]["decision"]["n"] == 125  # decided on all of it
    assert mid["compression"] > 1.0  # pruned (it kept the input model before, 1.0x)
    # what was written holds the claim in onnxruntime: no decision sample changed its class
    feeds = _data(model, 125)
    got = make_session(onnx.load(str(folder / "free125.onnx"))).run(None, feeds)[0]
    want = make_session(model).run(None, feeds)[0]
    assert (got.argmax(-1) == want.argmax(-1)).all()
