"""Large models through a one-shot `onnxprune prune`: peak memory against the weight bytes, wall time, bytes written.

    python -m tests.benchmarks.bench_large vgg [--sparsity 0.92] [--external]   # VGG-16 shapes (138M, 553 MB)
    python -m tests.benchmarks.bench_large stack --params 1e9 [--sparsity 0.5]  # MLP stack, external data

`vgg`: random weights (He init), the torchvision VGG-16 layer shapes, 224x224 input; inline (the in-memory
pipeline) or, with --external, its weights in external data (the streamed path). `stack`: a transformer-shaped MLP
stack (models/large.py, hidden 4096 by default) written tensor by tensor with external data (the streamed path),
then loaded by onnxruntime in a fresh process for one inference on a batch of 2. Every command runs in its own
process; its peak RSS is its own (the kernel's, read by os.wait4). Check `df -h` first: a 1B model is 4 GB on disk (8 GB
with the output); the folder is removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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


CLI = "from onnxprune.converter.cli import main; main()"
ORT_RUN = """
import sys, numpy as np, onnxruntime as ort
opts = ort.SessionOptions(); opts.log_severity_level = 3
s = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
shape = [2 if not isinstance(d, int) else d for d in i.shape]
y = s.run(None, {i.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)})[0]
print(y.shape, bool(np.isfinite(y).all()))
"""


BUILD_VGG = """
import sys, onnx
from tests.benchmarks.bench_large import vgg16
kw = dict(save_as_external_data=True, location="vgg16.onnx.data", size_threshold=1024) if sys.argv[2] else {}
onnx.save(vgg16(), sys.argv[1], **kw)
"""
BUILD_STACK = """
import sys
from onnxprune.models.large import write_mlp_stack
write_mlp_stack(sys.argv[1], hidden=int(sys.argv[2]), ffn=int(sys.argv[3]), blocks=int(sys.argv[4]), seed=0)
"""


def child(code: str, *args: str) -> tuple[float, float, str]:
    """(seconds, this child's own peak RSS in MB, stdout) of `python -c code args`. The peak is the kernel's for
    that child (os.wait4's rusage): the command line leaves by os._exit (converter/cli.py `_leave`), which skipped
    the atexit line the children used to write, and every prune figure read "nan" from then on."""
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        secs = time.perf_counter() - t0
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{stderr[-2000:]}")
    return secs, usage.ru_maxrss / 1024, stdout


def weight_bytes(path: Path) -> int:
    """Bytes of all initializers, counted in a child (loading the model here would inflate later peaks)."""
    code = ("import sys, numpy as np, onnx; m = onnx.load(sys.argv[1], load_external_data=False); "
            "print(sum(int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type)"
            ".itemsize for t in m.graph.initializer))")
    return int(child(code, str(path))[2])


def prune(model_path: Path, out: Path, sparsity: float, wbytes: int) -> dict:
    secs, rss, stdout = child(CLI, "prune", str(model_path), "-o", str(out), "--sparsity", str(sparsity), "--json")
    report = json.loads(stdout)
    written = sum(p.stat().st_size for p in out.parent.glob(out.name + "*"))
    mode = "streamed" if report.get("streamed") else "in memory"
    print(f"prune --sparsity {sparsity} ({mode}): {secs:6.1f} s   peak {rss:7.0f} MB = {rss * 2**20 / wbytes:.2f}x the "
          f"weight bytes ({wbytes / 2**20:.0f} MB)   written {written / 2**20:.0f} MB")
    print("  per step: " + ", ".join(f"{k} {v:.1f} s" for k, v in report["seconds_by_step"].items()))
    if "parity" in report:
        print(f"  parity max abs diff {report['parity']['max_abs_diff']:.2g}, {report['compression']:.1f}x")
    if "output_change" in report:
        print(f"  density {report['after']['density']:.3f}, output change (rel. L2) {report['output_change']}")
    return report


def run_vgg(folder: Path, args) -> None:
    model_path = folder / "vgg16.onnx"
    # Built in a child: ru_maxrss survives fork and exec, so a big parent would inflate every later child's peak.
    child(BUILD_VGG, str(model_path), "1" if args.external else "")
    wbytes = weight_bytes(model_path)
    print(f"model: VGG-16 shapes, {wbytes / 2**20:.0f} MB of weights, {'external' if args.external else 'inline'}")
    secs, rss, _ = child(CLI, "inspect", str(model_path), "--json")
    print(f"inspect: {secs:6.1f} s   peak {rss:7.0f} MB = {rss * 2**20 / wbytes:.2f}x")
    prune(model_path, folder / "out.onnx", args.sparsity, wbytes)


def run_stack(folder: Path, args) -> None:
    from onnxprune.models.large import mlp_stack_params

    hidden, ffn = args.hidden, 4 * args.hidden
    blocks = max(1, math.ceil(args.params / (2 * hidden * ffn)))  # at least --params
    model_path = folder / "stack.onnx"
    t0 = time.perf_counter()
    child(BUILD_STACK, str(model_path), str(hidden), str(ffn), str(blocks))
    wbytes = 4 * mlp_stack_params(hidden, ffn, blocks)
    params = mlp_stack_params(hidden, ffn, blocks)
    print(f"model: MLP stack {blocks} x ({hidden} -> {ffn} -> {hidden}), {params / 1e6:.0f}M "
          f"params, {wbytes / 2**20:.0f} MB external data, built in {time.perf_counter() - t0:.1f} s")
    out = folder / "out.onnx"
    prune(model_path, out, args.sparsity, wbytes)
    (model_path.parent / "stack.onnx.data").unlink()  # the input is no longer needed: free the disk first
    secs, rss, stdout = child(ORT_RUN, str(out))
    print(f"onnxruntime loads the output, one inference on 2 rows: {secs:.1f} s, peak {rss:.0f} MB = "
          f"{rss * 2**20 / wbytes:.2f}x; output shape, finite: {stdout.strip()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=["vgg", "stack"], nargs="?", default="vgg")
    ap.add_argument("--sparsity", type=float, default=None, help="default 0.92 (vgg), 0.5 (stack)")
    ap.add_argument("--external", action="store_true", help="vgg: weights in external data (the streamed path)")
    ap.add_argument("--params", type=float, default=1e9, help="stack: about this many weights")
    ap.add_argument("--hidden", type=int, default=4096, help="stack: width (the MLP is 4x wider)")
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the folder")
    args = ap.parse_args()
    args.sparsity = args.sparsity if args.sparsity is not None else (0.92 if args.model == "vgg" else 0.5)
    folder = Path(tempfile.mkdtemp(prefix="onnxprune-large-", dir=args.dir))
    try:
        (run_vgg if args.model == "vgg" else run_stack)(folder, args)
    finally:
        if not args.keep:
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()


if __name__ == "__main__":
    main()
