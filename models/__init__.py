"""Reference LeNets (shipped .onnx + card .json), the MNIST reader and seeded test-graph builders.

Kept light on purpose: `models.paths` has the file locations, `models.builders` needs only numpy
and onnx; `models.train` is the one module here that imports torch.
"""
