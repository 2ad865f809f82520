"""The command line: a thin layer over converter.pipeline and friends.

Errors: a ConfigError is a usage error (exit 2); any other ConverterError prints `Error: …` (exit 1, or the
error's own code); anything unexpected prints one line too. Tracebacks only with --debug.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

from onnxprune.errors import ConfigError, ConverterError

log = logging.getLogger("onnxprune")


class ConverterException(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class FriendlyCommand(click.Command):
    """A config error is a usage error of the command that was run: its own usage line, exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            if _debug(ctx):
                raise
            raise click.UsageError(str(exc), ctx=ctx) from None


class FriendlyGroup(click.Group):
    """Turns our errors into one line and an exit code; --debug lets the traceback through."""

    command_class = FriendlyCommand

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except ConfigError as exc:
            if _debug(ctx):
                raise
            raise click.UsageError(str(exc), ctx=ctx) from None
        except ConverterError as exc:
            if _debug(ctx):
                raise
            raise ConverterException(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None
        except MemoryError:
            raise ConverterException("out of memory; try a smaller --batch-size or --limit.") from None
        except Exception as exc:
            if _debug(ctx):
                raise
            raise ConverterException(
                f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}); "
                "rerun with --debug for the traceback and please report it."
            ) from None


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("ONNXPRUNE_DEBUG") == "1"


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", count=True, help="More log lines (-vv for debug).")
@click.version_option(package_name="onnxprune")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int):
    """onnxprune: learn which connections of an ONNX model matter, drop the rest, verify the result.

    \b
    Examples:
      onnxprune demo -o demo-out
      onnxprune inspect model.onnx
      onnxprune prune model.onnx -o small.onnx --sparsity 0.8 --data calib.npz
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.DEBUG if (debug or verbose >= 2) else logging.INFO if verbose == 1 else logging.WARNING
    _setup_logging(level)


def _setup_logging(level: int) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_onnxprune", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("onnxprune: %(levelname)s: %(message)s"))
    handler._onnxprune = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


# ---------------------------------------------------------------- inspect


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, nothing else.")
def inspect(model: Path, as_json: bool):
    """List the prunable weights of MODEL, and what was left alone and why.

    \b
    Example:
      onnxprune inspect resnet.onnx --json > weights.json
    """
    from onnxprune.converter.inspect import inspect_model, print_inspection

    info = inspect_model(model)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        print_inspection(info)


# ---------------------------------------------------------------- prune


def _parse_layers(values: tuple[str, ...], flag: str = "--layer") -> dict[str, float]:
    layers = {}
    for item in values:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise ConfigError(f"{flag} '{item}' is not NAME=SPARSITY; e.g. {flag} fc1=0.9.")
        try:
            layers[name] = float(value)
        except ValueError:
            raise ConfigError(f"{flag} '{item}': '{value}' is not a number; e.g. {flag} fc1=0.9.") from None
        if not 0.0 <= layers[name] < 1.0:
            raise ConfigError(f"{flag} '{item}': sparsity must be in [0, 1).")
    return layers


def _data_options(f):
    """The calibration-data flags shared by prune and sensitivity."""
    for opt in reversed([
        click.option("--data", type=str, help="Calibration/training data: .npz, a folder of .npz/.npy, or 'random'."),
        click.option("--eval-data", type=str, help="Held-out data the final metric is reported on."),
        click.option("--labels", type=str, help="Name of the labels array (default: 'labels' if present)."),
        click.option("--metric", type=click.Choice(["accuracy", "top5", "agreement", "rel_l2", "cosine"]),
                     help="Override the automatically chosen metric."),
        click.option("--batch-size", type=int, default=64, show_default=True, help="Batch size for evaluation."),
        click.option("--limit", type=int, help="Use at most N samples of the data."),
        click.option("--levels", type=str, help="Sensitivity levels, e.g. 0.5,0.8,0.9,0.95 (default 0.1 ... 0.99)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for everything random."),
    ]):
        f = opt(f)
    return f


def _parse_levels(text: str | None):
    if not text:
        return None
    try:
        levels = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--levels '{text}' is not a comma-separated list of numbers, e.g. 0.5,0.9,0.99.") from None
    if not levels or any(not 0 < x < 1 for x in levels):
        raise ConfigError(f"--levels '{text}': every level must be a fraction in (0, 1).")
    return levels


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Where to write the pruned model.")
@click.option("--sparsity", type=float, help="Fraction of weights to remove in every layer, e.g. 0.9.")
@click.option("--quality", type=float, help="The paper's rule: drop |w| <= Q x the layer's weight std.")
@click.option("--layer", "layers", multiple=True, metavar="NAME=S", help="Per-layer sparsity (node or weight name, glob ok).")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave these layers dense (node or weight name, glob ok).")
@click.option("--max-loss", type=float, help="Accuracy budget (pp): with training data, the automatic search "
              "(prune, retrain, remove neurons) returns the smallest, fastest model within it.")
@_data_options
@click.option("--val-data", type=str, help="Decision set for --max-loss, never trained on (default: every 10th "
              "sample of --data).")
@click.option("--one-shot", is_flag=True, help="With --max-loss: the sensitivity-scan search only, no retraining.")
@click.option("--time-budget", type=str, help="Wall-time bound of the automatic search: seconds, 90s, 15m, 1h "
              "(default 15m); the best model found is returned.")
@click.option("--threads", type=int, help="torch and onnxruntime threads (default: 1 on <= 2 cores, else half).")
@click.option("--iterations", type=int, default=0, show_default=True, help="Prune -> retrain rounds (0 = one-shot).")
@click.option("--epochs", type=float, default=1.0, show_default=True, help="Retraining epochs per round.")
@click.option("--final-epochs", type=float, default=0.0, show_default=True, help="Extra fine-tune at the final sparsity.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Retraining learning rate (~1/10 of the original).")
@click.option("--final-lr", type=float, help="Learning rate of the final fine-tune (cosine decay; default --lr).")
@click.option("--train-batch-size", type=int, default=128, show_default=True, help="Batch size for retraining.")
@click.option("--label-smoothing", type=float, default=0.0, show_default=True)
@click.option("--distill-weight", type=float, default=0.5, show_default=True, help="Share of distillation in ce+distill.")
@click.option("--schedule", type=click.Choice(["cubic", "geometric", "linear"]), default="cubic", show_default=True)
@click.option("--loss", "loss_kind", type=click.Choice(["auto", "ce", "distill", "ce+distill"]), default="auto", show_default=True,
              help="auto: cross-entropy with labels, distillation from the dense model without.")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Distillation temperature.")
@click.option("--alternate", is_flag=True, help="Retrain conv layers with fc frozen, then fc with conv frozen (paper §4).")
@click.option("--reg", type=click.Choice(["l2", "l1"]), default="l2", show_default=True)
@click.option("--reg-strength", type=float, default=5e-4, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--sparse-format",
    type=click.Choice(["constant", "initializer", "dense"]),
    default="constant",
    show_default=True,
    help="How pruned weights are stored (see README).",
)
@click.option("--validation", type=float, default=0.1, show_default=True,
              help="With --max-loss and --iterations: share of --data held out from retraining, to measure the "
                   "budget on (0: measure on the training data).")
@click.option("--neuron-sparsity", type=float, default=0.0, show_default=True,
              help="Share of each layer's neurons/channels to remove whole while retraining (smaller, faster model).")
@click.option("--neuron-layer", "neuron_layers", multiple=True, metavar="NAME=S",
              help="Neuron sparsity for one layer (node or weight name, glob); overrides --neuron-sparsity.")
@click.option("--no-neurons", is_flag=True, help="Keep dead neurons (skip the shape-shrinking pass).")
@click.option("--crop-inputs", is_flag=True,
              help="Crop the input to the box of features some weight reads (a Slice; fast in onnxruntime).")
@click.option("--gather-inputs", is_flag=True,
              help="Drop every input feature no weight reads, with a Gather (exact set; slower than --crop-inputs).")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path),
              help="Retraining checkpoints, one per round (default: OUTPUT.ckpt; removed after success).")
@click.option("--resume", is_flag=True, help="Continue an interrupted retraining run from its last checkpoint.")
@click.option("--recipe", type=click.Path(path_type=Path), help="Replay the choices of an earlier run's recipe.toml.")
@click.option("--allow-other-model", is_flag=True, help="Apply a recipe written for another model file.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), help="Write report.html, report.json and recipe.toml here.")
@click.option("--force", is_flag=True, help="Write the model even when --max-loss was not met.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, no summary.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, nothing else.")
def prune(model: Path, output: Path, sparsity, quality, layers, exclude, max_loss, data, eval_data, labels, metric,
          batch_size, limit, levels, seed, val_data, one_shot, time_budget, threads, iterations, epochs, final_epochs, lr, final_lr, train_batch_size, label_smoothing,
          distill_weight, schedule, loss_kind, temperature, alternate,
          reg, reg_strength,
          device, sparse_format, validation, neuron_sparsity, neuron_layers, no_neurons, crop_inputs, gather_inputs,
          checkpoint_dir, resume, recipe, allow_other_model, report_dir, force, quiet, as_json):
    """Prune MODEL and write a verified, smaller OUTPUT.

    \b
    Examples:
      onnxprune prune model.onnx -o small.onnx --sparsity 0.9
      onnxprune prune model.onnx -o small.onnx --quality 1.5 --exclude 'conv1*'
      onnxprune prune model.onnx -o small.onnx --max-loss 0.5 --data calib.npz
      onnxprune prune model.onnx -o small.onnx --data train.npz --eval-data test.npz \\
          --layer 'fc1*'=0.97 --sparsity 0.9 --iterations 5 --epochs 2 --report out/
      onnxprune prune model.onnx -o again.onnx --recipe out/recipe.toml --data train.npz
    """
    from onnxprune.converter import modelio
    from onnxprune.converter.pipeline import PruneOptions

    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"--sparsity {sparsity} is outside [0, 1); use e.g. 0.9 to remove 90% of the weights.")
    unused = [flag for flag, value in (("--labels", labels), ("--metric", metric), ("--limit", limit),
                                       ("--eval-data", eval_data)) if value is not None]
    if data is None and unused:
        raise ConfigError(f"{', '.join(unused)} without --data: only calibration data uses them; pass --data or drop them.")
    if recipe is not None:
        options = _options_from_recipe(recipe, model, allow_other_model, data=data, eval_data=eval_data)
    else:
        options = PruneOptions(
            sparsity=sparsity, quality=quality, layers=_parse_layers(layers), exclude=tuple(exclude),
            max_loss=max_loss, levels=_parse_levels(levels), data=data, eval_data=eval_data, labels=labels,
            metric=metric, batch_size=batch_size, limit=limit, iterations=iterations, epochs=epochs,
            final_epochs=final_epochs, lr=lr, final_lr=final_lr, train_batch_size=train_batch_size,
            label_smoothing=label_smoothing, distill_weight=distill_weight, schedule=schedule, loss=loss_kind,
            temperature=temperature,
            alternate=alternate, reg=reg, reg_strength=reg_strength,
            device=device, sparse_format=sparse_format, neurons=not no_neurons, gather_inputs=gather_inputs,
            crop_inputs=crop_inputs, seed=seed, validation=validation, neuron_sparsity=neuron_sparsity,
            neuron_layers=_parse_layers(neuron_layers, "--neuron-layer"), val_data=val_data, one_shot=one_shot,
            time_budget=time_budget, threads=threads, auto_overrides=_given(
                lr=lr, epochs=epochs, neuron_sparsity=neuron_sparsity, train_batch_size=train_batch_size),
        )
    modelio.check_output_path(output, protect=(model,))
    if report_dir is not None:
        _check_report_dir(report_dir)
    if options.iterations > 0:
        options.checkpoint_dir = str(checkpoint_dir or output.with_name(output.name + ".ckpt"))
        options.resume = resume
    elif resume:
        raise ConfigError("--resume continues an interrupted retraining run; this run has no --iterations.")
    execute(model, output, options, report_dir=report_dir, quiet=quiet or as_json, as_json=as_json, force=force,
            command=["onnxprune", *sys.argv[1:]])


def _given(**values) -> dict:
    """The options typed on the command line (not defaulted): the automatic search takes them as given."""
    ctx = click.get_current_context()
    return {k: v for k, v in values.items()
            if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}


def _check_report_dir(report_dir: Path) -> None:
    if report_dir.exists() and not report_dir.is_dir():
        raise ConfigError(f"--report '{report_dir}' is a file; give a folder.")
    if not report_dir.parent.exists():
        raise ConfigError(f"--report folder's parent '{report_dir.parent}' does not exist; create it first.")


def _options_from_recipe(path: Path, model: Path, allow_other_model: bool, **data):
    from onnxprune.converter import modelio
    from onnxprune.converter.pipeline import PruneOptions
    from onnxprune.converter.recipe import load_recipe

    if not path.is_file():
        raise ConfigError(f"recipe '{path}' does not exist; pass the recipe.toml an earlier run wrote.")
    choices = load_recipe(path, modelio.sha256_file(model) if Path(model).is_file() else None,
                          allow_other_model=allow_other_model)
    try:
        return PruneOptions(**choices, **data)
    except TypeError as exc:
        raise ConfigError(f"recipe '{path}' does not fit this onnxprune: {exc}") from None


def execute(model, output: Path, options, *, report_dir=None, quiet=False, as_json=False, force=False, command=None):
    """Run the pipeline, check the budget, write the model (and the report), print the summary."""
    from onnxprune.converter import modelio
    from onnxprune.converter.pipeline import budget_error, run
    from onnxprune.converter.progress import Progress

    progress = Progress(quiet=quiet)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # a library that prints (onnx-graphsurgeon) must not break --json
            result = run(model, options, progress)
    finally:
        progress.close()
    if not result.state.masks and options.exclude:
        raise ConfigError(f"--exclude {' '.join(options.exclude)} leaves no layer to prune; exclude fewer layers.")
    report = result.report
    report["command"] = list(command or [])
    failed = budget_error(report)
    if failed is not None and not force:
        if as_json:
            click.echo(json.dumps(report, indent=2, default=_json_default))
        raise failed
    modelio.save_model(result.model, output, protect=(Path(model),) if isinstance(model, (str, os.PathLike)) else ())
    report["output"] = str(output)
    report["file_size_after"] = output.stat().st_size
    if report_dir is not None:
        _write_report(result, report_dir)
    if options.checkpoint_dir:
        from onnxprune.converter.checkpoint import Checkpoints

        Checkpoints(options.checkpoint_dir, "").clear()  # the run is complete: its checkpoints are not needed
    if as_json:
        click.echo(json.dumps(report, indent=2, default=_json_default))
    elif not quiet:
        from onnxprune.converter.inspect import print_prune_summary

        print_prune_summary(report)
    if failed is not None:  # forced: written, but the exit code still says the budget was missed
        raise failed
    return result


def _write_report(result, report_dir: Path) -> None:
    from onnxprune.converter.latency import measure_latency
    from onnxprune.converter.recipe import dump_recipe
    from onnxprune.converter.report import write_report

    report_dir.mkdir(exist_ok=True)
    try:
        result.report["latency"] = measure_latency(result.original, result.model)
    except Exception as exc:  # latency is information, never a reason to fail a run
        log.warning("latency measurement failed: %s", exc)
    dump_recipe(result.report["options"], report_dir / "recipe.toml", model_sha256=result.report.get("input_sha256"),
                report=result.report, model=result.report.get("model"))
    html, _ = write_report(result.report, report_dir, original_model=result.original,
                           pruned_dense_model=result.dense_model, sensitivity=result.report.get("sensitivity"),
                           history=result.history, latency=result.report.get("latency"))
    result.report["report"] = str(html)


def _json_default(value):
    import numpy as np

    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


# ---------------------------------------------------------------- sensitivity


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@_data_options
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), help="Folder for sensitivity.json and the plot.")
@click.option("--neurons", "by_neurons", is_flag=True,
              help="Mask whole neurons per layer instead of single weights (to choose --neuron-layer NAME=S).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, nothing else.")
def sensitivity(model, data, eval_data, labels, metric, batch_size, limit, levels, seed, out_dir, by_neurons, quiet,
                as_json):
    """Prune one layer at a time at increasing sparsity and measure the metric (the paper's Figure 6).

    \b
    Examples:
      onnxprune sensitivity model.onnx --data calib.npz -o scan/
      onnxprune sensitivity model.onnx --data calib.npz --labels y --levels 0.5,0.9,0.99 --json
      onnxprune sensitivity model.onnx --data calib.npz --neurons -o scan/   # neuron_sensitivity.json/.png
    """
    from onnxprune.calibration.plots import plot_sensitivity, sensitivity_table
    from onnxprune.converter import modelio
    from onnxprune.converter.pipeline import Data, PruneOptions, inventory_of, load, scan
    from onnxprune.converter.progress import Progress

    if eval_data is not None:
        raise ConfigError("--eval-data is for prune; the sensitivity scan measures on --data only.")
    if data is None:
        raise ConfigError("sensitivity needs data to measure on; pass --data FILE.npz (or --data random for a smoke test).")
    if out_dir is not None:
        _check_report_dir(out_dir)
    options = PruneOptions(data=data, labels=labels, metric=metric, batch_size=batch_size, limit=limit,
                           levels=_parse_levels(levels), seed=seed)
    options.validate()
    loaded = load(model)
    inventory = inventory_of(loaded.model, where=str(model))
    progress = Progress(quiet=quiet or as_json)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = scan(loaded.model, inventory, Data(loaded.model, options).calibration, options, progress,
                          neurons=by_neurons)
    finally:
        progress.close()
    stem = "neuron_sensitivity" if by_neurons else "sensitivity"
    if out_dir is not None:
        out_dir.mkdir(exist_ok=True)
        modelio.atomic_write_bytes(out_dir / f"{stem}.json", result.to_json().encode())
        plot_sensitivity(result, out_dir / f"{stem}.png")
    if as_json:
        click.echo(result.to_json())
        return
    from rich.table import Table

    from onnxprune.converter.inspect import _console

    rows = sensitivity_table(result)
    what = "whole neurons, " if by_neurons else ""
    table = Table(title=f"Sensitivity ({what}{result.metric} on {result.data}; dense {result.dense:.2f}%)")
    for col in rows[0] if rows else []:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    console = _console()
    console.print(table)
    if any(lay.coupled for lay in result.layers):
        console.print("residual: the layer's output meets a residual Add; pruning it alone can look harmless.")
    if out_dir is not None:
        console.print(f"wrote {out_dir / (stem + '.json')} and {out_dir / (stem + '.png')}")


# ---------------------------------------------------------------- demo


@cli.command()
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("onnxprune-demo"),
              show_default=True, help="Folder for the pruned model, report and recipe.")
@click.option("--max-loss", type=float, default=0.5, show_default=True, help="Accuracy budget in percentage points.")
@click.option("--iterations", type=int, default=8, show_default=True, help="Prune -> retrain rounds.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo(out_dir: Path, max_loss: float, iterations: int, quiet: bool):
    """Run the whole pipeline on the shipped LeNet-300-100 and MNIST slice (about a minute on a laptop CPU).

    Sensitivity scan -> budgeted prune -> retrain (iterated, up to half of each layer's neurons masked whole
    on the way) -> dead-neuron removal and input crop -> sparse write -> verify, then a report (report.html) you can
    open offline.
    """
    from onnxprune.converter.pipeline import PruneOptions
    from onnxprune.models.paths import LENET300_ONNX, MNIST_SLICE, MNIST_TRAIN_SLICE

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"-o '{out_dir}' is a file; give a folder.")
    out_dir.mkdir(parents=True, exist_ok=True)
    options = PruneOptions(max_loss=max_loss, data=str(MNIST_TRAIN_SLICE), eval_data=str(MNIST_SLICE),
                           labels="labels", iterations=iterations, epochs=2.0, lr=0.02, loss="ce+distill",
                           levels=(0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99), seed=0, neuron_sparsity=0.5,
                           crop_inputs=True)
    output = out_dir / "lenet300-pruned.onnx"
    result = execute(LENET300_ONNX, output, options, report_dir=out_dir, quiet=quiet, force=True,
                     command=["onnxprune", "demo", "-o", str(out_dir)])
    if not quiet:
        click.echo(f"\nmodel:  {output}\nreport: {out_dir / 'report.html'}\nrecipe: {out_dir / 'recipe.toml'}")
    return result


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: temp files are removed, no partial output stays


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="onnxprune")


if __name__ == "__main__":
    main()
