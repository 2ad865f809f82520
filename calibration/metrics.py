"""Metrics: how good a (pruned) model is on calibration data, always "higher is better", in [0, 1].

Every graph output is scored with a metric that fits what it holds (chosen in calibration.metric_choice, computed
in calibration.output_metrics; this module runs models and combines), and the run's loss is the
WORST output's loss, so pruning a head the first output does not show cannot pass unnoticed:

    kind           score of one output                                         1 pp of loss means
    accuracy       top-1 accuracy against labels                               1% of samples lose their right class
    top5           label among the 5 largest scores                            1% of samples lose it from their top 5
    agreement      top-1 (argmax per sample) equals the dense model's          1% of samples change their top-1 class
    seq_agreement  argmax over the last axis, per position, equals the dense   1% of a sample's positions (mean over
                   model's; each sample's share, averaged over the samples     the samples) change their top-1
    map_iou        mean IoU of the class maps (argmax over axis 1) per sample    mean IoU 0.01 lower
                   ([N, C, H, W] segmentation outputs)
    mask_iou       mean IoU of the masks (values over 0.5) per sample: a         mean IoU 0.01 lower
                   Sigmoid's map, paired with rel_l2 (mask_iou+rel_l2); over T
                   as mask_iou@T (binary_prob@T, binary_logit@T likewise)
    ctc_agreement  greedy CTC decoding of [N, T, C] equals the dense one's      1% of samples change their text
    prob           min(agreement, 1 - mean_i max_c |p_ic - d_ic|)              1% of samples change class, or the mean
                                                                                   largest probability change is 0.01
    binary_prob    prob over [1 - p, p]: min(share of samples on the same      1% of samples cross 0.5, or the mean
                   side of 0.5, 1 - mean_i |p_i - d_i|)  (sigmoid [N, 1])          probability change is 0.01
    rel_l2         1 - mean_i ||y_i - d_i|| / max(||d_i||, 0.1 s)  (floored    mean relative L2 error of 0.01
                   at 0; s = RMS_j ||d_j|| over the whole set: `_scales`)
    channel_rel_l2 1 - mean_i max_c min(1, ||y_ic - d_ic|| / max(||d_ic||,     worst channel's relative error 0.01
                   0.1 s_c)), s_c = RMS_j ||d_jc||
    channel_prob   as channel_rel_l2, but a channel whose d_ic lies in [0, 1]  worst channel off by 0.01: a probability
                   counts max_k |y_ick - d_ick| (YOLOv8 [N, 4 + classes, A])       moves 1 percentage point
    variables      rel_l2's two parts in each variable c (the last axis of     rel_l2's 1 pp in each sample's worst
                   [N, C] and [N, steps, C], axis 1 of 4+ axes) against its        variable, in its own norm and its
                   own norm and spread; each sample's worst variable per part      own variance
    cosine         mean_i cos(y_i, d_i)  (floored at 0)                        mean cosine similarity drops by 0.01
    exact          share of samples whose value is exactly the dense one's     1% of samples change their value
    list@T         a feed (a request) whose rows' list is the dense one's: the   1% of requests change their list
                   rows scored T or more, best first (set@T: in any order;
                   top@K: the first K); one sample a feed (readers.requests_reader)

y_i is sample i of an output, d_i the dense model's: the output's first axis when it follows the feed's batch (see
`Evaluator.sample_axes`; another axis when only that one does, a recurrent state [2, N, H]). An output that follows
no batch (a detector taking one image [3, H, W] and returning [D, 4] boxes, D data-dependent) is scored row by row as
the table says, and each feed's rows are pooled into one sample (`Evaluator.output_terms`): the figure is the same,
the samples (and so every standard error and n) are the feeds, and a changed detection count loses that feed.
An output k times as long as the batch whose first k rows are the first sample's alone has its rows pooled k at a
time, one sample each (`Evaluator.grouped`: skl2onnx's multi-output regressor, [N, 3] reshaped to [-1, 1]).
Padding is not scored: when the model takes an attention mask (an input named `attention_mask` or `input_mask`,
[N, S], 1 on real tokens, 0 on padding: what Hugging Face exports take) and an output is [N, S, ...] along it, its
padded positions are left out of `cosine`, `rel_l2` and `seq_agreement` (`Evaluator.masked`; the values there are
not defined by the model and no user reads them: a sentence-embedding pooler masks them out). A model without a mask
input whose integer [N, S] input is padded with one id, as one run at the end (or start) of every row that has
padding and nowhere else, is read the same way (`inferred_padding`: a Keras tagger fed pad_sequences's output).
An output that a Concat makes of a graph input and a computed part (a decoder fed a past returns `present.*`, its
`past_key_values.*` input with the new keys and values behind it; ai.onnx Attention makes its present_key/value of
its past_key/value input so) is scored on its computed part only
(`Evaluator.crops`): the copied part is equal in every model, and scored it would dilute the new positions' error by
the length of the past (sweep 25: a claimed 0.61 pp where the new positions moved 1.07%).
Non-tensor outputs are compared by value: a sequence of maps (scikit-learn's ZipMap) becomes a [N, keys] array, a
sequence of tensors is stacked.
Losses are percentage points: loss = 100 * (dense - pruned) per output; an Evaluator's `dense` is its headline
output's score and its combined score is `dense - worst loss`, so every caller of `evaluate` and `loss_pp` sees
the worst output. The `Evaluator` runs the dense reference once, caches its outputs (and the data, when it fits in
memory), and scores any model or session against the same batches; `last` holds the per-output figures of the
latest score.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnxprune.calibration.feeds import time_major_inputs
from onnxprune.calibration.held import HeldBatches, given_back, held_batches, held_bytes, hold
from onnxprune.calibration.metric_choice import (AUTO, _check_kind, _declared, _is_probability, auto_kind,  # noqa: F401
                                                 auto_kinds, check_metric_spec, choose_metric, is_classifier,
                                                 metric_plan, parse_metric_spec, untouched_outputs, read_out_kind,
                                                 graph_facts, scale_note, scale_pairs,
                                                 few_leaders, unnamed_heads)
from onnxprune.calibration.output_metrics import (METRICS, NEEDS_LABELS, NEEDS_REFERENCE, Metric,  # noqa: F401
                                                  FLOOR, PART_SCORES, _flat, _n, _relative_errors, _top1, as_array,
                                                  base_kind, decision_threshold, is_list,
                                                  count_samples, map_keys, mismatch_samples, pool, pool_rows,
                                                  reference_scale,
                                                  unchanged_samples)
from onnxprune.calibration.readers import DataReader, rows_together, short_of_a_batch
from onnxprune.calibration.runtime import available_memory, first_sample_fails, make_session, run_failure
from onnxprune.errors import CalibrationError, ConfigError, ConverterError
from onnxprune.plain import listed, nbytes

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 512 << 20  # calibration batches kept in memory when they fit
REFERENCE_SHARE = 0.5  # the input model's scored outputs over the data, held for a run: at most this share of memory


class Evaluator:
    """Scores models on a reader's batches, every planned output with its own metric; the dense reference runs once.

    `metric`: None (every output, metrics chosen automatically), a KIND (the headline output's metric), "OUTPUT=KIND"
    strings or a dict {OUTPUT: KIND} (only those outputs). `output` scores that one output only. `dense` is the
    headline output's own score (1.0 for the label-free metrics); None without a reference. `evaluate` returns
    `dense - worst output loss`; `last` holds the per-output figures of the latest score. `split`: cached stacked
    batches are cut into parts of at most that many samples when the model takes any batch size (measurements in
    calibration.sampling can then stop after fewer samples; every metric is the same sum). `quiet`: the metric
    choice is not logged (a run's second evaluator: its first has said it).
    """

    def __init__(self, reader: DataReader, metric=None, reference_model: onnx.ModelProto | None = None,
                 output: str | None = None, *, cache_bytes: int = DEFAULT_CACHE_BYTES, optimize: bool = True,
                 split: int | None = None, quiet: bool = False, budget: float | None = None,
                 output_budgets: dict[str, float] | None = None, carried: dict[str, str] | None = None,
                 last_positions: frozenset[str] = frozenset()):
        self.reader, self.optimize, self._quiet = reader, optimize, quiet
        # {state input: output} a streaming model feeds back, where its feeds are calls of streams: a batch that
        # follows the one before (`chained`, found on the input model's outputs) is run on the state the model it
        # runs gave there, as a stream runs it, whenever both run in one pass (`_runs`)
        self.carried = dict(carried or {}) if getattr(reader, "per_feed", False) else {}
        self.chained: list[bool] = []
        self.budget_pp, self.output_budgets = budget, dict(output_budgets or {})
        # outputs whose own budget holds only some of their term columns, the others at the run's (a greedy
        # decoder's `prob`: its picks at --max-loss / L, its probabilities at --max-loss; `part_factor`)
        self.held_parts: dict[str, tuple[int, ...]] = {}
        # outputs scored on their last position only (axis 1): a decoder without a cache's logits, whose last
        # position's argmax is the pick behind the next call's context, and a KV decoder's at a call fed its prompt
        # whole (converter/steps/verify.decoded_budget)
        self.last_positions = frozenset(last_positions)
        if reference_model is not None:
            self.plan = metric_plan(reference_model, reader.has_labels, metric, output=output)
        else:
            self.plan = self._plan_without_reference(metric, output)
        _check_output_budgets(self.plan, self.output_budgets, budget)
        _check_lists(self.plan, reader)
        self._cached = self._cache_batches(cache_bytes)
        self.reference_all: list[tuple] | None = None
        self.sample_axes: tuple[int | None, ...] | None = None  # each scored output's sample axis (_sample_axes)
        self.grouped: dict[int, int] = {}  # scored outputs of k rows a sample, one sample's after another's: k
        self.row_outputs: frozenset[int] = frozenset()  # scored outputs that are one vector [C] per feed
        self.mask_input = position_mask_input(reference_model)  # the attention-mask input, or None
        # an encoder-decoder's encoder mask covers the encoder's positions only; a KV-cache decoder's covers past and
        # current tokens (_current_positions)
        self.encoder_mask = _encoder_mask(reference_model, self.mask_input)
        self.fed_past = _fed_past(reference_model)
        self.padding: str | None = None  # which positions are padding, said as "attention_mask is 0"
        self.position_masks: list[np.ndarray | None] = []  # per batch, its [N, S] mask (True = a real token)
        self.masked: frozenset[int] = frozenset()  # scored outputs whose padded positions are not scored
        self.copies = copied_parts(reference_model, list(self.plan))  # outputs a Concat makes of inputs in part
        self.copies_checked = _through_if(reference_model, list(self.plan), self.copies)  # cut where they hold it
        # outputs that blend a graph input in by a mask (an inpainter's image * mask + computed * (1 - mask))
        self.blends = {i: b for i, b in blended_inputs(reference_model, list(self.plan)).items()
                       if i not in self.copies}
        self.crops: list[dict[int, tuple[int, int, np.ndarray]]] = []  # per batch, `_crops`
        self.batch_groups: list[np.ndarray] | None = None  # per batch, its samples' decodes (`_batch_groups`)
        self.units: list[tuple[int, ...]] = []  # per batch, each scored output's samples in it (its sample unit)
        self.constant = False  # every sample gives the input model the same outputs (`_constant_outputs`)
        self.constant_note: str | None = None  # what that means here, said once (`constant_outputs_note`)
        self.auto_chosen: set[str] = set()  # the outputs whose metric was chosen automatically (_resolve_auto)
        self._tokens = False  # the model reads token ids (_resolve_auto)
        self.scales: tuple[np.ndarray | None, ...] = ()  # per scored output, its dense set's typical norm (_scales)
        self.reference: list[np.ndarray] | None = None
        self.dense: float | None = None
        self.dense_by: dict[str, float] = {}
        self.reference_seconds: float | None = None
        parts = None
        relating = relating_outputs(reference_model)
        if relating and self._cached:
            relating = self._relating_as_run(reference_model, relating)
        if relating and not quiet:
            log.warning("output(s) %s relate the samples of a batch to each other (the batch axis twice in their "
                        "shapes): their figures hold for batches of %s samples as the data is read, the batch this "
                        "run keeps whole; --batch-size sets the batch you run", ", ".join(relating),
                        getattr(reader, "batch_size", "?"))
        # a time-major feed is never cut along axis 0, its time (sweep 20: [T, N, 28] was cut into T = 16 and 12),
        # nor a file whose rows the model reads together (`rows_note`; real models 47: madmom's beat TCN's
        # spectrogram of 814 frames cut into 16 ended in onnxruntime's "Invalid input shape: {2,81}", its chroma
        # MLP's 150 decision files were judged as 837 parts of up to 16 frames)
        timed = bool(getattr(reader, "per_feed", False)) and bool(time_major_inputs(reference_model))
        together = rows_together(reader)
        # a stacked decoder's decision part (its samples' decodes, `row_groups`) is cut where no decode goes on, so
        # that every part holds whole decodes (the final exam's unit, converter/auto/exam.exam_batches)
        groups, regrouped = getattr(reader, "row_groups", None), False
        if split and self._cached is not None and _dynamic_batch(reference_model) and not relating and not timed \
                and not together:
            parts = split_by_groups(self._cached, groups, split) if groups is not None else None
            regrouped = parts is not None
            if parts is None:
                parts = (part for batch in self._cached for part in split_batch(*batch, split))
            parts = held_batches(parts, cache_bytes) if isinstance(self._cached, HeldBatches) else list(parts)
        if not parts or len(parts) <= len(self._cached) and not regrouped:
            self._score_reference(reference_model)
            return
        whole, self._cached = self._cached, parts
        try:  # one dense pass, on the parts; the metrics are still chosen on the data's first whole batch
            self._score_reference(reference_model, first_batch=whole[0][0])
        except (CalibrationError, ConfigError) as exc:
            self._cached, self.reference = whole, None  # again as the data holds it: errors name its own figures
            self._score_reference(reference_model)
            if not (isinstance(exc, CalibrationError) and run_failure(exc.__cause__) is not None):
                raise
            # the input model runs the data's batches and not parts of them (sweep 57: a legacy-traced mixture of
            # experts fails on a batch that leaves an expert unpicked): the batches are kept as the data holds them
            log.info("the data's batches are run whole: the input model fails on parts of %d samples (%s)", split,
                     run_failure(exc.__cause__))

    def _relating_as_run(self, model: onnx.ModelProto, names: list[str]) -> list[str]:
        """Of the outputs whose declared shape holds the batch symbol twice (`relating_outputs`), those that keep it
        when the input model runs the data's first batch: every axis so declared has the batch's size. Sweep 58:
        torch legacy's export of diffusers' AutoencoderKL declares 'recon' [N, 1, N, W] and returns [N, 1, 28, 28];
        the run warned that it related the samples of a batch and kept its batches of 64 whole."""
        feeds = self._cached[0][0]
        rows, batch = _rows(feeds), _batch_dims(model)
        try:
            outs = self.session(model).run(names, feeds)
        except Exception:  # noqa: BLE001 - the reference pass says onnxruntime's failure; the declared shapes stand
            return names
        declared = {o.name: [d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
        return [n for n, out in zip(names, outs) if rows < 2 or np.ndim(out) != len(declared[n])
                or all(np.shape(out)[k] == rows for k, d in enumerate(declared[n]) if d in batch)]

    def _score_reference(self, reference_model: onnx.ModelProto | None, first_batch: dict | None = None) -> None:
        """Labels, sample count and the dense model's outputs and scores on the batches as they are now; automatic
        metrics are chosen on the outputs of the first batch, or of `first_batch` (feeds) when given."""
        tokens = token_inputs(reference_model) if self.mask_input is None else ()
        read, copied, blended, rows = [], [], [], []
        for feeds, lab in self.batches():
            read.append((lab, _position_mask(feeds, self.mask_input),
                         {k: hold(feeds[k]) for k in tokens if k in feeds}))  # the recommender's 5.2 GB: 0.16
            copied.append(_copied_sizes(self.copies, feeds, self.copies_checked))
            blended.append(_blended_terms(self.blends, feeds))
            rows.append(_rows(feeds))
        self.labels: list[np.ndarray | None] = [lab for lab, _, _ in read]
        self.batch_groups = _batch_groups(getattr(self.reader, "row_groups", None), rows)
        self.position_masks = [mask for _, mask, _ in read]
        self.padding = None if self.mask_input is None else f"{self.mask_input} is 0"
        if self.mask_input is None and tokens:
            found = inferred_padding([ids for _, _, ids in read], tokens)
            if found is not None:
                self.position_masks, self.padding = found
        self.num_samples = sum(feed_samples(f, self.reader) for f, _ in self.batches()) if self._cached else None
        self.last: dict[str, dict] = {}
        self._part_scores: dict[str, tuple[float, ...]] = {}  # the last `_per_output`'s (`part_scores`)
        if reference_model is not None:
            first = self.reference is None
            t0 = time.perf_counter()
            sess = self.session(reference_model)
            try:
                self.reference_all = self._reference_outputs(sess, reference_model)
            except ConverterError:
                raise
            except Exception as exc:  # onnxruntime's Fail / InvalidArgument: the input model itself on this data
                failed, ran = self._failing_batches(sess)
                if failed and ran:  # some batches run, others not: the values in a batch decide
                    raise CalibrationError(_some_batches_failed(exc, self.reader, failed, ran, reference_model)) \
                        from exc
                one = self._one_sample_fails(sess)
                fits = one and _fits_declared(reference_model, next(self.batches(), ({}, None))[0])
                raise CalibrationError(_input_model_failed(exc, self.reader, one, reference_model, fits)) from exc
            self.reference_seconds = time.perf_counter() - t0  # one dense pass (a run's time budget reads it)
            if self.carried and first:
                self._chain(sess, reference_model)
            _refuse_unstacked(reference_model, self.reference_all)
            if not self._quiet:  # said once per run, by the run's first evaluator (as the metric choice)
                _say_nonfinite(reference_model, self.reference_all)
            rows, sizes = self._rows(reference_model)
            self.sample_axes = self._sample_axes(rows, reference_model, sizes)
            self.grouped = self._grouped(sess, rows)
            self.row_outputs = _row_outputs(reference_model, list(self.plan), self.sample_axes, self.reference_all)
            if first:
                self._resolve_auto(lambda: self._run_feeds(sess, first_batch) if first_batch is not None else
                                   self._first_values(), reference_model)
                self._read_outs()
            self.crops = self._crops(copied, blended)
            self.masked = self._masked_outputs()
            self.scales = self._scales()
            self.units = [tuple(self.output_samples(i, v) for i, v in enumerate(b)) for b in self.reference_all]
            if first:
                self.constant = self._constant_outputs()
                self.constant_note = constant_outputs_note(self._inputs_vary()) if self.constant else None
            if first and self.constant and not self._quiet:
                log.warning(self.constant_note)
            elif first and not self._quiet:
                self._say_input_blind()
            self.reference = [as_array(b[0]) for b in self.reference_all]
            if not getattr(self.reader, "per_feed", False):  # per feed, a "sample" is a feed (reader.num_samples)
                self.num_samples = sum(rows)
            elif self.num_samples is None:  # feeds not held in memory: one a batch, counted as they were read.
                # Without a count the search's pace was the whole reference pass a sample: real models 54's CTC
                # recognizer (187 decision feeds of 2,030 lines, 447 MB) priced a 9.9 s pass at 20,141 s
                self.num_samples = len(self.reference_all)
            self.dense_by = self._per_output(self.reference_all)
            self.dense = self.dense_by[self.output]
            self.last = {}

    def _reference_outputs(self, sess: ort.InferenceSession, model: onnx.ModelProto) -> list[tuple]:
        """The input model's scored outputs on every batch, which the run holds as what every candidate is compared
        to; refused after the first batch when all of them would not fit in REFERENCE_SHARE of the memory available
        (`_refuse_large_reference`)."""
        held: list[tuple] = []
        for values in self.run_all(sess):
            held.append(values)
            if len(held) == 1:
                feeds = next(self.batches())[0]
                batches = (len(self._cached) if self._cached is not None else
                           math.ceil((self.reader.num_samples or 0) / max(1, feed_samples(feeds, self.reader))))
                _refuse_large_reference(model, [n or sess.get_outputs()[0].name for n in self.plan], values,
                                        batches, available_memory())
        return held

    def _read_outs(self) -> None:
        """An output the automatic choice scored rel_l2 that looks like a CTC head or a segmentation map in every
        batch (metric_choice `read_out_kind`) is scored both ways: its read-out (the text, the class map) and its
        values, each within the budget. Said once per run, with the flag that keeps one reading. Then unnamed heads
        that nothing tells apart (`_unnamed_heads`)."""
        for i, (name, kind) in enumerate(list(self.plan.items())):
            if kind not in ("rel_l2", "agreement") or name not in self.auto_chosen:
                continue
            batches = [self.samples_first(i, as_array(b[i]), None)[0] for b in self.reference_all]
            if kind == "agreement":
                self._led(name, batches)
                continue
            found = read_out_kind(name, batches, tokens=self._tokens)
            if found is None:
                continue
            self.plan[name], looks = found
            if not self._quiet:
                read_out = found[0].split("+")[0]
                log.warning("output '%s' looks like %s though no name or value says class scores: it is scored by "
                            "%s and rel_l2, each within the budget, so neither its read-out nor its values move "
                            "unseen; --metric %s=%s scores the read-out alone, --metric %s=rel_l2 the values alone",
                            name, looks, read_out, name, read_out, name)
        self._unnamed_heads()

    def _unnamed_heads(self) -> None:
        """Two or more outputs scored by their argmax only because nothing says otherwise (metric_choice
        `unnamed_heads`: no class name, rows not probabilities, no other output holding the classes) are each scored
        by agreement and rel_l2, each within the budget: which of them holds classes, if any, nothing in the model
        says. Sweep 32: a Keras model's `stats` [N, 2] regression (ink, a combination of an input) beside its `digit`
        logits [N, 10] was judged by the argmax over its two values, which bounds neither."""
        heads = unnamed_heads(self.plan, self.auto_chosen)
        if not heads:
            return
        for name in heads:
            self.plan[name] = "agreement+rel_l2"
        if not self._quiet:
            names = ", ".join(f"'{n}'" for n in heads)
            log.warning("outputs %s hold no class name nor probabilities, so nothing says which of them are class "
                        "scores and which values: each is scored by agreement and rel_l2, within the budget; "
                        "--metric OUTPUT=agreement (class scores) or --metric OUTPUT=rel_l2 (values) for each "
                        "says which", names)

    def _led(self, name: str, batches: list) -> None:
        """An unnamed [N, C] output scored by its argmax whose argmax is one or two columns in every sample of the
        data (metric_choice `few_leaders`: coordinates, or one or two classes only) is scored by agreement and rel_l2,
        each within the budget."""
        leaders = few_leaders(name, batches)
        if leaders is None:
            return
        self.plan[name] = "agreement+rel_l2"
        if not self._quiet:
            columns = f"column {leaders[0]}" if len(leaders) == 1 else "columns " + " and ".join(map(str, leaders))
            log.warning("output '%s' is led by %s in every sample of the data, so its argmax tells little apart "
                        "here (coordinates, or data of one or two classes): it is scored by agreement and rel_l2, "
                        "each within the budget; --metric %s=agreement scores the argmax alone, --metric %s=rel_l2 "
                        "the values alone", name, columns, name, name)

    def _masked_outputs(self) -> frozenset[int]:
        """The scored outputs whose padded positions are left out: [N, S, ...] along the attention mask in every
        batch (sample axis 0), scored by a kind that reads positions (MASKED_KINDS), every batch holding a real
        token. A row with none (a finished sequence in a decoder's batch) is no sample: `_masked_samples` leaves it
        out (it had dropped the mask for the whole run, padding scored: sweep 13's merged GPT-2 decoder). Said once
        per run."""
        masks = self.position_masks
        if not masks or any(m is None for m in masks):
            return frozenset()
        masks = self._current_positions(masks)
        found = []
        for i, (name, kind) in enumerate(self.plan.items()):
            if kind not in MASKED_KINDS or (self.sample_axes and self.sample_axes[i] != 0):
                continue
            if self.encoder_mask and "encoder" not in name.lower():  # the decoder's positions are not the mask's
                continue
            shapes = [as_array(ref[i]).shape for ref in self.reference_all]
            if all(len(sh) >= 3 and sh[:2] == m.shape and m.any() for sh, m in zip(shapes, masks)):
                found.append(i)
        if found and not self._quiet:
            padded = 1.0 - float(np.mean([m.mean() for m in masks]))
            outs = ", ".join(f"{list(self.plan)[i]} ({list(self.plan.values())[i]})" for i in found)
            empty = sum(int((~m.any(axis=1)).sum()) for m in masks)
            log.info("padding not scored: positions where %s (%.0f%% of them here) are left out of %s%s",
                     self.padding, 100 * padded, outs,
                     f"; {empty} of {sum(len(m) for m in masks)} samples hold no real position and are not scored"
                     if empty else "")
        return frozenset(found)

    def _constant_outputs(self) -> bool:
        """Whether every scored output is the same for every one of at least two samples (sweep 15: 300 all-zero
        images were pruned 36,394x "within 0.00 pp", unsaid)."""
        samples = 0
        for i in range(len(self.plan)):
            first = None
            for ref in self.reference_all:
                try:
                    value = as_array(ref[i])
                except Exception:  # noqa: BLE001 (a sequence of maps: not compared here)
                    return False
                rows = value[None] if self.whole(i) else self.samples_first(i, value, None)[0]
                if rows.ndim == 0 or rows.shape[0] == 0:
                    return False
                first = rows[:1] if first is None else first  # a row, not its element: a string output's is a str
                if rows.shape[1:] != first.shape[1:] or not (rows == first).all():
                    return False
                samples += rows.shape[0] if i == 0 else 0
        return samples >= 2

    def _inputs_vary(self) -> bool:
        """Whether two samples of the data differ in some input (each feed's rows against the first sample's)."""
        first: dict[str, np.ndarray] = {}
        for feeds, _ in self.batches():
            for name, value in feeds.items():
                rows = np.asarray(value)
                if rows.ndim == 0 or rows.dtype == object:
                    continue
                ref = first.setdefault(name, rows[0])
                if rows.shape[1:] != ref.shape or not (rows == ref).all():
                    return True
        return False

    def input_blind_losses(self) -> dict[str, float]:
        """Per output scored by its values' relative error or cosine, or as a binary decision (`BLIND_KINDS`), the
        loss in pp its metric gives an output that no longer reads the input: the dense model's mean value over the
        set, given for every sample; for a binary decision its median, the constant its metric scores best (on the
        side most samples are on, the least mean probability change). Outputs padded, cropped, pooled per feed, not
        float or of shapes that change between batches are left out. Batch by batch for a mean: no copy of the set's
        outputs is made."""
        losses = {}
        for i, (name, kind) in enumerate(self.plan.items()):
            if base_kind(kind) not in BLIND_KINDS or i in self.masked or self.whole(i) or i in self.grouped:
                continue
            if any(i in c for c in self.crops or ()):
                continue
            try:
                dense = [self.samples_first(i, as_array(r[i]), None)[0] for r in self.reference_all]
            except Exception:  # noqa: BLE001 (a sequence of maps: not compared here)
                continue
            if (not dense or len({d.shape[1:] for d in dense}) != 1 or any(d.dtype.kind != "f" for d in dense)
                    or sum(len(d) for d in dense) < 2 or not all(np.isfinite(d).all() for d in dense)):
                continue
            if base_kind(kind) in BINARY_KINDS:
                mean = np.median(np.concatenate(dense), axis=0)
            else:
                mean = sum(d.sum(axis=0, dtype=np.float64) for d in dense) / sum(len(d) for d in dense)
            scale = self.scales[i] if self.scales else None
            metric, totals = METRICS[kind], {"before": [0.0, 0], "after": [0.0, 0]}
            for d in dense:
                blind = np.broadcast_to(mean.astype(d.dtype), d.shape)
                for key, out in (("before", d), ("after", blind)):
                    sums, count = metric.batch(out, d, None, scale)
                    totals[key][0] = np.asarray(sums) + totals[key][0]
                    totals[key][1] += count
            before, after = (metric.finish(tuple(totals[k][0]), totals[k][1]) for k in ("before", "after"))
            losses[name] = 100.0 * (float(before) - float(after))
        return losses

    def _say_input_blind(self) -> None:
        """Sweep 34: a triplet-loss embedding, L2-normalized, whose values share one direction and vary by 0.1% of
        their norm, was pruned to 2 weights of 54.9K "within 0.00 pp" of cosine: the written model gives every
        image the same embedding (nearest-class-mean accuracy 92.8% -> 9.0% on held-out digits). When the dense
        model's mean output, given for every sample, is within an output's budget by its metric, that budget does
        not tell a model that reads its input from one that does not: said, with the flag that bounds it."""
        if not self.budget_pp:
            return
        for name, loss in self.input_blind_losses().items():
            budget = self.output_budgets.get(name, self.budget_pp)
            if loss <= budget and base_kind(self.plan[name]) in BINARY_KINDS:
                rare, n = self._rarer_side(name)
                log.warning("output '%s' is on one side of its decision in all but %d of %d samples: its median "
                            "value given for every sample, whatever the input, scores a loss of %.2g pp by %s, "
                            "within its budget of %g pp, so a model that no longer reads its input would be within "
                            "it too, and the budget says little about the samples on the rarer side (a detector's "
                            "detections); more of them in --data, or --max-loss %s=L with L well below %.2g pp, "
                            "bound how far they move", name, rare, n, loss, self.plan[name], budget, name, loss)
            elif loss <= budget:
                log.warning("output '%s' varies little across the samples next to its size: its mean value given "
                            "for every sample, whatever the input, scores a loss of %.2g pp by %s, within its budget "
                            "of %g pp, so a model that no longer reads its input would be within it too; "
                            "--max-loss %s=L with L well below %.2g pp bounds how far it moves", name,
                            loss, self.plan[name], budget, name, loss)

    def _rarer_side(self, name: str) -> tuple[int, int]:
        """(samples on the rarer side of a binary output's decision, samples): positive above 0.5, or a logit's 0
        (or the user's threshold: binary_prob@T)."""
        i = list(self.plan).index(name)
        dense = np.concatenate([self.samples_first(i, as_array(r[i]), None)[0] for r in self.reference_all])
        rows = dense.reshape(len(dense), -1)
        positive = (rows > decision_threshold(self.plan[name])).any(axis=1)
        return int(min(positive.sum(), len(positive) - positive.sum())), len(positive)

    def _current_positions(self, masks: list[np.ndarray]) -> list[np.ndarray]:
        """A decoder fed a past (KV cache) has an attention mask over past + current tokens, [N, P + S], and outputs
        over the current S: their mask is its last S columns (the cache comes first). Taken when some output scored
        by positions is [N, S, ...] with S shorter than the mask in every batch; the masks then held are the trimmed
        ones. Sweep 13: a merged GPT-2 decoder fed real pasts had its mask dropped and padding scored."""
        if not self.fed_past:  # no cache: a mask longer than an output is another sequence's (an encoder's)
            return masks
        for i, kind in enumerate(self.plan.values()):
            if kind not in MASKED_KINDS or (self.sample_axes and self.sample_axes[i] != 0):
                continue
            shapes = [as_array(ref[i]).shape for ref in self.reference_all]
            if not all(len(sh) >= 3 and sh[0] == m.shape[0] and sh[1] <= m.shape[1] for sh, m in zip(shapes, masks)):
                continue
            if any(sh[1] < m.shape[1] for sh, m in zip(shapes, masks)):
                self.position_masks = [m[:, m.shape[1] - sh[1]:] for sh, m in zip(shapes, masks)]
                return self.position_masks
        return masks

    def _scales(self) -> tuple[np.ndarray | None, ...]:
        """Per scored output whose metric is a relative error (`Metric.norms`), the typical norm of its dense values
        over the whole set (`reference_scale`: samples as `output_terms` scores them, rows of an output that follows
        no batch, padding left out), which every sample's denominator is floored against; None for the others.
        Computed once, here: the figure is the same whatever the batches or the subset a measurement runs."""
        scales = []
        for i, kind in enumerate(self.plan.values()):
            if METRICS[kind].norms is None:
                scales.append(None)
                continue
            dense = [self.samples_first(i, want, want)[1] for want in
                     (self.cropped(i, as_array(r[i]), self.crop(b)) for b, r in enumerate(self.reference_all))]
            masks = [self.position_mask(b) if i in self.masked else None for b in range(len(dense))]
            scales.append(reference_scale(METRICS[kind], [d if m is None or d.shape[:2] != m.shape else
                                                          real_positions(d, m)[m.any(axis=1)]
                                                          for d, m in zip(dense, masks)]))
        return tuple(scales)

    def position_mask(self, batch: int | None) -> np.ndarray | None:
        """Batch `batch`'s attention mask [N, S] (True = a real token) when some output is `masked`, else None."""
        if batch is None or not self.masked or batch >= len(self.position_masks):
            return None
        return self.position_masks[batch]

    def _crops(self, copied: list[dict], blended: list[dict] | None = None) -> list[dict[int, tuple]]:
        """Per batch, {scored output: (axis, its length there, the positions of its computed part)} for each output
        `copies` names whose parts' lengths this batch's feeds give (every part a graph input copies, and one computed
        part: the rest of the output's length). The decision rule's statement says which (`BudgetRule._copied`).
        And {scored output: (None, None, the input's blended-in term)} for each output `blends` names whose term
        these feeds give in the dense output's shape (`_blended_terms`): scored less that term, its computed part."""
        crops = []
        for b, (sizes, ref) in enumerate(zip(copied, self.reference_all, strict=True)):
            batch = {}
            for i, term in (blended[b] if blended else {}).items():
                if term.shape == as_array(ref[i]).shape:
                    batch[i] = (None, None, term)
            for i, (axis, parts, arrays) in sizes.items():
                value = as_array(ref[i])
                if value.ndim <= axis or (self.sample_axes and self.sample_axes[i] == axis):
                    continue
                total = value.shape[axis]
                rest = total - sum(p for p in parts if p is not None)
                if parts.count(None) != 1 or not 0 <= rest < total:  # nothing copied in this batch: nothing cut
                    continue
                if arrays is not None and not _holds_copies(value, axis, arrays):  # a branch that copies nothing
                    continue
                at, keep = 0, None
                for p in parts:
                    if p is None:
                        keep = np.arange(at, at + rest)
                    at += rest if p is None else p
                batch[i] = (axis, total, keep)
            crops.append(batch)
        return crops

    def crop(self, batch: int | None) -> dict[int, tuple[int, int, np.ndarray]] | None:
        """Batch `batch`'s `_crops` and, for an output of `last_positions` [N, T, ...], its last position on axis 1
        (None: nothing to crop)."""
        if batch is None or not self.crops or batch >= len(self.crops):
            return None
        crop = self.crops[batch]
        if self.last_positions and self.reference_all is not None:
            for i, name in enumerate(self.plan):
                value = as_array(self.reference_all[batch][i]) if name in self.last_positions else None
                if value is not None and value.ndim >= 3 and value.shape[1]:
                    crop = {**crop, i: (1, value.shape[1], np.array([value.shape[1] - 1]))}
        return crop or None

    @staticmethod
    def cropped(i: int, value: np.ndarray, crop: dict | None) -> np.ndarray:
        """Scored output `i`'s computed part when `crop` (`crop(batch)`) holds it and the value has the length the
        dense model's had there (a candidate of another shape is scored, and lost, as it is)."""
        if not crop or i not in crop:
            return value
        axis, total, keep = crop[i]
        if axis is None:  # a blended-in input (`blended_inputs`): the output less it, where the shapes agree
            return value - keep if value.shape == keep.shape and value.dtype.kind == "f" else value
        if value.ndim <= axis or value.shape[axis] != total:
            return value
        return np.take(value, keep, axis=axis)

    def _rows(self, model: onnx.ModelProto | None) -> tuple[list[int], list[dict[str, int]]]:
        """Each batch's samples: its first array's batch axis (axis 1 of a time-major input), `_rows`; and the size
        each symbolic first dim of the inputs takes in it (`_declared_sizes`), read in the same pass."""
        time_major = set(time_major_inputs(model)) if model is not None else set()
        # a file whose rows the model reads together (the reader's `rows_note`) is one sample: real models 47's
        # madmom downbeat BLSTM, a file of ~1,300 frames, had each frame of its [frames, 3] output counted as a
        # decision sample (150 files judged as 153,235 samples), and a judge priced at 362 s left no time
        together = rows_together(self.reader)
        rows, sizes = [], []
        for feeds, _ in self.batches():
            rows.append(1 if together else _rows(feeds, time_major))
            sizes.append(_declared_sizes(model, feeds) if model is not None else {})
        return rows, sizes

    def _sample_axes(self, rows: list[int], model: onnx.ModelProto | None,
                     sizes: list[dict[str, int]]) -> tuple[int | None, ...]:
        """Each scored output's sample axis: 0 when its declared first dim is an input's symbolic first dim and its
        first axis has that dim's size in every batch (`_holds`), else the
        first axis (0 first) that holds the batch's sample count (`rows`) in every batch (a recurrent state [2, N,
        H], as silero VAD's stateN: its 2 rows were 2 samples, 270 decision samples for 135 feeds), else None: the
        output follows no batch, and each batch's rows are pooled into one sample. torchvision's ssdlite320 takes one
        image [3, H, W] and returns [D, 4] boxes, D scores and D labels: every detection was a sample (33,600
        decision samples from 112 images, a margin for 300 times the evidence the set holds). A file whose rows the
        model reads together (`rows_note`) is one sample whatever the outputs' declared dims say: atspm-detector's
        function head declares 'flogp' [D, 7] beside inputs [D, K], and attends across the D detectors."""
        together = rows_together(self.reader)
        shared = set() if together else _batch_dims(model)
        axes = []
        for i, name in enumerate(self.plan):
            if is_list(self.plan[name]):  # a request: its rows read together as one list (output_metrics.LISTS)
                _one_score_a_row(name, self.plan[name], [as_array(ref[i]) for ref in self.reference_all])
                axes.append(None)
                continue
            symbol = _first_dim(model, name or model.graph.output[0].name) if shared else None
            if symbol in shared and all(_holds(as_array(ref[i]).shape, size.get(symbol))
                                        for ref, size in zip(self.reference_all, sizes)):
                axes.append(0)
                continue
            common = None
            for r, ref in zip(rows, self.reference_all):
                shape = as_array(ref[i]).shape
                fits = {k for k, d in enumerate(shape) if d == r}
                common = fits if common is None else common & fits
            axes.append(None if not common else 0 if 0 in common else min(common))
        return tuple(axes)

    def _grouped(self, sess, rows: list[int]) -> dict[int, int]:
        """Scored outputs that follow no batch whose length is k >= 2 times the batch's samples in every batch, the
        first sample's k rows first (run alone, it gives them): {output: k}, its sample axis now 0, its rows scored
        as ever and summed k at a time, one sample each (`output_terms`: the figure is the same). skl2onnx's
        multi-output MLPRegressor writes its [N, 3] result as a Reshape to [-1, 1]: each feed was pooled into one
        sample (sweep 24: 15 decision samples from 225). Rows in another order (target-major) stay pooled: per
        sample they cannot be told apart."""
        if not self.sample_axes or not self.reference_all or getattr(self.reader, "per_feed", False):
            return {}
        found = {}
        for i, axis in enumerate(self.sample_axes):
            if axis is not None:
                continue
            lengths = [as_array(ref[i]).shape for ref in self.reference_all]
            if any(not shape or not r or shape[0] % r for shape, r in zip(lengths, rows)):
                continue
            ks = {shape[0] // r for shape, r in zip(lengths, rows)}
            if len(ks) == 1 and min(ks) >= 2:
                found[i] = ks.pop()
        if not found:
            return {}
        feeds, labels = next(iter(self.batches()))
        alone = split_batch(feeds, labels, 1)
        if len(alone) < 2:
            return {}
        try:
            first = self._run_feeds(sess, alone[0][0])
        except Exception:  # noqa: BLE001 - a model that cannot run one sample alone keeps its feeds pooled
            return {}
        grouped = {}
        axes = list(self.sample_axes)
        for i, k in found.items():
            mine, ref = as_array(first[i]), as_array(self.reference_all[0][i])
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            if mine.shape == (k, *ref.shape[1:]) and np.allclose(mine, ref[:k], rtol=1e-4, atol=1e-6 * max(scale, 1.0)):
                grouped[i], axes[i] = k, 0
        self.sample_axes = tuple(axes)
        return grouped

    @property
    def rows(self) -> int:
        """Samples the scored outputs hold in all (per batch, the most any output has): what the decision rule counts,
        also where a sample is a feed read as is (`num_samples` then counts feeds, which may hold a batch each)."""
        return sum(max(u, default=1) for u in self.units)

    def output_samples(self, i: int, value) -> int:
        """Samples of scored output `i` in one batch's `value`: its length on its sample axis, one for an output
        that follows no batch (its rows pooled)."""
        axis = self.sample_axes[i] if self.sample_axes else 0
        if axis is None:
            return 1
        shape = as_array(value).shape
        return (shape[axis] if len(shape) > axis else 1) // self.grouped.get(i, 1)

    def samples_first(self, i: int, out: np.ndarray, want: np.ndarray | None) -> tuple:
        """Scored output `i` and its dense value with the samples (or, for an output that follows no batch, the rows
        its metric scores before they are pooled into one sample: `output_terms`) on axis 0, alike. A `row_outputs`
        vector [C] is one row [1, C]."""
        if i in self.row_outputs and out.ndim == 1:
            return out[None], None if want is None or want.ndim != 1 else want[None]
        axis = self.sample_axes[i] if self.sample_axes else 0
        if not axis or out.ndim <= axis or (want is not None and want.ndim <= axis):
            return out, want
        return np.moveaxis(out, axis, 0), None if want is None else np.moveaxis(want, axis, 0)

    def output_terms(self, i: int, kind: str, value, ref, labels, mask: np.ndarray | None = None,
                     crop: dict | None = None, refs: tuple | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-sample (terms [n, k], counts [n]) of scored output `i` in one batch (`Metric.samples`), or None when
        there is nothing to compare (an empty batch-major output).

        A batch whose shape differs from the dense model's (data-dependent detections) loses every sample of it. An
        output that follows no batch (`whole`) is scored by its metric row by row as ever, and its rows' terms are
        summed into ONE sample per batch (counts summed too): the metric's figure is the same sum, while the
        samples, and so the standard errors, are the feeds; a changed row count loses that one sample whole, and
        no rows in either model is one unchanged sample. `mask`: the batch's attention mask (`position_mask`); the
        padded positions of a `masked` output are not scored. `crop`: the batch's `crop`; the copied part of an
        output a Concat makes of a graph input is not scored. `refs`: the batch's dense values of every scored
        output, read by a metric that reads other outputs (scaled@S: `companions`)."""
        out = self.cropped(i, as_array(value), crop)
        want = None if ref is None else self.cropped(i, as_array(ref), crop)
        out, want = self.samples_first(i, out, want)
        pooled = self.whole(i)
        if want is not None and out.shape != want.shape:
            got = mismatch_samples(kind, want)
            if pooled:  # the whole feed lost, as many rows as the dense model had (at least one; a request: one)
                count = 1 if is_list(kind) else max(1, int(got[1].sum()))
                worst = np.asarray(METRICS[kind].lower_better, dtype=np.float64)[None, :] * count
                return worst, np.array([count], dtype=np.int64)
            k = self.grouped.get(i)
            return pool_rows(*got, k) if k and len(got[0]) % k == 0 else got
        if out.size == 0:
            return unchanged_samples(kind, want) if pooled and want is not None and not METRICS[kind].classes else None
        scale = self.scales[i] if self.scales else None
        if mask is not None and i in self.masked and want is not None and out.shape[:2] == mask.shape:
            return _masked_samples(kind, out, want, labels, mask, scale)
        others = self.companions(kind, refs, crop) if METRICS[kind].reads else None
        got = METRICS[kind].terms(out, want, labels, scale, others)
        if i in self.grouped and len(got[0]) % self.grouped[i] == 0:  # k rows a sample: each sample's own summed
            return pool_rows(*got, self.grouped[i])
        return pool(*got) if pooled else got

    def companions(self, kind: str, refs: tuple | None, crop: dict | None = None) -> tuple | None:
        """The dense values in one batch (`refs`, every scored output's) of the outputs `kind` reads beside its own
        (`Metric.reads`: scaled@S's scale and weights, which `metric_plan` scores too), samples first; None for a
        kind that reads none."""
        reads = METRICS[kind].reads
        if not reads:
            return None
        names = list(self.plan)
        if refs is None or any(n not in names for n in reads):
            raise ConfigError(f"metric '{kind}' reads output(s) {', '.join(reads)}, which are not scored here; score "
                              f"them too (--metric {reads[0]}=auto)")
        return tuple(self.samples_first(j, self.cropped(j, as_array(refs[j]), crop), None)[0]
                     for j in (names.index(n) for n in reads))

    def _first_values(self) -> tuple:
        """The dense outputs the automatic metrics are chosen on: the first batch's; for a `row_outputs` vector,
        the vectors of the first AUTO_ROWS feeds stacked [k, C] (one feed's is one sample: the rules that read
        rows, probabilities and quantities, need several); for an output whose first batch holds fewer than
        AUTO_ROWS samples (a model whose batch is fixed at 1: mediapipe's and other TFLite exports), the first
        batches' rows together, up to AUTO_ROWS: on one row, a head of positive quantities (test_output_metrics'
        MOS-like scores) was judged by its argmax, one row being too few for the quantity rule."""
        if not self.reference_all:
            return ()
        values = list(self.reference_all[0])
        for i in self.row_outputs:
            rows = [as_array(b[i]) for b in self.reference_all[:AUTO_ROWS]]
            if all(r.ndim == 1 and r.shape == rows[0].shape for r in rows):
                values[i] = np.stack(rows)
        for i, first in enumerate(values):  # a fixed batch of 1 (mediapipe's, TFLite's): rows of the next batches
            first = as_array(first)
            if i in self.row_outputs or not self.sample_axes or self.sample_axes[i] != 0 or first.ndim < 1 \
                    or len(first) >= AUTO_ROWS:
                continue
            parts, rows = [], 0
            for b in self.reference_all:
                part = as_array(b[i])
                if part.ndim != first.ndim or part.shape[1:] != first.shape[1:] or part.dtype != first.dtype:
                    break
                parts.append(part)
                rows += len(part)
                if rows >= AUTO_ROWS:
                    break
            values[i] = np.concatenate(parts) if len(parts) > 1 else first
        return tuple(values)

    def whole(self, i: int) -> bool:
        """Does scored output `i` follow no batch (each batch's rows pooled into one sample, `output_terms`)?"""
        return bool(self.sample_axes) and self.sample_axes[i] is None

    def _plan_without_reference(self, metric, output) -> dict[str, str]:
        headline, named = parse_metric_spec(metric)
        if named or headline is None:
            raise ConfigError("without a reference model only one label metric can be scored; pass metric="
                              "'accuracy' (or 'top5') and output=NAME, or give reference_model.")
        _check_kind(headline, self.reader.has_labels, "")
        if METRICS[headline].needs_reference:
            raise ConfigError(f"metric '{headline}' compares against the dense model; give reference_model.")
        return {output or "": headline}

    def _run_feeds(self, sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> tuple:
        """The scored outputs of one feed dict."""
        names = {i.name for i in sess.get_inputs()}
        wanted = [n or sess.get_outputs()[0].name for n in self.plan]
        return tuple(sess.run(wanted, {k: v for k, v in feeds.items() if k in names}))

    def _resolve_auto(self, first: Callable[[], tuple], model: onnx.ModelProto | None = None) -> None:
        """Automatic metrics chosen from the dense outputs of one batch (`first()`, asked only when some are) and
        the graph (which outputs it makes probabilities)."""
        self.auto_chosen = {n for n, k in self.plan.items() if k == AUTO}
        if AUTO in self.plan.values():  # every output at once: a head beside the others
            facts = graph_facts(model)
            self._tokens = facts["tokens"]  # per-token outputs, never a CTC head (`_read_outs`)
            whole = {n for i, n in enumerate(self.plan) if self.whole(i)}  # a feed's one vector: its sequence
            chosen = auto_kinds(dict(zip(self.plan, self._first_samples_first(first()))), quiet=self._quiet,
                                sequences=whole, **facts)
            for name, kind in self.plan.items():
                if kind == AUTO and name in chosen:
                    self.plan[name] = chosen[name]
        _refuse_argmax_of_one({n: k for n, k in self.plan.items() if n not in self.auto_chosen}, self.plan, first,
                              self._first_samples_first)
        if not self._quiet:
            for note in scale_note(scale_pairs(model), self.plan, self.auto_chosen):
                log.warning(note)
            fixed = [n for n in untouched_outputs(model) if n not in self.plan] if model is not None else []
            if fixed:
                log.info("not scored (no weighted layer reaches them, so pruning cannot change them): %s",
                         ", ".join(fixed))
            log.info("scored outputs: %s", ", ".join(f"{n} ({k})" for n, k in self.plan.items()))

    def _first_samples_first(self, values: tuple) -> tuple:
        """The first batch's outputs with each one's samples on axis 0 (`samples_first`), as every metric reads them,
        so the choice sees the shape the metric will score. Real models 52: easyhtr's word reader returns a Softmax
        [T, 1, 43], one word a feed; seen as it came, T samples of one position each, no CTC line could be found
        (`_ctc_like` needs positions on axis 1), and it was scored seq_agreement, a share of changed positions: "0.18
        pp, upper bound 0.44" while 2.0% of 200 held-out words read differently."""
        axes = self.sample_axes or ()
        return tuple(np.moveaxis(v, axes[i], 0) if i < len(axes) and axes[i] and isinstance(v, np.ndarray)
                     and v.ndim > axes[i] else v for i, v in enumerate(values))

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
        shared = any(f != 1.0 for f in self.loss_factors)  # a loss in pp of --max-loss, not of the metric
        if len(kinds) == 1:
            return f"{kinds[0]} (as a share of its own budget)" if shared else kinds[0]
        own = " (each as a share of its own budget)" if shared else ""
        return f"worst of {len(kinds)} outputs{own}"

    def _cache_batches(self, budget: int):
        n = self.reader.num_samples
        if n is None:
            return None
        first = next(iter(self.reader.batches()), None)
        if first is None and getattr(self.reader, "whole_batches", False):  # a part of the data short of a batch
            raise CalibrationError(short_of_a_batch(self.reader.description, self.reader.specs,
                                                    self.reader.batch_size))
        if first is None:
            raise CalibrationError(f"{self.reader.description}: no batches; the data is empty.")
        feeds, _ = first
        samples = max(1, feed_samples(feeds, self.reader))
        per_sample = sum(np.asarray(a).nbytes for a in feeds.values()) / samples
        if per_sample * n <= budget:
            return list(self.reader.batches())
        # held narrower (calibration.held: 0/1 values as bits, integers in a narrower type) where that fits: lists
        # 57's 400 requests of 1,004 int32 multi-hot rows (5.6 GB) were read and decompressed again every pass
        held = held_bytes(feeds) / samples * n <= budget and held_batches(self.reader.batches(), budget)
        if not held:
            log.info("calibration data (%.0f MB) exceeds the cache budget; streaming it", per_sample * n / 2**20)
            return None
        log.info("calibration data (%.0f MB) held in %.0f MB (values in their narrowest exact form)",
                 per_sample * n / 2**20, held.nbytes / 2**20)
        return held

    @property
    def cached(self) -> bool:
        """Are the calibration batches held in memory (rather than streamed from the reader each time)?"""
        return self._cached is not None

    def _one_sample_fails(self, sess: ort.InferenceSession) -> bool:
        """Whether the input model fails on the first sample of the data alone too (then the batch is not why)."""
        feeds = next(self.batches(), None)
        return feeds is not None and first_sample_fails(lambda one: self._run_feeds(sess, one), feeds[0])

    def _failing_batches(self, sess: ort.InferenceSession) -> tuple[list[tuple[int, int]], int]:
        """([(index, samples)] of the batches the input model fails on, how many it runs), each batch run alone."""
        failed, ran = [], 0
        for b, (feeds, _) in enumerate(self.batches()):
            try:
                self._run_feeds(sess, feeds)
                ran += 1
            except Exception as exc:  # noqa: BLE001 - onnxruntime's failure on this batch, or anything else: counted
                if run_failure(exc) is None:
                    return [], 0
                failed.append((b, feed_samples(feeds, self.reader)))
        return failed, ran

    def batches(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        return iter(self._cached) if self._cached is not None else self.reader.batches()

    def session(self, model_or_session) -> ort.InferenceSession:
        if isinstance(model_or_session, ort.InferenceSession):
            return model_or_session
        return make_session(model_or_session, optimize=self.optimize)

    def run_all(self, model_or_session, extra_feeds: dict[str, np.ndarray] | None = None) -> Iterator[tuple]:
        """The scored outputs, batch by batch: a tuple of values in the order of `outputs`."""
        sess = self.session(model_or_session)
        have = [o.name for o in sess.get_outputs()]
        missing = [n for n in (n or have[0] for n in self.plan) if n not in have]
        if missing:
            raise ConfigError(f"output '{missing[0]}' is not an output of the model; choose one of {have}.")
        return self._runs(sess, enumerate(f for f, _ in self.batches()), extra_feeds)

    def _runs(self, sess: ort.InferenceSession, batches: Iterable[tuple[int, dict]],
              extra_feeds: dict[str, np.ndarray] | None = None) -> Iterator[tuple]:
        """The scored outputs of each (index, feeds) of `batches` run in turn through `sess`; a batch that follows
        the one run just before it in a stream (`chained`) takes that run's state outputs as its state inputs."""
        names = {i.name for i in sess.get_inputs()}
        wanted = [n or sess.get_outputs()[0].name for n in self.plan]
        states = [o for o in dict.fromkeys(self.carried.values()) if o not in wanted] if any(self.chained) else []
        extra = extra_feeds or {}
        last, at = None, None
        for b, feeds in batches:
            run = {**{k: v for k, v in feeds.items() if k in names}, **extra}
            if last is not None and at == b - 1 and b < len(self.chained) and self.chained[b]:
                run.update({i: last[o] for i, o in self.carried.items() if i in names})
            values = sess.run(wanted + states, run)
            last, at = dict(zip(wanted + states, values)), b
            yield tuple(values[:len(wanted)])

    def _chain(self, sess: ort.InferenceSession, model: onnx.ModelProto) -> None:
        """`chained` from the input model's state outputs, one call at a time (`calibration.carried.follows`), and,
        where some batch follows another, the reference run again as streams (the same within float noise)."""
        from onnxprune.calibration.carried import follows

        names = {i.name for i in sess.get_inputs()}
        outs = list(dict.fromkeys(self.carried.values()))
        chained, previous = [], None
        for feeds, _ in self.batches():
            run = {k: v for k, v in feeds.items() if k in names}
            chained.append(previous is not None and follows(previous, run, self.carried))
            previous = dict(zip(outs, sess.run(outs, run)))
        if any(chained):
            self.chained = chained
            self.reference_all = self._reference_outputs(sess, model)
        else:
            self.carried = {}

    def run_batches(self, sess: ort.InferenceSession, order: Iterable[int],
                    extra_feeds: dict[str, np.ndarray] | None = None) -> Iterator[tuple]:
        """The scored outputs of the batches in `order` (any order when the batches are held in memory; streamed,
        ascending: a measurement resumed on more samples starts after the batches it has, the ones before are read
        past). Sweep 17: a resumed measurement on 1.17 GB of streamed data ended in "streamed calibration batches
        can only be run in order"."""
        return self._runs(sess, self._ordered(order), extra_feeds)

    def _ordered(self, order: Iterable[int]) -> Iterator[tuple[int, dict]]:
        """(index, feeds) of the batches in `order`."""
        stream = None if self._cached is not None else enumerate(self.reader.batches())
        for b in order:
            if stream is None:
                feeds = self._cached[b][0]
            else:
                at, feeds = -1, None
                while at < b:
                    at, (feeds, _) = next(stream, (b + 1, (None, None)))  # past the end: asked out of order
                if at != b:
                    raise CalibrationError(f"streamed calibration batches run in ascending order (batch {b} was "
                                           "asked after a later one); please report it.")
            yield b, feeds

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
        for b, (values, ref, labels) in enumerate(zip(outputs, refs, self.labels, strict=True)):
            for i, got in enumerate(self.batch_sums(values, ref, labels, b)):
                if got is not None:
                    sums[i] = np.asarray(got[0], dtype=np.float64) + (0.0 if sums[i] is None else sums[i])
                    counts[i] += got[1]
        if not self.labels:
            raise CalibrationError("no samples were scored; the calibration data is empty.")
        self._part_scores = self.part_scores(sums, counts)
        return self.finish_outputs(sums, counts)

    def batch_sums(self, values, ref, labels, batch: int | None = None) -> list[tuple | None]:
        """(sums, count) of every scored output in one batch (None: nothing to compare in it)."""
        return [None if got is None else (tuple(got[0].sum(axis=0)), int(got[1].sum()))
                for got in self.batch_samples(values, ref, labels, batch)]

    def batch_samples(self, values, ref, labels, batch: int | None = None) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per-sample (terms [n, k], counts [n]) of every scored output in one batch (`Metric.samples`); None
        where the output is empty in this batch (no detections, say). `batch`: its index in `batches()`, which
        picks its attention mask (every caller scoring calibration batches passes it)."""
        kinds = list(self.plan.values())
        if not isinstance(values, tuple):
            if len(kinds) != 1:
                raise ConfigError(f"score() needs a tuple of {len(kinds)} outputs per batch ({self.scored_outputs}).")
            values = (values,)
        mask, crop = self.position_mask(batch), self.crop(batch)
        return [self.output_terms(i, kind, value, None if ref is None else ref[i], labels, mask, crop, ref)
                for i, (kind, value) in enumerate(zip(kinds, values, strict=True))]

    def finish_outputs(self, sums: list, counts: list[int]) -> dict[str, float]:
        """Each scored output's metric from its sums and count over the batches."""
        # an output empty in every batch cannot have moved: it scores as the dense model does (1.0 against it)
        return {name: float(METRICS[kind].finish(sums[i], counts[i])) if counts[i] else 1.0
                for i, (name, kind) in enumerate(self.plan.items())}

    def score(self, outputs: Iterable) -> float:
        """The combined metric of per-batch outputs given in the order of `batches()`: a tuple of the scored
        outputs per batch (or the one array when a single output is scored). Per-output figures go to `last`."""
        values = self._per_output(outputs)
        return self.combine(values, self._part_scores)

    def combine(self, values: dict[str, float], parts: dict[str, tuple[float, ...]] | None = None) -> float:
        """`dense - worst output loss` from each output's metric (the headline's own metric without a reference);
        per-output figures go to `last`. `parts`: each part's own score of an output whose parts have budgets of
        their own (`part_scores`); without them such an output is held to its own budget whole (the stricter)."""
        self.last = {name: self._figure(name, value) for name, value in values.items()}
        if self.dense is None:
            return values[self.scored_outputs[0]]
        parts = parts or {}

        def loss(n: str, v: float) -> float:
            f = self.part_factor(n)
            if isinstance(f, tuple) and n in parts:
                return max((self.dense_by[n] - p) / g for p, g in zip(parts[n], f, strict=True))
            return (self.dense_by[n] - v) / self.loss_factor(n)

        worst = max(loss(n, v) for n, v in values.items())
        return self.dense - worst

    def combine_sums(self, sums: list, counts: list[int]) -> float:
        """`combine` of each output's sums and count over the batches (`finish_outputs`), each part held to its own
        budget where an output's parts have their own (`part_scores`)."""
        return self.combine(self.finish_outputs(sums, counts), self.part_scores(sums, counts))

    def part_scores(self, sums: list, counts: list[int]) -> dict[str, tuple[float, ...]]:
        """Each part's own score (output_metrics.PART_SCORES) of every output whose parts have budgets of their own
        (`part_factor` a tuple)."""
        out = {}
        for i, (name, kind) in enumerate(self.plan.items()):
            if isinstance(self.part_factor(name), tuple) and counts[i]:
                out[name] = tuple(float(g(sums[i], counts[i])) for g in PART_SCORES[kind])
        return out

    def part_factor(self, name: str) -> float | tuple[float, ...]:
        """`loss_factor`, or, for an output whose own budget holds only some of its parts (`held_parts`: a greedy
        decoder's picks), each part's: the own budget's on those, 1 (the run's budget) on the others."""
        f, held, kind = self.loss_factor(name), self.held_parts.get(name), self.plan.get(name)
        if held is None or f == 1.0 or kind not in PART_SCORES:
            return f
        return tuple(f if j in held else 1.0 for j in range(len(PART_SCORES[kind])))

    @property
    def part_factors(self) -> tuple:
        """`part_factor` of each scored output, in the plan's order."""
        return tuple(self.part_factor(n) for n in self.plan)

    def loss_factor(self, name: str) -> float:
        """An output's own budget (--max-loss OUTPUT=L) as a share of the run's (--max-loss L); 1 without one. Its
        loss counts divided by this wherever outputs are combined (`combine`, calibration.sampling, the decision
        rule), so every path that holds the worst output to the run's budget holds each output to its own, and the
        combined loss is in pp of the run's budget."""
        own = self.output_budgets.get(name)
        return 1.0 if own is None or not self.budget_pp else own / self.budget_pp

    @property
    def loss_factors(self) -> tuple[float, ...]:
        """`loss_factor` of each scored output, in the plan's order."""
        return tuple(self.loss_factor(n) for n in self.plan)

    def _figure(self, name: str, value: float) -> dict:
        before = self.dense_by.get(name)
        kind = self.plan[name]
        out = {"metric": kind, "before": before, "after": value,
               "loss_pp": None if before is None else 100.0 * (before - value), "one_pp": METRICS[kind].one_pp}
        if self.output_budgets:  # each output's own budget, when some output has one
            out["budget_pp"] = self.output_budgets.get(name, self.budget_pp)
        return out

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


def _check_output_budgets(plan: dict[str, str], budgets: dict[str, float], budget: float | None) -> None:
    """--max-loss OUTPUT=L names a scored output and a positive budget beside a positive --max-loss L."""
    if not budgets:
        return
    if budget is None or not budget > 0:
        raise ConfigError("--max-loss OUTPUT=L sets one output's budget beside the run's: add a positive bare "
                          "--max-loss L for the other outputs (e.g. --max-loss 1 --max-loss boxes=5).")
    for name, own in budgets.items():
        if name not in plan:
            raise ConfigError(f"--max-loss {name}={own:g}: '{name}' is not a scored output; scored: "
                              f"{', '.join(plan)} (--metric OUTPUT=KIND chooses them).")
        if not (math.isfinite(own) and 0 < own <= 100):
            raise ConfigError(f"--max-loss {name}={own:g} must be a number of percentage points in (0, 100].")


def _check_lists(plan: dict[str, str], reader) -> None:
    """A kind that reads a feed's rows as one list (list@T, set@T, top@K) needs feeds that are requests, read as
    they are (readers.requests_reader, which the data step opens for it): rows cut into batches would be judged as
    lists they never were."""
    lists = [f"{name or 'the headline output'}={kind}" for name, kind in plan.items() if is_list(kind)]
    if lists and not getattr(reader, "per_feed", False):
        raise ConfigError(f"metric {listed(lists)} reads each feed as one request, and the data is read in batches "
                          f"of {getattr(reader, 'batch_size', '?')} rows: give a folder of .npz files (in Python, a "
                          "list of feed dicts), one request a file")


def _one_score_a_row(name: str, kind: str, values: list[np.ndarray]) -> None:
    """A list kind ranks a feed's rows by their one score each ([R] or [R, 1]); any other shape is refused."""
    other = next((v for v in values if v.ndim > 2 or (v.ndim == 2 and v.shape[1] != 1) or v.ndim == 0), None)
    if other is not None:
        raise ConfigError(f"--metric {name}={kind} ranks each feed's rows by one score a row ([R] or [R, 1]); output "
                          f"'{name}' is {list(other.shape)}: choose another kind (docs/metrics.md)")


def _dynamic_batch(model: onnx.ModelProto | None) -> bool:
    """Does every graph input take any number of samples (a symbolic or unknown first dimension)?"""
    if model is None:
        return False
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else None
        if not dims or dims[0].HasField("dim_value"):
            return False
    return True


def relating_outputs(model: onnx.ModelProto | None) -> list[str]:
    """Outputs whose declared shape holds an input's batch symbol (`_batch_dims`) on two or more axes ([N, N]:
    CLIP's logits_per_image scores every image against every text of its batch): a sample's values depend on the
    samples batched with it. Sweep 17: cut into parts of 16, CLIP's run claimed 0.50 pp (2 of 400 changed); run in
    batches of 64, 5.0% of held-out images changed."""
    batch = _batch_dims(model)
    if not batch:
        return []
    return [o.name for o in model.graph.output if o.type.HasField("tensor_type")
            and any(sum(d.dim_param == b for d in o.type.tensor_type.shape.dim) >= 2 for b in batch)]


def split_batch(feeds: dict[str, np.ndarray], labels, rows: int) -> list[tuple]:
    """A stacked batch cut into parts of at most `rows` samples (every array and the labels along their first
    axis); left whole when its arrays do not share one first dimension."""
    arrays = [np.asarray(a) for a in feeds.values()] + ([] if labels is None else [np.asarray(labels)])
    n = arrays[0].shape[0] if arrays and arrays[0].ndim else 0
    if n <= rows or any(a.ndim == 0 or a.shape[0] != n for a in arrays):
        return [(feeds, labels)]
    return [({k: np.asarray(v)[i:i + rows] for k, v in feeds.items()}, None if labels is None else labels[i:i + rows])
            for i in range(0, n, rows)]


def _batch_groups(groups, rows: list[int]) -> list[np.ndarray] | None:
    """Each batch's samples' groups (`groups` each sample's in order: a stacked decoder's decodes, the reader's
    `row_groups`), None without them or where the batches' rows are not the groups' samples."""
    if groups is None or sum(rows) != len(groups):
        return None
    at = np.concatenate([[0], np.cumsum(rows)])
    return [np.asarray(groups)[at[b]:at[b + 1]] for b in range(len(rows))]


def split_by_groups(batches: list[tuple], groups: np.ndarray, rows: int) -> list[tuple] | None:
    """Stacked batches (feeds, labels) cut again into parts of at least `rows` samples, each ending where no group of
    `groups` (each sample's, in order: a greedy decoder's decodes) goes on past it, so that a group is in one part;
    None where the batches are not stacked (arrays of several first dims) or their samples are not the groups'."""
    sizes = []
    for feeds, labels in batches:
        arrays = [np.asarray(a) for a in feeds.values()] + ([] if labels is None else [np.asarray(labels)])
        if not arrays or any(a.ndim == 0 or a.shape[0] != arrays[0].shape[0] for a in arrays):
            return None
        sizes.append(arrays[0].shape[0])
    groups = np.asarray(groups)
    if sum(sizes) != len(groups) or not len(groups):
        return None
    ids = np.unique(groups, return_inverse=True)[1]
    last = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    np.maximum.at(last, ids, np.arange(len(ids)))
    ends = np.flatnonzero(np.maximum.accumulate(last[ids]) == np.arange(len(ids))) + 1  # no group goes on past
    cuts, start = [], 0
    for end in ends:
        if end - start >= rows or end == len(ids):
            cuts.append((start, int(end)))
            start = int(end)
    offsets = np.concatenate([[0], np.cumsum(sizes)])

    def rows_of(a: int, b: int, pick) -> np.ndarray:
        got = [np.asarray(pick(k))[max(a - offsets[k], 0):b - offsets[k]] for k in range(len(sizes))
               if offsets[k] < b and offsets[k + 1] > a]
        return got[0] if len(got) == 1 else np.concatenate(got)

    feeds0, labels0 = batches[0]
    return [({name: rows_of(a, b, lambda k, name=name: batches[k][0][name]) for name in feeds0},
             None if labels0 is None else rows_of(a, b, lambda k: batches[k][1])) for a, b in cuts]


def _rows(feeds: dict, time_major: set | frozenset = frozenset()) -> int:
    """A feed's batch as its first array (not a scalar) holds it: on axis 0 (a feed read as is too: [1, 576] audio
    beside a [2, 1, 128] state), axis 1 of a time-major input ([T, N, C])."""
    first = next(((k, a) for k, a in ((k, np.asarray(v)) for k, v in feeds.items()) if a.ndim), None)
    if first is None:
        return 1
    name, arr = first
    return arr.shape[1] if name in time_major and arr.ndim > 1 else arr.shape[0]


AUTO_ROWS = 8  # feeds whose vectors a row output's metric is chosen on
MASK_INPUTS = ("attention_mask", "input_mask")  # 1 = a real token, 0 = padding (Hugging Face's convention)
MASKED_KINDS = frozenset({"cosine", "rel_l2", "seq_agreement"})  # kinds that read an output position by position
BINARY_KINDS = frozenset({"binary_prob", "binary_logit"})  # one decision a value: a constant's best is the median
BLIND_KINDS = frozenset({"cosine", "rel_l2"}) | BINARY_KINDS  # judged against a constant answer (`_say_input_blind`)


def position_mask_input(model: onnx.ModelProto | None) -> str | None:
    """The model's attention-mask input: named `attention_mask` or `input_mask` (or ending so), rank 2 when its
    rank is declared; None without one."""
    if model is None:
        return None
    init = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        name = vi.name.lower()
        if vi.name in init or not name.endswith(MASK_INPUTS):
            continue
        shape = vi.type.tensor_type.shape if vi.type.HasField("tensor_type") else None
        if shape is not None and vi.type.tensor_type.HasField("shape") and len(shape.dim) != 2:
            continue
        return vi.name
    return None


def _encoder_mask(model: onnx.ModelProto | None, mask: str | None) -> bool:
    """Whether `mask` is an encoder's: named so (optimum's decoder takes `encoder_attention_mask`), or a plain
    `attention_mask` beside decoder inputs (`decoder_input_ids`: a seq2seq export) that is not the decoder's own.
    Sweep 17: T5's and BART's encoder mask was applied to the decoder's logits (its last columns), which scored 36%
    of BART's decoder positions, chosen by the encoder's padding."""
    if model is None or mask is None:
        return False
    low = mask.lower()
    if "encoder" in low:
        return True
    return "decoder" not in low and any(i.name.lower().startswith("decoder") for i in model.graph.input)


def _fed_past(model: onnx.ModelProto | None) -> bool:
    """Whether the model takes a KV cache (past_key_values.*, past_*, *cache*), whose attention mask spans past and
    current tokens."""
    import re

    return model is not None and any(re.search(r"past|cache", i.name, re.I) for i in model.graph.input)


def copied_parts(model: onnx.ModelProto | None, names: list) -> dict[int, tuple[int, list[str | None]]]:
    """{index in `names`: (Concat axis, per part the graph input it copies, else None)} for each output that a
    Concat makes of a graph input and computed parts (through Identity and one-input Concats): a decoder's
    `present.*` = Concat(past_key_values.*, new keys), axis -2 as written, normalised by the caller's feeds; and
    ai.onnx Attention's (opset 23) present_key/present_value, its past_key/past_value input then the new ones."""
    if model is None:
        return {}
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = {i.name for i in graph.input if i.name not in inits}
    made = {o: n for n in graph.node for o in n.output}
    through = functools.partial(_copy_source, made)
    found = {}
    for i, name in enumerate(names):
        if not name:
            continue
        out, node = through(name)
        if node is not None and node.op_type == "Attention" and node.domain in ("", "ai.onnx") \
                and out in node.output[1:3]:  # present_key/value: the fed past_key/value, then the new (sweep 44)
            k = 3 + list(node.output).index(out)  # outputs 1, 2 copy inputs 4, 5
            past = through(node.input[k])[0] if k < len(node.input) and node.input[k] else ""
            if past in inputs:
                found[i] = (-2, [past, None])
            continue
        if node is None or node.op_type != "Concat" or len(node.input) < 2:
            continue
        parts = [part if part in inputs else None for part in (through(x)[0] for x in node.input)]
        if any(parts) and None in parts:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            found[i] = (axis, parts)
            continue
        stacked = _stacked_cache(graph, node, through, inputs)
        if stacked is not None:
            found[i] = stacked
    for i, name in enumerate(names):  # an If's output: a branch's Concat of a main-graph input (optimum's merged)
        out, node = through(name) if name else (name, None)
        if i not in found and node is not None and node.op_type == "If":
            got = _branch_copies(node, list(node.output).index(out), inputs)
            if got is not None:
                found[i] = got
    return found


def blended_inputs(model: onnx.ModelProto | None, names: list) -> dict[int, tuple[str, str, np.ndarray | None]]:
    """{index in `names`: (graph input X, graph input M, c)} for each output that blends a float graph input in by a
    mask input, Add(Mul(X, A), Mul(computed, B)) with {A, B} = {M, Sub(c, M)} (either order, through Identity and
    Cast; c a stored constant): an inpainter returns the image as fed where the mask keeps it and its own pixels in
    the hole (`image * mask + pred * (1 - mask)`; LaMa's `img * (1 - mask) + pred * mask`). c is None when X is
    multiplied by M itself, else the constant X's factor subtracts M from. The output less X * A is the computed
    part, which pruning changes; the rest equals the input in every model. Sweep 55: a torch inpainter's 'output'
    [N, 1, 28, 28] (10x10 holes) claimed a relative L2 error of 0.74 pp where its holes moved 1.55% held out."""
    if model is None:
        return {}
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    consts.update({n.output[0]: next((a.t for a in n.attribute if a.name == "value"), None)
                   for n in graph.node if n.op_type == "Constant" and n.output})
    inputs = {i.name for i in graph.input if i.name not in consts
              and i.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                                   onnx.TensorProto.FLOAT16)}
    made = {o: n for n in graph.node for o in n.output}

    def source(name: str) -> tuple[str, onnx.NodeProto | None]:
        node = made.get(name)
        while node is not None and node.op_type in ("Identity", "Cast"):
            name, node = node.input[0], made.get(node.input[0])
        return name, node

    def factor(name: str):  # ("M", None) for a mask input M, ("M", c) for Sub(c, M), else None
        src, node = source(name)
        if src in inputs:
            return src, None
        if node is not None and node.op_type == "Sub" and len(node.input) == 2 and source(node.input[1])[0] in inputs:
            c = consts.get(source(node.input[0])[0])
            if c is not None:
                return source(node.input[1])[0], numpy_helper.to_array(c)
        return None

    found = {}
    for i, name in enumerate(names):
        _, node = source(name) if name else (name, None)
        if node is None or node.op_type != "Add" or len(node.input) != 2:
            continue
        muls = [source(x)[1] for x in node.input]
        if any(m is None or m.op_type != "Mul" or len(m.input) != 2 for m in muls):
            continue
        for copy, other in ((muls[0], muls[1]), (muls[1], muls[0])):
            for x, a in ((copy.input[0], copy.input[1]), (copy.input[1], copy.input[0])):
                xs, fa = source(x)[0], factor(a)
                if xs not in inputs or fa is None or fa[0] == xs:
                    continue
                fb = [factor(y) for y in other.input]
                if any(f is not None and f[0] == fa[0] and (f[1] is None) != (fa[1] is None) for f in fb):
                    found[i] = (xs, fa[0], fa[1])
                    break
            if i in found:
                break
    return found


def _blended_terms(blends: dict, feeds: dict) -> dict[int, np.ndarray]:
    """Per output `blended_inputs` names, X * M (or X * (c - M)) from these feeds, computed in the input's float
    type as the model computes it, where the feeds hold both inputs."""
    got = {}
    for i, (x, m, c) in blends.items():
        if x not in feeds or m not in feeds:
            continue
        xv, mv = np.asarray(feeds[x]), np.asarray(feeds[m])
        if xv.dtype.kind != "f":
            continue
        mv = mv.astype(xv.dtype)
        a = mv if c is None else np.asarray(c).astype(xv.dtype) - mv
        try:
            got[i] = xv * a
        except ValueError:  # shapes that do not broadcast: not this model's blend
            continue
    return got


def _copy_source(made: dict, name: str) -> tuple[str, onnx.NodeProto | None]:
    """(the tensor `name` copies, through Identity and one-input Concats, and the node that makes it) in the graph
    whose producers are `made`."""
    node = made.get(name)
    while node is not None and (node.op_type == "Identity" or (node.op_type == "Concat" and len(node.input) == 1)):
        name = node.input[0]
        node = made.get(name)
    return name, node


def _branch_copies(node: onnx.NodeProto, k: int, inputs: set) -> tuple[int, list[str | None]] | None:
    """(axis, parts) of output `k` of the If `node` where a branch makes it a Concat of a main-graph input (read from
    the outer scope) and computed parts, as copied_parts reads the main graph's; both branches, where both do, alike.
    Optimum's merged decoder: If(use_cache_branch) over the with-past graph (present.* = Concat(past_key_values.*,
    new)) and the no-past one (present.* the new keys alone). Which branch ran is not known here: the evaluator cuts
    a batch's copied part only where the output holds the input as fed there (`_crops`)."""
    got = []
    for attr in node.attribute:
        if attr.name not in ("then_branch", "else_branch") or k >= len(attr.g.output):
            continue
        body = attr.g
        inner = {o: n for n in body.node for o in n.output}
        through = functools.partial(_copy_source, inner)
        _, n = through(body.output[k].name)
        if n is None or n.op_type != "Concat" or len(n.input) < 2:
            continue
        local = inner.keys() | {t.name for t in body.initializer} | {i.name for i in body.input}
        parts = [x if x in inputs and x not in local else None for x in (through(y)[0] for y in n.input)]
        if any(parts) and None in parts:
            got.append((next((a.i for a in n.attribute if a.name == "axis"), 0), parts))
    return got[0] if got and all(g == got[0] for g in got) else None


def _stacked_cache(graph, node, through, inputs: set) -> tuple[int, list[str | None]] | None:
    """(axis, [cache, None]) where `node`, a Concat on axis a, stacks (Unsqueeze on a) one Concat per layer of
    `Gather(cache, j, axis=a)` (layer j's slice of a graph input, in order) and the new entries: a decoder step whose
    cache of every layer is one input, `[2L, N, H, P, D]` -> `[2L, N, H, P + 1, D]` (torch.stack of its layers'
    caches): the output's first P positions on that axis copy the input as fed."""
    from onnx import numpy_helper

    consts = {t.name: t for t in graph.initializer}
    consts.update({n.output[0]: next((a.t for a in n.attribute if a.name == "value"), None)
                   for n in graph.node if n.op_type == "Constant" and n.output})

    def value(name: str):
        t = consts.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def attr(n, name, default):
        return next((onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == name), default)

    rank = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in graph.input
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")}
    a, cache, inner = attr(node, "axis", 0), None, None
    for j, x in enumerate(node.input):
        _, un = through(x)
        if un is None or un.op_type != "Unsqueeze":
            return None
        axes = value(un.input[1]) if len(un.input) > 1 else np.asarray(attr(un, "axes", []))
        if axes is None or np.size(axes) != 1:
            return None
        _, cat = through(un.input[0])
        if cat is None or cat.op_type != "Concat" or len(cat.input) != 2:
            return None
        _, gather = through(cat.input[0])
        if gather is None or gather.op_type != "Gather" or through(gather.input[0])[0] not in inputs:
            return None
        src, index = through(gather.input[0])[0], value(gather.input[1])
        r = rank.get(src)
        if r is None or index is None or np.ndim(index) != 0 or int(index) != j:
            return None
        g = attr(gather, "axis", 0)
        if (g + r) % r != (a + r) % r or (int(axes.reshape(-1)[0]) + r) % r != (a + r) % r:
            return None
        b = attr(cat, "axis", 0) % (r - 1)  # the layer's axis, on the slice of rank r - 1
        here = b + 1 if b >= (a + r) % r else b
        if cache not in (None, src) or inner not in (None, here):
            return None
        cache, inner = src, here
    return None if cache is None else (inner, [cache, None])


def _through_if(model: onnx.ModelProto | None, names: list, copies: dict) -> frozenset:
    """The outputs of `copies` an If gives (found in its branches), whose copied part is cut only in a batch where
    the output holds the input as fed."""
    if model is None:
        return frozenset()
    made = {o: n for n in model.graph.node for o in n.output}
    out = set()
    for i in copies:
        _, node = _copy_source(made, names[i])
        if node is not None and node.op_type == "If":
            out.add(i)
    return frozenset(out)


def _holds_copies(value: np.ndarray, axis: int, arrays: list) -> bool:
    """Whether `value` holds each copied part's array, as fed, at its place on `axis`."""
    at = 0
    rest = value.shape[axis] - sum(np.shape(a)[axis] for a in arrays if a is not None)
    for a in arrays:
        size = rest if a is None else np.shape(a)[axis]
        if a is not None and not np.array_equal(np.take(value, np.arange(at, at + size), axis=axis), np.asarray(a)):
            return False
        at += size
    return True


def _copied_sizes(copies: dict, feeds: dict, checked: frozenset = frozenset()) -> dict[int, tuple]:
    """Per output `copied_parts` names, (axis normalised, each copied part's length in these feeds, and for the
    outputs in `checked` the copied arrays, else None) where the feeds hold every input it copies."""
    got = {}
    for i, (axis, parts) in copies.items():
        arrays = [None if p is None else feeds.get(p) for p in parts]
        if any(p is not None and a is None for p, a in zip(parts, arrays)):
            continue
        rank = next(np.ndim(a) for a in arrays if a is not None)
        at = axis + rank if axis < 0 else axis
        if not 0 <= at < rank:
            continue
        got[i] = (at, [None if a is None else int(np.shape(a)[at]) for a in arrays],
                  arrays if i in checked else None)
    return got


def threshold_note(plan: Mapping[str, str], auto_chosen) -> str | None:
    """A note naming the outputs the automatic choice reads at a threshold (a mask at 0.5, a probability's side of
    0.5, a logit's sign) and the flags that read them at the user's own (real models 51: fastmrz thresholds its MRZ
    map at 0.25, the tool read it at 0.5), or by their values where it never thresholds them (real models 53:
    NSnet2's Sigmoid gain, multiplied into the spectrum). Naming an output replaces the automatic plan, so the flags
    keep the others scored with OUTPUT=auto."""
    read = {name: kind for name, kind in plan.items() if name in auto_chosen and "@" not in kind
            and decision_threshold(kind) is not None}
    if not read:
        return None
    at = [f"'{name}' ({kind} at {decision_threshold(kind):g})" for name, kind in read.items()]
    flags = [f"--metric {name}={kind.replace('+', '@T+', 1) if '+' in kind else kind + '@T'}"
             for name, kind in read.items()]
    others = [name for name in plan if name not in read]
    keep = (" ".join(f"--metric {name}=auto" for name in others) if len(others) <= 2 else
            f"and --metric OUTPUT=auto for each of the {len(others)} other outputs, which naming one leaves unscored")
    values = [f"--metric {name}=rel_l2" for name in read]  # real models 53: NSnet2's gain, multiplied into a spectrum
    tail = [keep] if keep else []
    return (f"{'outputs' if len(read) > 1 else 'output'} judged at a threshold: {listed(at, shown=6)}; if your "
            f"application decides elsewhere, name its threshold T: {' '.join(flags + tail)}; if it never thresholds "
            f"{'them' if len(read) > 1 else 'it'} (a gain multiplied in), judge the values: {' '.join(values + tail)}")


def constant_outputs_note(inputs_vary: bool) -> str:
    """The line for data on which every sample gives the input model the same outputs: blank or identical inputs
    (sweep 15), or varied inputs a model ignores (sweep 37: a Keras CNN whose hard_shrink zeroed every unit, 11.7%,
    was told to "pass varied, real samples", which it had been given)."""
    if inputs_vary:
        return ("every sample of the data gives the input model the same outputs, though the inputs differ: its "
                "outputs do not follow its input (an untrained or collapsed model?); every figure of this run is "
                "judged on what amounts to one sample, and weights the outputs ignore go at no cost")
    return ("every sample of the data gives the input model the same outputs (identical or blank inputs, say all "
            "zeros): every figure of this run is judged on what amounts to one sample; pass varied, real samples")


def _model_node(model: onnx.ModelProto | None, op: str, name: str) -> str:
    """`name` as the model's node it is: onnxruntime's optimizer names a node it makes after a tensor of the node it
    replaces ('y_nchwc', its NCHWc Conv of the model's Conv '/c2/Conv' writing 'y'; sweep 37: the error named a node
    the user's model does not hold)."""
    if model is None or any(n.name == name for n in model.graph.node):
        return f"{op} '{name}'"
    made = [n.name for n in model.graph.node if n.op_type == op and any(
        t and name.startswith(t + "_") for t in list(n.input) + list(n.output))]
    origin = f" from the model's {op} '{made[0]}'" if len(made) == 1 else ""
    return f"{op} '{name}', a node onnxruntime's graph optimizer made{origin}"


def _fits_declared(model: onnx.ModelProto, feeds: dict) -> bool:
    """Whether every graph input `feeds` holds has the rank and the fixed sizes its declaration gives."""
    declared = {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
                for i in model.graph.input if i.type.HasField("tensor_type") and i.type.tensor_type.HasField("shape")}
    found = [(np.shape(v), declared[k]) for k, v in feeds.items() if k in declared]
    return bool(found) and all(len(s) == len(d) and all(n is None or n == m for m, n in zip(s, d)) for s, d in found)


def _input_model_failed(exc: Exception, reader, one_fails: bool = False, model: onnx.ModelProto | None = None,
                        fits: bool = False) -> str:
    """One line for the input model failing in onnxruntime on the user's data as batched (sweep 8: a Khmer segmenter
    declares a 'batch' axis but reshapes to batch 1; stacked data ended in a raw onnxruntime Reshape error). When
    the first sample alone fails too (`one_fails`), the batch is not why (sweep 31: torch's dynamo export of an LSTM
    with proj_size writes an initial cell state onnxruntime refuses at any batch); when the data also `fits` the
    declared inputs, checking its shapes is no advice (sweep 46: skl2onnx's RadiusNeighborsClassifier gathers at index
    -1 for a sample with no neighbour in its radius)."""
    import re

    msg = " ".join(str(exc).split())
    m = re.search(r"running (\S+) node\. Name:'([^']*)'.*?Status Message: (.*)", msg)
    if m:
        detail = re.sub(r"\S+\.(?:h|cc):\d+ \S+?\(.*?\) (?:[^.]*? was false\. )?", "", m.group(3), count=1)
        where = f"{_model_node(model, m.group(1), m.group(2))}: {detail[:300]}"
    else:
        where = msg[:260]
    per_feed = getattr(reader, "per_feed", False)
    batch = "one feed at a time" if per_feed else f"in batches of {getattr(reader, 'batch_size', '?')}"
    single = getattr(reader, "batch_size", None) == 1
    if one_fails and not (per_feed or single):
        if fits:
            return (f"the input model fails in onnxruntime on {reader.description} read {batch} and on its first "
                    f"sample alone ({where}): the batch is not why, and the data has the shapes the model declares: "
                    "the model does not run in onnxruntime on these values as exported.")
        return (f"the input model fails in onnxruntime on {reader.description} read {batch} and on its first sample "
                f"alone ({where}): the batch is not why; check the data's shapes against the model's inputs "
                "(`onnxprune inspect` lists them), else the model does not run in onnxruntime as exported.")
    if re.search(r"bad_alloc|[Ff]ailed to allocate memory|MemoryError", msg):  # not the data's shapes (real models 44)
        free = available_memory()
        return (f"the input model ran out of memory in onnxruntime on {reader.description} read {batch} ({where})"
                + (f"; {nbytes(free)} is available now" if free is not None else "") + ": a smaller --batch-size, "
                "fewer samples, or --metric OUTPUT=KIND naming the outputs that matter (only those are held) needs "
                "less.")
    hint = ("; check the data's shapes against the model's inputs (`onnxprune inspect` lists them)" if per_feed or single
            else "; a model exported for a batch of 1 (though its input names a batch axis) runs with --batch-size 1, "
                 "or from a folder of .npz files holding one feed each (torch's dynamo exporter fixes the batch "
                 "axis when its example holds one sample: export with two or more)")
    return f"the input model fails in onnxruntime on {reader.description} read {batch} ({where}){hint}."


def _some_batches_failed(exc: Exception, reader, failed: list[tuple[int, int]], ran: int,
                         model: onnx.ModelProto | None) -> str:
    """One line for the input model failing in onnxruntime on some of the data's batches and running the others
    (sweep 57: torch's legacy tracer unrolled Mixtral's loop over the experts a batch picks into a Split that fails
    on a batch leaving an expert unpicked, 324 of 440 single lines and none of 55 batches of 8): which batches, of
    how many samples, onnxruntime's reason, and the fix."""
    sizes = sorted({n for _, n in failed})
    which = listed([f"batch {b + 1} ({n} samples)" for b, n in failed], 3)
    return (f"the input model fails in onnxruntime on {len(failed)} of {len(failed) + ran} batches of "
            f"{reader.description} ({which}) and runs the {ran} others ({run_failure(exc)}): its graph fixed "
            "something the values of a batch decide (torch's legacy tracer unrolls a data-dependent loop, as a "
            "mixture of experts' over the experts a batch picks); re-export it with torch's dynamo exporter "
            "(torch.onnx.export(..., dynamo=True)), or give data whose every batch it runs (larger batches than "
            f"{max(sizes)} samples: --batch-size).")


WILD = 1e30  # an output value beyond this is a broken model, not a trained one


def _refuse_large_reference(model, names: list[str], first: tuple, batches: int, available: int | None) -> None:
    """Refuse, before the dense pass runs on, outputs whose values over the data would not fit in REFERENCE_SHARE of
    the memory `available`, naming the largest and what to do. Real models 44: imgly's ISNet background remover
    (1024x1024, six masks and six feature maps of deep supervision as graph outputs) holds 119 MB a sample; its 150
    calibration pages grew the process past 12 GB before the first candidate, where the package reads one mask."""
    sizes = [_held_bytes(v) for v in first]
    total = sum(sizes) * batches
    if available is None or batches <= 1 or total <= REFERENCE_SHARE * available:
        return
    largest = sorted(zip(sizes, names, first), key=lambda t: -t[0])
    shown = listed(f"'{n}' {list(np.shape(v))} {nbytes(b)}" for b, n, v in largest)
    fit = int(REFERENCE_SHARE * available // max(1, sum(sizes)))
    many = f"{len(names)} scored outputs take" if len(names) > 1 else "scored output takes"
    raise CalibrationError(
        f"the input model's {many} {nbytes(sum(sizes))} a batch of the data ({shown}): {nbytes(total)} over its "
        f"{batches} batches, which the run holds in memory as what every candidate is compared to, and only "
        f"{nbytes(available)} is available. Name the outputs that matter with --metric OUTPUT=KIND (KIND `auto` "
        f"chooses it as now; only those are scored and held; side outputs such as deep supervision's maps or "
        f"features rarely are: `onnxprune inspect` lists the outputs)"
        + (f", or give fewer batches (about {fit} fit)." if fit > 1 else "."))


def _held_bytes(value) -> int:
    """Bytes an output's value holds (a sequence's tensors or a map's values summed; 0 for what has no array form)."""
    try:
        return sum(as_array(v).nbytes for v in value) if isinstance(value, list) else as_array(value).nbytes
    except (CalibrationError, TypeError, ValueError):
        return 0


def _refuse_unstacked(model, batches) -> None:
    """An output that is a sequence of tensors of different shapes, named, in one line (sweep 36: a
    MultiOutputClassifier's probabilities ended "step 'targets' failed ... ValueError: setting an array element with a
    sequence")."""
    for batch in batches:
        for out, value in zip(model.graph.output, batch):
            if isinstance(value, list) and map_keys(value) is None:
                try:
                    as_array(value)
                except CalibrationError as exc:
                    raise CalibrationError(f"output '{out.name}' is {exc}") from None


def _say_nonfinite(model, batches) -> None:
    """Warn when the input model itself computes inf, NaN or wild values on the data: values past WILD (a corrupt
    weight file, an input outside what the model was built for) make every figure on such an output meaningless;
    inf or NaN alone (the log of a zero) is compared by value (`output_metrics._finite_parts`)."""
    names = [o.name for o in model.graph.output]
    bad, wild = {}, False
    for batch in batches:
        for name, value in zip(names, batch):
            v = np.asarray(value) if not isinstance(value, np.ndarray) else value
            if v.dtype.kind == "f" and v.size:
                count = int((~np.isfinite(v)).sum())
                if float(np.finfo(v.dtype).max) > WILD:  # float16 holds nothing that large (comparing warned: sweep 9)
                    large = int((np.abs(np.nan_to_num(v, posinf=0.0, neginf=0.0)) > WILD).sum())
                    count, wild = count + large, wild or large > 0
                if count:
                    bad[name] = bad.get(name, 0) + count
    said = ", ".join(f"'{k}': {v:,} values" for k, v in bad.items())
    if wild:
        log.warning(f"the input model computes inf, NaN or values beyond {WILD:g} on this data (%s): its weights may "
                    "be corrupt or the data outside what it was built for; figures on those outputs mean nothing", said)
    elif bad:  # sweep 33: Log(Relu(x)) is -inf where x <= 0; a relative error compares such positions by value
        log.warning("the input model computes inf or NaN on this data (%s): a relative error compares those "
                    "positions by value (the same inf or NaN is no change, another value a sample lost) and the "
                    "rest as usual; if that is not what they mean, check the data and the model", said)


def token_inputs(model: onnx.ModelProto | None) -> tuple[str, ...]:
    """Graph inputs declared integer and rank 2 (or of undeclared rank): token ids [N, S] may be padded."""
    if model is None:
        return ()
    init = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if vi.name in init or t is None or not t.elem_type or \
                onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).kind not in "iu":
            continue
        if t.HasField("shape") and len(t.shape.dim) != 2:
            continue
        out.append(vi.name)
    return tuple(out)


def inferred_padding(batches: list[dict], names: tuple[str, ...]) -> tuple[list, str] | None:
    """Padding read from token ids when the model takes no attention mask (a Keras tagger fed pad_sequences's
    output): one id that, in every row of every batch, occurs only as one run at the end of the row (or only at its
    start, for all rows alike), every row holding a real token, the runs of at least two lengths and one of them
    >= 2 (a row-final EOS every sentence has once is a token, not padding). Returns each batch's [N, S] mask (True =
    real) and the rule as said ("input_ids is 0 at the end of the rows"), or None."""
    for name in names:
        arrays = [b.get(name) for b in batches]  # each as it is or held (calibration.held), given back one at a time
        if not arrays or any(a is None or len(a.shape) != 2 or a.shape[1] < 2 for a in arrays):
            continue
        for side in ("end", "start"):
            edge = np.concatenate([given_back(a)[:, -1 if side == "end" else 0].copy() for a in arrays])  # no views
            values, counts = np.unique(edge, return_counts=True)
            for pad in dict.fromkeys([values[counts.argmax()], *values[values == 0]]):  # the commonest, and 0
                masks = _padding_masks(arrays, pad, side)
                if masks is not None:
                    return masks, f"{name} is {pad.item()} at the {side} of the rows"
    return None


def _padding_masks(arrays: list[np.ndarray], pad, side: str) -> list[np.ndarray] | None:
    masks, runs = [], []
    for a in arrays:
        m = given_back(a) != pad
        ordered = m if side == "end" else m[:, ::-1]
        if (np.diff(ordered.astype(np.int8), axis=1) > 0).any() or not m.any(axis=1).all():
            return None  # the id inside a row, or a row of nothing else
        masks.append(m)
        runs.append((~m).sum(axis=1))
    runs = np.concatenate(runs)
    return masks if len(np.unique(runs)) >= 2 and runs.max() >= 2 else None


def _position_mask(feeds: dict, name: str | None) -> np.ndarray | None:
    """A feed's attention mask as bool [N, S] (True = a real token); None unless it is 2-D and only 0s and 1s."""
    if name is None or name not in feeds:
        return None
    m = np.asarray(feeds[name])
    if m.ndim != 2 or m.size == 0 or not np.isin(m, (0, 1)).all():
        return None
    return m.astype(bool)


def _masked_samples(kind: str, out: np.ndarray, want: np.ndarray, labels, mask: np.ndarray, scale) -> tuple:
    """Per-sample terms of an [N, S, ...] output on its real positions only (`mask` [N, S], True = real): for
    cosine and rel_l2 the padded positions are zero in both (they add nothing to a dot product, a norm or a
    difference; rel_l2's `scale` is the set's, over real positions too); for seq_agreement they are made equal to
    the dense model's, then taken off the agreeing positions, each sample's share of its real positions. A sample
    with no real position is left out (no sample: nothing of it is scored, and counting it unchanged would narrow the
    bound)."""
    real = mask.any(axis=1)
    if not real.all():
        out, want, mask = out[real], want[real], mask[real]
        if labels is not None and np.ndim(labels) and len(labels) == len(real):
            labels = np.asarray(labels)[real]
    if kind == "seq_agreement":
        pad = ~mask.reshape(mask.shape + (1,) * (out.ndim - 2))
        terms, counts = METRICS[kind].samples(np.where(pad, want, out), want, labels)  # shares of all positions
        per = int(np.prod(out.shape[2:-1], dtype=np.int64))  # positions per (sample, step): [N, S, C] -> 1
        total = int(np.prod(out.shape[1:-1], dtype=np.int64))
        padded = (~mask).sum(axis=1) * per
        real = (total - padded).astype(np.float64)
        return (terms * total - padded[:, None]) / real[:, None], counts  # the share of its real positions
    return METRICS[kind].terms(real_positions(out, mask), real_positions(want, mask), labels, scale)


def real_positions(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An [N, S, ...] value with its padded positions (`mask` [N, S] False) zeroed."""
    pad = ~mask.reshape(mask.shape + (1,) * (x.ndim - 2))
    return np.where(pad, np.zeros((), dtype=x.dtype), x)


def _row_outputs(model: onnx.ModelProto | None, names: list[str], axes,
                 reference: list[tuple] = ()) -> frozenset[int]:
    """Scored outputs that follow no batch and are declared one float vector of a fixed length >= 2: a classifier
    exported on one unbatched image returns its logits [C] so, and each feed's vector is one sample of class scores
    (metric rules 4 and 8 apply to it as to [N, C]). A vector of data-dependent length (a detector's [D] scores)
    is not one: its rows stay the rows its metric scores. A vector declared of open length is one when every feed
    of `reference` (the dense outputs, batch by batch) gives it the same length >= 2 and it is a probability
    distribution there (its values in [0, 1] summing to 1): madmom's beat TCN returns its tempo as a Softmax over
    300 BPM bins declared [output_1_dim_0]; its 300 values were judged as 300 probabilities of their own, each at
    0.5, and a run said 0.11 pp where the tempo (the argmax) changed on 133 of 300 held-out clips."""
    if model is None or not axes:
        return frozenset()
    declared = {o.name: _declared(o) for o in model.graph.output}  # float outputs' shapes, else None
    out = set()
    for i, (name, axis) in enumerate(zip(names, axes)):
        shape = declared.get(name or model.graph.output[0].name)
        if axis is not None or shape is None or len(shape) != 1:
            continue
        if (shape[0] or 0) >= 2 or _distributions([as_array(b[i]) for b in reference]):
            out.add(i)
    return frozenset(out)


def _distributions(vectors: list[np.ndarray]) -> bool:
    """Every value a float vector of one length >= 2 that is a probability distribution (`_is_probability`)."""
    if not vectors or any(v.ndim != 1 or v.shape != vectors[0].shape for v in vectors):
        return False
    return _is_probability(np.stack(vectors))


def _batch_dims(model: onnx.ModelProto | None) -> set[str]:
    """The symbolic first dims of the graph inputs (a batch the exporter named: 'N', 'batch_size'), time-major
    inputs left out (their first dim is time)."""
    if model is None:
        return set()
    skip = {t.name for t in model.graph.initializer} | set(time_major_inputs(model))
    return {d for d in (_declared_first(vi) for vi in model.graph.input if vi.name not in skip) if d}


def _declared_sizes(model: onnx.ModelProto, feeds: dict) -> dict[str, int]:
    """The size each symbolic first dim of the graph inputs takes in one feed ('batch_size' -> 1)."""
    sizes = {}
    for vi in model.graph.input:
        symbol = _declared_first(vi)
        value = feeds.get(vi.name) if symbol else None
        if value is not None and np.ndim(value):
            sizes.setdefault(symbol, np.shape(value)[0])
    return sizes


def _holds(shape: tuple, size: int | None) -> bool:
    """An output's rows agree with the batch its declared first dim names (or that batch's size is unknown). An
    output can declare the input's batch symbol and not follow it: speechmos's AECMOS declares [batch_size] and
    returns its two scores, echo and degradation, for a batch of 1, and 150 decision feeds were judged as 300
    independent samples (sweep 18)."""
    return size is None or (len(shape) > 0 and shape[0] == size)


def _first_dim(model: onnx.ModelProto, output: str) -> str | None:
    """A graph output's declared symbolic first dim, or None."""
    vi = next((o for o in model.graph.output if o.name == output), None)
    return None if vi is None else _declared_first(vi)


def _declared_first(vi) -> str | None:
    dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else ()
    return dims[0].dim_param or None if len(dims) else None


def feed_samples(feeds: dict, reader) -> int:
    """Samples in one batch: its first array's first axis, or one for a feed read as is."""
    if getattr(reader, "per_feed", False):
        return 1
    first = np.asarray(next(iter(feeds.values())))
    return len(first) if first.ndim else 1


def output_error(a_outputs, b_outputs) -> dict[str, float | None]:
    """How far outputs a are from reference outputs b: max_abs, mean_abs (the mean over samples of each sample's
    largest absolute change: for a probability, in its own points), max_rel / mean_rel (per-sample relative L2
    error ||a_i - b_i|| / max(||b_i||, FLOOR·s), s the RMS of ||b_j|| over every sample of b: what rel_l2 scores)
    and top-1 agreement (None when the output is not [N, classes]).

    Per-batch lists are compared batch by batch (feeds of their own shapes are never concatenated); non-tensor
    values are compared as arrays (`as_array`); non-float ones (labels, ids) by equality: agreement = equal share."""
    batched = [isinstance(x, list) and not _is_value_list(x) for x in (a_outputs, b_outputs)]
    if all(batched) and len(a_outputs) == len(b_outputs):
        pairs = list(zip(a_outputs, b_outputs))
    else:  # one side whole: join the other
        pairs = [tuple(_joined(x) if is_list else x for x, is_list in zip((a_outputs, b_outputs), batched))]
    rel, agree, changes, exact = [], [], [], False  # changes: each sample's largest absolute change (NaN: lost)
    floats = [b for b in (as_array(b) for _, b in pairs) if b.dtype.kind in "fc"]
    floor = FLOOR * reference_scale(METRICS["rel_l2"], floats)[:1]  # the whole set's, as the rel_l2 figure's
    for a, b in pairs:
        a, b = as_array(a), as_array(b)
        if a.shape != b.shape:
            if len(pairs) == 1:
                raise ConfigError(f"outputs of shape {list(a.shape)} and {list(b.shape)} cannot be compared.")
            rel.append(np.ones(_n(b)))  # a batch of another shape (data-dependent): every sample moved
            agree.append(np.zeros(_n(b), dtype=bool))
            changes.append(np.full(_n(b), np.nan))
            continue
        if a.size == 0:
            continue
        if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":  # labels, ids, strings: equal or not
            exact = True
            agree.append((_flat(a) == _flat(b)).all(axis=1))
            continue
        rel.append(_relative_errors(a, b, floor))
        changes.append(np.abs(_flat(a).astype(np.float64) - _flat(b).astype(np.float64)).max(axis=1, initial=0.0))
        if is_classifier(a.shape):
            agree.append(_top1(a) == _top1(b))
    agreement = float(np.mean(np.concatenate(agree))) if agree else None
    if exact:
        return {"max_abs": None, "mean_abs": None, "max_rel": None, "mean_rel": None, "agreement": agreement}
    if not rel:
        return {"max_abs": 0.0, "mean_abs": 0.0, "max_rel": 0.0, "mean_rel": 0.0, "agreement": None}
    rel_all, moved = np.concatenate(rel), np.concatenate(changes)
    seen = moved[np.isfinite(moved)]
    return {"max_abs": float(seen.max()) if seen.size else None, "mean_abs": float(seen.mean()) if seen.size else None,
            "max_rel": float(rel_all.max()), "mean_rel": float(rel_all.mean()), "agreement": agreement}


def _is_value_list(x: list) -> bool:
    """A ZipMap value (a list of maps) rather than a list of per-batch values."""
    return bool(x) and isinstance(x[0], Mapping)


def _joined(outputs: list) -> np.ndarray:
    parts = [as_array(o) for o in outputs]
    return np.concatenate(parts) if all(p.ndim for p in parts) else np.stack(parts)


ARGMAX_ONLY = {"agreement"}  # read by an argmax over a sample alone (accuracy reads a binary score at its threshold)


def _refuse_argmax_of_one(named: dict[str, str], plan: dict[str, str], first: Callable[[], tuple],
                          samples_first: Callable) -> None:
    """A ConfigError when an output the user named (`named`, of the evaluator's `plan`) is judged by an argmax over
    a sample alone (`ARGMAX_ONLY`) and holds one float value a sample in the first batch: that argmax never changes,
    and every candidate would pass. Real models 57: a board
    game policy scores a position's legal moves, 'scores' [n_moves], and a folder of one position a file is read a
    move a sample (its rows do not interact); with --metric scores=agreement every weight was pruned, "0 of 1027
    decision samples changed", and the written model scored every move alike."""
    named = {n: k for n, k in named.items() if base_kind(k) in ARGMAX_ONLY}
    if not named:
        return
    for (name, kind), value in zip(plan.items(), samples_first(first())):
        if name not in named or not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim < 1:
            continue
        if value.size == len(value):
            raise ConfigError(
                f"--metric {name}={kind}: '{name}' holds one value a sample here ({list(value.shape)} in the first "
                f"batch, samples first), and an argmax over one value never changes, so every candidate would pass; "
                f"judge its values (--metric {name}=rel_l2) or a decision at a threshold (--metric "
                f"{name}=binary_prob@T, binary_logit for a logit). Where each file holds one sample's rows (a ranked "
                f"list), the pick among them is judged by --metric {name}=top@1 (each file one request)")
