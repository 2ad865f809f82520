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
