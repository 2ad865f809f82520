"""The Python API, for notebooks and build scripts. The CLI is a thin layer over the same pipeline.

    from onnxprune.converter.api import prune
    result = prune("model.onnx", data={"input": x, "labels": y}, max_loss=0.5, iterations=3, output="small.onnx")
    result.model        # onnx.ModelProto, verified
    result.report       # the numbers of report.json
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx

from onnxprune.errors import ConfigError
from onnxprune.converter.pipeline import PruneOptions, PruneResult, budget_error, run


def prune(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    data: Any = None,
    eval_data: Any = None,
    output: str | os.PathLike | None = None,
    report_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress=None,
    **choices,
) -> PruneResult:
    """Prune `model` (a path or a ModelProto) and return the verified result.

    `data` / `eval_data`: a path (.npz, folder, 'random'), a dict of arrays named after the model inputs (plus an
    optional labels array), or an iterable of feed dicts. `choices` are PruneOptions fields (sparsity, quality,
    layers, exclude, max_loss, iterations, epochs, lr, …); an unknown one is a ConfigError listing the valid ones.
    With `output`, the model is written atomically; with `report_dir`, report.html/report.json/recipe.toml too.
    A missed --max-loss budget raises BudgetError unless `force`.
    """
    valid = set(PruneOptions.__dataclass_fields__) - {"data", "eval_data"}
    unknown = sorted(set(choices) - valid)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}.")
    options = PruneOptions(data=data, eval_data=eval_data, **choices)
    if "auto_overrides" not in choices:  # what the caller set, the automatic search does not choose
        from onnxprune.converter.auto.config import OVERRIDES

        options.auto_overrides = {k: choices[k] for k in OVERRIDES if k in choices}
    if "exclude" in choices:
        options.exclude = tuple(choices["exclude"])
    if output is not None or report_dir is not None:
        from onnxprune.converter.cli import execute

        if output is None:
            raise ConfigError("report_dir needs output too: the report describes a written model.")
        return execute(model, Path(output), options, report_dir=Path(report_dir) if report_dir else None,
                       quiet=progress is None, force=force, command=["onnxprune.converter.api.prune"])
    result = run(model, options, progress)
    failed = budget_error(result.report)
    if failed is not None and not force:
        raise failed
    return result
