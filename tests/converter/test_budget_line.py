"""The budget line of the prune summary says why a loss above --max-loss is 'met' (the label rule's limit)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from onnxprune.converter.inspect import print_prune_summary


def _summary(budget: dict, **more) -> str:
    report = {**more, "layers": [], "before": {"params": 10, "nonzeros": 10}, "after": {"nonzeros": 5, "density": 0.5},
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


def test_a_budget_met_on_the_samples_that_chose_the_result_says_so():
    """The result is the most pruned candidate a small decision set accepted (no exam, no stricter later looks): the
    line says where it was met, not only a note further down; a missed budget needs no such word."""
    chosen = {"max_loss_pp": 1.0, "measured_loss_pp": 0.0, "met": True, "chosen_by_judges": True}
    assert _summary(chosen).startswith("budget: measured loss 0.00 pp, --max-loss 1 pp: met on the samples that also "
                                       "chose the result (new data will likely show more")
    assert _summary({**chosen, "met": False}) == "budget: measured loss 0.00 pp, --max-loss 1 pp: NOT met"


def test_an_eval_set_over_the_met_budget_gets_a_note_naming_both_figures():
    """Newcomer audit: "87.40% -> 86.20% (loss +1.20 pp)" on --eval-data beside "budget: ... met" (0.27 pp on the
    calibration data), with nothing to say which figure the budget was about."""
    from types import SimpleNamespace

    from onnxprune.converter.steps.budget import _eval_over_budget

    report = {"metrics": {"sets": {"calibration": {"loss_pp": 0.27, "metric": "accuracy"},
                                   "evaluation": {"loss_pp": 1.2, "metric": "accuracy"}}},
              "budget": {"met": True, "decision_loss_pp": 0.27}}
    state = SimpleNamespace(data=SimpleNamespace(evaluation=SimpleNamespace(num_samples=500)))
    note = _eval_over_budget(report, 1.0, state)
    assert "on --eval-data (500 samples: one sample = 0.2 pp) the accuracy loss is 1.20 pp, over --max-loss 1" in note
    assert "0.27 pp there" in note and "--val-data" in note
    report["metrics"]["sets"]["evaluation"]["loss_pp"] = 0.9
    assert _eval_over_budget(report, 1.0, state) is None  # within: nothing to say
    report["metrics"]["sets"]["evaluation"]["loss_pp"] = 1.2
    report["budget"]["met"] = False
    assert _eval_over_budget(report, 1.0, state) is None  # not met: the run refuses anyway


def _metric_lines(sets: dict) -> list[str]:
    report = {"layers": [], "before": {"params": 10, "nonzeros": 10}, "after": {"nonzeros": 5, "density": 0.5},
              "compression": 2.0, "file_size_before": 100, "file_size_after": 60, "sparse_format": "constant",
              "parity": {"batches": 4, "inputs": "data", "max_abs_diff": 0.0}, "metrics": {"sets": sets}}
    out = io.StringIO()
    print_prune_summary(report, Console(file=out, width=400, color_system=None))
    return [line for line in out.getvalue().splitlines() if " on calib.npz " in line or line.startswith("  output")]


def test_a_run_of_several_outputs_prints_the_worst_loss_not_a_score_no_output_has():
    """Sweep 22: skl2onnx's MLP pipeline with labels read "worst of 2 outputs on ...: 96.00% -> 95.51% (loss +0.49
    pp)": output_label's accuracy 96.00% less output_probability's 0.49 pp, a score neither output has."""
    outputs = {"output_label": {"metric": "accuracy", "before": 0.96, "after": 0.96, "loss_pp": 0.0,
                                "one_pp": "1% of samples lose their right class"},
               "output_probability": {"metric": "prob", "before": 1.0, "after": 0.9951, "loss_pp": 0.49,
                                      "one_pp": "1% of samples change class"}}
    lines = _metric_lines({"calibration": {
        "metric": "worst of 2 outputs", "data": "calib.npz", "before": 0.96, "after": 0.9551, "loss_pp": 0.49,
        "headline": "output_label", "outputs": outputs, "output_error": {"agreement": 1.0}}})
    assert lines[0].startswith("worst of 2 outputs on calib.npz (calibration): loss +0.49 pp, on output "
                               "'output_probability'; output 'output_label' vs the input model: equal values")
    assert "95.51" not in lines[0]
    assert lines[1] == "  output output_label (accuracy; 1 pp = 1% of samples lose their right class): 96.00% -> 96.00% (loss +0.00 pp)"
    one = _metric_lines({"calibration": {"metric": "accuracy", "data": "calib.npz", "before": 0.96, "after": 0.95,
                                         "loss_pp": 1.0, "output_error": {"agreement": 0.99}}})
    assert one[0].startswith("accuracy on calib.npz (calibration): 96.00% -> 95.00% (loss +1.00 pp); headline output")


def test_the_report_table_shows_no_combined_score_for_several_outputs():
    from onnxprune.converter.report.html import _metric_block

    outputs = {"output_label": {"metric": "accuracy", "before": 0.96, "after": 0.96, "loss_pp": 0.0},
               "output_probability": {"metric": "prob", "before": 1.0, "after": 0.9951, "loss_pp": 0.49}}
    one = {"metric": "worst of 2 outputs", "data": "calib.npz", "before": 0.96, "after": 0.9551, "loss_pp": 0.49,
           "outputs": outputs, "output_error": {"agreement": 1.0}}
    html = _metric_block({"metrics": {"sets": {"calibration": one}}, "summary": {}})
    cells = re.findall(r'<td class="n"[^>]*>([^<]*)</td>', html)
    assert cells[:3] == ["&ndash;", "&ndash;", "0.49 pp"]  # was 0.96 -> 0.9551 (no output's score)
    assert cells[6:9] == ["96.00%", "96.00%", "0.00 pp"] and cells[9:12] == ["1", "0.9951", "0.49 pp"]
    single = _metric_block({"metrics": {"sets": {"calibration": {**one, "metric": "accuracy", "outputs": {}}}},
                            "summary": {}})
    assert re.findall(r'<td class="n"[^>]*>([^<]*)</td>', single)[:3] == ["96.00%", "95.51%", "0.49 pp"]


def test_a_budget_met_one_call_at_a_time_says_the_outputs_a_stream_takes_over_it():
    """A model fed its own state (session 50's carried-state check): the budget is judged one call at a time, and a
    stream that took an output over it was said only in a note; a CI user reads the budget line and report.json."""
    plain = {"measured_loss_pp": 0.4, "max_loss_pp": 1.0, "met": True}
    carried = {"over": ["prob", "stateN"]}
    assert _summary(plain, carried=carried) == ("budget: measured loss 0.40 pp, --max-loss 1 pp: met one call at a "
                                                "time; streamed, 'prob', 'stateN' are over it (the carried-state note)")
    assert _summary(plain, carried={"over": ["stateN"]}).endswith("streamed, 'stateN' is over it (the carried-state "
                                                                  "note)")
    assert _summary(plain, carried={"over": []}) == "budget: measured loss 0.40 pp, --max-loss 1 pp: met"
    missed = _summary({**plain, "met": False, "measured_loss_pp": 1.4}, carried=carried)
    assert "NOT met" in missed and "streamed" not in missed
