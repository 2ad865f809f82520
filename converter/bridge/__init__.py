"""Torch bridge: an ONNX graph run as a trainable torch.nn.Module (the only package, with fine-tuning and
models/, that imports torch)."""

from .module import OnnxModule
from .ops import lookup, register, supported_ops

__all__ = ["OnnxModule", "lookup", "register", "supported_ops"]
