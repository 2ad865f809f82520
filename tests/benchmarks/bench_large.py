"""A VGG-16-sized model (138M weights, 528 MB) through `onnxprune inspect` and a one-shot `onnxprune prune`.

    python -m tests.benchmarks.bench_large [--sparsity 0.92] [--keep]

Random weights (He init), the torchvision VGG-16 layer shapes, 224x224 input. Prints wall time and peak memory of
each command (separate processes) and the prune's own time per step, against the model's size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(seed: int = 0, width: float = 1.0) -> onnx.ModelProto:
    """VGG-16's layer shapes; `width` scales every channel and fc width (0.5: a quarter of the weights)."""
    rng = np.random.default_rng(seed)
    nodes, inits, x, c, k = [], [], "input", 3, 0
    for v in CFG:
        v = v if v == "M" else int(v * width)
        if v == "M":
            nodes.append(helper.make_node("MaxPool", [x], [f"p{k}"], kernel_shape=[2, 2], strides=[2, 2], name=f"pool{k}"))
            x, k = f"p{k}", k + 1
            continue
        w = rng.standard_normal((v, c, 3, 3), dtype=np.float32) * np.float32(np.sqrt(2 / (c * 9)))
        inits += [nh.from_array(w, f"conv{k}.weight"), nh.from_array(np.zeros(v, np.float32), f"conv{k}.bias")]
        nodes += [helper.make_node("Conv", [x, f"conv{k}.weight", f"conv{k}.bias"], [f"c{k}"], pads=[1] * 4,
                                   kernel_shape=[3, 3], name=f"conv{k}"),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}")]
        x, c, k = f"r{k}", v, k + 1
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1, name="flatten"))
    x = "flat"
    fc = int(4096 * width)
    for i, (a, b) in enumerate([(c * 49, fc), (fc, fc), (fc, 1000)]):
        w = rng.standard_normal((b, a), dtype=np.float32) * np.float32(np.sqrt(2 / a))
        inits += [nh.from_array(w, f"fc{i}.weight"), nh.from_array(np.zeros(b, np.float32), f"fc{i}.bias")]
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [f"f{i}"], transB=1, name=f"fc{i}"))
        x = f"f{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"fr{i}"], name=f"frelu{i}"))
            x = f"fr{i}"
    graph = helper.make_graph(nodes, "vgg16", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 1000])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def timed(args: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS of this child in MB, stdout)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from onnxprune.converter.cli import main; main()", *args],
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.92)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="onnxprune-large-"))
    model_path = folder / "vgg16.onnx"
    onnx.save(vgg16(), model_path)
    size = model_path.stat().st_size / 2**20
    print(f"model: VGG-16 shapes, {size:.0f} MB")
    secs, rss, _ = timed(["inspect", str(model_path), "--json"])
    print(f"inspect                {secs:6.1f} s   peak {rss:7.0f} MB ({rss / size:.1f}x the file)")
    secs, rss, out = timed(["prune", str(model_path), "-o", str(folder / "out.onnx"), "--sparsity", str(args.sparsity),
                            "--json"])
    report = json.loads(out)
    print(f"prune --sparsity {args.sparsity} {secs:6.1f} s   peak {rss:7.0f} MB ({rss / size:.1f}x the file)   "
          f"{report['compression']:.1f}x, file {report['file_size_after'] / 2**20:.0f} MB, parity max abs diff "
          f"{report['parity']['max_abs_diff']:.2g}")
    print("  per step: " + ", ".join(f"{k} {v:.1f} s" for k, v in report["seconds_by_step"].items()))
    if not args.keep:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
