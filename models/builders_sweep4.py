"""Small seeded graphs shaped like the third-party models of the fourth sweep (numpy + onnx.helper, no torch).

    batchless_image  an input with no batch axis: 'image' [3, S, S] -> Unsqueeze -> conv 3x3 + relu -> conv 3x3 +
                     relu -> GlobalAveragePool -> Flatten -> Gemm -> 'logits' [1, C] (torchvision's detectors,
                     exported as traced, take one image [3, H, W]: ssdlite320_mobilenet_v3_large)
    batchless_detector
                     one image 'image' [3, S, S] (no batch axis) -> conv 3x3 + relu -> conv 1x1 to 5 channels per
                     location -> 'scores' [D] (sigmoid of channel 0 where it passes 0.8: Greater -> NonZero ->
                     Gather) and 'boxes' [D, 4] (channels 1-4 at those locations), D data-dependent: ssdlite320's
                     detections, whose rows were counted as samples

All use ir_version 8 and opset 17.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.models.builders import IR_VERSION, OPSET, _Graph


def batchless_image(*, in_channels: int = 3, channels: int = 6, classes: int = 4, size: int = 8,
                    seed: int = 0, squeeze: bool = False) -> onnx.ModelProto:
    """'image' [3, S, S] (no batch axis) -> ... -> 'logits' [1, 4] ([4] with `squeeze`: torchvision's classifiers
    exported on one unbatched image return their logits so)."""
    g = _Graph(seed)
    g.initializers.append(numpy_helper.from_array(np.array([0], np.int64), "batch.axes"))
    x = g.op("Unsqueeze", "batch", ["image", "batch.axes"])
    x = g.relu(g.conv(x, "c1", in_channels, channels, 3), "c1")
    x = g.relu(g.conv(x, "c2", channels, channels, 3), "c2")
    x = g.op("Flatten", "flat", [g.op("GlobalAveragePool", "pool", [x])], axis=1)
    x = g.gemm(x, "fc", channels, classes)
    if squeeze:
        x = g.op("Squeeze", "unbatch", [x, "batch.axes"])
    g.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(g.nodes, "batchless_image",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [in_channels, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             [classes] if squeeze else [1, classes])],
                              initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="onnxprune.models.builders_sweep4")
    onnx.checker.check_model(model, full_check=True)
    return model


def batchless_detector(*, in_channels: int = 3, channels: int = 6, size: int = 8, threshold: float = 0.8,
                       seed: int = 0) -> onnx.ModelProto:
    """'image' [3, S, S] (no batch axis) -> ... -> 'boxes' [D, 4], 'scores' [D]: the locations whose score passes
    `threshold` (Greater -> NonZero -> Gather), D data-dependent."""
    g = _Graph(seed)
    g.initializers.append(numpy_helper.from_array(np.array([0], np.int64), "batch.axes"))
    x = g.op("Unsqueeze", "batch", ["image", "batch.axes"])
    x = g.relu(g.conv(x, "c1", in_channels, channels, 3), "c1")
    x = g.conv(x, "head", channels, 5, 1)  # [1, 5, S, S]
    g.initializers.append(numpy_helper.from_array(np.array([5, size * size], np.int64), "head.shape"))
    x = g.op("Transpose", "rows", [g.op("Reshape", "rows", [x, "head.shape"])], perm=[1, 0])  # [S*S, 5]
    g.initializers.append(numpy_helper.from_array(np.array([1, 4], np.int64), "head.split"))
    split = helper.make_node("Split", [x, "head.split"], ["logit", "box"], name="/split/Split", axis=1)
    g.nodes.append(split)
    g.initializers.append(numpy_helper.from_array(np.array([1], np.int64), "logit.axes"))
    score = g.op("Sigmoid", "score", [g.op("Squeeze", "score", ["logit", "logit.axes"])])  # [S*S]
    g.initializers.append(numpy_helper.from_array(np.array(threshold, np.float32), "threshold"))
    keep = g.op("NonZero", "keep", [g.op("Greater", "keep", [score, "threshold"])])  # [1, D]
    g.initializers.append(numpy_helper.from_array(np.array([0], np.int64), "keep.axes"))
    idx = g.op("Squeeze", "keep", [keep, "keep.axes"])  # [D]
    g.nodes.append(helper.make_node("Gather", ["box", idx], ["boxes"], name="/boxes/Gather", axis=0))
    g.nodes.append(helper.make_node("Gather", [score, idx], ["scores"], name="/scores/Gather", axis=0))
    graph = helper.make_graph(g.nodes, "batchless_detector",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [in_channels, size, size])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["D", 4]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["D"])],
                              initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="onnxprune.models.builders_sweep4")
    onnx.checker.check_model(model, full_check=True)
    return model
