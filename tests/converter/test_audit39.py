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
