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
