"""Masked fine-tuning: retrain the surviving connections of a pruned ONNX model through the torch bridge.

The paper's step 3 ("retrain the remaining connections"). The graph runs as a torch module (`converter.bridge`);
the weights under a mask and the biases/normalization scales they feed become parameters, everything else stays
constant. After every optimizer step the masks are re-applied, so a pruned weight is exactly 0.0 from the first
step to the written file; a surviving weight starts from its trained value (never re-initialised).

    loss = CE(student, labels)                                    labels given ("auto")
         | T² · KL(softmax(teacher/T) ‖ softmax(student/T))       classifier outputs, no labels (distillation)
         + Σ ||student - teacher||² / ||teacher||² per sample     other outputs, no labels (rel_l2 squared)
    w   ← SGD(momentum, L2 weight decay | L1 penalty) on the kept weights only;  w[~mask] = 0 after each step

Data is read once from the calibration reader into memory as tensors when it fits (MNIST does), then shuffled each
epoch with a seeded generator; the teacher's outputs are computed once with onnxruntime. A reader too large for
memory is streamed in its own order, the teacher run per batch.

Dropout nodes train at D_new = D_old·sqrt(C_new/C_old), C the connections of the layer feeding the dropout.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from onnxprune.calibration.runtime import declared_batch, gpu_count, input_specs, make_session, output_names
from onnxprune.converter import distributed
from onnxprune.converter.threads import torch_threads
from onnxprune.errors import ConfigError
from onnxprune.passes.apply_masks import ApplyMasks
from onnxprune.passes.base import PruneState
from onnxprune.passes.opfacts import BIAS_INPUT, CHANNEL_PRODUCERS, CONNECTION_PRESERVING
from onnxprune.passes.scopes import all_nodes, hoist_body_constants, lift_constants, readers_of
from onnxprune.passes.weights import FLOAT_TYPES, NORM_OPS, find_prunable, name_nodes

log = logging.getLogger(__name__)

Progress = Callable[[int, int, int, float, float], None]  # (epoch, batch, n_batches, loss, sparsity)

LOSSES = ("auto", "ce", "distill", "ce+distill", "mse")
REGS = ("l2", "l1", "none")
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
MEMORY_BUDGET = 2 << 30  # bytes of training inputs we are willing to hold in memory
TEACHER_CHUNK = 2048
DROPOUT_DEFAULT = 0.5
RANK_SEED = 7919  # dropout seed offset per process rank (rank 0 draws what one process draws)
# Ops between a weight's consumer and the Dropout it feeds that do not change the connection count.
# Ops between a weight's consumer and the Dropout it feeds that do not change the connection count.
TRANSPARENT = CONNECTION_PRESERVING
NORM_PARAM_INPUTS = {op: (1, 2) for op in NORM_OPS}  # scale and bias; BN running stats (3, 4) stay frozen


# ----------------------------------------------------------------------------------------------------- choices


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → CUDA when torch sees a GPU, else CPU. 'cuda' without a GPU is a ConfigError."""
    if device not in DEVICES:
        raise ConfigError(f"--device '{device}' is not one of {', '.join(DEVICES)}.")
    if device == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise ConfigError(
            f"--device cuda: torch {torch.__version__} ({build}) sees no GPU; use --device cpu or --device auto."
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and torch.version.cuda is None and gpu_count():
            log.warning("a GPU is there but torch %s is a CPU-only build: training runs on the CPU "
                        "(install a CUDA build of torch to train on the GPU)", torch.__version__)
    return torch.device(device)


def _check_choice(value, choices, option: str) -> None:
    if value not in choices:
        raise ConfigError(f"{option} '{value}' is not one of {', '.join(choices)}.")


# ---------------------------------------------------------------------------------------------- graph reading


def _float_initializers(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer if t.data_type in FLOAT_TYPES}


def _weight_nodes(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, onnx.NodeProto]:
    """The Conv/Gemm/MatMul that consumes each masked weight (through Transpose/Reshape/... chains)."""
    nodes = {n.name: n for n in all_nodes(model)}
    found = {w.name: nodes[w.node] for w in find_prunable(model, with_macs=False).prunable}
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(f"masks name tensors that are not prunable weights of the model: {', '.join(missing[:10])}.")
    return {n: found[n] for n in names}


def companions(model: onnx.ModelProto, node: onnx.NodeProto, users=None, inits=None) -> list[str]:
    """The bias and normalization parameters a weight's consumer feeds, decided by how tensors are used.

    Rules: 1. Conv/ConvTranspose/Gemm input 2. 2. Walking down a single-consumer chain from the output: an
    Add/Sub/Mul with a float initializer (a MatMul's bias, a folded-BN scale), then a BatchNormalization/
    LayerNormalization/InstanceNormalization/GroupNormalization's scale and bias (never BN's running stats).
    """
    users = users if users is not None else readers_of(model.graph)
    inits = inits if inits is not None else _float_initializers(model)
    out = []
    index = BIAS_INPUT.get(node.op_type)
    if index is not None and len(node.input) > index and node.input[index] in inits:
        out.append(node.input[index])
    current = node.output[0]
    for _ in range(4):
        after = users.get(current, [])
        if len(after) != 1:
            break
        nxt = after[0]
        if nxt.op_type in ("Add", "Sub", "Mul") and len(nxt.input) == 2:
            other = nxt.input[1] if nxt.input[0] == current else nxt.input[0]
            if other not in inits:
                break
            out.append(other)
            current = nxt.output[0]
            continue
        if nxt.op_type in NORM_PARAM_INPUTS:
            picked = [nxt.input[i] for i in NORM_PARAM_INPUTS[nxt.op_type] if i < len(nxt.input)]
            out += [n for n in picked if n in inits]
        break
    return list(dict.fromkeys(out))


def trainable_tensors(model: onnx.ModelProto, masks: dict[str, np.ndarray],
                      freeze: Iterable[str] = ()) -> dict[str, list[str]]:
    """{masked weight: [its companions]} for every masked weight not frozen (freeze takes tensor or node names)."""
    freeze = set(freeze)
    users, inits = readers_of(model.graph), _float_initializers(model)
    groups = {}
    for name, node in _weight_nodes(model, masks).items():
        if name in freeze or node.name in freeze:
            continue
        groups[name] = companions(model, node, users, inits)
    return groups


def _dropout_ratio(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> float:
    for a in node.attribute:  # opset < 12
        if a.name == "ratio":
            return float(a.f)
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in consts:
            raise ConfigError(f"Dropout '{node.name}' takes its ratio from a computed tensor; pass dropout_scale.")
        return float(consts[node.input[1]])
    return DROPOUT_DEFAULT


def dropout_ratios(model: onnx.ModelProto, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """D_new = D_old·sqrt(C_new/C_old) per Dropout node; C = connections of the weight layer feeding it.

    The feeding layer is found by walking up from the Dropout's input through element-wise ops, pools and
    reshapes to the first Conv/ConvTranspose/Gemm/MatMul; a Dropout fed by no masked layer keeps its ratio.
    """
    name_nodes(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_of = {n.name: w for w, n in _weight_nodes(model, masks).items()}
    ratios = {}
    for node in model.graph.node:
        if node.op_type != "Dropout":
            continue
        old = _dropout_ratio(node, consts)
        ratios[node.name] = old
        feeder = _feeding_layer(node.input[0], producers)
        if feeder is not None and feeder.name in weight_of:
            mask = masks[weight_of[feeder.name]]
            ratios[node.name] = old * math.sqrt(float(mask.sum()) / mask.size) if mask.size else old
    return ratios


def _feeding_layer(name: str, producers) -> onnx.NodeProto | None:
    seen = 0
    while name in producers and seen < 64:
        node = producers[name]
        if node.op_type in CHANNEL_PRODUCERS:
            return node
        if node.op_type not in TRANSPARENT:
            return None
        name = node.input[0]
        seen += 1
    return None


class MixedPrecision:
    """Autocast on CUDA (bfloat16 where the GPU has it, else float16 with a gradient scaler); nothing on the CPU.

    The parameters stay float32 (autocast casts per op), so write-back puts them in the model's dtype as before.
    """

    def __init__(self, device: torch.device):
        self.enabled = device.type == "cuda"
        self.dtype = (torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16)
        self.scaler = torch.amp.GradScaler("cuda") if self.enabled and self.dtype == torch.float16 else None

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, opt) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(opt)

    def step(self, opt) -> None:
        if self.scaler is None:
            opt.step()
            return
        self.scaler.step(opt)
        self.scaler.update()


# ---------------------------------------------------------------------------------------------------- the data


@dataclass
class TrainData:
    """Training samples as tensors (first axis = sample), with labels and the teacher's outputs when known."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor | None
    teacher: list[torch.Tensor | None] | None  # one tensor per graph output of the teacher (None: follows no sample)
    batch_size: int
    reader: object = None  # set when streaming (too large for memory): batches come from the reader
    whole: bool = False  # whole batches only (a model that runs no other batch): a short last batch is left out

    @property
    def num_samples(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else getattr(self.reader, "num_samples", 0)

    def num_batches(self, batch_size: int | None = None) -> int:
        if getattr(self.reader, "per_feed", False):
            return self.num_samples  # one step per feed
        b = batch_size or self.batch_size
        return (self.num_samples // b if self.whole else math.ceil(self.num_samples / b)) if self.num_samples else 0

    def epoch(self, generator: torch.Generator, batch_size: int | None = None, teacher_fn=None) -> Iterator[tuple]:
        """Yield (inputs, labels, teacher outputs) batches; in memory: a seeded permutation per epoch."""
        for inputs, labels, teacher, _, _ in self.shards(generator, batch_size, teacher_fn):
            yield inputs, labels, teacher

    def shards(self, generator: torch.Generator, batch_size: int | None = None, teacher_fn=None,
               shard: Callable = lambda index: index) -> Iterator[tuple]:
        """(inputs, labels, teacher, n_local, n_batch): this process's `shard` of every global batch.

        Every process draws the same permutation, so the shards of one batch are disjoint and cover it. An empty
        shard (a last batch smaller than the number of processes) yields one sample with n_local = 0, to be
        weighted by zero: every process still takes part in every step.
        """
        if self.reader is not None:
            yield from self._stream(teacher_fn, shard)
            return
        b = batch_size or self.batch_size
        order = torch.randperm(self.num_samples, generator=generator)
        for i in range(0, len(order) - (len(order) % b if self.whole else 0), b):
            batch = order[i : i + b]
            idx = shard(batch)
            n_local = len(idx)
            idx = idx if n_local else batch[:1]
            yield ({k: v[idx] for k, v in self.inputs.items()},
                   None if self.labels is None else self.labels[idx],
                   sample_rows(self.teacher, idx, self.num_samples), n_local, len(batch))

    def _stream(self, teacher_fn, shard) -> Iterator[tuple]:
        per_feed = getattr(self.reader, "per_feed", False)
        for feeds, labels in self.reader.batches():
            if per_feed:  # one complete feed, used as is (scalars, batch on axis 1): never cut along axis 0
                if len(shard(np.arange(2))) != 2:
                    raise ConfigError("data read one complete feed at a time cannot be split across processes; "
                                      "retrain it in one process (without torchrun).")
                n = n_local = 1
            else:
                n = len(next(iter(feeds.values())))
                idx = shard(np.arange(n))
                n_local = len(idx)
                idx = idx if n_local else np.arange(min(n, 1))
                feeds = {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}
                labels = None if labels is None else np.asarray(labels)[idx]
            teacher = None if teacher_fn is None else [torch.from_numpy(t) for t in teacher_fn(feeds)]
            yield ({k: torch.from_numpy(np.require(v, requirements="C")) for k, v in feeds.items()},  # scalars stay 0-d
                   None if labels is None else torch.from_numpy(np.asarray(labels)), teacher, n_local, n)


def load_data(reader, *, teacher: onnx.ModelProto | None = None, use_labels: bool = True,
              memory_budget: int = MEMORY_BUDGET) -> TrainData:
    """Read a calibration reader into memory (when it fits) and run the teacher once over it.

    `reader` may also be a TrainData (returned as is, with teacher outputs added when missing) or a pair
    (inputs dict or array, labels or None) of numpy arrays.
    """
    if isinstance(reader, TrainData):
        data = reader
    elif isinstance(reader, tuple):
        data = _from_arrays(*reader)
    else:
        data = _from_reader(reader, memory_budget)
    if not use_labels:
        data = TrainData(data.inputs, None, data.teacher, data.batch_size, data.reader)
    if teacher is not None and data.teacher is None and data.reader is None:
        data = replace(data, teacher=teacher_outputs(teacher, data.inputs))  # the caller's stays as is
    return data


def _from_arrays(inputs, labels=None, batch_size: int = 64) -> TrainData:
    if not isinstance(inputs, dict):
        inputs = {"input": inputs}
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    return TrainData(tensors, None if labels is None else torch.from_numpy(np.asarray(labels)), None, batch_size)


def _from_reader(reader, memory_budget: int) -> TrainData:
    batches = reader.batches()
    first = next(iter(batches), None)
    if first is None:
        raise ConfigError("the training data is empty; pass --data with at least one sample.")
    feeds, labels = first
    if getattr(reader, "per_feed", False):  # complete feeds of their own shapes: one step each, never stacked
        log.info("training data is read one complete feed per step (%s)", reader.description)
        return TrainData({}, None, None, 1, reader=reader)
    batch_size = len(next(iter(feeds.values())))
    per_sample = sum(v.nbytes for v in feeds.values()) / max(batch_size, 1)
    if per_sample * getattr(reader, "num_samples", batch_size) > memory_budget:
        log.info("training data exceeds %d MB: streamed in the reader's order, not shuffled", memory_budget >> 20)
        return TrainData({}, None, None, batch_size, reader=reader)
    parts, label_parts = [feeds], [labels]
    for feeds, labels in batches:
        parts.append(feeds)
        label_parts.append(labels)
    inputs = {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]}
    has_labels = all(lab is not None for lab in label_parts)
    lab = torch.from_numpy(np.concatenate(label_parts)) if has_labels else None
    return TrainData(inputs, lab, None, batch_size)


def teacher_outputs(teacher: onnx.ModelProto, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """All graph outputs of the teacher on all samples, computed once with onnxruntime."""
    run = _teacher_fn(teacher)
    n = len(next(iter(inputs.values())))
    # a model that takes exactly B samples (a helper's CNN exported for batches of 8: chunks of 32 failed in
    # onnxruntime): chunks of B, the last one padded; B = 1 too (sweep 20: a model whose inputs all fix a batch of
    # 1, or a [1, 16] conditioning input beside images [N, ...] given a row a sample, failed the sgd search here
    # after every earlier step had read the same data one sample at a time)
    fixed = declared_batch(input_specs(teacher))
    step = fixed or _teacher_chunk(teacher, inputs, n)
    chunks = []
    for i in range(0, n, step):
        part = {k: v[i : i + step].numpy() for k, v in inputs.items()}
        got = len(next(iter(part.values())))
        if fixed and got < fixed:  # repeat its last sample up to B, keep the real rows
            part = {k: np.concatenate([a, np.repeat(a[-1:], fixed - got, axis=0)]) for k, a in part.items()}
            chunks.append([o[:got] for o in run(part)])
        else:
            chunks.append(run(part))
    sizes = [min(step, n - i) for i in range(0, n, step)]
    outs = []
    for j in range(len(chunks[0])):
        parts = [c[j] for c in chunks]
        out = _by_sample(np.concatenate(parts), parts, sizes, run, inputs, teacher, j) if all(
            np.ndim(p) for p in parts) else None
        outs.append(torch.from_numpy(out) if out is not None and len(out) == n else None)
    return outs


def _teacher_chunk(teacher: onnx.ModelProto, inputs: dict[str, torch.Tensor], n: int) -> int:
    """Samples one teacher run takes: TEACHER_CHUNK, fewer where their activations would pass the evaluation batch's
    bound (calibration.shapes.evaluation_batch, sized on the first sample). Real models 57: a U-Net on 224 x 224
    pressure maps ran its 1,337 mixup samples in one chunk, and the kernel killed the run at 22 GB."""
    from onnxprune.calibration.shapes import evaluation_batch

    if n <= 1:
        return TEACHER_CHUNK
    first = {k: v[:1].numpy() for k, v in inputs.items()}
    return evaluation_batch(teacher, first, 1, limit=TEACHER_CHUNK)[0]


def sample_rows(teacher: list | None, index, n: int) -> list | None:
    """The teacher's outputs of the samples `index` of n. An output that follows no sample (None from
    `teacher_outputs`, or not n rows: a constant [10] beside logits [N, 10]) has no rows to select and is not
    distilled (sweep 31: an initializer that is a graph output, its rows of two chunks indexed by sample, an
    IndexError in the sgd search)."""
    if teacher is None:
        return None
    return [None if t is None or not t.dim() or len(t) != n else t[index] for t in teacher]


def _by_sample(out: np.ndarray, parts: list[np.ndarray], sizes: list[int], run, inputs, teacher, j: int) -> np.ndarray:
    """A teacher output with k > 1 rows a sample, [k·N, ...], as [N, k, ...], so a batch's samples select their own
    rows: skl2onnx's multi-output MLPRegressor writes its [N, 3] result as a Reshape to [-1, 1] (declared [N, 1]),
    and sgd retraining indexed 128 of its 384 rows (sweep 24: "The size of tensor a (384) must match the size of
    tensor b (128)"). Only rows a sample sets alone, one after another (sample-major: the first sample's own run
    gives the first k rows); other layouts are refused with what to do."""
    if out.ndim == 0 or len(out) == sum(sizes) or any(len(p) % s for p, s in zip(parts, sizes)):
        return out
    k = {len(p) // s for p, s in zip(parts, sizes)}
    if len(k) != 1 or next(iter(k)) < 2:
        return out
    k = next(iter(k))
    first = run({name: v[:1].numpy() for name, v in inputs.items()})[j]
    if first.shape != (k, *out.shape[1:]) or not np.allclose(first, out[:k], rtol=1e-4, atol=1e-6):
        raise ConfigError(
            f"output '{output_names(teacher)[j]}' has {k} rows a sample ({len(out)} for {sum(sizes)} samples) that "
            f"are not one sample's after another's: retraining cannot pair a batch's samples with their rows; pass "
            f"--recovery reconstruct (layer-wise refit), or prune by --sparsity without --iterations")
    return out.reshape(sum(sizes), k, *out.shape[1:])


def _teacher_fn(teacher: onnx.ModelProto):
    session = make_session(teacher, optimize=True)
    names = output_names(teacher)
    from onnxprune.calibration.metrics import as_array

    # non-tensor outputs (a ZipMap's maps) by value, as [N, keys] arrays
    return lambda feeds: [np.asarray(as_array(o), dtype=np.float32) for o in session.run(names, feeds)]


# ----------------------------------------------------------------------------------------------- the objective


@dataclass
class Objective:
    """How a batch's outputs turn into a loss: cross-entropy, distillation, or both."""

    kind: str  # "ce", "distill", "ce+distill", "mse"
    output_kinds: list[str]  # per graph output: "logits", "probs", "logprobs" or "values"
    temperature: float = 4.0
    label_smoothing: float = 0.0
    distill_weight: float = 0.5  # share of the distillation term in "ce+distill"

    def __call__(self, outputs, labels, teacher) -> torch.Tensor:
        if self.kind == "ce":
            return self._supervised(outputs, labels)
        if self.kind == "mse":
            return F.mse_loss(outputs[0], labels.to(outputs[0].dtype))
        distill = self._distill(outputs, teacher)
        if self.kind == "distill":
            return distill
        return self.distill_weight * distill + (1.0 - self.distill_weight) * self._supervised(outputs, labels)

    def _primary(self) -> int:
        return next((i for i, k in enumerate(self.output_kinds) if k != "values"), 0)

    def _supervised(self, outputs, labels) -> torch.Tensor:
        i = self._primary()
        out = outputs[i]
        if out.is_floating_point() and not labels.is_floating_point() and (
                out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1)):
            # a binary classifier's one score a sample, labels 0/1 (metric_choice._binary_scores): binary
            # cross-entropy, on the probability where every score of the batch is one, else on the logit
            y = labels.to(out.dtype).reshape(out.shape)
            if bool((out >= 0).all()) and bool((out <= 1).all()):
                return F.binary_cross_entropy(out.clamp(1e-6, 1 - 1e-6), y)
            return F.binary_cross_entropy_with_logits(out, y)
        logits = _as_logits(out, self.output_kinds[i])
        if labels.dtype.is_floating_point and labels.shape == logits.shape:
            return F.mse_loss(outputs[i], labels.to(outputs[i].dtype))
        return F.cross_entropy(logits, labels.long(), label_smoothing=self.label_smoothing)

    def _distill(self, outputs, teacher) -> torch.Tensor:
        t, terms = self.temperature, []
        for out, ref, kind in zip(outputs, teacher, self.output_kinds):
            if ref is None or not out.dtype.is_floating_point:  # an ArgMax label beside the scores: no gradient,
                continue  # scored as exact; an output that follows no sample (`sample_rows`) has no rows to match
            if out.shape != ref.shape and out.dim() and ref.dim() > 1 and out.numel() == ref.numel():
                out = out.reshape(ref.shape)  # k rows a sample: the teacher's are [N, k, ...] (`_by_sample`)
            if kind == "values":
                terms.append(relative_mse(out, ref.to(out.dtype)))
                continue
            s = F.log_softmax(_as_logits(out, kind) / t, dim=-1)
            r = F.log_softmax(_as_logits(ref.to(out.dtype), kind) / t, dim=-1)
            rows = max(s.numel() // max(s.shape[-1], 1), 1)  # samples x positions: a sequence counts per position
            terms.append(F.kl_div(s, r, log_target=True, reduction="sum") / rows * t * t)
        if not terms:
            raise ConfigError("every output of the model is an integer (labels, ids): there is nothing to distill "
                              "from; pass --recovery reconstruct, or prune by --sparsity without retraining.")
        return sum(terms[1:], terms[0])


def relative_mse(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||out - ref||² / ||ref||²: the square of what rel_l2 scores, so a regression output next
    to a classifier is trained at its own scale (a plain MSE on box offsets of ~0.1 is ~1e-4 of the KL term, and
    those outputs drifted while the class output was matched). A sample's norm is floored at NORM_FLOOR of the
    batch's mean: a scalar regression output that crosses zero (sweep 8: a value head of std 4.1 with a sample at
    0.013) weighted that sample 6,000x, and every learning rate of the probe, down to 0.0003, diverged."""
    if out.dim() == 0:
        out, ref = out.reshape(1, 1), ref.reshape(1, 1)
    err = (out - ref).pow(2).reshape(out.shape[0], -1).sum(1)
    norm = ref.pow(2).reshape(ref.shape[0], -1).sum(1)
    return (err / torch.maximum(norm, NORM_FLOOR * norm.mean().detach() + 1e-12)).mean()


NORM_FLOOR = 0.01  # of the batch's mean squared norm: a sample's weight is at most 100x the mean's


def _as_logits(x: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.log(x.clamp_min(1e-12)) if kind == "probs" else x


# metrics of calibration.metric_choice whose outputs are class scores over the last axis: distilled by KL there
CLASS_METRICS = ("prob", "agreement", "seq_agreement", "ctc_agreement", "accuracy", "top5",
                 "expected_accuracy")


def output_kinds(model: onnx.ModelProto, sample_outputs) -> list[str]:
    """Per graph output, how it is distilled: class scores over the last axis ("logits", "probs", "logprobs" by the
    producer) where the metric choice scores it as classes (calibration.metric_choice.auto_kinds), else "values".
    The same rule as the scoring, so a face detector's [N, 4] box offsets beside its softmax are matched as values
    (a softmax KL over four offsets ignores a shift of all four, and that output drifted while training)."""
    from onnxprune.calibration.metric_choice import auto_kinds, graph_facts

    names = output_names(model)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    metrics = auto_kinds({n: o.detach().float().cpu().numpy() if torch.is_tensor(o) else o
                          for n, o in zip(names, sample_outputs)}, quiet=True, **graph_facts(model))
    kinds = []
    for name, out in zip(names, sample_outputs):
        if not torch.is_tensor(out) or not out.dtype.is_floating_point or out.dim() < 2 or out.shape[-1] < 2 \
                or metrics.get(name) not in CLASS_METRICS:
            kinds.append("values")
        else:
            kinds.append({"Softmax": "probs", "LogSoftmax": "logprobs"}.get(producers.get(name), "logits"))
    return kinds


def choose_loss(loss: str, has_labels: bool, has_teacher: bool) -> str:
    _check_choice(loss, LOSSES, "--loss")
    if loss == "auto":
        return "ce" if has_labels else "distill"
    if loss in ("ce", "ce+distill", "mse") and not has_labels:
        raise ConfigError(f"--loss {loss} needs labels; pass --labels NAME or use --loss distill.")
    return loss


# ------------------------------------------------------------------------------------------------- the trainer


@dataclass
class FinetuneStats:
    epochs: int = 0
    steps: int = 0
    samples: int = 0
    loss: float = float("nan")  # mean training loss of the last epoch
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    objective: str = ""
    trainable: list[str] = field(default_factory=list)
    world_size: int = 1
    samples_per_process: int = 0
    stopped: bool = False  # `stop` ended it before its steps were all taken

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"epochs": self.epochs, "steps": self.steps, "samples": self.samples, "loss": self.loss,
                "epoch_losses": self.epoch_losses, "seconds": round(self.seconds, 3),
                "samples_per_second": round(self.samples_per_second, 1), "device": self.device,
                "objective": self.objective, "trainable": self.trainable, "world_size": self.world_size,
                "samples_per_process": self.samples_per_process, "stopped": self.stopped}


HALF_TYPES = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def compute_dtype(model: onnx.ModelProto, device: torch.device) -> torch.dtype | None:
    """float32 for a float16/bfloat16 model trained on the CPU, else None (the model's own dtypes).

    torch's CPU kernels for half types are not the fast ones: a 2-conv digits CNN took 7.6 s per training step in
    float16 against 53 ms in float32 (newcomer sweep, torch 2.13), and a run with `--time-budget 3m` took 518 s.
    The parameters are float32 master copies anyway (bridge.module rule 2) and write_back rounds them to the
    model's dtype; the candidate is judged in onnxruntime in its own dtype."""
    if device.type != "cpu":
        return None
    half = any(t.data_type in HALF_TYPES for t in model.graph.initializer)
    return torch.float32 if half else None


def build_module(model: onnx.ModelProto, trainable: Iterable[str], device: torch.device):
    """The torch bridge's module for `model` (kept apart so tests and benchmarks can swap in another module)."""
    from onnxprune.converter.bridge import OnnxModule

    return OnnxModule(model, trainable=list(trainable), device=device, dtype=compute_dtype(model, device))


class MaskedTrainer:
    """A model under masks, its data and objective: train it round after round, read its weights, write it back.

    Rules:
      1. Masks only shrink (`set_masks` intersects); a masked weight is set to exactly 0.0 at once and after
         every optimizer step, and its gradient is zeroed, so momentum and weight decay never move it.
      2. Surviving weights start from the values in the model (never re-initialised).
      3. Trainable: the masked weights and their companions (bias, normalization scale and bias); frozen
         groups (by weight or node name) get no gradient.
    """

    def __init__(self, model: onnx.ModelProto, masks: dict[str, np.ndarray], data, *, loss: str = "auto",
                 teacher: onnx.ModelProto | None = None, temperature: float = 4.0, label_smoothing: float = 0.0,
                 distill_weight: float = 0.5, dropout_scale: dict | None = None, device: str = "auto",
                 seed: int = 0, module=None, accumulate: int = 1):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        name_nodes(self.model)
        hoisted = hoist_body_constants(self.model)  # body weights become trainable outer-scope initializers
        if hoisted:
            log.info("moved %d constant(s) out of If/Loop bodies to train them: %s", len(hoisted),
                     ", ".join(hoisted[:10]))
        lifted = lift_constants(self.model)  # Constant-node weights and biases (paddle2onnx) are trained too
        if lifted:
            log.info("%d Constant node(s) of the main graph made initializers to train them", len(lifted))
        if int(accumulate) < 1:
            raise ConfigError(f"--accumulate {accumulate} must be >= 1 (micro-batches per optimizer step).")
        self.accumulate = int(accumulate)  # micro-batches per step: the same gradient in 1/N of the memory
        self.backend = distributed.current()
        self.device = torch.device(self.backend.device(str(resolve_device(device))))
        if torch_threads() is not None:  # the run's thread count (torch is imported here, not at the run's start)
            from onnxprune.converter.threads import set_torch_threads

            set_torch_threads(torch, torch_threads())
        self._amp = MixedPrecision(self.device)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)  # one stream of epoch orders across train() calls
        self._calls = 0
        self.masks = {k: np.asarray(v, dtype=bool) for k, v in masks.items()}
        self.groups = trainable_tensors(self.model, self.masks)
        self._nodes = {w: n.name for w, n in _weight_nodes(self.model, self.masks).items()}
        self.dropout_scale = dict(dropout_scale or {})
        has_labels = _has_labels(data)
        self.loss_kind = choose_loss(loss, has_labels, teacher is not None)
        needs_teacher = self.loss_kind in ("distill", "ce+distill")
        self.teacher = (teacher if teacher is not None else model) if needs_teacher else None
        self.data = load_data(data, teacher=self.teacher, use_labels=self.loss_kind != "distill")
        streamed = self.teacher is not None and self.data.reader is not None
        self._teacher_fn = _teacher_fn(self.teacher) if streamed else None
        ApplyMasks()(self.model, PruneState(masks=dict(self.masks)))  # constants (not trained) are masked too
        self._own_module = module is None
        self.module = module if module is not None else self._build()
        self._forward = self.module  # what a training step runs: the module, or DDP around it while training
        self.params = self.module.onnx_parameters()
        self._mask_tensors: dict[str, torch.Tensor] = {}
        self.set_masks(self.masks)
        # an exporter's literal batch (ultralytics' heads: every input [1, ...] and a Reshape to [1, 4, 16, A]) runs
        # in the bridge at that batch only: it trains in batches of B (sweep 26: the hand recipe on a YOLOv8 export
        # failed with "Reshape node '/model.22/dfl/Reshape' failed in the torch bridge: shape '[1, 4, 16, 84]' is
        # invalid for input of size 10752")
        from onnxprune.converter.auto.recovery import literal_batch

        literal = literal_batch(model)
        self.literal_batch = literal[0] if literal else None
        if literal:
            self.data.whole, self.accumulate = True, 1  # a micro-batch would be a batch the bridge cannot run
            log.info("every input fixes a batch of %d and %s reshapes to it: retrained in batches of %d",
                     literal[0], literal[1], literal[0])
        self.objective = self._make_objective(temperature, label_smoothing, distill_weight)

    def _build(self):
        """The bridge module; a weight still held in a Constant node (IR < 4: not lifted) stays constant, masked."""
        inits = _float_initializers(self.model)
        names = [n for g in ([w, *c] for w, c in self.groups.items()) for n in g if n in inits]
        frozen = [w for w in self.groups if w not in inits]
        if frozen:
            log.info("not retrained (held in Constant nodes, kept masked): %s", ", ".join(frozen))
        return build_module(self.model, names, self.device)

    # ---- masks and weights
    def set_masks(self, masks: dict[str, np.ndarray]) -> None:
        """Intersect with the current masks, zero the newly pruned weights, rescale dropout."""
        constants_changed = False
        masks = self.backend.broadcast_masks(masks)  # rank 0's masks on every rank
        for name, mask in masks.items():
            mask = np.asarray(mask, dtype=bool)
            old = self.masks.get(name)
            if old is not None and old.shape != mask.shape:
                raise ConfigError(f"mask of '{name}' has shape {mask.shape}, the weight has {old.shape}.")
            self.masks[name] = mask if old is None else (old & mask)
            shrunk = old is not None and not np.array_equal(old, self.masks[name])
            constants_changed |= shrunk and name not in self.params
            if name in self.params:
                keep = torch.from_numpy(self.masks[name]).to(self.params[name].device)
                self._mask_tensors[name] = keep
                with torch.no_grad():
                    self.params[name].masked_fill_(~keep, 0.0)
        if constants_changed and self._own_module:  # a Constant-node weight lost connections: rebuild around it
            self.model = self.export()
            self.module = self._build()
            self._forward = self.module
            self.params = self.module.onnx_parameters()
        ratios = dropout_ratios(self.model, self.masks)
        ratios.update(self.dropout_scale)
        if ratios and hasattr(self.module, "dropout_ratios"):
            self.module.dropout_ratios.update(ratios)

    def set_codebooks(self, codes: dict[str, np.ndarray]) -> None:
        """Trained quantization (Deep Compression, Han et al. 2016 §3.3): the weights that share a code stay equal.

        `codes`: weight -> integer array of its shape, the index of its shared value, -1 where pruned. Every step
        then gives each group the mean of its members' gradients (the paper sums them; the mean keeps one learning
        rate right for groups of any size), so the shared values are what trains, and after the step the group is
        set to one value again (exactly equal, whatever the optimizer's rounding). Weights not listed train freely.
        """
        self._codes = {}
        for name, c in codes.items():
            if name not in self.params:
                continue
            flat = torch.from_numpy(np.asarray(c, dtype=np.int64).reshape(-1))
            nz = torch.nonzero(flat >= 0).squeeze(1)
            k = flat[nz]
            n = int(k.max()) + 1 if k.numel() else 0
            counts = torch.bincount(k, minlength=n).clamp(min=1).to(torch.float32)
            first = torch.full((n,), len(k), dtype=torch.long).scatter_reduce(0, k, torch.arange(len(k)), "amin")
            dev = self.params[name].device
            self._codes[name] = tuple(t.to(dev) for t in (nz, k, counts, first.clamp(max=max(len(k) - 1, 0))))

    def _share_gradients(self) -> None:
        for name, (nz, k, counts, _) in getattr(self, "_codes", {}).items():
            g = self.params[name].grad
            if g is not None:
                flat = g.view(-1)
                sums = torch.zeros(len(counts), dtype=flat.dtype, device=flat.device).index_add_(0, k, flat[nz])
                flat[nz] = (sums / counts.to(flat.dtype))[k]

    def _share_values(self) -> None:
        for name, (nz, k, _, first) in getattr(self, "_codes", {}).items():
            w = self.params[name].view(-1)
            w[nz] = w[nz][first][k]

    def weights(self) -> dict[str, np.ndarray]:
        """The current values of the masked weights (pruned entries are 0.0)."""
        return {n: self.params[n].detach().cpu().numpy().copy() for n in self.masks if n in self.params}

    def state(self) -> dict[str, np.ndarray]:
        """What a checkpoint needs besides weights and masks for a resumed run to equal an uninterrupted one: the
        position of the shuffling stream and the count of training calls (it seeds each call's determinism)."""
        return {"generator": self._generator.get_state().numpy().copy(), "calls": np.array(self._calls)}

    def restore_state(self, state: dict) -> None:
        self._generator.set_state(torch.from_numpy(np.asarray(state["generator"], dtype=np.uint8).copy()))
        self._calls = int(np.asarray(state["calls"]))

    def sparsity(self) -> float:
        total = sum(m.size for m in self.masks.values())
        return 1.0 - sum(int(m.sum()) for m in self.masks.values()) / total if total else 0.0

    def export(self) -> onnx.ModelProto:
        """The model with the trained weights written back and the masks applied (exact zeros, same dtypes)."""
        out = self.module.write_back(self.model)
        state = PruneState(masks={k: v for k, v in self.masks.items()})
        ApplyMasks()(out, state)
        return out

    # ---- training
    def train(self, epochs: float, lr: float, *, momentum: float = 0.9, reg: str = "l2", reg_strength: float = 5e-4,
              lr_schedule: str = "constant", lr_min: float = 0.0, batch_size: int | None = None,
              freeze: Iterable[str] = (), progress: Progress | None = None,
              stop: Callable[[], bool] | None = None) -> FinetuneStats:
        """`epochs` passes over the data (a fraction trains that share of one shuffled epoch). `stop`, asked before
        each step after the first, ends the training early when it says True (a deadline: the automatic search's
        polish; its schedule is not stretched, the steps not taken are left out, `FinetuneStats.stopped` says so)."""
        _check_choice(reg, REGS, "--reg")
        _check_choice(lr_schedule, LR_SCHEDULES, "--lr-schedule")
        if epochs < 0 or lr < 0:
            raise ConfigError(f"epochs ({epochs}) and lr ({lr}) must be >= 0.")
        frozen = set(freeze)
        active = {w: c for w, c in self.groups.items()
                  if w not in frozen and self._nodes.get(w) not in frozen}
        weights = [self.params[w] for w in active if w in self.params]
        names = list(dict.fromkeys(c for cs in active.values() for c in cs if c in self.params and c not in active))
        others = [self.params[c] for c in names]  # once each: LSTM W and R share their bias B
        for p in self.params.values():
            p.requires_grad_(False)
        for p in weights + others:
            p.requires_grad_(True)
        groups = [{"params": weights, "weight_decay": reg_strength if reg == "l2" else 0.0},
                  {"params": others, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum) if groups else None
        # DDP (rebuilt for each call, since the trainable set changes) broadcasts rank 0's weights as it wraps
        self._forward = self.backend.wrap(self.module) if opt is not None else self.module
        l1 = reg_strength if reg == "l1" else 0.0
        return self._loop(opt, epochs, lr, lr_schedule, lr_min, self.literal_batch or batch_size, list(active), l1,
                          progress, stop)

    def _loop(self, opt, epochs, lr, lr_schedule, lr_min, batch_size, active, l1, progress,
              stop=None) -> FinetuneStats:
        backend = self.backend
        stats = FinetuneStats(device=str(self.device), objective=self.loss_kind, trainable=active,
                              world_size=backend.world_size)
        n_batches = self.data.num_batches(batch_size)
        total_steps = max(int(math.ceil(epochs * n_batches)), 0)
        sparsity = self.sparsity()
        gen = self._generator
        self._calls += 1
        t0, step = time.perf_counter(), 0
        progress = progress if backend.is_main else None
        with _deterministic(self.seed * 1000 + self._calls + RANK_SEED * backend.rank):
            self.module.train()
            epoch, stopped = 0, False
            while step < total_steps and opt is not None and not stopped:
                epoch += 1
                running, seen, local_before = 0.0, 0, stats.samples_per_process
                batches = self.data.shards(gen, batch_size, self._teacher_fn, backend.shard)
                for b, (inputs, labels, teacher, n, n_batch) in enumerate(batches):
                    if step >= total_steps:
                        break
                    if step and stop is not None and self._stopping(stop):
                        stopped = True
                        break
                    _set_lr(opt, lr, lr_min, step, total_steps, lr_schedule)
                    loss_sum = self._step(opt, (inputs, labels, teacher, n), n_batch, active, l1)
                    running, seen, step = running + loss_sum, seen + n, step + 1
                    if progress is not None:
                        progress(epoch, b + 1, n_batches, running / max(seen, 1), sparsity)
                if stopped and not seen:
                    break  # stopped before this epoch's first step (every process at once: the flag is agreed)
                stats.samples_per_process += seen
                running, seen = backend.all_sum([running, float(seen)])  # the epoch's loss over all processes
                stats.epoch_losses.append(running / max(seen, 1))
                stats.samples += int(seen)
                backend.count(stats.samples_per_process - local_before, int(seen))
            self.module.eval()
        self._forward = self.module
        stats.epochs, stats.steps = len(stats.epoch_losses), step
        stats.stopped = stopped
        stats.loss = stats.epoch_losses[-1] if stats.epoch_losses else float("nan")
        stats.seconds = time.perf_counter() - t0
        return stats

    def _stopping(self, stop: Callable[[], bool]) -> bool:
        """`stop()` on this process, agreed by all of them (any one stops them all: their steps must stay in step)."""
        flag = float(bool(stop()))
        if self.backend.world_size > 1:
            flag = self.backend.all_sum([flag])[0]
        return flag > 0

    def _step(self, opt, batch: tuple, n_batch: int, active, l1) -> float:
        """One optimizer step on this process's part of a global batch of `n_batch` samples, in `accumulate`
        micro-batches; returns the sum of the per-sample losses of its part.

        Each micro-batch's mean loss is weighted by W·n_micro/n_batch (W processes, whose gradients DDP averages),
        so the step's gradient is the mean over the global batch, however it is split over processes and
        micro-batches; DDP synchronises once, on the last micro-batch.
        """
        opt.zero_grad(set_to_none=True)
        total = 0.0
        micro = _micro_batches(batch, self.accumulate)
        for i, (inputs, labels, teacher, n) in enumerate(micro):
            sync = i == len(micro) - 1 or not hasattr(self._forward, "no_sync")
            with contextlib.nullcontext() if sync else self._forward.no_sync():
                loss = self._loss(inputs, labels, teacher, active, l1)
                self._amp.backward(loss * (self.backend.world_size * n / n_batch))
            total += float(loss.detach()) * n
        with torch.no_grad():
            self._amp.unscale(opt)  # the masks zero true gradients, not scaled ones
            for name, keep in self._mask_tensors.items():
                g = self.params[name].grad
                if g is not None:
                    g.masked_fill_(~keep, 0.0)
            self._share_gradients()
            self._amp.step(opt)
            for name, keep in self._mask_tensors.items():
                self.params[name].masked_fill_(~keep, 0.0)
            self._share_values()
        return total

    def _loss(self, inputs, labels, teacher, active, l1) -> torch.Tensor:
        dev = self.device
        inputs = {k: v.to(dev, non_blocking=True) for k, v in inputs.items()}
        with self._amp.autocast():
            outputs = _as_tuple(self._forward(**inputs))
            loss = self.objective(outputs, None if labels is None else labels.to(dev),
                                  None if teacher is None else [None if t is None else t.to(dev) for t in teacher])
        if l1:
            loss = loss + l1 * sum(self.params[w].abs().sum() for w in active if w in self.params)
        return loss

    def _make_objective(self, temperature, label_smoothing, distill_weight) -> Objective:
        inputs, _, _ = next(self.data.epoch(torch.Generator().manual_seed(0), self.literal_batch or 2,
                                            self._teacher_fn))
        with torch.no_grad():
            self.module.eval()
            sample = _as_tuple(self.module(**{k: v.to(self.device) for k, v in inputs.items()}))
        return Objective(self.loss_kind, output_kinds(self.model, sample), temperature, label_smoothing, distill_weight)


def _micro_batches(batch: tuple, parts: int) -> list[tuple]:
    """(inputs, labels, teacher, n) split along the samples into up to `parts` pieces of (nearly) equal size."""
    inputs, labels, teacher, n = batch
    size = len(next(iter(inputs.values())))
    parts = max(1, min(parts, n))
    if parts == 1:
        return [batch]
    bounds = np.linspace(0, size, parts + 1).astype(int)
    return [({k: v[a:b] for k, v in inputs.items()}, None if labels is None else labels[a:b],
             sample_rows(teacher, slice(a, b), size), int(b - a)) for a, b in zip(bounds, bounds[1:])]


def _has_labels(data) -> bool:
    if isinstance(data, TrainData):
        return data.labels is not None
    if isinstance(data, tuple):
        return len(data) > 1 and data[1] is not None
    return bool(getattr(data, "has_labels", False))


def _as_tuple(outputs) -> tuple:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def _set_lr(opt, lr: float, lr_min: float, step: int, total: int, schedule: str) -> None:
    if schedule == "cosine" and total > 0:
        value = lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * step / total))
    else:
        value = lr
    for g in opt.param_groups:
        g["lr"] = value


@contextlib.contextmanager
def _deterministic(seed: int):
    """Seeded global RNG (dropout) and deterministic kernels, restored afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)


# ---------------------------------------------------------------------------------------------- the one call


def finetune(model: onnx.ModelProto, masks: dict[str, np.ndarray], train_reader, *, epochs: float, lr: float,
             momentum: float = 0.9, reg: str = "l2", reg_strength: float = 5e-4, loss: str = "auto",
             teacher: onnx.ModelProto | None = None, temperature: float = 4.0, label_smoothing: float = 0.0,
             distill_weight: float = 0.5, lr_schedule: str = "constant", batch_size: int | None = None,
             dropout_scale: dict | None = None, freeze: Iterable[str] = (), device: str = "auto", seed: int = 0,
             progress: Progress | None = None, module=None) -> tuple[onnx.ModelProto, FinetuneStats]:
    """Retrain the kept weights of `model` under `masks`; return the model with them written back, and stats.

    `train_reader`: a calibration DataReader (`.batches()` of (feeds, labels|None)), a TrainData, or a pair
    (inputs, labels|None) of arrays. Distillation without a `teacher` distills from `model` as given.
    """
    trainer = MaskedTrainer(model, masks, train_reader, loss=loss, teacher=teacher, temperature=temperature,
                            label_smoothing=label_smoothing, distill_weight=distill_weight,
                            dropout_scale=dropout_scale, device=device, seed=seed, module=module)
    stats = trainer.train(epochs, lr, momentum=momentum, reg=reg, reg_strength=reg_strength,
                          lr_schedule=lr_schedule, batch_size=batch_size, freeze=freeze, progress=progress)
    return trainer.export(), stats
