"""The Python API as a user's own code calls it (audit 40): its errors name the keywords the caller wrote."""

from __future__ import annotations

import inspect
import re

import click
import numpy as np
import onnx
import pytest

from onnxprune.converter import api
from onnxprune.converter.cli import cli
from onnxprune.converter.plan import choice_names
from onnxprune.errors import CalibrationError, ConfigError
from onnxprune.models import builders


def test_every_prune_flag_is_said_as_the_keyword_the_api_takes():
    """Each option of `onnxprune prune` is written in an API error as a keyword `prune()` takes (or left as it is,
    for the few with no keyword), so a new flag cannot slip back into an API caller's messages."""
    keywords = set(inspect.signature(api.prune).parameters) | set(choice_names())
    for param in cli.commands["prune"].params:
        if not isinstance(param, click.Option):
            continue
        for flag in param.opts:
            said = api.api_words(f"pass {flag} here")
            if flag in api.NOT_KEYWORDS or flag in ("-v", "-q"):
                assert said == f"pass {flag} here", flag
                continue
            word = said.removeprefix("pass ").removesuffix(" here")
            name, _, value = word.partition("=")
            assert name in keywords and "-" not in name, (flag, said)
            assert value in (("True", "False") if param.is_flag else ("",)), (flag, said)


@pytest.mark.parametrize("cli_said, api_said", [
    ("--max-loss needs data to measure the loss on; pass --data FILE.npz.",
     "max_loss= needs data to measure the loss on; pass data='FILE.npz'."),
    ("measured loss 1.234 pp exceeds --max-loss 1; nothing written (pass --force to write it anyway, or raise "
     "--max-loss).", "measured loss 1.234 pp exceeds max_loss=1; nothing written (pass force=True to write it "
     "anyway, or raise max_loss=)."),
    ("output 'a.onnx' is the input model; choose another output path (-o).",
     "output 'a.onnx' is the input model; choose another output path (output=)."),
    ("--confidence sets how sure --max-loss's decisions are; add --max-loss (and --data).",
     "confidence= sets how sure max_loss's decisions are; add max_loss= (and data=)."),
    ("add a positive bare --max-loss L (e.g. --max-loss 1 --max-loss boxes=5).",
     "add a positive bare max_loss=L (e.g. max_loss=1 output_budgets='boxes=5')."),
    ("--criterion wanda needs data (or use --criterion magnitude); --threads -1; --time-budget 3m; --no-neurons.",
     "criterion='wanda' needs data (or use criterion='magnitude'); threads=-1; time_budget='3m'; neurons=False."),
    ("if 'stateN' may move more, `--max-loss 1 --max-loss stateN=L` gives it a budget of its own",  # a flag quoted
     "if 'stateN' may move more, `max_loss=1 output_budgets='stateN=L'` gives it a budget of its own"),
    ("--layer NAME=S, --input-shape ids=4,196, --report, --sparsity/--quality; rerun with --debug or --plan.",
     "layers='NAME=S', input_shapes='ids=4,196', report_dir=, sparsity=/quality=; rerun with --debug or --plan."),
])
def test_a_command_line_message_in_the_apis_words(cli_said, api_said):
    assert api.api_words(cli_said) == api_said


def test_the_apis_refusals_name_its_keywords_not_flags(tmp_path):
    """Audit 39/40: prune(max_loss=1) without data was told "pass --data FILE.npz", output= the input model "choose
    another output path (-o)", labels in an array named y "pass its name with --labels"."""
    model = builders.mlp_gemm()
    onnx.save(model, tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    cases = [(ConfigError, dict(max_loss=1), "max_loss= needs data"),
             (ConfigError, dict(sparsity=0.5, output=tmp_path / "m.onnx"), "choose another output path (output=)"),
             (ConfigError, dict(sparsity=0.5, time_budget=60), "drop time_budget="),
             (ConfigError, dict(sparsity=1.5), "sparsity=1.5 is outside"),
             (CalibrationError, dict(max_loss=1, one_shot=True, data={"input": x, "y": x[:, 0]}),
              "pass its name with labels=")]
    for kind, kwargs, said in cases:
        with pytest.raises(kind) as error:
            api.prune(tmp_path / "m.onnx", **kwargs)
        assert said in str(error.value), (kwargs, str(error.value))
        assert " --" not in str(error.value) and "(-o)" not in str(error.value), str(error.value)


@pytest.mark.parametrize("cwd_holds_the_data", [False, True])
def test_a_model_proto_loaded_without_its_external_data_is_refused_naming_the_fix(tmp_path, monkeypatch,
                                                                                 cwd_holds_the_data):
    """Audit 40: onnx.load(dynamo export, load_external_data=False) passed to prune() was "'<in-memory model>' is not
    a valid ONNX model: Data of TensorProto ... should be stored in model.onnx.data, but it is not regular file; fix
    or re-export it" (or, run from the folder holding the data file, passed onnx's checker). It holds references,
    not weights: the error says so and what to pass; the same model loaded with its data prunes."""
    from onnxprune.errors import ModelError

    model = builders.mlp_gemm()
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    monkeypatch.chdir(tmp_path if cwd_holds_the_data else tmp_path.parent)
    bare = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    with pytest.raises(ModelError) as error:
        api.prune(bare, sparsity=0.5)
    said = str(error.value)
    assert "load_external_data=False" in said and "'m.onnx.data'" in said and "Pass the model's path" in said, said
    assert "not a valid ONNX model" not in said
    whole = api.prune(onnx.load(str(tmp_path / "m.onnx")), sparsity=0.5)
    assert whole.report["compression"] == pytest.approx(2.0, rel=0.05)


def test_the_results_report_is_the_document_json_prints_for_the_same_run(tmp_path):
    """README said `report` was "report.json's content"; it is the `--json` document (report.json nests its numbers
    under summary and run). The same one-shot run through the API and the command line: the same figures, the same
    bytes written."""
    import json

    from click.testing import CliRunner

    model = builders.mlp_gemm()
    onnx.save(model, tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((120, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", input=x)
    result = api.prune(tmp_path / "m.onnx", data=tmp_path / "d.npz", max_loss=2, one_shot=True,
                       output=tmp_path / "api.onnx")
    ran = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "cli.onnx"), "--data",
                                   str(tmp_path / "d.npz"), "--max-loss", "2", "--one-shot", "--json"])
    assert ran.exit_code == 0, ran.output
    shown = json.loads(ran.stdout)
    for key in ("compression", "compression_written", "file_size_after", "nonzeros_after_shrink"):
        assert result.report[key] == shown[key], key
    assert result.report["budget"]["met"] == shown["budget"]["met"]
    assert result.report["budget"]["measured_loss_pp"] == shown["budget"]["measured_loss_pp"]
    assert [r["nonzeros"] for r in result.report["layers"]] == [r["nonzeros"] for r in shown["layers"]]
    assert (tmp_path / "api.onnx").read_bytes() == (tmp_path / "cli.onnx").read_bytes()
    assert set(shown) <= set(result.report) | {"latency"}


def test_the_runs_warnings_name_the_keywords_and_the_callers_record_factory_is_put_back(caplog):
    """Audit 40: prune(data=x[:60], max_loss=1) logged "give 99 samples to decide on (more --data, or --val-data), or
    --max-loss 1.64"; random data "Pass real samples (--data FILE.npz)". The same warnings in the API's words; the
    logging record factory is the caller's again after the call, also after an error."""
    import logging

    model = builders.mlp_gemm()
    x = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    before = logging.getLogRecordFactory()
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        api.prune(model, data=x, max_loss=1, one_shot=True)
        api.prune(model, data="random", max_loss=1, one_shot=True)
    said = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("onnxprune"))
    assert "cannot certify max_loss=1" in said and "(more data=, or val_data=)" in said, said
    assert "Pass real samples (data='FILE.npz')" in said, said
    assert "--" not in said, said
    assert logging.getLogRecordFactory() is before
    with pytest.raises(ConfigError):
        api.prune(model, max_loss=1)
    assert logging.getLogRecordFactory() is before
    outside = logging.getLogger("onnxprune.test").makeRecord("onnxprune.test", logging.WARNING, "f", 1, "--data", (),
                                                            None)
    assert outside.getMessage() == "--data"  # outside a call the command line's words are kept


def test_the_reports_notes_name_the_keywords_in_the_result_and_the_files(tmp_path):
    """Audit 40's Left: an API run's notes said "cannot certify --max-loss 1 at 2x the margin" and "a larger
    --max-loss would" to a caller who wrote max_loss=; the result's report and report.json now say the keywords
    (the notes are written in the flags, test_stop_note; the command line says them as written)."""
    import json
    import re

    model = builders.mlp_gemm()
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    result = api.prune(model, data=x, max_loss=1, time_budget=30, report_dir=tmp_path / "rep",
                       output=tmp_path / "o.onnx")
    flag = re.compile(r"(?<![\w-])--[a-z]")

    def notes(o):
        if isinstance(o, dict):
            for k, v in o.items():
                yield from (v if k == "notes" and isinstance(v, list) else notes(v))

    for report in (result.report, json.loads((tmp_path / "rep" / "report.json").read_text())):
        said = [n for n in notes(report) if isinstance(n, str)]
        assert said and not [n for n in said if flag.search(n)], said
        assert any("max_loss=1" in n for n in said), said


def test_a_progress_callbacks_print_reaches_the_callers_stdout(capsys):
    """Audit 40: the run sent stdout to stderr while it worked (a library's prints must not break --json), so a
    caller's `progress=lambda task, done, total, info='': print(...)` printed to stderr."""
    model = builders.mlp_gemm()
    x = np.random.default_rng(0).standard_normal((120, 16)).astype(np.float32)
    seen = []

    def progress(task, done, total, info=""):
        seen.append((task, done, total))
        print(f"tick {task} {done}/{total}")

    api.prune(model, data=x, max_loss=2, one_shot=True, progress=progress)
    captured = capsys.readouterr()
    assert seen and captured.out.count("tick ") == len(seen), (len(seen), captured.out[-500:])
    assert "tick " not in captured.err


def test_an_api_run_leaves_the_callers_stdout_alone_and_the_command_line_keeps_json_clean(monkeypatch, tmp_path):
    """Audit 40's Left: for the whole of prune() sys.stdout was the process's stderr (the command line's guard for
    --json), so the caller's other threads printed to stderr meanwhile. An API run now leaves it alone; a command
    line run still sends a library's prints to stderr, and its --json stdout is one document."""
    import io
    import json
    import sys

    from click.testing import CliRunner

    from onnxprune.converter import convert as conv

    seen, real_run = [], conv.run

    def spying(*args, **kwargs):
        seen.append(sys.stdout)
        print("a library prints")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(conv, "run", spying)
    mine = io.StringIO()
    monkeypatch.setattr(sys, "stdout", mine)
    api.prune(builders.mlp_gemm(), sparsity=0.5)
    assert seen == [mine] and "a library prints" in mine.getvalue()
    monkeypatch.undo()
    monkeypatch.setattr(conv, "run", spying)
    onnx.save(builders.mlp_gemm(), tmp_path / "m.onnx")
    ran = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"),
                                   "--sparsity", "0.5", "--json"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["compression"] > 1 and "a library prints" in ran.stderr


def test_a_width_given_as_text_is_told_to_be_a_number():
    """Audit 40: prune(weight_bits="8") said "weight_bits=8 is not one of 16, 8, 7, ...": the value it names is in the
    list it gives. A width given as text is said to be text; the number runs."""
    model = builders.mlp_gemm()
    with pytest.raises(ConfigError, match=re.escape("weight_bits='8' is text; a width is a number (16, 8, 7")):
        api.prune(model, sparsity=0.5, weight_bits="8")
    assert api.prune(model, sparsity=0.5, weight_bits=8).report["weight_bits"] is not None
    with pytest.raises(ConfigError, match=re.escape("max_loss=nan must be in percentage points")):
        api.prune(model, data=np.zeros((8, 16), np.float32), max_loss=float("nan"), one_shot=True)


def test_levels_and_exclude_take_numpy_arrays():
    """Audit 40: levels=np.array([0.5, 0.9]) (or np.linspace) was refused as "takes sparsities (one, or a list of
    them)"; an array is its list of numbers (of patterns, for exclude=)."""
    model = builders.mlp_gemm()
    x = np.random.default_rng(0).standard_normal((120, 16)).astype(np.float32)
    result = api.prune(model, data=x, max_loss=2, one_shot=True, levels=np.array([0.5, 0.9]))
    assert result.report["options"]["levels"] == [0.5, 0.9], result.report["options"].get("levels")
    excluded = api.prune(model, sparsity=0.5, exclude=np.array(["fc1*"]))
    assert {r["weight"]: r["nonzeros"] == r["params"] for r in excluded.report["layers"]}["fc1.weight"]
