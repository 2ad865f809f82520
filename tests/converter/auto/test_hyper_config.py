"""Rules for batch size, round length and durations; the thread default."""

from __future__ import annotations

import pytest

from onnxprune.converter.auto import hyper
from onnxprune.converter.auto.config import AutoConfig, parse_duration
from onnxprune.converter.threads import apply_threads, default_ort_threads, default_threads, usable_cpus
from onnxprune.errors import ConfigError


@pytest.mark.parametrize("n, batch", [(1131, 32), (6000, 32), (20000, 128), (60000, 256), (10**7, 256)])
def test_batch_size_gives_about_two_hundred_steps_per_epoch(n, batch):
    assert hyper.batch_size(n).value == batch
    assert hyper.batch_size(n, 64).value == 64 and "given" in hyper.batch_size(n, 64).rule


def test_round_length_is_at_least_the_minimum_or_an_epoch_and_fits_the_time():
    assert hyper.round_steps(60000, 256, 0.001, 1e6).value == 300  # one epoch = 235 steps < 300
    assert hyper.round_steps(600000, 256, 0.001, 1e6).value == 2344  # one epoch
    long = hyper.round_steps(600000, 256, 0.1, 1400.0)  # 14 rounds in 1400 s at 0.1 s/step: 1000 steps each
    assert long.value == 1000 and "cut to 1000" in long.rule
    assert hyper.round_steps(60000, 256, 0.1, 1.0).value == hyper.ROUND_MIN_STEPS  # never below the minimum
    assert hyper.round_steps(60000, 256, 0.1, 1.0, epochs_override=2).value == 470


def test_loss_mix_by_labels():
    assert hyper.loss_mix(True)["loss"].value == "ce+distill"
    assert hyper.loss_mix(False)["loss"].value == "distill" and hyper.loss_mix(False)["temperature"].value == 1.0


@pytest.mark.parametrize("text, seconds", [("900", 900.0), (90, 90.0), ("90s", 90.0), ("15m", 900.0),
                                           ("1h", 3600.0), ("1.5h", 5400.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5", "0", "15 minutes"])
def test_bad_durations_are_config_errors(text):
    with pytest.raises(ConfigError, match="time-budget"):
        parse_duration(text)


def test_config_validates_overrides_and_budget():
    with pytest.raises(ConfigError, match="unknown override"):
        AutoConfig(max_loss=0.0, overrides={"momentum": 0.5}).validate()
    with pytest.raises(ConfigError, match="max-loss"):
        AutoConfig(max_loss=-1.0).validate()


def test_threads_default_and_explicit():
    import torch

    from onnxprune.calibration import runtime

    before = torch.get_num_threads()
    try:
        assert apply_threads(None) == default_threads() == torch.get_num_threads()
        # onnxruntime's pool (spinning off) takes both cores of a 2-core machine: the one-shot scan scales with them
        assert runtime._DEFAULT_THREADS == default_ort_threads() == max(default_threads(), min(2, usable_cpus()))
        assert apply_threads(2) == 2 == torch.get_num_threads() and runtime._DEFAULT_THREADS == 2
        with pytest.raises(ConfigError, match="threads"):
            apply_threads(0)
    finally:
        apply_threads(before)


def test_small_label_free_data_is_filled_with_mixup_samples_labelled_by_the_input_model():
    """Function matching: 120 training samples become 2048; the added ones are convex mixes of training pairs and
    their targets are the input model's outputs on them (onnxruntime, checked here against the model itself)."""
    import numpy as np
    import torch

    from onnxprune.calibration.runtime import make_session
    from onnxprune.converter.finetune import TrainData, load_data
    from onnxprune.models import builders

    model = builders.mlp_gemm(in_features=6, hidden=(8,), out_features=3, seed=2)
    x = np.random.default_rng(0).standard_normal((120, 6)).astype(np.float32)
    data = load_data((x, None), teacher=model, use_labels=False)
    filled, choice = hyper.function_matching(data, model, seed=0)
    assert filled.num_samples == hyper.FUNCTION_MATCHING and choice.value == hyper.FUNCTION_MATCHING - 120
    assert "mixup" in choice.rule and "120 training samples" in choice.rule
    name = next(iter(filled.inputs))
    added = filled.inputs[name][120:].numpy()
    np.testing.assert_array_equal(filled.inputs[name][:120].numpy(), x)
    lo, hi = x.min(axis=0), x.max(axis=0)
    assert ((added >= lo - 1e-6) & (added <= hi + 1e-6)).all()  # inside the box of the training samples
    want = make_session(model, optimize=False).run(None, {name: added})[0]
    np.testing.assert_allclose(filled.teacher[0][120:].numpy(), want, rtol=1e-5, atol=1e-6)
    again, _ = hyper.function_matching(data, model, seed=0)
    assert torch.equal(again.inputs[name], filled.inputs[name])  # seeded
    labelled = TrainData(data.inputs, torch.zeros(120, dtype=torch.int64), data.teacher, data.batch_size)
    same, why = hyper.function_matching(labelled, model, seed=0)
    assert same is labelled and why.value == 0 and "labels given" in why.rule
    big = load_data((np.zeros((hyper.FUNCTION_MATCHING, 6), np.float32), None), teacher=model, use_labels=False)
    assert hyper.function_matching(big, model, seed=0)[1].value == 0


def test_mixup_samples_are_as_many_as_the_input_model_labels_in_the_time_given():
    """Real models 57: a U-Net on 224 x 224 maps had 14 s of its 3-minute budget left when rule 5's sgd rounds began,
    and its input model labelled 1,337 mixup samples for 200 s before the learning-rate probe found no time; the run
    took 315 s. The caller times the teacher's pass over the training part and gives a share of the time left."""
    import numpy as np

    from onnxprune.converter.finetune import load_data
    from onnxprune.models import builders

    model = builders.mlp_gemm(in_features=6, hidden=(8,), out_features=3, seed=2)
    x = np.random.default_rng(0).standard_normal((120, 6)).astype(np.float32)
    data = load_data((x, None), teacher=model, use_labels=False)
    some, choice = hyper.function_matching(data, model, seed=0, seconds=50.0, per_sample=0.125)
    assert some.num_samples == 120 + 400 and choice.value == 400
    assert "as many as it labels in 50 s, 0.12 s a sample" in choice.rule
    none, why = hyper.function_matching(data, model, seed=0, seconds=0.5, per_sample=1.0)
    assert none is data and why.value == 0 and "no time to label them (1 s a sample" in why.rule
    whole, rule = hyper.function_matching(data, model, seed=0, seconds=1000.0, per_sample=0.125)
    assert whole.num_samples == hyper.FUNCTION_MATCHING and "as many as" not in rule.rule


def test_the_probe_tries_rates_middle_out_and_stops_at_its_time_share(monkeypatch):
    from types import SimpleNamespace

    tried = []

    class Trainer:
        def train(self, epochs, lr, **kw):
            tried.append((lr, round(epochs * 4)))  # 100 samples at batch 32: 4 steps per epoch
            self.lr = lr
            return SimpleNamespace(steps=round(epochs * 4))

    monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: abs(getattr(trainer, "lr", 1.0) - 0.03))
    part = SimpleNamespace(num_samples=100, num_batches=lambda b: -(-100 // b))
    choice, _, losses = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=10, seconds=0.0)
    # an untimed step, timing runs of 1 and 6 steps first; no time at all: two rates at least, then the time share
    # is spent
    assert tried == [(0.01, 1), (0.01, 1), (0.01, 6), (0.01, 10), (0.03, 10)] and choice.value == 0.03
    assert "3 rates left untried" in choice.rule
    tried.clear()
    choice, _, _ = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=10)
    assert sorted(lr for lr, _ in tried) == sorted(hyper.PROBE_RATES) and choice.value == 0.03
    assert "untried" not in choice.rule and all(n == 10 for _, n in tried)  # no time share: no timing run


def _timed_trainer(monkeypatch, first: float = 0.0):
    """([steps of each train call], a Trainer class whose call takes 0.5 s + 0.125 s a step on a patched clock, and
    the run's first call `first` s more)."""
    from types import SimpleNamespace

    tried, clock = [], [0.0]

    class Trainer:
        def train(self, epochs, lr, **kw):
            n = round(epochs * 4)  # 100 samples at batch 32: 4 steps per epoch
            clock[0] += 0.5 + 0.125 * n + (first if not tried else 0.0)
            tried.append(n)
            self.lr = lr
            return SimpleNamespace(steps=n)

    monkeypatch.setattr(hyper.time, "perf_counter", lambda: clock[0])
    return tried, Trainer


def test_a_slow_step_shortens_every_rate_of_the_probe(monkeypatch):
    """Two rates of `steps` must fit the probe's share: at 0.125 s a step plus 0.5 s a run and 6 s, 20 steps a rate,
    not 100 (the fixed cost told apart from the steps' by timing a 1-step and a 6-step run)."""
    from types import SimpleNamespace

    tried, Trainer = _timed_trainer(monkeypatch)
    monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: abs(getattr(trainer, "lr", 1.0) - 0.03))
    part = SimpleNamespace(num_samples=100, num_batches=lambda b: -(-100 // b))
    choice, step_seconds, _ = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=100, seconds=6.0)
    assert tried == [1, 1, 6, 20, 20]  # the timing runs, then two rates within the 6 s share: 2 x (0.5 + 20 x 0.125)
    assert "20 steps, not 100, so two rates fit its time share" in choice.rule
    assert step_seconds == pytest.approx((0.5 + 2.5) / 20)  # the probe's own runs, fixed cost included


def test_the_probe_times_its_steps_after_a_first_call_that_pays_one_time_costs(monkeypatch):
    """Trueocr's recognizer (a folder of one-line feeds): the run's first training call took 2.3 s for one step, six
    steps after it 0.64 s, so the step read 0 s (a 1e-9 floor), and neither the probe's cut nor its time check could
    price a step. The first call is not timed now: 0.125 s a step is read, and two rates fit the 6 s share at 20."""
    from types import SimpleNamespace

    tried, Trainer = _timed_trainer(monkeypatch, first=2.0)
    monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: abs(getattr(trainer, "lr", 1.0) - 0.03))
    part = SimpleNamespace(num_samples=100, num_batches=lambda b: -(-100 // b))
    choice, _, _ = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=100, seconds=6.0)
    assert tried == [1, 1, 6, 20, 20] and "20 steps, not 100, so two rates fit its time share" in choice.rule
    assert "0.12 s/step" in choice.rule
    tried.clear()  # the time check prices the same: two rates of 10 steps (3.5 s) after the timing (4.5 s) > 7 s
    _, Trainer = _timed_trainer(monkeypatch, first=2.0)
    choice, _, _ = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=100, seconds=6.0, limit=7.0)
    assert choice.value is None and choice.rule.startswith("no time to probe: two rates of 10 steps take about 4 s")


def test_the_probe_times_no_step_when_no_time_is_left(monkeypatch):
    """Real models 57: a U-Net (18 s a training step) came to the probe past its time budget (limit 0), and the
    probe's three timing calls (1, 1 and 6 steps) took 130 s before it said "no time to probe". It now says so
    before it trains anything; with time left it times its steps as before."""
    from types import SimpleNamespace

    tried, Trainer = _timed_trainer(monkeypatch)
    part = SimpleNamespace(num_samples=100, num_batches=lambda b: -(-100 // b))
    choice, _, losses = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=100, seconds=6.0, limit=0.0)
    assert tried == [] and choice.value is None and losses == {}
    assert choice.rule == "no time to probe: no time was left for it"
    choice, _, _ = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=100, seconds=6.0, limit=5.0)
    assert tried == [1, 1, 6] and choice.value is None and choice.rule.startswith("no time to probe: two rates")


def test_the_probe_gives_no_rate_when_two_runs_cannot_fit_the_time_left_or_every_rate_diverges(monkeypatch):
    """Sweep 6, orinet: 4.6 s a step, 77 s left, and the probe took 120 s; then both rates gave inf and 0.01 was
    "chosen". Now: no rate (the search keeps what it has), and the rule says why."""
    from types import SimpleNamespace

    tried, Trainer = _timed_trainer(monkeypatch)
    monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: abs(getattr(trainer, "lr", 1.0) - 0.03))
    part = SimpleNamespace(num_samples=100, num_batches=lambda b: -(-100 // b))
    # two rates of 10 steps: 2 x (0.5 + 1.25) = 3.5 s, after 2.5 s of timing runs: 5 s is too little
    choice, _, losses = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=100, seconds=6.0, limit=5.0)
    assert tried == [1, 1, 6] and choice.value is None and losses == {}
    assert choice.rule.startswith("no time to probe: two rates of 10 steps take about 4 s")
    tried.clear()
    # 6 s: 3.5 s left after the timing, so each rate is cut to 10 steps (20 would fill its 6 s share and overrun)
    choice, _, _ = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=100, seconds=6.0, limit=6.0)
    assert choice.value == 0.03 and tried == [1, 1, 6, 10, 10]
    assert "10 steps, not 100, so two rates fit the time left (" in choice.rule
    monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: float("nan"))
    choice, _, losses = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=10)
    assert choice.value is None and choice.rule.startswith("every rate tried diverged (0.3: inf")


def test_the_probe_gives_no_rate_when_the_round_it_is_for_cannot_follow_it(monkeypatch):
    """Real models 54's CTC recognizer: rule 5's probe took 39 s of the 84 s the refit had left, and then no round of
    300 steps (about 66 s) fitted: the probe's time was spent for nothing. With `after` = (a round's steps, its
    judging's seconds), a probe whose two rates and one round after them do not fit the time left does not start."""
    from types import SimpleNamespace

    tried, Trainer = _timed_trainer(monkeypatch)
    monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: abs(getattr(trainer, "lr", 1.0) - 0.03))
    part = SimpleNamespace(num_samples=100, num_batches=lambda b: -(-100 // b))
    # two rates of 10 steps 3.5 s after 2.5 s of timing; a round of 300 steps 0.5 + 37.5 s, judged in 2 s: 40 s
    choice, _, losses = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=100, seconds=6.0, limit=30.0,
                                       after=(300, 2.0))
    assert tried == [1, 1, 6] and choice.value is None and losses == {}
    assert choice.rule.startswith("no time to probe: two rates of 10 steps take about 4 s and a round of 300 steps "
                                  "after them about 40 s")
    tried.clear()
    choice, _, _ = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=100, seconds=6.0, limit=50.0,
                                  after=(300, 2.0))
    assert choice.value == 0.03 and tried == [1, 1, 6, 20, 20]


def test_the_probe_stops_trying_rates_when_its_own_runs_say_another_and_a_round_would_not_fit(monkeypatch):
    """Timed steps can misread a run's pace (trueocr's folder of line feeds, 20x apart in size: 0.07 s a step timed,
    0.23 s in its runs). After each rate the probe prices the next one and the round after it at its runs' pace."""
    from types import SimpleNamespace

    tried, clock = [], [0.0]

    class Trainer:
        def train(self, epochs, lr, **kw):
            n = round(epochs * 4)
            clock[0] += 0.5 + (0.125 if len(tried) < 3 else 0.5) * n  # the three timing calls run fast feeds
            tried.append(n)
            self.lr = lr
            return SimpleNamespace(steps=n)

    monkeypatch.setattr(hyper.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: abs(getattr(trainer, "lr", 1.0) - 0.03))
    part = SimpleNamespace(num_samples=100, num_batches=lambda b: -(-100 // b))
    # timed: 2 x 3.5 s of rates + a 40 s round fit 60 s; the first rate took 10.5 s (0.5 s a step): another rate and
    # a round of 300 steps (163 s) do not fit the 47 s left
    choice, _, losses = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=100, seconds=6.0, limit=60.0,
                                       after=(300, 2.0))
    assert tried == [1, 1, 6, 20] and list(losses) == [0.01] and choice.value == 0.01
    assert "no other rate: one more and a round of 300 steps after it would not fit the 47 s left" in choice.rule
    assert "(0.5 s/step)" in choice.rule


def test_when_every_rate_of_the_grid_ends_above_the_untrained_objective_smaller_rates_are_tried(monkeypatch):
    """Sweep 7's CNN with a linear regression head beside its softmax: every rate of the grid diverged (objectives
    near chance), and 0.001 trains. The probe goes down LOWER_RATES until one ends below the start."""
    from types import SimpleNamespace

    tried = []

    class Trainer:
        lr = None  # untrained: the start's objective is 1.0

        def train(self, epochs, lr, **kw):
            tried.append(lr)
            self.lr = lr
            return SimpleNamespace(steps=round(epochs * 4))

    objective = lambda trainer, data: 1.0 if trainer.lr is None else (0.5 if trainer.lr <= 0.001 else 2.0)  # noqa
    monkeypatch.setattr(hyper, "objective_on", objective)
    part = SimpleNamespace(num_samples=100, num_batches=lambda b: -(-100 // b))
    choice, _, losses = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=10)
    assert tried == [*hyper.PROBE_RATES, 0.001] and choice.value == 0.001  # the first one below the start ends it
    assert "every rate of the grid ended above the untrained objective 1.0000, so smaller were tried" in choice.rule
    tried.clear()
    monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: 1.0 if trainer.lr is None else 0.9)
    choice, _, _ = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=10)
    assert tried == list(hyper.PROBE_RATES) and "smaller" not in choice.rule  # a rate of the grid trains: as before


def test_when_the_grids_smallest_rate_ends_lowest_smaller_rates_are_tried_while_each_ends_lower(monkeypatch):
    """Real models 58: a yoga-pose MLP reading keypoints in pixels (0-800) probed 0.3: 1.1976, 0.1: 1.1990, 0.03:
    1.1998, 0.01: 1.1375, 0.003: 0.3640 (all below the untrained start), trained its rounds at 0.003, lost 10-64 pp
    in each and kept 1.08x; at 0.0003 (--lr) its rounds passed and it kept 2.32x. The probe goes on down LOWER_RATES
    while each ends lower than the best before it."""
    import math
    from types import SimpleNamespace

    tried = []

    class Trainer:
        lr = None

        def train(self, epochs, lr, **kw):
            tried.append(lr)
            self.lr = lr
            return SimpleNamespace(steps=round(epochs * 4))

    part = SimpleNamespace(num_samples=100, num_batches=lambda b: -(-100 // b))
    for best in (0.0003, 0.001):  # the objective falls toward `best`, then rises
        tried.clear()
        monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: 9.0 if trainer.lr is None
                            else 0.1 + abs(math.log10(trainer.lr / best)))
        choice, _, losses = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=10)
        assert choice.value == best and "the grid's smallest rate ended lowest, so smaller were tried" in choice.rule
        assert tried == [*hyper.PROBE_RATES, *hyper.LOWER_RATES]  # 0.001 below 0.003; then 0.0003 (lower or not)
    tried.clear()
    monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: 9.0 if trainer.lr is None
                        else 0.1 + abs(math.log10(trainer.lr / 0.003)))
    choice, _, _ = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=10)
    assert tried == [*hyper.PROBE_RATES, 0.001] and choice.value == 0.003  # 0.001 ended higher: the grid's stands
    tried.clear()
    monkeypatch.setattr(hyper, "objective_on", lambda trainer, data: 9.0 if trainer.lr is None
                        else 0.1 + abs(math.log10(trainer.lr / 0.03)))
    choice, _, _ = hyper.probe_lr(lambda d: Trainer(), part, part, 32, steps=10)
    assert tried == list(hyper.PROBE_RATES) and choice.value == 0.03 and "smaller" not in choice.rule  # as before


def test_numpy_blas_takes_the_runs_thread_count_and_gets_the_hosts_back():
    """numpy's OpenBLAS runs the refit's Grams and solves: a run sets it to torch's count (1 on the shared 2-core
    box, where its default thread per core made LAPACK several times slower) and puts the host's back after."""
    from onnxprune.converter.threads import blas_threads, restore_threads

    if blas_threads() is None:
        pytest.skip("no BLAS loaded in this process")
    get = blas_threads
    restore_threads()  # an earlier test's run left its count: the host's is the one before any
    host = int(get())
    try:
        apply_threads(1)
        assert int(get()) == 1
        restore_threads()
        assert int(get()) == host
        apply_threads(3)
        assert int(get()) == 3
    finally:
        restore_threads()
    assert int(get()) == host
