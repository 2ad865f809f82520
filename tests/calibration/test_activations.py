import numpy as np
from onnx import numpy_helper

from onnxprune.calibration.activations import activation_densities, activation_density, activation_tensors
from onnxprune.calibration.readers import open_data
from onnxprune.models import builders
from onnxprune.passes.weights import find_prunable


def test_act_is_measured_after_the_relu_and_matches_numpy():
    model = builders.mlp_gemm(in_features=8, hidden=(16,), out_features=4, seed=1)
    inv = find_prunable(model)
    tensors = activation_tensors(model, inv)
    relu_out = next(n.output[0] for n in model.graph.node if n.op_type == "Relu")
    assert tensors[inv.prunable[0].name] == relu_out
    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    act = activation_density(model, inv, open_data({"input": x}, model, batch_size=8))
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    first = inv.prunable[0]
    bias = next(n.input[2] for n in model.graph.node if n.name == first.node)
    hidden = np.maximum(x @ w[first.name].T + w[bias], 0)
    assert abs(act[first.name] - np.count_nonzero(hidden) / hidden.size) < 1e-12
    assert act[inv.prunable[-1].name] == 1.0  # logits: no Relu


def test_zeroed_rows_show_up_as_dead_activations():
    model = builders.mlp_gemm(in_features=8, hidden=(16,), out_features=4, seed=2)
    inv = find_prunable(model)
    first = inv.prunable[0].name
    for t in model.graph.initializer:
        if t.name == first or t.name.endswith("bias") and numpy_helper.to_array(t).shape == (16,):
            a = numpy_helper.to_array(t).copy()
            a[:8] = 0 if a.ndim == 1 else 0.0
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    act = activation_density(model, inv, open_data({"input": x}, model, batch_size=8))
    assert act[first] <= 0.5


def test_act_of_a_recurrent_node_whose_optional_y_output_is_omitted_reads_y_h():
    # exporters leave GRU/LSTM's first output Y unnamed ("") when only Y_h is used; exposing "" as a graph
    # output made onnxruntime refuse the probe model (the measure step then failed after a verified conversion)
    from onnxprune.models import builders_control

    for build in (builders_control.gru_classifier, builders_control.lstm_classifier):
        model = build(features=4, hidden=6, steps=3, out_features=2, seed=3, sequence_output=False)
        inv = find_prunable(model)
        rec = next(n for n in model.graph.node if n.op_type in ("GRU", "LSTM"))
        assert rec.output[0] == ""
        tensors = activation_tensors(model, inv)
        assert tensors[rec.input[1]] == "Y_h" and "" not in tensors.values()
        x = np.random.default_rng(0).standard_normal((8, 3, 4)).astype(np.float32)
        act = activation_density(model, inv, open_data({"input": x}, model, batch_size=4))
        assert 0.0 < act[rec.input[1]] <= 1.0


def test_a_run_reads_act_percent_on_at_most_the_batches_holding_128_samples(monkeypatch):
    """Act% is information: a run reads it on the batches of --batch-size that hold ACTIVATION_SAMPLES (and at most
    ACTIVATION_BATCHES), both models on the same ones."""
    from onnxprune.calibration import activations
    from onnxprune.converter.pipeline import configure, run

    model = builders.mlp_gemm(in_features=12, hidden=(16,), out_features=5)
    x = np.random.default_rng(0).standard_normal((300, 12)).astype(np.float32)
    read = []
    real = activations.activation_densities

    def counted(models, inventory, reader, *, max_batches=8, more=None):
        read.append((len(models), max_batches))
        return real(models, inventory, reader, max_batches=max_batches, more=more)

    monkeypatch.setattr(activations, "activation_densities", counted)
    for batch_size, expected in ((64, 2), (8, 8), (200, 1)):
        read.clear()
        result = run(model, configure(sparsity=0.5, data={"input": x}, batch_size=batch_size))
        assert read == [(2, expected)], batch_size
        assert all(v is not None for v in result.report["act"].values())


def test_act_percent_reads_no_batch_after_the_first_that_would_pass_its_seconds(monkeypatch):
    """Act% is information, bounded in time with or without a deadline: another batch is read only while the
    batches read and one more at the last one's pace stay within ACTIVATION_SECONDS (a heavy model's 8 batches
    through both models cost as much as its measurement)."""
    from onnxprune.calibration import activations
    from onnxprune.converter.pipeline import configure, run
    from onnxprune.converter.steps import verify

    model = builders.mlp_gemm(in_features=12, hidden=(16,), out_features=5)
    x = np.random.default_rng(0).standard_normal((300, 12)).astype(np.float32)
    read = []
    real = activations.activation_densities

    def counted(models, inventory, reader, *, max_batches=8, more=None):
        def told(seconds):
            read.append(seconds)
            return more is None or more(seconds)

        return real(models, inventory, reader, max_batches=max_batches, more=told)

    monkeypatch.setattr(activations, "activation_densities", counted)
    for seconds, batches in ((0.0, 1), (3600.0, 8)):
        monkeypatch.setattr(verify, "ACTIVATION_SECONDS", seconds)
        read.clear()
        result = run(model, configure(sparsity=0.5, data={"input": x}, batch_size=8))
        assert len(read) == batches, seconds
        assert all(v is not None for v in result.report["act"].values())
    # what was read: the written (pruned) model's Act% on the first batch alone
    monkeypatch.setattr(verify, "ACTIVATION_SECONDS", 0.0)
    capped = run(model, configure(sparsity=0.5, data={"input": x}, batch_size=8))
    first = activation_density(capped.dense_model, find_prunable(model), open_data({"input": x}, model, batch_size=8),
                               max_batches=1)
    assert capped.report["act"] == first != result.report["act"]


def test_act_of_several_models_reads_the_same_batches_and_stops_when_told():
    """Under a deadline the measure step reads Act% batch by batch and stops when the last batch says another would
    not fit (`more`); every model has read the same batches, and what was read equals a run capped there."""
    model = builders.mlp_gemm(in_features=8, hidden=(16,), out_features=4, seed=1)
    other = builders.mlp_gemm(in_features=8, hidden=(16,), out_features=4, seed=2)
    inv = find_prunable(model)
    x = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    asked = []

    def more(seconds):
        asked.append(seconds)
        return len(asked) < 2  # after the second batch: no time for a third

    a, b = activation_densities([model, other], inv, open_data({"input": x}, model, batch_size=8), max_batches=5,
                                more=more)
    assert len(asked) == 2 and all(s >= 0 for s in asked)
    assert a == activation_density(model, inv, open_data({"input": x}, model, batch_size=8), max_batches=2)
    assert b == activation_density(other, inv, open_data({"input": x}, model, batch_size=8), max_batches=2)
    assert a != activation_density(model, inv, open_data({"input": x}, model, batch_size=8), max_batches=5)
