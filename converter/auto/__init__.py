"""The automatic search (`prune --max-loss L` with training data): the budget is the only knob.

One entry point: `auto_search(original, inventory, data, config, progress, deadline) -> AutoResult`.
  search.py     the driver: one-shot start, rounds over two knobs (weights, neurons), polish
  recovery.py   recovery backends (sgd through the torch bridge, reconstruct: layer-wise refit) and the rule
                that picks one; the refit search (bisection on one global level)
  hyper.py      hyperparameter rules and the learning-rate probe
  decide.py     the statistical rule deciding "within budget" on the decision set
  exam.py       the final exam: on small decision sets a slice no candidate is judged on judges the result once
  allocation.py LAMP: a global target distributed over layers by layer-adaptive scores; pluggable criterion
  config.py     AutoConfig (validated), durations (thread counts: converter/threads.py, for every run)
"""

from onnxprune.converter.auto.config import DEFAULT_TIME_BUDGET, MIN_TRAIN_SAMPLES, AutoConfig, parse_duration
from onnxprune.converter.auto.search import AutoData, AutoResult, auto_search

__all__ = ["AutoConfig", "AutoData", "AutoResult", "DEFAULT_TIME_BUDGET", "MIN_TRAIN_SAMPLES", "auto_search",
           "parse_duration"]
