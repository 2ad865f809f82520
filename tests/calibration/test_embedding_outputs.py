"""An embedding the graph makes (an L2 normalization, a pooling over positions) is scored by cosine whatever its
name (sweep 13: all-MiniLM's pooled sentence embedding, exported unnamed as '461' [N, 384], was scored by top-1
agreement over its dimensions, which bounds nothing of what a user compares). A CNN's global average pool and a
mean of per-position logits stay class scores."""

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from onnxprune.calibration.metric_choice import embedding_outputs
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data


class Encoder(nn.Module):
    """sentence-transformers' mean pooling over the attention mask, then (optionally) F.normalize."""

    def __init__(self, normalize: bool):
        super().__init__()
        self.emb, self.fc, self.normalize = nn.Embedding(50, 16), nn.Linear(16, 16), normalize

    def forward(self, ids, mask):
        h = torch.tanh(self.fc(self.emb(ids)))
        m = mask.unsqueeze(-1).expand(h.size()).float()
        x = torch.sum(h * m, 1) / torch.clamp(m.sum(1), min=1e-9)
        return F.normalize(x, p=2, dim=1) if self.normalize else x


class MeanOverTime(nn.Module):
    """An audio embedding: features averaged over frames, no mask."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 12)

    def forward(self, x):
        return torch.relu(self.fc(x)).mean(1)


class GapClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


class MeanLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(50, 16), nn.Linear(16, 5)

    def forward(self, ids):
        return self.fc(self.emb(ids)).mean(1)


def _export(module, args) -> onnx.ModelProto:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, f, dynamo=False, opset_version=17,
                          input_names=[f"in{i}" for i in range(len(args))],
                          dynamic_axes={f"in{i}": {0: "N"} for i in range(len(args))})
    return onnx.load_from_string(f.getvalue())


IDS = (torch.randint(1, 50, (2, 7)), torch.ones(2, 7, dtype=torch.long))


@pytest.mark.parametrize("make,args,embedding", [
    (lambda: Encoder(True), IDS, True), (lambda: Encoder(False), IDS, True),
    (MeanOverTime, (torch.randn(2, 9, 8),), True), (GapClassifier, (torch.randn(2, 1, 8, 8),), False),
    (MeanLogits, (IDS[0],), False)],
    ids=["normalized", "masked-mean", "mean-over-time", "gap-logits", "mean-of-logits"])
def test_an_unnamed_embedding_is_read_off_the_graph_and_scored_by_cosine(make, args, embedding):
    # the module is made here, seeded: made at collection its weights followed whatever torch drew before, and a
    # GAP classifier whose one class led all 64 noise images was (rightly) scored agreement+rel_l2
    torch.manual_seed(0)
    model = _export(make(), args)
    out = model.graph.output[0].name
    assert out.isdigit()  # the legacy exporter's unnamed output: no name rule can read it
    assert (out in embedding_outputs(model)) == embedding
    rng = np.random.default_rng(0)
    feed = {}
    for i, a in enumerate(args):
        x = a.numpy()
        shape = (64,) + x.shape[1:]
        feed[f"in{i}"] = (np.ones(shape, x.dtype) if i == 1 else rng.integers(1, 50, shape).astype(x.dtype)
                          if x.dtype.kind == "i" else rng.standard_normal(shape).astype(x.dtype))
    if len(args) == 2:
        feed["in1"][::3, 5:] = 0  # padded sentences
    ev = Evaluator(open_data(feed, model, batch_size=32), None, model)
    assert ev.plan[out] == ("cosine" if embedding else "agreement")


class Readout(nn.Module):
    """A GNN's graph readout (PyG's global_add/max/mean_pool, MiniMol's fingerprint): node features [nodes, F] ->
    [graphs, D], each graph's nodes pooled by a scatter with a reduction; `head`: a linear layer's per-node output
    summed (per-node logits: class scores, not an embedding)."""

    def __init__(self, reduce: str, head: bool = False):
        super().__init__()
        self.fc, self.reduce, self.head = nn.Linear(6, 8), reduce, head

    def forward(self, x, batch, slots):
        h = self.fc(x) if self.head else F.gelu(self.fc(x))
        index = batch.unsqueeze(1).expand(-1, h.shape[1])
        fill = torch.zeros(slots.shape[0], h.shape[1])
        if self.reduce == "mean":
            return fill.scatter_add(0, index, h) / fill.scatter_add(0, index, torch.ones_like(h)).clamp(min=1)
        if self.reduce == "sum":
            return fill.scatter_add(0, index, h)
        # (the legacy exporter writes scatter_reduce inside an If on an empty index: dynamo only)
        return fill.scatter_reduce(0, index, h, reduce=self.reduce, include_self=True)


def _max_readout() -> onnx.ModelProto:
    """MiniMol's readout written with onnx.helper (dynamo writes scatter_reduce(amax) so; the legacy exporter wraps
    it in an If): Relu(feat @ W + b) pooled per graph by ScatterElements(reduction='max') into zeros [graphs, 8]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([8], np.int64), "width"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    nodes = [helper.make_node("MatMul", ["feat", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["h0"]),
             helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("Shape", ["graph_slots"], ["g"]),
             helper.make_node("Concat", ["g", "width"], ["gs"], axis=0),
             helper.make_node("ConstantOfShape", ["gs"], ["fill"],
                              value=numpy_helper.from_array(np.zeros(1, np.float32))),
             helper.make_node("Unsqueeze", ["batch", "one"], ["b1"]), helper.make_node("Shape", ["h"], ["hs"]),
             helper.make_node("Expand", ["b1", "hs"], ["index"]),
             helper.make_node("ScatterElements", ["fill", "index", "h"], ["fingerprint"], axis=0, reduction="max")]
    graph = helper.make_graph(nodes, "readout", [
        helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["nodes", 6]),
        helper.make_tensor_value_info("batch", TensorProto.INT64, ["nodes"]),
        helper.make_tensor_value_info("graph_slots", TensorProto.FLOAT, ["graphs"])],
        [helper.make_tensor_value_info("fingerprint", TensorProto.FLOAT, ["graphs", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("reduce,head", [("sum", False), ("max", False), ("mean", False), ("sum", True)],
                         ids=["add", "max", "mean", "sum-of-logits"])
def test_a_graph_readout_by_a_scatter_is_an_embedding_scored_by_cosine(tmp_path, reduce, head):
    """Real models 48: MiniMol's molecular 'fingerprint' [graphs, 512], a ScatterElements(reduction='max') of its GNN's
    node features, was scored by top-1 agreement over its 512 dimensions. A readout of a linear layer's per-node
    output (logits summed per graph) stays class scores."""
    torch.manual_seed(0)
    args = (torch.randn(7, 6), torch.tensor([0, 0, 0, 1, 1, 1, 1]), torch.zeros(2))
    names = ["feat", "batch", "graph_slots"]
    axes = {"feat": {0: "nodes"}, "batch": {0: "nodes"}, "graph_slots": {0: "graphs"}}
    if reduce == "max":
        model = _max_readout()
    else:
        f = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Readout(reduce, head).eval(), args, f, dynamo=False, opset_version=17,
                              input_names=names, output_names=["fingerprint"], dynamic_axes=axes)
        model = onnx.load_from_string(f.getvalue())
    scatters = [n for n in model.graph.node if n.op_type in ("ScatterElements", "ScatterND")]
    assert scatters and any(a.name == "reduction" for n in scatters for a in n.attribute)
    assert ("fingerprint" in embedding_outputs(model)) == (not head)
    rng = np.random.default_rng(0)
    folder = tmp_path / "graphs"
    folder.mkdir()
    for k in range(24):  # one molecule-like graph a feed, as MiniMol's collate makes one
        n = int(rng.integers(3, 9))
        np.savez(folder / f"{k:02d}.npz", feat=rng.standard_normal((n, 6)).astype(np.float32),
                 batch=np.zeros(n, np.int64), graph_slots=np.zeros(1, np.float32))
    ev = Evaluator(open_data(str(folder), model), None, model)
    assert ev.plan["fingerprint"] == ("agreement" if head else "cosine")
