"""Recovery backends of the automatic search: the rule that picks one, and the refit search on small data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.converter.auto.config import AutoConfig
from onnxprune.converter.auto.recovery import RECOVERY, SMALL_DATA, choose
from onnxprune.converter.pipeline import configure, run
from onnxprune.errors import ConfigError
from onnxprune.models import builders
from tests.converter._data import self_labelled
from tests.converter.test_reconstruct import with_loop


class _Reader:
    def __init__(self, n, labels):
        self.num_samples, self.has_labels = n, labels


def test_backends_are_a_registry_and_a_bad_name_lists_them():
    assert set(RECOVERY) == {"sgd", "reconstruct"}
    with pytest.raises(ConfigError, match="auto, sgd, reconstruct"):
        AutoConfig(max_loss=1.0, recovery="adam").validate()


@pytest.mark.parametrize("model, n, labels, want, why", [
    (lambda: with_loop(builders.mlp_gemm(seed=0), "/relu1/Relu_output_0"), 10_000, True, "reconstruct", "bridge"),
    (lambda: builders.mlp_gemm(seed=0), SMALL_DATA - 1, False, "reconstruct", "no labels"),
    (lambda: builders.mlp_gemm(seed=0), SMALL_DATA, False, "sgd", "training samples"),
    (lambda: builders.mlp_gemm(seed=0), 200, True, "sgd", "with labels"),
], ids=["bridge-cannot-run", "small-unlabelled", "enough-unlabelled", "labelled"])
def test_the_rule_picks_reconstruct_without_the_bridge_or_with_little_unlabelled_data(model, n, labels, want, why):
    name, rule = choose(model(), _Reader(n, labels))
    assert name == want and why in rule
    assert choose(model(), _Reader(n, labels), "sgd") == ("sgd", "given (--recovery)")


@pytest.fixture(scope="module")
def small_unlabelled():
    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=300, data_seed=2)
    return model, {"input": data["input"]}


def test_small_unlabelled_data_searches_by_refit_beyond_the_one_shot_model(small_unlabelled):
    model, data = small_unlabelled
    one_shot = run(model, configure(max_loss=1.0, data=data, one_shot=True))
    result = run(model, configure(max_loss=1.0, data=data, time_budget=120, seed=0))
    report = result.report
    choices = report["auto"]["choices"]
    assert choices["recovery"]["value"] == "reconstruct" and "no labels" in choices["recovery"]["rule"]
    # 300 samples: the small-data split (steps/data.py) refits on every 4th and decides on the other 225
    assert choices["refit_data"]["value"] == "train part"
    phases = [h["phase"] for h in report["history"]]
    assert phases[0] == "one-shot" and phases.count("reconstruct") >= 2
    # never worse than its own one-shot start (judged by the search's rule on the decision part); the plain
    # --one-shot run decides on all 300 samples by the point estimate, a different (looser) test
    start = report["history"][0]
    assert report["compression"] >= start["ratio"] - 1e-9 and one_shot.report["budget"]["met"]
    assert report["budget"]["met"]
    onnx.checker.check_model(result.model)
    kept = [h for h in report["history"] if h.get("kept")]
    assert kept[-1]["ratio"] == pytest.approx(max(h["ratio"] for h in kept))
