"""A sample's items ranked on its last axis (`rank@K`, lists 57's L3): a retrieval model scores a query's items in
one row ([Q, items]) and its application reads each query's first K items, best first; each row is one sample,
changed when its top K or their order changed."""

import json

import numpy as np
import onnx
import pytest
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.output_metrics import METRICS, ranked_items, split_threshold
from onnxprune.calibration.readers import open_data
from onnxprune.converter.auto.decide import PER_SAMPLE
from onnxprune.models import third_party_builders as tb
from onnxprune.models.builders import mlp_gemm
from tests.hardening.helpers import assert_clean_error, invoke
from tests.oracle import first_output, with_initializer


def _top(scores, k):
    """Each row's first k items written out plainly: sorted by score, best first, equal scores by index."""
    return [sorted(range(len(row)), key=lambda i: (-row[i], i))[:k] for row in scores]


def test_rank_at_k_is_each_rows_top_k_items_changed(tmp_path):
    """200 queries of a 30-item scorer in onnxruntime: the loss is the share of rows whose top 5 items or their order
    changed, counted by hand; each row one sample, read in batches as any kind's data."""
    model = mlp_gemm(in_features=8, hidden=(16,), out_features=30)
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    np.savez(tmp_path / "queries.npz", input=x)
    candidate = with_initializer(model, "fc1.weight", lambda w: np.where(np.abs(w) < np.quantile(np.abs(w), 0.1), 0, w))
    dense, moved = first_output(model, {"input": x}), first_output(candidate, {"input": x})
    assert [list(r) for r in ranked_items(dense, 5)] == _top(dense, 5)
    assert ranked_items(np.array([[0.2, np.nan, 0.2, 0.9]]), 4).tolist() == [[3, 0, 2, 1]]  # ties by index, NaN last
    ev = Evaluator(open_data(tmp_path / "queries.npz", model, batch_size=64), "output=rank@5", reference_model=model)
    assert ev.num_samples == 200
    want = 100.0 * np.mean([a != b for a, b in zip(_top(dense, 5), _top(moved, 5))])
    assert 0 < want < 100 and ev.loss_pp(ev.evaluate(candidate)) == pytest.approx(want, abs=1e-9)
    top1 = Evaluator(open_data(tmp_path / "queries.npz", model, batch_size=64), "output=rank@1", reference_model=model)
    agreement = Evaluator(open_data(tmp_path / "queries.npz", model, batch_size=64), "output=agreement",
                          reference_model=model)
    assert top1.loss_pp(top1.evaluate(candidate)) == pytest.approx(agreement.loss_pp(agreement.evaluate(candidate)))
    assert PER_SAMPLE["rank@5"].parts == ("changed top 5",) and "top 5 items" in METRICS["rank@5"].one_pp
    with pytest.raises(ValueError, match="whole number of items"):
        split_threshold("rank@2.5")


def test_a_run_judges_each_rows_items_and_a_one_score_output_is_refused(tmp_path):
    model = mlp_gemm(in_features=8, hidden=(16,), out_features=30)
    path = tmp_path / "retrieval.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(1).standard_normal((400, 8)).astype(np.float32)
    np.savez(tmp_path / "queries.npz", input=x)
    res = invoke("prune", path, "-o", tmp_path / "out.onnx", "--data", tmp_path / "queries.npz", "--max-loss", "5",
                 "--metric", "output=rank@3", "--one-shot", "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert "changed top 3" in res.output and "decision samples" in res.output, res.output
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    changed = sum(a != b for a, b in zip(_top(first_output(model, {"input": x}), 3),
                                         _top(first_output(written, {"input": x}), 3)))
    decision = json.loads((tmp_path / "rep" / "report.json").read_text())["run"]["budget"]["decision"]
    n = decision["n"]
    assert 200 <= n < 400 and decision["output"] == "output"
    assert decision["loss_pp"] == pytest.approx(100.0 * round(decision["loss_pp"] * n / 100) / n)  # k of n rows
    assert 100.0 * changed / 400 <= 5.0 + 100.0 * (400 - n) / 400  # the written model's rows, n of them decided
    scorer = tmp_path / "scorer.onnx"
    onnx.save(tb.row_scorer(), scorer)
    np.savez(tmp_path / "rows.npz", input=np.concatenate([f["input"] for f in tb.row_scorer_requests(3)]))
    res = invoke("prune", scorer, "-o", tmp_path / "bad.onnx", "--data", tmp_path / "rows.npz", "--max-loss", "1",
                 "--metric", "score=rank@3")
    assert_clean_error(res, 2, "--metric score=rank@3 ranks each sample's last axis", "one value a sample",
                       "--metric score=top@K")
