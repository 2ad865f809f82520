"""onnxprune as a CI build step (CI build-step audit, branch ci26): what a Makefile or a build script relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnxprune.converter.cli import cli

ROOT = Path(__file__).resolve().parents[2]
LENET300 = ROOT / "models" / "lenet300.onnx"


@pytest.fixture
def calib(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, input=np.zeros((8, 1, 28, 28), np.float32))
    return path


def _plan(*args):
    return CliRunner().invoke(cli, ["prune", *map(str, args), "--max-loss", "1", "--plan", "--json"])


def test_a_plan_refuses_what_the_run_would_refuse_at_once(tmp_path, calib):
    """`--plan` exited 0 with its steps for a missing model, a missing --data file, a missing output folder and -o
    equal to the input, each of which the run refuses in its first second: a CI gate on the plan passed a job that
    then failed. The plan makes the run's checks before any work, with the run's exit codes."""
    out = tmp_path / "o.onnx"
    res = _plan(LENET300, "-o", out, "--data", calib)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["plan"][0]["step"] == "load" and not out.exists()
    assert list(tmp_path.iterdir()) == [calib]  # nothing written, no probe left
    for args, code, said in [
            ((tmp_path / "none.onnx", "-o", out, "--data", calib), 1, "model file"),
            ((LENET300, "-o", out, "--data", tmp_path / "none.npz"), 1, "calibration data"),
            ((LENET300, "-o", tmp_path / "no" / "o.onnx", "--data", calib), 2, "does not exist"),
            ((LENET300, "-o", LENET300, "--data", calib), 2, "is the input model"),
            ((LENET300, "-o", out, "--data", calib, "--report", out), 2, "output model's path")]:
        res = _plan(*args)
        assert res.exit_code == code and said in res.output, (args, res.output)
        assert '"plan"' not in res.output


def _json(res) -> dict:
    """stdout holds exactly one JSON document (json.loads refuses a second, or none)."""
    return json.loads(res.stdout)


def test_a_failed_json_run_prints_one_error_document_on_stdout(tmp_path, calib):
    """stdout of a failed `--json` run was empty (docs/bad-input.md said so): a build script reading it as JSON got
    a parse error instead of the reason. Now {"error": {kind, message, exit_code}}; the line stays on stderr."""
    runner = CliRunner()
    res = runner.invoke(cli, ["prune", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "o.onnx"), "--sparsity",
                              "0.5", "--json"])
    assert res.exit_code == 1 and "Error: model file" in res.stderr
    assert _json(res)["error"] == {"kind": "ModelError", "exit_code": 1,
                                   "message": f"model file '{tmp_path / 'none.onnx'}' does not exist; check the path."}
    for args in (["--sparsity", "1.5"], ["--nosuch"]):  # a bad value; a flag click itself refuses
        res = runner.invoke(cli, ["prune", str(LENET300), "-o", str(tmp_path / "o.onnx"), *args, "--json"])
        assert res.exit_code == 2 and _json(res)["error"]["kind"] == "usage", res.output
    res = runner.invoke(cli, ["inspect", str(calib), "--json"])  # not a model
    assert res.exit_code == 1 and _json(res)["error"]["kind"] == "ModelError"
    res = runner.invoke(cli, ["prune", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "o.onnx"), "--sparsity",
                              "0.5"])
    assert res.exit_code == 1 and res.stdout == ""  # without --json: nothing on stdout, as before
    res = runner.invoke(cli, ["inspect", str(LENET300), "--json"])
    assert res.exit_code == 0 and "error" not in _json(res)  # the next command starts clean


def test_a_missed_budget_prints_its_report_alone(tmp_path):
    """Exit 3 with --json: the report (budget.met false), one document, no error document after it."""
    import onnx

    from tests.converter._data import self_labelled

    model, data = self_labelled()
    mpath, dpath = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(model, mpath)
    np.savez(dpath, **data)
    res = CliRunner().invoke(cli, ["prune", str(mpath), "-o", str(tmp_path / "o.onnx"), "--data", str(dpath),
                                   "--max-loss", "0", "--layer", "fc1*=0.995", "--one-shot", "--json"])
    assert res.exit_code == 3 and _json(res)["budget"]["met"] is False


def test_internal_errors_and_interrupts_have_exit_codes_of_their_own(monkeypatch, tmp_path):
    """Unusable input, an onnxprune defect and an interrupted run all exited 1: a CI job could not tell "fix your
    model" from "report a bug" from "the runner killed it, retry". Now 1, 4 (INTERNAL) and 128 + the signal."""
    import signal

    from onnxprune.converter import cli as cli_module
    from onnxprune.converter import inspect as inspect_module

    def boom(model):
        raise RuntimeError("a defect")

    monkeypatch.setattr(inspect_module, "inspect_model", boom)
    res = CliRunner().invoke(cli, ["inspect", str(LENET300), "--json"])
    assert res.exit_code == cli_module.INTERNAL == 4 and "internal error (RuntimeError: a defect)" in res.stderr
    assert _json(res)["error"]["kind"] == "internal" and _json(res)["error"]["exit_code"] == 4

    for signum in (signal.SIGTERM, signal.SIGHUP):  # as main()'s handler raises it
        monkeypatch.setattr(inspect_module, "inspect_model", lambda model: cli_module._interrupted(signum))
        res = CliRunner().invoke(cli, ["inspect", str(LENET300), "--json"])
        assert res.exit_code == 128 + signum and res.stderr.strip() == "Aborted!", res.output
        assert _json(res)["error"] == {"kind": "interrupted", "message": "Aborted!", "exit_code": 128 + signum}

    def ctrl_c(model):
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect_module, "inspect_model", ctrl_c)  # Python's own SIGINT handler (no main())
    res = CliRunner().invoke(cli, ["inspect", str(LENET300)])
    assert res.exit_code == 130 and res.stdout == ""

    import click

    def parsing(*args, **kwargs):  # a SIGTERM while click parses, outside the command: click's own "Aborted!"
        cli_module._interrupted(signal.SIGTERM)

    monkeypatch.setattr(click.Group, "make_context", parsing)
    res = CliRunner().invoke(cli, ["inspect", str(LENET300), "--json"])
    assert res.exit_code == 143 and "Aborted!" in res.stderr
    assert _json(res)["error"] == {"kind": "interrupted", "message": "Aborted!", "exit_code": 143}


def test_the_json_fields_readme_documents_for_ci_are_there(tmp_path):
    """README's CI paragraph names the fields a script reads from `prune --json`, `inspect --json` and
    `--plan --json` (inspect's and the plan's were documented nowhere before the CI build-step audit)."""
    runner = CliRunner()
    info = _json(runner.invoke(cli, ["inspect", str(LENET300), "--json"]))
    assert {"node", "op", "weight", "shape", "params", "nonzeros", "density", "macs", "neurons"} <= set(info["layers"][0])
    assert set(info["totals"]) == {"params", "nonzeros", "density", "macs"}
    assert {"name", "reason", "size"} <= set(info["skipped"][0])
    assert set(info["inputs"][0]) == set(info["outputs"][0]) == {"name", "shape", "dtype"}
    out = tmp_path / "o.onnx"
    res = runner.invoke(cli, ["prune", str(LENET300), "-o", str(out), "--sparsity", "0.5", "--json"])
    report = _json(res)
    assert report["compression"] == pytest.approx(2.0) and report["compression_written"] >= report["compression"]
    assert "budget" not in report and "time_budget" not in report  # a run without --max-loss or a time budget
    step = _json(runner.invoke(cli, ["prune", str(LENET300), "-o", str(out), "--sparsity", "0.5", "--plan",
                                     "--json"]))["plan"][0]
    assert set(step) == {"step", "does", "needs", "gives", "settings"}


def test_the_python_api_replays_a_recipe_as_the_command_line_does(tmp_path):
    """`onnxprune.prune(..., recipe=...)` was "unknown option(s) recipe": a build script could not replay a run's
    recipe.toml, the way to the same bytes again. It takes `recipe=` (and `allow_other_model=`) as --recipe does:
    the same file as the command line's replay, choices beside it refused, another model's recipe refused."""
    import onnxprune

    first = onnxprune.prune(str(LENET300), sparsity=0.5, exclude="fc3*", output=str(tmp_path / "a.onnx"),
                            report_dir=str(tmp_path / "rep"))
    recipe = tmp_path / "rep" / "recipe.toml"
    again = onnxprune.prune(LENET300, recipe=recipe, output=str(tmp_path / "b.onnx"))
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert again.report["options"] == first.report["options"]
    res = CliRunner().invoke(cli, ["prune", str(LENET300), "-o", str(tmp_path / "c.onnx"), "--recipe", str(recipe)])
    assert res.exit_code == 0 and (tmp_path / "c.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    with pytest.raises(onnxprune.ConfigError, match="sparsity given beside it would be ignored"):
        onnxprune.prune(LENET300, recipe=recipe, sparsity=0.9, output=str(tmp_path / "d.onnx"))
    with pytest.raises(onnxprune.ConfigError, match="pass allow_other_model=True"):
        onnxprune.prune(ROOT / "models" / "lenet5.onnx", recipe=recipe, output=str(tmp_path / "d.onnx"))
    assert not (tmp_path / "d.onnx").exists()


def test_another_librarys_log_line_is_not_signed_onnxprune(monkeypatch):
    """Under a read-only HOME, matplotlib's own warning (it could not create ~/.config/matplotlib) was printed as
    "onnxprune: WARNING: mkdir -p failed for path ...": a CI log reader looked for onnxprune writing into HOME."""
    import logging

    from onnxprune.converter import cli as cli_module

    records = [logging.LogRecord(name, logging.WARNING, __file__, 1, "said", None, None)
               for name in ("onnxprune.converter.auto.search", "onnxprune", "matplotlib", "py.warnings")]
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # the handler the CLI installs, removed after
    monkeypatch.setattr(root, "level", root.level)
    cli_module._setup_logging(logging.WARNING)
    fmt = next(h for h in root.handlers if getattr(h, "_onnxprune", False))
    assert [fmt.format(r) for r in records] == ["onnxprune: WARNING: said", "onnxprune: WARNING: said",
                                                "matplotlib: WARNING: said", "py.warnings: WARNING: said"]


def test_runs_sharing_a_report_folder_write_their_report_files_one_run_at_a_time(tmp_path):
    """CI audit (Left): two runs writing one --report folder at once left recipe.toml of one and report.json of the
    other. Each run's report files are written under a lock on the folder: a second writer waits for the first."""
    import threading

    from onnxprune.converter.convert import _one_report_at_a_time

    folder = tmp_path / "rep"
    order, holding, release = [], threading.Event(), threading.Event()

    def first():
        with _one_report_at_a_time(folder):
            order.append("first in")
            holding.set()
            release.wait(10)
            order.append("first out")

    def second():
        holding.wait(10)
        with _one_report_at_a_time(folder):
            order.append("second in")

    a, b = threading.Thread(target=first), threading.Thread(target=second)
    a.start(), b.start()
    holding.wait(10)
    b.join(0.5)  # the second writer is still waiting for the lock
    assert b.is_alive() and order == ["first in"]
    release.set()
    a.join(10), b.join(10)
    assert order == ["first in", "first out", "second in"]
    assert sorted(p.name for p in folder.iterdir()) == []  # the lock leaves no file of ours in the folder
