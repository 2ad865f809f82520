"""Masked retraining through the torch bridge of models whose weights hide in If branches, LSTM/GRU nodes, a Loop's
loop-carried inputs, a while loop's body and a Gather weight bank: the masks hold, the loss goes down, the pruned
model gets closer to the dense one, and the written model is valid and computes what the module computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onnxprune.converter.finetune import MaskedTrainer
from onnxprune.models import builders_control as bc
from onnxprune.passes.magnitude import sparsity_mask
from onnxprune.passes.weights import find_prunable, weight_array
from tests.oracle import check_full, run, zero_weights

MODELS = {
    "lstm": lambda: bc.lstm_classifier(seed=0),
    "gru_bidirectional": lambda: bc.gru_classifier(bidirectional=True, initial_state=True, seed=0),
    "if_network": lambda: bc.if_network(seed=0),
    "gather_bank": lambda: bc.gather_bank(seed=0),
    "expert_bank": lambda: bc.expert_bank(seed=0),
    "while_rnn": lambda: bc.while_rnn(seed=0),
    "while_residual": lambda: bc.while_residual(seed=0),  # no trip count: torch's while_loop (session 56)
}


def inputs(model, n, seed, shift=0.7):
    """Shifted up: the If models take their then branch and the bank model bank 1 on every batch, whatever the
    batching (the choice is made per batch, so the teacher and the student must see the same one)."""
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    return np.random.default_rng(seed).standard_normal((n, *dims)).astype(np.float32) + np.float32(shift)


def rel_error(model, dense, x):
    """Relative L2 distance of the outputs to the dense model's, in batches of 8."""
    num = den = 0.0
    for k in range(0, len(x), 8):
        got, want = run(model, {"input": x[k:k + 8]})["output"], run(dense, {"input": x[k:k + 8]})["output"]
        num += float(np.sum((got - want) ** 2))
        den += float(np.sum(want ** 2))
    return (num / den) ** 0.5


@pytest.mark.parametrize("name", sorted(MODELS))
def test_retraining_lowers_the_loss_and_the_masks_hold(name):
    torch.manual_seed(0)
    dense = MODELS[name]()
    masks = {w.name: sparsity_mask(weight_array(dense, w.name), 0.8) for w in find_prunable(dense).prunable}
    x_train, x_test = inputs(dense, 256, 1), inputs(dense, 64, 2)
    one_shot = zero_weights(dense, masks)
    trainer = MaskedTrainer(dense, masks, (x_train, None), device="cpu", seed=0)
    assert set(masks) <= set(trainer.params), "every masked weight trains (body constants moved out)"
    stats = trainer.train(4, 0.02, batch_size=8)
    assert stats.objective == "distill"
    assert stats.epoch_losses[-1] < 0.9 * stats.epoch_losses[0], stats.epoch_losses
    out = trainer.export()
    check_full(out)
    for w, mask in masks.items():
        values = weight_array(out, w)
        assert not values[~mask].any(), f"'{w}': a pruned weight came back"
        if w != "else.fc2.weight":  # the else branch never runs on this data: no gradient reaches it
            assert not np.array_equal(values[mask], weight_array(dense, w)[mask]), f"'{w}' did not train"
    assert rel_error(out, dense, x_test) < rel_error(one_shot, dense, x_test)
    module = trainer.module.eval()
    for k in (0, 8):  # the written model computes what the module computes
        feed = x_test[k:k + 8]
        with torch.no_grad():
            got = module(torch.from_numpy(feed))[0].numpy()
        np.testing.assert_allclose(got, run(out, {"input": feed})["output"], rtol=1e-4, atol=1e-5)


def test_recurrent_gradients_reach_W_R_and_the_bias():
    dense = bc.lstm_classifier(seed=3)
    masks = {w.name: np.ones(w.shape, bool) for w in find_prunable(dense).prunable}
    trainer = MaskedTrainer(dense, masks, (inputs(dense, 16, 0), None), device="cpu")
    assert {"lstm.W", "lstm.R", "lstm.B"} <= set(trainer.module.onnx_parameters())
    out = trainer.module(torch.from_numpy(inputs(dense, 4, 5)))[0]
    out.square().sum().backward()
    for name in ("lstm.W", "lstm.R", "lstm.B"):
        grad = trainer.module.onnx_parameters()[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
