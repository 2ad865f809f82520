"""Shared by the hardening tests: run the CLI, assert a clean failure, build small hostile or odd models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner, Result
from onnx import TensorProto, helper, numpy_helper

from onnxprune.converter.cli import cli

OPSET = 17
IR_VERSION = 8


def invoke(*args) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_lines(res: Result) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("Error:")]


def assert_clean_error(res: Result, code: int, *fragments: str) -> str:
    """Exit `code`, exactly one `Error: …` line (the last one) holding every fragment, no traceback.

    A fragment may be a tuple of alternatives (wording another engineer's module may still change)."""
    assert res.exit_code == code, f"exit {res.exit_code}, expected {code}:\n{res.output}"
    assert res.exception is None or isinstance(res.exception, SystemExit), f"uncaught {res.exception!r}"
    assert "Traceback" not in res.output, res.output
    errors = error_lines(res)
    assert len(errors) == 1, f"expected one 'Error:' line, got:\n{res.output}"
    assert res.stderr.rstrip().splitlines()[-1] == errors[0], f"the error is not the last line:\n{res.output}"
    if res.stdout.lstrip().startswith("{"):  # --json: the same error as the one document on stdout (CI audit)
        assert json.loads(res.stdout)["error"]["message"] == errors[0][len("Error: "):], res.stdout
    assert "internal error" not in errors[0], f"an unexpected exception reached the user: {errors[0]}"
    for text in fragments:  # a tuple: any one of its strings
        options = text if isinstance(text, tuple) else (text,)
        assert any(t in errors[0] for t in options), f"{text!r} not in {errors[0]!r}"
    return errors[0]


def leftovers(folder: Path, name: str = "o.onnx") -> list[str]:
    """The output and any temp file of it (`.o.onnx.*.tmp`) in folder."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name == name or p.name.startswith(f".{name}."))


def make_model(nodes, inputs, outputs, initializers=(), *, opset=OPSET, ir_version=IR_VERSION, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def tensor(name: str, shape, seed: int = 0, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(dtype), name)


def vi(name: str, shape, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def gemm_then(op_node: onnx.NodeProto | None, *, extra_opsets=(), out_shape=("N", 8)) -> onnx.ModelProto:
    """x[N,16] -> Gemm(W[8,16], transB) -> h, then op_node (h -> y) or nothing (y = Gemm output)."""
    gemm = helper.make_node("Gemm", ["x", "W"], ["h" if op_node is not None else "y"], transB=1, name="fc")
    nodes = [gemm] + ([op_node] if op_node is not None else [])
    return make_model(nodes, [vi("x", ["N", 16])], [vi("y", list(out_shape))], [tensor("W", (8, 16))],
                      extra_opsets=extra_opsets)


def subprocess_env() -> dict:
    """The environment for `onnxprune` subprocesses: this interpreter's venv first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("ONNXPRUNE_DEBUG", None)
    return env
