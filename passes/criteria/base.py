"""The criterion contract: a function from a weight and its context to a score of the weight's shape (higher = keep).

    @register_criterion("magnitude")
    def magnitude(ctx: ScoreContext) -> np.ndarray:
        return np.abs(ctx.values)

A criterion that needs calibration data reads it from `ctx.stats` (computed lazily, cached per weight, by
`calibration.statistics.CalibrationStats`); one that compares weights within each output row instead of across the
whole layer says so with `group="row"` (Wanda). Adding a criterion is one module here and one import in
`__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import onnx

from onnxprune.errors import ConfigError
from onnxprune.passes.weights import PrunableWeight

GROUPS = ("layer", "row")  # what a weight competes with: the whole layer, or its own output row


class Statistics(Protocol):
    """Calibration statistics a data-driven criterion may ask for, each an array (computed once per weight)."""

    def input_norms(self, weight: PrunableWeight) -> np.ndarray:
        """‖X_j‖₂ of every input feature j of the weight's op, over samples (and spatial positions)."""

    def fisher(self, weight: PrunableWeight) -> np.ndarray:
        """Mean squared per-sample gradient of the loss w.r.t. the weight (the diagonal of the empirical Fisher)."""

    def taylor(self, weight: PrunableWeight) -> np.ndarray:
        """Mean over calibration batches of |w · ∂L/∂w| (the batch's gradient)."""


class MissingStatistics(ConfigError):
    """A data-driven criterion has no statistics for one weight (an op or a place its statistics do not reach: an
    LSTM's matrices, a weight inside an If or Loop body, one reached through a Reshape). Scorers rank that weight by
    magnitude within its own layer and say so (every path ranks within a layer or an output row, never across
    layers, so a layer's ranking may come from another criterion); `where` names the weight's op for the note."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.where = where


@dataclass
class ScoreContext:
    """What a criterion may look at: the weight's current values, the model it sits in, calibration statistics."""

    weight: PrunableWeight
    values: np.ndarray
    model: onnx.ModelProto | None = None
    stats: Statistics | None = None


@dataclass(frozen=True)
class Criterion:
    name: str
    score: Callable[[ScoreContext], np.ndarray]
    needs_data: bool = False  # reads ctx.stats (calibration data: --data)
    group: str = "layer"  # "layer" or "row" (ranked within each output row)
    summary: str = ""


CRITERIA: dict[str, Criterion] = {}
DEFAULT = "magnitude"


def register_criterion(name: str, *, needs_data: bool = False, group: str = "layer"):
    """Register `fn(ctx) -> scores` under `name`; the first docstring line is its one-line summary."""
    if group not in GROUPS:
        raise ValueError(f"criterion '{name}': group '{group}' is not one of {GROUPS}")

    def wrap(fn: Callable[[ScoreContext], np.ndarray]):
        if name in CRITERIA:
            raise ValueError(f"criterion '{name}' registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        CRITERIA[name] = Criterion(name, fn, needs_data, group, summary)
        return fn

    return wrap


def get_criterion(name: str) -> Criterion:
    """The registered criterion; an unknown name is a ConfigError listing the valid ones."""
    if name not in CRITERIA:
        raise ConfigError(f"--criterion '{name}' is not one of {', '.join(CRITERIA)}.")
    return CRITERIA[name]


def check_criterion(name: str, *, has_data: bool, quality: bool = False) -> Criterion:
    """Validate a run's choice once: known, has its data, not combined with the magnitude-only quality rule."""
    criterion = get_criterion(name)
    if criterion.needs_data and not has_data:
        raise ConfigError(f"--criterion {name} scores weights on calibration data; pass --data FILE.npz "
                          "(or use --criterion magnitude).")
    if quality and name != DEFAULT:
        raise ConfigError(f"--quality is the paper's magnitude rule (|w| <= q x std); it cannot rank by --criterion "
                          f"{name}: use --sparsity or --layer NAME=S with it, or drop --criterion.")
    return criterion


def score(name: str, ctx: ScoreContext) -> np.ndarray:
    """The criterion's scores for one weight, checked to have the weight's shape."""
    criterion = get_criterion(name)
    if criterion.needs_data and ctx.stats is None:
        raise ConfigError(f"--criterion {name} needs calibration data for weight '{ctx.weight.name}'; pass --data.")
    out = np.asarray(criterion.score(ctx))
    if out.shape != ctx.values.shape:
        raise ValueError(f"criterion '{name}' returned shape {out.shape} for weight '{ctx.weight.name}' "
                         f"of shape {ctx.values.shape}")
    return out
