"""The Evaluator's cache on a folder of requests the size of lists 57's (VS Code's extension recommender: 400
workspaces of 1,004 candidate rows, int32 multi-hot [1004, 3450], 5.6 GB as the model reads it).

A stand-in built here: `row_scorer` widened to 2,446 context and 1,004 candidate columns behind a Cast from int32
(the recommender's input type), one request a file written with `numpy.savez_compressed`, as lists 57's
mk_vsc_req.py wrote them. Printed: whether the evaluator holds the requests, the memory that takes (the process's
peak RSS), the dense pass (the evaluator's construction) and two judging passes of a thinned candidate, each in
seconds, and the candidate's loss (the same before and after: the figures, not the reading, are what may change).

    python -m tests.benchmarks.bench_request_cache [--requests 400] [--rows 1004] [--folder /tmp/bench_requests]
        [--passes 2] [--metric score=top@5]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import requests_reader
from onnxprune.models import third_party_builders as tb
from tests.oracle import with_initializer

CONTEXT = 2446  # the recommender's 3,450 columns: 2,446 of a workspace's signals beside a candidate's 1,004 one-hot


def int32_scorer(rows: int) -> onnx.ModelProto:
    """`row_scorer` of CONTEXT + `rows` columns, its input int32 through a Cast (as tf2onnx wrote the recommender)."""
    model = tb.row_scorer(context=CONTEXT, candidates=rows)
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["input_f" if name == "input" else name for name in node.input]
    graph.node.insert(0, helper.make_node("Cast", ["input"], ["input_f"], to=TensorProto.FLOAT, name="/Cast"))
    graph.input[0].type.tensor_type.elem_type = TensorProto.INT32
    onnx.checker.check_model(model, full_check=True)
    return model


def build(folder: Path, requests: int, rows: int) -> None:
    """`requests` files, one a workspace: a random multi-hot context (a third on) on every row beside each
    candidate's one-hot, int32, compressed; left as they are when the folder already holds them."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.npz"))) == requests:
        return
    rng = np.random.default_rng(11)
    eye = np.eye(rows, dtype=np.int32)
    for i in range(requests):
        ctx = (rng.random(CONTEXT) < 1 / 3).astype(np.int32)
        np.savez_compressed(folder / f"ws{i:03d}.npz", input=np.concatenate([np.tile(ctx, (rows, 1)), eye], axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rows", type=int, default=1004)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_requests"))
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--metric", default="score=top@5")
    args = parser.parse_args()
    t = time.perf_counter()
    build(args.folder, args.requests, args.rows)
    print(f"stand-in: {args.requests} requests of {args.rows} rows x {CONTEXT + args.rows} int32 "
          f"({args.requests * args.rows * (CONTEXT + args.rows) * 4 / 2**30:.2f} GiB as read; "
          f"{sum(p.stat().st_size for p in args.folder.glob('*.npz')) / 2**20:.0f} MiB on disk), "
          f"{time.perf_counter() - t:.1f} s to build or find")
    model = int32_scorer(args.rows)
    thinned = with_initializer(model, "fc1.weight",
                               lambda w: np.where(np.abs(w) < np.quantile(np.abs(w), 0.05), 0, w))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    t = time.perf_counter()
    ev = Evaluator(requests_reader(args.folder, model, "bench"), args.metric, reference_model=model)
    dense = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"evaluator: cached {ev.cached}; dense pass {dense:.1f} s; peak RSS {base:.0f} -> {peak:.0f} MiB")
    for k in range(args.passes):
        t = time.perf_counter()
        loss = ev.loss_pp(ev.evaluate(thinned))
        print(f"judging pass {k + 1}: {time.perf_counter() - t:.1f} s, loss {loss:.2f} pp; peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


if __name__ == "__main__":
    main()
