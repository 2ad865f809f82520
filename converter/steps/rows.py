"""Embedding rows no sample reads keep their input values: a budgeted run prunes a table on the rows its data reads.

A row no sample of --data (or --val-data) reads has no evidence behind it: pruning it changes nothing the budget
measures, and a user's input that reads it later meets whatever pruning left (converter/coverage.RowCoverage).
Until session 38 such a table was left whole, however few rows went unread: torch's legacy `nn.EmbeddingBag`
read 499 of its 500 rows, and 87% of a model's weights were left as they are. Now the search prunes the table
like any other weight, every ranking putting the unread entries after all the others and taking a sparsity as a
share of the read ones (`Scoring.last`, `Scorer.keep`: a level s drops s of the entries the data reads, as for a table
read whole, and the one-shot fit counts those, `AllocationOutcome.caps`), the automatic search counts them as kept in
every ratio it states, and this step, after the pruning step and before anything else reads the pruned model, writes
the input's values back into those rows and marks them kept (retraining's weight decay moved them). The outputs on
the data are the ones the search measured: no sample reads what changed.

    table [V, D], rows read R:   pruned rows R (by the search)   rows V \\ R = the input's values, mask kept
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.converter.steps.base import RunState, Step, register_step
from onnxprune.passes.magnitude import Target
from onnxprune.passes.weights import constant_tensors


def keep_unread_rows(pruned: onnx.ModelProto, original: onnx.ModelProto, unread: dict[str, np.ndarray],
                     masks: dict[str, np.ndarray]) -> None:
    """Write `original`'s values into the `unread` entries of each table of `pruned` (in place) and mark them kept
    in `masks`."""
    before, after = constant_tensors(original), constant_tensors(pruned)
    for name, rows in unread.items():
        if name not in after or name not in before:
            continue
        values = numpy_helper.to_array(after[name])
        given = numpy_helper.to_array(before[name]).astype(values.dtype)
        back = np.where(rows, given, values)
        if not np.array_equal(back, values):
            after[name].CopyFrom(numpy_helper.from_array(back, name))
        if name in masks:
            masks[name] = masks[name] | rows


@register_step("unread-rows")
class UnreadRowsStep(Step):
    """Give the embedding rows no sample reads their input values back (a budgeted run with data)."""

    needs = ("original", "pruned")
    gives = ("pruned",)

    def run(self, state: RunState) -> None:
        if not state.unread_rows:
            return
        keep_unread_rows(state.pruned, state.original, state.unread_rows, state.prune.masks)
        for name in state.unread_rows:
            if name in state.prune.masks and state.targets is not None and name in state.targets:
                state.targets[name] = Target(sparsity=1.0 - float(state.prune.masks[name].mean()))
