import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune.errors import ConfigError
from onnxprune.models import builders
from onnxprune.passes.apply_masks import ApplyMasks
from onnxprune.passes.base import PruneState, run_passes
from onnxprune.passes.magnitude import (
    MagnitudePrune,
    Target,
    quality_for_sparsity,
    quality_mask,
    resolve_targets,
    sparsity_mask,
)
from onnxprune.passes.weights import find_prunable, weight_array
from tests.oracle import assert_same_outputs, check_full, zero_weights


def test_sparsity_mask_removes_exactly_the_smallest_magnitudes():
    w = np.array([[0.5, -0.1, 0.3], [-0.9, 0.05, 0.2]], np.float32)
    keep = sparsity_mask(w, 0.5)
    assert keep.sum() == 3
    assert set(np.abs(w[keep]).tolist()) == {np.float32(0.5), np.float32(0.9), np.float32(0.3)}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.floats(0.0, 0.99), st.integers(0, 2**16))
def test_sparsity_mask_count_is_exact_even_with_ties(n, s, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-3, 4, size=n).astype(np.float32)  # many ties
    keep = sparsity_mask(w, s)
    assert (~keep).sum() == min(int(round(s * n)), n - 1)  # a sparsity under 1 keeps a weight
    if keep.any() and (~keep).any():
        assert np.abs(w[keep]).min() >= np.abs(w[~keep]).max()


def test_quality_rule_threshold_is_q_times_std_and_inverts():
    w = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    keep, thr = quality_mask(w, 1.0)
    assert thr == pytest.approx(np.std(w.astype(np.float64)))
    assert 0.30 < keep.mean() < 0.34  # |N(0,1)| > 1 keeps about 31.7%
    q = quality_for_sparsity(w, 0.9)
    assert abs(quality_mask(w, q)[0].mean() - 0.1) < 0.002


def test_fp16_and_bf16_weights_are_pruned_in_their_own_dtype():
    import ml_dtypes

    for dtype in (np.float16, ml_dtypes.bfloat16):
        w = np.random.default_rng(1).standard_normal((8, 8)).astype(dtype)
        keep = sparsity_mask(w, 0.75)
        assert keep.sum() == 16 and w.dtype == dtype


def test_masks_only_shrink_across_rounds():
    m = builders.mlp_gemm()
    inv = find_prunable(m)
    state = PruneState()
    targets = resolve_targets(inv, sparsity=0.5)
    run_passes([MagnitudePrune(inv, targets), ApplyMasks()], m, state)
    first = {k: v.copy() for k, v in state.masks.items()}
    run_passes([MagnitudePrune(inv, resolve_targets(inv, sparsity=0.8)), ApplyMasks()], m, state)
    for name, mask in state.masks.items():
        assert not (mask & ~first[name]).any()
        assert abs(mask.mean() - 0.2) < 0.01


@pytest.mark.parametrize("name", sorted(builders.BUILDERS))
def test_apply_masks_equals_the_numpy_zeroing_oracle(name):
    original = builders.BUILDERS[name]()
    model = onnx.ModelProto()
    model.CopyFrom(original)
    inv = find_prunable(model)
    state = PruneState()
    result = run_passes([MagnitudePrune(inv, resolve_targets(inv, sparsity=0.7)), ApplyMasks()], model, state)
    assert result.modified
    check_full(result.model)
    for w in inv.prunable:
        assert np.count_nonzero(weight_array(result.model, w.name)) == state.masks[w.name].sum()
    assert_same_outputs(result.model, zero_weights(original, state.masks))


def test_layer_overrides_exclude_and_unknown_pattern():
    inv = find_prunable(builders.mlp_gemm())
    names = [w.name for w in inv.prunable]
    targets = resolve_targets(inv, sparsity=0.5, layers={names[0]: 0.9}, exclude=[names[2]])
    assert targets[names[0]] == Target(sparsity=0.9)
    assert targets[names[1]] == Target(sparsity=0.5)
    assert names[2] not in targets
    with pytest.raises(ConfigError, match="matches no prunable layer"):
        resolve_targets(inv, sparsity=0.5, exclude=["nope*"])
    with pytest.raises(ConfigError, match="contradict"):
        resolve_targets(inv, sparsity=0.5, quality=1.0)
    with pytest.raises(ConfigError):
        Target(sparsity=1.5)


@given(values=st.lists(st.integers(0, 5), min_size=1, max_size=60), share=st.floats(0.0, 1.0))
@settings(max_examples=200, deadline=None)
def test_smallest_is_the_head_of_a_stable_sort_even_with_many_ties(values, share):
    from onnxprune.passes.magnitude import smallest

    a = np.array(values, dtype=np.float32)
    n = int(round(share * a.size))
    want = np.zeros(a.size, dtype=bool)
    want[np.argsort(a, kind="stable")[:n]] = True
    np.testing.assert_array_equal(smallest(a, n), want)
