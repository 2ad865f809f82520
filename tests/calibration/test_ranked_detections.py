"""An NMS-free detector's ranked list [N, K, 4 + 1 + 1] (ultralytics' end2end export) is judged by its detections,
matched by class and IoU, not row by row (calibration/output_metrics._detections, metric_choice.ranked_detections)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

from onnxprune import prune
from onnxprune.calibration.metric_choice import ranked_detections
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.output_metrics import METRICS
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.models import third_party_builders as tb


def _term(out, ref, kind="detections"):
    metric = METRICS[kind]
    if metric.norms is not None:
        return float(metric.samples(out[None], ref[None], None, np.ones(out.shape[-1]))[0][0, 0])
    return float(metric.samples(out[None], ref[None], None)[0][0, 0])


def _list():
    """Three detections (x1 y1 x2 y2 score class), then low-score rows of other places."""
    rows = [[10, 10, 30, 40, 0.91, 0], [50, 5, 70, 25, 0.62, 2], [5, 60, 25, 90, 0.30, 1]]
    rng = np.random.default_rng(0)
    for k in range(9):
        x, y = rng.uniform(0, 90, 2)
        rows.append([x, y, x + 8, y + 8, 0.03 - 0.002 * k, k % 3])
    return np.array(rows, np.float64)


def test_a_ranked_list_is_judged_by_its_detections_not_its_rows():
    ref = _list()
    assert _term(ref.copy(), ref) == 0.0
    swapped = ref.copy()
    swapped[[5, 6], :4] = swapped[[6, 5], :4]  # two low-score rows trade places: their boxes change rows
    swapped[[5, 6], 5] = swapped[[6, 5], 5]
    assert _term(swapped, ref) == 0.0
    assert _term(swapped, ref, "channel_prob") > 0.5  # row by row, the boxes moved most of their norm
    moved = ref.copy()
    moved[0, [0, 2]] += 0.02 * np.hypot(20, 30) / np.sqrt(2)  # the best detection shifted by 2% of its size
    assert _term(moved, ref) == pytest.approx(0.02)
    near = ref.copy()
    near[1, 4], near[2, 4] = 0.40, 0.45  # a rank change of two confident detections: rows swap, scores change
    near = near[[0, 2, 1, *range(3, 12)]]
    assert _term(near, ref) == pytest.approx(0.22)  # 0.62 -> 0.40: its score's change
    lost = ref.copy()
    lost[2, 5] = 2  # the third detection's class changed: lost in its class, new in the other
    assert _term(lost, ref) == pytest.approx(0.30)
    centred = ref.copy()
    centred[:, :4] = np.c_[(ref[:, :2] + ref[:, 2:4]) / 2, ref[:, 2:4] - ref[:, :2]]  # cx, cy, w, h
    shifted = centred.copy()
    shifted[0, 0] += 0.01 * np.hypot(20, 30)
    assert _term(shifted, centred) == pytest.approx(0.01)


def test_the_list_is_found_in_the_graph_and_nothing_else_is():
    assert ranked_detections(tb.end2end_detector()) == {"output0": 6}
    assert ranked_detections(tb.yolo_head()) == {}  # YOLOv8's anchors, channel_prob's
    assert ranked_detections(tb.two_head_detector()) == {}


def test_torch_legacy_exports_list_is_found_though_onnx_cannot_size_its_boxes(tmp_path):
    """torch's legacy exporter gathers the boxes with indices a computed Expand shapes: onnx's shape inference leaves
    their width unknown, and the output's own width (6: 4 + score + class) says it."""
    torch = pytest.importorskip("torch")

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.h = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 7, 1)

        def forward(self, x):
            y = self.h(torch.relu(self.c(x))).flatten(2).transpose(1, 2)
            best, cls = y[..., 4:].sigmoid().max(-1)
            vals, idx = best.topk(10, dim=-1)
            boxes = y[..., :4].gather(1, idx[..., None].expand(-1, -1, 4))
            return torch.cat([boxes, vals[..., None], cls.gather(1, idx).float()[..., None]], -1)

    torch.manual_seed(0)
    path = tmp_path / "head.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(Head().eval(), (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, input_names=["images"],
                          output_names=["output0"], dynamic_axes={"images": {0: "N"}, "output0": {0: "N"}})
    model = onnx.load(path)
    assert ranked_detections(model) == {"output0": 6}
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    assert Evaluator(open_data({"images": x}, model), None, reference_model=model).plan == {"output0": "detections"}


def _blobs(rng, n):
    x = 0.1 * rng.uniform(0, 1, (n, 3, 8, 8)).astype(np.float32)
    for i in range(n):
        for _ in range(rng.integers(1, 3)):
            r, c = rng.integers(0, 6, 2)
            x[i, :, r:r + 2, c:c + 2] += rng.uniform(1, 3, (3, 1, 1))
    return x


def _decisions_changed(dense, pruned, threshold=0.25):
    """Images whose detections at `threshold` differ: a class and IoU >= 0.5 match for each, both ways."""
    def iou(a, b):
        lo, hi = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:4], b[:, 2:4])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        area = lambda c: np.prod(c[..., 2:4] - c[..., :2], axis=-1)  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    changed = 0
    for r, o in zip(dense, pruned):
        r, o = r[r[:, 4] >= threshold], o[o[:, 4] >= threshold]
        same = len(r) == len(o) and all(len(b := other[other[:, 5] == d[5]]) and iou(d, b).max() >= 0.5
                                        for one, other in ((r, o), (o, r)) for d in one)
        changed += not same
    return changed


def test_an_end2end_detector_is_pruned_within_its_budget_where_row_by_row_kept_it_dense(tmp_path):
    rng = np.random.default_rng(0)
    model = tb.end2end_detector()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    calibration, held = _blobs(rng, 400), _blobs(rng, 1000)
    result = prune(path, output=tmp_path / "out.onnx", data={"image": calibration}, max_loss=1, time_budget="2m")
    assert result.report["metrics"]["outputs"]["output0"]["metric"] == "detections"
    assert result.report["compression"] > 1.05
    ev = Evaluator(open_data({"image": held}, model), None, reference_model=model)
    written = onnx.load(tmp_path / "out.onnx")
    assert ev.loss_pp(ev.evaluate(written)) < 1.5  # held out, in onnxruntime: within the budget (and its noise)
    dense = make_session(model).run(None, {"image": held})[0]
    after = make_session(written).run(None, {"image": held})[0]
    assert _decisions_changed(dense, after) <= 10  # at a detector's 0.25: 0 of the 1,000 images differ here
    rows = prune(path, output=tmp_path / "rows.onnx", data={"image": calibration}, max_loss=1, time_budget="2m",
                 metric={"output0": "channel_prob"})
    assert rows.report["compression"] < 1.01  # the same budget row by row: nothing of note could be pruned
