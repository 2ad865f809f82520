"""The budget line of the prune summary says why a loss above --max-loss is 'met' (the label rule's limit)."""

from __future__ import annotations

import io

from rich.console import Console

from onnxprune.converter.inspect import print_prune_summary


def _summary(budget: dict) -> str:
    report = {"layers": [], "before": {"params": 10, "nonzeros": 10}, "after": {"nonzeros": 5, "density": 0.5},
              "compression": 2.0, "file_size_before": 100, "file_size_after": 60, "sparse_format": "constant",
              "parity": {"batches": 4, "inputs": "data", "max_abs_diff": 0.0}, "budget": budget}
    out = io.StringIO()
    print_prune_summary(report, Console(file=out, width=400, color_system=None))
    return next(line for line in out.getvalue().splitlines() if line.startswith("budget:"))


def test_a_loss_above_the_budget_met_by_one_standard_error_says_so():
    """Newcomer sweep: a Scan RNN read 'measured loss 1.07 pp, --max-loss 1 pp: met' and nothing more (label rule:
    L <= max(budget, 1 SE); its held-out accuracy was 8.5 pp lower)."""
    line = _summary({"max_loss_pp": 1.0, "measured_loss_pp": 1.07, "met": True, "limit_pp": 1.6})
    assert line.startswith("budget: measured loss 1.07 pp, --max-loss 1 pp: met (by the decision rule's limit 1.60 pp")
    assert "one standard error of the paired difference" in line and "--val-data" in line


def test_the_budget_line_adds_nothing_when_the_limit_is_the_budget_or_tighter():
    plain = {"max_loss_pp": 1.0, "measured_loss_pp": 0.4, "met": True}
    assert _summary(plain) == "budget: measured loss 0.40 pp, --max-loss 1 pp: met"
    assert _summary({**plain, "limit_pp": 1.0}) == "budget: measured loss 0.40 pp, --max-loss 1 pp: met"
    assert _summary({**plain, "limit_pp": 0.7}) == "budget: measured loss 0.40 pp, --max-loss 1 pp: met"  # fidelity
    # within the budget itself: nothing to explain, whatever the limit
    assert _summary({**plain, "limit_pp": 1.7}) == "budget: measured loss 0.40 pp, --max-loss 1 pp: met"
    missed = {"max_loss_pp": 1.0, "measured_loss_pp": 2.5, "met": False, "limit_pp": 1.6}
    assert _summary(missed) == "budget: measured loss 2.50 pp, --max-loss 1 pp: NOT met"
