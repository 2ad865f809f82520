"""Metrics: how good a (pruned) model is on calibration data, always "higher is better", in [0, 1].

    accuracy   top-1 accuracy against labels                      classifiers with labels
    top5       label among the 5 largest logits                   classifiers with >= 5 classes and labels
    agreement  top-1 agrees with the dense model                  classifiers without labels
    rel_l2     1 - mean_i ||y_i - d_i|| / ||d_i||  (floored at 0)  anything else: embeddings, maps, regression
    cosine     mean_i cos(y_i, d_i)  (floored at 0)               anything, on request

y_i is the scored output of sample i, d_i the dense model's. A classifier output is 2-D [N, C] with C >= 2.
Reports show these as percentages and losses as percentage points (pp): loss = 100 * (dense - pruned).
The `Evaluator` runs the dense reference once, caches its outputs (and the data, when it fits in memory), and
scores any model or session against the same batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.calibration.readers import DataReader
from onnxprune.calibration.runtime import make_session
from onnxprune.errors import CalibrationError, ConfigError

log = logging.getLogger(__name__)

NEEDS_LABELS = {"accuracy", "top5"}
NEEDS_REFERENCE = {"agreement", "rel_l2", "cosine"}
DEFAULT_CACHE_BYTES = 512 << 20  # calibration batches kept in memory when they fit
_TINY = 1e-12


# ---- per-batch scores: (sum over samples, count); the metric is finish(sum, count) ---------------------------

def _check_classes(out: np.ndarray, labels: np.ndarray) -> None:
    if out.ndim != 2:
        raise CalibrationError(f"the scored output has shape {list(out.shape)}; label metrics need [N, classes]. "
                               "Pick another output (--output) or metric (--metric rel_l2).")
    if labels.size and labels.max() >= out.shape[1]:
        raise CalibrationError(f"labels go up to {int(labels.max())} but the model has {out.shape[1]} classes "
                               f"(0..{out.shape[1] - 1}); check the labels array or the scored output.")


def _accuracy(out, ref, labels):
    _check_classes(out, labels)
    return float(np.count_nonzero(out.argmax(axis=1) == labels)), len(labels)


def _top5(out, ref, labels):
    _check_classes(out, labels)
    if out.shape[1] < 5:
        raise ConfigError(f"top5 needs at least 5 classes; the output has {out.shape[1]}. Use --metric accuracy.")
    top = np.argpartition(-out, 4, axis=1)[:, :5]
    return float(np.count_nonzero((top == labels[:, None]).any(axis=1))), len(labels)


def _agreement(out, ref, labels):
    return float(np.count_nonzero(_top1(out) == _top1(ref))), len(out)


def _rel_l2(out, ref, labels):
    return float(_relative_errors(out, ref).sum()), len(out)


def _cosine(out, ref, labels):
    a, b = _per_sample(out), _per_sample(ref)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.where((na < _TINY) & (nb < _TINY), 1.0, (a * b).sum(axis=1) / np.maximum(na * nb, _TINY))
    return float(cos.sum()), len(out)


METRICS: dict[str, tuple[Callable, Callable[[float, int], float]]] = {
    "accuracy": (_accuracy, lambda s, n: s / n),
    "top5": (_top5, lambda s, n: s / n),
    "agreement": (_agreement, lambda s, n: s / n),
    "rel_l2": (_rel_l2, lambda s, n: max(0.0, 1.0 - s / n)),
    "cosine": (_cosine, lambda s, n: min(1.0, max(0.0, s / n))),
}


def _per_sample(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1) if x.ndim else x.reshape(1, 1)


def _top1(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(len(x), -1).argmax(axis=1)


def _relative_errors(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    a, b = _per_sample(out), _per_sample(ref)
    return np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), _TINY)


# ---- choosing --------------------------------------------------------------------------------------------------

def _declared_shape(outputs, output: str | None) -> tuple | None:
    """Shape (ints or None) of the scored output from a model, a ValueInfo, an array, a shape, or a list of them."""
    if isinstance(outputs, onnx.ModelProto):
        infos = list(outputs.graph.output)
        info = next((o for o in infos if o.name == output), None) if output else (infos[0] if infos else None)
        if info is None:
            raise ConfigError(f"output '{output}' is not a graph output; choose one of {[o.name for o in infos]}.")
        return _declared_shape(info, None)
    if isinstance(outputs, onnx.ValueInfoProto):
        tt = outputs.type.tensor_type
        if not tt.HasField("shape"):
            return None
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    if isinstance(outputs, np.ndarray):
        return outputs.shape
    if isinstance(outputs, dict):
        return _declared_shape(outputs[output] if output else next(iter(outputs.values())), None)
    if isinstance(outputs, (list, tuple)) and outputs and not isinstance(outputs[0], (int, type(None))):
        return _declared_shape(outputs[0], None)
    if isinstance(outputs, (list, tuple)):
        return tuple(outputs)
    return None


def is_classifier(shape: tuple | None) -> bool:
    return shape is not None and len(shape) == 2 and shape[1] is not None and shape[1] >= 2


def choose_metric(outputs, has_labels: bool, override: str | None = None, *, output: str | None = None) -> str:
    """Pick the metric: the override if valid, else accuracy / agreement for classifiers, rel_l2 for the rest."""
    shape = _declared_shape(outputs, output)
    if override is not None:
        if override not in METRICS:
            raise ConfigError(f"unknown metric '{override}'; choose one of {', '.join(METRICS)}.")
        if override in NEEDS_LABELS and not has_labels:
            raise ConfigError(f"metric '{override}' needs labels and the data has none; pass --labels NAME or use "
                              "--metric agreement.")
        if override == "top5" and shape is not None and len(shape) == 2 and shape[1] is not None and shape[1] < 5:
            raise ConfigError(f"metric 'top5' needs at least 5 classes; the output has {shape[1]}.")
        return override
    if is_classifier(shape):
        return "accuracy" if has_labels else "agreement"
    if has_labels:
        log.warning("the scored output has shape %s, not [N, classes]: labels are ignored, metric rel_l2", shape)
    return "rel_l2"


# ---- evaluation ------------------------------------------------------------------------------------------------

class Evaluator:
    """Scores models on a reader's batches with one metric; the dense reference runs once.

    `dense` is the reference's own score (1.0 for the label-free metrics); None without a reference.
    """

    def __init__(self, reader: DataReader, metric: str, reference_model: onnx.ModelProto | None = None,
                 output: str | None = None, *, cache_bytes: int = DEFAULT_CACHE_BYTES, optimize: bool = True):
        if metric not in METRICS:
            raise ConfigError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}.")
        if metric in NEEDS_LABELS and not reader.has_labels:
            raise ConfigError(f"metric '{metric}' needs labels and {reader.description}; pass --labels NAME.")
        if metric in NEEDS_REFERENCE and reference_model is None:
            raise ConfigError(f"metric '{metric}' compares against the dense model; give reference_model.")
        self.reader, self.metric, self.optimize = reader, metric, optimize
        self.output = output or (reference_model.graph.output[0].name if reference_model is not None else None)
        self._cached = self._cache_batches(cache_bytes)
        self.labels: list[np.ndarray | None] = [lab for _, lab in self.batches()]
        self.num_samples = sum(len(next(iter(f.values()))) for f, _ in self.batches()) if self._cached else None
        self.reference: list[np.ndarray] | None = None
        self.dense: float | None = None
        if reference_model is not None:
            self.reference = list(self.run(reference_model))
            self.num_samples = sum(len(r) for r in self.reference)
            self.dense = self.score(self.reference)

    def _cache_batches(self, budget: int):
        n = self.reader.num_samples
        if n is None:
            return None
        first = next(iter(self.reader.batches()), None)
        if first is None:
            raise CalibrationError(f"{self.reader.description}: no batches; the data is empty.")
        feeds, _ = first
        per_sample = sum(a.nbytes for a in feeds.values()) / max(1, len(next(iter(feeds.values()))))
        if per_sample * n > budget:
            log.info("calibration data (%.0f MB) exceeds the cache budget; streaming it", per_sample * n / 2**20)
            return None
        return list(self.reader.batches())

    @property
    def cached(self) -> bool:
        """Are the calibration batches held in memory (rather than streamed from the reader each time)?"""
        return self._cached is not None

    def batches(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        return iter(self._cached) if self._cached is not None else self.reader.batches()

    def session(self, model_or_session) -> ort.InferenceSession:
        if isinstance(model_or_session, ort.InferenceSession):
            return model_or_session
        return make_session(model_or_session, optimize=self.optimize)

    def run(self, model_or_session, extra_feeds: dict[str, np.ndarray] | None = None) -> Iterator[np.ndarray]:
        """The scored output, batch by batch."""
        sess = self.session(model_or_session)
        names = [i.name for i in sess.get_inputs()]
        outputs = [o.name for o in sess.get_outputs()]
        out = self.output or outputs[0]
        if out not in outputs:
            raise ConfigError(f"output '{out}' is not an output of the model; choose one of {outputs}.")
        extra = extra_feeds or {}
        for feeds, _ in self.batches():
            yield sess.run([out], {**{k: v for k, v in feeds.items() if k in names}, **extra})[0]

    def score(self, outputs: Iterable[np.ndarray]) -> float:
        """The metric of per-batch outputs given in the order of `batches()`."""
        batch_fn, finish = METRICS[self.metric]
        total, count = 0.0, 0
        refs = self.reference if self.reference is not None else [None] * len(self.labels)
        for out, ref, labels in zip(outputs, refs, self.labels, strict=True):
            s, n = batch_fn(np.asarray(out), ref, labels)
            total, count = total + s, count + n
        if count == 0:
            raise CalibrationError("no samples were scored; the calibration data is empty.")
        return finish(total, count)

    def evaluate(self, model_or_session, extra_feeds: dict[str, np.ndarray] | None = None) -> float:
        return self.score(self.run(model_or_session, extra_feeds))

    def outputs(self, model_or_session, extra_feeds: dict[str, np.ndarray] | None = None) -> np.ndarray:
        return np.concatenate(list(self.run(model_or_session, extra_feeds)))

    def loss_pp(self, value: float) -> float:
        """Loss against the dense score in percentage points (positive = worse)."""
        if self.dense is None:
            raise ConfigError("the dense score is unknown; build the Evaluator with reference_model.")
        return 100.0 * (self.dense - value)


def output_error(a_outputs, b_outputs) -> dict[str, float | None]:
    """How far outputs a are from reference outputs b: max_abs, max_rel / mean_rel (per-sample relative L2
    error ||a_i - b_i|| / ||b_i||) and top-1 agreement (None when the output is not [N, classes])."""
    a = np.concatenate(a_outputs) if isinstance(a_outputs, list) else np.asarray(a_outputs)
    b = np.concatenate(b_outputs) if isinstance(b_outputs, list) else np.asarray(b_outputs)
    if a.shape != b.shape:
        raise ConfigError(f"outputs of shape {list(a.shape)} and {list(b.shape)} cannot be compared.")
    if a.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "mean_rel": 0.0, "agreement": None}
    rel = _relative_errors(a, b)
    agreement = float(np.mean(_top1(a) == _top1(b))) if is_classifier(a.shape) else None
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max_abs": float(diff.max()), "max_rel": float(rel.max()), "mean_rel": float(rel.mean()),
            "agreement": agreement}
