"""A feed's rows read together as one list (list@T, set@T, top@K): a ranking or recommendation model's application runs
one request's candidates in one feed and reads a list of them, so a request is one sample, changed when its list did
(real models 56b's L2: VS Code's extension recommender held 0.28% of rows crossing 0.6 while 72% of its workspaces'
lists changed)."""

import json

import numpy as np
import onnx
import pytest
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.output_metrics import METRICS, ranked_rows, split_threshold
from onnxprune.calibration.readers import open_data, requests_reader
from onnxprune.converter.auto.decide import PER_SAMPLE
from onnxprune.models import third_party_builders as tb
from tests.calibration.docs_checks import docs_function
from tests.hardening.helpers import assert_clean_error, invoke
from tests.oracle import first_output, with_initializer


def _requests(folder, feeds):
    folder.mkdir()
    for i, feed in enumerate(feeds):
        np.savez(folder / f"r{i:03d}.npz", **feed)
    return folder


def _thinned(model, share=0.05):
    """The scorer with fc1's smallest `share` of weights zeroed: a candidate that moves each score a little."""
    return with_initializer(model, "fc1.weight", lambda w: np.where(np.abs(w) < np.quantile(np.abs(w), share), 0, w))


def _app_list(scores, at):
    """The list an application reads, written out plainly: the rows scored `at` or more, best first."""
    return [int(i) for i in sorted(np.flatnonzero(scores >= at), key=lambda i: (-scores[i], i))]


def ev_list_loss(folder, model, candidate):
    ev = Evaluator(requests_reader(folder, model, "test"), "score=list@0.8", reference_model=model)
    return ev.loss_pp(ev.evaluate(candidate))


def test_ranked_rows_is_the_list_an_application_reads():
    scores = np.array([[0.7], [0.95], [0.3], [0.7], [0.61], [np.nan]], np.float32)
    assert ranked_rows(scores, "list", 0.6) == (1, 0, 3, 4)  # best first, equal scores by row order
    assert ranked_rows(scores, "set", 0.6) == (0, 1, 3, 4)
    assert ranked_rows(scores, "top", 2) == (1, 0)
    assert ranked_rows(scores[:, 0], "top", 10) == (1, 0, 3, 4, 2, 5)  # NaN last; [R] as [R, 1]
    assert split_threshold("top@5")[1].value == 5 and split_threshold("list@0.6")[1].value == 0.6
    for bad, says in [("top@2.5", "whole number"), ("list@0.6+rel_l2", "pairs with no other kind"),
                      ("agreement@3", "list@T, set@T, top@K")]:
        with pytest.raises(ValueError, match=says):
            split_threshold(bad)
    assert PER_SAMPLE["list@0.8"].parts == ("changed list",) and "requests" in METRICS["top@3"].one_pp


def test_a_request_is_one_sample_changed_when_its_list_changed(tmp_path):
    """Each file of a folder is one request, run as one feed as its application runs it, and one decision sample:
    the loss is the share of requests whose list changed, counted by hand in onnxruntime; judged row by row the
    same candidate crosses 0.8 on a fraction of a percent of its rows."""
    model, feeds = tb.row_scorer(), tb.row_scorer_requests(60, seed=1)
    candidate = _thinned(model)
    folder = _requests(tmp_path / "requests", feeds)
    dense = [first_output(model, f)[:, 0] for f in feeds]
    moved = [first_output(candidate, f)[:, 0] for f in feeds]
    for kind, changed in [("list@0.8", lambda a, b: _app_list(a, 0.8) != _app_list(b, 0.8)),
                          ("set@0.8", lambda a, b: set(np.flatnonzero(a >= 0.8)) != set(np.flatnonzero(b >= 0.8))),
                          ("top@5", lambda a, b: _app_list(a, -np.inf)[:5] != _app_list(b, -np.inf)[:5])]:
        ev = Evaluator(requests_reader(folder, model, "test"), f"score={kind}", reference_model=model)
        assert ev.num_samples == 60 and ev.rows == 60 and ev.sample_axes == (None,)
        want = 100.0 * np.mean([changed(a, b) for a, b in zip(dense, moved)])
        assert ev.loss_pp(ev.evaluate(candidate)) == pytest.approx(want, abs=1e-9), kind
    assert want > 0
    lists = ev_list_loss(folder, model, candidate)
    assert lists > 30.0 and docs_function("list_loss")(moved, dense, 0.8) == pytest.approx(lists)  # 25 of 60
    rows = Evaluator(open_data(folder, model, batch_size=64), "score=binary_prob@0.8", reference_model=model)
    assert rows.num_samples == 60 * 40
    crossed = np.mean(np.concatenate([(a >= 0.8) != (b >= 0.8) for a, b in zip(dense, moved)]))
    assert crossed < 0.005  # 0.21% of rows, each judged alone


def test_a_run_judges_requests_and_says_so(tmp_path):
    """`prune --metric score=list@T` on a folder of requests: the decision set, the final figure and the notes count
    requests (every 4th trains, whole), and the written model's lists on the decision requests changed no more than
    the run says; the same folder judged by rows is told of the list kinds."""
    model_path = tmp_path / "scorer.onnx"
    model = tb.row_scorer()
    onnx.save(model, model_path)
    feeds = tb.row_scorer_requests(200, seed=2)
    folder = _requests(tmp_path / "requests", feeds)
    res = invoke("prune", model_path, "-o", tmp_path / "out.onnx", "--data", folder, "--max-loss", "5",
                 "--metric", "score=list@0.8", "--one-shot", "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert "200 request(s), one a feed" in res.output and "decision requests" in res.output, res.output
    assert "decision samples" not in res.output.split("\nnote:", 1)[1]
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    decision = report["run"]["budget"]["decision"]
    n = decision["n"]
    assert 100 <= n < 200 and decision["output"] == "score"
    written = onnx.load(tmp_path / "out.onnx")
    changed = [_app_list(first_output(model, f)[:, 0], 0.8) != _app_list(first_output(written, f)[:, 0], 0.8)
               for f in feeds]
    assert 100.0 * sum(changed) / len(feeds) <= 5.0 + 1e-9 + 100.0 * (200 - n) / 200  # n of them decided
    assert decision["loss_pp"] == pytest.approx(100.0 * round(decision["loss_pp"] * n / 100) / n)
    rows = invoke("prune", model_path, "-o", tmp_path / "rows.onnx", "--data", folder, "--max-loss", "5",
                  "--one-shot")
    assert rows.exit_code == 0, rows.output
    assert "hold 40 rows each" in rows.output and "--metric score=list@T" in rows.output, rows.output


def test_a_list_needs_requests_apart_and_one_score_a_row(tmp_path):
    model_path = tmp_path / "scorer.onnx"
    onnx.save(tb.row_scorer(), model_path)
    np.savez(tmp_path / "rows.npz", input=np.concatenate([f["input"] for f in tb.row_scorer_requests(5)]))
    res = invoke("prune", model_path, "-o", tmp_path / "out.onnx", "--data", tmp_path / "rows.npz", "--max-loss", "1",
                 "--metric", "score=top@5")
    assert_clean_error(res, 2, "--metric score=top@5 reads each feed", "holds no requests apart", "one request's rows")
    wide = tmp_path / "wide.onnx"
    onnx.save(tb.two_head_detector(), wide)
    res = invoke("prune", wide, "-o", tmp_path / "out.onnx", "--data", "random", "--max-loss", "1",
                 "--metric", "scores=list@0.5")
    assert_clean_error(res, 2, "one score a row", "'scores' is declared")


def test_rows_that_share_a_context_are_told_of_the_list_kinds_and_batches_are_not(tmp_path):
    """Real models 57's L1 (Super 3's policy: a position 'obs' beside its moves, a file each, read a move a sample;
    its app plays the best-scored move) gets the note naming top@1, though its folder is read as each file's rows
    beside the file's 'obs'; a folder of batches of 64 independent rows of the same scorer whose requests were
    judged above (lists 57's L5) shares no context and gets none."""
    import onnxruntime as ort

    policy = tb.move_policy()
    onnx.checker.check_model(policy, full_check=True)
    path = tmp_path / "policy.onnx"
    onnx.save(policy, path)
    positions = tb.move_policy_positions(120, seed=3)
    folder = _requests(tmp_path / "positions", positions)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, positions[0])[0]
    w = {t.name: onnx.numpy_helper.to_array(t) for t in policy.graph.initializer}
    pos = np.maximum(positions[0]["obs"] @ w["body.weight"] + w["body.bias"], 0)
    moves = np.maximum(positions[0]["move_features"] @ w["moves.weight"] + w["moves.bias"], 0)
    np.testing.assert_allclose(got, (moves * pos).sum(1), rtol=1e-5, atol=1e-6)
    res = invoke("prune", path, "-o", tmp_path / "out.onnx", "--data", folder, "--max-loss", "5", "--one-shot")
    assert res.exit_code == 0, res.output
    assert "share a context (input 'obs' holds one value a file)" in res.output, res.output
    assert "--metric scores=list@T" in res.output and "top@1 the pick" in res.output, res.output

    scorer = tmp_path / "scorer.onnx"
    onnx.save(tb.row_scorer(), scorer)
    rng = np.random.default_rng(4)
    batches = tmp_path / "batches"
    batches.mkdir()
    for i in range(6):  # independent rows: each its own context and candidate
        rows = np.concatenate([(rng.random((64, 12)) < 1 / 3), np.eye(40)[rng.integers(0, 40, 64)]], axis=1)
        np.savez(batches / f"b{i}.npz", input=rows.astype(np.float32))
    res = invoke("prune", scorer, "-o", tmp_path / "rows.onnx", "--data", batches, "--max-loss", "5", "--one-shot")
    assert res.exit_code == 0, res.output
    assert "--metric score=list@T" not in res.output and "share a context" not in res.output, res.output


def test_a_per_batch_quantized_scorer_is_not_said_to_run_as_a_single_request(tmp_path):
    """Lists 57's L4: a scorer that quantizes its activations per batch, judged by rows, was warned that each row "is
    evaluated alone, as a single request runs" where a request was a file's rows run together; judged by requests
    (top@1), the legend under the table defined "decision samples" while the notes counted decision requests."""
    from onnxprune.models.builders_control import matmul_integer

    path = tmp_path / "scorer.onnx"
    onnx.save(matmul_integer(in_features=16, out_features=1), path)
    rng = np.random.default_rng(6)
    feeds = [{"input": np.concatenate([np.tile(rng.standard_normal(8), (8, 1)), np.eye(8)], 1).astype(np.float32)}
             for _ in range(60)]
    folder = _requests(tmp_path / "requests", feeds)
    res = invoke("prune", path, "-o", tmp_path / "rows.onnx", "--data", folder, "--max-loss", "5", "--one-shot")
    assert res.exit_code == 0, res.output
    assert "quantizes its activations per batch" in res.output and "as a single request runs" not in res.output
    assert "where your application runs several rows in one call" in res.output, res.output
    assert "decision samples = the samples each candidate is judged on" in res.output, res.output
    res = invoke("prune", path, "-o", tmp_path / "top.onnx", "--data", folder, "--max-loss", "5", "--one-shot",
                 "--metric", "output=top@1")
    assert res.exit_code == 0, res.output
    assert "decision requests = the requests each candidate is judged on" in res.output, res.output
    assert "decision samples" not in res.output and "quantizes its activations per batch" not in res.output
