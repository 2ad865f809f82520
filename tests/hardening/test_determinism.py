"""Determinism: the same `prune` command with the same options writes the same bytes, run after run, in this process
or in a fresh one with another hash seed (set and dict iteration order must not leak into the output)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune.models import builders
from tests.hardening.helpers import invoke, subprocess_env

ONNXPRUNE = Path(sys.executable).parent / "onnxprune"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("det")
    onnx.save(builders.lenet5_like(conv_channels=(6, 12), fc_units=64), folder / "lenet.onnx")
    x = np.random.default_rng(0).standard_normal((40, 1, 28, 28)).astype(np.float32)
    np.savez(folder / "calib.npz", input=x, labels=np.arange(40) % 10)
    return folder


OPTIONS = {
    "sparsity": ["--sparsity", "0.9"],
    "sparsity-initializer": ["--sparsity", "0.8", "--sparse-format", "initializer"],
    "sparsity-dense": ["--sparsity", "0.7", "--sparse-format", "dense"],
    "quality": ["--quality", "1.2"],
    "layers": ["--layer", "/conv1/*=0.5", "--layer", "fc1*=0.95", "--exclude", "fc2*"],
    "data": ["--sparsity", "0.9", "--data", "{data}", "--metric", "accuracy", "--batch-size", "16"],
    "random-data": ["--sparsity", "0.9", "--data", "random", "--limit", "24", "--metric", "agreement"],
}


def _prune(folder: Path, out: Path, options: list[str]):
    args = [a.format(data=folder / "calib.npz") for a in options]
    res = invoke("prune", folder / "lenet.onnx", "-o", out, *args, "--json")
    assert res.exit_code == 0, res.output
    return out.read_bytes(), _without_clock(json.loads(res.stdout))


def _without_clock(value):
    """The report minus wall-clock figures and the output path, which may differ between identical runs."""
    if isinstance(value, dict):
        return {k: _without_clock(v) for k, v in value.items()
                if k not in ("output", "command") and not re.search(r"second|time|timing|elapsed|date", k)}
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_same_command_writes_the_same_bytes_twice(inputs, tmp_path, name):
    first, report1 = _prune(inputs, tmp_path / "a.onnx", OPTIONS[name])
    second, report2 = _prune(inputs, tmp_path / "b.onnx", OPTIONS[name])
    assert first == second
    assert report1 == report2
    onnx.checker.check_model(onnx.load_model_from_string(first))


@pytest.mark.skipif(not ONNXPRUNE.exists(), reason="no onnxprune console script in this environment")
@pytest.mark.parametrize("name", ["data", "sparsity"])
def test_fresh_processes_with_other_hash_seeds_write_the_same_bytes(inputs, tmp_path, name):
    here, _ = _prune(inputs, tmp_path / "here.onnx", OPTIONS[name])
    args = [a.format(data=inputs / "calib.npz") for a in OPTIONS[name]]
    for seed in ("1", "12345"):
        out = tmp_path / f"seed{seed}.onnx"
        env = subprocess_env() | {"PYTHONHASHSEED": seed}
        done = subprocess.run([str(ONNXPRUNE), "prune", str(inputs / "lenet.onnx"), "-o", str(out), *args],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == here, f"PYTHONHASHSEED={seed} wrote different bytes"
