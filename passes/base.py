"""The pass contract: a pass takes a model (and the prune state beside it) and returns a model.

Masks and scores live in `PruneState`, not inside the graph, until the late `apply-masks` step: the graph stays
the trained model until we decide to zero it (the torch.ao.pruning idea of `weight_orig * mask`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.errors import ConverterError, PassError
from onnxprune.registry import registrar

log = logging.getLogger(__name__)


@dataclass
class PruneState:
    """Everything we know about the pruning that is not the graph itself."""

    masks: dict[str, np.ndarray] = field(default_factory=dict)  # initializer name -> bool keep-mask
    thresholds: dict[str, float] = field(default_factory=dict)  # initializer name -> magnitude threshold
    notes: list[str] = field(default_factory=list)  # things the log and the report should say
    copies: dict[str, str] = field(default_factory=dict)  # a layer's own bias -> the initializer it was copied from

    def density(self, name: str) -> float:
        m = self.masks[name]
        return float(m.mean()) if m.size else 1.0


@dataclass
class PassResult:
    model: onnx.ModelProto
    modified: bool


class Pass:
    """A small graph transformation with one job. Subclasses set `name` and implement `run`."""

    name: str = "pass"

    def requires(self, model: onnx.ModelProto, state: PruneState) -> None:
        """Raise PassError when the input does not meet this pass's preconditions."""

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        raise NotImplementedError

    def ensures(self, model: onnx.ModelProto, state: PruneState) -> None:
        """Raise PassError when the output breaks this pass's promise."""

    def __call__(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        self.requires(model, state)
        result = self.run(model, state)
        self.ensures(result.model, state)
        return result


PASSES: dict[str, type[Pass]] = {}


register_pass = registrar(PASSES, "pass")


def run_passes(passes: list[Pass], model: onnx.ModelProto, state: PruneState) -> PassResult:
    """Run passes in order; a failure names the pass and the passes already run."""
    done: list[str] = []
    modified = False
    for p in passes:
        try:
            result = p(model, state)
        except ConverterError:
            raise
        except Exception as exc:  # a bug or an unexpected graph: say where it happened
            raise PassError(
                f"pass '{p.name}' failed after [{', '.join(done) or 'none'}]: {type(exc).__name__}: {exc}"
            ) from exc
        model = result.model
        modified |= result.modified
        done.append(p.name)
        log.debug("pass %s: modified=%s", p.name, result.modified)
    return PassResult(model=model, modified=modified)
