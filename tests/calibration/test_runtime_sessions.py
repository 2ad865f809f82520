import numpy as np
import onnx

from onnxprune.calibration.runtime import make_session, with_outputs
from onnxprune.models import builders


def test_a_transpose_output_probed_beside_the_gemm_it_feeds_builds_an_optimized_session():
    # onnxruntime's GemmTransposeFusion drops a Transpose whose output is also a graph output; probing that tensor
    # (the scan's boundary, Act%) failed with "Failed to find node output … producing output"
    model = builders.transposed_gemm(in_features=16, hidden=12, out_features=4, seed=3)
    onnx.checker.check_model(model, full_check=True)
    xt = next(n.output[0] for n in model.graph.node if n.op_type == "Transpose")
    probe = with_outputs(model, [xt])
    names = ["output", xt]
    for seed in (0, 1, 2):
        x = np.random.default_rng(seed).standard_normal((5, 16)).astype(np.float32)
        fast = make_session(probe, optimize=True).run(names, {"input": x})
        plain = make_session(probe, optimize=False).run(names, {"input": x})
        for name, a, b in zip(names, fast, plain):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(fast[1], x.T)
