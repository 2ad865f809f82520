"""The run's data: readers for choosing and retraining, evaluators for deciding and reporting; opened once.

With a budget and retraining, every `every`-th sample of --data is held out from training and the choices are
measured on it (--validation): a model retrained on the samples that judge it looks better than it is (seen:
0.26 pp on the training data, 1.0 pp on held-out images). Small data in the automatic search (fewer than
DECISION_SAMPLES would be held out; with labels 100) is split the other way round: every 4th sample trains (label-free
training is filled up with mixup samples, converter.auto.hyper) and three quarters decide, up to 1,000 label-free
decision samples (decision_split; docs/metrics.md, "Small data").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.errors import CalibrationError, ConfigError, debugging

log = logging.getLogger(__name__)

MIN_VALIDATION = 50  # fewer: a candidate changing 2% of held-out samples shows no change here 36% of the time
# label-free, the automatic search decides on at least this many samples when --data has them (up to three quarters
# of it): at 1,000 one sample is 0.1 pp and a 1 pp budget allows 6 changed predictions (Wilson, Z = 1); at 100, none
DECISION_SAMPLES = 1000
LABELLED_DECISION_SAMPLES = 100  # with labels: fewer held out by --validation is small data (one sample = 1 pp)
SMALL_TRAIN_EVERY = 4  # small data in the automatic search: every 4th sample trains, three quarters decide
MIN_TRAIN = 25  # fewer left to train on: the automatic search cannot retrain (too few pairs to mix, a probe slice < 5)


@dataclass
class DataConfig(StepConfig):
    """--data and how it is read and scored."""

    data: Any = None
    eval_data: Any = None
    labels: str | None = None
    metric: str | list | dict | None = None  # KIND (the headline output), ["OUTPUT=KIND", ...] or {OUTPUT: KIND}
    batch_size: int | None = None  # None: 64, fewer where one batch's activations would pass 2 GB (shapes.py)
    limit: int | None = None
    input_shapes: dict[str, tuple] = field(default_factory=dict)  # --input-shape NAME=DIMS: symbolic dims fixed
    seed: int = 0
    validation: float = 0.1  # with a budget and retraining: share of --data held out to measure the budget on
    val_data: Any = None  # --val-data: the decision set, never trained on (instead of a split of --data)

    def validate(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} must be >= 1.")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit {self.limit} must be >= 1.")
        if not 0.0 <= self.validation <= 0.5:
            raise ConfigError(f"--validation {self.validation} must be in [0, 0.5]; e.g. 0.1 holds out every 10th "
                              "sample (0: measure the budget on the training data).")
        if self.data is None:
            unused = [flag for flag, value in (("--labels", self.labels), ("--metric", self.metric),
                                               ("--limit", self.limit), ("--eval-data", self.eval_data))
                      if value is not None]
            if unused:
                raise ConfigError(f"{', '.join(unused)} without --data: they shape how --data is read and scored "
                                  "(--eval-data is measured beside it); pass --data (it may be the same file as "
                                  "--eval-data) or drop them.")


def draws_random_inputs(data: DataConfig) -> bool:
    """No real samples (--data absent or 'random'): verification, the scan and latency invent inputs. Any other
    --data (an array too, which `== "random"` compares element-wise) is real samples."""
    return data.data is None or (isinstance(data.data, str) and data.data == "random")


def decision_split(n: int, target: int = DECISION_SAMPLES) -> tuple[int, bool]:
    """The automatic search's split of n samples when --validation would hold out fewer than `target`: (every,
    trains_on_every). Label-free (target DECISION_SAMPLES) it decides on about min(target, 3n/4) samples, so the
    decision set grows with the data without a cliff (it was 749 samples at n = 999 and 100 at n = 1,000): when
    that is at least half, every `every`-th sample trains (every = 4 below 1,334 samples), else every `every`-th
    sample decides. With labels (target 100, reached from 1,000 samples on by --validation) it is every 4th
    sample training, as before."""
    if target <= LABELLED_DECISION_SAMPLES:
        return SMALL_TRAIN_EVERY, True
    want = min(target, n - n // SMALL_TRAIN_EVERY)
    if 2 * want >= n:
        return max(2, min(SMALL_TRAIN_EVERY, round(n / max(1, n - want)))), True
    return max(2, round(n / want)), False


MIN_CHOOSE = 16  # a one-shot fit chosen apart (`choose_apart`): its choosing part, at least
MIN_DECIDE = 24  # ... and its deciding part


def choose_apart(model: onnx.ModelProto, data: "Data", budget: float):
    """(Data, (chosen on, decided on)) for a one-shot fit that should not be judged by the samples that chose it
    (--one-shot --max-loss, and the automatic plan's one-shot fallback): every k-th sample of --data chooses (the
    scan and the fit) and the others decide, k >= 4 the least at which the deciding part can certify the budget,
    the choosing part at least MIN_CHOOSE; None when --data cannot be so split (too few samples, one feed,
    --val-data, random data): then one set chooses and decides. Chosen and judged on one set, a fit keeps the
    allocation that set's noise favours most (an MNIST MLP with 99 unlabelled samples: three draws gave 2.79x, 1.85x
    and 6.10x, each "0 of 99 changed", and changed 1.28%, 0.25% and 5.01% of 10,000 test predictions at 1 pp)."""
    from onnxprune.converter.auto.decide import BudgetRule

    if data.config.val_data is not None or draws_random_inputs(data.config):
        return None
    reader = data.reader()
    n, per_feed = reader.num_samples, bool(getattr(reader, "per_feed", False))
    if n is None or (n < 2 if per_feed else
                     -(-n // SMALL_TRAIN_EVERY) < MIN_CHOOSE or n - -(-n // SMALL_TRAIN_EVERY) < MIN_DECIDE):
        return None

    def split(k: int, said: bool) -> Data:
        apart = Data(model, data.config, random_shapes=data.random_shapes, budget=data.budget,
                     output_budgets=data.output_budgets, choose_every=k)
        apart._metrics_said = said  # the metric choice is said once per run
        apart._warned = data._warned  # ... and what reading --data says (random data, feeds used as is)
        apart.derived = dict(data.derived)  # ... and a decoder's own budgets, as derived
        apart.held_parts = dict(data.held_parts)
        apart.last_positions = data.last_positions  # ... and the outputs scored on their last position
        apart.groups = data.groups  # ... and its split by decode
        apart.carried = dict(data.carried)  # ... and the state its streams carry
        apart.calls = data.calls  # ... read a file a call
        return apart

    # every 4th first: its deciding part's evaluator (one dense pass over it) is what the fit is judged on, and
    # its rule says how many deciding samples the budget needs (a whole-set evaluator built only to ask cost the
    # 22M encoder's one-shot a dense pass over all 240 samples)
    apart, k = split(SMALL_TRAIN_EVERY, data._metrics_said), SMALL_TRAIN_EVERY
    rule = BudgetRule(apart.calibration, budget)
    # feeds read as is split by feed and count their samples (sweep 27: 6 files of 50 rows beside a scalar input
    # chose and decided on the same 300 samples, "given 64 feeds or more"): a feed's rows on average
    per = (apart.choosing.rows + rule.n) / n if per_feed else 1.0
    if per_feed and (apart.choosing.rows < MIN_CHOOSE or rule.n < MIN_DECIDE):
        return None
    floored = budget > 0 and any(r.form.any_floored for r in rule.outputs)
    need = (rule.samples_to_resolve() or 0) if floored else 0
    # the least k whose deciding part can certify, the choosing part keeping MIN_CHOOSE; none: every 4th chooses,
    # and the deciding part, too small, keeps the input model and says how many samples would do (choosing and
    # deciding on all 99 did not)
    k = next((k for k in range(SMALL_TRAIN_EVERY, n + 1) if -(-n // k) * per >= MIN_CHOOSE
              and (n - -(-n // k)) * per >= need), SMALL_TRAIN_EVERY)
    if k != SMALL_TRAIN_EVERY:
        apart = split(k, True)
        rule = BudgetRule(apart.calibration, budget)
    if per_feed:
        return apart, (apart.choosing.rows, rule.n)
    return apart, (-(-n // k), n - -(-n // k))


def list_outputs(spec) -> dict[str, str]:
    """{output: kind} of the outputs a --metric spec reads as a feed's list (output_metrics.LISTS; a bare kind's
    output ''), {} when none."""
    from onnxprune.calibration.metric_choice import parse_metric_spec
    from onnxprune.calibration.output_metrics import is_list

    try:
        headline, named = parse_metric_spec(spec)
    except ConfigError:
        return {}  # check_metric_spec says why
    found = {name: kind for name, kind in named.items() if is_list(kind)}
    return {"": headline, **found} if headline is not None and is_list(headline) else found


class Data:
    """The run's data, opened once: the reader for choosing/retraining and the evaluators."""

    def __init__(self, model: onnx.ModelProto, config: DataConfig, *, split: bool = False, small_data: bool = False,
                 random_shapes: dict | None = None, budget: float | None = None,
                 output_budgets: dict[str, float] | None = None, choose_every: int | None = None):
        """`choose_every` k: a split made by the caller, every k-th sample chooses (the training part) and the
        others decide, whatever --validation says (the automatic plan's one-shot fallback, steps/auto.py)."""
        from onnxprune.calibration.metrics import check_metric_spec

        check_metric_spec(model, config.metric)  # a mistyped output or metric fails before any work
        self.model, self.config = model, config
        # --max-loss L and --max-loss OUTPUT=L: every evaluator scores each output against its own budget
        self.budget, self.output_budgets = budget, dict(output_budgets or {})
        self.derived: dict[str, str] = {}  # own budgets the run derived, in words (own_budget)
        self.held_parts: dict[str, tuple[int, ...]] = {}  # ... and the parts each holds, where not all (own_budget)
        self.last_positions: frozenset[str] = frozenset()  # outputs scored on their last position (`last_position`)
        self.groups = None  # each sample's decode, where the split keeps a decode's calls together (`by_decode`)
        self.carried: dict[str, str] = {}  # a stream's state {input: output}: every evaluator runs streams as they
        # run (converter/steps/verify.streamed_decisions)
        self.calls = False  # a folder of stacked files, each a stream's call: read a file a feed (readers.calls_reader)
        # outputs --metric reads as a feed's list (list@T, set@T, top@K): --data read a request a feed
        self.lists = list_outputs(config.metric)
        self.random_shapes = random_shapes  # --data random: the run's shapes (steps.shapes), else --input-shape
        self._calib = None
        self._eval = None
        self._choose = None
        self._all = None
        self.chooses_apart = False  # the one-shot scan and fit choose on `chooser`, not on what decides (choose-apart)
        self._warned = False
        self._labels_said = False
        self._metrics_said = False
        self.small_data = small_data  # the automatic search's small-data policy (SMALL_TRAIN_EVERY)
        self.trains_on_every = False  # small data: every `every`-th sample trains and the others decide
        self._batch = None
        if choose_every is not None:
            self.every, self.trains_on_every = int(choose_every), True
        else:
            self.every = self._split() if split else None  # before any part= reader is asked for

    def own_budget(self, name: str, pp: float, why: str, parts: tuple[int, ...] | None = None) -> None:
        """Output `name` judged at its own budget `pp` from now on, by every evaluator, built or not (a greedy
        decoder's fed-back output, converter/steps/verify.decoded_budget), as --max-loss NAME=pp would; `why` says
        where it comes from where the rule cannot certify it (no --max-loss the user typed). `parts`: the metric's
        term columns `pp` holds (a decoder's `prob`: its pick, column 0), the others at the run's budget; None: all."""
        self.output_budgets[name] = pp
        self.derived[name] = why
        if parts is not None:
            self.held_parts[name] = tuple(parts)
        for evaluator in (self._calib, self._eval, self._choose, self._all):
            if evaluator is not None:
                evaluator.output_budgets[name] = pp
                evaluator.derived = dict(self.derived)
                evaluator.held_parts = dict(self.held_parts)

    def last_position(self, name: str) -> None:
        """Output `name` [N, T, ...] scored on its last position only from now on, by every evaluator, built or not:
        the logits of a decoder without a cache, whose other positions repeat the calls before's picks or read the
        prompt, which no decode keeps, and a KV decoder's at a call fed its prompt whole
        (converter/steps/verify.decoded_budget)."""
        self.last_positions = self.last_positions | {name}
        for evaluator in (self._calib, self._eval, self._choose, self._all):
            if evaluator is not None:
                evaluator.last_positions = self.last_positions

    def _split(self) -> int | None:
        c = self.config
        if c.val_data is not None or not c.validation or draws_random_inputs(c):
            return None  # --val-data decides; all of --data trains
        reader = self.reader()
        n = reader.num_samples
        every = max(2, round(1.0 / c.validation))
        # label-free, the rule bounds changes against the input model one-sidedly and needs samples to certify any;
        # with labels the paired rule forgives a loss within its noise, and retraining needs the samples more
        target = LABELLED_DECISION_SAMPLES if getattr(reader, "has_labels", False) else DECISION_SAMPLES
        if self.small_data and n is not None and n // every < target:
            every, self.trains_on_every = decision_split(n, target)
        decide = n - n // every if self.trains_on_every else (n // every if n is not None else None)
        if decide is not None and (decide < MIN_VALIDATION or self.trains_on_every and n // every < MIN_TRAIN):
            self.trains_on_every = False  # the search will not retrain: its one-shot fallback decides on all of it
            # the automatic search says this once with what it does instead (steps/auto.py `_why_not`)
            (log.debug if self.small_data else log.warning)(
                "--data holds %d samples, too few to hold out %d for validation; the budget is measured on the "
                "training data", n, MIN_VALIDATION)
            return None
        return every

    @property
    def batch_size(self) -> int:
        """The evaluation batch: --batch-size, else MAX_BATCH (64) cut so that one batch's activations (every
        tensor the graph computes, by shape inference on the data's first batch) stay within ACTIVATION_BYTES
        (calibration/shapes.py); such a run's sessions also allocate without onnxruntime's memory arena, which
        kept each session's peak. A speech-quality model whose one-sample pass computes 367 MB of tensors ran at 64
        samples a batch to 17.9 GB and was killed (sweep4, DNSMOS, 3m budget); at 5 a batch it peaked at 6.7 GB,
        and at 5 without the arena at 1.7 GB."""
        if self._batch is None:
            self._batch = self._choose_batch()
        return self._batch

    def _choose_batch(self) -> int:
        from onnxprune.calibration.metrics import feed_samples
        from onnxprune.calibration.runtime import use_arena
        from onnxprune.calibration.shapes import ACTIVATION_BYTES, MAX_BATCH, evaluation_batch

        c = self.config
        if c.batch_size is not None:
            return c.batch_size
        random = draws_random_inputs(c)
        reader = None if random else self.reader(batch_size=MAX_BATCH)
        if getattr(reader, "per_feed", False):  # each feed is read as it is: no batch to choose
            self._feed_fits(reader)
            return MAX_BATCH
        dynamic = _batch_dependent(self.model)
        if dynamic:  # per-batch activation scales: a sample's answer depends on the samples beside it
            # lists 57's L4: "as a single request runs" where the recommender's request was 1,004 rows run together
            log.warning("the model quantizes its activations per batch (%s): a sample's output depends on the "
                        "samples run with it, so each is evaluated alone, as a caller that runs one sample a call "
                        "gets it; where your application runs several rows in one call (one request's candidates), "
                        "they are quantized together: --batch-size sets the batch, and a folder of one request a "
                        "file with --metric OUTPUT=list@T, set@T or top@K runs each request whole", dynamic)
            return 1
        if random:
            return MAX_BATCH
        feeds = next(iter(reader.batches()), (None, None))[0]
        if not feeds:
            return MAX_BATCH
        batch, per = evaluation_batch(self.model, feeds, feed_samples(feeds, reader))
        if batch < MAX_BATCH:  # large activations: sessions also give their memory back after each run
            use_arena(False)
            log.info("evaluation batch %d: one sample's pass computes %.0f MB of tensors, and a batch is kept "
                     "within %.0f GB (--batch-size sets it); sessions allocate without onnxruntime's memory arena",
                     batch, per / 1e6, ACTIVATION_BYTES / 2 ** 30)
        return batch

    def _feed_fits(self, reader) -> None:
        """A feed read as it is runs whole: refused before it runs when its largest tensor alone passes the memory
        available (calibration/shapes.feed_memory), warned when all its tensors together do. The first feed is
        checked (a folder's files are read one at a time, and a run that gets past its first usually fits)."""
        from onnxprune.calibration.runtime import available_memory
        from onnxprune.calibration.shapes import feed_memory

        feeds = next(iter(reader.batches()), (None, None))[0]
        if not feeds:
            return
        source = self.config.data
        where = (f"the first feed of --data '{source}'" if isinstance(source, (str, os.PathLike))
                 else "the data's first feed")
        why = feed_memory(self.model, feeds, where, available_memory())
        if why:
            raise CalibrationError(why)

    def reader(self, source=None, *, batch_size=None, part: str | None = None):
        """All of `source` (default --data); with `part` "train" or "validation", that side of the split."""
        from onnxprune.calibration.readers import open_data

        c = self.config
        src = source if source is not None else c.data
        if self.lists:
            reader = self._requests(src)
            if part is not None and source is None and self.every:
                reader = reader.part(self.every, holdout=(part == "validation") != self.trains_on_every,
                                     role="the training part" if part == "train" else None)
            return reader
        random = isinstance(src, str) and src == "random" and self.random_shapes is not None
        reader = open_data(src, self.model, labels=c.labels, batch_size=batch_size or self.batch_size,
                           limit=c.limit, seed=c.seed, shapes=self.random_shapes if random else c.input_shapes,
                           warn=not self._warned)
        self._warned = True  # the random-data warning is said once per run
        if self.calls and not getattr(reader, "per_feed", False):
            from onnxprune.calibration.readers import calls_reader

            reader = calls_reader(src, self.model, labels=c.labels, limit=c.limit) or reader
        if reader.has_labels and c.metric is None and self._labels_unusable():
            reader = reader.without_labels()  # neither scored nor trained against (cross-entropy would fail)
        if part is not None and source is None and self.every:
            reader = reader.part(self.every, holdout=(part == "validation") != self.trains_on_every,
                                 role="the training part" if part == "train" else None, groups=self.groups,
                                 unit="decode" if not getattr(reader, "per_feed", False) else "stream of calls")
        return reader

    def _requests(self, source):
        """`source` read one request a feed (readers.requests_reader), as --metric's list kinds read it; refused
        where it holds no requests apart (one stacked file, random data)."""
        from onnxprune.calibration.readers import requests_reader

        c = self.config
        said = " ".join(f"--metric {name + '=' if name else ''}{kind}" for name, kind in self.lists.items())
        reader = requests_reader(source, self.model, f"its rows read together as one list ({said})", labels=c.labels,
                                 limit=c.limit)
        if reader is None:
            what = (f"'{source}'" if isinstance(source, (str, os.PathLike)) else f"a {type(source).__name__}")
            raise ConfigError(f"{said} reads each feed of the data as one request (its rows scored together, read as "
                              f"one list), and {what} holds no requests apart: give a folder of .npz files, one "
                              "request's rows a file (in Python, a list of feed dicts, one a request)")
        if not self._warned:
            self._warned = True
            log.info("%s", reader.feed_note)
        return reader

    def by_decode(self, groups, target: int, unit: str = "decode", sizes=None) -> str | None:
        """A greedy decoder's recorded calls split by decode, not by row (converter/steps/verify.decoded_budget):
        `groups` each sample's decode, so a decode's calls are all on one side (its calls that decide were not
        trained on beside them); and where the deciding part holds fewer than `target` samples (what the decoded
        budget needs to be certified: 2,017 at 0.0496 pp, where --validation's tenth held 1,018 and the search fell
        back to one shot, decoders 55's L6), the automatic search's small-data split to that target
        (`decision_split`). Only before any part of the data was read, and only a split the data step made; the
        words for the note, or None when nothing changed. `unit` "stream": feeds used as they are, each a call of
        a stream of decodes, `groups` each feed's stream and `sizes` each feed's rows, which the deciding part
        counts (decoders 55b's L3: its count was of feeds)."""
        if not self.every or self.config.val_data is not None or any(
                e is not None for e in (self._eval, self._choose, self._all)):
            return None
        n = self.reader().num_samples
        if n is None:
            return None
        self._calib = None  # built on the row split (the metric plan asked for): built again on this one
        self.groups = groups
        said = f"split by {unit} ({int(np.max(groups)) + 1:,} {unit}s, each on one side)"

        def deciding() -> int:  # the rows of the deciding part
            if sizes is None:
                return self.reader(part="validation").num_samples or 0
            ids = np.asarray(groups)[:len(sizes)]
            return int(np.asarray(sizes)[(ids % self.every == 0) != self.trains_on_every].sum())

        now = deciding()
        if self.small_data and now < target and not self.trains_on_every:
            every, trains = decision_split(n if sizes is None else int(np.sum(sizes)), target)
            self.every, self.trains_on_every = every, trains
            now = deciding()
            while not trains and now < target and every > 2:  # decodes of unequal length: a decode fewer apart
                every = self.every = every - 1
                now = deciding()
            nth = {2: "other", 3: "3rd"}.get(every, f"{every}th")
            said += f", every {nth} {unit} {'training' if trains else 'deciding'} so that {now:,} calls' rows"
            said += f" decide where --validation's share held fewer than the {target:,} the budget needs"
        return said

    def _labels_unusable(self) -> bool:
        """No output the labels could belong to (a language model's logits [N, 1, vocab] beside its cache): said
        once; without --metric the labels are then left out of the whole run, scoring and retraining alike."""
        from onnxprune.calibration.metric_choice import scored_labels_output

        if scored_labels_output(self.model) is not None:
            return False
        if not self._labels_said:
            self._labels_said = True
            log.warning("no output has the shape [N, classes] the labels could belong to (outputs: %s); labels are "
                        "ignored, every output is compared with the dense model and retraining distils from it",
                        ", ".join(o.name for o in self.model.graph.output))
        return True

    def train_reader(self, batch_size=None):
        """What retraining sees: --data without the validation samples."""
        return self.reader(batch_size=batch_size, part="train")

    def _evaluator(self, source, part=None):
        from onnxprune.calibration.metrics import Evaluator
        from onnxprune.calibration.sampling import SPLIT_ROWS

        reader = self.reader(source, part=part)
        quiet, self._metrics_said = self._metrics_said, True  # the metric choice is said once per run
        evaluator = Evaluator(reader, self.config.metric, reference_model=self.model,  # every output, or --metric's
                              split=SPLIT_ROWS, quiet=quiet, budget=self.budget, output_budgets=self.output_budgets,
                              carried=self.carried, last_positions=self.last_positions)
        evaluator.derived = dict(self.derived)
        evaluator.held_parts = dict(self.held_parts)
        return evaluator

    def scored_outputs(self) -> list[str]:
        """The outputs the evaluators score, headline first: `calibration`'s, or, before any evaluator was built, the
        metric plan's (which outputs does not depend on the dense values, only each one's kind), so that asking costs
        no dense pass. The one-shot budget plan asked in the targets step (steps/targets.py), and its whole-set
        evaluator ran the input model over all of --data before choose-apart ran it again over both parts: VGG16's
        160 images, 31 s; a ViT saliency map's 150, 20 s."""
        if self._calib is not None:
            return self._calib.scored_outputs
        from onnxprune.calibration.metric_choice import metric_plan

        return list(metric_plan(self.model, self.reader(self.config.val_data).has_labels, self.config.metric))

    @property
    def calibration(self):
        """Scores on the data the choices are made on: --data, or its validation part when split."""
        if self._calib is None:
            self._calib = self._evaluator(self.config.val_data, part="validation")
        return self._calib

    @property
    def choosing(self):
        """Scores on the training part (the side of the split that --data trains on), or None unsplit."""
        if not self.every:
            return None
        if self._choose is None:
            self._choose = self._evaluator(None, part="train")
        return self._choose

    @property
    def chooser(self):
        """What a one-shot scan and fit choose on: the evaluator that decides (`calibration`), unless the run chooses
        apart (`chooses_apart`, steps/budget.ChooseApartStep): then the choosing part of the split, or beside
        --val-data all of --data."""
        if not self.chooses_apart:
            return self.calibration
        if self.every:
            return self.choosing
        if self._all is None:
            self._all = self._evaluator(None)
        return self._all

    @property
    def evaluation(self):
        """Scores on the held-out data when given (--eval-data), else on --data."""
        if self.config.eval_data is None:
            return self.calibration
        if self._eval is None:
            self._eval = self._evaluator(self.config.eval_data)
        return self._eval

    def verification_feeds(self, batches: int) -> list | None:
        """A few batches of the user's data (real inputs hit real activations); read a sample a feed (a time-major
        file's sequences), as many samples as that many batches hold."""
        reader = self.reader()
        if getattr(reader, "one_sample_feeds", False):
            batches *= self.batch_size
        feeds = []
        for feed in reader:
            feeds.append(feed)
            if len(feeds) >= batches:
                break
        return feeds or None


def _read_calls_before_search(read, state: RunState, failed: str) -> None:
    """`read(state)`, a reading of --data's calls before the search (steps/verify's `decoded_budget`,
    `streamed_decisions`); where it fails, `failed` and the first line of why are said and the budget is judged one
    call at a time (--debug raises)."""
    try:
        read(state)
    except Exception as exc:  # noqa: BLE001 - reading the calls failed: said, judged per call
        if debugging():
            raise
        log.warning("%s (%s): the budget is judged one call at a time", failed,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


@register_step("data")
class DataStep(Step):
    """Open --data (and --eval-data); with a budget and retraining, hold out a validation part."""

    needs = ("original",)
    gives = ("data",)

    def __init__(self, config: DataConfig, *, split: bool = False, small_data: bool = False,
                 budget: float | None = None, output_budgets: dict[str, float] | None = None):
        super().__init__(config)
        self.config, self.split, self.small_data = config, split, small_data
        self.budget, self.output_budgets = budget, dict(output_budgets or {})

    def settings(self) -> dict:
        own = {"output_budgets": self.output_budgets} if self.output_budgets else {}
        return {**super().settings(), "validation_split": self.split, "small_data_policy": self.small_data, **own}

    def run(self, state: RunState) -> None:
        from onnxprune.calibration.readers import left_out_optionals
        from onnxprune.converter.modelio import run_without

        unfed = [] if draws_random_inputs(self.config) else left_out_optionals(self.config.data, state.original)
        if unfed:  # the model's callers run it without them: so is every step, and the written model takes them
            state.original, state.unfed = run_without(state.original, unfed)
            note = (f"optional input(s) {', '.join(repr(n) for n in unfed)} not in --data: the model is run and "
                    "judged without them, as a caller that passes none runs it (the written model still takes them; "
                    "give them in --data to judge it with them)")
            log.info(note)
            state.notes.append(note)
        state.data = Data(state.original, self.config, split=self.split, small_data=self.small_data,
                          random_shapes=state.random_shapes, budget=self.budget, output_budgets=self.output_budgets)
        if self.budget and self.budget > 0 and not draws_random_inputs(self.config):
            from onnxprune.converter.steps.verify import decoded_budget

            # a greedy decoder's budget bounds its decodes: the per-call one divided by L
            _read_calls_before_search(decoded_budget, state, "the calls of --data were not read as a greedy decoder's")
            if state.decoded_budget is None:
                from onnxprune.converter.steps.verify import causal_lm_note, streamed_decisions

                causal_lm_note(state)  # a language model fed its whole context: its decodes are not judged

                # a stream's calls are judged as it runs them, each model on its own state
                _read_calls_before_search(streamed_decisions, state,
                                          "the feeds of --data were not read as a stream's calls")
        note = None if draws_random_inputs(self.config) else one_size_note(state.original, state.data.reader())
        if note:  # a note in the summary, not a warning: most text models are calibrated at one length
            log.info(note)
            state.notes.append(note)
        note = None if draws_random_inputs(self.config) else rows_judged_note(state.original, state.data)
        if note:
            log.warning(note)
            state.notes.append(note)


CONTEXT_FILES = 4  # files of --data `shared_context` looks at for a context their rows share


def rows_judged_note(model: onnx.ModelProto, data: Data) -> str | None:
    """A note where --data is a folder of files of several rows each, judged a row at a time, whose rows share a
    context (`shared_context`: a request's rows, not a batch's independent samples), and the model scores one value
    a row ([N] or [N, 1]): a ranking, retrieval or recommendation model's application, or a policy's that plays the
    best-scored move, may read a file's rows together as one list, which `list@T`, `set@T` or `top@K` judge (a
    request a sample). Real models 56b's L2: VS Code's extension recommender, 140 workspaces of 1,004 candidate rows
    each, was judged as 140,560 rows; per row its claim held (0.28% crossed 0.6) while the list changed on 72% of the
    workspaces. Real models 57's L1: Super 3's policy, a position a file ('obs' [191] beside 'move_features' [n, 18]),
    read a move a sample: its rows within the budget, its picked move changed on 1.4% of held-out positions. A folder
    of batches of independent samples shares no context and is not told (lists 57's L5)."""
    from onnxprune.calibration.readers import data_files, rows_together

    source = data.config.data
    if data.lists or data.carried or data.calls or not isinstance(source, (str, os.PathLike)) \
            or not os.path.isdir(source):
        return None
    files = [p for p in data_files(source) if p.suffix == ".npz"]
    scores = [o.name for o in model.graph.output if _one_value_a_row(o)]
    if len(files) < 2 or not scores or rows_together(data.reader()):  # each file one sample already
        return None
    found = shared_context(model, files[:CONTEXT_FILES])
    if found is None:
        return None
    rows, context = found
    name = scores[0]
    each = f"{min(rows):,}" if min(rows) == max(rows) else f"{min(rows):,}-{max(rows):,}"
    return (f"the {len(files):,} files of --data hold {each} rows each (the first {len(rows)} read) that share a "
            f"context ({context}), and output '{name}' one score a row: each row was judged as one sample; if your "
            f"application reads a file's rows together (one request's candidates ranked, read above a threshold, or "
            f"the best-scored one picked), judge each file as one request: --metric {name}=list@T (the rows scored T "
            f"or more, best first), {name}=set@T (those rows, in any order) or {name}=top@K (the first K and their "
            f"order; top@1 the pick), a request changed when its list did")


def shared_context(model: onnx.ModelProto, files: list) -> tuple[list[int], str] | None:
    """([each file's rows], the context in words) where every one of `files` stacks R >= 2 rows on the inputs whose
    axis 0 is free and its rows share a context that differs from file to file: an input held whole for the file (an
    array of its input's fixed declared shape, a position's board beside its moves), or columns of a stacked input
    with one value in every row of a file and not the same in every file (a workspace's signals beside each
    candidate's one-hot). Independent samples batched into files share neither (a column constant in each of several
    random batches is one the data never varies). None otherwise."""
    from onnxprune.calibration.readers import _npz_arrays
    from onnxprune.calibration.runtime import input_specs
    from onnxprune.plain import listed

    specs = [s for s in input_specs(model) if s.kind == "tensor"]
    fixed = {s.name: tuple(s.shape) for s in specs if all(d is not None for d in s.shape)}
    stacked = {s.name: len(s.shape) for s in specs if s.shape and s.shape[0] is None}
    rows, whole, stacks = [], [], []
    for path in files:
        arrays = _npz_arrays(path)
        whole.append({k: np.asarray(arrays[k]) for k, shape in fixed.items()
                      if k in arrays and np.shape(arrays[k]) == shape})
        own = {k: np.asarray(arrays[k]) for k, rank in stacked.items() if k in arrays and np.ndim(arrays[k]) == rank}
        counts = {len(a) for a in own.values()}
        if len(counts) != 1 or min(counts) < 2:
            return None
        rows.append(counts.pop())
        stacks.append(own)
    held = [k for k in sorted(fixed) if all(k in w for w in whole)
            and any(not np.array_equal(w[k], whole[0][k]) for w in whole[1:])]
    if held:
        verb = "holds" if len(held) == 1 else "hold"
        return rows, f"input{'s' if len(held) > 1 else ''} {listed(repr(k) for k in held)} {verb} one value a file"
    for name in stacks[0]:
        flat = [s[name].reshape(len(s[name]), -1) for s in stacks if name in s]
        if len(flat) != len(stacks) or len({f.shape[1] for f in flat}) != 1:
            continue
        same = np.logical_and.reduce([(f == f[:1]).all(axis=0) for f in flat])
        differ = np.logical_or.reduce([f[0] != flat[0][0] for f in flat[1:]])
        n = int(np.count_nonzero(same & differ))
        if n:
            return rows, (f"{n:,} of the {flat[0].shape[1]:,} columns of input '{name}' hold one value in every row "
                          "of a file and differ between files")
    return None


def _one_value_a_row(output: onnx.ValueInfoProto) -> bool:
    """An output declared [N] or [N, 1] of a float type: one score a row."""
    t = output.type.tensor_type
    if not output.type.HasField("tensor_type") or t.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                                                         onnx.TensorProto.FLOAT16):
        return False
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return t.HasField("shape") and len(dims) in (1, 2) and dims[0] != 1 and dims[1:] in ([], [1])


SIZE_BATCHES = 64  # batches of --data looked at for the sizes of an input's free axes


def one_size_note(model: onnx.ModelProto, reader) -> str | None:
    """A note when an input declares axes of any size besides its batch (an image's H and W, a clip's length) and
    every sample of `reader` has one size there: whatever the run measures is measured at that size only. Sweep 29: a
    depthwise-separable net with [N, 1, H, W] in, pruned on 28x28 images, changed 0.70% of 2,000 held-out
    predictions at 28x28 and 2.90% at 22-34 px. Batch-like axes are those random inputs keep small
    (`calibration.shapes.batch_axes`: axis 0, a time-major input's axis 1, a state's lone axis). An axis the
    model's weights fix at the data's size is not said (`_fixed_axes`)."""
    from onnxprune.calibration.runtime import input_specs
    from onnxprune.calibration.shapes import batch_axes
    from onnxprune.calibration.value_types import dim_params

    batch = batch_axes(model)
    names = {vi.name: dim_params(vi) for vi in model.graph.input}  # the axes as the data holds them (a sequence's too)
    free = {s.name: [k for k, d in enumerate(s.shape) if d is None and k not in batch.get(s.name, ())]
            for s in input_specs(model)}
    free = {name: axes for name, axes in free.items() if axes}
    if not free:
        return None
    seen: dict[tuple[str, int], set[int]] = {(name, k): set() for name, axes in free.items() for k in axes}
    first: dict[str, tuple] = {}
    for i, (feeds, _) in enumerate(reader.batches()):
        if i >= SIZE_BATCHES:
            break
        first = first or {name: np.shape(a) for name, a in feeds.items()}
        for (name, k), sizes in seen.items():
            a = feeds.get(name)
            if a is not None and k < np.ndim(a):
                sizes.add(int(np.shape(a)[k]))
    one = {}
    for (name, k), sizes in seen.items():
        if len(sizes) == 1:
            one.setdefault(name, []).append((k, next(iter(sizes))))
    fixed = _fixed_axes(model, first, [(name, k, v) for name, axes in one.items() for k, v in axes]) if one else set()
    one = {name: kept for name, axes in one.items() if (kept := [(k, v) for k, v in axes if (name, k) not in fixed])}
    if not one:
        return None
    alike: dict[tuple, list[str]] = {}  # inputs with the same free axes at the same sizes are said once
    for name, axes in one.items():
        alike.setdefault(tuple((k, names[name][k] or "?", v) for k, v in axes), []).append(name)
    said = []
    for axes, inputs in alike.items():
        who = (f"input '{inputs[0]}' declares" if len(inputs) == 1
               else f"inputs {', '.join(repr(n) for n in inputs)} declare")
        said.append(f"{who} {'axis' if len(axes) == 1 else 'axes'} {', '.join(f'{k} ({lab})' for k, lab, _ in axes)} "
                    f"of any size, and every sample of --data has {' x '.join(str(v) for *_, v in axes)} there")
    return ("; ".join(said) + ": the pruned model is measured at that size only (the budget too) and may lose more "
            "at others; if it will run at other sizes, give --data samples of those sizes (a folder of .npz feeds, "
            "one size a file)")


def _fixed_axes(model: onnx.ModelProto, sizes: dict[str, tuple], axes: list[tuple[str, int, int]]
                ) -> set[tuple[str, int]]:
    """The (input, axis) pairs of `axes` (input, axis, the data's one size) that the model's own weights fix at that
    size although the input declares them open: onnx's strict shape inference passes with every input at the data's
    sizes (`sizes`, a batch's shapes) and fails with that axis one larger and with it twice as large. Real models
    54b: tf2onnx declares a Keras Dense net's input [unk, unk]; its 65 features meet a [65] normalization constant
    and a [65, 512] MatMul, and the one-size note asked for samples of other sizes the model cannot take. When the
    inference cannot tell (it fails at the data's sizes too, an op it does not know), nothing is taken as fixed."""
    from onnxprune.passes.shapes import skeleton

    def infers(at: dict[str, tuple]) -> bool:
        m = skeleton(model)
        for vi in m.graph.input:
            dims = at.get(vi.name)
            if dims is None or not vi.type.HasField("tensor_type"):
                continue
            shape = vi.type.tensor_type.shape
            if len(shape.dim) != len(dims):
                return False
            for d, v in zip(shape.dim, dims):
                d.Clear()
                d.dim_value = int(v)
        del m.graph.value_info[:]
        for vi in m.graph.output:
            if vi.type.HasField("tensor_type"):
                vi.type.tensor_type.ClearField("shape")
        try:
            onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
        except Exception:  # noqa: BLE001 - a size the model's own shapes refuse, or an op inference does not know
            return False
        return True

    tensors = {vi.name for vi in model.graph.input if vi.type.HasField("tensor_type")}
    sizes = {name: tuple(dims) for name, dims in sizes.items() if name in tensors}
    if not axes or not sizes or not infers(sizes):
        return set()
    fixed = set()
    for name, k, v in axes:
        if name not in sizes or k >= len(sizes[name]):
            continue
        other = [tuple(w if j == k else d for j, d in enumerate(sizes[name])) for w in (v + 1, 2 * v)]
        if not any(infers({**sizes, name: dims}) for dims in other):
            fixed.add((name, k))
    return fixed


def _batch_dependent(model) -> str | None:
    """The first op of `model` (any scope) whose output depends on the whole batch it is given
    (opfacts.BATCH_DEPENDENT_OPS: dynamic quantization's per-tensor activation scale), in words, or None."""
    from onnxprune.passes.opfacts import BATCH_DEPENDENT_OPS
    from onnxprune.passes.scopes import all_nodes

    if model is None:
        return None
    return next((f"{n.op_type} '{n.name}'" for n in all_nodes(model) if n.op_type in BATCH_DEPENDENT_OPS), None)
