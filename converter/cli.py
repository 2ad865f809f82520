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

from converter.errors import ConfigError, ConverterError

log = logging.getLogger("onnxprune")


class ConverterException(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class FriendlyGroup(click.Group):
    """Turns our errors into one line and an exit code; --debug lets the traceback through."""

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
    from converter.inspect import inspect_model, print_inspection

    info = inspect_model(model)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        print_inspection(info)


# ---------------------------------------------------------------- prune


def _parse_layers(values: tuple[str, ...]) -> dict[str, float]:
    layers = {}
    for item in values:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise ConfigError(f"--layer '{item}' is not NAME=SPARSITY; e.g. --layer fc1=0.9.")
        try:
            layers[name] = float(value)
        except ValueError:
            raise ConfigError(f"--layer '{item}': '{value}' is not a number; e.g. --layer fc1=0.9.") from None
        if not 0.0 <= layers[name] < 1.0:
            raise ConfigError(f"--layer '{item}': sparsity must be in [0, 1).")
    return layers


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Where to write the pruned model.")
@click.option("--sparsity", type=float, help="Fraction of weights to remove in every layer, e.g. 0.9.")
@click.option("--quality", type=float, help="The paper's rule: drop |w| <= Q x the layer's weight std.")
@click.option("--layer", "layers", multiple=True, metavar="NAME=S", help="Per-layer sparsity (node or weight name, glob ok).")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Leave these layers dense (node or weight name, glob ok).")
@click.option(
    "--sparse-format",
    type=click.Choice(["constant", "initializer", "dense"]),
    default="constant",
    show_default=True,
    help="How pruned weights are stored (see README).",
)
@click.option("--data", type=str, help="Calibration data: .npz, a folder of .npz/.npy, or 'random'.")
@click.option("--labels", type=str, help="Name of the labels array in the data (default: 'labels' if present).")
@click.option("--metric", type=click.Choice(["accuracy", "top5", "agreement", "rel_l2", "cosine"]), help="Override the metric.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--limit", type=int, help="Use at most N samples of the data.")
@click.option("--no-neurons", is_flag=True, help="Keep dead neurons (skip the shape-shrinking pass).")
@click.option("--gather-inputs", is_flag=True, help="Drop input features no weight reads, with a Gather on the input.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, nothing else.")
def prune(model: Path, output: Path, sparsity, quality, layers, exclude, sparse_format, data, labels, metric, batch_size, limit, no_neurons, gather_inputs, as_json):
    """Prune MODEL by weight magnitude and write a verified, sparse OUTPUT.

    \b
    Examples:
      onnxprune prune model.onnx -o small.onnx --sparsity 0.9
      onnxprune prune model.onnx -o small.onnx --quality 1.5 --exclude 'conv1*'
      onnxprune prune model.onnx -o small.onnx --layer fc1=0.92 --layer fc2=0.91 --data test.npz
    """
    from converter import modelio
    from converter.pipeline import PruneOptions, run

    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"--sparsity {sparsity} is outside [0, 1); use e.g. 0.9 to remove 90% of the weights.")
    unused = [flag for flag, value in (("--labels", labels), ("--metric", metric), ("--limit", limit)) if value is not None]
    if data is None and unused:
        raise ConfigError(f"{', '.join(unused)} without --data: only calibration data uses them; pass --data or drop them.")
    options = PruneOptions(
        sparsity=sparsity,
        quality=quality,
        layers=_parse_layers(layers),
        exclude=tuple(exclude),
        sparse_format=sparse_format,
        data=data,
        labels=labels,
        metric=metric,
        batch_size=batch_size,
        limit=limit,
        neurons=not no_neurons,
        gather_inputs=gather_inputs,
    )
    modelio.check_output_path(output, protect=(model,))
    with contextlib.redirect_stdout(sys.stderr):  # a library that prints (onnx-graphsurgeon) must not break --json
        result = run(model, options)
    if not result.state.masks:
        raise ConfigError(f"--exclude {' '.join(exclude)} leaves no layer to prune; exclude fewer layers.")
    modelio.save_model(result.model, output, protect=(model,))
    result.report["output"] = str(output)
    result.report["file_size_after"] = output.stat().st_size
    if as_json:
        click.echo(json.dumps(result.report, indent=2, default=float))
    else:
        from converter.inspect import print_prune_summary

        print_prune_summary(result.report)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: temp files are removed, no partial output stays


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="onnxprune")


if __name__ == "__main__":
    main()
