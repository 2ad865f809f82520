"""Small seeded graphs shaped like the third-party models of the third sweep (numpy + onnx.helper, no torch).

    batch_of_one    a conv net whose input and output declare a fixed batch of 1 (ultralytics' default export,
                    many tf2onnx exports): images [1, 3, S, S] -> [1, C, S*S] (a detector head's layout)

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
