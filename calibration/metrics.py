"""Metrics: how good a (pruned) model is on calibration data, always "higher is better", in [0, 1].

Every graph output is scored with a metric that fits what it holds (see `auto_kind`), and the run's loss is the
WORST output's loss, so pruning a head the first output does not show cannot pass unnoticed:

    kind           score of one output                                         1 pp of loss means
    accuracy       top-1 accuracy against labels                               1% of samples lose their right class
    top5           label among the 5 largest scores                            1% of samples lose it from their top 5
    agreement      top-1 (argmax per sample) equals the dense model's          1% of samples change their top-1 class
    seq_agreement  argmax over the last axis, per position, equals the dense   1% of positions change their top-1
    prob           min(agreement, 1 - mean_i max_c |p_ic - d_ic|)              1% of samples change class, or the mean
                                                                                   largest probability change is 0.01
    rel_l2         1 - mean_i ||y_i - d_i|| / ||d_i||  (floored at 0)          mean relative L2 error of 0.01
    cosine         mean_i cos(y_i, d_i)  (floored at 0)                        mean cosine similarity drops by 0.01
    exact          share of samples whose value is exactly the dense one's     1% of samples change their value

y_i is sample i (first axis) of an output, d_i the dense model's. Non-tensor outputs are compared by value: a
sequence of maps (scikit-learn's ZipMap) becomes a [N, keys] array, a sequence of tensors is stacked.
Losses are percentage points: loss = 100 * (dense - pruned) per output; an Evaluator's `dense` is its headline
output's score and its combined score is `dense - worst loss`, so every caller of `evaluate` and `loss_pp` sees
the worst output. The `Evaluator` runs the dense reference once, caches its outputs (and the data, when it fits in
memory), and scores any model or session against the same batches; `last` holds the per-output figures of the
latest score.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.calibration.readers import DataReader
from onnxprune.calibration.runtime import make_session
from onnxprune.errors import CalibrationError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 512 << 20  # calibration batches kept in memory when they fit
AUTO = "auto"
_TINY = 1e-12
_PROB_TOL = 1e-3  # rows summing to 1 within this (and values in [0, 1]) are probabilities
# Output names that say what an output holds, when its shape cannot (a [N, 4] box regression looks like 4 classes).
_EMBEDDING_NAMES = re.compile(r"embed|pool|sentence|hidden|feature|vector|encod|latent", re.I)
_REGRESSION_NAMES = re.compile(r"box|loc|regress|delta|offset|landmark|coord|kps|depth|disp", re.I)
_CLASS_NAMES = re.compile(r"logit|prob|score|cls|class|conf|pred|label|ctc|softmax", re.I)


# ---- values: what onnxruntime returns, as arrays -----------------------------------------------------------------

def as_array(value) -> np.ndarray:
    """An output value as an array: tensors as they are, a sequence of maps as [N, keys] (keys sorted), a sequence
    of tensors stacked."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) for v in value):
            keys = sorted(value[0])
            if any(sorted(v) != keys for v in value):
                raise CalibrationError("a sequence-of-maps output has different keys in different samples; it "
                                       "cannot be compared by value.")
            return np.asarray([[v[k] for k in keys] for v in value])
        try:
            return np.stack([np.asarray(v) for v in value]) if value else np.zeros((0,))
        except ValueError:
            raise CalibrationError("a sequence output holds tensors of different shapes; it cannot be compared by "
                                   "value.") from None
    return np.asarray(value)


def map_keys(value) -> list | None:
    """The sorted keys of a sequence-of-maps value (compared exactly between two models), else None."""
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return sorted(value[0])
    return None


def count_samples(value) -> int:
    """Samples in one output value (first axis; a scalar is one)."""
    arr = value if isinstance(value, np.ndarray) else None
    if arr is None:
        return len(value) if isinstance(value, list) else 1
    return len(arr) if arr.ndim else 1


# ---- per-batch scores: (sums, count); the metric is finish(sums, count) -------------------------------------------

def _check_classes(out: np.ndarray, labels: np.ndarray) -> None:
    if labels is None:
        raise CalibrationError("this metric needs labels and the batch has none; pass --labels NAME.")
    if out.ndim != 2:
        raise CalibrationError(f"the scored output has shape {list(out.shape)}; label metrics need [N, classes]. "
                               "Pick the output the labels belong to (--metric OUTPUT=accuracy) or another metric "
                               "(--metric OUTPUT=rel_l2).")
    if len(labels) != len(out):
        raise CalibrationError(f"a batch has {len(labels)} labels for {len(out)} output rows; give one label per "
                               "sample of the scored output (or score it against the dense model: drop --labels).")
    if labels.size and labels.max() >= out.shape[1]:
        raise CalibrationError(f"labels go up to {int(labels.max())} but the model has {out.shape[1]} classes "
                               f"(0..{out.shape[1] - 1}); check the labels array or the scored output.")


def _accuracy(out, ref, labels):
    _check_classes(out, labels)
    return (np.count_nonzero(out.argmax(axis=1) == labels),), len(labels)


def _top5(out, ref, labels):
    _check_classes(out, labels)
    if out.shape[1] < 5:
        raise ConfigError(f"top5 needs at least 5 classes; the output has {out.shape[1]}. Use --metric accuracy.")
    top = np.argpartition(-out, 4, axis=1)[:, :5]
    return (np.count_nonzero((top == labels[:, None]).any(axis=1)),), len(labels)


def _agreement(out, ref, labels):
    return (np.count_nonzero(_top1(out) == _top1(ref)),), _n(out)


def _seq_agreement(out, ref, labels):
    if out.ndim < 2:
        return _agreement(out, ref, labels)
    return (np.count_nonzero(out.argmax(axis=-1) == ref.argmax(axis=-1)),), int(np.prod(out.shape[:-1]))


def _prob(out, ref, labels):
    change = np.abs(_per_sample(out) - _per_sample(ref)).max(axis=1, initial=0.0)
    return (np.count_nonzero(_top1(out) == _top1(ref)), float(change.sum())), _n(out)


def _rel_l2(out, ref, labels):
    return (float(_relative_errors(out, ref).sum()),), _n(out)


def _cosine(out, ref, labels):
    a, b = _per_sample(out), _per_sample(ref)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.where((na < _TINY) & (nb < _TINY), 1.0, (a * b).sum(axis=1) / np.maximum(na * nb, _TINY))
    return (float(cos.sum()),), _n(out)


def _exact(out, ref, labels):
    a, b = _flat(out), _flat(ref)
    same = (a == b) | ((a != a) & (b != b)) if a.dtype.kind in "fc" else a == b
    return (np.count_nonzero(same.all(axis=1)),), _n(out)


@dataclass(frozen=True)
class Metric:
    """One way to score one output: `batch(out, ref, labels) -> (sums, count)`, `finish(sums, count) -> [0, 1]`."""

    batch: Callable
    finish: Callable
    needs_labels: bool
    one_pp: str  # what a loss of 1 percentage point means, for the docs and the report

    @property
    def needs_reference(self) -> bool:
        return not self.needs_labels


METRICS: dict[str, Metric] = {
    "accuracy": Metric(_accuracy, lambda s, n: s[0] / n, True, "1% of samples lose their right class"),
    "top5": Metric(_top5, lambda s, n: s[0] / n, True, "1% of samples lose the label from their top 5"),
    "agreement": Metric(_agreement, lambda s, n: s[0] / n, False, "1% of samples change their top-1 class"),
    "seq_agreement": Metric(_seq_agreement, lambda s, n: s[0] / n, False, "1% of positions change their top-1 class"),
    "prob": Metric(_prob, lambda s, n: min(s[0] / n, max(0.0, 1.0 - s[1] / n)), False,
                   "1% of samples change class, or a mean largest probability change of 0.01"),
    "rel_l2": Metric(_rel_l2, lambda s, n: max(0.0, 1.0 - s[0] / n), False, "a mean relative L2 error of 0.01"),
    "cosine": Metric(_cosine, lambda s, n: min(1.0, max(0.0, s[0] / n)), False, "mean cosine similarity 0.01 lower"),
    "exact": Metric(_exact, lambda s, n: s[0] / n, False, "1% of samples change their value"),
}
NEEDS_LABELS = {k for k, m in METRICS.items() if m.needs_labels}
NEEDS_REFERENCE = set(METRICS) - NEEDS_LABELS


def _mismatch(kind: str, ref: np.ndarray) -> tuple[tuple, int]:
    """A batch whose output shape differs from the dense model's: every sample of it counts as lost (relative
    error 1, no agreement, cosine 0)."""
    n = _n(ref)
    if kind == "rel_l2":
        return (float(n),), n
    if kind == "prob":
        return (0.0, float(n)), n
    if kind == "seq_agreement" and ref.ndim >= 2:
        return (0.0,), int(np.prod(ref.shape[:-1]))
    return (0.0,), n


def _n(x: np.ndarray) -> int:
    return len(x) if x.ndim else 1


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(len(x), -1) if x.ndim else x.reshape(1, 1)


def _per_sample(x: np.ndarray) -> np.ndarray:
    return _flat(np.asarray(x, dtype=np.float64))


def _top1(x: np.ndarray) -> np.ndarray:
    return _flat(x).argmax(axis=1)


def _relative_errors(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    a, b = _per_sample(out), _per_sample(ref)
    return np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), _TINY)


# ---- choosing ----------------------------------------------------------------------------------------------------

def _is_probability(arr: np.ndarray) -> bool:
    """Values in [0, 1] that sum to 1 over the last axis."""
    if arr.dtype.kind != "f" or arr.ndim < 2 or arr.shape[-1] < 2 or arr.size == 0 or not np.isfinite(arr).all():
        return False
    return bool(arr.min() >= 0.0 and arr.max() <= 1.0 and np.allclose(arr.sum(axis=-1), 1.0, atol=_PROB_TOL))


def auto_kind(name: str, value) -> str:
    """The metric that fits one output, from its dense value (first batch) and its name.

    Rules, first match wins:
      1. a sequence of maps (ZipMap) -> prob when it holds probabilities, else rel_l2; other non-float values
         (int labels, strings, bools) -> exact;
      2. one number per sample ([N], [N, 1], scalars) -> rel_l2 (regression);
      3. the name says embedding (embed, pool, hidden, feature, ...) -> cosine; it says regression (box, loc,
         delta, landmark, ...) -> rel_l2;
      4. [N, C] -> prob when the rows are probabilities, else agreement (class scores, logits);
      5. [N, ..., C] whose last axis holds probabilities or whose name says class scores -> seq_agreement
         (per-position outputs: sequences, anchors); anything else (feature maps, audio, images) -> rel_l2.
    """
    if map_keys(value) is not None:
        return "prob" if _is_probability(as_array(value).astype(np.float64)) else "rel_l2"
    arr = as_array(value)
    if arr.dtype.kind not in "fc":
        return "exact"
    if arr.ndim <= 1 or (arr.ndim == 2 and arr.shape[1] == 1):
        return "rel_l2"
    if _EMBEDDING_NAMES.search(name):
        return "cosine"
    if _REGRESSION_NAMES.search(name):
        return "rel_l2"
    if arr.ndim == 2:
        return "prob" if _is_probability(arr) else "agreement"
    if arr.shape[-1] >= 2 and (_is_probability(arr) or _CLASS_NAMES.search(name)):
        return "seq_agreement"
    return "rel_l2"


def parse_metric_spec(spec) -> tuple[str | None, dict[str, str]]:
    """`--metric` values -> (a KIND for the headline output or None, {OUTPUT: KIND} named outputs).

    Accepts None, "KIND", "OUTPUT=KIND", a list of those, or a dict {OUTPUT: KIND}."""
    if spec is None:
        return None, {}
    if isinstance(spec, Mapping):
        return None, {str(k): str(v) for k, v in spec.items()}
    items = [spec] if isinstance(spec, str) else list(spec)
    headline, named = None, {}
    for item in items:
        name, sep, kind = str(item).rpartition("=")
        if not sep:
            if headline is not None:
                raise ConfigError(f"--metric {headline} and --metric {kind}: give one bare KIND at most; name the "
                                  "outputs for more (--metric OUTPUT=KIND).")
            headline = kind
        elif not name or not kind:
            raise ConfigError(f"--metric '{item}' is not OUTPUT=KIND; e.g. --metric logits=agreement.")
        else:
            named[name] = kind
    if headline is not None and named:
        raise ConfigError(f"--metric {headline} together with --metric OUTPUT=KIND: name every output you want "
                          f"scored, e.g. --metric OUTPUT={headline}.")
    return headline, named


def _check_kind(kind: str, has_labels: bool, where: str) -> None:
    if kind not in METRICS:
        raise ConfigError(f"unknown metric '{kind}'{where}; choose one of {', '.join(METRICS)}.")
    if METRICS[kind].needs_labels and not has_labels:
        raise ConfigError(f"metric '{kind}'{where} needs labels and the data has none; pass --labels NAME or use "
                          "--metric agreement.")


def _declared(info: onnx.ValueInfoProto) -> tuple | None:
    """Declared shape of a float tensor output (ints or None per dim); None for other types or no shape."""
    tt = info.type.tensor_type if info.type.HasField("tensor_type") else None
    if tt is None or not tt.HasField("shape") or tt.elem_type not in _FLOAT_TYPES:
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def _labels_output(infos) -> str | None:
    """The output the labels belong to: the first float [N, C] output (C >= 2) not named as regression/embedding."""
    for info in infos:
        shape = _declared(info)
        if (shape is not None and len(shape) == 2 and (shape[1] is None or shape[1] >= 2)
                and not _REGRESSION_NAMES.search(info.name) and not _EMBEDDING_NAMES.search(info.name)):
            return info.name
    return None


def metric_plan(model: onnx.ModelProto, has_labels: bool, spec=None, *, output: str | None = None) -> dict[str, str]:
    """{output: metric kind or "auto"} for the outputs to score, in graph order; the first is the headline.

    Without names every graph output is scored (AUTO ones are chosen from the dense values by `auto_kind`); labels
    go to the first class-score output (accuracy); a bare KIND replaces the headline's metric. `--metric
    OUTPUT=KIND` (or `output`) scores only the outputs named."""
    infos = list(model.graph.output)
    names = [o.name for o in infos]
    headline, named = parse_metric_spec(spec)
    if output is not None:
        named = {output: headline or AUTO, **named}
        headline = None
    if named:
        for name, kind in named.items():
            if name not in names:
                raise ConfigError(f"output '{name}' (--metric {name}={kind}) is not a graph output; valid outputs: "
                                  f"{', '.join(names)}.")
            if kind != AUTO:
                _check_kind(kind, has_labels, f" for output '{name}'")
        return {n: named[n] for n in names if n in named}
    plan = dict.fromkeys(names, AUTO)
    target = _labels_output(infos) if has_labels or (headline in NEEDS_LABELS) else None
    if headline is not None:
        _check_kind(headline, has_labels, "")
        first = target if headline in NEEDS_LABELS and target else names[0]
        shape = _declared(next(o for o in infos if o.name == first))
        if headline == "top5" and shape is not None and len(shape) == 2 and shape[1] is not None and shape[1] < 5:
            raise ConfigError(f"metric 'top5' needs at least 5 classes; output '{first}' has {shape[1]}.")
        plan[first] = headline
        return _headline_first(plan, first)
    if has_labels:
        if target is None:
            log.warning("no output has the shape [N, classes] the labels could belong to (outputs: %s); labels are "
                        "ignored, every output is compared with the dense model", ", ".join(names))
            return plan
        plan[target] = "accuracy"
        return _headline_first(plan, target)
    return plan


def check_metric_spec(model: onnx.ModelProto, spec) -> None:
    """Fail early (before any work) on a --metric naming an output the model lacks or a kind that is unknown."""
    headline, named = parse_metric_spec(spec)
    names = [o.name for o in model.graph.output]
    for name, kind in named.items():
        if name not in names:
            raise ConfigError(f"output '{name}' (--metric {name}={kind}) is not a graph output; valid outputs: "
                              f"{', '.join(names)}.")
    for kind in [*named.values(), *([headline] if headline else [])]:
        if kind not in METRICS:
            raise ConfigError(f"unknown metric '{kind}'; choose one of {', '.join(METRICS)}.")


def _headline_first(plan: dict[str, str], first: str) -> dict[str, str]:
    return {first: plan[first], **{k: v for k, v in plan.items() if k != first}}


def is_classifier(shape: tuple | None) -> bool:
    return shape is not None and len(shape) == 2 and shape[1] is not None and shape[1] >= 2


def _declared_shape(outputs, output: str | None) -> tuple | None:
    """Shape (ints or None) of an output from a model, a ValueInfo, an array, a shape, or a list of them."""
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


def choose_metric(outputs, has_labels: bool, override: str | None = None, *, output: str | None = None) -> str:
    """The metric of ONE output from its declared shape: the override if valid, else accuracy / agreement for
    classifiers, rel_l2 for the rest. (Whole models: `metric_plan`, which scores every output.)"""
    shape = _declared_shape(outputs, output)
    if override is not None:
        _check_kind(override, has_labels, "")
        if override == "top5" and shape is not None and len(shape) == 2 and shape[1] is not None and shape[1] < 5:
            raise ConfigError(f"metric 'top5' needs at least 5 classes; the output has {shape[1]}.")
        return override
    if is_classifier(shape):
        return "accuracy" if has_labels else "agreement"
    if has_labels:
        log.warning("the scored output has shape %s, not [N, classes]: labels are ignored, metric rel_l2; score "
                    "another output with --metric OUTPUT=accuracy", shape)
    return "rel_l2"


# ---- evaluation --------------------------------------------------------------------------------------------------

class Evaluator:
    """Scores models on a reader's batches, every planned output with its own metric; the dense reference runs once.

    `metric`: None (every output, metrics chosen automatically), a KIND (the headline output's metric), "OUTPUT=KIND"
    strings or a dict {OUTPUT: KIND} (only those outputs). `output` scores that one output only. `dense` is the
    headline output's own score (1.0 for the label-free metrics); None without a reference. `evaluate` returns
    `dense - worst output loss`; `last` holds the per-output figures of the latest score.
    """

    def __init__(self, reader: DataReader, metric=None, reference_model: onnx.ModelProto | None = None,
                 output: str | None = None, *, cache_bytes: int = DEFAULT_CACHE_BYTES, optimize: bool = True):
        self.reader, self.optimize = reader, optimize
        if reference_model is not None:
            self.plan = metric_plan(reference_model, reader.has_labels, metric, output=output)
        else:
            self.plan = self._plan_without_reference(metric, output)
        self._cached = self._cache_batches(cache_bytes)
        self.labels: list[np.ndarray | None] = [lab for _, lab in self.batches()]
        self.num_samples = sum(feed_samples(f, self.reader) for f, _ in self.batches()) if self._cached else None
        self.reference_all: list[tuple] | None = None
        self.reference: list[np.ndarray] | None = None
        self.dense: float | None = None
        self.dense_by: dict[str, float] = {}
        self.last: dict[str, dict] = {}
        if reference_model is not None:
            self.reference_all = list(self.run_all(reference_model))
            self._resolve_auto()
            self.reference = [as_array(b[0]) for b in self.reference_all]
            if not getattr(reader, "per_feed", False):  # per feed, a "sample" is a feed (reader.num_samples)
                self.num_samples = sum(count_samples(b[0]) for b in self.reference_all)
            self.dense_by = self._per_output(self.reference_all)
            self.dense = self.dense_by[self.output]
            self.last = {}

    def _plan_without_reference(self, metric, output) -> dict[str, str]:
        headline, named = parse_metric_spec(metric)
        if named or headline is None:
            raise ConfigError("without a reference model only one label metric can be scored; pass metric="
                              "'accuracy' (or 'top5') and output=NAME, or give reference_model.")
        _check_kind(headline, self.reader.has_labels, "")
        if METRICS[headline].needs_reference:
            raise ConfigError(f"metric '{headline}' compares against the dense model; give reference_model.")
        return {output or "": headline}

    def _resolve_auto(self) -> None:
        first = self.reference_all[0] if self.reference_all else ()
        for (name, kind), value in zip(list(self.plan.items()), first):
            if kind == AUTO:
                self.plan[name] = auto_kind(name, value)
        log.info("scored outputs: %s", ", ".join(f"{n} ({k})" for n, k in self.plan.items()))

    @property
    def scored_outputs(self) -> list[str]:
        """The scored outputs, headline first ("" = the session's first output, when there is no reference)."""
        return list(self.plan)

    @property
    def output(self) -> str | None:
        return self.scored_outputs[0] or None

    @property
    def metric(self) -> str:
        kinds = list(self.plan.values())
        return kinds[0] if len(kinds) == 1 else f"worst of {len(kinds)} outputs"

    def _cache_batches(self, budget: int):
        n = self.reader.num_samples
        if n is None:
            return None
        first = next(iter(self.reader.batches()), None)
        if first is None:
            raise CalibrationError(f"{self.reader.description}: no batches; the data is empty.")
        feeds, _ = first
        per_sample = sum(np.asarray(a).nbytes for a in feeds.values()) / max(1, feed_samples(feeds, self.reader))
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

    def run_all(self, model_or_session, extra_feeds: dict[str, np.ndarray] | None = None) -> Iterator[tuple]:
        """The scored outputs, batch by batch: a tuple of values in the order of `outputs`."""
        sess = self.session(model_or_session)
        names = [i.name for i in sess.get_inputs()]
        have = [o.name for o in sess.get_outputs()]
        wanted = [n or have[0] for n in self.plan]
        missing = [n for n in wanted if n not in have]
        if missing:
            raise ConfigError(f"output '{missing[0]}' is not an output of the model; choose one of {have}.")
        extra = extra_feeds or {}
        for feeds, _ in self.batches():
            yield tuple(sess.run(wanted, {**{k: v for k, v in feeds.items() if k in names}, **extra}))

    def run(self, model_or_session, extra_feeds: dict[str, np.ndarray] | None = None) -> Iterator[np.ndarray]:
        """The headline output, batch by batch, as arrays."""
        return (as_array(values[0]) for values in self.run_all(model_or_session, extra_feeds))

    def fill(self, names: list[str], values, batch: int) -> tuple:
        """One batch of all scored outputs from the `values` of `names`; the others are the reference's (a weight
        that cannot reach an output leaves it as it is)."""
        values = list(values)
        if len(self.plan) == 1 and len(values) == 1:
            return (values[0],)
        given = dict(zip(names, values))
        return tuple(given[n] if n in given else r for n, r in zip(self.plan, self.reference_all[batch]))

    def _per_output(self, outputs: Iterable) -> dict[str, float]:
        kinds = list(self.plan.items())
        sums: list = [None] * len(kinds)
        counts = [0] * len(kinds)
        refs = self.reference_all if self.reference_all is not None else [None] * len(self.labels)
        for values, ref, labels in zip(outputs, refs, self.labels, strict=True):
            if not isinstance(values, tuple):
                if len(kinds) != 1:
                    raise ConfigError(f"score() needs a tuple of {len(kinds)} outputs per batch ({self.scored_outputs}).")
                values = (values,)
            for i, ((_, kind), value) in enumerate(zip(kinds, values, strict=True)):
                out, want = as_array(value), None if ref is None else as_array(ref[i])
                if want is not None and out.shape != want.shape:  # data-dependent shapes (detections after NMS)
                    s, n = _mismatch(kind, want)
                else:
                    s, n = METRICS[kind].batch(out, want, labels)
                sums[i] = np.asarray(s, dtype=np.float64) + (0.0 if sums[i] is None else sums[i])
                counts[i] += n
        if not counts or min(counts) == 0:
            raise CalibrationError("no samples were scored; the calibration data is empty.")
        return {name: float(METRICS[kind].finish(sums[i], counts[i])) for i, (name, kind) in enumerate(kinds)}

    def score(self, outputs: Iterable) -> float:
        """The combined metric of per-batch outputs given in the order of `batches()`: a tuple of the scored
        outputs per batch (or the one array when a single output is scored). Per-output figures go to `last`."""
        values = self._per_output(outputs)
        self.last = {name: self._figure(name, value) for name, value in values.items()}
        if self.dense is None:
            return values[self.scored_outputs[0]]
        worst = max(self.dense_by[n] - v for n, v in values.items())
        return self.dense - worst

    def _figure(self, name: str, value: float) -> dict:
        before = self.dense_by.get(name)
        kind = self.plan[name]
        return {"metric": kind, "before": before, "after": value,
                "loss_pp": None if before is None else 100.0 * (before - value), "one_pp": METRICS[kind].one_pp}

    def evaluate(self, model_or_session, extra_feeds: dict[str, np.ndarray] | None = None) -> float:
        return self.score(self.run_all(model_or_session, extra_feeds))

    def outputs_of(self, model_or_session) -> list[np.ndarray]:
        """Every scored output of a model, concatenated over the batches (arrays; maps by value)."""
        batches = list(self.run_all(model_or_session))
        return [np.concatenate([as_array(b[i]) for b in batches]) for i in range(len(self.plan))]

    def output_errors(self, model_or_session) -> dict[str, dict]:
        """`output_error` of every scored output of a model against the reference."""
        if self.reference_all is None:
            raise ConfigError("output errors compare against the dense model; build the Evaluator with "
                              "reference_model.")
        got = list(self.run_all(model_or_session))
        return {name: output_error([b[i] for b in got], [r[i] for r in self.reference_all])
                for i, name in enumerate(self.plan)}

    def outputs(self, model_or_session, extra_feeds: dict[str, np.ndarray] | None = None) -> np.ndarray:
        return np.concatenate(list(self.run(model_or_session, extra_feeds)))

    def loss_pp(self, value: float) -> float:
        """Loss against the dense score in percentage points (positive = worse)."""
        if self.dense is None:
            raise ConfigError("the dense score is unknown; build the Evaluator with reference_model.")
        return 100.0 * (self.dense - value)


def feed_samples(feeds: dict, reader) -> int:
    """Samples in one batch: its first array's first axis, or one for a feed read as is."""
    if getattr(reader, "per_feed", False):
        return 1
    first = np.asarray(next(iter(feeds.values())))
    return len(first) if first.ndim else 1


def output_error(a_outputs, b_outputs) -> dict[str, float | None]:
    """How far outputs a are from reference outputs b: max_abs, max_rel / mean_rel (per-sample relative L2
    error ||a_i - b_i|| / ||b_i||) and top-1 agreement (None when the output is not [N, classes]).

    Per-batch lists are compared batch by batch (feeds of their own shapes are never concatenated); non-tensor
    values are compared as arrays (`as_array`); non-float ones (labels, ids) by equality: agreement = equal share."""
    batched = [isinstance(x, list) and not _is_value_list(x) for x in (a_outputs, b_outputs)]
    if all(batched) and len(a_outputs) == len(b_outputs):
        pairs = list(zip(a_outputs, b_outputs))
    else:  # one side whole: join the other
        pairs = [tuple(_joined(x) if is_list else x for x, is_list in zip((a_outputs, b_outputs), batched))]
    rel, agree, diffs, exact = [], [], [], False
    for a, b in pairs:
        a, b = as_array(a), as_array(b)
        if a.shape != b.shape:
            if len(pairs) == 1:
                raise ConfigError(f"outputs of shape {list(a.shape)} and {list(b.shape)} cannot be compared.")
            rel.append(np.ones(_n(b)))  # a batch of another shape (data-dependent): every sample moved
            agree.append(np.zeros(_n(b), dtype=bool))
            continue
        if a.size == 0:
            continue
        if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":  # labels, ids, strings: equal or not
            exact = True
            agree.append((_flat(a) == _flat(b)).all(axis=1))
            continue
        rel.append(_relative_errors(a, b))
        diffs.append(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
        if is_classifier(a.shape):
            agree.append(_top1(a) == _top1(b))
    agreement = float(np.mean(np.concatenate(agree))) if agree else None
    if exact:
        return {"max_abs": None, "max_rel": None, "mean_rel": None, "agreement": agreement}
    if not rel:
        return {"max_abs": 0.0, "max_rel": 0.0, "mean_rel": 0.0, "agreement": None}
    rel_all = np.concatenate(rel)
    return {"max_abs": max(diffs), "max_rel": float(rel_all.max()), "mean_rel": float(rel_all.mean()),
            "agreement": agreement}


def _is_value_list(x: list) -> bool:
    """A ZipMap value (a list of maps) rather than a list of per-batch values."""
    return bool(x) and isinstance(x[0], Mapping)


def _joined(outputs: list) -> np.ndarray:
    parts = [as_array(o) for o in outputs]
    return np.concatenate(parts) if all(p.ndim for p in parts) else np.stack(parts)
