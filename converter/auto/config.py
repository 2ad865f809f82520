"""AutoConfig: what the automatic search is given. The budget is the only required knob."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from onnxprune.converter.steps.data import MIN_TRAIN as MIN_TRAIN_SAMPLES  # noqa: F401  (the small-data split's)
from onnxprune.errors import ConfigError

DEFAULT_TIME_BUDGET = 900.0  # seconds: a LeNet on 2 cores
OVERRIDES = ("lr", "epochs", "neuron_sparsity", "train_batch_size")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text) -> float:
    """Seconds from 900, '90s', '15m', '1h', '1.5h'."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text).lower())
        if not m:
            raise ConfigError(f"--time-budget '{text}' is not a duration; e.g. 900, 90s, 15m or 1h.")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--time-budget {text} must be a positive duration, e.g. 15m.")
    return value


@dataclass
class AutoConfig:
    max_loss: float
    time_budget: float = DEFAULT_TIME_BUDGET
    threads: int | None = None
    seed: int = 0
    device: str = "auto"
    criterion: str = "magnitude"
    neurons: bool = True  # whole-neuron pruning (needs the dead-neuron pass afterwards)
    overrides: dict = field(default_factory=dict)  # any of OVERRIDES the user gave
    recovery: str = "auto"  # a backend of converter.auto.recovery.RECOVERY, or "auto" (its rule picks)
    retrain: bool = True  # False: the one-shot start only, chosen on the training part (AutoData.chooser)

    def validate(self) -> None:
        if not 0 <= self.max_loss <= 100:
            raise ConfigError(f"--max-loss {self.max_loss:g} must be in percentage points, between 0 and 100.")
        if not self.time_budget > 0:
            raise ConfigError(f"--time-budget {self.time_budget} must be > 0 seconds.")
        unknown = set(self.overrides) - set(OVERRIDES)
        if unknown:
            raise ConfigError(f"unknown override(s) {sorted(unknown)} for the automatic search; valid: "
                              f"{', '.join(OVERRIDES)}.")
        from onnxprune.passes.criteria import get_criterion

        get_criterion(self.criterion)
        from onnxprune.converter.auto.recovery import RECOVERY

        if self.recovery != "auto" and self.recovery not in RECOVERY:
            raise ConfigError(f"recovery '{self.recovery}' is not one of auto, {', '.join(RECOVERY)}.")

    @classmethod
    def from_options(cls, options) -> "AutoConfig":
        config = cls(max_loss=float(options.max_loss),
                     time_budget=parse_duration(options.time_budget) if options.time_budget else DEFAULT_TIME_BUDGET,
                     threads=options.threads, seed=options.seed, device=options.device,
                     criterion=getattr(options, "criterion", None) or "magnitude", neurons=options.neurons,
                     overrides=dict(options.auto_overrides or {}))
        config.validate()
        return config
