"""A folder of .npz files where each file is one complete feed: read as is, one feed per step."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.sensitivity import scan, scan_naive
from onnxprune.converter.cli import cli
from onnxprune.errors import CalibrationError
from onnxprune.models import third_party_builders as tb
from onnxprune.passes.weights import find_prunable


def _open_logged(*args):
    """open_data(*args), with the log records it wrote."""
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("onnxprune").addHandler(handler)
    try:
        return open_data(*args), records
    finally:
        logging.getLogger("onnxprune").removeHandler(handler)


def vad_folder(folder, n=12):
    folder.mkdir()
    rng = np.random.default_rng(0)
    feeds = []
    for i in range(n):
        feed = {"audio": rng.standard_normal((1, 16)).astype(np.float32), "sr": np.array(16000),
                "state": rng.standard_normal((2, 1, 8)).astype(np.float32)}
        np.savez(folder / f"f{i:02d}.npz", **feed)
        feeds.append(feed)
    return feeds


def width_folder(folder, n=6):
    folder.mkdir()
    rng = np.random.default_rng(1)
    feeds = [{"image": rng.standard_normal((1, 3, 6, 6 + 3 * i)).astype(np.float32)} for i in range(n)]
    for i, feed in enumerate(feeds):
        np.savez(folder / f"line{i}.npz", **feed)
    return feeds


def test_scalar_and_batch_on_axis_1_are_read_one_feed_at_a_time(tmp_path):
    feeds = vad_folder(tmp_path / "vad")
    reader = open_data(tmp_path / "vad", tb.streaming_vad(), batch_size=64)
    assert reader.per_feed and reader.num_samples == 12
    got = [f for f, _ in reader.batches()]
    assert len(got) == 12
    for want, have in zip(feeds, got):
        assert set(have) == set(want)
        for k in want:
            np.testing.assert_array_equal(have[k], want[k])
            assert have[k].shape == want[k].shape  # sr stays a scalar, state keeps the batch on axis 1
    assert len(list(open_data(tmp_path / "vad", tb.streaming_vad(), limit=5).batches())) == 5
    held = reader.part(4, holdout=True)
    assert held.num_samples == 3 and len(list(held.batches())) == 3
    assert len(list(reader.part(4, holdout=False).batches())) == 9


def test_widths_that_differ_per_file_are_never_concatenated(tmp_path):
    feeds = width_folder(tmp_path / "lines")
    model = tb.variable_width()
    reader = open_data(tmp_path / "lines", model, batch_size=4)
    assert reader.per_feed
    assert [f["image"].shape[3] for f, _ in reader.batches()] == [f["image"].shape[3] for f in feeds]
    ev = Evaluator(reader, None, model)
    assert ev.dense == 1.0 and ev.num_samples == 6
    inventory = find_prunable(model)
    fast, naive = scan(model, inventory, ev, (0.5, 0.9)), scan_naive(model, inventory, ev, (0.5, 0.9))
    assert {lay.path for lay in fast.layers} == {"downstream"}
    for a, b in zip(fast.layers, naive.layers):
        np.testing.assert_allclose(a.values, b.values, atol=1e-6)


def test_the_reason_for_a_feed_a_file_names_both_files_shapes_whole():
    """Sweep 28's per-frame tagger (files of [10, 8, T], T differing) was told "input 'feats' has shape [10, 8, 27] in
    '0001.npz' and [?, 8, 44] in '0000.npz'": the first file's batch hidden as '?'."""
    from onnxprune.calibration.feeds import feed_reason
    from onnxprune.calibration.runtime import input_specs

    specs = input_specs(tb.variable_width())
    files = [("line0.npz", {"image": (1, 3, 6, 6)}), ("line1.npz", {"image": (1, 3, 6, 9)})]
    said = feed_reason(files, specs)
    assert said == "input 'image' has shape [1, 3, 6, 9] in 'line1.npz' and [1, 3, 6, 6] in 'line0.npz'"


def test_stacked_files_keep_being_batched(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    np.savez(folder / "a.npz", input=x[:30])
    np.savez(folder / "b.npz", input=x[30:])
    reader = open_data(folder, tb.regressor(), batch_size=16)
    assert not reader.per_feed
    assert [len(f["input"]) for f, _ in reader.batches()] == [16, 16, 16, 2]


def test_a_feed_that_does_not_fit_the_inputs_names_file_and_array(tmp_path):
    vad_folder(tmp_path / "vad", n=3)
    np.savez(tmp_path / "vad" / "f01.npz", audio=np.zeros((1, 16), np.float32), sr=np.array(16000),
             state=np.zeros((2, 8), np.float32))
    reader = open_data(tmp_path / "vad", tb.streaming_vad())
    with pytest.raises(CalibrationError, match="f01.npz': array 'state' has shape \\[2, 8\\].*expects \\[2, \\?, 8\\]"):
        list(reader.batches())


def test_prune_and_retrain_on_per_feed_data(tmp_path):
    vad_folder(tmp_path / "vad", n=20)
    onnx.save(tb.streaming_vad(), tmp_path / "vad.onnx")
    res = CliRunner().invoke(cli, ["prune", str(tmp_path / "vad.onnx"), "-o", str(tmp_path / "a.onnx"), "--max-loss",
                                   "1", "--data", str(tmp_path / "vad"), "--levels", "0.5,0.9", "-v"])
    assert res.exit_code == 0, res.output
    assert "20 feed(s) used as is" in res.output and "budget: measured loss" in res.output
    assert res.output.count("one complete feed at a time, as is") == 1  # said once, though the run reopens its data
    width_folder(tmp_path / "lines")
    onnx.save(tb.variable_width(), tmp_path / "w.onnx")
    res = CliRunner().invoke(cli, ["prune", str(tmp_path / "w.onnx"), "-o", str(tmp_path / "b.onnx"), "--sparsity",
                                   "0.5", "--iterations", "1", "--data", str(tmp_path / "lines"), "--json"])
    assert res.exit_code == 0, res.output
    assert '"phase"' in res.output or '"round"' in res.output  # a retraining round ran, one feed per step


def test_time_major_input_is_never_cut_along_time():
    model = tb.time_major_lstm()
    x = np.random.default_rng(0).standard_normal((10, 3, 4)).astype(np.float32)  # 10 steps, 3 sequences
    onnx.checker.check_model(model, full_check=True)
    reader = open_data({"x": x}, model, batch_size=4)
    assert reader.per_feed  # a stack would be cut into batches of 4 time steps
    feeds = list(reader.batches())  # one feed a sequence, every step of it (axis 1 cut, never axis 0)
    assert [f["x"].shape for f, _ in feeds] == [(10, 1, 4)] * 3
    assert all(np.array_equal(f["x"][:, 0], x[:, i]) for i, (f, _) in enumerate(feeds))
    ev = Evaluator(reader, None, model)
    assert ev.plan == {"logits": "agreement"} and ev.dense == 1.0 and ev.num_samples == 3


def test_a_stacked_time_major_file_is_a_feed_a_sample_so_the_search_can_split_it(tmp_path):
    """Sweep 20: a file of 2,000 sequences [T, 2000, C] was one feed, so the automatic search could not hold any out:
    it pruned one-shot and decided on the samples it had fitted on (held out, 1.25% changed against 1 pp). Now each
    sequence is a feed ([T, 1, C]; its label beside it), the validation split counts sequences, and a file whose
    arrays do not line up (labels of another length) stays one feed, as before."""
    from onnxprune.converter.steps.data import Data, DataConfig

    model = tb.time_major_lstm()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 240, 4)).astype(np.float32), rng.integers(0, 3, 240)
    np.savez(tmp_path / "seq.npz", x=x, labels=y)
    reader = open_data(tmp_path / "seq.npz", model)
    assert reader.per_feed and reader.num_samples == 240 and "240 samples (axis 1) are read one feed each" in \
        reader.feed_note
    feeds = list(reader.batches())
    assert [(f["x"].shape, lab.tolist()) for f, lab in feeds[:2]] == [((6, 1, 4), [y[0]]), ((6, 1, 4), [y[1]])]
    data = Data(model, DataConfig(data=str(tmp_path / "seq.npz"), validation=0.25), split=True)
    held = [f["x"] for f, _ in data.reader(part="validation").batches()]
    assert len(held) == 60 and np.array_equal(held[0][:, 0], x[:, 0])  # every 4th sequence decides
    whole = Data(model, DataConfig(data=str(tmp_path / "seq.npz"), batch_size=16))
    assert len(whole.verification_feeds(4)) == 64  # the parity check runs as many sequences as 4 batches hold
    np.savez(tmp_path / "odd.npz", x=x, labels=y[:239])
    assert [f["x"].shape for f, _ in open_data(tmp_path / "odd.npz", model, labels="labels").batches()] == [x.shape]


def test_a_state_output_with_the_batch_on_axis_1_counts_one_sample_per_feed(tmp_path):
    """stateN [2, 1, H] per feed: its per-sample figures come from axis 1 (one per feed, both state rows together),
    in the Evaluator and in the search's decision rule; a feed of N, [2, N, H], gives N samples."""
    from onnxprune.converter.auto.decide import BudgetRule

    vad_folder(tmp_path / "vad", n=12)
    model = tb.streaming_vad()
    ev = Evaluator(open_data(tmp_path / "vad", model), reference_model=model)
    assert list(ev.plan) == ["prob", "stateN"] and ev.sample_axes == (0, 1)
    rule = BudgetRule(ev, 1.0)
    assert rule.n == 12 and [len(v) for v in rule.values(ev.reference_all)] == [12, 12]
    # a candidate whose state moves in one feed: that is one sample of 12 with both rows' error
    moved = [tuple(np.array(v, copy=True) for v in b) for b in ev.reference_all]
    moved[3][1][1] += 1.0
    losses = rule.values(moved)[1][:, 0]
    state = ev.reference_all[3][1]
    want = np.linalg.norm(np.ones_like(state[1])) / np.linalg.norm(state)
    assert np.count_nonzero(losses) == 1 and losses[3] == pytest.approx(want, rel=1e-5)
    rng = np.random.default_rng(2)
    stacked = {"audio": rng.standard_normal((10, 16)).astype(np.float32), "sr": np.array(16000),
               "state": rng.standard_normal((2, 10, 8)).astype(np.float32)}
    np.savez(tmp_path / "stacked.npz", **stacked)
    ev = Evaluator(open_data(tmp_path / "stacked.npz", model), reference_model=model)  # one feed of 10 samples
    assert ev.sample_axes == (0, 1) and [len(v) for v in BudgetRule(ev, 1.0).values(ev.reference_all)] == [10, 10]


def batchless_folder(folder, n=24):
    folder.mkdir()
    rng = np.random.default_rng(2)
    feeds = [{"image": rng.standard_normal((3, 8, 8)).astype(np.float32)} for _ in range(n)]
    for i, feed in enumerate(feeds):
        np.savez(folder / f"img{i:02d}.npz", **feed)
    return feeds


def test_an_input_with_no_batch_axis_is_read_one_file_per_feed(tmp_path):
    """Sweep 4: torchvision's ssdlite320 takes one image [3, H, W]; its files were read as stacks of 3 samples and
    the validation split cut them into [2, H, W] and [1, H, W], which onnxruntime refused ("step 'auto-search'
    failed: ... Got invalid dimensions for input: image")."""
    from onnxprune.models.builders_sweep4 import batchless_image

    feeds = batchless_folder(tmp_path / "imgs")
    reader = open_data(tmp_path / "imgs", batchless_image(), batch_size=64)
    assert reader.per_feed and reader.num_samples == 24
    got = [f["image"] for f, _ in reader.batches()]
    assert len(got) == 24 and all(g.shape == (3, 8, 8) for g in got)
    np.testing.assert_array_equal(got[5], feeds[5]["image"])
    for holdout in (True, False):
        part = reader.part(4, holdout=holdout)
        assert all(f["image"].shape == (3, 8, 8) for f, _ in part.batches())
    assert reader.part(4, holdout=True).num_samples == 6


def test_stacked_samples_of_a_fixed_batch_are_still_batched(tmp_path):
    """Rule 5 reads a file as one feed only when it fills a declared fixed first axis exactly."""
    from onnxprune.models.builders_sweep3 import batch_of_one

    folder = tmp_path / "stack"
    folder.mkdir()
    np.savez(folder / "a.npz", images=np.zeros((5, 3, 8, 8), np.float32))
    reader = open_data(folder, batch_of_one(), batch_size=16)
    assert not reader.per_feed and [len(f["images"]) for f, _ in reader.batches()] == [1] * 5


def test_prune_to_a_budget_on_files_of_one_batchless_image(tmp_path):
    from onnxprune.models.builders_sweep4 import batchless_image

    batchless_folder(tmp_path / "imgs", n=40)
    onnx.save(batchless_image(), tmp_path / "m.onnx")
    res = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a.onnx"), "--max-loss",
                                   "1", "--data", str(tmp_path / "imgs"), "--levels", "0.5,0.9"])
    assert res.exit_code == 0, res.output
    assert "40 feed(s) used as is" in res.output
    import onnxruntime as ort

    x = np.random.default_rng(3).standard_normal((3, 8, 8)).astype(np.float32)
    out = ort.InferenceSession(str(tmp_path / "a.onnx")).run(None, {"image": x})[0]
    assert out.shape == (1, 4)


def _flag_model(batch):
    """x [batch, 4] and a bool scalar 'flag' -> If(flag) { x @ W1 } else { x @ W2 } -> logits [batch, 3]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def branch(name, w):
        return helper.make_graph([helper.make_node("MatMul", ["x", w], [name + "_y"])], name, [],
                                 [helper.make_tensor_value_info(name + "_y", TensorProto.FLOAT, None)])

    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["logits"], then_branch=branch("t", "W1"), else_branch=branch("e", "W2"))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4]),
              helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(rng.standard_normal([4, 3]).astype(np.float32), "W1"),
         numpy_helper.from_array(rng.standard_normal([4, 3]).astype(np.float32), "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_stacked_file_with_scalars_and_a_fixed_batch_is_a_feed_per_batch(tmp_path):
    """189 stacked rows beside a bool flag for an input fixed at [1, 20] were read as one feed and refused (a helper's
    generated If models): the file is a feed per batch, its scalars in every one, labels cut with the rows."""
    from onnxprune.calibration.readers import open_data

    x = np.random.default_rng(1).standard_normal((12, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, flag=np.array(True), labels=np.arange(12) % 3)
    for batch, feeds in ((1, 12), (4, 3)):
        reader = open_data(tmp_path / "d.npz", _flag_model(batch))
        got = list(reader.batches())
        assert reader.per_feed and len(got) == feeds == reader.num_samples
        assert all(f["x"].shape == (batch, 4) and f["flag"].shape == () and bool(f["flag"]) for f, _ in got)
        np.testing.assert_array_equal(np.concatenate([f["x"] for f, _ in got]), x)
        np.testing.assert_array_equal(np.concatenate([lab for _, lab in got]), np.arange(12) % 3)
    assert "a feed per batch" in open_data(tmp_path / "d.npz", _flag_model(4)).feed_note
    dynamic = open_data(tmp_path / "d.npz", _flag_model("N"))  # any batch: a sample a feed (shared_stack, below)
    assert [f["x"].shape for f, _ in dynamic.batches()] == [(1, 4)] * 12
    np.savez(tmp_path / "odd.npz", x=x[:10], flag=np.array(True))  # 2 whole batches of 4, 2 rows left out
    assert [f["x"].shape[0] for f, _ in open_data(tmp_path / "odd.npz", _flag_model(4)).batches()] == [4, 4]


def _normalizing_model():
    """x [N, 4] normalized by graph inputs 'mean' and 'std' of fixed shape [1, 4] (tf2onnx's Keras Normalization
    statistics), then a MatMul to 'logits' [N, 3]."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal([4, 3]).astype(np.float32)
    nodes = [helper.make_node("Sub", ["x", "mean"], ["c"]), helper.make_node("Div", ["c", "std"], ["z"]),
             helper.make_node("MatMul", ["z", "W"], ["logits"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                     helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 4]),
                     helper.make_tensor_value_info("std", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_inputs_that_hold_one_value_for_the_file_go_whole_into_a_feed_per_sample(tmp_path):
    """Sweep 31's L2: tf2onnx made a Keras Normalization layer's statistics graph inputs [1, 8]; a file of 250 images
    beside them was one feed, and only the one-shot search ran. An array with exactly its input's fixed declared
    shape goes whole into every feed, and the samples the other inputs stack on their dynamic batch are a feed each
    (labels cut with them), so the search splits, retrains and decides on samples; the outputs are the file's."""
    model, rng = _normalizing_model(), np.random.default_rng(0)
    x = rng.standard_normal((10, 4)).astype(np.float32)
    mean, std = np.full((1, 4), 0.5, np.float32), np.full((1, 4), 2.0, np.float32)
    np.savez(tmp_path / "d.npz", x=x, mean=mean, std=std, labels=np.arange(10) % 3)
    reader = open_data(tmp_path / "d.npz", model)
    got = list(reader.batches())
    assert reader.per_feed and reader.one_sample_feeds and len(got) == 10 == reader.num_samples
    assert "hold one value for the file" in reader.feed_note and "'mean', 'std'" in reader.feed_note
    assert all(f["x"].shape == (1, 4) and f["mean"].shape == f["std"].shape == (1, 4) for f, _ in got)
    np.testing.assert_array_equal(np.concatenate([f["x"] for f, _ in got]), x)
    np.testing.assert_array_equal(np.concatenate([lab for _, lab in got]), np.arange(10) % 3)
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    whole = sess.run(None, {"x": x, "mean": mean, "std": std})[0]
    np.testing.assert_allclose(np.concatenate([sess.run(None, f)[0] for f, _ in got]), whole, rtol=1e-6)
    np.savez(tmp_path / "other.npz", x=x, mean=np.zeros((2, 4), np.float32), std=std)  # not its declared shape
    with pytest.raises(CalibrationError):
        list(open_data(tmp_path / "other.npz", model).batches())


def test_a_folder_of_files_with_inputs_that_hold_one_value_is_a_feed_per_sample(tmp_path):
    """Session 36's Left: the one-value inputs were recognised in one .npz, but a folder of such files was a feed per
    file. Each file's samples are now a feed each, that file's statistics whole in every one (a file of one sample
    too), labels cut with them; onnxruntime per feed gives each file's outputs on the whole file."""
    import onnxruntime as ort

    model, rng = _normalizing_model(), np.random.default_rng(3)
    files = []
    for k, n in enumerate((5, 1, 3)):
        arrays = {"x": rng.standard_normal((n, 4)).astype(np.float32), "mean": np.full((1, 4), k, np.float32),
                  "std": np.full((1, 4), k + 1.0, np.float32), "labels": np.arange(n) % 3}
        np.savez(tmp_path / f"{k}.npz", **arrays)
        files.append(arrays)
    reader = open_data(tmp_path, model)
    got = list(reader.batches())
    assert reader.per_feed and reader.one_sample_feeds and len(got) == 9 == reader.num_samples
    assert "hold one value for each file" in reader.feed_note and "'mean', 'std'" in reader.feed_note
    assert [float(f["mean"][0, 0]) for f, _ in got] == [0.0] * 5 + [1.0] + [2.0] * 3
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    whole = np.concatenate([sess.run(None, {k: a[k] for k in ("x", "mean", "std")})[0] for a in files])
    np.testing.assert_allclose(np.concatenate([sess.run(None, f)[0] for f, _ in got]), whole, rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([lab for _, lab in got]),
                                  np.concatenate([a["labels"] for a in files]))
    assert len(list(reader.part(4, holdout=True).batches())) == 3  # samples 0, 4, 8 held out, as in one file
    np.savez(tmp_path / "3.npz", x=rng.standard_normal((2, 4)).astype(np.float32), mean=np.zeros((2, 4), np.float32),
             std=np.ones((1, 4), np.float32))  # a mean per sample, not its declared shape: each file a feed, as before
    reader = open_data(tmp_path, model)
    assert not getattr(reader, "one_sample_feeds", False) and reader.num_samples == 4


def test_stacked_rows_of_a_sequence_are_one_feed_not_samples(tmp_path):
    """silero's sequence VAD: 'input' [sequence_length, 576] is chunks in time beside its LSTM state 'h', 'c' [1, 1,
    128]. A folder of such files read as "a sample per row, the state in each" judged every chunk from the zero
    state; a run said "budget met" at 1.36x and changed 53 of 180 speech decisions on the sequences the files held.
    Rows the model does not read as independent samples (run together, the outputs differ from the rows run one at
    a time) leave each file one feed, said in a warning; rows that are samples are still cut (the tests above)."""
    import logging

    import onnxruntime as ort

    from onnxprune.calibration.feeds import rows_interact
    from onnxprune.calibration.runtime import input_specs

    model, rng = tb.chunk_sequence_vad(), np.random.default_rng(0)
    zero = np.zeros((1, 1, 6), np.float32)
    files = [{"input": rng.standard_normal((n, 12)).astype(np.float32), "h": zero, "c": zero} for n in (6, 6, 4)]
    for k, arrays in enumerate(files):
        np.savez(tmp_path / f"{k}.npz", **arrays)
    reader, records = _open_logged(tmp_path, model)
    got = list(reader.batches())
    assert reader.per_feed and not getattr(reader, "one_sample_feeds", False)
    assert len(got) == 3 == reader.num_samples and [f["input"].shape[0] for f, _ in got] == [6, 6, 4]
    said = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any("not independent samples" in m and "'speech_probs'" in m and "each file is one feed" in m
               for m in said), said
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for (feed, _), arrays in zip(got, files):  # each feed is its file, the outputs those of the whole sequence
        np.testing.assert_array_equal(sess.run(None, feed)[0], sess.run(None, arrays)[0])
    np.savez(tmp_path.parent / "one.npz", **files[0])  # one stacked file: one feed too
    assert open_data(tmp_path.parent / "one.npz", model).num_samples == 1
    specs = input_specs(model)
    assert "'speech_probs'" in rows_interact(model, files[0], specs, ["h", "c"], {})
    stats = _normalizing_model()  # rows that are samples: no reason
    x = rng.standard_normal((5, 4)).astype(np.float32)
    ones = {"x": x, "mean": np.zeros((1, 4), np.float32), "std": np.ones((1, 4), np.float32)}
    assert rows_interact(stats, ones, input_specs(stats), ["mean", "std"], {}) is None


def test_a_stacked_file_whose_rows_are_a_sequence_is_one_feed(tmp_path):
    """The same sequence VAD with its initial state held inside (no state input, no time word in
    'sequence_length', no batch word): a stacked file was cut into batches of 16 rows, each run as a sequence of its
    own, and its rows scored as samples. Rows the model reads together make the file one feed, said; a folder of
    such files one feed a file; rows that are samples (a plain MLP) are batched as before, and so are in-memory
    arrays of either kind alike."""
    import logging

    from onnx import numpy_helper

    model = tb.chunk_sequence_vad()
    held = [i for i in model.graph.input if i.name not in ("h", "c")]
    del model.graph.input[:]
    model.graph.input.extend(held)
    model.graph.initializer.extend([numpy_helper.from_array(np.zeros((1, 1, 6), np.float32), n) for n in "hc"])
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(1).standard_normal((40, 12)).astype(np.float32)
    np.savez(tmp_path / "seq.npz", input=x)
    reader, records = _open_logged(tmp_path / "seq.npz", model)
    got = list(reader.batches())
    assert reader.per_feed and reader.num_samples == 1 and got[0][0]["input"].shape == (40, 12)
    assert any(r.levelno == logging.WARNING and "the 40 rows of seq.npz are not independent samples" in r.getMessage()
               for r in records)
    assert open_data({"input": x}, model).num_samples == 1
    (tmp_path / "folder").mkdir()
    for k in range(3):
        np.savez(tmp_path / "folder" / f"{k}.npz", input=x[10 * k:10 * k + 10])
    folder = open_data(tmp_path / "folder", model)
    assert folder.per_feed and folder.num_samples == 3
    from onnxprune.models.builders import mlp_gemm

    plain = mlp_gemm(in_features=12, hidden=(8,), out_features=3)
    np.savez(tmp_path / "rows.npz", **{plain.graph.input[0].name: x})
    rows = open_data(tmp_path / "rows.npz", plain)
    assert not rows.per_feed and rows.num_samples == 40 and rows.rows_note is None
    from onnxprune.converter.inspect import npz_example  # inspect's line: a folder of sequences, and plain rows

    assert "one whole sequence per file" in npz_example(model) and "input=np.zeros((64, 12)" in npz_example(model)
    assert npz_example(plain).startswith('import numpy as np; np.savez("calib.npz"')


def _spectrogram_conv():
    """madmom's beat TCN in small: 'input' [frames, 6] (no batch axis) -> Unsqueeze to [1, 1, T, 6] -> a 3x3 Conv
    without padding -> Relu -> mean over channels and bins -> Sigmoid -> 'beats' [T - 2]: the rows are one
    spectrogram, and fewer than 3 of them do not run at all."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 1, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Unsqueeze", ["input", "axes01"], ["img"]),
             helper.make_node("Conv", ["img", "conv.weight"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ReduceMean", ["r", "axes13"], ["m"], keepdims=0),
             helper.make_node("Squeeze", ["m", "axes0"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["beats"])]
    inits = [numpy_helper.from_array(w, "conv.weight"), numpy_helper.from_array(np.array([0, 1]), "axes01"),
             numpy_helper.from_array(np.array([1, 3]), "axes13"), numpy_helper.from_array(np.array([0]), "axes0")]
    graph = helper.make_graph(nodes, "spectrogram_conv",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["input_dim_0", 6])],
                              [helper.make_tensor_value_info("beats", TensorProto.FLOAT, ["output_dim_0"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_rows_that_run_only_together_are_one_feed_not_samples(tmp_path):
    """madmom's beat TCN reads 'input' [frames, 81] as one spectrogram through a 3x3 Conv without padding. The rows
    probe (4 rows together, then one at a time) failed in onnxruntime, which left the rows taken for samples: a run
    retrained on 2 frames a batch and ended in "Conv node 'conv_7' failed in the torch bridge: ... Kernel size
    can't be greater than actual input size". Rows that run together but not a few alone are not samples: each
    file is one feed, said; a file too short for the model to run at all keeps the reader's own checks."""
    import logging

    import onnxruntime as ort

    from onnxprune.calibration.feeds import rows_interact
    from onnxprune.calibration.runtime import input_specs

    model, rng = _spectrogram_conv(), np.random.default_rng(0)
    files = [rng.standard_normal((n, 6)).astype(np.float32) for n in (20, 20, 13)]
    for k, x in enumerate(files):
        np.savez(tmp_path / f"{k}.npz", input=x)
    specs = input_specs(model)
    why = rows_interact(model, {"input": files[0]}, specs, [], {})
    assert why is not None and "runs them together but not a few of them alone" in why and "Conv" in why, why
    assert rows_interact(model, {"input": files[0][:2]}, specs, [], {}) is None  # not even the whole file runs
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((6, 2), np.float32), "w")  # a batch fixed at 8 is why 4 rows fail, not rows
    fixed = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["y"])], "fixed",
                                                [helper.make_tensor_value_info("input", TensorProto.FLOAT, [8, 6])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 2])], [w]),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    assert rows_interact(fixed, {"input": files[0][:8]}, input_specs(fixed), [], {}) is None
    reader, records = _open_logged(tmp_path, model)
    got = list(reader.batches())
    assert reader.per_feed and reader.num_samples == 3 and [f["input"].shape[0] for f, _ in got] == [20, 20, 13]
    assert any(r.levelno == logging.WARNING and "not independent samples" in r.getMessage()
               and "each file is one feed" in r.getMessage() for r in records)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for (feed, _), x in zip(got, files):
        np.testing.assert_array_equal(sess.run(None, feed)[0], sess.run(None, {"input": x})[0])
    # the run's Evaluator keeps each file whole too (cut into 16 rows, the same model ended in onnxruntime's "Invalid
    # input shape: {2,81}" on a file of 814 frames, and 150 files of an MLP's frames as 837 parts)
    ev = Evaluator(reader, None, model, split=16)
    assert ev.dense == 1.0 and ev.num_samples == 3 and [b[0]["input"].shape for b in ev._cached] == [(20, 6), (20, 6),
                                                                                                      (13, 6)]


def _time_major_mean(steps_name="T"):
    """x [T, N, 4] (no time word in 'T') -> mean over T -> MatMul -> 'logits' [N, 3], as torch names a
    Transformer's batch_first=False input."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=0), helper.make_node("MatMul", ["m", "W"], ["logits"])],
        "tm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps_name, "N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_time_major_stack_beside_an_input_that_holds_one_value_is_cut_along_its_samples_not_time(tmp_path):
    """x [T, N, 4] of a time-major model beside a scalar 'scale': the one-value reading (shared_stack) took x's first
    axis, time, for its samples and cut 20 steps into 20 "samples". The samples are on x's axis 1: 6 feeds of
    [20, 1, 4], the scalar in each, in one file, a dict of arrays, or each file of a folder; onnxruntime per feed
    gives the whole file's outputs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = _time_major_mean()
    g = model.graph
    g.node[0].output[0] = "m0"
    g.node.insert(1, helper.make_node("Mul", ["m0", "scale"], ["m"]))
    g.input.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, []))
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(4)
    x, scale = rng.standard_normal((20, 6, 4)).astype(np.float32), np.array(3.0, np.float32)
    np.savez(tmp_path / "one.npz", x=x, scale=scale)
    (tmp_path / "folder").mkdir()
    np.savez(tmp_path / "folder" / "a.npz", x=x[:, :4], scale=scale)
    np.savez(tmp_path / "folder" / "b.npz", x=x[:, 4:], scale=scale)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    whole = sess.run(None, {"x": x, "scale": scale})[0]
    for source in (tmp_path / "one.npz", {"x": x, "scale": scale}, tmp_path / "folder"):
        reader = open_data(source, model)
        got = list(reader.batches())
        assert reader.per_feed and reader.one_sample_feeds and len(got) == 6, source
        assert all(f["x"].shape == (20, 1, 4) and f["scale"].shape == () for f, _ in got)
        np.testing.assert_allclose(np.concatenate([sess.run(None, f)[0] for f, _ in got]), whole, rtol=1e-6)


def test_an_input_whose_later_axis_is_the_outputs_batch_is_time_major_and_never_cut_along_time():
    """Sweep 20: torch's nn.TransformerEncoder with batch_first=False, 'rows' [T, N, 28] beside 'logits' [N, 10]:
    'T' is no time word, so a [28, 2000, 28] file was read as 28 samples, cut along T, and onnxruntime refused it;
    inspect's line put its 64 samples on T. The outputs' batch on axis 1 makes the input time-major: one feed, never
    cut (the Evaluator's parts too), and inspect puts the samples on axis 1."""
    from onnxprune.calibration.feeds import time_major_inputs
    from onnxprune.converter.inspect import npz_example

    model = _time_major_mean()
    assert "x" in time_major_inputs(model)
    assert "np.zeros((8, 64, 4)" in npz_example(model)
    x = np.random.default_rng(1).standard_normal((20, 50, 4)).astype(np.float32)  # 20 steps (> SPLIT_ROWS), 50 rows
    reader = open_data({"x": x}, model, batch_size=8)
    assert reader.per_feed
    ev = Evaluator(reader, None, model, split=16)
    assert ev.dense == 1.0 and [b[0]["x"].shape for b in ev._cached] == [(20, 1, 4)] * 50  # a feed a row


def test_the_outputs_batch_leading_an_input_is_no_time_axis():
    """[N, S] token ids beside 'logits' [N, C], and a zero-shot classifier's prototypes [K, D] beside images [N, ...]
    and 'logits' [N, K], stay stacked samples."""
    from onnx import TensorProto, helper

    from onnxprune.calibration.feeds import time_major_inputs

    graph = helper.make_graph([helper.make_node("MatMul", ["img", "protoT"], ["logits"]),
                               helper.make_node("Transpose", ["proto"], ["protoT"])], "zs",
                              [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("proto", TensorProto.FLOAT, ["K", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "K"])])
    assert time_major_inputs(helper.make_model(graph)) == {}


def test_a_dict_of_arrays_with_inputs_that_hold_one_value_is_a_feed_per_sample():
    """The API's dict of arrays reads as the .npz does (shared_stack): a scalar flag beside 6 stacked rows of a
    dynamic batch, labels cut with them."""
    x = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    reader = open_data({"x": x, "flag": np.array(False), "labels": np.arange(6) % 3}, _flag_model("N"))
    got = list(reader.batches())
    assert reader.one_sample_feeds and len(got) == 6 and "hold one value" in reader.feed_note
    assert all(f["x"].shape == (1, 4) and f["flag"].shape == () and not bool(f["flag"]) for f, _ in got)
    np.testing.assert_array_equal(np.concatenate([f["x"] for f, _ in got]), x)
    np.testing.assert_array_equal(np.concatenate([lab for _, lab in got]), np.arange(6) % 3)


def test_samples_as_columns_after_a_fixed_axis_are_read_a_feed_each(tmp_path):
    """Sweep 38: a torch model reading x.t(), 'input' [784, N] beside 'logits' [N, 10], was "a fixed first axis of
    784 that every file fills whole: no batch axis", one feed, and kept unpruned ("1 feeds cannot certify"). The
    outputs' batch on axis 1 of an input whose axis 0 is fixed, where no input leads with the batch, reads as
    samples on axis 1: a [6, 50] file is 50 feeds of [6, 1]. A state [2, N, H] beside 'input' [N, 6] stays as it was
    (not samples on axis 1)."""
    import onnxruntime as ort

    from onnxprune.calibration.feeds import time_major_inputs
    from onnxprune.converter.inspect import npz_example

    model = tb.columns_mlp()
    onnx.checker.check_model(model, full_check=True)
    assert "on axis 1" in time_major_inputs(model)["input"]
    assert "np.zeros((6, 64)" in npz_example(model)
    x = np.random.default_rng(3).standard_normal((6, 50)).astype(np.float32)
    np.savez(tmp_path / "cols.npz", input=x)
    reader = open_data(tmp_path / "cols.npz", model)
    got = list(reader.batches())
    assert reader.per_feed and reader.one_sample_feeds and len(got) == 50
    assert all(f["input"].shape == (6, 1) for f, _ in got)
    # said as what it is (sweep 38's L5: "time-major sample(s)", "input 'input' is time-major")
    assert "50 sample(s) on axis 1, a feed each" in reader.description
    from onnxprune.calibration.feeds import feed_reason
    from onnxprune.calibration.runtime import input_specs

    why = feed_reason([], input_specs(model), time_major_inputs(model))
    assert why.startswith("input 'input' holds its samples on axis 1 (time-major, or samples as columns): ")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(np.concatenate([sess.run(None, f)[0] for f, _ in got]),
                               sess.run(None, {"input": x})[0], rtol=1e-6)
    assert time_major_inputs(tb.columns_mlp(state=True)) == {}


def test_an_input_named_batch_first_beside_time_major_outputs_stays_samples_first(tmp_path):
    """brainmaze_eeg_models' seizure model (real models 46): 'x' [batch, 100, time] -> a CNN and a BiLSTM -> 'probs'
    [time, batch, 4]. The outputs lead with 'time', which was read as their batch on axis 2 of 'x': inspect wrote
    "'x' time-major, [steps, samples, ...]", and prune refused the model's own layout ("array 'x' has shape [200, 1,
    599] ... reshape the data to match"). A first axis named like time is no batch of the outputs, and an input whose
    axis 0 is named like a batch is samples-first."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from onnxprune.calibration.feeds import time_major_inputs
    from onnxprune.converter.inspect import npz_example

    w = np.random.default_rng(0).standard_normal((4, 3, 1)).astype(np.float32)
    for batch, steps in (("batch", "time"), ("N", "frames")):
        graph = helper.make_graph(
            [helper.make_node("Conv", ["x", "W"], ["c"]),
             helper.make_node("Transpose", ["c"], ["probs"], perm=[2, 0, 1])],
            "tm_out", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, steps])],
            [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [steps, batch, 4])],
            [numpy_helper.from_array(w, "W")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        assert time_major_inputs(model) == {}, batch
        line = npz_example(model)
        assert "x=np.zeros((64, 3, 8)" in line and "time-major" not in line, line
        x = np.random.default_rng(1).standard_normal((20, 3, 7)).astype(np.float32)
        np.savez(tmp_path / "x.npz", x=x)
        reader = open_data(tmp_path / "x.npz", model, batch_size=8)
        got = [f for f, _ in reader.batches()]
        assert not reader.per_feed and [f["x"].shape for f in got] == [(8, 3, 7), (8, 3, 7), (4, 3, 7)]
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(np.concatenate([sess.run(None, f)[0] for f in got], axis=1),
                                   sess.run(None, {"x": x})[0], rtol=1e-6)


def _map_head(seed: int = 0) -> onnx.ModelProto:
    """A fully convolutional head, 'input' [N, 32, 32, 1] (NHWC, as tf2onnx writes LEADER) -> Transpose -> Conv 3x3
    -> Relu -> Conv 1x1 -> Transpose -> 'head' [N, 32, 32, 4]: every row an independent image."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Transpose", ["input"], ["x"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"]),
             helper.make_node("Transpose", ["c2"], ["head"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(nodes, "map_head", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                ["N", 32, 32, 1])],
                              [helper.make_tensor_value_info("head", TensorProto.FLOAT, ["N", 32, 32, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("moved,samples", [(0, True), (6, True), (5000, False)], ids=["exact", "strays", "mixed"])
def test_a_few_values_an_ill_conditioned_op_moves_between_batch_sizes_leave_rows_samples(tmp_path, monkeypatch,
                                                                                         moved, samples):
    """Real models 48: afis' LEADER minutiae net ends in an atan2 of two tiny channels over a fingerprint's background,
    where onnxruntime's batching noise (~1e-6) is magnified: 51 of 1,048,576 direction values moved by up to 0.0104
    (of pi) between 4 rows run together and alone. Its 150 stacked fingerprints were taken for rows read together,
    one feed, which onnxruntime ran at once until the kernel killed the run (22 GB). onnxruntime's own noise cannot
    be set in a small model, so the rows-together run here gets it added: a few stray values (6 of 16,384, 5x
    the tolerance) leave the rows samples; values moved throughout (5,000) still make the file one feed."""
    import onnxprune.calibration.runtime as runtime
    from onnxprune.calibration import feeds
    from onnxprune.calibration.feeds import _close, rows_interact
    from onnxprune.calibration.runtime import input_specs

    model = _map_head()
    x = np.random.default_rng(1).uniform(0, 255, (40, 32, 32, 1)).astype(np.float32)
    real = runtime.make_session

    class Noisy:
        def __init__(self, session):
            self.session = session

        def __getattr__(self, name):
            return getattr(self.session, name)

        def run(self, names, feed):
            out = self.session.run(names, feed)
            if feed["input"].shape[0] > 1 and moved:  # the rows run together: batching's noise, magnified here
                head = out[0].copy()
                flat = head.reshape(-1)
                at = np.random.default_rng(2).choice(flat.size, moved, replace=False)
                flat[at] += 0.0005 * np.abs(head).max() * np.where(np.arange(moved) % 2, 1, -1)
                out = [head] + out[1:]
            return out

    monkeypatch.setattr(runtime, "make_session", lambda *a, **k: Noisy(real(*a, **k)))
    monkeypatch.setattr(feeds, "_ROWS_VERDICTS", {})
    why = rows_interact(model, {"input": x}, input_specs(model), [], {})
    assert (why is None) == samples, why
    np.savez(tmp_path / "calib.npz", input=x)
    monkeypatch.setattr(feeds, "_ROWS_VERDICTS", {})
    assert open_data(tmp_path / "calib.npz", model).num_samples == (40 if samples else 1)
    # the rule itself: a stray few within RTOL in relative L2 pass, a broad move or one large stray does not
    b = np.random.default_rng(3).standard_normal(1 << 20)
    a = b.copy()
    a[:51] += 0.001 * np.abs(b).max()  # past RTOL (1e-4 of the largest) each, 3.5e-5 in relative L2
    assert _close(a, b) and not _close(b + 1e-3 * np.abs(b).max(), b)
    a[:51] += 50 * np.abs(b).max()  # 51 values far off: the whole moves past RTOL in relative L2
    assert not _close(a, b)
    small = np.random.default_rng(4).standard_normal((4, 3))
    assert not _close(small + np.eye(4, 3) * 1e-2, small)  # 12 values: no stray allowed


def test_inspects_line_for_scalars_beside_a_batch_of_one_writes_many_samples_that_read_as_feeds(tmp_path):
    """Real models 52: SwiftF0 takes audio [1, samples] and the scalars fmin, fmax; inspect's line wrote audio (1, 8),
    one sample (a budget needs 99 at 1 pp), and zeros for the scalars with no word on them (a band of [0, 0] Hz
    zeroes every confidence). The line now stacks 64 samples beside the scalars, which the reader reads as a feed a
    row with the scalars in each, and says the scalars are values to write."""
    from click.testing import CliRunner

    from onnxprune.calibration.readers import open_data
    from onnxprune.converter.cli import cli
    from onnxprune.converter.inspect import npz_example
    from tests.oracle import run

    model = _flag_model(1)
    line = npz_example(model)
    assert "x=np.zeros((64, 4), np.float32)" in line and "flag=np.zeros((), np.bool_)" in line
    assert "batches of 1" in line
    path = tmp_path / "flag.onnx"
    onnx.save(model, path)
    res = CliRunner().invoke(cli, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    assert "('flag' is a scalar, 0 here: write the value your application passes" in " ".join(res.output.split())
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32),
             flag=np.array(True))  # the line, with the zeros replaced
    reader = open_data(tmp_path / "calib.npz", model)
    feeds = [f for f, _ in reader.batches()]
    assert reader.per_feed and len(feeds) == 64 and all(f["x"].shape == (1, 4) and f["flag"].shape == () for f in feeds)
    assert run(model, feeds[0])["logits"].shape == (1, 3)  # onnxruntime runs a feed as read


def _log_likelihood_model():
    """x [N, 4] -> logits = x W, logp = ReduceSum(x log(sigmoid(z)) + (1 - x) log(1 - sigmoid(z))) [N]: a density
    model's per-sample output, exported naively, -inf and NaN where the sigmoid saturates."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32) * 40
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]), helper.make_node("Sigmoid", ["logits"], ["p"]),
             helper.make_node("Log", ["p"], ["lp"]), helper.make_node("Sub", ["one", "p"], ["q"]),
             helper.make_node("Log", ["q"], ["lq"]), helper.make_node("Mul", ["x", "lp"], ["a"]),
             helper.make_node("Sub", ["one", "x"], ["nx"]), helper.make_node("Mul", ["nx", "lq"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["ll"]), helper.make_node("ReduceSum", ["ll", "axes"], ["logp"],
                                                                          keepdims=0)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(1, np.float32), "one"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph(nodes, "ll", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("logp", TensorProto.FLOAT, ["N"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_an_output_with_the_same_nan_together_and_alone_leaves_rows_samples(tmp_path, monkeypatch):
    """Sweep 49: a MADE's per-sample log-likelihood, exported by torch legacy as log(sigmoid(z)), is -inf or NaN
    where the sigmoid saturates. The probe compared NaN with NaN as a change, so its 440 binarized images were "not
    independent samples", one feed, and the input model was kept. The same NaN run together and alone is no change;
    a NaN in one run only still is."""
    from onnxprune.calibration import feeds
    from onnxprune.calibration.feeds import _close, rows_interact
    from onnxprune.calibration.runtime import input_specs, make_session

    model = _log_likelihood_model()
    x = (np.random.default_rng(1).random((40, 4)) < 0.5).astype(np.float32)
    logp = make_session(model).run(["logp"], {"x": x})[0]
    assert np.isnan(logp).any() and np.isfinite(logp).any()  # the input model's own NaN, on some rows only
    monkeypatch.setattr(feeds, "_ROWS_VERDICTS", {})
    assert rows_interact(model, {"x": x}, input_specs(model), [], {}) is None
    np.savez(tmp_path / "calib.npz", x=x)
    monkeypatch.setattr(feeds, "_ROWS_VERDICTS", {})
    assert open_data(tmp_path / "calib.npz", model).num_samples == 40
    nan = np.array([1.0, np.nan, -np.inf])
    assert _close(nan, nan.copy()) and not _close(np.array([1.0, 2.0, -np.inf]), nan)


def _loss_beside_logits_model():
    """x [N, 6], labels [N] -> logits = relu(x W1) W2 [N, 3] and loss = the batch's mean cross-entropy [] (a
    classifier exported with its training loss as a second output)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["logits"]),
             helper.make_node("SoftmaxCrossEntropyLoss", ["logits", "labels"], ["loss"], reduction="mean")]
    inits = [numpy_helper.from_array(rng.standard_normal((6, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2")]
    graph = helper.make_graph(nodes, "ce", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6]),
                                            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
                               helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_an_output_metric_leaves_out_does_not_make_the_rows_one_feed(tmp_path, monkeypatch):
    """Sweep 49: a classifier exported with its batch's mean cross-entropy beside the logits ('loss' [], the labels
    an input). The loss follows no row, so the rows were one feed, and the input model was kept, also under
    --metric logits=agreement, which leaves the loss out. Unscored, it decides nothing about the rows: the run's
    440 rows stay samples. Scored (no --metric), the rows are one feed, and the warning names --metric's way out."""
    from onnxprune.calibration import feeds
    from onnxprune.calibration.feeds import probed_outputs, rows_interact
    from onnxprune.calibration.runtime import input_specs

    model = _loss_beside_logits_model()
    rng = np.random.default_rng(1)
    arrays = {"x": rng.standard_normal((440, 6)).astype(np.float32), "labels": rng.integers(0, 3, 440)}
    monkeypatch.setattr(feeds, "_ROWS_VERDICTS", {})
    why = rows_interact(model, arrays, input_specs(model), [], {})
    assert "output 'loss' ([] for 4 rows) does not follow the rows" in why and "--metric" in why
    with probed_outputs({"logits"}):
        assert rows_interact(model, arrays, input_specs(model), [], {}) is None
    np.savez(tmp_path / "calib.npz", **arrays)
    onnx.save(model, tmp_path / "ce.onnx")
    monkeypatch.setattr(feeds, "_ROWS_VERDICTS", {})
    res = CliRunner().invoke(cli, ["prune", str(tmp_path / "ce.onnx"), "-o", str(tmp_path / "out.onnx"), "--sparsity",
                                   "0.3", "--data", str(tmp_path / "calib.npz"), "--metric", "logits=agreement"])
    assert res.exit_code == 0, res.output
    assert "not independent samples" not in res.output and "440 samples" in res.output
    out = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(out, full_check=True)
    from onnxprune.calibration.runtime import make_session

    feed = {"x": arrays["x"][:64], "labels": arrays["labels"][:64]}
    dense, pruned = make_session(model).run(None, feed), make_session(out).run(None, feed)
    assert pruned[0].shape == dense[0].shape and np.isfinite(pruned[1]) and pruned[1].shape == ()


def _deeponet_model():
    """A DeepONet: branch 'u' [N, 6] -> [N, 4], trunk over query points 'y' [P, 1] -> [P, 4], 'G' [N, P] = the
    branch's rows against the trunk's (MatMul with the trunk transposed), seeded."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = {"B1": rng.standard_normal([6, 16]) / 2, "B2": rng.standard_normal([16, 4]) / 4,
         "T1": rng.standard_normal([1, 16]), "T2": rng.standard_normal([16, 4]) / 4}
    nodes = [helper.make_node("MatMul", ["u", "B1"], ["b1"]), helper.make_node("Relu", ["b1"], ["b1r"]),
             helper.make_node("MatMul", ["b1r", "B2"], ["b"]), helper.make_node("MatMul", ["y", "T1"], ["t1"]),
             helper.make_node("Tanh", ["t1"], ["t1r"]), helper.make_node("MatMul", ["t1r", "T2"], ["t"]),
             helper.make_node("Transpose", ["t"], ["tT"], perm=[1, 0]), helper.make_node("MatMul", ["b", "tT"], ["G"])]
    graph = helper.make_graph(
        nodes, "deeponet", [helper.make_tensor_value_info("u", TensorProto.FLOAT, ["N", 6]),
                            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["P", 1])],
        [helper.make_tensor_value_info("G", TensorProto.FLOAT, ["N", "P"])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_an_input_whose_axis_0_is_not_the_batch_goes_whole_into_a_feed_per_sample(tmp_path):
    """Sweep 54b: a DeepONet's calibration file, 440 functions 'u' [N, 40] beside its 10 query points 'y' [P, 1]
    (the output 'G' [N, P] leads with N, as 'u' does), was one feed ("the inputs' first axes differ"): no split, no
    retraining, a one-shot fit judged on the samples that chose it. An input whose declared axis 0 is a symbol other
    than the outputs' batch (which another input leads with) goes whole into every sample's feed; the samples of
    the others (and their labels) are a feed each, and the outputs are the file's, row by row."""
    model, rng = _deeponet_model(), np.random.default_rng(0)
    u, y = rng.standard_normal((12, 6)).astype(np.float32), np.linspace(0, 1, 5, dtype=np.float32)[:, None]
    np.savez(tmp_path / "d.npz", u=u, y=y, labels=np.arange(12) % 3)
    reader = open_data(tmp_path / "d.npz", model)
    got = list(reader.batches())
    assert reader.per_feed and reader.one_sample_feeds and len(got) == 12 == reader.num_samples
    assert "hold one value for the file" in reader.feed_note and "'y'" in reader.feed_note, reader.feed_note
    assert all(f["u"].shape == (1, 6) and f["y"].shape == (5, 1) for f, _ in got)
    np.testing.assert_array_equal(np.concatenate([f["u"] for f, _ in got]), u)
    np.testing.assert_array_equal(np.concatenate([lab for _, lab in got]), np.arange(12) % 3)
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    whole = sess.run(None, {"u": u, "y": y})[0]
    np.testing.assert_allclose(np.concatenate([sess.run(None, f)[0] for f, _ in got]), whole, rtol=1e-5, atol=1e-6)
    # the same graph with the query points on the batch's symbol: a file whose first axes differ stays one feed
    same = onnx.ModelProto()
    same.CopyFrom(model)
    same.graph.input[1].type.tensor_type.shape.dim[0].dim_param = "N"
    reader = open_data(tmp_path / "d.npz", same)
    assert reader.per_feed and not getattr(reader, "one_sample_feeds", False) and len(list(reader.batches())) == 1
    # tf2onnx's two names for one batch ('unk__2' on 'y', carried by no output) stay one feed too
    same.graph.input[1].type.tensor_type.shape.dim[0].dim_param = "unk__2"
    reader = open_data(tmp_path / "d.npz", same)
    assert reader.per_feed and not getattr(reader, "one_sample_feeds", False) and len(list(reader.batches())) == 1
