"""The automatic search (`prune --max-loss L --data TRAIN`, issue: the budget is the only knob).

One step in place of scan → allocate → retrain: converter.auto starts from the best one-shot model within the
budget, learns the learning rate and the round length from the model and the data, prunes weights (LAMP-distributed)
and whole neurons in turns, retrains, and keeps a round only when its stated decision rule says the loss is within
the budget (every scored output judged, converter.auto.decide). With too little data to both decide on (>= 50
held-out samples) and train on (>= 25), it runs the one-shot search instead and says so once: chosen on every k-th
sample and decided on the others where --data allows (`steps.data.choose_apart`), else on one set.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.converter.steps.data import MIN_CHOOSE, choose_apart
from onnxprune.errors import ConfigError
from onnxprune.passes.magnitude import Target

log = logging.getLogger(__name__)

ALMOST_ALL = float(np.nextafter(1.0, 0.0))  # the sparsity a layer the search emptied is recorded at


@dataclass
class AutoSearchConfig(StepConfig):
    one_shot: bool = False  # --one-shot: the no-retraining budget search only (a different plan)
    time_budget: float | str | None = None  # seconds, or "90s", "15m", "1h"; default converter.auto's
    recovery: str = "auto"  # --recovery: a backend of converter.auto.recovery.RECOVERY, or auto (its rule picks)

    def validate(self) -> None:
        if self.time_budget is not None:
            from onnxprune.converter.auto.config import parse_duration

            parse_duration(self.time_budget)
        from onnxprune.converter.auto.recovery import RECOVERY

        if self.recovery != "auto" and self.recovery not in RECOVERY:
            raise ConfigError(f"--recovery {self.recovery} is not one of auto, {', '.join(RECOVERY)}.")




@register_step("auto-search")
class AutoSearchStep(Step):
    """Automatic: one-shot start, then prune/retrain rounds (weights and whole neurons) kept by a stated rule."""

    needs = ("original", "scannable", "targets", "data", "scoring")
    gives = ("pruned", "history", "targets", "sensitivity", "auto")
    optional = ("auto", "sensitivity")  # the one-shot fallback has no search to report; nothing certifiable: no scan

    def __init__(self, config: AutoSearchConfig, budget, retrain, targets, shrink, scan, given=frozenset()):
        super().__init__(config, budget)
        self.config, self.budget, self.retrain, self.targets_config = config, budget, retrain, targets
        self.scan = scan
        self.neurons, self.given = shrink.neurons, frozenset(given)

    def run(self, state: RunState) -> None:
        few = self._why_not(state)  # too few samples to split or to train on, counted a feed at a time when used as is
        why = few or self._too_few_to_decide(state)
        if why is not None:
            apart = None if self.targets_config.layers else choose_apart(state.original, state.data, self.budget.max_loss)
            if apart is None:
                self._one_shot(state, why)
                return
            state.data, (choose, decide) = apart
            from onnxprune.converter.criteria import calibration_scoring

            # a data-driven criterion's statistics from the choosing part too (steps/targets.py took all of --data)
            state.scoring = calibration_scoring(self.targets_config.criterion, state.data.train_reader(),
                                                seed=state.data.config.seed, last=state.unread_rows)
            if few is not None and self._feeds_retrain(state, choose, decide):
                n = state.data.reader().num_samples
                note = (f"--data holds {n} feed(s), each used as is: split by feed, the {choose} samples of one feed "
                        f"in {state.data.every} train and the {decide} samples of the others decide")
                why = None
            else:
                note = (f"{why}: the one-shot search ran (no retraining), chosen on {choose} samples and decided on "
                        f"the {decide} others, so that the samples that judge it did not choose it")
            log.warning(note)
            state.notes.append(note)
        if self.targets_config.layers:  # the one-shot search above honours them as fixed; the search has no pins
            raise ConfigError("--layer fixes a layer's sparsity, which the automatic search (--max-loss with "
                              "--data) chooses itself; use --exclude to keep a layer dense, or add --one-shot or "
                              "--iterations N to prune with fixed layers.")
        from onnxprune.converter.auto import AutoConfig, AutoData, auto_search
        from onnxprune.converter.auto.config import OVERRIDES

        c, r = self.config, self.retrain
        config = AutoConfig(max_loss=float(self.budget.max_loss), time_budget=self._time_budget(),
                            threads=r.threads, seed=state.data.config.seed, device=r.device,
                            criterion=self.targets_config.criterion, neurons=self.neurons,
                            overrides={k: getattr(r, k) for k in OVERRIDES if k in self.given},
                            recovery=c.recovery, retrain=why is None)
        t0 = time.perf_counter()
        clock = self._clock(state)
        train = state.data.train_reader(batch_size=r.train_batch_size)
        # the chooser's evaluator runs the dense model on the training part (magika's 60 samples: 2.5 s at load 7),
        # not wanted when the search has no time: it keeps the input model; nor is the second look's, the same pass
        # (real models 44: ISNet's 38 training pages took 4 min after its decision pass had used the 5 min budget)
        searching = clock.search_seconds() > 0
        chooser = self._chooser(state, train) if searching else None
        from onnxprune.calibration.metric_choice import labels_output

        # labels scored against predicted labels (an integer output) judge only: retraining distils
        data = AutoData(train=train, evaluator=state.data.calibration, dense=state.original, chooser=chooser,
                        train_on_labels=chooser is None and labels_output(state.original) is not None,
                        # the training part: a second look at a retrained result (not at a start it chose)
                        second=state.data.choosing if why is None and searching else None)
        short = clock.shortfall_note()  # said once, before the search: the budget cannot hold verification
        if short:
            log.warning(short)
        from onnxprune.converter.steps.budget import held_weights

        held = held_weights(state)  # kept as they are
        result = auto_search(state.original, state.scannable, data, config, state.progress, clock=clock, held=held,
                             scoring=state.scoring)
        state.prune.masks.update(result.masks)
        state.notes.extend(([short] if short else []) + result.notes + self._few_labelled(state))
        state.auto = result.report()
        state.auto["time"] = {"budget_s": config.time_budget, "search_s": round(time.perf_counter() - t0, 1),
                              **clock.after.as_dict()}  # the reserve at the last measured pace
        # a layer the search emptied reads as just under 1 (a Target's sparsity is below 1: a recipe cannot ask
        # for all, a search can find it; the dynamically quantized LeNet-5 with 30 s, fresh clone, failed there)
        state.targets = {**{n: Target(sparsity=min(1.0 - float(m.mean()), ALMOST_ALL))
                            for n, m in result.masks.items()}, **(state.targets or {})}
        state.pruned, state.history, state.sensitivity = result.model, result.history, result.sensitivity

    def _why_not(self, state: RunState) -> str | None:
        """Why the search cannot retrain here (then the one-shot search runs), or None. Every scored output and
        every metric kind is judged by the decision rule (converter.auto.decide); what is left is data."""
        from onnxprune.converter.auto import MIN_TRAIN_SAMPLES
        from onnxprune.converter.steps.data import MIN_VALIDATION

        data = state.data
        reader = data.train_reader()
        n = reader.num_samples
        # a folder read one feed per file splits and counts files (a helper's 20 files of 30 sentences read
        # "--data holds 20 samples" beside "600 decision samples")
        unit = "feed(s), each used as is" if getattr(reader, "per_feed", False) else "samples"
        held_out = data.every is not None or data.config.val_data is not None
        # why the data is read feed by feed, where it is (sweep 20: 2,000 images beside a lookup table 'lut' [256]
        # in one file read "--data holds 1 feed(s)" and nothing said why the images were no samples)
        note = getattr(reader, "feed_note", None) if getattr(reader, "per_feed", False) else None
        why = f" ({note.split('as is: ', 1)[-1]})" if note else ""  # the reason; the note itself is said once
        if n is not None and not held_out and data.config.validation:
            return (f"--data holds {n} {unit}{why}, too few to hold out {MIN_VALIDATION} to decide on and train on "
                    f"the rest (the search needs 100, or --val-data)")
        if n is not None and n < MIN_TRAIN_SAMPLES:
            return f"--data leaves {n} training {unit} (fewer than {MIN_TRAIN_SAMPLES})"
        # no torch, or a graph the torch bridge cannot run: the search recovers by layer-wise refit
        # (converter.auto.recovery.choose), which needs neither
        return None

    def _feeds_retrain(self, state: RunState, choose: int, decide: int) -> bool:
        """Whether feeds used as is, too few to split a sample at a time, hold samples enough to retrain on a feed in
        every SMALL_TRAIN_EVERY (steps/data.choose_apart) and decide on the others: MIN_TRAIN_SAMPLES and
        MIN_VALIDATION samples, counted as the decision rule counts them. Sweep 27: 10 feeds of 32 streams (a
        stateful VAD with its batch on axis 1) and 6 feeds of 50 images beside a scalar input ran one-shot,
        "the search needs 100", on 320 and 300 samples."""
        from onnxprune.converter.auto import MIN_TRAIN_SAMPLES
        from onnxprune.converter.steps.data import MIN_VALIDATION

        reader = state.data.reader()
        return (bool(getattr(reader, "per_feed", False)) and bool(state.data.config.validation)
                and choose >= MIN_TRAIN_SAMPLES and decide >= MIN_VALIDATION)

    def _few_labelled(self, state: RunState) -> list[str]:
        """With labels, --validation's share decides (every 10th sample), which on 1,000-10,000 samples is 100-1,000
        decision samples while the rest train; label-free the search decides on up to DECISION_SAMPLES. Where the
        labelled decision set is smaller than that and the training part larger than it, a note names the knob and
        its resolution. Sweep 20's MNIST CNN, 2,000 labelled images, decided on 200 and kept 1.00x, with --validation
        0.5 33.0x; bench_labelled_split (44 runs: MLP, CNN, GRU; 1,000-5,000 images; 0.1, min(1000/n, 1/3),
        min(1000/n, 1/2)) found no share better on average, so the default stays and the note claims no gain
        (tests/corpus/RESULTS.md, "Labelled split")."""
        from onnxprune.converter.steps.data import DECISION_SAMPLES

        data = state.data
        if data.every is None or data.trains_on_every or data.config.val_data is not None:
            return []
        train = data.train_reader()
        if not getattr(train, "has_labels", False):
            return []
        decide, trained = data.calibration.num_samples, train.num_samples
        if decide is None or trained is None or decide >= DECISION_SAMPLES or trained <= decide:
            return []
        more = min(DECISION_SAMPLES, (decide + trained) // 2)
        share = round(more / (decide + trained), 2)
        return [f"with labels, {decide} of --data's {decide + trained} samples decide (--validation "
                f"{data.config.validation:g}; one sample = {100 / decide:.2g} pp); --validation {share:g} decides "
                f"on about {more}, with fewer samples to retrain on: neither share pruned more on average on MNIST "
                "models at 1,000-5,000 labelled images, while the draws of the data varied a run 1x to 5x "
                "(tests/corpus/RESULTS.md, 'Labelled split')"]

    def _too_few_to_decide(self, state: RunState) -> str | None:
        """Why the search cannot retrain when the part of --data held out to decide on cannot certify the budget but
        all of it could, or None. The one-shot search then decides on a larger part (`steps.data.choose_apart`); it used to
        decide on all of --data, the samples that had chosen it among them: on an MNIST MLP with 99 unlabelled
        samples, three draws gave 2.79x, 1.85x and 6.10x, each "0 of 99 changed", and changed 1.28%, 0.25% and
        5.01% of 10,000 test predictions against 1 pp."""
        from onnxprune.converter.auto.decide import BudgetRule

        data, budget = state.data, self.budget.max_loss
        if data.every is None or data.config.val_data is not None:
            return None
        split = BudgetRule(data.calibration, budget)
        if split.uncertifiable() is None:
            return None
        n, need = data.reader().num_samples, split.samples_to_resolve()
        if n is None or need is None or need > n:
            return None  # neither can: the search keeps the input model and says how many samples would do
        # the short output's own count: sweep 28's batched GNN was told "the 32218 samples held out to decide on
        # cannot certify --max-loss 1 (99 would)", 32,218 its nodes, where its per-graph output had 90 feeds
        short = split._short()
        r = split.outputs[short] if short is not None else None
        derived = (getattr(data.calibration, "derived", None) or {}).get(r.name) if r is not None else None
        asked = f"--max-loss {budget:g}" if derived is None else f"'{r.name}' at {r.budget:.3g} pp a call ({derived})"
        return f"the {split.short_samples()} held out cannot certify {asked} ({need} would)"

    def _one_shot(self, state: RunState, why: str) -> None:
        from onnxprune.converter.steps.budget import FitBudgetStep
        from onnxprune.converter.steps.prune import PruneStep
        from onnxprune.converter.steps.scan import ScanStep

        note = f"{why}: the one-shot budget search ran (no retraining)"
        data = state.data
        chose = data.reader().num_samples if data.config.val_data is not None else None
        if chose is not None and chose >= MIN_CHOOSE:  # --data chooses, --val-data decides (steps/budget.py)
            data.chooses_apart = True
            note += (f", chosen on --data's {chose} samples and decided on --val-data's "
                     f"{data.reader(data.config.val_data).num_samples}")
        log.warning(note)
        state.notes.append(note)
        # --time-budget holds here too, as for --one-shot (steps/scan.py): the run's clock started, the timed scan
        # takes its share of the time before the reserve for the steps after (later layers stay dense, said), the
        # timed fit no try after that reserve
        self._clock(state)
        fit = FitBudgetStep(self.budget, timed=True)
        scan = ScanStep(self.scan, budget_pp=self.budget.max_loss, timed=True)
        from onnxprune.converter.auto.decide import BudgetRule

        certifiable = BudgetRule(state.data.calibration, self.budget.max_loss).uncertifiable() is None
        for step in ((scan, fit, PruneStep()) if certifiable else (fit, PruneStep())):  # the fit says why not
            step.run(state)

    @staticmethod
    def _chooser(state: RunState, train):
        """The evaluator the one-shot start is chosen on, when not the decision set: on small data (the split where
        every 4th sample trains, steps/data.py), the training part. The sensitivity scan and the fit try many
        allocations and keep the most pruned that fits, so on the set that chose it a start looks better than it
        is, and the rule (loss + 1 SE, Wilson's bound for a share of changed samples) does not allow for that
        choice. Measured with labels (helper sweep2, sklearn digits, 400 labelled samples, `--max-loss 1
        --time-budget 3m`): torchvision mobilenet_v3_small's start, chosen and judged on the 300 decision samples,
        was judged 0.00 pp (limit 0.06) and lost 2.8 pp of held-out accuracy. Label-free (helper sweep3, 200
        calibration images, 150 deciding): a timm efficientnet_b0 start changed 0 of 150 decision predictions and
        2.0% of 2,000 held-out ones; a ViT 1.55%, an onnxruntime-optimised efficientnet 1.45%: needing no changed
        sample on the set that chose the start does not protect it from that choice. Labelled runs retrain by
        distillation alone (AutoData.train_on_labels, converter/auto/hyper.py "loss")."""
        if not state.data.trains_on_every:
            return None
        return state.data.choosing

    def settings(self) -> dict:
        """`--plan` showed `time_budget = None` where the run takes 15 minutes: the bound it will keep, in seconds."""
        return {**super().settings(), "time_budget_seconds": self._time_budget()}

    def _time_budget(self) -> float:
        from onnxprune.converter.auto import parse_duration
        from onnxprune.converter.auto.config import DEFAULT_TIME_BUDGET

        return parse_duration(self.config.time_budget) if self.config.time_budget else DEFAULT_TIME_BUDGET

    def _clock(self, state: RunState):
        """The run's clock for --time-budget (converter.auto.timing); its deadline becomes the run's."""
        from onnxprune.converter.auto.timing import run_clock

        clock = state.clock = run_clock(state, self._time_budget())
        state.deadline = clock.deadline
        return clock
