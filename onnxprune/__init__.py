"""onnxprune: learn which connections matter in any ONNX model, and return a smaller, faster one.

One import name for the whole tool. The owner's folders sit at the top of the repository and install as
subpackages of this one (pyproject.toml maps them):

    onnxprune.converter     command line, pipeline, model I/O, torch bridge
    onnxprune.passes        graph passes (one per file)
    onnxprune.calibration   data readers, metrics, sensitivity
    onnxprune.models        reference models and test-graph builders
    onnxprune.errors        the error family every layer raises

    import onnxprune
    result = onnxprune.prune("model.onnx", data="calib.npz", max_loss=0.5, output="small.onnx")

Nothing heavy is imported until it is used: `import onnxprune` loads neither torch nor onnxruntime.
"""

from __future__ import annotations

import os as _os

from onnxprune.errors import (BudgetError, CalibrationError, ConfigError, ConverterError, ModelError, ParityError,
                              PassError, UnsupportedOpError)

# From a source checkout (an editable install, or a worktree on sys.path) the subpackages are this folder's
# siblings; an installed wheel has them inside it, which the first entry already covers.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "converter", "__init__.py")):
    __path__.append(_checkout)  # noqa: F821 (a package's __path__)

__all__ = ["prune", "BudgetError", "CalibrationError", "ConfigError", "ConverterError", "ModelError",
           "ParityError", "PassError", "UnsupportedOpError"]


def __dir__() -> list[str]:
    """What `dir(onnxprune)`, help() and tab completion list: the public names, `prune` among them (loaded on first
    use, so it is not in the module's namespace until then), not this module's own helpers."""
    return sorted({*__all__, "errors"})


def __getattr__(name: str):
    if name == "prune":
        from onnxprune.interrupts import after_imports

        with after_imports():  # a Ctrl-C inside `import onnx` waits for it: no half-imported package left behind
            from onnxprune.converter.api import prune
        return prune
    raise AttributeError(f"module 'onnxprune' has no attribute '{name}'")
