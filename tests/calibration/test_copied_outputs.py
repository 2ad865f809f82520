"""An output a Concat makes of a graph input and a computed part (a decoder's present.* = its past as fed, then the
new keys/values) is scored on its computed part only: the copied part is equal in every model, and scored it
diluted the new positions' error by the past's length (sweep 25: a GPT-2 fed a 20-token past claimed 0.61 pp where
its 8 new positions moved 1.07% on held-out data)."""

import numpy as np
import onnx
import pytest

from onnxprune.calibration.metrics import Evaluator, copied_parts
from onnxprune.calibration.readers import open_data
from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.converter.auto.exam import EvaluatorSlice
from onnxprune.models import third_party_builders as tb
from tests.oracle import with_initializer


def _evaluator(model, feed):
    return Evaluator(open_data(feed, model, batch_size=16), {"logits": "seq_agreement", "present_value": "rel_l2"},
                     model)


def _moved(model, factor: float) -> onnx.ModelProto:
    return with_initializer(model, "v_proj.weight", lambda w: w * factor)


def test_the_concat_of_a_fed_past_is_found_through_a_one_input_concat():
    model = tb.cached_decoder()
    assert copied_parts(model, ["logits", "present_value"]) == {1: (-2, ["past_value", None])}
    assert copied_parts(tb.masked_encoder(), ["last_hidden_state", "sentence_embedding"]) == {}


@pytest.mark.parametrize("past", [12, 0])
def test_the_new_values_alone_are_scored_by_the_evaluator_and_the_rule(past):
    model, feed = tb.cached_decoder(), tb.cached_decoder_feed(past=past)
    ev = _evaluator(model, feed)
    assert all(ev.crops) == (past > 0), "every batch crops the present output, unless its past is empty"
    candidate = _moved(model, 1.05)  # every new value 5% larger: a relative L2 error of exactly 0.05 a sample
    ev.evaluate(candidate)  # onnxruntime runs the candidate
    assert 100 * (1 - ev.last["present_value"]["after"]) == pytest.approx(5.0, rel=1e-4)
    rule = BudgetRule(ev, 1.0)
    values = rule.values(list(ev.run_all(candidate)))
    assert 100 * values[1][:, 0].mean() == pytest.approx(5.0, rel=1e-4)  # the rule reads the same samples
    half = EvaluatorSlice(ev, [0, 2])  # an exam's slice maps its batches to the evaluator's
    assert 100 * BudgetRule(half, 1.0).values(list(half.run_all(candidate)))[1][:, 0].mean() == pytest.approx(5.0,
                                                                                                 rel=1e-4)
    said = rule.statement()
    assert ("'present_value' scored on their new part only: the part that copies 'past_value' as fed" in said) == (past > 0)


def test_scored_whole_the_past_would_have_hidden_the_change():
    """The figure the whole tensor gives (what was scored before) is the new part's diluted by the past."""
    model, feed = tb.cached_decoder(), tb.cached_decoder_feed()
    ev = _evaluator(model, feed)
    candidate = _moved(model, 1.05)
    ref = list(ev.run_all(model))
    got = list(ev.run_all(candidate))
    whole = np.mean([np.linalg.norm((g[1] - r[1]).reshape(len(r[1]), -1), axis=1)
                     / np.linalg.norm(r[1].reshape(len(r[1]), -1), axis=1) for g, r in zip(got, ref)])
    assert whole < 0.03  # 12 copied positions beside 3 new ones
    ev.evaluate(candidate)
    assert 1 - ev.last["present_value"]["after"] == pytest.approx(0.05, rel=1e-4)


def test_a_candidate_of_another_length_is_scored_as_it_is():
    model, feed = tb.cached_decoder(), tb.cached_decoder_feed()
    ev = _evaluator(model, feed)
    value = np.zeros((16, 2, 20, 4), np.float32)  # not the dense model's 15 positions
    assert ev.cropped(1, value, ev.crop(0)).shape == value.shape
    assert ev.cropped(1, np.zeros((16, 2, 15, 4), np.float32), ev.crop(0)).shape == (16, 2, 3, 4)


def test_an_onnx_attentions_present_is_scored_on_its_new_part_as_a_concats_is():
    """Sweep 44: ai.onnx Attention (opset 23) makes present_key/present_value of its past_key/past_value input and
    the new keys/values itself, with no Concat in the graph: they were scored whole, the fed past diluting the new
    part's error. Found as a Concat's: with every new value 5% larger, present_value loses exactly 5 pp; the past's
    length in each feed decides the cut."""
    model = tb.attention_cache_decoder()
    onnx.checker.check_model(model, full_check=True)
    assert copied_parts(model, ["logits", "present_key", "present_value"]) == {1: (-2, ["past_key", None]),
                                                                              2: (-2, ["past_value", None])}
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((64, 3, 8)).astype(np.float32),
            "past_key": rng.standard_normal((64, 2, 12, 4)).astype(np.float32),
            "past_value": rng.standard_normal((64, 2, 12, 4)).astype(np.float32)}
    ev = Evaluator(open_data(feed, model, batch_size=16), {"logits": "seq_agreement", "present_key": "rel_l2",
                                                           "present_value": "rel_l2"}, model)
    assert all(ev.crops)
    candidate = with_initializer(model, "v_proj.weight", lambda w: w * 1.05)  # onnxruntime runs it
    ev.evaluate(candidate)
    assert 100 * (1 - ev.last["present_value"]["after"]) == pytest.approx(5.0, rel=1e-4)
    assert ev.last["present_key"]["after"] == pytest.approx(1.0)


def test_a_stacked_cache_with_the_batch_on_axis_1_is_scored_on_its_new_part():
    """Decoders 54: a decoder step that stacks every layer's cache into one input (torch.stack: 'cache' [2L, N, H, P,
    D] -> 'new_cache' [2L, N, H, P + 1, D], a Concat of Unsqueezes of each layer's Concat(Gather(cache, j), new))
    was scored whole: its held-out figure 0.69 pp where its new part moved 2.45 pp. Found as a Concat's: with every
    new entry 5% larger, new_cache loses exactly 5 pp, its samples on axis 1."""
    model = tb.stacked_cache_step()
    onnx.checker.check_model(model, full_check=True)
    assert copied_parts(model, ["probs", "new_cache"]) == {1: (2, ["cache", None])}
    rng = np.random.default_rng(0)
    feed = {"token": rng.integers(0, 12, 64).astype(np.int64),
            "cache": rng.standard_normal((2, 64, 12, 4)).astype(np.float32)}
    ev = Evaluator(open_data(feed, model), {"probs": "prob", "new_cache": "rel_l2"}, model)
    assert all(ev.crops)
    candidate = with_initializer(with_initializer(model, "k0.weight", lambda w: w * 1.05), "k1.weight",
                                 lambda w: w * 1.05)  # onnxruntime runs it
    ev.evaluate(candidate)
    assert 100 * (1 - ev.last["new_cache"]["after"]) == pytest.approx(5.0, rel=1e-4)
    assert "'new_cache' scored on their new part only: the part that copies 'cache'" in BudgetRule(ev, 1.0).statement()


def test_a_stack_of_caches_read_out_of_order_is_scored_whole():
    model = tb.stacked_cache_step()
    swapped = onnx.ModelProto()
    swapped.CopyFrom(model)
    for t in swapped.graph.initializer:  # layer 0 reads the cache's slice 1: its first P positions are not slice 0
        if t.name in ("layer0", "layer1"):
            t.CopyFrom(onnx.numpy_helper.from_array(np.array(1 - int(t.name[-1]), np.int64), t.name))
    assert copied_parts(swapped, ["probs", "new_cache"]) == {}


@pytest.mark.parametrize("cached", [True, False])
def test_a_merged_decoders_present_is_scored_on_its_new_part_where_its_branch_copies_the_past(cached):
    """Decoders 54: Hugging Face optimum's merged decoder (If on use_cache_branch over the with-past and the no-past
    graphs) was scored whole, its present.* If outputs: at 1.12x its held-out present.0.value moved 0.93 pp whole and
    3.69 pp on its new part. Found in the branch that Concats the fed past; cut only where the output holds the past
    as fed: the no-past branch, fed optimum's dummy past of length 1, is scored whole (all of it is new)."""
    model = tb.merged_cache_decoder()
    onnx.checker.check_model(model, full_check=True)
    assert copied_parts(model, ["logits", "present_value"]) == {1: (-2, ["past_value", None])}
    feed = {**tb.cached_decoder_feed(past=12 if cached else 1), "use_cache_branch": np.array([cached])}
    ev = Evaluator(open_data(feed, model, batch_size=16), {"logits": "seq_agreement", "present_value": "rel_l2"},
                   model)
    assert any(ev.crops) == cached
    ev.evaluate(_moved(model, 1.05))  # every new value 5% larger, in both branches; onnxruntime runs it
    assert 100 * (1 - ev.last["present_value"]["after"]) == pytest.approx(5.0, rel=1e-4)


@pytest.mark.parametrize("inverted", [False, True])
def test_an_input_blended_in_by_a_mask_is_left_out_so_the_computed_part_is_scored(inverted):
    """Sweep 55: a torch inpainter returns `image * mask + pred * (1 - mask)`; scored whole, its 'output' claimed a
    relative L2 error of 0.74 pp where its holes moved 1.55% held out (the image as fed, equal in every model, sat in
    every denominator). Scored less the blended-in image, its computed part is: with the last layer 5% larger, the
    hole moves by exactly 5% (LaMa's `image * (1 - mask) + pred * mask` alike)."""
    from onnxprune.calibration.metrics import blended_inputs
    model = tb.inpainter(keep_factor="inverted" if inverted else "mask")
    onnx.checker.check_model(model, full_check=True)
    feed = tb.inpainter_feed(inverted=inverted)
    found = blended_inputs(model, ["output"])
    assert list(found) == [0] and found[0][:2] == ("image", "mask") and (found[0][2] is None) == (not inverted)
    ev = Evaluator(open_data(feed, model, batch_size=16), {"output": "rel_l2"}, model)
    assert all(ev.crops) and len(ev.crops) == 4
    candidate = with_initializer(model, "out.weight", lambda w: w * 1.05)
    ev.evaluate(candidate)  # onnxruntime runs the candidate
    assert 100 * (1 - ev.last["output"]["after"]) == pytest.approx(5.0, rel=1e-3)
    rule = BudgetRule(ev, 1.0)
    values = rule.values(list(ev.run_all(candidate)))
    assert 100 * values[0][:, 0].mean() == pytest.approx(5.0, rel=1e-3)
    half = EvaluatorSlice(ev, [1, 3])  # an exam's slice maps its batches to the evaluator's
    assert 100 * BudgetRule(half, 1.0).values(list(half.run_all(candidate)))[0][:, 0].mean() == pytest.approx(
        5.0, rel=1e-3)
    assert "'output' scored on its computed part only: the input 'image' it blends in by" in rule.statement()
    # the whole output's figure, what was scored before, is far below: 9 hole pixels of 64
    ref, got = list(ev.run_all(model)), list(ev.run_all(candidate))
    whole = np.mean([np.linalg.norm((g[0] - r[0]).reshape(len(r[0]), -1), axis=1)
                     / np.linalg.norm(r[0].reshape(len(r[0]), -1), axis=1) for g, r in zip(got, ref)])
    assert whole < 0.03


def test_a_product_of_two_inputs_without_its_complement_is_no_blend():
    """An input multiplied by a computed factor (image * pred + pred * (1 - mask)), or by a mask whose complement
    does not weigh the computed part, keeps the whole output scored."""
    from onnxprune.calibration.metrics import blended_inputs
    model = tb.inpainter()
    copy = next(n for n in model.graph.node if n.op_type == "Mul" and "image" in n.input)
    pred = next(n for n in model.graph.node if n.op_type == "Conv" and "out.weight" in n.input).output[0]
    copy.input[1] = pred  # image * pred: nothing of the image is copied as fed
    assert blended_inputs(model, ["output"]) == {}
    model = tb.inpainter()
    fill = next(n for n in model.graph.node if n.op_type == "Mul" and "image" not in n.input)
    fill.input[1] = "mask"  # image * mask + pred * mask: the image's part is not the complement of pred's
    assert blended_inputs(model, ["output"]) == {}
    assert blended_inputs(tb.cached_decoder(), ["logits", "present_value"]) == {}
