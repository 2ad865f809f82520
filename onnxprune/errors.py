"""One family of errors. The CLI maps ConfigError to exit 2, BudgetError to 3, any other ConverterError to exit 1
(an unexpected exception is 4, an interrupt 128 + the signal: converter/cli.py).

Every message says what went wrong, where (node, tensor, file) and what to do about it.
"""


class ConverterError(Exception):
    """Base of every error onnxprune raises on purpose."""

    exit_code = 1


class ConfigError(ConverterError):
    """A bad option or a contradictory combination of options."""

    exit_code = 2


class ModelError(ConverterError):
    """The model file cannot be read, is invalid, or is something we refuse to load."""


class UnsupportedOpError(ConverterError):
    """The graph uses ops a component cannot handle; the message lists all of them."""


class CalibrationError(ConverterError):
    """Calibration data is missing, malformed, or does not match the model's inputs."""


class PassError(ConverterError):
    """A graph pass failed; the message names the pass and the passes already run."""


class ParityError(ConverterError):
    """The written model does not compute what it should; the message names the output."""


class BudgetError(ConverterError):
    """The accuracy budget (--max-loss) was not met. Its message is one line; its figures, for a build script:
    `loss_pp` the measured loss and `max_loss_pp` the budget (pp), `outputs` the scored graph outputs that missed
    their budget, `written` the model's path when --force wrote it anyway (else None), `report` the run's report
    (the document `--json` prints, as `PruneResult.report`)."""

    exit_code = 3

    def __init__(self, message: str, *, loss_pp: float | None = None, max_loss_pp: float | None = None,
                 outputs: tuple[str, ...] = (), written: str | None = None, report: dict | None = None):
        super().__init__(message)
        self.loss_pp, self.max_loss_pp, self.outputs = loss_pp, max_loss_pp, tuple(outputs)
        self.written, self.report = written, report


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as the one line a message quotes: its type and the first line of its text, at most `limit`
    characters of it ("IndexError: list index out of range")."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit] if text else ''}"


def debugging() -> bool:
    """The run stops on a defect it could work around, to show its traceback: --debug or -vv (debug logging of
    onnxprune.*) or ONNXPRUNE_DEBUG=1, the switches the command line reads for tracebacks."""
    import logging
    import os

    return logging.getLogger("onnxprune").isEnabledFor(logging.DEBUG) or os.environ.get("ONNXPRUNE_DEBUG") == "1"
