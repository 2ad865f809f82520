"""Hyperparameters from the model and the data: each value comes with the rule that chose it.

Rules (also in the README):
  batch size   the power of two nearest n/200 (n training samples), within [32, 256]: about 200 steps per epoch
               whatever the data size (1,131 digits: 32; 60,000 MNIST: 256).
  loss         labels: cross-entropy with label smoothing 0.1 plus distillation from the input model (weight 0.3,
               T = 2); no labels: distillation alone at T = 1 (the soft targets then carry the gradient scale of
               cross-entropy, so the probed rate means the same thing). Labels on small data (every 4th sample
               trains, converter/steps/data.py) only judge: retraining distils, as without labels (mixup included).
               A few hundred labels teach the input model little and move its predictions: helper sweep2's Keras
               Conv1D+BiLSTM on sklearn digits (100 training, 300 decision samples, --max-loss 1, 3 minutes) kept
               1.9x judged 1.67 pp better on the decision set and lost 1.26 pp on 397 held-out images (4.3% of
               predictions changed; the rounds keep the most pruned candidate the set passes); distilling, 1.3x,
               +0.5 pp held out, 0.5% changed.
  weight decay 1e-4 (L2) on the kept weights.
  learning     probe: each of PROBE_RATES trains PROBE_STEPS steps from the first round's pruned model; the rate
  rate         with the lowest objective on a fixed slice of the training part (not the decision set) wins (streamed
               data, too large for memory or read one complete feed per step: every 5th batch measures, the others
               train, `stream_slices`); when
               every rate of the grid ends above the untrained start's objective, or its smallest rate ends
               lowest (the objective still falling toward smaller rates), LOWER_RATES are tried. Rates
               are tried middle-out and the probe stops once it has used PROBE_SHARE of the time budget (at least
               two rates): a 3-minute search on a loaded machine otherwise spends its rounds on the probe. A few
               steps are timed first (after one untimed step: a first call pays one-time costs), and each rate's
               run is cut (not below MIN_PROBE_STEPS) so that two rates fit that share: at 7.6 s per step (torch's
               CPU half kernels) two rates of 100 steps were 25 minutes.
  round length ROUND_MIN_STEPS optimizer steps or one epoch, whichever is more; an epoch longer than that is cut
               (not below ROUND_MIN_STEPS) so that TARGET_ROUNDS rounds fit the time budget; each round decays
               the rate to 0 on a cosine.
  final polish POLISH_FACTOR rounds' worth of steps at the best masks (cosine), kept only if the decision loss
               does not grow.
  small data   no labels and fewer than FUNCTION_MATCHING training samples in memory (float inputs): mixup pairs
               of training inputs (x = λ·a + (1 − λ)·b, λ uniform, seeded) labelled by the input model's outputs fill
               the training part up to FUNCTION_MATCHING samples ("function matching", Beyer et al. CVPR 2022:
               distillation matches the teacher's function, so it may be queried off the data); the decision set is
               never mixed. 200 samples would otherwise make a 300-step round 48 epochs of the same samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

PROBE_RATES = (0.01, 0.03, 0.003, 0.1, 0.3)  # middle-out: the likeliest first, when time cuts the probe short
# tried after the grid only when every rate of it ended above the untrained start's objective: sweep 7's CNN with a
# linear regression head beside its softmax diverged at every rate of the grid, and trains at these
LOWER_RATES = (0.001, 0.0003)  # also after a grid whose smallest rate ended lowest, while each one lowers it more
PROBE_SHARE = 0.15  # of the time budget, at most, for the probe (after its first two rates)
PROBE_STEPS = 100
TIMING_STEPS = 5  # steps timed before the probe, so that a slow step shortens every rate's run (not only the count)
MIN_PROBE_STEPS = 10  # a rate's run is never cut below this
PROBE_TRAIN = 8192  # samples of the training part the probe trains on
PROBE_EVAL = 2048  # samples of the training part the probe's loss is measured on (disjoint from PROBE_TRAIN)
ROUND_MIN_STEPS = 300
TARGET_ROUNDS = 14
POLISH_FACTOR = 4
MIN_ROUND_STEPS = 50  # a polish shorter than this is skipped
FUNCTION_MATCHING = 2048  # label-free training parts smaller than this are filled up to it with mixup samples
MIXUP_BYTES = 256 << 20  # ... as long as they fit in this much memory
MIXUP_SHARE = 0.1  # ... and the input model labels them in this share of the search's time left


@dataclass
class Choice:
    value: object
    rule: str

    def as_dict(self) -> dict:
        return {"value": self.value, "rule": self.rule}


def batch_size(n: int, override: int | None = None, reader=None) -> Choice:
    """`reader`: streamed training data (TrainData.reader), whose batches are the reader's: one complete feed a step
    when it reads feed by feed."""
    if reader is not None:
        return (Choice(1, "one complete feed per step (the data is read feed by feed)")
                if getattr(reader, "per_feed", False) else
                Choice(reader.batch_size, "the reader's batches (streamed: too large for memory)"))
    if override:
        return Choice(int(override), "given (--train-batch-size)")
    b = int(min(256, max(32, 2 ** round(math.log2(max(n, 1) / 200.0)))))
    return Choice(b, f"power of two nearest n/200 = {n}/200 within [32, 256]")


def loss_mix(has_labels: bool, judged_only: bool = False) -> dict[str, Choice]:
    """`judged_only`: labels given but too few to train on (small data): they judge, retraining distils."""
    if has_labels:
        why = "labels given: cross-entropy (smoothing 0.1) + 0.3 distillation from the input model at T=2"
        return {"loss": Choice("ce+distill", why), "temperature": Choice(2.0, why),
                "distill_weight": Choice(0.3, why), "label_smoothing": Choice(0.1, why)}
    why = ("labels on small data judge only: distillation from the input model alone at T=1" if judged_only else
           "no labels: distillation from the input model alone at T=1")
    return {"loss": Choice("distill", why), "temperature": Choice(1.0, why), "distill_weight": Choice(1.0, why),
            "label_smoothing": Choice(0.0, why)}


def round_steps(n: int, batch: int, step_seconds: float, seconds_for_rounds: float,
                epochs_override: float | None = None) -> Choice:
    per_epoch = max(1, math.ceil(n / batch))
    if epochs_override:
        return Choice(max(1, int(round(epochs_override * per_epoch))), f"given (--epochs {epochs_override:g})")
    want = max(ROUND_MIN_STEPS, per_epoch)
    fit = int(seconds_for_rounds / TARGET_ROUNDS / max(step_seconds, 1e-6))
    steps = max(ROUND_MIN_STEPS, min(want, fit))  # never below the minimum: short rounds do not recover
    rule = (f"max({ROUND_MIN_STEPS} steps, one epoch = {per_epoch} steps)"
            + (f", cut to {steps} so {TARGET_ROUNDS} rounds fit the time left ({step_seconds * 1e3:.1f} ms/step)"
               if steps < want else ""))
    return Choice(steps, rule)


def slices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(probe training indices, probe loss indices) of the training part, disjoint, seeded."""
    order = np.random.default_rng(seed).permutation(n)
    n_eval = min(PROBE_EVAL, max(1, n // 5))
    return order[n_eval:n_eval + PROBE_TRAIN], order[:n_eval]


class StreamPart:
    """One side of a split of streamed training data (a reader too large for memory, or one read a complete feed at
    a time): every `every`-th batch (`held`) or the others, at most `most` samples a pass. The probe's training and
    loss slices when the data is not in memory; a batch is one feed for a per-feed reader."""

    def __init__(self, reader, every: int, held: bool, most: int):
        self.reader, self.every, self.held, self.most = reader, every, held, most
        self.per_feed = bool(getattr(reader, "per_feed", False))
        self.batch_size = getattr(reader, "batch_size", 1)
        n = getattr(reader, "num_samples", None) or 0
        unit = 1 if self.per_feed else max(self.batch_size, 1)
        batches = -(-n // unit)
        held_batches = -(-batches // every)
        self.num_samples = min(most, (held_batches if held else batches - held_batches) * unit)

    def batches(self):
        taken = 0
        for i, (feeds, labels) in enumerate(self.reader.batches()):
            if (i % self.every == 0) != self.held:
                continue
            yield feeds, labels
            taken += 1 if self.per_feed else len(next(iter(feeds.values()), ()))
            if taken >= self.most:
                return


def _another_fits(left: float, steps: int, pace: tuple[float, float], after: tuple[int, float]) -> bool:
    """Whether one more rate's run of `steps` and the round `after` it fit `left` seconds at `pace` = (s a step, s
    a run) as the probe's own runs measured it: a few timed steps misread a folder of feeds whose sizes vary 20x
    (trueocr's recognizer: 0.07 s a step timed, 0.23 s in its runs)."""
    per_step, fixed = pace
    return fixed + steps * per_step + _round_seconds(after, per_step, fixed) <= left


def _round_seconds(after: tuple[int, float], per_step: float, fixed: float) -> float:
    """The round `after` = (steps, seconds judging it) a probe is for, at `per_step` s a step and `fixed` s a run
    (0 when there is none)."""
    return fixed + after[0] * per_step + after[1] if after[0] else 0.0


def stream_slices(reader) -> tuple[StreamPart, StreamPart]:
    """(probe training part, probe loss part) of streamed data: every 5th batch measures, the others train."""
    return StreamPart(reader, 5, False, PROBE_TRAIN), StreamPart(reader, 5, True, PROBE_EVAL)


def objective_on(trainer, data) -> float:
    """Mean training objective of the trainer's current model on `data` (a TrainData), no update. Streamed data
    gets its teacher outputs from the trainer's own teacher function, as its training steps do."""
    import torch  # here, not at the top: every plan imports this module, and a fixed-target run needs no torch

    total, count = 0.0, 0
    trainer.module.eval()
    with torch.no_grad():
        for inputs, labels, teacher in data.epoch(torch.Generator().manual_seed(0), 512,
                                                   getattr(trainer, "_teacher_fn", None)):
            out = trainer.module(**inputs)
            out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
            n = 1 if getattr(data.reader, "per_feed", False) else len(next(iter(inputs.values())))
            total += float(trainer.objective(out, labels, teacher)) * n
            count += n
    return total / max(count, 1)


def probe_lr(make_trainer, train_part, eval_part, batch: int, *, rates=PROBE_RATES, steps: int = PROBE_STEPS,
             override: float | None = None, seconds: float | None = None,
             limit: float | None = None, after: tuple[int, float] = (0, 0.0)) -> tuple[Choice, float, dict]:
    """(learning rate choice, seconds per optimizer step, {rate: loss}); `make_trainer(data)` builds a fresh
    trainer on the probe's start point; `seconds`: stop trying rates (after two) once the probe took this long.
    `limit`: the seconds left for all of it; when the timed steps say two rates of MIN_PROBE_STEPS would not fit,
    with `after` = (steps, seconds) after them (the first round a probe is for, and its judging), or every rate
    tried diverged, the choice's value is None (do not retrain) and its rule says why. Real models 54's CTC
    recognizer: rule 5's probe took 39 s of the 84 s the refit had left, and no 300-step round (about 66 s) fitted
    after it."""
    cap = seconds
    started = time.perf_counter()
    per_epoch = max(1, train_part.num_batches(batch))  # one feed a step when the data is read feed by feed
    losses, seconds, taken = {}, 0.0, 0
    cut, fixed = "", 0.0
    if limit is not None and limit <= 0 and not override:  # nothing fits: not a step timed (real models 57: a U-Net's
        # three timing calls, 18 s a step, took 130 s past its 3-minute budget before this same answer)
        return Choice(None, "no time to probe: no time was left for it"), 0.0, {}
    if cap is not None and not override:  # time a few steps first: two rates of `steps` must fit the probe's share
        calls = []
        # a call's fixed cost and a step's, apart (a 5-step call is mostly the former), after a first call that is
        # not timed: it pays what a run pays once (trueocr's recognizer, a folder of one-line feeds: 2.3 s for its
        # first step, 0.64 s for six after it, so the step read 0 s and the probe was priced as free)
        for n in (1, 1, 1 + TIMING_STEPS):
            trainer = make_trainer(train_part)  # built outside the timing
            t0 = time.perf_counter()
            done = trainer.train(n / per_epoch, rates[0], reg_strength=1e-4, batch_size=batch)
            calls.append((max(done.steps, 1), time.perf_counter() - t0))
        _, (n1, t1), (n2, t2) = calls
        per_step = max((t2 - t1) / max(n2 - n1, 1), 1e-9)
        fixed = max(0.0, t1 - n1 * per_step)
        need = 2 * (fixed + MIN_PROBE_STEPS * per_step)
        round_need = _round_seconds(after, per_step, fixed)
        share = cap if limit is None else min(cap, limit - (time.perf_counter() - started) - round_need)
        fit = int((share / 2 - fixed) / per_step + 1e-9)  # two rates in the share, and in the time left
        if limit is not None and time.perf_counter() - started + need + round_need > limit:
            then = (f" and a round of {after[0]} steps after them about {round_need:.0f} s" if round_need else "")
            return (Choice(None, f"no time to probe: two rates of {MIN_PROBE_STEPS} steps take about {need:.0f} s"
                           f"{then} ({per_step:.2g} s/step), "
                           f"{max(0.0, limit - (time.perf_counter() - started)):.0f} s were left"), per_step, {})
        if fit < steps:
            within = "its time share" if share >= cap else "the time left" + (" and a round after them" if after[0]
                                                                              else "")
            cut = (f"; {max(MIN_PROBE_STEPS, fit)} steps, not {steps}, so two rates fit {within} "
                   f"({per_step:.2g} s/step, {fixed:.2g} s a run)")
            steps = max(MIN_PROBE_STEPS, fit)

    def run(lr: float) -> None:  # one rate's run from the start point, and its objective
        nonlocal seconds, taken
        trainer = make_trainer(train_part)
        t0 = time.perf_counter()
        stats = trainer.train(steps / per_epoch, lr, reg_strength=1e-4, batch_size=batch)
        seconds, taken = seconds + time.perf_counter() - t0, taken + stats.steps
        loss = objective_on(trainer, eval_part)
        losses[lr] = loss if math.isfinite(loss) else float("inf")

    start = None if override else objective_on(make_trainer(train_part), eval_part)  # the untrained start's
    for lr in ([override] if override else rates):
        if cap is not None and len(losses) >= 2 and seconds >= cap:
            break
        pace = (max(0.0, seconds - len(losses) * fixed) / taken, fixed) if taken else None  # its runs' own
        if limit is not None and pace and not _another_fits(limit - (time.perf_counter() - started), steps, pace,
                                                            after):
            then = f" and a round of {after[0]} steps after it" if after[0] else ""
            cut += (f"; no other rate: one more{then} would not fit the "
                    f"{max(0.0, limit - (time.perf_counter() - started)):.0f} s left at the pace of its runs "
                    f"({pace[0]:.2g} s/step)")
            break
        run(lr)
    lower = ""
    if start is not None and math.isfinite(start) and losses and all(v >= start for v in losses.values()):
        per_rate = (time.perf_counter() - started) / (len(losses) + 1)
        for lr in LOWER_RATES:  # no rate of the grid lowered the objective: smaller ones, while time allows
            if limit is not None and time.perf_counter() - started + per_rate > limit:
                break
            run(lr)
            lower = f"; every rate of the grid ended above the untrained objective {start:.4f}, so smaller were tried"
            if losses[lr] < start:
                break
    elif _lowest_at_the_bottom(losses, rates):  # real models 58: a pose MLP on pixel coordinates (0-800) read 0.3:
        # 1.20, ..., 0.01: 1.14, 0.003: 0.36; its rounds at 0.003 lost 10-64 pp and it kept 1.08x, at 0.0003 2.32x
        per_rate = (time.perf_counter() - started) / (len(losses) + 1)
        for lr in LOWER_RATES:
            if limit is not None and time.perf_counter() - started + per_rate > limit:
                break
            best = min(losses.values())
            run(lr)
            lower = "; the grid's smallest rate ended lowest, so smaller were tried while each ended lower"
            if not losses[lr] < best:
                break
    step_seconds = seconds / max(taken, 1)
    if override:
        return Choice(float(override), "given (--lr)"), step_seconds, losses
    rates = (*rates, *(r for r in LOWER_RATES if r in losses))
    cut += lower
    shown = ", ".join(f"{r:g}: {v:.4f}" for r, v in sorted(losses.items(), reverse=True))
    if losses and all(math.isinf(v) for v in losses.values()):  # no rate tried trains: none is a choice
        return Choice(None, f"every rate tried diverged ({shown})"), step_seconds, losses
    best = min(losses, key=lambda r: (losses[r], r))
    cut += f"; {len(rates) - len(losses)} rates left untried: the probe had used {seconds:.0f} s" if len(losses) < len(
        rates) else ""
    return (Choice(float(best), f"probe: lowest training objective after {steps} steps on a slice of the training "
                   f"part ({shown}{cut})"), step_seconds, losses)


def _lowest_at_the_bottom(losses: dict, rates) -> bool:
    """The grid's smallest rate tried ended lowest, below the next rate up: the best rate may lie below the grid."""
    lowest = min(rates)
    above = [r for r in losses if r > lowest]
    return (lowest in losses and bool(above) and math.isfinite(losses[lowest])
            and losses[lowest] < losses[min(above)] and losses[lowest] == min(losses.values()))


def function_matching(data, teacher, seed: int, target: int = FUNCTION_MATCHING, *,
                      seconds: float | None = None, per_sample: float = 0.0) -> tuple[object, Choice]:
    """The training part (a converter.finetune.TrainData) filled up to `target` samples with mixup inputs labelled
    by `teacher` (the input model), when it is label-free, in memory, small and all-float; else as it is. With
    `seconds`, only as many as the teacher labels in that time at `per_sample` seconds a sample (its pass over the
    training part, timed by the caller). Real models 57: a U-Net on 224 x 224 maps labelled 1,337 mixup samples
    for 200 s with 14 s of its 3-minute budget left, before the learning-rate probe found no time to probe."""
    import torch

    from onnxprune.converter.finetune import TrainData, teacher_outputs

    n = data.num_samples
    why = ("labels given" if data.labels is not None else "streamed data" if data.reader is not None or not n
           else f"{n} samples >= {target}" if n >= target
           else "integer inputs" if any(not v.is_floating_point() for v in data.inputs.values()) else None)
    if why is not None:
        return data, Choice(0, f"none: {why}")
    sample_bytes = sum(v[:1].numel() * v.element_size() for v in data.inputs.values())
    extra = int(min(target - n, MIXUP_BYTES // max(sample_bytes, 1)))
    if extra < 1:
        return data, Choice(0, "none: samples too large to add in memory")
    timed = seconds is not None and per_sample > 0 and seconds < extra * per_sample
    if timed:
        extra = int(seconds // per_sample)
        if extra < 1:
            return data, Choice(0, f"none: no time to label them ({per_sample:.2g} s a sample by the input model, "
                                   f"{max(seconds, 0.0):.0f} s for it)")
    rng = np.random.default_rng(seed)
    a, b, lam = rng.integers(0, n, extra), rng.integers(0, n, extra), rng.random(extra)
    mixed = {}
    for name, v in data.inputs.items():
        w = torch.from_numpy(lam.reshape(-1, *[1] * (v.dim() - 1))).to(v.dtype)
        mixed[name] = (w * v[a] + (1 - w) * v[b]).contiguous()
    teacher_mixed = teacher_outputs(teacher, mixed)
    inputs = {k: torch.cat([v, mixed[k]]) for k, v in data.inputs.items()}
    taught = [None if t is None or m is None else torch.cat([t, m.to(t.dtype)])
              for t, m in zip(data.teacher, teacher_mixed)]
    rule = (f"{extra} mixup samples (pairs of the {n} training samples, λ uniform) labelled by the input model: "
            f"function matching on small label-free data, {n + extra} samples in all"
            + (f" (as many as it labels in {seconds:.0f} s, {per_sample:.2g} s a sample)" if timed else ""))
    return TrainData(inputs, None, taught, data.batch_size), Choice(extra, rule)
