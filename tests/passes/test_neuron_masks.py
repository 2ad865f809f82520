"""Neuron masks: the weakest whole neurons masked in every weight that indexes them, then removed for real."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune.passes.dead_neurons import remove_dead_neurons
from onnxprune.passes.neuron_masks import neuron_map, neuron_masks, scores
from onnxprune.passes.weights import find_prunable, weight_array
from tests.oracle import zero_weights
from tests.passes import _graphs as G


def make_case(model):
    names = {w.name for w in find_prunable(model).prunable}
    weights = {n: weight_array(model, n) for n in names}
    return neuron_map(model, names), weights, {n: np.ones(w.shape, dtype=bool) for n, w in weights.items()}


def shrink(model, masks):
    """Zero the masked weights, remove dead neurons; the shrunk model must equal the masked one."""
    masked = zero_weights(model, masks)
    out, report = remove_dead_neurons(masked)
    G.assert_same(masked, out)
    return out, {l.node: (l.before, l.after) for l in report.layers}


def test_mlp_masks_whole_rows_and_columns_and_the_shapes_shrink():
    m = G.mlp((20, 12, 10, 4))
    nmap, w, ones = make_case(m)
    masks, gone = neuron_masks(nmap, w, ones, 0.5)
    rows = ~masks["fc1.weight"].any(axis=1)
    assert rows.sum() == 6 and not masks["fc2.weight"][:, rows].any()  # fc1's 6 weakest, in and out
    assert masks["fc2.weight"][:, ~rows].sum() == 10 * 6 - 5 * 6  # fc2 lost 5 rows of the 6 live columns
    assert masks["fc3.weight"].sum() == 4 * 5  # fc3 outputs are graph outputs: never masked
    out, counts = shrink(m, masks)
    assert counts == {"fc1": (12, 6), "fc2": (10, 5), "fc3": (4, 4)}
    assert G.shapes(out)["fc2.weight"] == (5, 6)


def test_weakest_by_in_norm_times_out_norm():
    m = G.mlp((6, 4, 3))
    w1 = np.ones((4, 6), np.float32)
    w2 = np.ones((3, 4), np.float32)
    w1[0] *= 10.0
    w2[:, 0] *= 0.01  # neuron 0: big in, tiny out → product 0.1·(ones norm²) — the weakest
    w1[1] *= 0.5  # neuron 1: 0.5 → second weakest
    G.set_init(m, "fc1.weight", w1)
    G.set_init(m, "fc2.weight", w2)
    nmap, w, ones = make_case(m)
    s = scores(nmap, w)
    fc1 = sorted(r for r in s if nmap.origins[r] == "Gemm 'fc1'")  # class ids follow the neuron order
    assert s[fc1[0]] == pytest.approx(0.1 * np.sqrt(6 * 3)) and s[fc1[1]] == pytest.approx(0.5 * np.sqrt(6 * 3))
    masks, _ = neuron_masks(nmap, w, ones, 0.25)
    assert not masks["fc1.weight"][0].any() and masks["fc1.weight"][1:].all()
    masks, _ = neuron_masks(nmap, w, ones, 0.5)
    assert not masks["fc1.weight"][:2].any() and masks["fc1.weight"][2:].all()


@given(scale=st.floats(0.05, 20.0), seed=st.integers(0, 50))
@settings(max_examples=25, deadline=None)
def test_ranking_ignores_relu_rescaling(scale, seed):
    """relu(a·x)·(W/a) == relu(x)·W: moving magnitude from one side of a neuron to the other changes nothing."""
    m = G.mlp((8, 6, 3), seed=seed)
    nmap, w, ones = make_case(m)
    before, _ = neuron_masks(nmap, w, ones, 0.5)
    k = seed % 6
    w2 = {n: a.copy() for n, a in w.items()}
    w2["fc1.weight"][k] *= scale
    w2["fc2.weight"][:, k] /= scale
    after, _ = neuron_masks(nmap, w2, ones, 0.5)
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_masks_only_shrink_and_dead_neurons_count_toward_the_fraction():
    m = G.mlp((10, 8, 3))
    nmap, w, ones = make_case(m)
    start = {n: o.copy() for n, o in ones.items()}
    start["fc1.weight"][[2, 5]] = False  # two neurons already dead (no inputs)
    masks, gone = neuron_masks(nmap, w, start, 0.25)
    assert not masks["fc1.weight"][[2, 5]].any() and masks["fc1.weight"].any(axis=1).sum() == 6  # no extra
    assert all((masks[n] <= start[n]).all() for n in masks)


def test_residual_class_is_masked_in_every_producer_and_consumer():
    m = G.residual()
    nmap, w, ones = make_case(m)
    masks, gone = neuron_masks(nmap, w, ones, 0.5)
    stem = ~masks["stem.weight"].reshape(8, -1).any(axis=1)
    assert stem.sum() == 4
    assert not masks["b.weight"].reshape(8, -1)[stem].any()  # the Add's other producer: same channels
    assert not masks["a.weight"][:, stem].any() and not masks["head.weight"][:, stem].any()  # every reader
    out, counts = shrink(m, masks)
    assert counts["stem"] == (8, 4) and counts["b"] == (8, 4)


def test_concat_branches_keep_a_channel_and_split_outputs_too():
    m = G.concat_split()
    nmap, w, ones = make_case(m)
    masks, gone = neuron_masks(nmap, w, ones, 0.9)
    for name in ("p.weight", "q.weight"):
        assert masks[name].reshape(masks[name].shape[0], -1).any(axis=1).sum() >= 1
    out, counts = shrink(m, masks)
    assert counts["p"][1] >= 1 and counts["q"][1] >= 1 and counts["r"][1] >= 2


def test_depthwise_filters_go_with_their_channel():
    m = G.depthwise_separable(pad=1)
    nmap, w, ones = make_case(m)
    masks, gone = neuron_masks(nmap, w, ones, 0.5)
    dead = ~masks["pw0.weight"].reshape(8, -1).any(axis=1)
    assert dead.sum() == 4 and not masks["dw.weight"].reshape(8, -1)[dead].any()
    out, counts = shrink(m, masks)
    assert counts["pw0"] == (8, 4) and G.shapes(out)["dw.weight"] == (4, 1, 3, 3)


def test_weights_that_cannot_be_masked_keep_their_neurons():
    m = G.mlp((10, 8, 6, 3))
    names = {w.name for w in find_prunable(m).prunable} - {"fc2.weight"}  # e.g. --exclude fc2
    nmap = neuron_map(m, names)
    w = {n: weight_array(m, n) for n in names}
    masks, gone = neuron_masks(nmap, w, {n: np.ones(a.shape, bool) for n, a in w.items()}, 0.5)
    assert masks["fc1.weight"].all() and masks["fc3.weight"].all()  # fc1's and fc2's neurons touch fc2
    assert gone == set()


def test_a_graph_output_blocks_masking_its_neurons():
    m = G.middle_output()  # fc1's activation is also a graph output
    nmap, w, ones = make_case(m)
    masks, gone = neuron_masks(nmap, w, ones, 0.5)
    assert masks["fc1.weight"].all() and masks["fc2.weight"].any(axis=1).sum() == 3
    out, counts = shrink(m, masks)
    assert counts["fc1"] == (8, 8) and counts["fc2"] == (6, 3)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.99])
def test_fraction_bounds(fraction):
    m = G.mlp((10, 8, 3))
    nmap, w, ones = make_case(m)
    masks, gone = neuron_masks(nmap, w, ones, fraction)
    live = masks["fc1.weight"].any(axis=1).sum()
    assert live == max(1, 8 - int(np.floor(fraction * 8 + 1e-9)))
    assert nmap.kept(gone)["Gemm 'fc1'"] == (live, 8)


def _conv_bn_net(seed: int = 0):
    """conv c1 (3→6) ─ BN ─ Relu ─ conv c2 (6→4) ─ Relu ─ GAP ─ Flatten ─ Gemm head."""
    g = G.G(seed)
    x = g.op("Relu", "r1", [g.bn(g.conv("x", "c1", 3, 6, 3, pad=1), "bn1", 6)])
    x = g.op("Relu", "r2", [g.conv(x, "c2", 6, 4, 1)])
    g.gemm(g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])]), "head", 4, 3)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 8, 8]}, {"y": ["N", 3]})


def test_a_batchnorm_scale_counts_in_the_score():
    m = _conv_bn_net()
    G.set_init(m, "bn1.scale", np.where(np.arange(6) == 4, 1e-3, 1.0))  # BN all but silences channel 4 …
    w = G.init(m, "c1.weight").copy()
    w[4] *= 100.0  # … however large its conv weights
    G.set_init(m, "c1.weight", w)
    nmap, weights, ones = make_case(m)
    masks, _ = neuron_masks(nmap, weights, ones, 1 / 6)
    assert not masks["c1.weight"][4].any() and masks["c1.weight"][[0, 1, 2, 3, 5]].all()


@given(scale=st.floats(0.1, 10.0), channel=st.integers(0, 5))
@settings(max_examples=25, deadline=None)
def test_ranking_ignores_a_rescaling_the_batchnorm_divides_out(scale, channel):
    """conv·a with BN mean·a, var·a² computes the same function (up to ε): the ranking must not move."""
    m = _conv_bn_net(seed=3)
    nmap, weights, ones = make_case(m)
    before, _ = neuron_masks(nmap, weights, ones, 0.5)
    m2 = _conv_bn_net(seed=3)
    for name, power in (("c1.weight", 1), ("c1.bias", 1), ("bn1.mean", 1), ("bn1.var", 2)):
        v = G.init(m2, name).astype(np.float64).copy()
        v[channel] *= scale ** power
        G.set_init(m2, name, v)
    nmap2, weights2, _ = make_case(m2)
    after, _ = neuron_masks(nmap2, weights2, ones, 0.5)
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_transformer_ffn_loses_half_its_hidden_neurons_and_keeps_the_residual_stream():
    m = G.transformer_ffn()
    nmap, w, ones = make_case(m)
    masks, _ = neuron_masks(nmap, w, ones, 0.5)
    out, counts = shrink(m, masks)  # exact in onnxruntime through the erf-GELU chain
    assert counts == {"fc1": (64, 32), "fc2": (16, 16)}  # fc2's outputs join the residual Add with the input
    assert G.shapes(out)["fc1.weight"] == (16, 32) and G.shapes(out)["fc2.weight"] == (32, 16)


def test_a_channel_count_a_conv_reads_is_masked_down_to_a_multiple_of_4_and_a_gemms_is_not():
    """0.3 of 32 channels is 9.6: a Conv's input keeps 24 (8 masked; 23 would leave one dead channel that
    dead-neuron removal keeps for onnxruntime's blocked kernel), a Gemm's hidden layer 23 (9 masked)."""
    from tests.passes.test_dead_neurons import _two_convs

    conv = _two_convs(32)
    names = {w.name for w in find_prunable(conv).prunable}
    weights = {n: weight_array(conv, n) for n in names}
    masks, gone = neuron_masks(neuron_map(conv, names), weights, {n: np.ones(w.shape, bool) for n, w in weights.items()},
                               0.3)
    out, report = remove_dead_neurons(zero_weights(conv, masks))
    assert {(l.node, l.before, l.after) for l in report.layers if l.node == "a"} == {("a", 32, 24)}
    assert report.aligned == 0
    mlp = G.mlp((20, 32, 10, 4))
    names = {w.name for w in find_prunable(mlp).prunable}
    weights = {n: weight_array(mlp, n) for n in names}
    masks, _ = neuron_masks(neuron_map(mlp, names), weights, {n: np.ones(w.shape, bool) for n, w in weights.items()},
                            0.3)
    assert int((~masks["fc1.weight"].any(axis=1)).sum()) == 9
