"""Recipes: every choice a run made, as TOML, so `onnxprune prune MODEL --recipe recipe.toml` replays it.

    # onnxprune recipe ...
    [onnxprune]                      who wrote it, for which model
    version = "0.1.0"
    recipe_format = 1
    model_sha256 = "9f2c…"
    [options.encode]                 each step's config as the run resolved it (None values left out)
    sparse_format = "constant"
    [options.data]
    seed = 0
    [options.targets.layers]
    "fc1.weight" = 0.92
    [resolved.sparsity]              for the record: the fraction of each layer actually pruned
    "fc1.weight" = 0.92              (read back but not used: the options above reproduce it)

Data (`--data`, `--eval-data`) is given per run and is not part of a recipe. Loading is strict: an unknown key
is a ConfigError naming it and the valid keys, a value of the wrong type names the field, and a recipe written for
another model (sha256 mismatch) is refused unless the caller explicitly allows it.
"""

from __future__ import annotations

import logging
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path

from onnxprune.errors import ConfigError
from onnxprune.plain import plain

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

RECIPE_FORMAT = 2  # 2: [options.<step>] tables, one per step config; 1: one flat [options] table
META_KEYS = ("version", "recipe_format", "model_sha256", "model")
SECTIONS = ("onnxprune", "options", "resolved")
RESOLVED_KEYS = ("sparsity", "threshold", "density")
SHA_KEYS = ("input_sha256", "model_sha256")  # accepted in the flat dict given to dump_recipe
HEADER = (
    "# onnxprune recipe: every choice of one run.\n"
    "# Replay: onnxprune prune MODEL -o OUT.onnx --recipe recipe.toml (and the same --data when it used data).\n"
)


# ---------------------------------------------------------------- writing


def dump_recipe(options, path, *, model_sha256: str | None = None, report: dict | None = None,
                model: str | None = None) -> Path:
    """Write a recipe atomically and return its path.

    `options` is `plan.recipe_of(config)` (or a RunConfig, or any flat dict of the step configs' fields); an `input_sha256` /
    `model_sha256` key in it is taken as the model's sha256. With `report` (the pipeline's report dict), the
    per-layer sparsities actually reached are recorded under [resolved].
    """
    from onnxprune.converter.modelio import atomic_write_bytes

    return atomic_write_bytes(Path(path), recipe_text(options, model_sha256=model_sha256, report=report,
                                                      model=model).encode("utf-8"))


def recipe_text(options, *, model_sha256: str | None = None, report: dict | None = None, model: str | None = None) -> str:
    import tomli_w

    return HEADER + "\n" + tomli_w.dumps(build_recipe(options, model_sha256=model_sha256, report=report, model=model))


def build_recipe(options, *, model_sha256: str | None = None, report: dict | None = None,
                 model: str | None = None) -> dict:
    """The recipe as a dict: {"onnxprune": meta, "options": {...}, "resolved": {...}} (TOML-ready)."""
    from onnxprune.converter.plan import RunConfig, recipe_of

    flat = recipe_of(options) if isinstance(options, RunConfig) else dict(options)
    for key in SHA_KEYS:
        value = flat.pop(key, None)
        model_sha256 = model_sha256 or value
    if report is not None:
        model_sha256 = model_sha256 or report.get("input_sha256")
    valid = option_fields()
    unknown = sorted(set(flat) - set(valid))
    if unknown:
        raise ConfigError(f"cannot write a recipe with unknown option(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(valid)}.")
    meta = {"version": onnxprune_version(), "recipe_format": RECIPE_FORMAT}
    if model_sha256:
        meta["model_sha256"] = str(model_sha256)
    if model:
        meta["model"] = str(model)
    out = {"onnxprune": meta, "options": plain(_by_step({k: flat[k] for k in valid if k in flat}), toml=True)}
    resolved = _resolved(report) if report is not None else {}
    if resolved:
        out["resolved"] = resolved
    return out


def _by_step(flat: dict) -> dict:
    """{choice: value} -> {step config: {choice: value}}: the recipe holds the step configs."""
    from onnxprune.converter.plan import owners

    out: dict[str, dict] = {}
    for name, value in flat.items():
        out.setdefault(owners()[name], {})[name] = value
    return out


def _resolved(report: dict) -> dict:
    """Per weight: the fraction actually pruned, its magnitude threshold and the density left."""
    out: dict[str, dict] = {k: {} for k in RESOLVED_KEYS}
    for row in report.get("layers") or []:
        name, density = row.get("weight"), row.get("density")
        if name is None or density is None or row.get("target") is None:
            continue
        out["sparsity"][name] = _tidy(1.0 - float(density))
        out["density"][name] = _tidy(float(density))
        if row.get("threshold") is not None:
            out["threshold"][name] = _tidy(float(row["threshold"]))
    return plain({k: v for k, v in out.items() if v}, toml=True)


def _tidy(x: float) -> float:
    """10 significant digits: 1 - 0.66 is written 0.34, not 0.33999999999999997."""
    return float(f"{x:.10g}")


# ---------------------------------------------------------------- reading


def load_recipe(path, model_sha256: str | None, *, allow_other_model: bool = False,
                override_hint: str = "--allow-other-model") -> dict:
    """Read and validate a recipe; return the choices it holds, flat, for `plan.configure` (data not included).

    `model_sha256` is the model it is applied to (None: unknown, not checked). A recipe written for another model
    raises ConfigError unless `allow_other_model`; `override_hint` is what the message tells the user to pass.
    """
    path = Path(path)
    doc = _read(path)
    _check_keys(doc, SECTIONS, f"recipe '{path}'")
    meta = doc.get("onnxprune", {})
    options = doc.get("options", {})
    for section, value in (("onnxprune", meta), ("options", options), ("resolved", doc.get("resolved", {}))):
        if not isinstance(value, Mapping):
            raise ConfigError(f"recipe '{path}': [{section}] must be a table, not {type(value).__name__}.")
    _check_keys(meta, META_KEYS, f"recipe '{path}' [onnxprune]")
    _check_keys(doc.get("resolved", {}), RESOLVED_KEYS, f"recipe '{path}' [resolved]")
    _check_format(meta, path)
    _check_model(meta, path, model_sha256, allow_other_model, override_hint)
    if meta.get("recipe_format", RECIPE_FORMAT) >= 2:
        options = _flatten(options, path)
    return _options(options, path)


def _flatten(options: Mapping, path: Path) -> dict:
    """[options.<step>] tables -> one {choice: value}; a choice under the wrong step is an error naming the right one."""
    from onnxprune.converter.plan import owners

    steps = sorted(set(owners().values()))
    _check_keys(options, steps, f"recipe '{path}' [options]")
    flat = {}
    for step, table in options.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"recipe '{path}': [options.{step}] must be a table, not {_type(table)}.")
        for name, value in table.items():
            owner = owners().get(name)
            if owner is not None and owner != step:
                raise ConfigError(f"recipe '{path}' [options.{step}] {name}: '{name}' belongs to [options.{owner}].")
            flat[name] = value
    return flat


def _read(path: Path) -> dict:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"recipe '{path}' does not exist; check the path.") from None
    except IsADirectoryError:
        raise ConfigError(f"recipe '{path}' is a folder; pass the recipe.toml inside it.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"recipe '{path}' is not UTF-8 text; is it a TOML recipe?") from None
    except OSError as exc:
        raise ConfigError(f"recipe '{path}' cannot be read: {exc.strerror or exc}.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"recipe '{path}' is not valid TOML: {exc}.") from None


def _check_keys(table: Mapping, valid, where: str) -> None:
    unknown = [k for k in table if k not in valid]
    if unknown:
        data = [k for k in unknown if k in _data_fields()]
        hint = f" ({', '.join(data)}: data is given per run, e.g. --data FILE.npz)" if data else ""
        raise ConfigError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}{hint}; "
                          f"valid keys: {', '.join(valid)}.")


def _check_format(meta: Mapping, path: Path) -> None:
    fmt = meta.get("recipe_format", RECIPE_FORMAT)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > RECIPE_FORMAT:
        raise ConfigError(f"recipe '{path}' has recipe_format {fmt!r}; this onnxprune reads format "
                          f"{RECIPE_FORMAT} and older. Upgrade onnxprune.")
    version = meta.get("version")
    if version is not None and version != onnxprune_version():
        log.warning("recipe '%s' was written by onnxprune %s, this is %s: the replay may differ.",
                    path, version, onnxprune_version())


def _check_model(meta: Mapping, path: Path, model_sha256, allow_other_model: bool, hint: str) -> None:
    recorded = meta.get("model_sha256")
    if recorded is not None and not isinstance(recorded, str):
        raise ConfigError(f"recipe '{path}': [onnxprune] model_sha256 must be a string.")
    if recorded is None or model_sha256 is None:
        if recorded is None:
            log.warning("recipe '%s' records no model sha256: cannot check it was written for this model.", path)
        return
    if recorded.lower() != str(model_sha256).lower():
        if allow_other_model:
            log.warning("recipe '%s' was written for another model (sha256 %s…); used anyway as asked.",
                        path, recorded[:12])
            return
        name = f" ('{meta['model']}')" if meta.get("model") else ""
        raise ConfigError(
            f"recipe '{path}' was written for another model{name}: sha256 {recorded[:12]}…, this model has "
            f"{str(model_sha256)[:12]}…. Its per-layer choices may not fit; pass {hint} to use it anyway."
        )


def _options(options: Mapping, path: Path) -> dict:
    fields = option_fields()
    _check_keys(options, fields, f"recipe '{path}' [options]")
    hints = _field_types()
    out = {}
    for key, value in options.items():
        out[key] = coerce(value, hints.get(key, typing.Any), f"recipe '{path}' [options] {key}")
    return out


# what a field of each type takes: its check, and how a message says it
_KINDS = {bool: (lambda v: isinstance(v, bool), "true or false"),
          int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
          float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
          str: (lambda v: isinstance(v, (str, os.PathLike)), "a string"),
          tuple: (lambda v: isinstance(v, (list, tuple)), "a list"),
          dict: (lambda v: isinstance(v, Mapping), "a table (name = value)")}


def coerce(value, hint, where: str):
    """Check a value against a step config annotation (a recipe's TOML value; an API keyword, by plan.configure):
    a list becomes a tuple where the field is a tuple, an integer a float where it is a float. A wrong type is a
    ConfigError saying what the option takes (every type of a union)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        if value is None and len(kinds) < len(args):
            return None
        for arg in kinds:
            try:
                return coerce(value, arg, where)
            except ConfigError:
                if len(kinds) == 1:
                    raise
        wants = " or ".join(_KINDS[k][1] for k in (typing.get_origin(a) or a for a in kinds) if k in _KINDS)
        raise ConfigError(f"{where} must be {wants}, not {_type(value)}.")
    kind = origin or hint
    if kind not in _KINDS:  # typing.Any, or a type no check is written for
        return value
    check, want = _KINDS[kind]
    if not check(value):
        raise ConfigError(f"{where} must be {want}, not {_type(value)}.")
    if kind is tuple:
        item = args[0] if args else typing.Any
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if kind is dict:
        item = args[1] if len(args) == 2 else typing.Any
        return {str(k): coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    return float(value) if kind is float else os.fspath(value) if kind is str else value


def _type(value) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table", tuple: "a tuple", type(None): "None"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- what a recipe may hold


def option_fields() -> tuple[str, ...]:
    """Every step config's fields, in order, without the per-run data fields."""
    from onnxprune.converter.plan import choice_names

    return tuple(n for n in choice_names() if n not in _data_fields())


def _data_fields() -> tuple[str, ...]:
    from onnxprune.converter.plan import PER_RUN

    return PER_RUN


def _field_types() -> dict:
    from onnxprune.converter.plan import choice_types

    return choice_types()


def onnxprune_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("onnxprune")
    except metadata.PackageNotFoundError:
        return "unknown"
