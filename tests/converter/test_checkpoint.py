"""--resume: an interrupted retraining run continued from its checkpoint ends exactly where an uninterrupted one
would (same seed, same machine)."""

import numpy as np
import pytest

from onnxprune.converter.checkpoint import Checkpoints
from onnxprune.errors import ConfigError, PassError
from onnxprune.converter.pipeline import configure, run
from tests.converter._data import self_labelled


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def setup():
    return self_labelled(hidden=(32, 16), model_seed=5, n=96, data_seed=1)


def _options(data, folder, **kw):
    base = dict(sparsity=0.8, data=data, iterations=3, epochs=1, lr=0.01, final_epochs=1, seed=3,
                train_batch_size=32, checkpoint_dir=str(folder))
    base.update(kw)
    if base.get("max_loss") is not None:  # the budget chooses the sparsities from a (short) scan
        base.update(sparsity=None, levels=(0.5, 0.8))
    return configure(**base)


@pytest.mark.parametrize("budget, neurons", [(None, 0.0), (100.0, 0.0), (None, 0.5), (100.0, 0.5)])
def test_resume_after_an_interruption_gives_the_same_bytes(setup, tmp_path, monkeypatch, budget, neurons):
    model, data = setup
    whole = run(model, _options(data, tmp_path / "a", max_loss=budget, neuron_sparsity=neurons))

    saved = Checkpoints.save
    calls = {"n": 0}

    def save_then_die(self, *a, **k):
        saved(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Stop  # as if killed right after round 2 was checkpointed

    monkeypatch.setattr(Checkpoints, "save", save_then_die)
    with pytest.raises(PassError, match=r"step '(retrain|budget-search)' failed after \[load, inventory") as died:
        run(model, _options(data, tmp_path / "b", max_loss=budget, neuron_sparsity=neurons))
    assert isinstance(died.value.__cause__, Stop)  # the runner names the step and keeps the cause
    monkeypatch.setattr(Checkpoints, "save", saved)
    assert (tmp_path / "b" / "state.json").exists()
    resumed = run(model, _options(data, tmp_path / "b", max_loss=budget, neuron_sparsity=neurons, resume=True))
    assert resumed.model.SerializeToString() == whole.model.SerializeToString()
    assert [h["round"] for h in resumed.history] == [h["round"] for h in whole.history]
    if neurons:
        assert whole.report["neurons"]["layers"]["fc1.weight"]["after"] <= 16


def test_a_checkpoint_of_another_run_is_refused(setup, tmp_path):
    model, data = setup
    run(model, _options(data, tmp_path / "c", iterations=1, final_epochs=0))
    with pytest.raises(ConfigError, match="another model or other options"):
        run(model, _options(data, tmp_path / "c", iterations=1, final_epochs=0, lr=0.02, resume=True))


def test_cli_removes_checkpoints_after_success_and_resume_needs_iterations(setup, tmp_path):
    import onnx
    from click.testing import CliRunner

    from onnxprune.converter.cli import cli

    model, data = setup
    mpath, dpath, out = tmp_path / "m.onnx", tmp_path / "d.npz", tmp_path / "o.onnx"
    onnx.save(model, mpath)
    np.savez(dpath, **data)
    res = CliRunner().invoke(cli, ["prune", str(mpath), "-o", str(out), "--sparsity", "0.8", "--data", str(dpath),
                                   "--iterations", "2", "--epochs", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert out.exists() and not (tmp_path / "o.onnx.ckpt").exists()
    res = CliRunner().invoke(cli, ["prune", str(mpath), "-o", str(out), "--sparsity", "0.8", "--resume"])
    assert res.exit_code == 2 and "no --iterations" in res.output


def test_an_interrupted_cli_run_says_where_its_checkpoints_are(setup, tmp_path, monkeypatch):
    """CI audit: an interrupted --iterations run left 'o.onnx.ckpt/' and said only 'Aborted!'."""
    import onnx
    from click.testing import CliRunner

    from onnxprune.converter.cli import cli

    model, data = setup
    mpath, dpath, out = tmp_path / "m.onnx", tmp_path / "d.npz", tmp_path / "o.onnx"
    onnx.save(model, mpath)
    np.savez(dpath, **data)
    saved = Checkpoints.save

    def save_then_interrupt(self, *a, **k):
        saved(self, *a, **k)
        raise KeyboardInterrupt  # Ctrl-C right after the first round was checkpointed

    monkeypatch.setattr(Checkpoints, "save", save_then_interrupt)
    res = CliRunner().invoke(cli, ["prune", str(mpath), "-o", str(out), "--sparsity", "0.8", "--data", str(dpath),
                                   "--iterations", "2", "--epochs", "1", "-q"])
    assert res.exit_code == 130 and not out.exists()  # 128 + SIGINT (CI build-step audit; it was 1)
    assert f"checkpoints are kept in '{out}.ckpt'" in res.output and "--resume" in res.output
