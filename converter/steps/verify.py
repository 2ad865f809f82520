"""Verification and measurement: the written model must compute what the dense oracle computes, and the metric of
the input and the output model is measured on the user's data."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from onnxprune.converter.steps.base import RunState, Step, StepConfig, register_step
from onnxprune.converter.steps.data import draws_random_inputs
from onnxprune.errors import ConfigError, ParityError, debugging

log = logging.getLogger(__name__)


@dataclass
class VerifyConfig(StepConfig):
    verify_batches: int = 4  # batches of --data the parity check runs (seeded random inputs without data)

    def validate(self) -> None:
        if self.verify_batches < 1:
            raise ConfigError(f"verify_batches {self.verify_batches} must be >= 1.")


@register_step("verify")
class VerifyStep(Step):
    """onnxruntime parity: the encoded model against the dense model with the same weights."""

    main_only = True
    needs = ("final", "pruned")
    gives = ("parity",)

    def __init__(self, config: VerifyConfig, data, encode: Step | None = None):
        super().__init__(config)
        self.config, self.data_config = config, data
        self.encode = encode  # the plan's encode step: run again on the unshrunk model when the shrunk one differs

    def run(self, state: RunState) -> None:
        from onnxprune.converter.verify import check_parity

        feeds = self._feeds(state)
        random = state.data is None or draws_random_inputs(state.data.config)
        if feeds and not random and state.clock is not None:  # --time-budget: the batches that fit, at least one
            from onnxprune.converter.auto.timing import parity_batches

            keep = (VERIFY_SESSIONS + REST_LOADS) * state.seconds.get("load", 0.0)
            n = parity_batches(state.deadline, state.clock.after, len(feeds), keep=keep)
            if n < len(feeds):
                state.notes.append(f"time budget: verification ran {n} of its {len(feeds)} batches of data (the "
                                   "time left in --time-budget; the load rose after the search)")
                feeds = feeds[:n]
        source = "random" if random else "data"
        try:
            state.parity = check_parity(state.final, state.pruned, feeds, source=source)
        except ParityError as exc:
            if debugging() or not self._unshrink(state):  # --debug, -vv: stop and say it
                raise
            state.parity = check_parity(state.final, state.pruned, feeds, source=source)  # a second error: raised
            state.prune.notes.append(f"dead-neuron removal was undone, an onnxprune defect: with neurons removed, "
                                     f"{str(exc).split('; ')[0]}; the pruned weights are written with every neuron "
                                     "kept (as --no-neurons does), and they match; rerun with --debug to stop there, "
                                     "and please report it")

    def _unshrink(self, state: RunState) -> bool:
        """Encode the pruned model again without the shrink (its masks and notes as before it), when the shrink
        removed something: a channel rule's defect costs the removal, not the run. False when there is no shrink
        to undo (the parity error is then the encoding's or the runtime's)."""
        if self.encode is None or state.unshrunk is None or not (state.neurons or {}).get("removed"):
            return False
        masks, notes = state.unshrunk
        state.prune.masks, state.prune.notes[notes:] = masks, []
        state.shrunk, state.neurons, state.slices, state.unshrunk = state.pruned, None, [], None
        self.encode.run(state)
        return True

    def _feeds(self, state: RunState):
        return parity_feeds(state, self.config.verify_batches, self.data_config.input_shapes)


def parity_feeds(state: RunState, batches: int, input_shapes=None):
    """The user's data (`batches` of it); without it, seeded random inputs at the run's random shapes (steps.shapes:
    --input-shape and the size chosen for the other symbolic dims), else None: the verifier's own."""
    if state.data is not None:
        return state.data.verification_feeds(batches)
    shapes = state.random_shapes if state.random_shapes is not None else input_shapes
    if not shapes:
        return None
    from onnxprune.calibration.runtime import random_feeds

    return [random_feeds(state.original, seed=s, shapes=shapes) for s in range(min(batches, 3))]


ACTIVATION_BATCHES = 8  # batches Act% per layer reads at most without a deadline (activation_density's default)
ACTIVATION_SAMPLES = 128  # ... and no more whole batches than hold this many samples (at least one): a share of
# nonzeros over 128 samples is information enough, and both passes fetch every activation (optimisations off); the
# 22.6M-parameter encoder's 240 samples (4 batches of 64) took 16 s CPU of a 149 s one-shot run
ACTIVATION_SECONDS = 10.0  # ... and, deadline or not, no batch after the first once the batches read and one more
# at the last one's pace would pass this: on a heavy model Act% cost as much as the measurement itself (VGG16, 17.6
# GMACs a sample: 8 batches of 16 through both models, about 110 s of a 126 s measure step in a 7-minute --one-shot;
# reading one, the step took 26 s)
REST_LOADS = 3.0  # the report and the write after this step, in load steps' seconds
VERIFY_SESSIONS = 3.0  # the parity check's sessions (oracle, written model, its optimised load), in load steps


@register_step("measure")
class MeasureStep(Step):
    """The metric of the input and output model, how far the outputs moved, and Act% per layer."""

    main_only = True
    needs = ("final", "pruned", "original", "inventory", "data")
    gives = ("metrics", "activations")

    def run(self, state: RunState) -> None:
        from onnxprune.converter.steps.budget import input_kept

        t0 = time.perf_counter()
        kept: dict = {}
        same = input_kept(state)
        state.metrics = measure(state.data, state.final, keep=kept, reference=same)
        state.final_outputs = kept.get("calibration")  # the budget check judges this pass
        if same:  # said, so that a figure of exactly no loss is not read as measured on the written file
            state.notes.append(INPUT_KEPT_NOTE)
        if state.data.calibration.constant:  # in the report too, not only on stderr (sweep 16)
            from onnxprune.calibration.metrics import constant_outputs_note

            state.notes.append(getattr(state.data.calibration, "constant_note", None) or constant_outputs_note(False))
        from onnxprune.calibration.activations import activation_densities
        from onnxprune.converter.auto.timing import ACTIVATION_COST, optional_batches

        # Act% per layer is information: under a run's deadline (--time-budget) it reads only the batches that fit,
        # priced first at ACTIVATION_COST scored passes a batch, then at what the last batch took
        data = state.data
        scored = (data.calibration.num_samples or 0) + ((data.evaluation.num_samples or 0)
                                                         if data.config.eval_data is not None else 0)
        per_sample = (time.perf_counter() - t0) / max(scored, 1)
        if same:  # no pass was run: the pace of the input model's own pass
            per_sample = (data.calibration.reference_seconds or 0.0) / max(data.calibration.num_samples or 0, 1)
        per_batch = 1 if getattr(data.calibration.reader, "per_feed", False) else data.batch_size
        most = max(1, min(ACTIVATION_BATCHES, math.ceil(ACTIVATION_SAMPLES / per_batch)))
        keep = REST_LOADS * state.seconds.get("load", 0.0)
        sessions = 2 * state.seconds.get("load", 0.0)  # the two models' probe sessions, built before the first batch
        batches = optional_batches(state.deadline, per_sample * per_batch * ACTIVATION_COST, most,
                                   keep=keep + sessions)
        read, cut, capped = [], [], []

        def more(seconds: float) -> bool:  # another batch of both models, at the last one's pace, fits
            read.append(seconds)
            if len(read) < batches and optional_batches(state.deadline, seconds, 1, keep=keep) == 0:
                cut.append(len(read))
            elif len(read) < batches and sum(read) + seconds > ACTIVATION_SECONDS:
                capped.append(len(read))
            return not cut and not capped

        if batches:
            state.activations = tuple(activation_densities([state.original, state.pruned], state.inventory,
                                                           data.reader(), max_batches=batches, more=more))
        else:
            state.activations = ({}, {})
        if capped:
            log.info("Act%% per layer read %d of %d batches: another would pass its %g s", len(read), batches,
                     ACTIVATION_SECONDS)
        if (batches < most or cut) and state.deadline is not None:
            state.notes.append(f"time budget: Act% per layer read {len(read)} of {most} batches (the time "
                               "left in --time-budget)" if read else
                               "time budget: Act% per layer not measured (no time left in --time-budget)")


def _samples_first(evaluator, value):
    """The headline output's value with its samples on axis 0 (`Evaluator.samples_first`); an output that follows no
    batch as one sample (its whole value; a row output's vector is already one)."""
    from onnxprune.calibration.metrics import as_array

    value = evaluator.samples_first(0, as_array(value), None)[0]
    return value[None] if evaluator.whole(0) and 0 not in evaluator.row_outputs else value


INPUT_KEPT_NOTE = ("the input model was kept: the written model's figures are the input model's own outputs on the "
                   "data (no second pass over it); the parity check compares the written file with the input model")


def measure(data, final, keep: dict | None = None, reference: bool = False) -> dict:
    """On the data the choices were made on, and separately on the held-out data when given (--eval-data). `keep`
    (a dict) receives each set's scored outputs per batch, by the set's key. `reference`: `final` has the input
    model's weights (the input kept), so its outputs are each evaluator's reference, already held: no pass is run
    (real models 44's ISNet, kept unpruned: a 112-page pass of a 160-GMAC model, about 6 minutes, to return it)."""
    from onnxprune.calibration.metrics import output_error

    out = {}
    for key, evaluator in (("calibration", data.calibration), ("evaluation", data.evaluation)):
        if key == "evaluation" and data.config.eval_data is None:
            continue
        # one session, one pass: scored and compared from the same outputs
        held = evaluator.reference_all if reference else None
        outputs = list(held) if held is not None else list(evaluator.run_all(final))
        if keep is not None:
            keep[key] = outputs
        after = evaluator.score(outputs)
        out[key] = {
            "data": evaluator.reader.description,
            "metric": evaluator.metric,
            "before": evaluator.dense,
            "after": after,
            "loss_pp": (evaluator.dense - after) * 100.0,
            # how far the output model's outputs are from the input model's (the reference)
            # per sample as the metrics count them (a detector's whole [D, 4] per image, not each detection)
            "output_error": output_error([_samples_first(evaluator, b[0]) for b in outputs],
                                         [_samples_first(evaluator, r) for r in evaluator.reference]),
            "outputs": dict(evaluator.last),  # per scored output: metric, before, after, loss_pp, one_pp
            "headline": evaluator.output,  # the output output_error compares (the first scored one)
        }
    headline = out.get("evaluation", out["calibration"])
    return {**headline, "sets": out}
