"""einsum-linear: a linear layer written as an Einsum is read as the MatMul it is (sweep 23's Siamese net)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxprune import prune
from onnxprune.models.third_party_builders import einsum_siamese
from onnxprune.passes.base import PruneState
from onnxprune.passes.einsum_linear import EinsumLinear, einsum_layers, linear_layout
from onnxprune.passes.weights import find_prunable
from tests.oracle import assert_same_outputs, check_full


def _einsum(equation, weight_index=1):
    ins = ["x", "W"] if weight_index == 1 else ["W", "x"]
    return helper.make_node("Einsum", ins, ["y"], equation=equation)


def test_linear_equations_are_recognized_and_others_are_not():
    assert linear_layout(_einsum("bi,oi->bo"), 1) == "oi"
    assert linear_layout(_einsum("bi,io->bo"), 1) == "io"
    assert linear_layout(_einsum("...i,io->...o"), 1) == "io"
    assert linear_layout(_einsum("bsi, oi -> bso"), 1) == "oi"
    assert linear_layout(_einsum("oi,bi->bo", 0), 0) == "oi"
    for eq in ("bi,bi->b", "bi,oi->ob", "bi,ii->bi", "bi,oi->bio", "bii,oi->bio", "...i,oi->bo", "bo,oi->bo",
               "boi,oi->bo"):
        assert linear_layout(_einsum(eq), 1) is None, eq


def test_an_einsum_siamese_tower_is_one_tied_matmul_weight_per_layer_with_the_same_outputs():
    """Before: the tower's weights were "shared by '/t/Einsum', '/t_1/Einsum'" and "not a weight of ..." (Einsum),
    so 99.9% of an einsum-written Siamese MLP could not be pruned."""
    model = einsum_siamese(seed=0)
    check_full(model)
    assert {w.name for w in find_prunable(model).prunable} == {"head.weight"}
    assert einsum_layers(model) == {"t.w1": "oi", "t.w2": "io"}
    rewritten = EinsumLinear()(copy.deepcopy(model), PruneState()).model
    check_full(rewritten)
    assert [n.op_type for n in rewritten.graph.node].count("Einsum") == 0
    assert_same_outputs(rewritten, model, rtol=1e-5)
    prunable = {w.name: w for w in find_prunable(rewritten).prunable}
    assert {"t.w1", "t.w2", "head.weight"} <= set(prunable)
    w1 = next(t for t in rewritten.graph.initializer if t.name == "t.w1")
    assert tuple(w1.dims) == (8, 16)  # stored [in, out] for MatMul


def test_a_weight_also_read_by_another_op_is_left_as_it_was():
    model = einsum_siamese(seed=0)
    extra = helper.make_node("ReduceSum", ["t.w1"], ["w1_sum"], keepdims=0)
    model.graph.node.append(extra)
    model.graph.output.append(helper.make_tensor_value_info("w1_sum", onnx.TensorProto.FLOAT, []))
    assert "t.w1" not in einsum_layers(model) and einsum_layers(model) == {"t.w2": "io"}
    rewritten = EinsumLinear()(copy.deepcopy(model), PruneState()).model
    check_full(rewritten)
    assert_same_outputs(rewritten, model, rtol=1e-5)


def test_pruning_an_einsum_siamese_prunes_its_shared_tower():
    model = einsum_siamese(hidden=32, seed=0)
    rng = np.random.default_rng(0)
    data = {"left": rng.standard_normal((64, 8)).astype(np.float32),
            "right": rng.standard_normal((64, 8)).astype(np.float32)}
    result = prune(model, data=data, sparsity=0.5, neuron_sparsity=0.5, iterations=1, epochs=1, seed=0)
    onnx.checker.check_model(result.model, full_check=True)
    layers = {r["weight"]: r for r in result.report["layers"]}
    assert layers["t.w1"]["nonzeros"] < layers["t.w1"]["params"]
    assert layers["t.w2"]["nonzeros"] < layers["t.w2"]["params"]
    assert_same_outputs(result.model, result.dense_model, rtol=1e-4)


def test_the_unmaskable_note_counts_a_tied_weight_once():
    """Sweep 23: "--neuron-sparsity masked no neuron of 4 of 3 layers" (the two towers' readers of each weight were
    counted as layers, the weights were not)."""
    from onnxprune.passes.neuron_masks import unmaskable_note
    model = EinsumLinear()(einsum_siamese(seed=0), PruneState()).model
    # the towers' readers are tied now (branch chan), not blocked: protect the Sub, so t.w2's two readers stay
    note = unmaskable_note(model, {w.name for w in find_prunable(model).prunable}, protected={"/diff/Sub"})
    assert note is not None and "masked no neuron of 1 of 3 layers" in note and "(+1 more like it)" in note, note


def test_bilinear_equations_are_recognized_and_others_are_not():
    from onnxprune.passes.einsum_linear import bilinear_layout

    def node(eq, w=1):
        ins = ["x", "y"]
        ins.insert(w, "W")
        return helper.make_node("Einsum", ins, ["z"], equation=eq)

    assert bilinear_layout(node("bi,oij,bj->bo"), 1) == ((1, 0, 2), 0)
    assert bilinear_layout(node("bsi,jio,bsj->bso"), 1) == ((1, 2, 0), 0)
    assert bilinear_layout(node("oij,bi,bj->bo", 0), 0) == ((1, 0, 2), 1)
    for eq in ("...i,oij,...j->...o", "bi,oij,bj->ob", "bi,oii,bi->bo", "bi,oij,cj->bo", "bi,oij,bj->boi",
               "bi,oij,bj"):
        assert bilinear_layout(node(eq), 1) is None, eq


def _becomes_a_matmul_weight(model, name: str, dims: tuple) -> onnx.ModelProto:
    """The pass rewrites `model`'s Einsum (full checker before and after, onnxruntime's outputs the same): weight
    `name`, not prunable before, is a prunable MatMul weight of shape `dims`."""
    check_full(model)
    assert name not in {w.name for w in find_prunable(model).prunable}
    rewritten = EinsumLinear()(copy.deepcopy(model), PruneState()).model
    check_full(rewritten)
    assert "Einsum" not in [n.op_type for n in rewritten.graph.node]
    assert_same_outputs(rewritten, model, rtol=1e-5)
    w = next(t for t in rewritten.graph.initializer if t.name == name)
    assert tuple(w.dims) == dims
    assert name in {w.name for w in find_prunable(rewritten).prunable}
    return rewritten


@pytest.mark.parametrize("equation, opset", [("bi,oij,bj->bo", 17), ("bi,jio,bj->bo", 17), ("bi,oij,bj->bo", 12)])
def test_a_bilinear_einsum_weight_is_a_matmul_weight_with_the_same_outputs(equation, opset):
    """Sweep 31: torch's legacy exporter writes `torch.einsum("bi,oij,bj->bo", x, W, y)` as one Einsum; its W was
    "not a weight ... (used by Einsum)". The pass writes it as MatMul(x, W [i, o·j]) -> Reshape -> Mul by y ->
    ReduceSum, W's values under its name, and the pruned model computes what its written weights say."""
    from onnxprune.models.third_party_builders import einsum_bilinear

    model = einsum_bilinear(equation=equation, opset=opset, seed=0)
    _becomes_a_matmul_weight(model, "bilinear.W", (6, 4 * 5))
    onnx.checker.check_model(_half_pruned_computes_its_weights(model, "bilinear.W").model, full_check=True)


def test_a_bilinear_weight_read_twice_or_under_an_ellipsis_is_left_as_it_was():
    from onnxprune.models.third_party_builders import einsum_bilinear
    from onnxprune.passes.einsum_linear import bilinear_layers

    model = einsum_bilinear(equation="...i,oij,...j->...o", seed=0)
    assert bilinear_layers(model) == {}
    model = einsum_bilinear(seed=0)
    model.graph.node.append(helper.make_node("ReduceSum", ["bilinear.W"], ["w_sum"], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("w_sum", onnx.TensorProto.FLOAT, []))
    assert bilinear_layers(model) == {}
    rewritten = EinsumLinear()(copy.deepcopy(model), PruneState()).model
    assert_same_outputs(rewritten, model, rtol=1e-5)


def test_equations_contracting_several_axes_are_recognized_and_others_are_not():
    from onnxprune.passes.einsum_linear import flat_layout

    assert flat_layout(_einsum("nik,oik->no"), 1) == ((1, 2, 0), 1)
    assert flat_layout(_einsum("nik,kio->no"), 1) == ((1, 0, 2), 1)
    assert flat_layout(_einsum("bshd,hdm->bsm"), 1) == ((0, 1, 2), 2)
    assert flat_layout(_einsum("oik,nik->no", 0), 0) == ((1, 2, 0), 1)
    for eq in ("...ik,oik->...o", "nik,oik->on", "nik,oik->nio", "nii,oii->no", "nik,oij->no", "nik,oikn->no",
               "nik,oik->nko", "nk,oik->no"):
        assert flat_layout(_einsum(eq), 1) is None, eq


@pytest.mark.parametrize("equation", ["nik,oik->no", "nik,kio->no"])
def test_an_einsum_contracting_several_axes_is_a_matmul_of_the_flattened_axes_with_the_same_outputs(equation):
    """Sweep 40: a KAN-like layer, `torch.einsum("nik,oik->no", T, W)` with W [32, 64, 4], exported (legacy and
    dynamo) as one Einsum: W was "not a weight ... (used by Einsum)", 14% of the model. The pass writes Reshape(T,
    [0, -1]) -> MatMul(., W [i·k, o]); the pruned model computes what its written weights say, and outputs the Einsum
    no longer feeds (a zero row of W: a dead unit) are removed."""
    from onnxprune.models.third_party_builders import einsum_flat

    model = einsum_flat(equation=equation, seed=0)
    _becomes_a_matmul_weight(model, "kan.W", (6 * 3, 8))
    dead = copy.deepcopy(model)
    t = next(t for t in dead.graph.initializer if t.name == "kan.W")
    values = onnx.numpy_helper.to_array(t).copy()
    values[(slice(0, 2),) if equation.startswith("nik,o") else (Ellipsis, slice(0, 2))] = 0
    t.CopyFrom(onnx.numpy_helper.from_array(values, "kan.W"))
    data = {"input": np.random.default_rng(0).standard_normal((64, 12)).astype(np.float32)}
    result = prune(dead, data=data, sparsity=0.3, seed=0)
    check_full(result.model)
    w = next(t for t in result.model.graph.initializer if t.name == "kan.W")
    assert tuple(w.dims) == (6 * 3, 6)  # the two dead units gone
    assert_same_outputs(result.model, result.dense_model, rtol=1e-4)


def test_equations_with_a_matrix_per_position_are_recognized_and_others_are_not():
    from onnxprune.passes.einsum_linear import grouped_layout

    assert grouped_layout(_einsum("nid,iokd->niok"), 1)[3:] == ("i", "d", "ok")
    assert grouped_layout(_einsum("nid,dio->nio"), 1)[3:] == ("i", "d", "o")
    assert grouped_layout(_einsum("iokd,nid->nkoi", 0), 0)[3:] == ("i", "d", "ok")
    assert grouped_layout(_einsum("nid,kdo->nkio"), 1)[3:] == ("", "d", "ko")  # per-head projections (sweep 45)
    for eq in ("id,iod->io", "nid,ioe->nio", "nid,iod->ni", "nid,od->nio", "...id,iod->...io", "nii,iod->nio",
               "nid,iod->nido", "nid,ido->no", "nid,do->nio"):  # the last three: the linear rules' own
        assert grouped_layout(_einsum(eq), 1) is None, eq


@pytest.mark.parametrize("equation", ["nid,iokd->niok", "nid,dio->nio", "nid,iokd->nkoi", "nid,kdo->nkio"])
def test_an_einsum_with_a_matrix_per_position_is_a_batched_matmul_with_the_same_outputs(equation):
    """Sweep 42: a capsule net's transform `torch.einsum("nid,iokd->niok", u, W)` (W [144, 10, 8, 8], 52% of the
    model; legacy and dynamo) was "not a weight ... (used by Einsum)". The pass writes Transpose -> Reshape [0.., 1,
    |d|] -> MatMul(., W [i, d, o·k]) -> Reshape -> Transpose, W's values under its name; its MACs are one use of each
    weight a sample (not one per group), and the pruned model computes what its written weights say."""
    from onnxprune.models.third_party_builders import einsum_grouped

    model = einsum_grouped(equation=equation, seed=0)
    cols = 3 * (2 if "k" in equation else 1)
    per_head = equation == "nid,kdo->nkio"  # sweep 45: no group axis, one matrix [d, k·o] for every position
    rewritten = _becomes_a_matmul_weight(model, "caps.W", (4, cols) if per_head else (6, 4, cols))
    layer = next(w for w in find_prunable(rewritten).prunable if w.name == "caps.W")
    assert layer.macs == 6 * 4 * cols  # per head too: the one matrix at each of the 6 positions
    _half_pruned_computes_its_weights(model, "caps.W")


def test_a_complex_product_reading_each_weight_twice_is_two_batched_matmuls_with_the_same_outputs():
    """Sweep 48: a Fourier neural operator's spectral weights W_r, W_i [modes, c, d] are each read by two Einsums
    "nmc,mcd->nmd" (the real and the imaginary part of x times W); the rule took a weight read by one Einsum alone, so
    they were "not a weight ... (used by 2 nodes: Einsum)", 86% of the model. Each is now one tied weight stored
    [modes, c, d], both Einsums batched MatMuls of it, the same outputs, and prunable."""
    from onnxprune.models.third_party_builders import einsum_complex
    from onnxprune.passes.einsum_linear import grouped_layers

    model = einsum_complex(seed=0)
    check_full(model)
    assert not {"w_r", "w_i"} & {w.name for w in find_prunable(model).prunable}
    assert {name: len(reads) for name, reads in grouped_layers(model).items()} == {"w_r": 2, "w_i": 2}
    rewritten = _becomes_a_matmul_weight(model, "w_r", (3, 4, 5))
    assert [n.op_type for n in rewritten.graph.node].count("MatMul") == 4
    assert "w_i" in {w.name for w in find_prunable(rewritten).prunable}
    _half_pruned_computes_its_weights(model, "w_r")


def test_dead_lifted_channels_go_with_the_rows_of_every_spectral_matrix():
    """Sweep 48: a Fourier neural operator's lifted channels h [N, L, c] reach its spectral weights W_r, W_i [modes, c,
    d] through the DFT's constant MatMuls, and every mode's matrix reads channel k by its row k. Dead lifted channels
    were kept ("reads them with a matrix per group"); a channel that is 0 in every sample adds nothing to any group,
    so it goes with row k of every mode's matrix of both weights."""
    from onnxprune.models.third_party_builders import spectral_lift

    model = spectral_lift(seed=0)
    check_full(model)
    for name, axis in (("lift.weight", 1), ("lift.bias", 0)):
        t = next(t for t in model.graph.initializer if t.name == name)
        values = onnx.numpy_helper.to_array(t).copy()
        values[(slice(None),) * axis + ([1, 3],)] = 0  # lifted channels 1 and 3: Relu(0) = 0 in every sample
        t.CopyFrom(onnx.numpy_helper.from_array(values, name))
    data = {"input": np.random.default_rng(0).standard_normal((64, 6, 5)).astype(np.float32)}
    result = prune(model, data=data, sparsity=0.3, seed=0)
    check_full(result.model)
    dims = {t.name: tuple(t.dims) for t in result.model.graph.initializer}
    assert dims["lift.weight"] == (5, 2) and dims["w_r"] == dims["w_i"] == (3, 2, 5)
    assert_same_outputs(result.model, result.dense_model, rtol=1e-4)  # the shrunk model computes the masked one


def _half_pruned_computes_its_weights(model, weight):
    """`--sparsity 0.5` on 64 samples: `weight` half pruned, the file checks, and computes what its weights say."""
    data = {"input": np.random.default_rng(0).standard_normal((64, 12)).astype(np.float32)}
    result = prune(model, data=data, sparsity=0.5, seed=0)
    check_full(result.model)
    layers = {r["weight"]: r for r in result.report["layers"]}
    assert layers[weight]["nonzeros"] <= layers[weight]["params"] // 2 + 1
    assert_same_outputs(result.model, result.dense_model, rtol=1e-4)
    return result


def test_an_einsum_of_one_input_and_several_weights_is_split_into_a_chain_of_steps_the_rules_take():
    from onnxprune.passes.einsum_linear import chain_steps

    node = helper.make_node("Einsum", ["x", "G1", "G2"], ["y"], equation="nij,iak,ajl->nkl")
    assert chain_steps(node, {"G1", "G2"}) == [("G1", "nij,iak->njak"), ("G2", "njak,ajl->nkl")]
    node = helper.make_node("Einsum", ["G1", "x", "G2"], ["y"], equation="iak,nij,ajl->nkl")
    assert chain_steps(node, {"G1", "G2"}) == [("G1", "nij,iak->njak"), ("G2", "njak,ajl->nkl")]
    for inputs, eq, consts in ((["x", "G1", "y"], "nij,iak,naj->nk", {"G1"}),  # two inputs: the bilinear rule's
                               (["x", "G1", "G2"], "...ij,iak,ajl->...kl", {"G1", "G2"}),
                               (["x", "G1", "G2"], "nii,iak,ajl->nkl", {"G1", "G2"}),
                               (["x", "G1"], "nij,iak->njak", {"G1"})):
        assert chain_steps(helper.make_node("Einsum", inputs, ["y"], equation=eq), consts) is None, eq


@pytest.mark.parametrize("equation", ["nij,iak,ajl->nkl", "iak,nij,ajl->nkl"])
def test_a_tensor_train_einsum_reading_two_cores_is_a_chain_of_matmuls_with_the_same_outputs(equation):
    """Sweep 54: a tensor-train layer, `torch.einsum("nij,iak,ajl->nkl", x, G1, G2)` (legacy and dynamo: one Einsum
    of the input and both cores), left its cores, 79% of the model, "not a weight ... (used by Einsum)". The pass
    writes the Einsum as the chain x·G1 then ·G2, each step a MatMul the per-position rule writes, so both cores are
    prunable MatMul weights; the outputs are the same and the pruned model computes what its weights say."""
    from onnxprune.models.third_party_builders import einsum_chain

    model = einsum_chain(equation=equation, seed=0)
    assert "tt.G2" not in {w.name for w in find_prunable(model).prunable}
    rewritten = _becomes_a_matmul_weight(model, "tt.G1", (4, 2 * 3))
    assert tuple(next(t for t in rewritten.graph.initializer if t.name == "tt.G2").dims) == (3 * 2, 2)
    assert {"tt.G1", "tt.G2"} <= {w.name for w in find_prunable(rewritten).prunable}
    for weight in ("tt.G1", "tt.G2"):
        _half_pruned_computes_its_weights(model, weight)


def test_a_core_another_node_also_reads_leaves_the_tensor_train_einsum_as_it_was():
    from onnxprune.models.third_party_builders import einsum_chain

    model = einsum_chain(seed=0)
    model.graph.node.append(helper.make_node("ReduceSum", ["tt.G2"], ["g2_sum"], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("g2_sum", onnx.TensorProto.FLOAT, []))
    rewritten = EinsumLinear()(copy.deepcopy(model), PruneState()).model
    assert [n.op_type for n in rewritten.graph.node].count("Einsum") == 1
    assert_same_outputs(rewritten, model, rtol=1e-5)
