"""Every graph output counts: each gets a metric that fits it, and the worst output is the run's loss."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxprune.calibration.metrics import METRICS, Evaluator, auto_kind, auto_kinds, metric_plan, output_error
from onnxprune.calibration.readers import open_data
from onnxprune.converter.cli import cli
from onnxprune.errors import ConfigError
from onnxprune.models import third_party_builders as tb

RNG = np.random.default_rng(0)
X8 = RNG.standard_normal((64, 8)).astype(np.float32)
X4 = RNG.standard_normal((64, 4)).astype(np.float32)


def with_weight(model, name, fn):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    t = next(t for t in out.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t)).astype(np.float32), name))
    return out


def evaluator(model, feeds, metric=None, **kw):
    return Evaluator(open_data(feeds, model, batch_size=16), metric, model, **kw)


def test_each_output_gets_the_metric_that_fits_it():
    assert evaluator(tb.two_head_detector(), {"input": X8}).plan == {"boxes": "rel_l2", "scores": "prob"}
    assert evaluator(tb.regressor(), {"input": X8}).plan == {"value": "rel_l2"}
    assert evaluator(tb.embedder(), {"input": X8}).plan == {"embedding": "cosine"}
    assert evaluator(tb.sklearn_mlp(), {"input": X4}).plan == {"output_label": "exact", "output_probability": "prob"}
    assert auto_kind("logits", np.zeros((2, 5), np.float32) + [[1, 2, 3, 4, 5]]) == "agreement"
    assert auto_kind("ctc_logits", np.zeros((2, 7, 5), np.float32)) == "seq_agreement"
    assert auto_kind("map", np.zeros((2, 4, 3, 3), np.float32)) == "rel_l2"
    assert all(m.one_pp for m in METRICS.values())


def test_a_head_beside_the_class_scores_is_regression_whatever_its_name():
    # keras2onnx's MTCNN: box offsets 'dense_2' [N, 4] beside 'softmax_1' [N, 2]; neither name says what it holds
    model = tb.two_head_detector(names=("dense_2", "softmax_1"))
    assert evaluator(model, {"input": X8}).plan == {"dense_2": "rel_l2", "softmax_1": "prob"}
    logits = np.array([[1.0, 3.0, -2.0, 0.5]] * 4, np.float32)
    probs = np.full((4, 2), 0.5, np.float32)
    assert auto_kinds({"dense_2": logits, "cls_logits": logits}) == {"dense_2": "rel_l2", "cls_logits": "agreement"}
    # with no output that plainly holds classes, unnamed [N, C] heads stay class scores (multi-task logits)
    assert auto_kinds({"out_a": logits, "out_b": logits}) == {"out_a": "agreement", "out_b": "agreement"}
    assert auto_kinds({"out_a": logits, "p": probs})["out_a"] == "rel_l2"


def test_a_lopsided_output_is_scored_per_channel_so_its_small_channels_count():
    # a YOLOv8 head: [N, 4 + classes, anchors], box coordinates in pixels beside class probabilities
    rng = np.random.default_rng(0)
    head = np.concatenate([rng.uniform(0, 320, (3, 4, 50)), rng.uniform(0, 0.05, (3, 6, 50))], axis=1)
    head = head.astype(np.float32)
    assert auto_kinds({"output0": head}) == {"output0": "channel_rel_l2"}
    assert auto_kinds({"map": rng.standard_normal((2, 4, 8, 8)).astype(np.float32)}) == {"map": "rel_l2"}
    # the class channels lost: whole-output rel_l2 barely moves, the per-channel figure loses 6 of 10 channels
    lost = head.copy()
    lost[:, 4:] = 0.0
    whole = METRICS["rel_l2"].finish(*METRICS["rel_l2"].batch(lost, head, None))
    per_channel = METRICS["channel_rel_l2"].finish(*METRICS["channel_rel_l2"].batch(lost, head, None))
    assert whole > 0.999 and per_channel == pytest.approx(0.4)
    # the decision rule's per-sample form is the same figure
    from onnxprune.converter.auto.decide import PER_SAMPLE

    assert PER_SAMPLE["channel_rel_l2"].fn(lost, head, None).mean() == pytest.approx(1 - per_channel)
    # a channel that is zero in both models is not an error; identical outputs lose nothing
    zero = head.copy()
    zero[:, 5] = 0.0
    assert METRICS["channel_rel_l2"].finish(*METRICS["channel_rel_l2"].batch(zero, zero, None)) == 1.0
