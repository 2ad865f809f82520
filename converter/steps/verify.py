"""Verification and measurement: the written model must compute what the dense oracle computes, and the metric of
the input and the output model is measured on the user's data."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import onnx

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


@register_step("read-check")
class ReadCheckStep(Step):
    """The model as read (the load passes' rewrite, every later step's reference) against the input as given."""

    main_only = True
    needs = ("original", "loaded")
    gives = ("read_parity",)
    optional = ("read_parity",)  # nothing rewritten, no rows to run, or the input as given too big to hold twice

    def __init__(self, data):
        super().__init__()
        self.data_config = data

    def run(self, state: RunState) -> None:
        from onnxprune.converter.verify import check_read

        given = _given(state)
        if given is None:
            return
        random = state.data is None or draws_random_inputs(state.data.config)
        if random:
            from onnxprune.converter.verify import _refuse_huge_inputs
            from onnxprune.errors import ModelError

            try:  # inputs too big to draw: the parity check refuses them, in its words, before drawing any
                _refuse_huge_inputs(state.original)
            except ModelError:
                return
        feeds = parity_feeds(state, 1, self.data_config.input_shapes)
        if not feeds:  # no data and no shapes chosen: the verifier's own random inputs (check_parity's)
            from onnxprune.calibration.runtime import random_feeds

            try:
                feeds = [random_feeds(state.original, seed=0)]
            except Exception:  # noqa: BLE001 - inputs no random draw can fill: the parity check says so later
                return
        feeds = [_read_rows(state.original, feed) for feed in feeds[:1]]
        state.read_parity = check_read(given, state.original, feeds, source="random" if random else "data")


READ_BYTES = 1 << 30  # an input model past this is not held a second time for the read check
READ_COPIES = 3  # ... nor one whose copy and two sessions (the input's, the read model's) pass half the memory free


def _given(state: RunState):
    """The input model as given, beside the model as read, or None where the load passes did not run (a ModelProto
    used as it is) or the file is too big to hold twice (READ_BYTES, or its copies past half the memory free)."""
    from onnxprune.calibration.runtime import available_memory

    loaded = state.loaded
    if loaded is None or loaded.model is state.source or (loaded.file_size or 0) > READ_BYTES:
        return None
    free = available_memory()
    if free is not None and READ_COPIES * (loaded.file_size or 0) > free // 2:
        log.info("read check skipped: the input model held again beside its two sessions would pass half of the "
                 "memory free")
        return None
    if isinstance(state.source, onnx.ModelProto):
        return state.source
    try:
        return onnx.load(str(loaded.path))
    except Exception:  # noqa: BLE001 - read once already: a file changed under the run is not this check's to say
        return None


def _read_rows(model: onnx.ModelProto, feed: dict) -> dict:
    """A feed's first READ_ROWS rows, where its arrays share a first axis that is no time axis; else all of it."""
    from onnxprune.calibration.feeds import time_major_inputs
    from onnxprune.calibration.metrics import split_batch
    from onnxprune.converter.verify import READ_ROWS

    if time_major_inputs(model):
        return feed
    return split_batch(feed, None, READ_ROWS)[0][0]


@register_step("measure")
class MeasureStep(Step):
    """The metric of the input and output model, how far the outputs moved, and Act% per layer."""

    main_only = True
    needs = ("final", "pruned", "original", "inventory", "data")
    gives = ("metrics", "activations", "carried")
    optional = ("carried",)  # only a model that feeds a state back, on data read a feed at a time

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
        from onnxprune.calibration.metrics import threshold_note

        at = threshold_note(state.data.calibration.plan, getattr(state.data.calibration, "auto_chosen", ()))
        if at:
            state.notes.append(at)
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

        try:
            carried_check(state, keep=keep)
        except Exception as exc:  # noqa: BLE001 - a measurement beside the run's: said, never its end (--debug raises)
            if debugging():
                raise
            log.warning("the carried-state check (the model run as a stream) failed and was left out: %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
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


CARRIED_SECONDS = 10.0  # the carried-state check's passes (CARRIED_PASSES, DECODED_PASSES) stop reading feeds once
# they would pass this, deadline or not: the feeds of streaming models are small (silero VAD's 803 chunks: about 1.5 s
# of the measure step), but a feed may be a whole utterance


def carried_check(state: RunState, keep: float = 0.0) -> None:
    """A model that feeds a state back (calibration.carried.state_pairs), with data read a feed at a time, is run
    as a stream runs it over the feeds of --eval-data, else of --data, that follow one another (each recorded with
    the state the call before gave: calibration.carried.follows), each model reading its own state: the figures go
    to `state.carried` (report.json's "carried") and a note, which says when they are over --max-loss. Where the run
    was judged one call at a time from each feed's recorded state (no budget, --data's calls following none, a
    decoder: `streamed_decisions` did not apply), this says what streaming adds. Data whose feeds do not follow one
    another gets a note saying that nothing was measured streamed."""
    from onnxprune.calibration.carried import (carried_run, declared_feedback, decoded_run, follows, streams,
                                              token_pairs, token_view)
    from onnxprune.calibration.metrics import Evaluator
    from onnxprune.calibration.readers import open_data
    from onnxprune.calibration.runtime import make_session, output_names
    from onnxprune.converter.auto.timing import optional_batches
    from onnxprune.converter.steps.budget import input_kept

    data = state.data
    given = data.config.eval_data is not None  # decoded on --eval-data: text of the user's choosing (decoded_note)
    reader = data.evaluation.reader if given else data.reader()
    shared = getattr(reader, "shared_inputs", ())  # a flag of one value a file: a folder may still be the calls
    if input_kept(state) or (getattr(reader, "one_sample_feeds", False) and not shared):
        return
    dense = make_session(state.original)
    names = output_names(state.original)
    inputs = {i.name for i in dense.get_inputs()}
    source = _calls_of(reader, data.config.eval_data if data.config.eval_data is not None else data.config.data,
                       inputs)
    if source is None:
        return
    calls, rows, total = source
    seconds = CARRIED_SECONDS
    if state.deadline is not None:
        seconds = min(seconds, optional_batches(state.deadline, 1.0, 10 ** 6, keep=keep))
    declared = declared_feedback(state.original)
    passes = [CARRIED_PASSES + (DECODED_PASSES if declared["tokens"] or declared["one_hot"] else 0)]

    def fits(raw: list, outs: list, pairs: dict, spent: float) -> bool:  # another feed's passes
        if passes[0] == CARRIED_PASSES and pairs and len(raw) >= 2 and token_pairs(outs[-2],
                                                                                   token_view(raw[-1], pairs)):
            passes[0] += DECODED_PASSES  # decoded too
        return passes[0] * spent * (len(raw) + 1) / len(raw) <= seconds

    raw, outs, pairs, stopped = _read_calls(calls, calls is reader, dense, names, inputs, fits)
    if not pairs:
        _no_calls_note(state, reader.description, len(raw), total)
        return
    after = [k > 0 and follows(outs[k - 1], raw[k], pairs) for k in range(len(raw))]
    tokens = _fed_back_tokens(raw, outs, after, pairs)
    kept = streams(after)
    if not kept and stopped and (total is None or len(raw) < total):  # too few read to say the feeds follow none
        state.notes.append(f"time budget: the carried-state check (the model run as a stream, feeding back "
                           f"{_pairs_words(pairs)}) read {len(raw):,} feed(s) in the time left, too few to find a "
                           "stream: nothing was measured streamed")
        return
    if not kept:
        state.notes.append(f"carried state: the model feeds back {_pairs_words(pairs)}, but no feed of "
                           f"{reader.description} holds the state the call before gave{_read_of(len(raw), total)}, so "
                           "every figure is one call at a time from each feed's recorded state; to measure it "
                           "streamed, record consecutive calls of a stream, one feed a file in order")
        return
    feeds = [raw[k] for k in kept]
    inside = set(kept)
    chained = [after[k] and (k - 1) in inside for k in kept]
    budget = getattr(getattr(state.config, "budget", None), "max_loss", None)
    written = make_session(state.final)
    if all(i == o for i, o in pairs.items()):  # a context that grows carries no state: its stream is its decode
        if tokens:
            state.carried = {"pairs": dict(pairs), "feeds": len(feeds), "streams": len(feeds) - sum(chained),
                             "read": len(raw), "of": total, "data": reader.description, "over": [], "eval": given,
                             "decoded": {"fed_back": dict(tokens), **decoded_run(written, feeds, pairs, tokens, chained,
                                                                                 [outs[k] for k in kept])}}
            state.notes.append(decoded_note(state.carried, budget))
        return
    ev = Evaluator(open_data(feeds, state.original, batch_size=rows, warn=False), data.config.metric,
                   reference_model=state.original, quiet=True, budget=data.budget, output_budgets=data.output_budgets)
    wanted = [n or names[0] for n in ev.plan]
    one_call = (ev.dense - ev.score(carried_run(written, feeds, pairs, wanted, [False] * len(feeds)))) * 100.0
    one = {n: f.get("loss_pp") for n, f in ev.last.items()}
    streamed = ev.score(carried_run(written, feeds, pairs, wanted, chained))
    state.carried = {"pairs": dict(pairs), "feeds": len(feeds), "streams": len(feeds) - sum(chained),
                     "read": len(raw), "of": total, "data": reader.description, "eval": given,
                     "loss_pp": (ev.dense - streamed) * 100.0, "one_call_loss_pp": one_call,
                     "outputs": dict(ev.last), "one_call": one}
    state.carried["over"] = streamed_over(state.carried, budget)  # the budget line says them beside "met"
    state.notes.append(carried_note(state.carried, budget))
    if tokens:
        decoded = decoded_run(written, feeds, pairs, tokens, chained, [outs[k] for k in kept])
        state.carried["decoded"] = {"fed_back": dict(tokens), **decoded}
        state.notes.append(decoded_note(state.carried, budget))


DECODED_KINDS = frozenset({"agreement", "seq_agreement", "prob"})  # metrics whose per-call loss counts a changed
# pick (the argmax over the last axis) in full: a share of calls whose pick changes bounds the decodes that change
# ... and of those, the term columns that count it where not all do: `prob`'s class change, not its probability
# change (held to --max-loss as any output's: a decode changes only where a pick does)
PICK_PARTS = {"prob": (0,)}


def decoded_budget(state: RunState) -> None:
    """A greedy decoder's per-call budget divided by the length of its recorded decodes, before the search.

    Where the calls of --data decode (read in order, a state or cache fed back and a token that is the argmax of an
    output of the call before: the carried check's reading, `carried_check`, here on the input model alone), a decode
    of L kept picks changes where some call, on the input model's history up to it, first changes its pick: the share
    of decodes that change is at most about L times the share of calls whose pick changes. A user who asks for
    --max-loss B of a decoder's output means its decodes (decoders 54: within 1 pp a call, 3.9-24.4% of held-out
    decodes changed), so the fed-back output is judged at B / L a call (its own budget, `Data.own_budget`: the same
    rule, Wilson's bound on the decision part), unless --max-loss OUTPUT=L gives it one, and a note says so. Its
    metric must count a changed pick (DECODED_KINDS); another is said and left at B. L is the mean over the recorded
    decodes (`calibration.carried.kept_picks`): longer decodes change more. Whatever the budget's form (its own
    --max-loss OUTPUT=L too), the data's split keeps each decode on one side and its deciding part is grown to
    certify the tightest per-call budget of a fed-back output that counts picks (`Data.by_decode`: stacked files by
    decode, feeds used as they are by stream, counted by their rows); calls the reading's guard left are split by
    what the calls read show, and said (`_unread_calls`). A decoder without a cache, fed its whole context each call
    (`calibration.carried.context_pairs`: the call before's with its pick behind it), is read so too, its fed-back
    output scored on its last position, the pick (`Data.last_position`), as is a KV decoder's where a call is fed
    several tokens at once (its prompt: `calibration.carried.prompt_positions`); where the calls show no decode, a
    model that looks like a causal language model gets a note on how to record them (`causal_lm_note`, the data
    step)."""
    from onnxprune.calibration.carried import follows, kept_picks, prompt_positions, streams, token_view

    data = state.data
    if data is None or not (data.budget or 0) > 0 or draws_random_inputs(data.config) \
            or not _may_take_a_token(state.original):
        return
    reader = data.reader()
    if getattr(reader, "one_sample_feeds", False) and not getattr(reader, "shared_inputs", ()):
        return
    reading = _data_calls(state, reader)
    if reading is None:
        return
    calls, rows, total, stream = reading.calls, reading.rows, reading.total, reading.stream
    raw, outs, pairs, stopped = reading.raw, reading.outs, reading.pairs, reading.stopped
    if not pairs:
        return
    after = [k > 0 and follows(outs[k - 1], raw[k], pairs) for k in range(len(raw))]
    read, every_call = list(raw), list(after)  # every call read, for the split
    if stopped:  # the last stream read may be cut short: its decodes left out of L
        last = max((k for k in range(len(after)) if not after[k]), default=0)
        raw, outs, after = raw[:last], outs[:last], after[:last]
    tokens = _fed_back_tokens(raw, outs, after, pairs)
    kept = streams(after)
    if not tokens or not kept:
        return
    inside = set(kept)
    chained = [after[k] and (k - 1) in inside for k in kept]
    sequences, picks = kept_picks([token_view(raw[k], pairs) for k in kept], tokens, chained,
                                  [outs[k] for k in kept])
    if not sequences or not picks:
        return
    length, budget = max(1.0, picks / sequences), float(data.budget)
    plan = data.calibration.plan
    judged, said = {}, []
    grown = [o for i, o in tokens.items() if pairs.get(i) == i]
    prompted = [o for o in prompt_positions([token_view(f, pairs) for f in raw], outs, tokens) if o not in grown]
    for o in grown + prompted:  # its other positions repeat earlier calls' picks or read the prompt: no decode
        data.last_position(o)  # keeps them
    for i, o in tokens.items():
        if o in data.output_budgets:
            said.append(f"'{o}' keeps its own --max-loss {o}={data.output_budgets[o]:g}, judged one call at a time")
        elif plan.get(o) not in DECODED_KINDS:
            said.append(f"'{o}' is judged by {plan.get(o)}, which does not count a changed pick, so its budget stays "
                        f"{budget:g} a call and bounds no decode")
        else:
            judged[o] = budget / length  # a decode changes only where a pick does: `prob`'s probability part stays
            data.own_budget(o, judged[o], f"--max-loss {budget:g} over decodes of {length:.1f} picks, the note on "
                                          "greedy decoding", PICK_PARTS.get(plan.get(o)))
    # the split by decode, whatever the budget's form (its own --max-loss OUTPUT=L too): files of stacked rows a
    # decode a row, feeds used as is a stream a group; grown to certify the tightest per-call budget that counts picks
    split, per_feed = None, bool(getattr(reader, "per_feed", False))
    if (calls is not reader and not per_feed) or (calls is reader and per_feed):
        unread = ""
        token = next(iter(tokens))
        sizes = [_rows_of(f, token) for f in read]
        if stopped:
            more, more_sizes, unread = _unread_calls(stream, read, every_call, pairs, total, token)
            every_call, sizes = every_call + more, sizes + more_sizes
        certify = [data.output_budgets[o] for o in set(tokens.values())
                   if o in data.output_budgets and plan.get(o) in DECODED_KINDS]
        target = _to_certify(min(certify)) if certify else 0
        if per_feed:
            split = data.by_decode(_decodes(every_call, 1), target, unit="stream", sizes=np.asarray(sizes))
        else:
            split = data.by_decode(_decodes(every_call, rows), target)
        split = f"{split}; {unread}" if split and unread else split
    state.decoded_budget = {"fed_back": dict(tokens), "sequences": sequences, "picks": picks, "length": length,
                            "budgets": judged, "split": split}
    text = (f"greedy decoding: {_fed_words(tokens, pairs)}, and the calls of "
            f"{str(reader.description).split(':', 1)[0]} decode {sequences:,} sequences of {length:.1f} kept picks on "
            "average; a decode changes where a call on the input model's history first changes its pick, so the share "
            "of decodes that change is at most about "
            f"{length:.1f} times the share of calls whose pick changes")
    if judged:
        text += ("; " + ", ".join(f"'{o}' is judged at --max-loss {budget:g} / {length:.1f} = {pp:.3g} pp a call"
                                  + (f" (its picks; its probability change at {budget:g} pp)"
                                     if plan.get(o) in PICK_PARTS else "")
                                  for o, pp in judged.items())
                 + f", so that about {budget:g}% of decodes of that length, of prompts like those recorded, may "
                 "change (--max-loss "
                 + " ".join(f"{o}={budget:g}" for o in judged) + " judges it one call at a time instead)")
    if grown:
        said.append(", ".join(f"'{o}'" for o in grown) + " is scored on its last position only, the pick behind the "
                    "next call's context (its other positions repeat the calls before's picks or read the prompt)")
    if prompted:
        said.append(", ".join(f"'{o}'" for o in prompted) + " is scored on its last position only, the pick the next "
                    "call is fed (a call fed several tokens, a prompt's, gives one position a token; the others read "
                    "the prompt, and no decode keeps them)")
    if split:
        said.append(f"the data's decision part is {split}")
    state.notes.append("; ".join([text] + said))
    log.info(state.notes[-1])


def streamed_decisions(state: RunState) -> None:
    """A model that feeds a state back, whose --data feeds are the calls of streams (each holding the state the
    call before gave: the carried check's reading, `carried_check`, here on the input model alone), is judged as it
    runs, before the search: every evaluator of the run runs a feed that follows another on the state the model it
    judges gave there (calibration.metrics.Evaluator `carried`), and the split keeps each stream's calls on one side
    (`Data.by_decode`, unit "stream"), so the decisions, the final figure and the budget line are the stream's. One
    call at a time, each from its recorded state, a pruned model's error carried in the state is never seen: the
    builder's stream moved its state 0.6 pp a call and several pp streamed (tests/calibration/test_carried_state.py).
    A greedy decoder's calls are judged by `decoded_budget` instead; a read cut short by the time guard keeps the
    split by feed and says so (the evaluators still chain the feeds that follow one another). Only a model that
    declares what it feeds back (`calibration.carried.declared_feedback`: a state, a cache, a recurrent node's
    states) has its data read here."""
    from onnxprune.calibration.carried import declared_feedback, follows, streams

    declared = declared_feedback(state.original)  # only a model that declares a state is read here (inspect's facts)
    if not any(declared[k] for k in ("states", "caches", "shaped", "cells")):
        return
    data = state.data
    reader = data.reader()
    if getattr(reader, "shared_inputs", ()) or getattr(reader, "one_sample_feeds", False):
        return
    reading = _data_calls(state, reader)
    if reading is None or not reading.pairs:
        return
    calls, raw, outs, pairs, stopped = reading.calls, reading.raw, reading.outs, reading.pairs, reading.stopped
    after = [k > 0 and follows(outs[k - 1], raw[k], pairs) for k in range(len(raw))]
    kept = streams(after)
    if not kept or _fed_back_tokens(raw, outs, after):
        return
    data.carried, data.calls = dict(pairs), calls is not reader  # a folder of stacked files: read a file a call
    data._calib = None  # built before the state was known: built again to run streams
    reader = data.reader()
    split = None if stopped else data.by_decode(_decodes(after, 1), 0, unit="stream")
    count = sum(not after[k] for k in kept)
    text = (f"carried state: the feeds of {str(reader.description).split(':', 1)[0]} are the calls of streams, "
            f"feeding back {_pairs_words(pairs)} ({len(kept):,} of {len(raw):,} feeds in {count:,} stream(s)"
            f"{_read_of(len(raw), reader.num_samples)}): every figure is the streams' as they run, each model on its "
            "own state from the call before")
    if split:
        text += f"; the data's decision part is {split}"
    elif stopped:
        text += "; the split is by feed (the feeds were read only in part in the time)"
    state.streamed = {"pairs": dict(pairs), "feeds": len(raw), "in_streams": len(kept), "split": split}
    state.notes.append(text)
    log.info(text)


@dataclass
class _Reading:
    """--data's calls as `_data_calls` read them: their source (`reader` itself, or a folder's files), rows a call,
    calls in all, the iterator read on past the guard, and `_read_calls`' feeds, outputs, pairs and stop."""

    calls: object
    rows: int
    total: int | None
    stream: object
    raw: list
    outs: list
    pairs: dict
    stopped: bool


def _data_calls(state: RunState, reader) -> _Reading | None:
    """--data's calls (`_calls_of`) read through the input model before the search, for `decoded_budget` and
    `streamed_decisions`, within CARRIED_SECONDS for one pass, reading the files too (the calls are small, the model
    often cheap); None where --data holds no calls."""
    from onnxprune.calibration.runtime import make_session, output_names

    stored = {t.name for t in state.original.graph.initializer}
    source = _calls_of(reader, state.data.config.data,
                       {i.name for i in state.original.graph.input if i.name not in stored})  # before any session
    if source is None:
        return None
    calls, rows, total = source
    dense = make_session(state.original)
    names = output_names(state.original)
    start = time.perf_counter()

    def fits(raw: list, outs: list, pairs: dict, spent: float) -> bool:
        return (time.perf_counter() - start) * (len(raw) + 1) / len(raw) <= CARRIED_SECONDS

    stream = iter(calls)  # the calls past the guard are read on from here (decoded_budget's `_unread_calls`)
    raw, outs, pairs, stopped = _read_calls(stream, calls is reader, dense, names,
                                            {i.name for i in dense.get_inputs()}, fits)
    return _Reading(calls, rows, total, stream, raw, outs, pairs, stopped)


def _calls_of(reader, source, inputs: set[str]) -> tuple | None:
    """(calls, rows a call, calls in all) that `reader` of `source` holds: its feeds when it reads them one at a
    time, else a folder's files that are a decoder's calls (calibration.carried.call_files, a flag of one value a
    file beside them too); None where the files are no calls. `inputs`: the model's inputs."""
    from onnxprune.calibration.carried import call_files, file_calls

    shared = getattr(reader, "shared_inputs", ())
    if getattr(reader, "per_feed", False) and not shared:  # a folder of stacked calls read a file a feed: its rows
        return reader, getattr(reader, "call_rows", 1), reader.num_samples
    found = call_files(source, inputs, shared)  # stacked samples: a folder's files may be a decoder's calls
    if found is None:
        return None
    return file_calls(found[0]), found[1], len(found[0])


def _read_calls(calls, as_read: bool, dense, names: list[str], inputs: set[str], fits) -> tuple:
    """`calls` run through the input model's session `dense` in order: (the feeds, their outputs {name: value}, the
    state pairs, whether `fits` stopped the reading). The pairs are named ends of one shape in a call, else (a cache
    that grows) an output the next call holds, else (a decoder without a cache) an input that holds the call before's
    with its pick behind it (`context_pairs`: the outputs then keep each call's context, `with_context`); no pair
    within VALUE_LOOKS feeds read as they are (a folder's files of stacked calls: 2) ends the reading with none.
    `fits(feeds, outputs, pairs, seconds the model ran)`: whether another feed fits, asked after each."""
    from onnxprune.calibration.carried import context_pairs, state_pairs, value_pairs, with_context

    raw, outs, pairs, spent = [], [], {}, 0.0
    for feed in calls:
        feed = {k: v for k, v in feed.items() if k in inputs}
        t0 = time.perf_counter()
        out = dict(zip(names, dense.run(names, feed)))
        spent += time.perf_counter() - t0
        raw.append(feed)
        outs.append(with_context(out, feed, pairs))
        if not pairs:
            pairs = state_pairs(feed, out) if len(raw) == 1 else (value_pairs(outs[-2], feed)
                                                                  or context_pairs(raw[-2], outs[-2], feed))
            if any(i == o for i, o in pairs.items()):  # a context that grows: every call's kept with its outputs
                outs[:] = [with_context(o, f, pairs) for f, o in zip(raw, outs)]
            if not pairs and len(raw) >= (VALUE_LOOKS if as_read else 2):
                return raw, outs, {}, False
        if not fits(raw, outs, pairs, spent):
            return raw, outs, pairs, True
    return raw, outs, pairs, False


def _decodes(after: list[bool], rows: int) -> np.ndarray:
    """Each sample's decode, in the folder reader's order, of call files of `rows` rows each (`after[k]`: file k
    continues file k - 1's decodes): row r of a file of the s-th run of consecutive calls is decode s·rows + r."""
    runs = np.cumsum([not a for a in after]) - 1
    return (np.maximum(runs, 0)[:, None] * rows + np.arange(rows)[None, :]).reshape(-1)


def _rows_of(feed: dict, token: str) -> int:
    """A call's rows: the decodes its fed-back token steps (its first axis)."""
    shape = np.shape(feed.get(token))
    return int(shape[0]) if shape else 1


def _fresh(feed: dict, pairs: dict[str, str]) -> bool:
    """Whether a fed-back input of the call is empty or all zeros: an empty past, a zero initial state."""
    return any(not np.asarray(feed.get(i)).size or not np.any(feed.get(i)) for i in pairs)


def _starts(before: dict | None, feed: dict, pairs: dict[str, str]) -> bool:
    """Whether a call starts a stream by its inputs alone: a fed-back input empty or all zeros (`_fresh`), or, for
    a context that grows (a pair of an input with itself), one that is not the call before's (`before`, its feed)
    with one token behind it."""
    from onnxprune.calibration.carried import follows, with_context

    grown = {i: o for i, o in pairs.items() if i == o}
    if grown:
        return before is None or not follows(with_context({}, before, grown), feed, grown)
    return _fresh(feed, pairs)


def _unread_calls(stream, read: list, after: list[bool], pairs: dict[str, str], total: int | None,
                  token: str) -> tuple[list[bool], list[int], str]:
    """The calls the reading's time guard left (`stream` goes on past the `read` ones, `after` theirs; `total` in
    all): whether each follows the one before and its rows, and the note's words for what was done. Where the read
    calls show it (a decode starts exactly at each call read whose fed-back input is empty or all zeros, `_fresh`:
    an empty past, a zero initial state, at two starts or more), their inputs alone are read on (no model run) in
    CARRIED_SECONDS, each starting a decode where it is so; the calls still unread are cut in runs of consecutive
    calls RUN_STREAMS streams long, a stream as long as the median of those known whole (start to start; the last one
    may be cut), counted from the last start known, so a decode there has calls on both sides only where its length
    is not the median (the note says how many). A
    context that grows (a pair of an input with itself) starts a decode where it does not grow (`_starts`)."""
    starts = [k for k in range(len(read)) if not after[k]]
    more, sizes = [], []
    if len(starts) >= 2 and all(_starts(read[k - 1] if k else None, read[k], pairs) != after[k]
                                for k in range(len(read))):
        t0, before = time.perf_counter(), read[-1] if read else None
        for feed in stream:
            more.append(not _starts(before, feed, pairs))
            sizes.append(_rows_of(feed, token))
            before = feed
            if time.perf_counter() - t0 > CARRIED_SECONDS:
                break
    fed = " or ".join(f"'{i}'" for i in pairs)
    where = ("is not the call before's with one token behind it" if all(i == o for i, o in pairs.items())
             else "is empty or all zeros")
    marked = (f"the {len(more):,} calls past the {len(read):,} read were not run: a stream starts where {fed} "
              f"{where}, as at the start of each of the {len(starts):,} streams of calls read")
    if total is None:  # a reader that does not count its feeds: the rest by its own index, as before
        return more, sizes, ((f"{marked}; " if more else "") + f"the calls past the {len(read) + len(more):,} read "
                             "in the time are split one at a time (their number is not known)")
    left = total - len(read) - len(more)
    if left <= 0:
        return more, sizes, marked if more else ""
    known = [k for k, a in enumerate(list(after) + more) if not a]  # the streams' starts known
    whole = np.diff(known)  # the streams known whole, start to start (the last one may be cut short)
    length = max(1, int(np.median(whole)) if len(whole) else round(len(read) / len(starts)))
    block = RUN_STREAMS * length
    phase = len(after) + len(more) - known[-1]  # the runs counted from the last start known: on a stream's starts
    mean = int(round(np.mean([_rows_of(f, token) for f in read])))
    words = (f"the {left:,} calls past the {len(read) + len(more):,} read in the time (of {total:,}) were not "
             f"decoded: they go to a side in runs of {block} consecutive calls ({RUN_STREAMS} streams of {length} "
             f"calls, the {'median' if len(whole) else 'mean'} of the streams read, counted from the last stream's "
             "start), so a decode there has calls on both sides only where the streams are not of that length")
    return (more + [(phase + j) % block != 0 for j in range(left)], sizes + [mean] * left,
            f"{marked}; {words}" if more else words)


RUN_STREAMS = 4  # calls the guard left unread go to a side in runs of this many streams of the length read: a run's
# end cuts one stream at most, where runs one stream long drifted against the streams (decoders 56's L1: runs of 19
# calls where the KV GPT's streams were 20 left 103 of 120 streams with calls on both sides)


def _to_certify(budget_pp: float) -> int:
    """The decision samples that certify `budget_pp` with none changed (Wilson's bound at the run's z: the rule's
    `BudgetRule.samples_to_resolve`)."""
    from onnxprune.converter.auto.decide import current_z

    z2 = current_z() ** 2
    return int(math.ceil(100.0 * z2 / budget_pp - z2))


def _may_take_a_token(model) -> bool:
    """Whether some input may be a greedy decoder's fed-back token (`calibration.carried.token_pairs`): an integer
    input of rank 1 or 2, or a float one of rank 2 or 3 whose fixed last axis (2 or more) is some output's (a
    one-hot). Other models are not read for calls before the search (`decoded_budget`)."""
    from onnxprune.calibration.carried import FLOATS, INTEGERS, _declared

    stored = {t.name for t in model.graph.initializer}
    widths = {d[1][-1] for d in (_declared(o) for o in model.graph.output) if d and d[1]}
    for vi in model.graph.input:
        d = None if vi.name in stored else _declared(vi)
        if d is None:
            continue
        if d[0] in INTEGERS and len(d[1]) in (1, 2) or d[0] in FLOATS and len(d[1]) in (2, 3) \
                and isinstance(d[1][-1], int) and d[1][-1] >= 2 and d[1][-1] in widths:
            return True
    return False


def causal_lm_note(state: RunState) -> None:
    """A note where --data's calls show no greedy decode (`decoded_budget` read none) of a model that looks like a
    causal language model without a cache (`calibration.carried.causal_lm`): its budget holds one call at a time, a
    share of positions whose top-1 changes, while a greedy decode's changes compound; how to record calls so the run
    judges its decodes. Decoders 56: within 1 pp a call, such a GPT changed 18.8% of its held-out decodes."""
    from onnxprune.calibration.carried import causal_lm

    found = causal_lm(state.original)
    if found is None:
        return
    i, o = found
    state.notes.append(f"greedy decoding: '{i}' [N, T] in and '{o}' [N, T, V] out look like a language model fed "
                       "its whole context each call, and no calls of --data decode (none holds the call before's "
                       f"'{i}' with the argmax of '{o}' at its last position behind it), so '{o}' is judged on every "
                       "position as given, one call at a time; if it generates by greedy decoding, each changed pick "
                       "changes every call after it (decoders 56: within 1 pp a call, 18.8% of 32-pick decodes "
                       "changed). To judge its decodes, save the calls a decode makes, one .npz file a call in a "
                       f"folder, in order (the prompt, then each call's '{i}' the one before's with its pick "
                       "appended): the run then holds the last position's pick to --max-loss / the decodes' length")


def _no_calls_note(state: RunState, data: str, read: int, total: int | None) -> None:
    """A note where the model declares a cache that grows (calibration.carried.declared_feedback: a KV cache, whose
    two ends no name rule pairs and whose shapes differ in a call) but no feed read holds an output of the call before
    (calls saved out of order): nothing was measured decoded or streamed, and how to record calls so it is. Decoders
    54's GPT on its calls shuffled said nothing (L2)."""
    from onnxprune.calibration.carried import declared_feedback, feedback_words

    found, data = declared_feedback(state.original), str(data).split(":", 1)[0]
    if not found["caches"] and not found["shaped"]:
        return
    state.notes.append(f"carried state: the model declares that it feeds back {feedback_words(found)}, but no feed of "
                       f"{data} holds an output of the call before (of {read:,} read{_of(total)}), so "
                       "nothing was measured as it decodes and every figure is one call at a time from each feed's "
                       "recorded cache and token; to measure it decoded, record consecutive calls of a few decodes, "
                       "one feed a file in order, each with the cache the call before gave")


VALUE_LOOKS = 8  # the feeds read for a state fed back as it is (value_pairs) before a model is taken for no stream


def _fed_back_tokens(raw: list[dict], outs: list[dict], after: list[bool],
                     pairs: dict[str, str] | None = None) -> dict[str, str]:
    """{input: output} of a greedy decoder's fed-back token (calibration.carried.token_pairs) in at least a quarter
    of the feeds that follow the one before (the others forced: a prompt stepped in) and in two or more; a context
    that grows (`pairs`' input paired with itself) is read by its last column (`token_view`)."""
    from onnxprune.calibration.carried import token_pairs, token_view

    chained = [k for k in range(1, len(raw)) if after[k]]
    votes: dict[tuple[str, str], int] = {}
    for k in chained:
        for pair in token_pairs(outs[k - 1], token_view(raw[k], pairs or {})).items():
            votes[pair] = votes.get(pair, 0) + 1
    found = [(i, o) for (i, o), v in votes.items() if v >= 2 and 4 * v >= len(chained)]
    return {i: o for i, o in found if [j for j, _ in found].count(i) == 1}


def _fed_words(tokens: dict[str, str], pairs: dict[str, str]) -> str:
    """What each fed-back token holds, in words: the argmax of an output of the call before, or, for a context that
    grows (a pair of an input with itself), the call before's context with that argmax behind it."""
    return ", ".join(f"'{i}' holds the call before's '{i}' with the argmax of '{o}' at its last position behind it"
                     if pairs.get(i) == i else f"'{i}' holds the argmax of '{o}' of the call before"
                     for i, o in tokens.items())


def decoded_note(carried: dict, budget: float | None) -> str:
    """The greedy decoding check in one note: which token is fed back, the decoded sequences and tokens that change
    with the written model's own picks fed back, beside the picks it changes one call at a time."""
    d = carried["decoded"]
    fed = _fed_words(d["fed_back"], carried["pairs"])
    share = 100.0 * d["changed"] / max(d["sequences"], 1)
    tok = 100.0 * d["tokens_changed"] / max(d["tokens"], 1)
    one = 100.0 * d["one_call_changed"] / max(d["tokens"], 1)
    own = ("its own context grown by its own picks" if all(i == o for i, o in carried["pairs"].items())
           else "its own picks (and states)")
    text = (f"greedy decoding: {fed}; fed {own}, the written model decodes "
            f"{d['changed']:,} of {d['sequences']:,} sequences differently ({share:.1f}%), {tok:.2f}% of their "
            f"{d['tokens']:,} tokens, where one call at a time from the input model's tokens it changes {one:.2f}% of "
            "them: every figure above is one call at a time, and a changed token changes every call after it")
    data = str(carried.get("data", "")).split(":", 1)[0]
    if carried.get("eval"):
        text += f"; these are --eval-data's decodes ({data}), which no decision of the run read"
    elif "eval" in carried:
        text += (f"; these are --data's own decodes ({data}), and they hold for prompts like those recorded: on other "
                 "text a call's pick may change more often, and a decode by as many times more as it keeps picks "
                 "(--eval-data of calls recorded so on the text it will decode has them decoded here instead)")
    if budget is not None and share > budget:
        outs = " ".join(f"{o}=L" for o in dict.fromkeys(d["fed_back"].values()))
        text += (f"; {share:.1f}% of sequences is more than --max-loss {budget:g} as a share: if decoded sequences "
                 f"must hold, a smaller budget on what is fed back (`--max-loss {outs}`) leaves room for that")
    return text


DECODED_PASSES = 2  # with a token fed back (the model declares one or a call holds one), the written model once more
# one call at a time and decoded: decoders 54's L5, the guard counted four passes where six ran
CARRIED_PASSES = 4  # the input model over the feeds (to find the streams), its scoring pass, the written model one
# call at a time and streamed


def _of(total: int | None) -> str:
    return f" of {total:,}" if total else ""


def _read_of(read: int, total: int | None) -> str:
    return f" (the first {read:,} of {total:,} read in its time)" if total and total > read else ""


def _pairs_words(pairs: dict[str, str]) -> str:
    return ", ".join(f"'{o}' as '{i}'" for i, o in pairs.items())


def streamed_over(carried: dict, budget: float | None) -> list[str]:
    """The outputs over --max-loss (or their own budget) streamed, in the carried-state check's figures."""
    if budget is None:
        return []
    return [n for n, f in carried["outputs"].items() if (f.get("loss_pp") or 0.0) > f.get("budget_pp", budget) + 1e-9]


def carried_note(carried: dict, budget: float | None) -> str:
    """The carried-state check in one note: what was fed back, on which feeds, each output's loss streamed beside
    its loss one call at a time on the same feeds, and, over --max-loss, which outputs and what that means."""
    figures = []
    for name, f in carried["outputs"].items():
        one = carried["one_call"].get(name)
        figures.append(f"'{name}' {f['loss_pp']:+.2f} pp" + ("" if one is None else f" ({one:+.2f} one call at a "
                                                               "time)"))
    read = _read_of(carried["read"], carried.get("of"))
    data = str(carried["data"]).split(":", 1)[0]
    text = (f"carried state: run as a stream, each model feeding back {_pairs_words(carried['pairs'])} from one call "
            f"to the next, over the {carried['feeds']:,} feeds of {data} that follow one another "
            f"({carried['streams']:,} stream(s){read}): " + ", ".join(figures))
    if budget is None:
        return text
    over = streamed_over(carried, budget)
    if not over:
        return text + f"; within --max-loss {budget:g} streamed too"
    states = set(carried["pairs"].values())
    said = ", ".join(f"'{n}'" for n in over)
    text += (f"; {said} streamed {'is' if len(over) == 1 else 'are'} over --max-loss {budget:g}: the budget is judged "
             "one call at a time from each feed's recorded state, and streamed, the written model's error carried in "
             "its state adds up")
    rest = [n for n in carried["outputs"] if n not in states]
    if set(over) <= states and rest:  # only the state itself: what the stream gives holds
        own = " ".join(f"{n}=L" for n in over)
        return text + (f"; only the state {'is' if len(over) == 1 else 'are'}: "
                       + ", ".join(f"'{n}'" for n in rest) + f" stay{'s' if len(rest) == 1 else ''} within the "
                       f"budget streamed (where the state's error shows); `--max-loss {own}` judges the state by a "
                       "budget of its own")
    worst, one = carried["loss_pp"], carried["one_call_loss_pp"]
    grew = f" ({worst / one:.1f}x here)" if one > 0 and worst > one else ""
    # no figure for the budget to give: rel_l2's variance part is a square and grows faster than the error (the voice
    # filter of real models 49: its mask 0.05% -> 0.15% relative error streamed, its variance part 0.62 -> 4.64 pp)
    return text + f"{grew}; if it runs streamed, a smaller --max-loss leaves room for that"


def _samples_first(evaluator, value):
    """The headline output's value with its samples on axis 0 (`Evaluator.samples_first`); an output that follows no
    batch as one sample (its whole value; a row output's vector is already one)."""
    from onnxprune.calibration.metrics import as_array

    value = evaluator.samples_first(0, as_array(value), None)[0]
    return value[None] if evaluator.whole(0) and 0 not in evaluator.row_outputs else value


INPUT_KEPT_NOTE = ("the input model was kept: the written model's figures are the input model's own outputs on the "
                   "data (no second pass over it); it is written as given, its nodes and weights as they were "
                   "(unless --weight-bits asks for other storage)")


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
