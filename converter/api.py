"""The Python API, for notebooks and build scripts. The CLI is a thin layer over the same code.

    import onnxprune
    result = onnxprune.prune("model.onnx", data={"input": x, "labels": y}, max_loss=0.5, iterations=3,
                             output="small.onnx")
    result.model        # onnx.ModelProto, verified
    result.report       # the document --json prints (report.json holds its numbers under summary and run)
"""

from __future__ import annotations

import collections.abc
import contextlib
import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

import onnx

from onnxprune.converter.convert import API_COMMAND, convert
from onnxprune.converter.pipeline import PruneResult, budget_error
from onnxprune.converter.plan import PER_RUN, RECIPE_OVERRIDES, configure, replay
from onnxprune.converter.recipe import coerce
from onnxprune.errors import ConfigError, ConverterError
from onnxprune.interrupts import after_imports


@after_imports()  # a Ctrl-C inside a lazy import (torch's, onnxruntime's) waits for it: no half-imported package
def prune(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    data: Any = None,
    eval_data: Any = None,
    output: str | os.PathLike | None = None,
    report_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress=None,
    recipe: str | os.PathLike | None = None,
    allow_other_model: bool = False,
    **choices,
) -> PruneResult | None:
    """Prune `model` (a path or a ModelProto) and return the verified result.

    `data` / `eval_data`: a path (.npz, folder, 'random'), a dict of arrays named after the model inputs (plus an
    optional labels array), or an iterable of feed dicts (one batch each); for a model with one input also an array
    (samples first, as that dict) or an iterable of arrays (as those feed dicts). `choices` are the step configs'
    fields, the command line's flags in snake case (sparsity, quality, layers, exclude, max_loss, iterations, epochs,
    lr, …); `layers` is {NAME: SPARSITY} or NAME=SPARSITY strings as --layer takes them, `input_shapes` {NAME: DIMS}
    or NAME=DIMS strings as --input-shape takes them, `metric` a KIND, OUTPUT=KIND strings or {OUTPUT: KIND},
    `exclude` a pattern or several; `--max-loss OUTPUT=L` is `output_budgets={OUTPUT: L}` (or OUTPUT=L strings)
    beside `max_loss`. A wrong type is a ConfigError naming the option and what it takes; an unknown one a
    ConfigError listing the valid ones. With `output`, the model is written atomically; with `report_dir`,
    report.html/report.json/recipe.toml too. A missed --max-loss budget raises BudgetError unless
    `force` (its figures: loss_pp, max_loss_pp, outputs, written, report; `budget_error(result.report)` gives the
    same error for a forced result). `progress`: None (silent), True (the command line's progress lines on stderr)
    or a callable `progress(task, done, total, info="")` that long steps call. `recipe`: replay an earlier run's
    recipe.toml, as --recipe (with the same data, a search that ended on its own rule writes the same bytes); beside
    it only the per-run choices (val_data, checkpoint_dir, resume, threads, device); `allow_other_model=True` applies
    a recipe written for another model file. Every error's message names these keywords, not the command line's
    flags (`max_loss=`, not --max-loss: `api_words`).
    """
    try:
        with _logged_in_api_words():
            return _prune(model, data, eval_data, output, report_dir, force, progress, recipe, allow_other_model,
                          choices)
    except ConverterError as error:  # audit 39/40: "pass --data FILE.npz" to a caller who wrote data=...
        if error.args and isinstance(error.args[0], str):
            error.args = (api_words(error.args[0]), *error.args[1:])
        raise


def _prune(model, data, eval_data, output, report_dir, force, progress, recipe, allow_other_model, choices):
    if not isinstance(model, (str, os.PathLike, onnx.ModelProto)):  # (sweep 16: "step 'load' failed: TypeError")
        raise ConfigError(f"model must be a path or an onnx.ModelProto, not {type(model).__name__}.")
    # checked as the options are (a library sweep: output=3 was a raw TypeError, force="no" wrote a missed budget)
    output = coerce(output, str | None, f"output={output!r}")
    report_dir = coerce(report_dir, str | None, f"report_dir={report_dir!r}")
    force = coerce(force, bool, f"force={force!r}")
    progress = _progress(progress)
    # a one-pass iterable of feed dicts (a generator, map()) is read once here: the run reads its data several times
    # (sweep 16: a generator was used up by the batch choice, then "the list of calibration feed dicts is empty")
    data, eval_data = _once(data), _once(eval_data)
    if "val_data" in choices:
        choices["val_data"] = _once(choices["val_data"])
    choices = {k: _plain(v) for k, v in choices.items()}  # numpy scalars as Python numbers: the report stays JSON
    if recipe is not None:  # the command line's --recipe (CI audit: the API had no replay, `recipe=` was unknown)
        recipe = coerce(recipe, str, f"recipe={recipe!r}")
        allow_other_model = coerce(allow_other_model, bool, f"allow_other_model={allow_other_model!r}")
        beside = sorted(set(choices) - set(PER_RUN) - set(RECIPE_OVERRIDES))
        if beside:
            raise ConfigError(f"recipe= replays the recipe's choices; {', '.join(beside)} given beside it would be "
                              "ignored: drop them, or edit the recipe (or run without recipe=).")
        config = replay(recipe, model, {"data": data, "eval_data": eval_data, **choices},
                        allow_other_model=allow_other_model, override_hint="allow_other_model=True")
    else:
        config = configure(data=data, eval_data=eval_data, **choices)
    result = convert(model, Path(output) if output is not None else None, config,
                     report_dir=Path(report_dir) if report_dir is not None else None, force=force, progress=progress,
                     command=[API_COMMAND])
    if result is None:  # a torchrun process other than rank 0: it trained; rank 0 holds the result
        return None
    failed = budget_error(result.report)
    if failed is not None and not force:
        raise failed
    return result


def _progress(progress):
    """`progress=` as the run calls it: a string or number was a step failure deep in the run ("step 'scan' failed
    ...: TypeError: 'str' object is not callable"); it is a ConfigError naming the option before any work."""
    if progress is None or progress is False:
        return None
    if progress is True:
        from onnxprune.converter.progress import Progress

        return Progress()
    if not callable(progress):
        raise ConfigError(f"progress={progress!r} must be None, True (progress lines on stderr) or a callable "
                          "progress(task, done, total, info='').")
    return progress  # its print()s reach the caller's stdout: an API run leaves sys.stdout alone (convert.convert)


def _once(source):
    """A one-pass iterator as a list; anything else (a path, a dict of arrays, a list) as given."""
    if isinstance(source, collections.abc.Iterator) and not isinstance(source, (str, bytes, dict)):
        return list(source)
    return source


def _plain(value):
    """A numpy scalar (np.float32(1.0)) as its Python number, also inside a dict (layers=); sweep 16: it reached the
    returned report, which json.dumps then refused."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# The command line's flags whose keyword is not the flag in snake case, or which take no value (True/False); flags
# with no keyword (--plan, --json, --debug, -q, -v) stay as they are. tests/converter/test_api.py checks this
# against every option of `onnxprune prune`.
KEYWORDS = {"-o": "output", "--output": "output", "--report": "report_dir", "--layer": "layers",
            "--neuron-layer": "neuron_layers", "--input-shape": "input_shapes"}
SWITCHES = {"--one-shot": "one_shot=True", "--alternate": "alternate=True", "--crop-inputs": "crop_inputs=True",
            "--gather-inputs": "gather_inputs=True", "--resume": "resume=True",
            "--allow-other-model": "allow_other_model=True", "--force": "force=True", "--no-neurons": "neurons=False"}
NOT_KEYWORDS = ("--plan", "--json", "--debug", "--verbose", "--quiet")
# the words a message writes after a flag as its value (--data random, --criterion magnitude), besides numbers,
# quoted strings, NAME=VALUE, file names and CAPITAL placeholders (FILE.npz, N)
LITERALS = frozenset({"random", "auto", "cpu", "cuda", "constant", "initializer", "dense", "compact", "sgd",
                      "reconstruct", "magnitude", "obd", "taylor", "wanda", "cubic", "geometric", "linear", "ce",
                      "distill", "ce+distill", "l1", "l2"})
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-o\b)(?:( )('[^']*'|[^\s;)'(`]*[^\s,;)'(.:`]))?")
_NUMBER = re.compile(r"-?\d+(\.\d+)?(e-?\d+)?|-?inf|nan")


def api_words(message: str) -> str:
    """A message of the command line's words in the API's: `--max-loss 1` -> `max_loss=1`, `--data FILE.npz` ->
    `data='FILE.npz'`, `--max-loss boxes=5` -> `output_budgets='boxes=5'`, `--force` -> `force=True`, `-o` ->
    `output=`. Messages are written once, for both (audit 39 found "choose another output path (-o)" and
    "--max-loss needs data" raised to a caller who wrote output= and max_loss=)."""
    return _FLAG.sub(_keyword, message)


def _keyword(match: re.Match) -> str:
    flag, space, value = match.group(1), match.group(2), match.group(3)
    names = _choices()
    if flag in SWITCHES:
        return SWITCHES[flag] + (space + value if value else "")
    name = KEYWORDS.get(flag, flag.lstrip("-").replace("-", "_"))
    if flag in NOT_KEYWORDS or (flag not in KEYWORDS and name not in names):
        return match.group(0)
    if not value or not _is_value(value):  # a keyword alone: "drop max_loss=", "max_loss's decisions"
        rest = match.string[match.end(1):]
        return (name if rest.startswith("'s") else f"{name}=") + (space + value if value else "")
    bare = value.strip("'")
    if name == "max_loss" and "=" in bare:
        name = "output_budgets"
    if not value.startswith("'") and (_NUMBER.fullmatch(bare) or re.fullmatch(r"[A-Z]", bare)):
        return f"{name}={bare}"
    return f"{name}={bare!r}"


def _is_value(word: str) -> bool:
    return bool(word.startswith("'") or _NUMBER.match(word) or "=" in word or word in LITERALS
                or re.fullmatch(r"[A-Z][A-Z0-9_]*(\.\w+)?", word) or re.fullmatch(r"[\w./-]+\.[a-z]{2,4}", word))


@functools.lru_cache(maxsize=1)
def _choices() -> frozenset:
    from onnxprune.converter.plan import choice_names

    return frozenset(choice_names()) | {"recipe", "data", "eval_data", "output", "report_dir"}


@contextlib.contextmanager
def _logged_in_api_words():
    """The run's log records (onnxprune.*) in the API's words while prune() runs: its warnings said "give 99 samples
    (more --data, or --val-data), or --max-loss 1.64" to a caller who wrote data= and max_loss= (audit 40). The
    record factory is the one hook every logger's records pass through; the caller's own is kept and put back."""
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if record.name.startswith("onnxprune") and isinstance(record.msg, str) and "-" in record.getMessage():
            record.msg, record.args = api_words(record.getMessage()), ()
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        if logging.getLogRecordFactory() is factory:  # unless the caller set another one meanwhile
            logging.setLogRecordFactory(previous)
