"""Embedding tables (a Gather reading a float table with ids from the data) are weights: pruned by magnitude where
the data reads every row; under a budget, pruned on the rows the data reads, the unread rows kept (and said); and
weights no scored output reaches are left alone by a budget."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.calibration.readers import open_data
from onnxprune.converter.coverage import row_coverage
from onnxprune.converter.pipeline import configure, run
from onnxprune.models import third_party_builders as tb
from onnxprune.passes.weights import find_prunable, weight_array
from tests.oracle import assert_same_outputs


def _ids(n, vocab, seq_len, *, rows=None, seed=0):
    rng = np.random.default_rng(seed)
    pool = np.arange(vocab) if rows is None else np.asarray(rows)
    ids = rng.choice(pool, size=(n, seq_len))
    ids.reshape(-1)[: len(pool)] = pool[: ids.size]  # every row of the pool appears at least once
    return ids.astype(np.int64)


def test_the_table_is_an_embedding_weight_with_no_macs():
    """A table has no output-channel axis for the criteria (its rows are read, not multiplied), but its columns are
    the features a lookup returns (channel groups follow them): `inspect`'s neurons column counts them, as prune's
    table does (it showed "-")."""
    from onnxprune.converter.summary import layer_rows

    model = tb.token_classifier(vocab=30, dim=8)
    inventory = find_prunable(model)
    w = inventory.by_name()["embed.weight"]
    assert (w.kind, w.op_type, w.input_index, w.shape, w.macs) == ("embedding", "Gather", 0, (30, 8), 0)
    assert (w.out_axis, w.in_axis) == (None, None)
    assert {r["weight"]: r["neurons"] for r in layer_rows(model, inventory)}["embed.weight"] == 8


def test_rows_read_are_counted_from_the_feeds_and_from_computed_ids():
    model = tb.token_classifier(vocab=30, dim=8, seq_len=5)
    inv = find_prunable(model)
    full = row_coverage(model, inv.prunable, open_data({"ids": _ids(64, 30, 5)}, model, batch_size=16))
    assert full.partial == {}
    part = row_coverage(model, inv.prunable, open_data({"ids": _ids(64, 30, 5, rows=range(10))}, model,
                                                       batch_size=16))
    assert part.partial == {"embed.weight": (10, 30)}
    # ids computed in the graph (a Gather of a column of 'cats'): read from a run of a copy of the model
    model = tb.scores_and_label(categories=(5, 7))
    inv = find_prunable(model)
    assert {w.name for w in inv.prunable if w.kind == "embedding"} == {"emb0.weight", "emb1.weight"}
    feeds = {"feats": np.zeros((40, 6), np.float32),
             "cats": np.stack([np.arange(40) % 5, np.arange(40) % 3], axis=1).astype(np.int64)}
    cov = row_coverage(model, inv.prunable, open_data(feeds, model, batch_size=8))
    assert cov.partial == {"emb1.weight": (3, 7)}


def test_a_fixed_sparsity_prunes_the_table_and_onnxruntime_agrees():
    model = tb.token_classifier(vocab=30, dim=8, seq_len=5)
    data = {"ids": _ids(64, 30, 5)}
    result = run(model, configure(sparsity=0.5, data=data))
    table = weight_array(result.dense_model, "embed.weight")
    assert (table == 0).mean() == pytest.approx(0.5, abs=0.02)
    kept = table != 0
    np.testing.assert_array_equal(table[kept], weight_array(model, "embed.weight")[kept])
    # a feature (column) that is 0 for every id, or that no weight downstream reads any more, goes from the table
    written = weight_array(result.model, "embed.weight")
    cols = [next(j for j in range(table.shape[1]) if np.array_equal(table[:, j], col)) for col in written.T]
    assert cols == sorted(set(cols)) and len(cols) == written.shape[1] <= table.shape[1]
    onnx.checker.check_model(result.model, full_check=True)
    assert_same_outputs(result.model, result.dense_model, feeds=[{"ids": data["ids"][:16]}])


def test_the_note_on_unread_rows_states_the_rule_not_an_outcome():
    """Real models 51: chython-rxnmap's run kept the input model, and its note said the tables whose rows the data
    does not all read "were pruned on the rows it reads". The note is said before the search (the targets step),
    whatever the search then does: it states the rule."""
    model = tb.token_classifier(vocab=30, dim=8, seq_len=5)
    data = {"ids": _ids(200, 30, 5, rows=range(12))}
    result = run(model, configure(max_loss=0.0, data=data, one_shot=True))
    said = [n for n in result.report["notes"] if "'embed.weight' 12 of 30 rows" in n]
    assert said and not any("were pruned" in n for n in said)
    assert "are pruned, if at all, on the rows it reads only" in said[0]
    np.testing.assert_array_equal(weight_array(result.dense_model, "embed.weight")[12:],
                                  weight_array(model, "embed.weight")[12:])
    assert_same_outputs(result.model, result.dense_model, feeds=[{"ids": data["ids"][:16]}])


@pytest.mark.parametrize("one_shot", [True, False])
def test_a_budget_prunes_a_table_on_the_rows_the_data_reads_and_keeps_the_others(one_shot):
    """A row no sample reads has no evidence behind it: it keeps its input values, the rows read are pruned by the
    budget like any weight (until session 38 the whole table was left as it was: torch's legacy EmbeddingBag read
    499 of its 500 rows, and 87% of a model's weights stayed). The written model computes what its weights say,
    and its outputs on the data are those of the pruned rows alone (the unread rows change nothing there)."""
    from tests.oracle import check_full

    model = tb.token_classifier(vocab=30, dim=8, seq_len=5)
    data = {"ids": _ids(200, 30, 5, rows=range(12))}
    result = run(model, configure(max_loss=50.0, data=data, one_shot=one_shot, time_budget=None if one_shot else 30))
    table, given = weight_array(result.dense_model, "embed.weight"), weight_array(model, "embed.weight")
    np.testing.assert_array_equal(table[12:], given[12:])
    assert (table[:12] == 0).any()
    assert result.state.masks["embed.weight"][12:].all()
    assert any("'embed.weight' 12 of 30 rows, unread e.g. 12, 13, 14" in n and "on the rows it reads only" in n
               for n in result.report["notes"])
    check_full(result.model)
    assert_same_outputs(result.model, result.dense_model, feeds=[{"ids": data["ids"][:16]}])
    # no sample reads what the step gave back: with the unread rows zeroed the outputs on the data are the same
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(result.dense_model)
    t = next(t for t in zeroed.graph.initializer if t.name == "embed.weight")
    t.CopyFrom(onnx.numpy_helper.from_array(np.where(np.arange(30)[:, None] >= 12, 0, table).astype(table.dtype),
                                            "embed.weight"))
    assert_same_outputs(zeroed, result.dense_model, feeds=[{"ids": data["ids"]}])
    if not one_shot:  # the search's ratios count the unread rows as kept, as the summary does
        kept = [h for h in result.report["history"] if h.get("kept")][-1]
        assert kept["ratio"] == pytest.approx(result.report["compression"], rel=1e-6)
    # with a fixed sparsity it is pruned as asked, and the run says no sample checked the unread rows
    fixed = run(model, configure(sparsity=0.5, data=data))
    assert (weight_array(fixed.model, "embed.weight") == 0).mean() == pytest.approx(0.5, abs=0.02)
    assert any("no sample checked the unread rows" in n for n in fixed.report["notes"])


def test_weight_bits_leave_a_partly_read_tables_values_float():
    """A codebook moves every kept value of a weight, the unread rows' too, where nothing measures it: such a table
    keeps its float values (said), its unread rows exactly the input's; the other weights take the codebook."""
    model = tb.token_classifier(vocab=30, dim=8, seq_len=5)
    data = {"ids": _ids(200, 30, 5, rows=range(12))}
    result = run(model, configure(max_loss=50.0, data=data, one_shot=True, weight_bits=4))
    table = weight_array(result.dense_model, "embed.weight")
    np.testing.assert_array_equal(table[12:], weight_array(model, "embed.weight")[12:])
    assert any("'embed.weight' keep their float values" in n for n in result.report["notes"])
    fc = weight_array(result.dense_model, "fc.weight")
    assert len(np.unique(fc[fc != 0])) <= 16  # 4-bit codes elsewhere
    assert_same_outputs(result.model, result.dense_model, feeds=[{"ids": data["ids"][:16]}])


def test_rows_the_decision_set_alone_reads_count_as_read():
    model = tb.token_classifier(vocab=30, dim=8, seq_len=5)
    inv = find_prunable(model)
    a = row_coverage(model, inv.prunable, open_data({"ids": _ids(64, 30, 5, rows=range(10))}, model))
    b = row_coverage(model, inv.prunable, open_data({"ids": _ids(64, 30, 5, rows=range(5, 20))}, model))
    both = a.merge(b)
    assert both.partial == {"embed.weight": (20, 30)} and both.unread["embed.weight"] == [20, 21, 22]
    assert a.merge(row_coverage(model, inv.prunable, open_data({"ids": _ids(64, 30, 5)}, model))).partial == {}


def test_a_budget_prunes_a_table_the_data_reads_whole():
    model = tb.token_classifier(vocab=30, dim=8, seq_len=5)
    data = {"ids": _ids(200, 30, 5)}
    result = run(model, configure(max_loss=50.0, data=data, one_shot=True))
    assert (weight_array(result.dense_model, "embed.weight") == 0).any()  # the written file may store it sparse
    assert not any("rows read" in n or "rows --data" in n for n in result.report["notes"])
    assert_same_outputs(result.model, result.dense_model, feeds=[{"ids": data["ids"][:16]}])


def test_weights_no_scored_output_reaches_are_left_as_they_are_by_a_budget():
    """Sweep 9: a recommender with `rating` and `click_prob`, --metric naming only click_prob; the rating head's
    weight reached no scored output, the search emptied it and the run stopped on 'sparsity 1.0'."""
    model = tb.two_head_detector()
    out_names = [o.name for o in model.graph.output]
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    result = run(model, configure(max_loss=5.0, data={"input": x}, one_shot=True,
                                  metric=f"{out_names[1]}=agreement"))
    inv = find_prunable(model)
    from onnxprune.calibration.sensitivity import unscored_weights

    alone = unscored_weights(model, inv, [out_names[1]])
    assert alone  # the box head's own weight
    for name in alone:
        np.testing.assert_array_equal(weight_array(result.model, name), weight_array(model, name))
    assert any("reach no scored output" in n for n in result.report["notes"])


def test_an_output_metric_leaves_out_is_named_and_does_move():
    """Sweep 32: a DETR-style head run with `--metric center=rel_l2` changed 3.00% of its held-out class_logits
    classes; the one line about it named the weight left alone, not the output that no longer counted. The note
    names the output, and it is true: the written model's left-out output differs from the input model's in
    onnxruntime while the named one holds its budget."""
    import onnxruntime as ort

    model = tb.two_head_detector()
    boxes, scores = (o.name for o in model.graph.output)
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    result = run(model, configure(max_loss=5.0, data={"input": x}, one_shot=True, metric=f"{boxes}=rel_l2"))
    notes = [n for n in result.report["notes"] if "not scored" in n]
    assert notes == [f"output '{scores}' is not scored: --metric names only '{boxes}', so the layers shared with it "
                     "are pruned with nothing holding it; name every output that matters (--metric OUTPUT=KIND for "
                     "each), or drop --metric and give one output a budget of its own with --max-loss OUTPUT=L"]
    session = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])  # noqa: E731
    before, after = (session(m).run(None, {"input": x}) for m in (model, result.model))
    assert not np.allclose(before[1], after[1], atol=1e-4)  # the shared layer moved the unscored scores
    both = run(model, configure(max_loss=5.0, data={"input": x}, one_shot=True))
    assert not any("not scored" in n for n in both.report["notes"])  # every output scored: nothing to say


def test_the_refit_search_holds_an_embedding_at_its_mask_in_its_global_levels():
    """The refit cannot fit a table (its kept entries are their own best fit): its global levels move only the
    other layers, and the per-layer phase raises the table one judged step at a time."""
    from types import SimpleNamespace

    from onnxprune.converter.auto.recovery import ReconstructRecovery

    model = tb.token_classifier(vocab=30, dim=8, seq_len=5)
    inv = find_prunable(model)
    weights = {w.name: weight_array(model, w.name) for w in inv.prunable}
    masks = {n: np.ones(v.shape, bool) for n, v in weights.items()}
    masks["embed.weight"][:5] = False
    rec = ReconstructRecovery()
    rec.s = SimpleNamespace(inventory=inv, _weights_of=lambda m: weights, score=None)
    table = int(masks["embed.weight"].sum())  # 200 of 240 kept; fc.weight 32
    out = rec._global(SimpleNamespace(model=model, masks=masks), table + 20)
    np.testing.assert_array_equal(out["embed.weight"], masks["embed.weight"])
    assert int(out["fc.weight"].sum()) == 20  # the level's whole cut falls on the layers the refit fits
    out = rec._global(SimpleNamespace(model=model, masks=masks), 10)  # more than the table holds: one stays
    assert int(out["fc.weight"].sum()) == 1 and int(out["embed.weight"].sum()) == table


def test_the_search_states_its_ratios_over_every_prunable_weight_a_left_table_included():
    """Sweep 9's t_tagger: "auto reconstruct: 2.0x kept" and "past the result's 1.96x" for a summary of 1.1x, its
    table (most of the weights) left out of the search and not counted."""
    model = tb.token_classifier(vocab=300, dim=16, seq_len=5)
    ids = np.random.default_rng(0).integers(0, 100, (400, 5)).astype(np.int64)  # 100 of the 300 rows read
    result = run(model, configure(data={"ids": ids}, max_loss=20.0, time_budget=30))
    kept = [h for h in result.report["history"] if h.get("kept")][-1]
    assert kept["ratio"] == pytest.approx(result.report["compression"], rel=1e-6)
    table = weight_array(result.dense_model, "embed.weight")
    np.testing.assert_array_equal(table[100:], weight_array(model, "embed.weight")[100:])  # the unread rows
    # the one-shot fit ranks the unread rows last and counts none of them as removed: it said "chose 1.74x" for a
    # summary of 1.17x when it counted the table's sparsity over all its rows
    one = run(model, configure(data={"ids": ids}, max_loss=20.0, one_shot=True))
    chose = next(n for n in one.report["notes"] if n.startswith("the one-shot fit chose"))
    assert f"chose {one.report['compression']:.2f}x" in chose
    np.testing.assert_array_equal(weight_array(one.dense_model, "embed.weight")[100:],
                                  weight_array(model, "embed.weight")[100:])


def test_every_lookup_of_a_tied_table_counts_its_rows():
    """A greedy decoder reads its embedding once a step: the first step's ids are the start token, the later ones
    the tokens it chose. Only the first Gather's ids were counted (sweep 27's seq2seq: "'emb.weight' 1 of 12 rows,
    unread e.g. 0, 1, 2" where the data read 11 of them)."""
    from tests.oracle import run as run_model

    model = tb.greedy_decoder(vocab=12, steps=3)
    inv = find_prunable(model)
    assert inv.by_name()["emb.weight"].readers == 3
    x = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    chosen = run_model(model, {"x": x})["logits"].argmax(-1)[:, :-1]  # the tokens steps 2 and 3 look up
    read = {11} | set(chosen.reshape(-1).tolist())
    assert 1 < len(read) < 12, read  # the check needs rows read besides the start token, and some unread
    cov = row_coverage(model, inv.prunable, open_data({"x": x}, model, batch_size=16))
    assert cov.partial == {"emb.weight": (len(read), 12)}
    assert cov.unread["emb.weight"] == sorted(set(range(12)) - read)[:3]


def test_rows_a_loop_body_reads_are_counted_and_the_table_pruned_where_every_row_is_read():
    """Sweep 28's DLRM, exported by torch's legacy exporter: each `nn.EmbeddingBag` is a Loop over the batch whose
    body Gathers the table, and all three tables were left unpruned, "read inside an If/Loop/Scan body, where its
    rows are not counted", though 300 samples read every row. A copy of the model marks the rows its lookups read
    wherever they sit (`coverage.rows_model`), checked here against the ids fed; a table all of whose rows are read is
    then pruned by a budget like any other, and the written model computes what its weights say (onnxruntime)."""
    from onnxprune.converter.coverage import rows_model
    from tests.oracle import check_full
    from tests.oracle import run as ort_run

    model = tb.loop_embedding_bag(rows=12)
    inv = find_prunable(model)
    table = inv.by_name()["emb.weight"]
    assert table.kind == "embedding" and table.scope
    some = _ids(40, 12, 3, rows=[0, 2, 3, 7, 11])
    part = row_coverage(model, inv.prunable, open_data({"ids": some}, model, batch_size=8))
    assert part.partial == {"emb.weight": (5, 12)} and part.bodies == set()
    assert part.unread["emb.weight"] == [1, 4, 5]
    negative = some - 12  # Gather reads -k as row rows - k: the same rows
    assert row_coverage(model, inv.prunable, open_data({"ids": negative}, model, batch_size=8)).partial == part.partial
    counting = rows_model(model, {"emb.weight": (0, 12)})
    check_full(counting)
    marks = ort_run(counting, {"ids": some[:4]})[counting.graph.output[0].name]
    np.testing.assert_array_equal(marks > 0, np.isin(np.arange(12), some[:4]))
    every = _ids(300, 12, 3)
    assert row_coverage(model, inv.prunable, open_data({"ids": every}, model, batch_size=16)).partial == {}
    result = run(model, configure(sparsity=0.5, data={"ids": every}))
    written = result.model
    check_full(written)
    pruned = weight_array(written, "emb.weight")
    assert (pruned == 0).mean() == pytest.approx(0.5, abs=0.05)
    head = weight_array(written, "head.weight")
    bias = next(onnx.numpy_helper.to_array(t) for t in written.graph.initializer if t.name == "head.bias")
    np.testing.assert_allclose(ort_run(written, {"ids": every[:16]})["logits"],
                               pruned[every[:16]].mean(axis=1) @ head.T + bias, rtol=1e-5, atol=1e-6)
    budgeted = run(model, configure(max_loss=1.0, data={"ids": every}, one_shot=True))
    assert not any("rows are not counted" in n or "does not all read" in n for n in budgeted.state.notes)


def test_a_level_takes_its_share_of_the_rows_the_data_reads_not_of_the_pinned_ones():
    """The unread rows are ranked after every other entry (`Scorer.last`) and given back after the search. With
    them inside the table's LAMP sums, every read entry scored near 0 and went first: on the corpus encoder (76 of
    257 rows read) each sgd weight level emptied the rows the data reads (loss 59 pp, 1.71x where the fix gives
    2.29x), and the refit's per-layer step took 0.6 of the whole table's count, more than the read rows held
    (68.75 pp). Now the pinned entries stay, and LAMP ranks the read entries among themselves."""
    from onnxprune.converter.auto.allocation import global_masks, pinned_entries
    from onnxprune.passes.criteria import Scorer

    rng = np.random.default_rng(0)
    table, fc = rng.normal(size=(20, 8)), rng.normal(size=(8, 8))
    unread = np.zeros(table.shape, bool)
    unread[5:] = True  # rows 5.. no sample reads: 120 of the 160 entries
    scorer = Scorer(last={"table": unread})
    masks = {"table": np.ones(table.shape, bool), "fc": np.ones(fc.shape, bool)}
    np.testing.assert_array_equal(pinned_entries(scorer, "table", masks["table"]), unread)
    assert not pinned_entries(scorer, "fc", masks["fc"]).any()
    out = global_masks({"table": table, "fc": fc}, masks, 160 + 64 - 52, scorer)
    assert out["table"][unread].all()  # the pinned entries stay
    read_kept, fc_kept = int(out["table"][~unread].sum()), int(out["fc"].sum())
    assert read_kept + fc_kept == 104 - 52
    # the 40 read entries and fc's 64, alike in distribution, share the cut by LAMP (before: all 40 read went)
    assert 10 <= read_kept <= 30 and 20 <= fc_kept <= 44, (read_kept, fc_kept)
    kept, gone = np.abs(table[out["table"] & ~unread]), np.abs(table[~out["table"]])
    assert kept.min() >= gone.max()  # within the read rows, by magnitude


def test_the_refit_searchs_step_on_a_partly_read_table_cuts_the_rows_the_data_reads_only(monkeypatch):
    """The per-layer phase's step keeps 0.6 of the table's entries that may go, the unread rows staying: on a
    token classifier whose data reads 10 of 30 rows, the table's candidates keep every unread entry and about 0.6
    of the read ones, and the written model agrees with its dense model in onnxruntime."""
    from onnxprune.converter.auto import recovery

    model = tb.token_classifier(vocab=30, dim=8, seq_len=5)
    ids = _ids(600, 30, 5, rows=range(10))
    seen = []
    real = recovery.global_masks

    def spy(weights, masks, keep, scorer=None):
        out = real(weights, masks, keep, scorer)
        if list(weights) == ["embed.weight"]:
            seen.append((int(masks["embed.weight"][:10].sum()), out["embed.weight"]))
        return out

    monkeypatch.setattr(recovery, "global_masks", spy)
    result = run(model, configure(data={"ids": ids}, max_loss=20.0, time_budget=60, recovery="reconstruct"))
    assert seen, "the per-layer phase tried no step on the table"
    for read_alive, mask in seen:
        assert mask[10:].all()  # the unread rows stay
        assert 0 < int(mask[:10].sum()) < read_alive  # a share of the read entries goes, never all of them
    np.testing.assert_array_equal(weight_array(result.dense_model, "embed.weight")[10:],
                                  weight_array(model, "embed.weight")[10:])
    assert_same_outputs(result.model, result.dense_model, feeds=[{"ids": ids[:16]}])
