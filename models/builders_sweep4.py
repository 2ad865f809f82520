"""Small seeded graphs shaped like the third-party models of the fourth sweep (numpy + onnx.helper, no torch).

    batchless_image  an input with no batch axis: 'image' [3, S, S] -> Unsqueeze -> conv 3x3 + relu -> conv 3x3 +
                     relu -> GlobalAveragePool -> Flatten -> Gemm -> 'logits' [1, C] (torchvision's detectors,
                     exported as traced, take one image [3, H, W]: ssdlite320_mobilenet_v3_large)

All use ir_version 8 and opset 17.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.models.builders import IR_VERSION, OPSET, _Graph


def batchless_image(*, in_channels: int = 3, channels: int = 6, classes: int = 4, size: int = 8,
                    seed: int = 0) -> onnx.ModelProto:
    """'image' [3, S, S] (no batch axis) -> ... -> 'logits' [1, 4]."""
    g = _Graph(seed)
    g.initializers.append(numpy_helper.from_array(np.array([0], np.int64), "batch.axes"))
    x = g.op("Unsqueeze", "batch", ["image", "batch.axes"])
    x = g.relu(g.conv(x, "c1", in_channels, channels, 3), "c1")
    x = g.relu(g.conv(x, "c2", channels, channels, 3), "c2")
    x = g.op("Flatten", "flat", [g.op("GlobalAveragePool", "pool", [x])], axis=1)
    x = g.gemm(x, "fc", channels, classes)
    g.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(g.nodes, "batchless_image",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [in_channels, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
                              initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="onnxprune.models.builders_sweep4")
    onnx.checker.check_model(model, full_check=True)
    return model
