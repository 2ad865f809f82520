"""The refit's passes run from the activations the last pass kept (converter/reconstruct_segments.py): the same
refit, bit for bit, as every pass run from the graph inputs, fewer nodes run, and memory within its bytes."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.converter import reconstruct as rec
from onnxprune.converter import reconstruct_segments as seg
from onnxprune.converter.reconstruct import DenseSessions, ReconstructReport, reconstruct
from onnxprune.models import builders
from onnxprune.models import builders_bodies as bb
from onnxprune.models import builders_control as bc
from onnxprune.models import third_party_builders as tpb
from onnxprune.passes.weights import weight_array
from tests.converter.test_reconstruct import feeds_for, output_error, prune
from tests.converter.test_reconstruct_bodies import correlated
from tests.converter.test_reconstruct_recurrent import sequences
from tests.oracle import check_full

CASES = {  # builder, feeds(n_batches, batch, seed), sparsity
    "lenet5_constant_nodes": (lambda: builders.as_constant_nodes(builders.lenet5_like(conv_channels=(4, 8),
                                                                                      fc_units=32, seed=0)),
                              lambda m, n, b, s: feeds_for(m, n, b, s), 0.6),
    "residual": (lambda: builders.residual_block(seed=0), lambda m, n, b, s: feeds_for(m, n, b, s), 0.5),
    "branches": (lambda: builders.concat_branches(seed=0), lambda m, n, b, s: feeds_for(m, n, b, s), 0.5),
    "depthwise": (lambda: builders.depthwise_separable(seed=0), lambda m, n, b, s: feeds_for(m, n, b, s), 0.5),
    "attention": (lambda: builders.tiny_attention(seed=0), lambda m, n, b, s: feeds_for(m, n, b, s), 0.5),
    "tied_cell": (lambda: builders.tied_cell(steps=3, hidden=24, seed=2), lambda m, n, b, s: feeds_for(m, n, b, s),
                  0.7),
    "transposed_gemm": (lambda: builders.transposed_gemm(seed=0), lambda m, n, b, s: feeds_for(m, n, b, s), 0.5),
    "if_matmul_gemm": (lambda: bc.if_network(seed=0), lambda m, n, b, s: feeds_for(m, n, b, s), 0.7),
    "if_convs": (lambda: bb.if_convs(seed=0), lambda m, n, b, s: feeds_for(m, n, b, s), 0.6),
    "loop_rnn": (lambda: bc.while_rnn(seed=0), lambda m, n, b, s: sequences(n, b, s), 0.6),
    "lstm": (lambda: bc.lstm_classifier(seed=0), lambda m, n, b, s: sequences(n, b, s), 0.6),
    "nested_if": (lambda: bb.nested_if(seed=0), lambda m, n, b, s: correlated(n, b, s), 0.7),
}


class Spy:
    """Counts the nodes each pass's session runs, and the most bytes a refit call's Room held at once."""

    def __init__(self, monkeypatch):
        self.nodes, self.peak, self.rooms = 0, 0, []
        spy = self
        real_session, real_take = seg.Pass._session, seg.Room.take

        def session(self, example):
            spy.nodes += len(self.nodes)
            return real_session(self, example)

        def take(self, n):
            ok = real_take(self, n)
            spy.peak = max(spy.peak, self.size - self.left)
            return ok

        real_init = seg.Room.__init__

        def init(self, size):
            real_init(self, size)
            self.size = size

        monkeypatch.setattr(seg.Pass, "_session", session)
        monkeypatch.setattr(seg.Room, "take", take)
        monkeypatch.setattr(seg.Room, "__init__", init)


def _refit(dense, masks, feeds, sessions=None):
    report = ReconstructReport()
    out = reconstruct(prune_to(dense, masks), dense, masks, feeds, report=report, dense_session=sessions)
    return out, report


def prune_to(dense, masks):
    from tests.oracle import zero_weights

    return zero_weights(dense, masks)


@pytest.mark.parametrize("case", list(CASES))
def test_passes_from_the_frontier_refit_bit_for_bit_as_passes_from_the_inputs(case, monkeypatch):
    build, data, sparsity = CASES[case]
    dense = build()
    _, masks = prune(dense, sparsity)
    feeds = data(dense, 4, 16, 0)
    spy = Spy(monkeypatch)
    kept, kept_report = _refit(dense, masks, feeds)
    nodes_kept = spy.nodes
    check_full(kept)
    monkeypatch.setattr(rec, "REFIT_CACHE_BYTES", 0)  # nothing kept: every pass from the graph inputs, as before
    spy.nodes = 0
    plain, plain_report = _refit(dense, masks, feeds)
    assert kept_report.refit.keys() == plain_report.refit.keys() and kept_report.refit
    assert kept_report.skipped == plain_report.skipped
    for name in masks:
        np.testing.assert_array_equal(weight_array(kept, name), weight_array(plain, name), err_msg=name)
    assert nodes_kept <= spy.nodes
    if kept_report.passes > 1 and case in ("lenet5_constant_nodes", "residual", "depthwise", "attention"):
        assert nodes_kept < spy.nodes  # later passes start where the last one stopped


def test_a_frontier_that_does_not_fit_is_dropped_and_the_refit_is_the_same(monkeypatch):
    """Room for the batches but not for the activations: every pass runs from the graph inputs; room for neither:
    the batches are read again each pass. Both refit as the unbounded path does, and never hold more than the room."""
    dense = builders.lenet5_like(conv_channels=(4, 8), fc_units=32, seed=0)
    _, masks = prune(dense, 0.6)
    feeds = feeds_for(dense, 4, 16, 0)
    full, _ = _refit(dense, masks, feeds)
    batch_bytes = sum(v.nbytes for f in feeds for v in f.values())
    for room in (batch_bytes + 1000, batch_bytes // 2):
        monkeypatch.setattr(rec, "REFIT_CACHE_BYTES", room)
        spy = Spy(monkeypatch)
        bounded, _ = _refit(dense, masks, feeds)
        assert spy.peak <= room
        for name in masks:
            np.testing.assert_array_equal(weight_array(bounded, name), weight_array(full, name), err_msg=name)


def test_the_dense_sessions_across_calls_start_each_call_afresh(monkeypatch):
    """A search's DenseSessions serves several refits: the second call (its cache off, so its passes run) gives the
    refit a fresh DenseSessions gives, and a refit stopped in its first wave leaves nothing that changes the next."""
    dense = builders.lenet5_like(conv_channels=(4, 8), fc_units=32, seed=0)
    feeds = feeds_for(dense, 3, 8, 0)
    first, second = prune(dense, 0.5)[1], prune(dense, 0.7)[1]
    shared = DenseSessions(dense, cache_bytes=0)
    _refit(dense, first, feeds, shared)
    with pytest.raises(rec.RefitStopped):
        asked = []
        reconstruct(prune_to(dense, first), dense, first, feeds, dense_session=shared,
                    stop=lambda done, waves: asked.append(1) or len(asked) > 2)
    again, _ = _refit(dense, second, feeds, shared)
    fresh, _ = _refit(dense, second, feeds)
    for name in second:
        np.testing.assert_array_equal(weight_array(again, name), weight_array(fresh, name), err_msg=name)


def test_a_pass_from_kept_activations_runs_an_opset_23_attention_whose_inference_needs_their_sizes(monkeypatch):
    """ai.onnx Attention (opset 23) on 3-D q/k/v: a pass starting from the kept q, k, v (declared of unknown sizes)
    made onnxruntime infer an Attention output its out projection rejected ("Incompatible dimensions for matrix
    multiplication": the sweep 44 row transformer's budgeted prune failed there). The segment is declared with the
    sizes the whole model's inference fixes: the refit runs, lowers the held-out error in onnxruntime and equals the
    refit with every pass from the graph inputs."""
    dense = tpb.onnx_attention_rows(seed=0)
    check_full(dense)
    pruned, masks = prune(dense, 0.6)
    feeds = feeds_for(dense, 4, 16, 0)
    spy = Spy(monkeypatch)
    kept, report = _refit(dense, masks, feeds)
    assert report.passes > 1 and {"out.weight", "fc.weight"} <= set(report.refit)
    check_full(kept)
    held_out = feeds_for(dense, 3, 32, 100)
    assert output_error(kept, dense, held_out) < output_error(pruned, dense, held_out)
    monkeypatch.setattr(rec, "REFIT_CACHE_BYTES", 0)
    plain, _ = _refit(dense, masks, feeds)
    for name in masks:
        np.testing.assert_array_equal(weight_array(kept, name), weight_array(plain, name), err_msg=name)
    assert spy.nodes > 0
