"""Audit 39 (2026-12-06): the first hour with your own model, as a newcomer met it; each defect held here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

from onnxprune.converter.cli import cli
from onnxprune.models import builders

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_images_stored_channels_last_are_told_the_transpose_not_a_reshape(tmp_path):
    """Keras-style images [N, 28, 28, 1] for a model taking [N, 1, 28, 28] were told to "reshape the data to match":
    a reshape keeps the bytes in their order and scrambles every image. The message gives the transpose."""
    model = tmp_path / "m.onnx"
    onnx.save(builders.conv_bn_relu(in_channels=1, size=6), model)
    data = tmp_path / "hwc.npz"
    np.savez(data, input=np.random.default_rng(0).random((20, 6, 6, 1), np.float32))
    r = _run("prune", model, "-o", tmp_path / "o.onnx", "--sparsity", "0.5", "--data", data)
    assert r.exit_code == 1 and "Traceback" not in r.output
    line = " ".join(r.output.split())
    assert "np.transpose(x, (0, 3, 1, 2))" in line and "reshape would scramble" in line
    assert not (tmp_path / "o.onnx").exists()
    flat = tmp_path / "flat.npz"
    np.savez(flat, input=np.zeros((20, 36), np.float32))
    r = _run("prune", model, "-o", tmp_path / "o.onnx", "--sparsity", "0.5", "--data", flat)
    assert r.exit_code == 1 and "reshape the data to match" in r.output


def test_weight_bits_beside_a_budget_on_a_graph_the_bridge_cannot_run_quantizes_without_torch(tmp_path):
    """`--max-loss 1 --weight-bits 4` on a scikit-learn pipeline (the bridge lacks its ArrayFeatureExtractor; here
    ZipMap): the search refit it layer by layer, then the quantize step tried to fine-tune the codebooks through the
    bridge and the run ended in its multi-line refusal ("Skip fine-tuning for this model or add the op to
    converter/bridge/ops/"). The codebooks are k-means ones then, said in a note, and the file is written."""
    from onnxprune.models import third_party_builders

    model = tmp_path / "skl.onnx"
    onnx.save(third_party_builders.sklearn_mlp(), model)
    rng = np.random.default_rng(0)
    data = tmp_path / "calib.npz"
    np.savez(data, input=rng.standard_normal((200, 4)).astype(np.float32), labels=rng.integers(0, 3, 200))
    out = tmp_path / "o.onnx"
    r = _run("prune", model, "-o", out, "--data", data, "--max-loss", "1", "--time-budget", "1m",
             "--weight-bits", "4", "--force")
    assert "Traceback" not in r.output and "Skip fine-tuning" not in r.output, r.output
    assert r.exit_code in (0, 3) and out.exists(), r.output
    line = " ".join(r.output.split())
    assert "--weight-bits 4: codebooks by k-means only, not fine-tuned (the torch bridge cannot run this graph: " \
           "ZipMap x1: no implementation)" in line


def test_readme_tells_a_dynamo_export_to_use_two_samples():
    """README's export snippet gave `(example,)` for both exporters; the dynamo one, given one sample, fixed the
    batch of a small transformer's logits at 1 and the model ran at batch 1 only (the run then failed on stacked
    data). README says to give it 2 or more samples."""
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "give it an `example` of 2 or more samples: it fixes an axis whose example size is 1" in text


def test_a_budget_that_reads_like_a_fraction_is_said_to_be_percentage_points(tmp_path):
    """`--max-loss 0.01` (meant as 1%) kept the input model with "give 9999 samples ... or --max-loss 0.45" and no
    word that the budget is in percentage points; now the line says so once, and what 1% is."""
    from onnxprune.converter.auto.decide import fraction_hint

    model = tmp_path / "m.onnx"
    onnx.save(builders.mlp_gemm(), model)
    data = tmp_path / "calib.npz"
    np.savez(data, input=np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32))
    r = _run("prune", model, "-o", tmp_path / "o.onnx", "--data", data, "--max-loss", "0.01", "--time-budget", "1m")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    text = " ".join(r.output.split())
    hint = "--max-loss is in percentage points, not a fraction: 0.01 is 0.01 pp (if you meant 1%, pass --max-loss 1)"
    assert hint in text and "so the input model is kept" in text
    assert text.count(hint) == 2  # the warning as it happens and its note in the summary, no second line of it
    assert fraction_hint(0.5) == "" and fraction_hint(0) == "" and "pass --max-loss 5)" in fraction_hint(0.05)


def test_the_plan_refuses_data_the_run_refuses(tmp_path):
    """README: `--plan` "exits as the run would, so a CI gate on the plan fails where the run would". A calibration
    file whose array was named 'image' for a model taking 'input' planned with exit 0; the run failed at once with
    exit 1. The plan opens the data as the run's data step does; good data still plans."""
    model = tmp_path / "m.onnx"
    onnx.save(builders.mlp_gemm(), model)
    x = np.random.default_rng(0).standard_normal((120, 16)).astype(np.float32)
    np.savez(tmp_path / "bad.npz", image=x)
    np.savez(tmp_path / "good.npz", input=x)
    plan = ["prune", model, "-o", tmp_path / "o.onnx", "--max-loss", "1", "--plan", "--data"]
    r = _run(*plan, tmp_path / "bad.npz")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "bad.npz' lacks model input(s) ['input']; it holds ['image']" in r.output
    r = _run(*plan, tmp_path / "good.npz", "--val-data", tmp_path / "bad.npz")
    assert r.exit_code == 1 and "lacks model input(s)" in r.output
    r = _run(*plan, tmp_path / "good.npz")
    assert r.exit_code == 0 and "auto-search" in r.output, r.output
    assert not (tmp_path / "o.onnx").exists()


def test_the_plan_reads_every_file_of_a_folder_as_the_run_does(tmp_path):
    """The plan looked at a folder's first batch only: a folder whose 5th of 6 files named its array 'image' planned
    with exit 0 while the run refused that file in its first second. The plan now reads the data through as the
    run's first pass does (up to convert.PLAN_READS_BYTES), and exits as the run does, naming the same file."""
    model = tmp_path / "m.onnx"
    onnx.save(builders.mlp_gemm(), model)
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        np.savez(folder / f"f{k}.npz", **{"image" if k == 4 else "input": rng.standard_normal((40, 16), np.float32)})
    args = ["prune", model, "-o", tmp_path / "o.onnx", "--max-loss", "1", "--data", folder]
    plan, run = _run(*args, "--plan"), _run(*args, "--time-budget", "1m")
    for r in (plan, run):
        assert r.exit_code == 1 and "Traceback" not in r.output
        assert "f4.npz' lacks model input(s) ['input']; it holds ['image']" in r.output, r.output
    (folder / "f4.npz").unlink()
    assert _run(*args, "--plan").exit_code == 0
    assert not (tmp_path / "o.onnx").exists()


def test_a_folder_with_one_file_channels_last_is_told_the_transpose(tmp_path):
    """A folder of .npz files, one of them written [N, 6, 6, 1] for a model taking [N, 1, 6, 6]: its files disagree
    on the input's shape, so each is one feed, and the refusal said "reshape the data to match" (a reshape scrambles
    every image). It names the file, why each file is one feed (the files disagree), and gives the transpose."""
    model = tmp_path / "m.onnx"
    onnx.save(builders.conv_bn_relu(in_channels=1, size=6), model)
    folder = tmp_path / "calib"
    folder.mkdir()
    x = np.random.default_rng(0).random((20, 1, 6, 6), np.float32)
    np.savez(folder / "a.npz", input=x)
    np.savez(folder / "b.npz", input=x.transpose(0, 2, 3, 1))
    r = _run("prune", model, "-o", tmp_path / "o.onnx", "--sparsity", "0.5", "--data", folder)
    assert r.exit_code == 1 and "Traceback" not in r.output
    line = " ".join(r.output.split())
    assert "b.npz': array 'input' has shape [20, 6, 6, 1]" in line
    assert "np.transpose(x, (0, 3, 1, 2))" in line and not (tmp_path / "o.onnx").exists()
    # why a folder of stacked samples was read a file a feed: its files disagree on the input's shape
    assert "(the file is one feed, used as is: input 'input' has shape [20, 6, 6, 1] in" in line


def test_the_summary_explains_decision_samples_and_upper_bound(tmp_path):
    """The budget line reads "(accuracy: loss 0.44 pp, upper bound 0.89 pp)" and the notes "on the 225 decision
    samples": neither term was explained on the terminal (the legend covered W%, q, neurons, Act% and pp). A run
    with a budget explains both in the legend; one without a budget does not carry them."""
    model = tmp_path / "m.onnx"
    onnx.save(builders.mlp_gemm(), model)
    data = tmp_path / "calib.npz"
    np.savez(data, input=np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32))
    r = _run("prune", model, "-o", tmp_path / "o.onnx", "--data", data, "--max-loss", "5", "--one-shot")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "decision samples = the samples each candidate is judged on" in text
    assert "upper bound = a loss plus the decision rule's margin for chance" in text
    assert "upper bound" in text.split("budget:", 1)[1]
    r = _run("prune", model, "-o", tmp_path / "p.onnx", "--sparsity", "0.5")
    assert r.exit_code == 0 and "decision samples =" not in r.output


def test_notes_of_one_topic_are_printed_together():
    """A CNN run printed "decision rule: after the first undone round ...", then a "time budget:" note, then
    "decision rule: accepted when ...": one topic in two places. Notes of a topic stand together where its first
    stood; the rest keep their order, and a note whose head is a sentence is its own topic."""
    from rich.console import Console

    from onnxprune.converter.inspect import by_topic, print_prune_summary

    notes = ["recovery by sgd (the torch bridge runs the graph): retraining", "decision rule: after the first undone",
             "time budget: the search stopped", "decision rule: accepted when", "what stopped the search: 'x'",
             "time budget: Act% not measured"]
    assert by_topic(notes) == [notes[0], notes[1], notes[3], notes[2], notes[5], notes[4]]
    report = {"layers": [], "before": {"params": 10, "nonzeros": 10}, "after": {"nonzeros": 5, "density": 0.5},
              "compression": 2.0, "file_size_before": 100, "file_size_after": 60, "sparse_format": "constant",
              "parity": {"batches": 1, "inputs": "data", "max_abs_diff": 0.0}, "notes": notes}
    console = Console(record=True, width=300)
    print_prune_summary(report, console)
    lines = [ln for ln in console.export_text().splitlines() if ln.startswith("note: ")]
    assert [ln.split(": ", 1)[1] for ln in lines] == by_topic(notes)


def test_an_output_path_that_holds_another_kind_of_file_is_refused(tmp_path):
    """`-o calib.npz` (a data file's name typed in the wrong place) replaced the numpy archive with a model, and
    `-o other/model.onnx.data` another model's external weights: the run said "wrote ...". An existing output file
    that is not an ONNX model is refused and left as it was; an existing model (the last run's output) and an empty
    file are overwritten as before."""
    model = tmp_path / "m.onnx"
    onnx.save(builders.mlp_gemm(), model)
    npz = tmp_path / "calib.npz"
    np.savez(npz, input=np.zeros((4, 16), np.float32))
    weights = tmp_path / "other.onnx.data"
    weights.write_bytes(np.arange(64, dtype=np.float32).tobytes())
    for victim, kind in ((npz, "a zip archive (a numpy .npz?)"), (weights, "external tensor data?")):
        before = victim.read_bytes()
        r = _run("prune", model, "-o", victim, "--sparsity", "0.5")
        assert r.exit_code == 2 and "Traceback" not in r.output
        assert "exists and is" in r.output and kind in r.output and "not an ONNX model" in r.output
        assert victim.read_bytes() == before
        r = _run("prune", model, "-o", victim, "--sparsity", "0.5", "--plan")
        assert r.exit_code == 2
    out = tmp_path / "o.onnx"
    for _ in range(2):  # the second run replaces the first one's model
        assert _run("prune", model, "-o", out, "--sparsity", "0.5").exit_code == 0
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert _run("prune", model, "-o", empty, "--sparsity", "0.5").exit_code == 0 and empty.stat().st_size > 0
