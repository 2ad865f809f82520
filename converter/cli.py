"""The command line: a thin layer over converter.pipeline and friends.

Errors: a ConfigError is a usage error (exit 2); any other ConverterError prints `Error: …` (exit 1, or the
error's own code); anything unexpected prints one line too (exit 4, INTERNAL); an interrupt prints `Aborted!`
(exit 128 + the signal's number: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP). With --json a failed command's stdout is one
document too: the report of a missed budget, else {"error": {...}} (`_json_failure`). Tracebacks only with --debug.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import click

from onnxprune import interrupts
from onnxprune.errors import ConfigError, ConverterError, one_line

SPARSE_FORMATS = ("constant", "initializer", "dense", "compact")  # passes.storage.FORMATS; literal: a light import

log = logging.getLogger("onnxprune")
_STARTED: float | None = None  # time.perf_counter() when this process started (main); --time-budget counts from it


INTERNAL = 4  # exit code of an unexpected failure (a defect of onnxprune): not 1, which says the input is unusable

# This process's command: whether --json was asked for, whether a JSON document was printed, and how it failed (the
# `error` document a --json run prints when it printed none). Reset by each FriendlyGroup.main.
_RUN: dict = {"json": False, "shown": False, "failure": None, "signal": None}


class ConverterException(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1, kind: str = "error"):
        super().__init__(message)
        self.exit_code, self.kind = exit_code, kind


class Interrupted(click.ClickException):
    """Ctrl-C, SIGTERM or SIGHUP: `Aborted!` on stderr (as click says it), exit 128 + the signal's number, as a shell
    reports a process the signal ended (CI audit: it was exit 1, the code of unusable input)."""

    kind = "interrupted"

    def __init__(self, signum: int):
        super().__init__("Aborted!")
        self.exit_code = 128 + signum

    def show(self, file=None) -> None:
        click.echo("Aborted!", err=True)


def _echo_json(doc) -> None:
    """Every JSON document a command prints goes here: a --json run prints one, on success and on failure."""
    from onnxprune.plain import dumps

    _RUN["shown"] = True
    click.echo(dumps(doc, indent=2))


def _record(exc: click.ClickException) -> None:
    """The failure a --json run reports as its document (the first one: later ones are its consequences)."""
    if _RUN["failure"] is None:
        kind = getattr(exc, "kind", "usage" if isinstance(exc, click.UsageError) else "error")
        _RUN["failure"] = {"kind": kind, "message": exc.format_message(), "exit_code": exc.exit_code}


def _json_failure(code: int) -> None:
    """A --json command that failed without printing its document prints {"error": {kind, message, exit_code}}
    (CI audit: stdout was empty, and a script reading it as JSON got a parse error, not the reason). `kind`: the
    error's class (ModelError, CalibrationError, ...), `usage`, `budget`, `internal`, `interrupted` or `output`."""
    if not _RUN["json"] or _RUN["shown"]:
        return
    failure = dict(_RUN["failure"] or {"kind": "error", "message": "see standard error"})
    failure["exit_code"] = code
    with contextlib.suppress(OSError, ValueError):
        _echo_json({"error": failure})
        sys.stdout.flush()


def _wants_json(argv: list[str]) -> bool:
    return "--json" in (argv[:argv.index("--")] if "--" in argv else argv)


class FriendlyCommand(click.Command):
    """A config error is a usage error of the command that was run: its own usage line, exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            _traceback(ctx)
            raise click.UsageError(str(exc), ctx=ctx) from None


def _interrupted(signum: int, frame=None) -> None:
    """Remember which signal interrupts the run (its exit code), then unwind as KeyboardInterrupt."""
    _RUN["signal"] = signum
    raise KeyboardInterrupt


def _silence_stdout() -> None:
    """Standard output to /dev/null: nothing more can be said there, and the exit's flush must not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _internal(exc: BaseException) -> "ConverterException":
    """An exception no user can cause, as its one line (exit INTERNAL: a CI job tells an onnxprune defect from
    unusable input, which is 1)."""
    return ConverterException(f"internal error ({one_line(exc)}); "
                              "rerun with --debug for the traceback and please report it.", INTERNAL, "internal")


def _traceback(ctx: click.Context) -> None:
    """With --debug, the traceback of the exception being handled, on stderr; the exit code stays the one the
    error has without it (sweep 15: --debug turned every usage error and missed budget into exit 1, so a CI job
    that turned it on to diagnose something got another result)."""
    if _debug(ctx):
        import traceback

        traceback.print_exc(file=sys.stderr)


class FriendlyGroup(click.Group):
    """Turns our errors into one line and an exit code; --debug lets the traceback through."""

    command_class = FriendlyCommand

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's main, and with --json a document on stdout also when the command fails (`_json_failure`)."""
        argv = list(sys.argv[1:] if args is None else args)
        _RUN.update(json=_wants_json(argv), shown=False, failure=None, signal=None)
        try:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        except SystemExit as done:
            code = done.code
            if code == 1 and _RUN["signal"] is not None and _RUN["failure"] is None:
                code = 128 + _RUN["signal"]  # interrupted outside the command (click's own "Aborted!", exit 1)
                _RUN["failure"] = {"kind": "interrupted", "message": "Aborted!"}
            if standalone_mode and isinstance(code, int) and code != 0:
                _json_failure(code)
            if code != done.code:
                raise SystemExit(code) from None
            raise

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as exc:  # the group's own options (`onnxprune --bogus`)
            _record(exc)
            raise

    def invoke(self, ctx: click.Context):
        try:
            return self._invoke(ctx)
        except click.ClickException as exc:
            _record(exc)
            raise

    def _invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except ConfigError as exc:
            _traceback(ctx)
            raise click.UsageError(str(exc), ctx=ctx) from None
        except ConverterError as exc:
            _traceback(ctx)
            kind = "budget" if exc.exit_code == 3 else type(exc).__name__
            raise ConverterException(str(exc), exc.exit_code, kind) from None
        except KeyboardInterrupt:
            raise Interrupted(_RUN["signal"] or signal.SIGINT) from None
        except BrokenPipeError:  # the reader stopped reading (`| head -1`): its choice; the work is done, exit 0
            _silence_stdout()
            raise click.exceptions.Exit(0) from None
        except OSError as exc:  # not ours to write (ours are ConfigErrors): standard output full or gone
            _traceback(ctx)
            if exc.errno not in (errno.ENOSPC, errno.EIO, errno.EBADF):
                raise _internal(exc) from None
            _silence_stdout()
            raise ConverterException(f"{exc.filename or 'standard output'} cannot be written "
                                     f"({exc.strerror or type(exc).__name__}); any model was written before this "
                                     "(its path is -o); redirect the output where there is room.", 2, "output") from None
        except MemoryError:
            raise ConverterException("out of memory; try a smaller --batch-size or --limit.", 1, "memory") from None
        except Exception as exc:
            _traceback(ctx)
            raise _internal(exc) from None


def _verbosity(f):
    """-v/-vv/--debug, accepted after the subcommand too (`onnxprune prune … -v`)."""

    def set_debug(ctx: click.Context, _param, value: bool):
        if value:
            ctx.ensure_object(dict)["debug"] = True
            _setup_logging(logging.DEBUG)
        return value

    def set_verbose(ctx: click.Context, _param, value: int):
        if value:
            _setup_logging(logging.DEBUG if value >= 2 else logging.INFO)
        return value

    f = click.option("--debug", is_flag=True, expose_value=False, callback=set_debug,
                     help="Show tracebacks and debug logs.")(f)
    return click.option("-v", "--verbose", count=True, expose_value=False, callback=set_verbose,
                        help="More log lines (-vv for debug).")(f)


def _output_options(f):
    """The same -q and --json in every command."""
    f = click.option("-q", "--quiet", is_flag=True, help="Nothing on the terminal but warnings and errors: no "
                     "progress, no tables (results go to the files).")(f)
    f = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, nothing else.")(f)
    return _verbosity(f)


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
    if not _debug(ctx):  # numpy's overflow/invalid-value lines name our source files; what they mean is said once
        warnings.filterwarnings("ignore", category=RuntimeWarning)  # (calibration.metrics: inf or NaN outputs)


def _budget_spec(values: tuple[str, ...]) -> tuple[float | None, dict[str, float]] | None:
    """--max-loss L (once) and --max-loss OUTPUT=L (each output once): (the run's budget, {output: its own})."""
    from onnxprune.converter.plan import parse_budgets

    return parse_budgets(values) if values else None


class _Source(logging.Formatter):
    """`onnxprune: LEVEL: message` for onnxprune's records, the library's own name for another library's (CI audit:
    matplotlib's "mkdir -p failed for path ~/.config/matplotlib" under a read-only HOME read "onnxprune: WARNING:
    mkdir -p failed ...", as if onnxprune had tried to write there)."""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        record.source = "onnxprune" if name in ("onnxprune", "root") or name.startswith("onnxprune.") else name
        return super().format(record)


def _setup_logging(level: int) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_onnxprune", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Source("%(source)s: %(levelname)s: %(message)s"))
    handler._onnxprune = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


# ---------------------------------------------------------------- inspect


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@_output_options
def inspect(model: Path, as_json: bool, quiet: bool):
    """List the prunable weights of MODEL, and what was left alone and why.

    \b
    Example:
      onnxprune inspect resnet.onnx --json > weights.json
    """
    from onnxprune.converter.inspect import inspect_model, print_inspection

    info = inspect_model(model)
    if as_json:
        _echo_json(info)
    elif not quiet:
        print_inspection(info)


# ---------------------------------------------------------------- prune


def _data_options(f):
    """The calibration-data flags shared by prune and sensitivity."""
    for opt in reversed([
        click.option("--data", type=str, help="Calibration/training data: .npz, a folder of .npz/.npy, or 'random'."),
        click.option("--eval-data", type=str, help="Held-out data the final metric is reported on."),
        click.option("--labels", type=str, help="Name of the labels array (default: 'labels' if present)."),
        click.option("--metric", multiple=True, metavar="[OUTPUT=]KIND", callback=lambda c, p, v: _metric_spec(v),
                     help="Score OUTPUT with KIND (repeatable; only the named outputs count), or a bare KIND for the "
                          "headline output. Kinds: accuracy, top5, agreement, expected_accuracy (label-free), "
                          "seq_agreement, map_iou, mask_iou, ctc_agreement, prob, binary_prob, binary_logit, rel_l2, "
                          "channel_rel_l2, channel_prob, variables (each of a forecast's variables in its own scale), "
                          "detections, cosine, exact; mask_iou, binary_prob and binary_logit at your application's "
                          "threshold as KIND@T (mask_iou@0.3; mask_iou@0.8r: 0.8 of each sample's range); a mean "
                          "in units of the scale the model predicts beside it: OUTPUT=scaled@S (mu=scaled@sigma,pi "
                          "for a mixture, mean=scaled@logvar:log_var). Default: every output, each with the metric "
                          "that fits it."),
        click.option("--batch-size", type=int, default=None, help="Batch size for evaluation (default 64, fewer "
                     "where one batch's activations would pass 2 GB)."),
        click.option("--limit", type=int, help="Use at most N samples of the data."),
        click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
                     callback=lambda c, p, v: _input_shapes(v),
                     help="Fix an input's symbolic dims for random data, verification and latency, e.g. "
                          "input_ids=1,128 (repeatable)."),
        click.option("--levels", type=str, help="Sensitivity levels, e.g. 0.5,0.8,0.9,0.95 (default 0.1 ... 0.99)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for everything random."),
        click.option("--criterion", default="magnitude", show_default=True,
                     help="Which weights go first: magnitude (|w|), wanda (|w|·input norm, per output), obd "
                          "(½·Fisher·w²) or taylor (|w·grad|); all but magnitude score on --data."),
    ]):
        f = opt(f)
    return f


def _input_shapes(values: tuple[str, ...]) -> dict:
    from onnxprune.converter.plan import parse_input_shapes

    return parse_input_shapes(values)


def _metric_spec(values: tuple[str, ...]):
    """--metric as given: None, one bare KIND, or a list of OUTPUT=KIND (checked by calibration.metrics)."""
    if not values:
        return None
    return values[0] if len(values) == 1 and "=" not in values[0] else list(values)


def _parse_levels(text: str | None):
    """--levels as numbers; their range is ScanConfig's to check, for the API's levels= alike."""
    if not text:
        return None
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--levels '{text}' is not a comma-separated list of numbers, e.g. 0.5,0.9,0.99.") from None


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Where to write the pruned model.")
@click.option("--sparsity", type=float, help="Fraction of weights to remove in every layer, e.g. 0.9.")
@click.option("--quality", type=float, help="The paper's rule: drop |w| <= Q x the layer's weight std.")
@click.option("--layer", "layers", multiple=True, metavar="NAME=S", help="Per-layer sparsity (node or weight name, glob ok).")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave these layers dense (node or weight name, glob ok).")
@click.option("--max-loss", multiple=True, metavar="[OUTPUT=]PP", callback=lambda c, p, v: _budget_spec(v),
              help="Accuracy budget (pp): with training data, the automatic search (prune, retrain, remove neurons) "
              "returns the smallest, fastest model within it. OUTPUT=PP (repeatable, beside a bare budget) gives one "
              "output its own, e.g. --max-loss 1 --max-loss boxes=5.")
@click.option("--confidence", type=float, help="With --max-loss: how sure the decision rule must be that a model is "
              "within the budget (one-sided; default about 0.84, one standard error). 0.95 needs more data to prune "
              "as far, and the run says how many samples.")
@click.option("--val-data", type=str, help="Decision set for --max-loss, never trained on (default: every 10th "
              "sample of --data).")
@click.option("--one-shot", is_flag=True, help="With --max-loss: the sensitivity-scan search only, no retraining.")
@click.option("--time-budget", type=str, help="Wall-time bound of the whole automatic run: seconds, 90s, 15m, 1h "
              "(default 15m); the search keeps time for verification and the steps after it and returns the best "
              "model found. With --one-shot it bounds the scan and the fit (untimed without it).")
@click.option("--recovery", type=click.Choice(["auto", "sgd", "reconstruct"]), default="auto", show_default=True,
              help="How the automatic search recovers after each prune step: sgd (retraining through torch), "
                   "reconstruct (layer-wise refit in onnxruntime), or auto (the rule in the README).")
@click.option("--threads", type=int, help="torch and onnxruntime threads (default: torch 1 on <= 2 cores, else "
              "half, at most 4; onnxruntime the same but at least 2 where there are 2 cores).")
@_data_options
@click.option("--iterations", type=int, default=0, show_default=True, help="Prune -> retrain rounds (0 = one-shot).")
@click.option("--epochs", type=float, default=1.0, show_default=True, help="Retraining epochs per round.")
@click.option("--final-epochs", type=float, default=0.0, show_default=True, help="Extra fine-tune at the final sparsity.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Retraining learning rate (~1/10 of the original).")
@click.option("--final-lr", type=float, help="Learning rate of the final fine-tune (cosine decay; default --lr).")
@click.option("--train-batch-size", type=int, default=128, show_default=True, help="Batch size for retraining.")
@click.option("--accumulate", type=int, default=1, show_default=True,
              help="Split each training batch into N micro-batches (same gradient, less memory).")
@click.option("--label-smoothing", type=float, default=0.0, show_default=True)
@click.option("--distill-weight", type=float, default=0.5, show_default=True, help="Share of distillation in ce+distill.")
@click.option("--schedule", type=click.Choice(["cubic", "geometric", "linear"]), default="cubic", show_default=True)
@click.option("--loss", type=click.Choice(["auto", "ce", "distill", "ce+distill"]), default="auto", show_default=True,
              help="auto: cross-entropy with labels, distillation from the dense model without.")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Distillation temperature.")
@click.option("--alternate", is_flag=True, help="Retrain conv layers with fc frozen, then fc with conv frozen (paper §4).")
@click.option("--reg", type=click.Choice(["l2", "l1"]), default="l2", show_default=True)
@click.option("--reg-strength", type=float, default=5e-4, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--sparse-format",
    type=click.Choice(list(SPARSE_FORMATS)),
    default=None,  # the encode step's choice: constant, or compact for a model stored compact, or with --weight-bits
    show_default="constant; compact for a model stored compact, or with --weight-bits",
    help="How pruned weights are stored (see README); compact: smallest exact encoding per weight, decoded by "
         "standard ops onnxruntime folds at load.",
)
@click.option("--weight-bits", type=click.Choice(["16", "8", "7", "6", "5", "4", "3", "2", "1", "auto"]), default=None,
              callback=lambda c, p, v: v if v in (None, "auto") else int(v),
              help="Surviving weights as fp16 (16) or an n-bit k-means codebook per layer (fine-tuned when retraining); "
                   "auto: the smallest width within the budget on the decision data. Changes outputs, measured on the "
                   "final file. Stored --sparse-format compact unless told otherwise.")
@click.option("--quant-epochs", type=float, default=1.0, show_default=True,
              help="Passes over the training data fine-tuning the codebooks after the last retraining round.")
@click.option("--quant-lr", type=float, default=None,
              help="Learning rate of the codebook fine-tuning (default: the last retraining round's).")
@click.option("--validation", type=float, default=0.1, show_default=True,
              help="With --max-loss and --iterations: share of --data held out from retraining, to measure the "
                   "budget on (0: measure on the training data).")
@click.option("--neuron-sparsity", type=float, default=0.0, show_default=True,
              help="Share of each layer's neurons/channels to remove whole while retraining (smaller, faster model); "
                   "with --max-loss alone, the most the automatic search removes.")
@click.option("--neuron-layer", "neuron_layers", multiple=True, metavar="NAME=S",
              help="Neuron sparsity for one layer (node or weight name, glob); overrides --neuron-sparsity.")
@click.option("--no-neurons", is_flag=True, help="Keep dead neurons (skip the shape-shrinking pass; the automatic "
              "search then masks no whole neuron).")
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
@click.option("--plan", "show_plan", is_flag=True, help="Print the steps this command would run, with their settings, "
              "and do nothing else (after the checks a run makes before any work: the model and data files exist, "
              "-o and --report can be written; a failed check exits as the run would).")
@_output_options
def prune(model: Path, output: Path, layers, exclude, levels, neuron_layers, no_neurons, checkpoint_dir, resume,
          recipe, allow_other_model, report_dir, force, quiet, as_json, show_plan, **choices):
    """Prune MODEL and write a verified, smaller OUTPUT.

    \b
    Examples:
      onnxprune prune model.onnx -o small.onnx --sparsity 0.9
      onnxprune prune model.onnx -o small.onnx --quality 1.5 --exclude 'conv1*'
      onnxprune prune model.onnx -o small.onnx --max-loss 0.5 --data calib.npz
      onnxprune prune model.onnx -o small.onnx --data train.npz --eval-data test.npz \\
          --layer 'fc1*'=0.97 --sparsity 0.9 --iterations 5 --epochs 2 --report out/
      onnxprune prune model.onnx -o again.onnx --recipe out/recipe.toml --data train.npz
      onnxprune prune model.onnx -o small.onnx --max-loss 0.5 --data calib.npz --plan
    """
    from onnxprune.converter.plan import configure, parse_layers

    choices = _typed(choices)  # what the user typed; the step configs hold the defaults
    if "max_loss" in choices:  # (the run's budget, each named output's own)
        bare, own = choices.pop("max_loss")
        choices.update({"max_loss": bare} if bare is not None else {}, **({"output_budgets": own} if own else {}))
    if no_neurons:
        choices["neurons"] = False
    if recipe is not None:
        from onnxprune.converter.plan import PER_RUN, RECIPE_OVERRIDES, replay

        # a recipe replays a run's choices; flags beside it were dropped without a word (a helper's --max-loss
        # dense_5=2 beside a recipe of 5 pp: "budget 5 pp ... met"). The per-run ones (data) pass through.
        per_run = (*PER_RUN, *RECIPE_OVERRIDES)
        named = {"neurons": "--no-neurons", "output_budgets": "--max-loss OUTPUT=L"}
        beside = sorted({named.get(k, "--" + k.replace("_", "-")) for k in choices if k not in per_run}
                        | {"--" + n.replace("_", "-") for n, v in (("layer", layers), ("exclude", exclude),
                                                                   ("levels", levels), ("neuron_layer", neuron_layers))
                           if v})
        if beside:
            raise ConfigError(f"--recipe replays the recipe's choices; {', '.join(beside)} given beside it would be "
                              "ignored: drop them, or edit the recipe (or run without --recipe).")
        config = replay(recipe, model, {k: choices[k] for k in per_run if choices.get(k) is not None},
                        allow_other_model=allow_other_model)
    else:
        config = configure(layers=parse_layers(layers), exclude=tuple(exclude), levels=_parse_levels(levels),
                           neuron_layers=parse_layers(neuron_layers, "--neuron-layer"), **choices)
    if config.retrain.iterations > 0:
        config.retrain.checkpoint_dir = str(checkpoint_dir or output.with_name(output.name + ".ckpt"))
        config.retrain.resume = resume
    elif resume:
        raise ConfigError("--resume continues an interrupted retraining run; this run has no --iterations.")
    if show_plan:
        _print_plan(config, as_json, model, output, report_dir)
        return
    _convert_and_show(model, output, config, report_dir=report_dir, quiet=quiet, as_json=as_json, force=force,
                      command=["onnxprune", *sys.argv[1:]])


def _typed(choices: dict) -> dict:
    """The options given on the command line (or by environment), not defaulted: a config's own default stands
    for the rest, and the automatic search knows which settings the user fixed."""
    ctx = click.get_current_context()
    return {k: v for k, v in choices.items() if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}


def _print_plan(config, as_json: bool, model: Path, output: Path, report_dir: Path | None) -> None:
    from onnxprune.converter.convert import data_opens, preflight
    from onnxprune.converter.plan import build_plan, describe_plan

    config.validate()
    preflight(model, output, config, report_dir=report_dir)  # what the run would refuse at once, a plan refuses
    data_opens(model, config)
    plan = describe_plan(build_plan(config))
    if as_json:
        _echo_json({"plan": plan})
        return
    for i, step in enumerate(plan, 1):
        click.echo(f"{i:2d}. {step['step']:<14} {step['does']}")
        for key, value in step["settings"].items():
            click.echo(f"      {key} = {value!r}")


def _convert_and_show(model, output: Path, config, *, report_dir=None, quiet=False, as_json=False, force=False,
                      command=None):
    """Run and write (converter.convert), then show: the summary, or one JSON document with --json."""
    from onnxprune.converter.convert import convert
    from onnxprune.converter.pipeline import budget_error
    from onnxprune.converter.progress import Progress

    def show_json(report):
        _echo_json(report)

    from onnxprune.converter.distributed import is_main

    progress = Progress(quiet=quiet or as_json or not is_main())
    try:
        result = convert(model, output, config, report_dir=report_dir, force=force, progress=progress,
                         command=command, on_budget_error=show_json if as_json else None, started=_STARTED)
    except KeyboardInterrupt:
        kept = config.retrain.checkpoint_dir
        if kept and Path(kept).is_dir() and any(Path(kept).iterdir()):  # CI audit: only "Aborted!" was said
            click.echo(f"the interrupted retraining's checkpoints are kept in '{kept}': the same command with "
                       "--resume continues from the last one", err=True)
        raise
    finally:
        progress.close()
    if result is None:  # a torchrun process other than rank 0: it trained; rank 0 shows the result
        return None
    if getattr(result, "streamed", False):
        if as_json:
            show_json(result.report)
        elif not quiet:
            r = result.report
            click.echo(f"wrote {output} (+ {output.name}.data, {r['bytes_written'] / 2**20:.0f} MB): density "
                       f"{r['after']['density']:.3f} of {r['after']['params']:,} weights, streamed in "
                       f"{r['seconds']:.1f} s; output change {r['output_change']}")
        return result
    if as_json:
        show_json(result.report)
    elif not quiet:
        from onnxprune.converter.inspect import print_prune_summary

        print_prune_summary(result.report)
    failed = budget_error(result.report)
    if failed is not None:  # forced: written, but the exit code still says the budget was missed
        raise failed
    return result


# ---------------------------------------------------------------- sensitivity


def _random_shapes(model, data_config) -> dict | None:
    """--data random: the shapes random inputs are drawn at (calibration.shapes), as a prune run chooses them."""
    from onnxprune.calibration.shapes import choose_random_shapes
    from onnxprune.converter.steps.data import draws_random_inputs

    if not draws_random_inputs(data_config):
        return None
    chosen = choose_random_shapes(model, data_config.input_shapes, seed=data_config.seed)
    if chosen.note:
        logging.getLogger("onnxprune.calibration.shapes").warning(chosen.note)  # this command shows no notes
    return chosen.shapes


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@_data_options
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), help="Folder for sensitivity.json and the plot.")
@click.option("--neurons", "by_neurons", is_flag=True,
              help="Mask whole neurons per layer instead of single weights (to choose --neuron-layer NAME=S).")
@_output_options
def sensitivity(model, data, eval_data, labels, metric, batch_size, limit, input_shapes, levels, seed, criterion, out_dir,
                by_neurons, quiet, as_json):
    """Prune one layer at a time at increasing sparsity and measure the metric (the paper's Figure 6).

    \b
    Examples:
      onnxprune sensitivity model.onnx --data calib.npz -o scan/
      onnxprune sensitivity model.onnx --data calib.npz --labels y --levels 0.5,0.9,0.99 --json
      onnxprune sensitivity model.onnx --data calib.npz --neurons -o scan/   # neuron_sensitivity.json/.png
    """
    from onnxprune.calibration.plots import SAFE_LOSS_PP, sensitivity_table
    from onnxprune.converter.report_plots import scan_figure
    from onnxprune.converter import modelio
    from onnxprune.converter.convert import check_report_dir
    from onnxprune.converter.progress import Progress
    from onnxprune.converter.steps.data import Data, DataConfig
    from onnxprune.converter.steps.load import inventory_of, load
    from onnxprune.converter.criteria import calibration_scoring
    from onnxprune.converter.steps.scan import ScanConfig, scan
    from onnxprune.converter.steps.targets import TargetsConfig

    if eval_data is not None:
        raise ConfigError("--eval-data is for prune; the sensitivity scan measures on --data only.")
    if data is None:
        raise ConfigError("sensitivity needs data to measure on; pass --data FILE.npz (or --data random for a smoke test).")
    if by_neurons and criterion != "magnitude":
        raise ConfigError(f"--criterion {criterion} ranks single weights; --neurons masks whole neurons by their "
                          "strength (incoming x outgoing norm). Drop one of them.")
    if out_dir is not None:
        check_report_dir(out_dir, "-o")
    data_config = DataConfig(data=data, labels=labels, metric=metric, batch_size=batch_size, limit=limit, seed=seed,
                             input_shapes=input_shapes)
    scan_config = ScanConfig(levels=_parse_levels(levels))
    data_config.validate()
    scan_config.validate()
    TargetsConfig(criterion=criterion).validate()
    from onnxprune.calibration.runtime import session_view
    from onnxprune.passes import quantized_weights

    loaded = load(model)
    folded = quantized_weights.fold(loaded.model) if quantized_weights.foldable(loaded.model) else []
    inventory = inventory_of(loaded.model, where=str(model))
    progress = Progress(quiet=quiet or as_json)
    try:  # integer-quantized weights are scanned as floats and run as written (passes/quantized_weights.py)
        with contextlib.redirect_stdout(sys.stderr), session_view(
                lambda m: quantized_weights.as_written(m, folded) if folded else m):
            data_ = Data(loaded.model, data_config, random_shapes=_random_shapes(loaded.model, data_config))
            scoring = calibration_scoring(criterion, data_.reader(), seed=seed)
            result = scan(loaded.model, inventory, data_.calibration, scan_config, progress, neurons=by_neurons,
                          scoring=scoring)
    finally:
        progress.close()
    stem = "neuron_sensitivity" if by_neurons else "sensitivity"
    if out_dir is not None:
        out_dir.mkdir(exist_ok=True)
        modelio.atomic_write_bytes(out_dir / f"{stem}.json", result.to_json().encode())
        modelio.atomic_write_bytes(out_dir / f"{stem}.png", scan_figure(result))
    if as_json:
        _echo_json(result.as_dict())
        return
    if quiet:
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
    if rows:  # the columns, as the prune summary explains its own
        unit = "neurons masked whole" if by_neurons else f"weights pruned by {criterion}"
        console.print(f"a % column = {result.metric} (%) with that share of the layer's {unit}, every other layer "
                      f"dense; {next(c for c in rows[0] if c.startswith('max s'))} = the largest share whose loss, and "
                      f"every smaller share's, is within {SAFE_LOSS_PP:g} pp of the dense {result.dense:.2f}% (no "
                      "budget is asked for here); scan s = seconds the layer's scan took", markup=False,
                      highlight=False)
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
@_output_options
def demo(out_dir: Path, max_loss: float, iterations: int, quiet: bool, as_json: bool):
    """Run the whole pipeline on the shipped LeNet-300-100 and MNIST slice (about 9 s on a 2-core CPU).

    Sensitivity scan -> budgeted prune -> retrain (iterated, up to half of each layer's neurons masked whole
    on the way) -> dead-neuron removal and input crop -> sparse write -> verify, then a report (report.html) you can
    open offline.
    """
    from onnxprune.converter.plan import configure
    from onnxprune.models.paths import LENET300_ONNX, MNIST_SLICE, MNIST_TRAIN_SLICE

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"-o '{out_dir}' is a file; give a folder.")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = configure(max_loss=max_loss, data=str(MNIST_TRAIN_SLICE), eval_data=str(MNIST_SLICE),
                       labels="labels", iterations=iterations, epochs=2.0, lr=0.02, loss="ce+distill",
                       levels=(0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99), seed=0, neuron_sparsity=0.5,
                       crop_inputs=True)
    output = out_dir / "lenet300-pruned.onnx"
    result = _convert_and_show(LENET300_ONNX, output, config, report_dir=out_dir, quiet=quiet, as_json=as_json,
                               force=True, command=["onnxprune", "demo", "-o", str(out_dir)])
    if not quiet and not as_json:
        click.echo(f"\nmodel:  {output}\nreport: {out_dir / 'report.html'}\nrecipe: {out_dir / 'recipe.toml'}")
    return result


def _terminate(signum, frame):
    """SIGTERM and Ctrl-C unwind as KeyboardInterrupt: temp files are removed, no partial output stays. Not in the
    middle of an import (a half-imported package, or an extension's initialisation that aborts the process): the
    signal is sent again a moment later instead (onnxprune.interrupts)."""
    if interrupts.deferred(signum, frame):
        return
    _interrupted(signum, frame)


def process_started() -> float:
    """time.perf_counter() when this process started: on Linux from /proc (the interpreter's own start included),
    elsewhere now. Importing torch and onnx before the first step took 3 to 22 s of magika's, nudenet_320n's,
    rapidocr_det's and silero_vad's runs on a 2-core machine at load 4-9 (tests/benchmarks/bench_time_budget.py,
    b038558): a CI job waits for them too."""
    now = time.perf_counter()
    try:
        with open("/proc/self/stat") as f:
            ticks = float(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - max(age, 0.0)


def main() -> None:
    global _STARTED
    _STARTED = process_started()
    from onnxprune.converter.modelio import INTERRUPTS

    for name in ("stdout", "stderr"):  # started with it closed (`>&-`): Python holds None, and every print fails
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))
        with contextlib.suppress(AttributeError, ValueError):  # a path the terminal's encoding cannot show
            getattr(sys, name).reconfigure(errors="backslashreplace")  # (PYTHONIOENCODING=ascii) is escaped

    for s in INTERRUPTS:  # SIGINT, SIGTERM, SIGHUP: "Aborted!", temp files removed, exit 128 + signal
        signal.signal(s, _terminate)
    try:
        cli(prog_name="onnxprune")
    except SystemExit as done:
        _leave(done.code)
        raise


def _leave(code) -> None:
    """Exit at once with `code` (SystemExit's), without the interpreter's teardown, when not under torchrun:
    unloading torch, onnx and onnxruntime took 3-8 s at load 8 on the 2-core machine, after the model was written
    and shown (tests/benchmarks/bench_time_budget.py's "outside": 0.6-1.4 s quiet, 2-10 s under load), time a CI
    job waits for. Logging is shut down and the output flushed first; torchrun's processes leave normally (their
    process group closes at exit)."""
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        return
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, exit 1
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more to say
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
