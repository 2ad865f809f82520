"""`dense`: weights stay plain initializers. Nothing to encode, nothing to decode."""

from __future__ import annotations

from onnxprune.passes.storage import StorageFormat, register_format

register_format(StorageFormat("dense", encode=lambda model, names, state: [], decode=lambda model: [],
                              describe=lambda model: {}))
