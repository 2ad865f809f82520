"""From choices to a plan: every step's config, and the list of steps a run takes.

The command line, the Python API and a recipe file all give flat choices (`lr=0.02`, `max_loss=0.5`); each
choice belongs to exactly one step's config, and `configure` routes it there (an unknown one is a ConfigError
listing the valid ones). `build_plan` turns the configs into the ordered step list:

    fixed targets      load → inventory → [data] → targets → prune → [quantize] → shrink → encode → verify
                       → [measure] → report
                       (--weight-bits puts quantize after the last prune or retrain round of every plan; when the
                       plan retrains it fine-tunes the codebooks, and --weight-bits auto measures each width)
    one-shot budget    load → inventory → data → targets → scan → fit-budget → prune → … → report → budget-check
    scheduled retrain  load → inventory → data → targets → retrain → shrink → … → report
    budgeted retrain   load → inventory → data → targets → scan → allocate → budget-search → … → budget-check
    automatic          load → inventory → data → targets → auto-search → shrink → … → budget-check
                       (--max-loss with training data; --one-shot or --iterations N choose the plans above)
                       (without real --data, random-shapes follows inventory: the shapes random inputs are drawn at)

`onnxprune prune … --plan` prints this list with each step's resolved settings.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

from onnxprune.converter.steps.auto import AutoSearchConfig, AutoSearchStep
from onnxprune.converter.steps.base import Step, StepConfig, check_plan
from onnxprune.converter.steps.budget import (AllocateStep, BudgetCheckStep, BudgetConfig, ChooseApartStep,
                                              FitBudgetStep)
from onnxprune.converter.steps.data import DataConfig, DataStep, draws_random_inputs
from onnxprune.converter.steps.encode import EncodeConfig, EncodeStep
from onnxprune.converter.steps.load import InventoryStep, LoadStep
from onnxprune.converter.steps.prune import PruneStep
from onnxprune.converter.steps.rows import UnreadRowsStep
from onnxprune.converter.steps.quantize import AUTO as QUANT_AUTO, QuantizeConfig, QuantizeStep
from onnxprune.converter.steps.report import ReportStep
from onnxprune.converter.steps.retrain import BudgetSearchStep, RetrainConfig, RetrainStep
from onnxprune.converter.steps.scan import ClockStep, ScanConfig, ScanStep
from onnxprune.converter.steps.shapes import RandomShapesStep
from onnxprune.converter.steps.shrink import ShrinkConfig, ShrinkStep
from onnxprune.converter.steps.targets import TargetsConfig, TargetsStep
from onnxprune.converter.steps.verify import MeasureStep, ReadCheckStep, VerifyConfig, VerifyStep
from onnxprune.errors import ConfigError

# Given per run, not part of a recipe (or of a checkpoint's fingerprint).
PER_RUN = ("data", "eval_data", "val_data", "checkpoint_dir", "resume")
RECIPE_OVERRIDES = ("threads", "device")  # where a recipe runs, not what it chooses: given beside a recipe, they win


def replay(recipe, model, overrides: dict, *, allow_other_model: bool = False,
           override_hint: str = "--allow-other-model") -> RunConfig:
    """The config of a recipe replay (`--recipe`, the API's `recipe=`): the recipe's choices, checked against the
    model file it was written for, with the per-run `overrides` (PER_RUN, RECIPE_OVERRIDES) given beside it."""
    from onnxprune.converter import modelio
    from onnxprune.converter.recipe import load_recipe

    if not Path(recipe).is_file():
        raise ConfigError(f"recipe '{recipe}' does not exist; pass the recipe.toml an earlier run wrote.")
    sha = modelio.sha256_file(model) if isinstance(model, (str, os.PathLike)) and Path(model).is_file() else None
    choices = load_recipe(recipe, sha, allow_other_model=allow_other_model, override_hint=override_hint)
    return configure(**{**choices, **overrides})


@dataclass
class RunConfig:
    """Every step's settings; the recipe file is this, written out section by section."""

    targets: TargetsConfig = field(default_factory=TargetsConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    auto: AutoSearchConfig = field(default_factory=AutoSearchConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    data: DataConfig = field(default_factory=DataConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    shrink: ShrinkConfig = field(default_factory=ShrinkConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    given: frozenset = frozenset()  # the choices the user set (not defaulted): a search does not re-choose them

    def sections(self) -> dict[str, StepConfig]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "given"}

    def validate(self) -> None:
        """Each config checks itself; then what only the combination can say."""
        for config in self.sections().values():
            config.validate()
        t, b, d, r = self.targets, self.budget, self.data, self.retrain
        if b.output_budgets and (b.max_loss is None or not b.max_loss > 0):
            raise ConfigError("--max-loss OUTPUT=L sets one output's budget beside the run's: add a positive bare "
                              "--max-loss L for the other outputs (e.g. --max-loss 1 --max-loss boxes=5).")
        if b.max_loss is not None:
            if t.sparsity is not None or t.quality is not None:
                raise ConfigError("--max-loss chooses per-layer sparsities itself; drop --sparsity/--quality.")
            if d.data is None:
                raise ConfigError("--max-loss needs data to measure the loss on; pass --data FILE.npz.")
        elif t.sparsity is None and t.quality is None and not t.layers:
            raise ConfigError("nothing to prune: pass one of --sparsity, --quality, --layer NAME=S or --max-loss.")
        if self.auto.time_budget is not None and r.iterations > 0:  # accepted and ignored before: say so
            raise ConfigError("--time-budget bounds the automatic search and --one-shot; --iterations N runs its "
                              "rounds in full: drop --time-budget, or drop --iterations and give --max-loss for a "
                              "timed search.")
        if self.auto.time_budget is not None and b.max_loss is None:
            raise ConfigError("--time-budget bounds a --max-loss run (the automatic search, --one-shot); this run "
                              "prunes to fixed targets and has nothing to search: drop --time-budget.")
        if b.confidence is not None and b.max_loss is None:
            raise ConfigError("--confidence sets how sure --max-loss's decisions are; add --max-loss (and --data).")
        from onnxprune.passes.criteria import check_criterion

        check_criterion(t.criterion, has_data=d.data is not None)
        if r.iterations > 0 and d.data is None:
            raise ConfigError("retraining (--iterations) needs training data; pass --data FILE.npz.")
        if (r.neuron_sparsity or r.neuron_layers) and r.iterations < 1 and not automatic(self):
            raise ConfigError("--neuron-sparsity removes whole neurons while retraining; add --iterations N "
                              "(and --data), or --max-loss with --data.")
        if self.quantize.weight_bits == QUANT_AUTO and d.data is None:
            raise ConfigError("--weight-bits auto measures each width on data; pass --data FILE.npz.")
        if (r.neuron_sparsity or r.neuron_layers) and not self.shrink.neurons:
            raise ConfigError("--neuron-sparsity needs the dead-neuron pass to remove what it masks; drop "
                              "--no-neurons.")


@functools.lru_cache(maxsize=1)
def owners() -> dict[str, str]:
    """choice name -> the section (step config) that owns it."""
    out = {}
    for section in dataclasses.fields(RunConfig):
        if section.name == "given":
            continue
        for f in dataclasses.fields(section.default_factory):
            out[f.name] = section.name
    return out


def choice_names() -> tuple[str, ...]:
    return tuple(owners())


@functools.lru_cache(maxsize=1)
def choice_types() -> dict:
    """choice name -> its annotation (for checking a recipe's values and the API's, recipe.coerce)."""
    import typing

    out = {}
    for section in dataclasses.fields(RunConfig):
        if section.name == "given":
            continue
        out.update({k: v for k, v in typing.get_type_hints(section.default_factory).items()
                    if k in {f.name for f in dataclasses.fields(section.default_factory)}})
    return out


def configure(**choices) -> RunConfig:
    """Route flat choices to the step configs that own them."""
    from onnxprune.converter.recipe import coerce

    owner = owners()
    unknown = sorted(set(choices) - set(owner))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(owner))}.")
    hints = choice_types()
    per_section: dict[str, dict] = {}
    for name, value in choices.items():
        # a value of the wrong type is a ConfigError naming the option (sweep 16 and library sweeps: sparsity="0.5",
        # labels=3, batch_size=2.5 were raw TypeErrors deep in a step; neurons="no" and one_shot="false" were True)
        if name not in FORMS:
            value = coerce(value, hints[name], f"option {name}={value!r}")
        elif value is not None:
            value = FORMS[name](name, value)
        per_section.setdefault(owner[name], {})[name] = value
    config = RunConfig(given=frozenset(k for k, v in choices.items() if v is not None))
    for section, values in per_section.items():
        setattr(config, section, dataclasses.replace(getattr(config, section), **values))
    return config


def parse_layers(values, flag: str = "--layer", example: str | None = None) -> dict[str, float]:
    """NAME=SPARSITY strings (--layer, --neuron-layer; layers='fc1=0.9' from the API) as {NAME: SPARSITY}."""
    example = example or f"{flag} fc1=0.9"
    layers = {}
    for item in values:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise ConfigError(f"{flag} '{item}' is not NAME=SPARSITY; e.g. {example}.")
        try:
            layers[name] = float(value)
        except ValueError:
            raise ConfigError(f"{flag} '{item}': '{value}' is not a number; e.g. {example}.") from None
        if not 0.0 <= layers[name] < 1.0:
            raise ConfigError(f"{flag} '{item}': sparsity must be in [0, 1).")
    return layers


# options that take several values, what each value is, and an example: one value alone is one entry
SEQUENCES = {"exclude": (str, "patterns", "exclude=['fc1*', 'conv2']"),
             "levels": ((int, float), "sparsities", "levels=[0.5, 0.9]")}


def _sequence(name: str, value) -> tuple:
    """exclude= / levels= as a tuple: one pattern (exclude='fc1*', not its characters) or one level alone is one
    entry; anything else is a ConfigError naming the option (a library sweep: exclude=3 was a raw TypeError)."""
    kind, what, example = SEQUENCES[name]
    if hasattr(value, "tolist") and not isinstance(value, str):  # levels=np.linspace(0.1, 0.9, 5): its numbers
        value = value.tolist()  # (audit 40: a numpy array was "takes sparsities (one, or a list of them)")
    items = (value,) if isinstance(value, (str, int, float)) else value
    if not isinstance(items, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, kind) for v in items):
        raise ConfigError(f"option {name}={value!r} takes {what} (one, or a list of them), e.g. {example}.")
    return tuple(items)


def parse_input_shapes(values, flag: str = "--input-shape", example: str | None = None) -> dict[str, tuple[int, ...]]:
    """NAME=DIMS strings (--input-shape "ids=1,128" or "ids=1x128"; input_shapes='ids=1,128' from the API) as
    {NAME: dims}."""
    example = example or f"{flag} input_ids=1,128"
    shapes = {}
    for item in values or ():
        name, sep, dims = str(item).rpartition("=")
        try:
            parsed = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip()) if sep and name else None
        except ValueError:
            parsed = None
        if not parsed or any(d < 1 for d in parsed):
            raise ConfigError(f"{flag} '{item}' is not NAME=DIMS with positive dims; e.g. {example}.")
        shapes[name] = parsed
    return shapes


def parse_points(text, flag: str = "--max-loss") -> float:
    """A budget in percentage points: '1%' or '1pp' is read as 1, said once; anything else names the form."""
    text = str(text).strip()
    bare = text.removesuffix("%").removesuffix("pp").strip()
    try:
        number = float(bare)
    except ValueError:
        raise ConfigError(f"{flag}: '{text}' is not a number of percentage points; write e.g. --max-loss 1 "
                          "(1 pp).") from None
    if bare != text:
        logging.getLogger("onnxprune").warning("%s %s read as %g percentage points", flag, text, number)
    return number


def parse_budgets(values, flag: str = "--max-loss", example: str | None = None, bare: bool = True) -> tuple:
    """--max-loss L (once, unless `bare` is False) and OUTPUT=L (each output once; output_budgets='boxes=5' from the
    API) as (the run's budget or None, {OUTPUT: L})."""
    example = example or f"{flag} boxes=5"
    run: float | None = None
    own: dict[str, float] = {}
    for item in values:
        name, sep, value = str(item).rpartition("=")
        if not sep and bare:
            if run is not None:
                raise ConfigError(f"two budgets ({run:g} and {item}); give one bare {flag} L, and OUTPUT=L for an "
                                  "output with its own.")
            run = parse_points(item, flag)
        elif not name:
            raise ConfigError(f"{flag} '{item}' names no output; write OUTPUT=L, e.g. {example}.")
        elif name in own:
            raise ConfigError(f"{flag}: output '{name}' is given two budgets.")
        else:
            own[name] = parse_points(value, flag)
    return run, own


def parse_output_budgets(values, flag: str, example: str) -> dict[str, float]:
    """output_budgets= (the API's --max-loss OUTPUT=L) as {OUTPUT: L}: the run's own budget is max_loss=."""
    return parse_budgets(values, flag, example, bare=False)[1]


# options that take {NAME: VALUE} or the command line's NAME=VALUE strings (one string is one entry, as
# exclude='fc1*' is one pattern): the command line's parser, what a NAME and a VALUE are, and an example
NAMED = {"layers": (parse_layers, "layer", ("SPARSITY", "sparsity"), "{'fc1': 0.9}"),
         "neuron_layers": (parse_layers, "layer", ("SPARSITY", "sparsity"), "{'fc1': 0.9}"),
         "input_shapes": (parse_input_shapes, "input", ("DIMS", "dims"), "{'input_ids': (1, 128)}"),
         "output_budgets": (parse_output_budgets, "output", ("L", "budget"), "{'boxes': 5}")}


def _named(name: str, value) -> dict:
    """layers= / neuron_layers= / input_shapes= / output_budgets= as {NAME: VALUE}, read by the command line's parser:
    a dict's values are written as the flag writes them, so both forms are checked alike (library sweeps:
    layers="fc1" and output_budgets="logits=2" were raw AttributeErrors, input_shapes="input=1,16" was read one
    character at a time)."""
    parse, key, (what, word), example = NAMED[name]
    if isinstance(value, dict):
        value = [f"{k}={_as_text(v, f'option {name}: {key} {k!r} has {word}', f'{name}={example}')}"
                 for k, v in value.items()]
    elif isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"option {name}={value!r} is of type {type(value).__name__}; it takes {{NAME: {what}}} or "
                          f"NAME={what} strings, e.g. {name}={example}.")
    return parse(value, f"option {name}", f"{name}={example}")


def _as_text(value, where: str, example: str) -> str:
    """A dict's value as the command line writes it: a number, or dims as 1,128."""
    parts = value if isinstance(value, (list, tuple)) else (value,)
    if not parts or any(isinstance(n, bool) or not isinstance(n, numbers.Real) for n in parts):
        raise ConfigError(f"{where} {value!r} of type {type(value).__name__}; e.g. {example}.")
    return ",".join(map(str, parts))


def _metric(name: str, value):
    """metric= as given, once its form is checked (calibration.metric_choice reads it when the data is opened)."""
    from onnxprune.calibration.metric_choice import parse_metric_spec

    parse_metric_spec(value)
    return value


# options the API and recipes may give in more than one form (or a form of the wrong type): each one's reader
FORMS = {**dict.fromkeys(NAMED, _named), "exclude": _sequence, "levels": _sequence,
         "metric": _metric}


def recipe_of(config: RunConfig | None) -> dict:
    """The choices of a run as a flat dict, without the per-run data (None values left out)."""
    if config is None:
        return {}
    out = {}
    auto = automatic(config)
    for key, section in config.sections().items():
        for name, value in section.as_dict().items():
            if name in PER_RUN or value is None:
                continue
            if auto and key == "retrain" and name not in config.given:
                # the automatic search chooses these itself (auto.choices); recorded, a replay would pass them as
                # given and the search would not choose (newcomer audit: the report's options and its Reproduce
                # block said lr 0.001, T 4, batch 128 where the run used 0.003, 1, 32)
                continue
            if auto and key == "shrink" and name == "crop_inputs":
                value = resolved_shrink(config).crop_inputs  # as the run resolved it: recorded as the default,
                # a replay gave crop_inputs=False as the user's and wrote an uncropped model (CI audit: another file)
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def resolved_shrink(config: RunConfig):
    """The shrink step's config as the plan runs it: the automatic search crops the input to what the weights read
    unless --crop-inputs, --gather-inputs or --no-neurons said otherwise."""
    shrink = config.shrink
    if (automatic(config) and shrink.neurons and not shrink.gather_inputs
            and "crop_inputs" not in config.given):
        shrink = dataclasses.replace(shrink, crop_inputs=True)  # speed: cut the input to what weights read
    return shrink


def automatic(config: RunConfig) -> bool:
    """--max-loss with training data, and neither --iterations nor --one-shot: the automatic search."""
    data = config.data.data
    return (config.budget.max_loss is not None and not config.auto.one_shot and config.retrain.iterations == 0
            and data is not None and not (isinstance(data, str) and data == "random"))


def build_plan(config: RunConfig) -> list[Step]:
    """The ordered steps a run with these settings takes."""
    has_data = config.data.data is not None
    budget = config.budget.max_loss is not None
    retrain = config.retrain.iterations > 0
    auto = automatic(config)
    steps: list[Step] = [LoadStep(), InventoryStep()]
    if draws_random_inputs(config.data):
        steps.append(RandomShapesStep(config.data))
    decides = budget or config.quantize.weight_bits == QUANT_AUTO  # choices measured on held-out samples
    if has_data:
        steps.append(DataStep(config.data, split=decides and (retrain or auto), small_data=auto,
                              budget=config.budget.max_loss, output_budgets=config.budget.output_budgets))
    steps.append(ReadCheckStep(config.data))
    steps.append(TargetsStep(config.targets, budgeted=budget))
    shrink = config.shrink
    if auto:
        steps.append(AutoSearchStep(config.auto, config.budget, config.retrain, config.targets, config.shrink,
                                    config.scan, config.given))
        shrink = resolved_shrink(config)
    elif budget:
        timed = not retrain and config.auto.time_budget is not None  # --one-shot --time-budget: bounded too
        if has_data and not retrain and not draws_random_inputs(config.data):
            steps.append(ChooseApartStep(config.budget, config.targets.criterion))
        if timed:
            from onnxprune.converter.auto import parse_duration

            steps.append(ClockStep(parse_duration(config.auto.time_budget)))
        steps.append(ScanStep(config.scan, budget_pp=None if retrain else config.budget.max_loss, timed=timed))
        steps.append(AllocateStep(config.budget) if retrain else FitBudgetStep(config.budget, timed=timed))
    if auto:
        pass
    elif retrain:
        steps.append(BudgetSearchStep(config.retrain, config.budget) if budget else RetrainStep(config.retrain))
    else:
        steps.append(PruneStep())
    if budget and has_data and not draws_random_inputs(config.data):  # tables pruned on the rows the data reads
        steps.append(UnreadRowsStep())
    if config.quantize.weight_bits is not None:
        steps.append(QuantizeStep(config.quantize, config.retrain, config.budget, shrink, config.encode,
                                  trained=retrain or auto))
    # the automatic plan crops inputs by itself: "--crop-inputs: no input feature went" is said only when asked
    encode = EncodeStep(config.encode)
    steps += [ShrinkStep(shrink, asked=shrink.crop_inputs == config.shrink.crop_inputs), encode,
              VerifyStep(config.verify, config.data, encode)]
    if has_data:
        steps.append(MeasureStep())
    steps.append(ReportStep())
    if budget:
        steps.append(BudgetCheckStep(config.budget))
    check_plan(steps)
    return steps


def describe_plan(steps: list[Step]) -> list[dict]:
    """What `--plan` prints: each step's name, what it does, what it needs and gives, its settings."""
    return [{"step": s.name, "does": s.describe(), "needs": list(s.needs), "gives": list(s.gives),
             "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.settings().items()}}
            for s in steps]
