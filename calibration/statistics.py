"""Calibration statistics for the data-driven criteria (passes.criteria), computed lazily and cached per weight.

One object per model state. The first request of a kind computes it for every prunable weight at once (one pass over
the data), later requests read the cache:

    input_norms  ‖X_j‖₂ of each input feature of the weight's op      onnxruntime: the op's data input is exposed
                 (Conv: channel c over samples and positions)          as a graph output (wanda)
    fisher       mean over samples of (∂L_i/∂w)²                       torch bridge, injected as `gradients` (obd)
    taylor       mean over batches of |w · ∂L_b/∂w|                    torch bridge, injected as `gradients` (taylor)

Only the first `max_samples` samples of the reader are read (in the reader's order: deterministic).

    x ─ Gemm fc1 ─ Relu ─▶ h ─ Gemm fc2 …      fc2's norms: ‖h_j‖ over samples, for each of its 300 inputs j
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import onnx

from onnxprune.calibration.runtime import make_session, with_outputs
from onnxprune.errors import CalibrationError, ConfigError
from onnxprune.passes.criteria.base import MissingStatistics
from onnxprune.passes.weights import PrunableWeight, find_prunable

log = logging.getLogger(__name__)

STATS_SAMPLES = 1024  # calibration samples a criterion's statistics are taken on (the first ones of --data)
# Which input of a weight op carries the data, given the input index of the weight.
DATA_INPUT = {("Conv", 1): 0, ("ConvTranspose", 1): 0, ("Gemm", 1): 0, ("Gemm", 0): 1, ("MatMul", 1): 0,
              ("MatMul", 0): 1}

# where each statistic reaches (a weight elsewhere is ranked by magnitude: passes.criteria.MissingStatistics)
WHERE = {"input_norms": "Conv, ConvTranspose, Gemm and MatMul weights of the main graph whose input axis is known",
         "fisher": "weights the torch bridge differentiates", "taylor": "weights the torch bridge differentiates"}
OTHERS = {"input_norms": "magnitude, or obd/taylor (gradients through the torch bridge)",
          "fisher": "magnitude or wanda", "taylor": "magnitude or wanda"}  # what ranks without this statistic
# gradients(model, weight names, batches, kind, seed, per_feed) -> {name: array of the weight's shape}
Gradients = Callable[..., dict[str, np.ndarray]]


class CalibrationStats:
    """Statistics of one model state on calibration data (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto, reader, *, gradients: Gradients | None = None,
                 max_samples: int = STATS_SAMPLES, seed: int = 0):
        self.model, self.reader, self.gradients = model, reader, gradients
        self.max_samples, self.seed = max_samples, seed
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self._weights: list[PrunableWeight] | None = None

    def batches(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """The reader's batches, cut after `max_samples` samples."""
        left = self.max_samples
        per_feed = self.per_feed
        for feeds, labels in self.reader.batches():
            n = 1 if per_feed else len(next(iter(feeds.values())))  # per feed, a sample is a feed: never cut
            if n > left:
                feeds = {k: v[:left] for k, v in feeds.items()}
                labels = None if labels is None else labels[:left]
                n = left
            yield feeds, labels
            left -= n
            if left <= 0:
                return

    @property
    def per_feed(self) -> bool:
        """The reader yields complete feeds as they are (a time-major input, a scalar): axis 0 need not be samples."""
        return bool(getattr(self.reader, "per_feed", False))

    def input_norms(self, weight: PrunableWeight) -> np.ndarray:
        return self._get("input_norms", weight, lambda: input_norms(self.model, self.prunable(), self.batches()))

    def fisher(self, weight: PrunableWeight) -> np.ndarray:
        return self._get("fisher", weight, lambda: self._grads("fisher"))

    def taylor(self, weight: PrunableWeight) -> np.ndarray:
        return self._get("taylor", weight, lambda: self._grads("taylor"))

    def prunable(self) -> list[PrunableWeight]:
        if self._weights is None:
            self._weights = find_prunable(self.model, with_macs=False).prunable
        return self._weights

    def _get(self, kind: str, weight: PrunableWeight, compute) -> np.ndarray:
        if kind not in self._cache:
            self._cache[kind] = compute()
        table = self._cache[kind]
        if not table:  # no weight of the model: nothing to rank by
            raise ConfigError(f"no weight of this model has {kind} statistics (they reach {WHERE[kind]}); use "
                              f"--criterion {OTHERS[kind]}.")
        if weight.name not in table:
            raise MissingStatistics(f"no {kind} statistics for weight '{weight.name}' of {weight.op_type} "
                                    f"'{weight.node}'", f"{weight.op_type} '{weight.node}'")
        return table[weight.name]

    def _grads(self, kind: str) -> dict[str, np.ndarray]:
        if self.gradients is None:
            raise ConfigError(f"{kind} statistics need gradients through the torch bridge; build the statistics "
                              "with converter.gradients.calibration_scoring (torch installed).")
        names = [w.name for w in self.prunable()]
        return self.gradients(self.model, names, self.batches, kind=kind, seed=self.seed, per_feed=self.per_feed)


def input_norms(model: onnx.ModelProto, weights: list[PrunableWeight], batches) -> dict[str, np.ndarray]:
    """{weight: ‖X_j‖₂ of its op's data input per input feature, shaped to broadcast against the weight}."""
    nodes = {n.name: n for n in model.graph.node}
    tensors = {}
    for w in weights:
        index = DATA_INPUT.get((w.op_type, w.input_index))
        node = nodes.get(w.node)
        if index is not None and node is not None and w.in_axis is not None and index < len(node.input):
            tensors[w.name] = node.input[index]
    wanted = sorted(set(tensors.values()))
    if not wanted:
        return {}
    session = make_session(with_outputs(model, wanted), optimize=False)
    feed_names = {i.name for i in session.get_inputs()}
    sums: dict[str, np.ndarray] = {}
    for feeds, _ in batches:
        given = {k: v for k, v in feeds.items() if k in feed_names}
        computed = [t for t in wanted if t not in given]
        values = dict(zip(computed, session.run(computed, given))) if computed else {}
        values.update({t: given[t] for t in wanted if t in given})
        for w in weights:
            if w.name in tensors:
                sq = _feature_squares(nodes[w.node], np.asarray(values[tensors[w.name]], dtype=np.float64))
                sums[w.name] = sums.get(w.name, 0.0) + sq
    if not sums:
        raise CalibrationError("the calibration data gave no batch to take input norms on; pass --data with samples.")
    return {w.name: _broadcast(nodes[w.node], w, np.sqrt(sums[w.name])) for w in weights if w.name in sums}


def _feature_squares(node: onnx.NodeProto, x: np.ndarray) -> np.ndarray:
    """Σ x² per input feature: channel axis 1 for convolutions, the last (contracted) axis for Gemm/MatMul."""
    if node.op_type in ("Conv", "ConvTranspose"):
        return np.square(np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)).sum(axis=1)
    if node.op_type == "Gemm" and _attr(node, "transA", 0) and x.ndim == 2:
        x = x.T
    return np.square(x.reshape(-1, x.shape[-1])).sum(axis=0)


def _broadcast(node: onnx.NodeProto, w: PrunableWeight, norms: np.ndarray) -> np.ndarray:
    """The per-feature norms laid along the weight's input axis; a grouped Conv picks each output's own channels."""
    shape = [1] * len(w.shape)
    groups = _attr(node, "group", 1) if node.op_type == "Conv" else 1
    if groups > 1:  # W [O, C/g, k...]: output o reads channels (o // (O/g))·(C/g) + j
        out, per = w.shape[0], w.shape[1]
        first = (np.arange(out) // (out // groups)) * per
        return norms[first[:, None] + np.arange(per)[None, :]].reshape([out, per] + shape[2:])
    shape[w.in_axis] = -1
    return norms.reshape(shape)


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default
