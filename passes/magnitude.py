"""Magnitude pruning: decide, per layer, which connections to keep (masks in PruneState; the graph is not touched).

Two rules, both per layer:
  * sparsity s: drop the round(s*n) weights of lowest score (ties broken by position, so the count is exact); the
    score is |w| unless another criterion is chosen (`passes.criteria`: wanda, obd, taylor);
  * quality q (the paper's rule): drop |w| <= q * std(w), the layer's standard deviation taken on its weights
    (magnitude only).
A weight already masked stays masked: masks only ever shrink.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.errors import ConfigError
from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.criteria import MAGNITUDE, Scorer, check_criterion
from onnxprune.passes.criteria.rank import keep_mask, kth_smallest, smallest  # noqa: F401  (smallest: re-export)
from onnxprune.passes.weights import Inventory, PrunableWeight, weight_array


@dataclass(frozen=True)
class Target:
    """How hard to prune one layer: exactly one of sparsity (fraction removed) or quality (threshold / std)."""

    sparsity: float | None = None
    quality: float | None = None

    def __post_init__(self):
        if (self.sparsity is None) == (self.quality is None):
            raise ConfigError("a layer target needs exactly one of sparsity or quality.")
        if self.sparsity is not None and not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"sparsity {self.sparsity} is outside [0, 1); use e.g. 0.9 to remove 90% of weights.")
        if self.quality is not None and not (0.0 <= self.quality < 1e3):
            raise ConfigError(f"quality {self.quality} must be >= 0 (typical values 0.5 to 3).")


def layer_matches(w: PrunableWeight, pattern: str) -> bool:
    return fnmatch.fnmatchcase(w.name, pattern) or fnmatch.fnmatchcase(w.node, pattern)


def resolve_targets(
    inventory: Inventory,
    *,
    sparsity: float | None = None,
    quality: float | None = None,
    layers: dict[str, float] | None = None,
    exclude: list[str] | tuple[str, ...] = (),
) -> dict[str, Target]:
    """Turn the command-line choices into one Target per weight name; unknown patterns are errors."""
    layers = layers or {}
    if sparsity is not None and quality is not None:
        raise ConfigError("--sparsity and --quality contradict each other; pass only one of them.")
    if sparsity is None and quality is None and not layers:
        raise ConfigError("nothing to prune: pass one of --sparsity, --quality, --layer NAME=S or --max-loss.")
    names = [w.node for w in inventory.prunable] + [w.name for w in inventory.prunable]
    for pattern in list(layers) + list(exclude):
        if not any(layer_matches(w, pattern) for w in inventory.prunable):
            raise ConfigError(
                f"'{pattern}' matches no prunable layer; valid names: {', '.join(sorted(set(names))[:20])}"
                + (" …" if len(set(names)) > 20 else "")
            )
    targets: dict[str, Target] = {}
    for w in inventory.prunable:
        if any(layer_matches(w, p) for p in exclude):
            continue
        override = next((s for p, s in layers.items() if layer_matches(w, p)), None)
        if override is not None:
            targets[w.name] = Target(sparsity=override)
        elif sparsity is not None:
            targets[w.name] = Target(sparsity=sparsity)
        elif quality is not None:
            targets[w.name] = Target(quality=quality)
    return targets


def sparsity_mask(values: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the largest (1-s)·n magnitudes; exactly round(s·n) weights go."""
    return keep_mask(np.abs(values.astype(np.float32, copy=False)), sparsity)


def quality_threshold(values: np.ndarray, quality: float) -> float:
    return float(quality * np.std(values.astype(np.float64)))


def quality_mask(values: np.ndarray, quality: float) -> tuple[np.ndarray, float]:
    threshold = quality_threshold(values, quality)
    return np.abs(values.astype(np.float32)) > threshold, threshold


def quality_for_sparsity(values: np.ndarray, sparsity: float) -> float:
    """The q whose threshold q·std removes the given fraction: reports speak both languages."""
    std = float(np.std(values.astype(np.float64)))
    if std == 0 or sparsity <= 0:
        return 0.0
    mag = np.abs(values.astype(np.float64))
    k = min(int(round(sparsity * mag.size)), mag.size) - 1
    return kth_smallest(mag, max(k, 0)) / std


@register_pass("magnitude")
class MagnitudePrune(Pass):
    """Compute keep-masks by the run's criterion (magnitude by default) for the targeted weights.

    Rules:
      1. Masks are intersected with masks already in the state: a pruned weight never comes back.
      2. The graph is not modified; `apply-masks` zeroes the weights later.
    """

    def __init__(self, inventory: Inventory, targets: dict[str, Target], scoring=MAGNITUDE):
        self.inventory = inventory
        self.targets = targets
        self.scoring = scoring  # passes.criteria.Scoring: which criterion ranks the weights

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        scorer: Scorer = self.scoring.bind(model)
        for name, target in self.targets.items():
            values = weight_array(model, name)
            if target.sparsity is not None:
                mask = scorer.keep(name, values, target.sparsity)
                kept = np.abs(values[mask]) if mask.any() else np.zeros(1)
                threshold = float(np.min(kept)) if mask.any() and not mask.all() else 0.0
            else:
                check_criterion(self.scoring.criterion, has_data=True, quality=True)
                mask, threshold = quality_mask(values, target.quality)
            if name in state.masks:
                mask &= state.masks[name]
            state.masks[name] = mask
            state.thresholds[name] = threshold
        return PassResult(model=model, modified=False)
