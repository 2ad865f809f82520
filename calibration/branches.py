"""If branches the data never takes: weights read only there cannot be measured, so a budget must not prune them.

Silero-VAD keeps a 16 kHz and an 8 kHz network in the two branches of an If on its sample rate; calibration audio
at 16 kHz never runs the 8 kHz one. Pruning it "within 1 pp" is a claim nobody measured (its VAD decisions then
agreed 75% with the original at 8 kHz). So the budgeted plans leave such weights dense and say so.

    cond ─ If 'sel' ─ then_branch: Conv W1   (taken on the data: W1 prunable)
                    └ else_branch: Conv W2   (never taken: W2 left dense)

Only If nodes of the main graph are watched (their condition is one tensor per feed); a weight with any reader
outside an untaken branch counts as exercised.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import onnx

from onnxprune.calibration.runtime import make_session, with_outputs
from onnxprune.passes.scopes import ScopeIndex
from onnxprune.passes.weights import PrunableWeight

log = logging.getLogger(__name__)

BRANCH = {True: "then_branch", False: "else_branch"}


def taken_branches(model: onnx.ModelProto, batches) -> dict[str, set[bool]]:
    """For each main-graph If (by node name), the condition values seen over `batches` (feed dicts)."""
    ifs = [n for n in model.graph.node if n.op_type == "If"]
    if not ifs:
        return {}
    conds = list(dict.fromkeys(n.input[0] for n in ifs))
    session = make_session(with_outputs(model, conds), optimize=False)
    inputs = {i.name for i in session.get_inputs()}
    seen: dict[str, set[bool]] = {c: set() for c in conds}
    for feeds in batches:
        for name, value in zip(conds, session.run(conds, {k: v for k, v in feeds.items() if k in inputs})):
            seen[name].update(bool(v) for v in np.asarray(value).reshape(-1))
    return {n.name: seen[n.input[0]] for n in ifs}


def untaken_weights(model: onnx.ModelProto, weights: list[PrunableWeight], batches) -> dict[str, str]:
    """{weight name: the untaken branch that is its only reader's scope}, for the weights no data ever reaches."""
    in_branches = [w for w in weights if w.scope.startswith("If '")]
    if not in_branches:
        return {}
    taken = taken_branches(model, batches)
    dead = {f"If '{name}'/{BRANCH[value]}" for name, values in taken.items() for value in (True, False)
            if values and value not in values}
    if not dead:
        return {}
    ix = ScopeIndex.of(model)
    out = {}
    for w in in_branches:
        readers = [ix.scope_of[id(n)] for n in ix.uses(w.name)] or [w.scope]
        branches = {_top_branch(s) for s in readers}
        if branches <= dead:
            out[w.name] = sorted(branches)[0]
    return out


def _top_branch(scope: str) -> str:
    """The outermost body of a scope path: "If '/a/If'/then_branch/Loop 'b'/body" -> "If '/a/If'/then_branch"."""
    match = re.match(r"If '.*?'/(?:then|else)_branch", scope)
    return match.group(0) if match else scope
