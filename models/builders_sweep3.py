"""Small seeded graphs shaped like the third-party models of the third sweep (numpy + onnx.helper, no torch).

    batch_of_one    a conv net whose input and output declare a fixed batch of 1 (ultralytics' default export,
                    many tf2onnx exports): images [1, 3, S, S] -> [1, C, S*S] (a detector head's layout)
    prelu_net       insightface-style Conv -> BatchNormalization -> PRelu (a slope per channel, [C, 1, 1]), then a
                    Conv 1x1 -> PRelu with one shared slope [1], pool, and Gemm -> PRelu ([C]) -> Gemm: 'fc1'
    with_unread_input  a model plus a graph input [N, 8] that no node reads (kept by some exporters; an image +
                    tokens + scale model of the sweep declared 'unused_mask' [N, 8])

All use ir_version 8 and opset 17.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

import numpy as np

from onnxprune.models.builders import _Graph


def batch_of_one(*, in_channels: int = 3, channels: int = 8, out_channels: int = 7, size: int = 8,
                 seed: int = 0) -> onnx.ModelProto:
    """'images' [1, 3, S, S] -> conv 3x3 + relu -> conv 1x1 -> Reshape -> 'output0' [1, 7, S*S]."""
    g = _Graph(seed)
    x = g.relu(g.conv("images", "stem", in_channels, channels, 3), "stem")
    x = g.conv(x, "head", channels, out_channels, 1)
    g.initializers.append(numpy_helper.from_array(np.array([1, out_channels, size * size], np.int64), "head.shape"))
    x = g.op("Reshape", "head", [x, "head.shape"])
    model = g.model("batch_of_one", [in_channels, size, size], x, [out_channels, size * size], output_name="output0")
    graph = model.graph
    graph.input[0].name = "images"
    for v in (graph.input[0], graph.output[0]):
        v.type.tensor_type.shape.dim[0].Clear()
        v.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.checker.check_model(model, full_check=True)
    return model


def prelu_net(*, in_channels: int = 3, channels: tuple[int, int] = (6, 5), hidden: int = 8, out_features: int = 4,
              size: int = 6, seed: int = 0) -> onnx.ModelProto:
    """input [N, 3, S, S] -> conv 3x3 (c1) -> BN (bn1) -> PRelu slope [6, 1, 1] (act1) -> conv 1x1 (c2) -> PRelu
    slope [1] (act2) -> GlobalAveragePool -> Flatten -> Gemm (fc1) -> PRelu slope [8] (act3) -> Gemm (fc2) ->
    'fc1' [N, 4] (insightface names its embedding 'fc1')."""
    g = _Graph(seed)
    c1, c2 = channels
    x = g.batchnorm(g.conv("input", "c1", in_channels, c1, 3), "bn1", c1)
    x = g.op("PRelu", "act1", [x, g.const("act1.slope", g.rng.uniform(0.05, 0.4, (c1, 1, 1)))])
    x = g.op("PRelu", "act2", [g.conv(x, "c2", c1, c2, 1), g.const("act2.slope", np.array([0.25]))])
    x = g.op("Flatten", "flat", [g.op("GlobalAveragePool", "pool", [x])], axis=1)
    x = g.op("PRelu", "act3", [g.gemm(x, "fc1", c2, hidden), g.const("act3.slope", g.rng.uniform(0.05, 0.4, hidden))])
    x = g.gemm(x, "fc2", hidden, out_features)
    model = g.model("prelu_net", [in_channels, size, size], x, [out_features], output_name="fc1")
    onnx.checker.check_model(model, full_check=True)
    return model


def with_unread_input(model: onnx.ModelProto, name: str = "unused_mask", features: int = 8) -> onnx.ModelProto:
    """A copy of `model` with one more graph input `name` [N, features] that no node reads."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["N", features]))
    onnx.checker.check_model(out, full_check=True)
    return out
