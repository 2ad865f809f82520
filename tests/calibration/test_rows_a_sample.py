"""An output of k rows a sample (skl2onnx's multi-output MLPRegressor: its [N, 3] result as a Reshape to [-1, 1],
declared [N, 1]) has its rows pooled sample by sample when they are one sample's after another's (the figure is the
same): each feed had been pooled into one sample, so the decision rule saw 15 samples where the data held 225
(sweep 24)."""

import numpy as np
import pytest

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.models.third_party_builders import rows_regressor
from tests.oracle import with_initializer


def _feed(n=96, seed=0):
    return {"X": np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)}


def _evaluator(model, n=96):
    return Evaluator(open_data(_feed(n), model, batch_size=32), {"variable": "rel_l2"}, model)


def test_sample_major_rows_are_read_as_one_sample_each():
    model = rows_regressor(seed=0)
    ev = _evaluator(model)
    assert ev.grouped == {0: 3} and ev.sample_axes == (0,) and not ev.whole(0)
    assert [u[0] for u in ev.units] == [32, 32, 32]  # samples, not feeds
    candidate = with_initializer(model, "l2.weight", lambda w: w * np.array([1.0, 1.0, 1.1], np.float32))
    ev.evaluate(candidate)  # onnxruntime runs it
    got = list(ev.run_all(candidate))
    rows = np.concatenate([np.asarray(g[0]) for g in got])[:, 0]
    ref = np.concatenate([np.asarray(r[0]) for r in ev.reference_all])[:, 0]
    scale = np.sqrt(np.mean(ref ** 2))
    per_row = np.abs(rows - ref) / np.maximum(np.abs(ref), 0.1 * scale)  # each row's relative error, as before
    assert 1 - ev.last["variable"]["after"] == pytest.approx(per_row.mean(), rel=1e-5)  # the same figure
    rule = BudgetRule(ev, 1.0)
    assert rule.n == 96
    values = rule.values(got)[0]
    assert values.shape[0] == 96  # one loss a sample: its own 3 rows' mean
    assert values[:, 0] == pytest.approx(per_row.reshape(96, 3).mean(axis=1), rel=1e-5)


def test_target_major_rows_stay_pooled_by_feed():
    ev = _evaluator(rows_regressor(seed=0, sample_major=False))
    assert ev.grouped == {} and ev.whole(0)
    assert BudgetRule(ev, 1.0).n == 3  # one sample a feed, as before: its rows cannot be told apart per sample


def test_the_cli_decides_on_every_sample(tmp_path):
    import onnx

    from tests.hardening.helpers import invoke

    onnx.save(rows_regressor(seed=0), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", **_feed(200))
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--data", tmp_path / "calib.npz",
                 "--max-loss", "1", "--one-shot")
    assert res.exit_code == 0, res.output
    assert "decision samples" in res.output
    assert not any(f"on the {n} decision samples" in res.output for n in range(1, 20)), res.output
