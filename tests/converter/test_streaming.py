"""The streamed one-shot path: a model with external data pruned tensor by tensor gives the in-memory result."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxprune.converter import streaming
from onnxprune.converter.cli import cli
from onnxprune.converter.pipeline import configure, run
from onnxprune.errors import ConfigError, ModelError
from onnxprune.models.large import mlp_stack_params, write_mlp_stack
from onnxprune.passes.magnitude import sparsity_mask
from tests.oracle import assert_same_outputs, zero_weights


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "in" / "stack.onnx"
    path.parent.mkdir()
    nbytes = write_mlp_stack(path, hidden=32, ffn=96, blocks=3, seed=4, rows=7)
    return path, nbytes


def _arrays(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_builder_writes_external_data_one_tensor_at_a_time(stack):
    path, nbytes = stack
    model = onnx.load(str(path), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) == 6 and streaming.external_bytes(path) == 6 * 32 * 96 * 4 <= nbytes
    onnx.checker.check_model(str(path), full_check=True)
    arrays = _arrays(path)
    assert sum(a.size for a in arrays.values()) == mlp_stack_params(32, 96, 3)


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_streamed_equals_in_memory_pruning_and_its_masking_oracle(stack, tmp_path, sparsity):
    path, _ = stack
    out = tmp_path / "out.onnx"
    report = streaming.prune_file(path, out, configure(sparsity=sparsity))
    onnx.checker.check_model(str(out), full_check=True)
    streamed, original = _arrays(out), _arrays(path)
    assert streamed.keys() == original.keys()
    in_memory = run(str(path), configure(sparsity=sparsity, sparse_format="dense", neurons=False)).model
    for t in in_memory.graph.initializer:
        np.testing.assert_array_equal(streamed[t.name], numpy_helper.to_array(t), err_msg=t.name)
    weights = [n for n in original if n.endswith(".weight")]
    masks = {n: sparsity_mask(original[n], sparsity) for n in weights}
    for n in weights:
        assert int((streamed[n] != 0).sum()) == round((1 - sparsity) * original[n].size), n
    for n in set(original) - set(weights):  # biases are copied through, bit for bit
        np.testing.assert_array_equal(streamed[n], original[n], err_msg=n)
    oracle = zero_weights(onnx.load(str(path)), masks)
    assert_same_outputs(onnx.load(str(out)), oracle, rtol=1e-5)
    assert report["after"]["density"] == pytest.approx(1 - sparsity, abs=1e-3)
    assert report["bytes_written"] == out.stat().st_size + (tmp_path / "out.onnx.data").stat().st_size
    assert set(report["output_change"]) == {"y"} and report["output_change"]["y"] > 0


def test_quality_targets_and_excluded_layers(stack, tmp_path):
    path, _ = stack
    out = tmp_path / "q.onnx"
    streaming.prune_file(path, out, configure(quality=0.7, exclude=("blk0/*",)))
    got, original = _arrays(out), _arrays(path)
    np.testing.assert_array_equal(got["blk0.up.weight"], original["blk0.up.weight"])
    w = original["blk1.down.weight"]
    threshold = 0.7 * np.std(w.astype(np.float64))
    np.testing.assert_array_equal(got["blk1.down.weight"], np.where(np.abs(w) > threshold, w, 0))


def test_cli_streams_large_external_data_and_writes_report_json(stack, tmp_path, monkeypatch):
    path, _ = stack
    monkeypatch.setattr(streaming, "STREAM_BYTES", 1024)
    out, report_dir = tmp_path / "cli.onnx", tmp_path / "rep"
    res = CliRunner().invoke(cli, ["prune", str(path), "-o", str(out), "--sparsity", "0.5", "--json",
                                   "--report", str(report_dir)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["streamed"] and report["after"]["density"] == pytest.approx(0.5, abs=1e-3)
    assert json.loads((report_dir / "report.json").read_text())["bytes_written"] == report["bytes_written"]
    assert (tmp_path / "cli.onnx.data").is_file()


def test_small_or_retrained_runs_stay_in_memory(stack):
    path, _ = stack
    assert not streaming.applies(path, configure(sparsity=0.5))  # 73 KB < STREAM_BYTES
    assert streaming.applies(path, configure(sparsity=0.5), threshold=1024)
    assert not streaming.applies(path, configure(sparsity=0.5, iterations=1, data="random"), threshold=1024)


def test_truncated_external_data_is_a_model_error(stack, tmp_path):
    path, _ = stack
    data = path.parent / "stack.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ModelError, match="truncated"):
        streaming.prune_file(path, tmp_path / "t.onnx", configure(sparsity=0.5))
    assert not (tmp_path / "t.onnx").exists() and not (tmp_path / "t.onnx.data").exists()


def test_output_never_overwrites_the_input(stack):
    path, _ = stack
    with pytest.raises(ConfigError, match="input"):
        streaming.prune_file(path, path, configure(sparsity=0.5))


def test_streamed_verification_draws_random_inputs_at_a_size_the_model_runs(tmp_path, monkeypatch):
    from onnxprune.models import third_party_builders as tb

    path = tmp_path / "det.onnx"
    onnx.save(tb.strided_detector(), path, save_as_external_data=True, location="det.onnx.data", size_threshold=0)
    monkeypatch.setattr(streaming, "STREAM_BYTES", 64)
    out = tmp_path / "out.onnx"
    report = streaming.prune_file(path, out, configure(sparsity=0.5))
    assert [n for n in report["notes"] if n.startswith("random inputs are drawn at 'image' [N, 3, 32, 32]")]
    assert set(report["output_change"]) == {"scores"} and np.isfinite(report["output_change"]["scores"])


@pytest.mark.parametrize("stop", ["verification", "interrupt"])
def test_an_output_is_in_place_only_once_onnxruntime_has_checked_it(stack, tmp_path, monkeypatch, stop):
    """Sweep 15: the streamed path renamed OUTPUT and OUTPUT.data into place before onnxruntime ran them, so an
    interrupt during verification left a new, unchecked output behind an exit 1 ("nothing was written"). Written
    and verified in a staging folder now: a failure or an interrupt there leaves the previous output as it was and
    no staging folder."""
    path, _ = stack
    out = tmp_path / "out.onnx"
    streaming.prune_file(path, out, configure(sparsity=0.5))
    before = (out.read_bytes(), (tmp_path / "out.onnx.data").read_bytes())

    def fail(source, output, *a, **k):
        assert output != out and output.parent.name.startswith(".out.onnx.")  # checked where it was staged
        raise KeyboardInterrupt if stop == "interrupt" else streaming.ParityError("outputs differ")

    monkeypatch.setattr(streaming, "_run_both", fail)
    with pytest.raises(KeyboardInterrupt if stop == "interrupt" else streaming.ParityError):
        streaming.prune_file(path, out, configure(sparsity=0.9))
    assert (out.read_bytes(), (tmp_path / "out.onnx.data").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.onnx", "out.onnx.data"]


def test_a_full_disk_on_the_streamed_path_is_the_documented_error(stack, tmp_path, monkeypatch):
    """Sweep 15: "internal error (OSError: [Errno 28] ...)"; now the write error every path gives (exit 2)."""
    path, _ = stack

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(streaming, "_write_tensor", full)
    with pytest.raises(ConfigError, match="cannot be written \\(No space left on device\\); choose another -o"):
        streaming.prune_file(path, tmp_path / "full.onnx", configure(sparsity=0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
