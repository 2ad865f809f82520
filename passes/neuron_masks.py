"""Neuron pruning: mask the weakest whole neurons (channels), so dead-neuron removal makes the model smaller.

Unstructured magnitude pruning kills a neuron only when all of its connections happen to go: about a third of
LeNet-300-100's at 50x, which buys 1.4x in onnxruntime. To shrink the dense shapes further, rank the neurons of
each channel group and mask the weakest ones whole, in every weight that indexes them:

    score(c) = ‖incoming weights of c‖ · g(c) · ‖outgoing weights of c‖        (masked weights, all members)

The product does not change under the rescaling a ReLU allows (W_in·a, W_out/a), so a neuron is not judged by
how its magnitude happens to be split between its two sides. g is the |factor| a BatchNorm (γ/√(σ²+ε)) or a
constant Mul/Div applies to the channel after its producer: the norm of the incoming weights with the BN folded
in, which is what reaches the next layer (after a BN, ‖W_in‖ alone says nothing: BN divides it out again).
Classes come from `passes.channel_groups`, so a residual class (the same channel of several producers and the
Add) is scored and masked as one.

    before: W1[300×784], W2[100×300]     fraction 0.5 of fc1's group → 150 rows of W1 and columns of W2 are 0
    after dead-neurons: W1[150×784], W2[100×150]

Rules:
  1. A class is a candidate when nothing blocks its removal and every weight indexing it is maskable.
  2. Per group, `fraction` of all its classes end up masked (already-dead ones count), weakest first; a group
     and a tensor always keep at least one class; a group whose channel count a Conv reads (a multiple of 4) keeps a
     multiple of 4 above 8 (fewer masked), as dead-neuron removal would keep the rest anyway.
  3. Masks only shrink: a neuron masked once stays masked.
Left alone: a factor after a residual merge counts only for the merge's first input; depthwise multipliers > 1
multiply their factors together.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnx

from onnxprune.errors import ConfigError
from onnxprune.plain import more
from onnxprune.passes.dead_neurons import ALIGN, ALIGN_ABOVE, analyse


@dataclass
class Entry:
    weight: str
    axis: int
    roots: np.ndarray  # class per position along `axis`
    incoming: bool  # the weight produces the class (or is a depthwise member) rather than reading it
    gain: np.ndarray | None = None  # per position: |factor| a BatchNorm (Mul, Div) applies after this producer


@dataclass
class NeuronMap:
    """Which weight axes index which neuron, per channel group; built once, reused with changing weights."""

    entries: list[Entry]
    groups: list[list[int]]  # all classes of each group (candidates or not)
    candidates: set[int]
    tensors: list[list[int]]  # classes per channel-carrying tensor (none may be emptied)
    origins: dict[int, str] = field(default_factory=dict)  # class -> "Gemm 'fc1'"
    names: list[set[str]] = field(default_factory=list)  # per group: node and weight names of its producers
    aligned: set[int] = field(default_factory=set)  # groups whose channel count a Conv reads, a multiple of 4:
    #                                               # dead-neuron removal keeps that (dead_neurons._keep_aligned)

    def fractions(self, default: float, layers: dict[str, float] | None = None) -> list[float]:
        """Per group: the first `layers` pattern (glob) matching a producer's node or weight name, else `default`."""
        out, used = [], set()
        for names in self.names:
            hit = [(p, f) for p, f in (layers or {}).items() if any(fnmatch.fnmatchcase(n, p) for n in names)]
            used.update(p for p, _ in hit)
            out.append(hit[0][1] if hit else default)
        unused = [p for p in layers or {} if p not in used]
        if unused:
            valid = sorted({n for names in self.names for n in names})
            raise ConfigError(f"--neuron-layer '{unused[0]}' matches no layer whose neurons can go; valid names: "
                              f"{', '.join(valid[:12])}{', …' if len(valid) > 12 else ''}.")
        return out

    def kept(self, gone: set[int]) -> dict[str, tuple[int, int]]:
        """Per producing layer: (neurons left, neurons) when the classes `gone` are removed."""
        out: dict[str, list[int]] = {}
        for r, origin in self.origins.items():
            count = out.setdefault(origin, [0, 0])
            count[0] += r not in gone
            count[1] += 1
        return {k: (v[0], v[1]) for k, v in out.items()}


def check_shares(values) -> None:
    """Neuron shares are fractions of a layer's neurons in [0, 1) (a layer always keeps one)."""
    for value in values:
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"--neuron-sparsity {value} must be in [0, 1); e.g. 0.5 removes half of each layer's "
                              "neurons.")


def unmaskable(model: onnx.ModelProto, maskable: set[str], protected=frozenset()) -> dict[str, str]:
    """{layer ("MatMul 'x'"): why} for every layer of `maskable` weights none of whose neurons can be masked whole,
    because what reads (or holds) its channels blocks their removal: the first block's reason (rule 1 above)."""
    return {layer: why for layer, (_, why) in _unmaskable(model, maskable, protected).items()}


def _unmaskable(model: onnx.ModelProto, maskable: set[str], protected=frozenset()) -> dict[str, tuple[str, str]]:
    """`unmaskable` with each layer's weight: {layer: (weight, why)} (a tied weight is read by several layers)."""
    cg = analyse(model, protected=protected)
    why: dict[int, str] = {}
    for ids, note in cg.blocks:
        for r in cg.root_of(ids).tolist():
            why.setdefault(int(r), note)
    outputs = {t.name for t in cg.graph.outputs}  # a model's outputs are its outputs: nobody asks them to go
    out = {}
    for lay in cg.layers:
        roots = cg.roots(lay.tensor).tolist()
        if lay.weight in maskable and lay.tensor not in outputs and roots and all(int(r) in why for r in roots):
            out[f"{lay.op} '{lay.node}'"] = (lay.weight, why[int(roots[0])])
    # a layer whose weight reaches it through another op than a Transpose (bfloat16 or float16 weights read through
    # Cast) is no layer of the channel analysis: it kept every neuron and the run said nothing (sweep 23's
    # bfloat16 ConvNeXt: neurons "-" in every row)
    from onnxprune.passes.opfacts import CHANNEL_PRODUCERS, QUANTIZED_WEIGHT_OPS
    from onnxprune.passes.weights import find_prunable

    followed = {lay.weight for lay in cg.layers}
    for w in find_prunable(model).prunable:
        if w.name not in maskable or w.name in followed:
            continue
        if w.op_type in QUANTIZED_WEIGHT_OPS:
            # dynamic quantization's MatMulInteger/ConvInteger (folded to float at load): sgd masked none of their
            # neurons and the run said nothing (sweep 26: all-MiniLM-L6-v2 through quantize_dynamic, 36 of 36)
            out.setdefault(f"{w.op_type} '{w.node}'", (w.name, (
                f"{w.op_type} holds integer-quantized weights: dead-neuron removal does not shrink it")))
            continue
        if w.op_type not in CHANNEL_PRODUCERS:
            continue
        if w.via:
            out.setdefault(f"{w.op_type} '{w.node}'", (w.name, (
                f"its weight '{w.name}' reaches it through {'/'.join(w.via)}; the channel analysis follows weights "
                "read directly (or through a Transpose)")))
        elif w.scope:
            # a layer inside a Loop/If/Scan body (tf2onnx's Keras GRU: its while loop) kept every neuron, and the
            # note named only the main graph's layers (sweep 24: "1 of 5 layers" beside four rows of "-")
            out.setdefault(f"{w.op_type} '{w.node}'", (w.name, (
                f"it is inside {w.scope}; the channel analysis does not enter If/Loop/Scan bodies")))
    return out


def unmaskable_note(model: onnx.ModelProto, maskable: set[str], protected=frozenset(), shown: int = 3) -> str | None:
    """The run's note on the layers --neuron-sparsity cannot touch (None when it can touch every one)."""
    found = _unmaskable(model, maskable, protected)
    if not found:
        return None
    layers = {layer: why for layer, (_, why) in found.items()}
    # counted in weights, as `maskable` is: a tied weight's readers (a Siamese net's two towers) are one layer
    # (sweep 23 read "masked no neuron of 4 of 3 layers")
    weights = {w for w, _ in found.values()}
    reasons: dict[str, list[tuple[str, str]]] = {}  # by the reason with its names left out: one kind a line
    for layer, why in layers.items():
        reasons.setdefault(re.sub(r"'[^']*'", "''", why), []).append((layer, why))
    ranked = sorted(reasons.values(), key=lambda items: -len(items))
    parts = [f"{items[0][0]}{more(len(items), 1, 'more like it')}: {items[0][1]}"
             for items in ranked[:shown]]
    kinds = f"; {len(ranked) - shown} other kind(s) of reason" if len(ranked) > shown else ""
    return (f"--neuron-sparsity masked no neuron of {len(weights)} of {len(maskable)} layers: their channels cannot "
            f"be removed ({'; '.join(parts)}{kinds}); only their weights were pruned")


def neuron_map(model: onnx.ModelProto, maskable: set[str], protected=frozenset()) -> NeuronMap:
    """Analyse `model` once: the weight axes of every class, and which classes may be masked whole."""
    cg = analyse(model, protected=protected)
    produced = {(lay.weight, lay.tensor) for lay in cg.layers}
    entries = [Entry(a.weight, a.axis, np.tile(cg.roots(a.tensor), a.repeat),
                     (a.weight, a.tensor) in produced if a.incoming is None else a.incoming,
                     np.tile([cg.gain.get(int(i), 1.0) for i in cg.channels[a.tensor].ids], a.repeat))
               for a in cg.axes]
    has_in = {int(r) for e in entries if e.incoming for r in e.roots}
    has_out = {int(r) for e in entries if not e.incoming for r in e.roots}
    frozen = {int(r) for e in entries if e.weight not in maskable for r in e.roots} | cg.blocked()
    found = cg.groups()
    groups = [list(g.classes) for g in found]
    names = [{n for lay in g.layers if lay.weight for n in (lay.node, lay.weight)} for g in found]
    tensors = [sorted(set(cg.roots(t).tolist())) for t in cg.channels]
    origins = {int(r): f"{lay.op} '{lay.node}'" for lay in cg.layers if lay.weight for r in cg.roots(lay.tensor)}
    conv_read = {n.inputs[0].name for n in cg.graph.nodes if n.op == "Conv" and n.inputs}
    aligned = {k for k, g in enumerate(found) if len(g.classes) % ALIGN == 0 and any(
        t in conv_read and len(cg.channels[t].ids) == len(g.classes) for t in g.tensors)}
    return NeuronMap(entries, groups, (has_in & has_out) - frozen, tensors, origins, names, aligned)


def _norms(nmap: NeuronMap, weights: dict[str, np.ndarray]) -> tuple[dict[int, float], dict[int, float]]:
    """(squared incoming norm, squared outgoing norm) per class."""
    sums: tuple[dict[int, float], dict[int, float]] = ({}, {})
    for e in nmap.entries:
        w = weights.get(e.weight)
        if w is None:
            continue
        per_pos = np.square(np.moveaxis(w, e.axis, 0).reshape(len(e.roots), -1), dtype=np.float64).sum(axis=1)
        if e.incoming and e.gain is not None:
            per_pos = per_pos * np.square(e.gain)
        side = sums[0 if e.incoming else 1]
        for r, v in zip(e.roots.tolist(), per_pos.tolist()):
            side[r] = side.get(r, 0.0) + v
    return sums


def scores(nmap: NeuronMap, weights: dict[str, np.ndarray]) -> dict[int, float]:
    """‖in‖·‖out‖ of every candidate class."""
    sq_in, sq_out = _norms(nmap, weights)
    return {r: float(np.sqrt(sq_in.get(r, 0.0) * sq_out.get(r, 0.0))) for r in nmap.candidates}


def weakest(nmap: NeuronMap, score: dict[int, float], fractions: Sequence[float] | float) -> set[int]:
    """Per group, the weakest candidates so that its fraction is gone; no group or tensor emptied."""
    if isinstance(fractions, (int, float)):
        fractions = [float(fractions)] * len(nmap.groups)
    out: set[int] = set()
    for k, (classes, fraction) in enumerate(zip(nmap.groups, fractions)):
        cands = sorted((r for r in classes if r in nmap.candidates), key=lambda r: (score[r], r))
        n = min(int(np.floor(fraction * len(classes) + 1e-9)), len(classes) - 1)
        if k in nmap.aligned and len(classes) - n > ALIGN_ABOVE:  # a count a Conv reads stays a multiple of 4:
            n -= (-(len(classes) - n)) % ALIGN  # masking past it would leave dead channels the shrink keeps
        out.update(cands[:n])
    for classes in nmap.tensors:  # a Concat input or a Split output must keep one channel
        if classes and out.issuperset(classes):
            out.discard(max(classes, key=lambda r: (score.get(r, 0.0), r)))
    return out


def neuron_masks(nmap: NeuronMap, weights: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                 fractions: Sequence[float] | float) -> tuple[dict[str, np.ndarray], set[int]]:
    """`masks` with the weakest share (one for all, or one per group) of each group's neurons masked whole.

    Returns (masks, masked classes)."""
    masked = {n: weights[n] * masks[n] if n in masks else weights[n] for n in weights}
    gone = weakest(nmap, scores(nmap, masked), fractions)
    out = {n: m.copy() for n, m in masks.items()}
    if not gone:
        return out, gone
    dead = np.array(sorted(gone), dtype=np.int64)
    for e in nmap.entries:
        if e.weight in out:
            hit = np.isin(e.roots, dead)
            if hit.any():
                np.moveaxis(out[e.weight], e.axis, 0)[hit] = False
    return out, gone
