"""Rules for batch size, round length and durations; the thread default."""

from __future__ import annotations

import pytest

from onnxprune.converter.auto import hyper
from onnxprune.converter.auto.config import AutoConfig, parse_duration
from onnxprune.converter.threads import apply_threads, default_threads
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
        assert apply_threads(2) == 2 == torch.get_num_threads() and runtime._DEFAULT_THREADS == 2
        with pytest.raises(ConfigError, match="threads"):
            apply_threads(0)
    finally:
        apply_threads(before)
