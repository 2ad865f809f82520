"""Labels that no output can use (no [N, classes] output): said once, then left out of scoring and retraining."""

from __future__ import annotations

import logging

import numpy as np
import onnx

from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.converter.pipeline import configure, run
from onnxprune.models.third_party_builders import step_logits


def _data(model, n=400, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    labels = make_session(model).run(None, {"input": x})[0][:, 0].argmax(1).astype(np.int64)
    return {"input": x, "labels": labels}


def test_a_reader_without_labels_yields_none_and_says_so():
    model = step_logits()
    reader = open_data(_data(model, n=10), model)
    assert reader.has_labels
    dropped = reader.without_labels()
    assert not dropped.has_labels and reader.has_labels  # a copy: the original keeps them
    assert all(labels is None for _, labels in dropped.batches())
    assert all(labels is not None for _, labels in reader.batches())
    assert sum(len(f["input"]) for f, _ in dropped.batches()) == 10
    assert "labels 'labels' ignored" in dropped.description


def test_labels_beside_a_decoder_steps_logits_are_ignored_in_the_search_too(caplog):
    """Sweep 2: a GPT-2 step exported with its cache (logits [N, 1, vocab]) and next-token labels warned 'labels are
    ignored', then the search's retraining used them and failed: 'Expected target size [32, 200], got [32]'."""
    model = step_logits(hidden=32)
    with caplog.at_level(logging.WARNING):
        result = run(model, configure(max_loss=1.0, data=_data(model, n=1200), time_budget=60, seed=0))
    said = [r for r in caplog.records if "no output has the shape [N, classes]" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    report = result.report
    assert report["budget"]["met"]
    assert report["auto"]["choices"]["recovery"]["rule"].startswith("no labels"), report["auto"]["choices"]
    onnx.checker.check_model(result.model, full_check=True)
    x = _data(model, n=300, seed=1)["input"]
    got = make_session(result.model, optimize=False).run(None, {"input": x})[0]
    want = make_session(model, optimize=False).run(None, {"input": x})[0]
    assert got.shape == want.shape == (300, 1, 6)
    assert np.mean(got.argmax(-1) == want.argmax(-1)) >= 0.97
