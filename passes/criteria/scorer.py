"""A criterion bound to one model state: what every pruning path holds to rank weights.

`Scoring` is the run's choice (a criterion name, and how to get calibration statistics for a model); `bind`
gives a `Scorer` for one state of the model (the dense model, or the weights after a retraining round: data-driven
statistics depend on the weights upstream, so every round binds afresh). A Scorer caches its scores per weight.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx

from onnxprune.passes.criteria.base import DEFAULT, MissingStatistics, ScoreContext, Statistics, get_criterion, score
from onnxprune.passes.criteria.rank import keep_mask
from onnxprune.passes.weights import PrunableWeight, find_prunable

log = logging.getLogger(__name__)


class Scorer:
    """Scores and keep-masks of one model state under one criterion."""

    def __init__(self, criterion: str = DEFAULT, *, weights: Mapping[str, PrunableWeight] | None = None,
                 model: onnx.ModelProto | None = None, stats: Statistics | None = None,
                 fallbacks: dict[str, str] | None = None, last: Mapping[str, np.ndarray] | None = None):
        self.criterion = get_criterion(criterion)
        self.weights = dict(weights or {})
        self.model, self.stats = model, stats
        self.fallbacks = {} if fallbacks is None else fallbacks  # {weight: its op} ranked by magnitude (no stats)
        self.last = last or {}  # {weight: bool mask}: entries ranked after every other (`rank_last`)
        self._scores: dict[str, np.ndarray] = {}

    def scores(self, name: str, values: np.ndarray) -> np.ndarray:
        if name not in self._scores:
            self._scores[name] = self.rescore(name, values)
        return self._scores[name]

    def rescore(self, name: str, values: np.ndarray) -> np.ndarray:
        """Scores of `values` for weight `name` under this state's statistics, not cached: the automatic search
        binds the dense model once and scores its current (retrained, refit) weights every step. A weight the
        criterion's statistics do not reach is ranked by magnitude (MissingStatistics), recorded in `fallbacks`."""
        if name not in self.weights and self.model is not None:  # the model says what the weight is
            self.weights = find_prunable(self.model, with_macs=False).by_name()
        ctx = ScoreContext(self.weights.get(name), values, self.model, self.stats)
        try:
            found = score(self.criterion.name, ctx)
        except MissingStatistics as missing:
            if name not in self.fallbacks:
                log.info("%s: ranked by magnitude", missing)
            self.fallbacks[name] = missing.where or name
            found = score(DEFAULT, ctx)
        return rank_last(found, self.last.get(name))

    def axis(self, name: str) -> int | None:
        """The comparison group: None for the whole layer, else the output-row axis of the weight."""
        if self.criterion.group != "row":
            return None
        w = self.weights.get(name)
        if w is None or w.out_axis is None:
            log.info("criterion %s: weight '%s' has no known output axis; ranked over the whole layer",
                     self.criterion.name, name)
            return None
        return w.out_axis

    def keep(self, name: str, values: np.ndarray, sparsity: float, current: np.ndarray | None = None) -> np.ndarray:
        """The keep-mask of `name` at `sparsity`, within `current` (never regrow). A weight with entries ranked last
        (`last`) takes the sparsity as a share of its other entries: a partly read table's level s drops s of the
        entries the data reads, as it does for a table the data reads whole."""
        last = self.last.get(name)
        if last is not None and last.shape == np.shape(values) and last.any():
            sparsity = sparsity * float((~last).sum()) / last.size
        return keep_mask(self.scores(name, values), sparsity, current, self.axis(name))

    def masks(self, values: Mapping[str, np.ndarray], targets: Mapping[str, float],
              current: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Keep-masks for every targeted weight: {name: sparsity} over {name: current values}."""
        current = current or {}
        return {n: self.keep(n, values[n], s, current.get(n)) for n, s in targets.items()}


@dataclass
class Scoring:
    """The run's criterion and where its statistics come from (`stats_for(model)`, None: no data)."""

    criterion: str = DEFAULT
    weights: Mapping[str, PrunableWeight] | None = None
    stats_for: Callable[[onnx.ModelProto], Statistics] | None = None
    _bound: tuple | None = field(default=None, repr=False, compare=False)
    fallbacks: dict = field(default_factory=dict, repr=False, compare=False)  # every bound Scorer's, shared
    # {weight: bool mask} entries every bound Scorer ranks after all others, a sparsity a share of the rest: an
    # embedding table's rows no sample reads (converter/steps/rows.py)
    last: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def needs_model(self) -> bool:
        return get_criterion(self.criterion).needs_data

    def bind(self, model: onnx.ModelProto | None = None) -> Scorer:
        """A Scorer for `model` (a data-driven criterion needs it; magnitude reads only the values). Binding the
        same model object again reuses its statistics (the scan and the budget fit share one pass)."""
        stats = None
        if self.needs_model and self.stats_for is not None and model is not None:
            if self._bound is None or self._bound[0] is not model:
                self._bound = (model, self.stats_for(model))
            stats = self._bound[1]
        return Scorer(self.criterion, weights=self.weights, model=model, stats=stats, fallbacks=self.fallbacks,
                      last=self.last)

    def note(self) -> str | None:
        """One note for the weights its statistics did not reach (ranked by magnitude), counted, or None."""
        if not self.fallbacks:
            return None
        ops = sorted(set(self.fallbacks.values()))
        shown = ", ".join(ops[:3]) + (f" and {len(ops) - 3} more" if len(ops) > 3 else "")
        return (f"--criterion {self.criterion}: its statistics do not reach {len(self.fallbacks)} weight(s) (of "
                f"{shown}); those are ranked by magnitude within their own layers")


def rank_last(scores: np.ndarray, last: np.ndarray | None) -> np.ndarray:
    """`scores` with the entries of `last` raised above every other score (finite, so sums over scores such as
    LAMP's stay finite): any sparsity up to the share of the others drops none of them."""
    if last is None or not last.any() or last.shape != scores.shape:
        return scores
    top = float(np.max(scores[~last])) if (~last).any() else 0.0
    return np.where(last, top + 1.0 + np.abs(top), scores).astype(scores.dtype, copy=False)


MAGNITUDE = Scoring()
