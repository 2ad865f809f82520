"""Layer-wise refit of ONNX LSTM / GRU / RNN weights: the recurrent part of converter/reconstruct.py.

Given a step's inputs, every gate's pre-activation is linear in the node's weights (ONNX operator spec):

    LSTM i/o/f/c, RNN, GRU z/r     a_g = X_t·W_gᵀ + H_{t-1}·R_gᵀ + Wb_g + Rb_g
    GRU h, linear_before_reset=0   a_h = X_t·W_hᵀ + (r_t ⊙ H_{t-1})·R_hᵀ + Wb_h + Rb_h
    GRU h, linear_before_reset=1   a_h = X_t·W_hᵀ + Wb_h + r_t ⊙ (H_{t-1}·R_hᵀ + Rb_h)

so each direction is a few least-squares problems over one row per time step and sample. The rows are X_t as the
*pruned* model sees it (earlier layers already refit, as for every other layer) and H_{t-1} of the *dense* model
(its Y output shifted by one step, initial_h or zeros at the first step; reverse directions run backwards in
time); the targets are the dense model's pre-activations from its own X, Y and weights. The state rows are the
dense model's (teacher forcing) because the node's own pruned states depend on the weights being refit: fitted
to them, the refit learns to undo errors of a trajectory it then no longer produces. Measured on the corpus's
torch GRU/LSTM (MNIST rows, 28 steps, 240/150 calibration samples refit on, W and R both at 50% magnitude sparsity,
fc dense, 400/50 held-out images, top-1 agreement with the dense model, logits MSE): GRU pruned 0.940 / 0.559, refit on the pruned
states 0.520 / 5.85, on the dense states 0.990 / 0.026, and a second pass on the refit model's own states after
that 0.973 / 0.074; LSTM pruned 0.94 / 1.10, dense states 1.00 / 0.061, + own states 0.98 / 0.067.

W and R of a gate are solved together on [X_t, H_{t-1}] (one Gram matrix per direction shared by the gates, the
biases Wb + Rb as the intercept), so the input weights can make up for what pruning took from the recurrent ones
and back. The exceptions are GRU's candidate gate h: with linear_before_reset=0 its recurrent rows are
r_t ⊙ H_{t-1} (the dense model's r_t); with linear_before_reset=1, r_t scales H_{t-1}·R_hᵀ per hidden unit (no
shared rows), so W_h and R_h are two separate problems (X_t against X·W_hᵀ + Wb_h, H_{t-1} against H·R_hᵀ + Rb_h),
r_t left out. Weighting each row and unit by how much its pre-activation moves h_t (the gate's derivative)
was tried on the torch GRU and did not help (50/70/80% sparsity: agreement 0.990/0.953/0.848 plain, 0.988/0.960/
0.833 weighted, 15x the time), so the problems stay plain least squares with shared Grams.

An LSTM's peepholes P (i, f and o read the cell state, P ⊙ C) are held fixed: they add the same P ⊙ C of the dense
model's cell states to both sides of every gate's pre-activation (teacher forcing), so the linear part is what is
fitted, as without them (real models 47's L5: madmom's downbeat BLSTMs, all six with peepholes, were left as pruned
because the node does not output its cell states per step; the fit never needs them).

With sequence_lens (a packed sequence), the padded steps past each sequence's length are no rows, and a reverse
direction's first step reads initial_h.

An LSTM with input_forget=1 (f = 1 − i) is refit as any other: its forget block's rows are fitted and read by
nothing.

Left as pruned (the reason in the report): layout=1 (batch first: onnxruntime does not run it, so no run of ours
reaches it). A GRU (linear_before_reset=0) whose reset
gate activation is not Sigmoid/Tanh/Relu has W_h refit alone and R_h left. A weight that is not in the masks is
held fixed (its contribution subtracted from the target). `select` (the OBS mask choice) is not applied to
recurrent weights: they keep the masks they came with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}  # gate blocks stacked along W's and R's axis 1
ACTIVATIONS = {"Sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)), "Tanh": np.tanh, "Relu": lambda a: np.maximum(a, 0.0)}
GRU_Z, GRU_R, GRU_H = 0, 1, 2


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _input(node, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def state_name(node: onnx.NodeProto) -> str:
    """The name of the node's Y output (all hidden states), or the one name_states gives it when it has none."""
    return node.output[0] if len(node.output) and node.output[0] else f"{node.input[1]}::Y_refit"


def name_states(graph: onnx.GraphProto) -> None:
    """Give every recurrent node without a Y output one (state_name), in place: on a temporary copy the capture runs."""
    for node in graph.node:
        if node.op_type in RECURRENT_GATES and not (len(node.output) and node.output[0]):
            if len(node.output):
                node.output[0] = state_name(node)
            else:
                node.output.append(state_name(node))


@dataclass
class RecurrentLayer:
    """One LSTM/GRU/RNN node whose W and/or R is masked."""

    node: onnx.NodeProto
    w: str | None  # W (input weights) when masked, else None (held fixed)
    r: str | None  # R (recurrent weights) when masked
    bias: str | None = None  # B refit with them (the intercept), when it belongs to this node alone
    notes: list[str] = field(default_factory=list)
    scope: tuple = ()  # the If branch it sits in (reconstruct_bodies.Scope), () in the main graph
    # (node, scope) of the other nodes that read the same W, R and B alike: the same layer in another If branch
    # (silero-vad's decoder LSTM with and without a state); their rows join this node's, from the branches that ran
    twins: list = field(default_factory=list)

    @property
    def sites(self) -> list[tuple[onnx.NodeProto, tuple]]:
        return [(self.node, self.scope), *self.twins]

    @property
    def weight(self) -> str:
        return self.w or self.r

    @property
    def weights(self) -> tuple[str, ...]:
        return tuple(n for n in (self.w, self.r) if n)

    @property
    def reads(self) -> tuple[str, ...]:  # from the pruned model: X only (the states are the dense model's)
        return tuple(node.input[0] for node, _ in self.sites)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(o for node, _ in self.sites for o in node.output if o)

    def captures(self) -> tuple[list, list]:
        """(X from the pruned model, X, Y and initial_h from the dense one) as reconstruct_bodies captures (tensor,
        scope), per site: the node and its twins."""
        return ([(n.input[0], sc) for n, sc in self.sites],
                [(name, sc) for n, sc in self.sites for name in site_names(n)])


def site_names(node: onnx.NodeProto) -> tuple[str, ...]:
    """X, all hidden states Y, initial_h and sequence_lens when given: what a recurrent node's rows are made of."""
    return tuple(n for n in (node.input[0], state_name(node), _input(node, 5), _input(node, 4)) if n)


def recurrent_layer(node, weights: dict[int, str], inits, users, refit_bias: bool = True, twins: int = 0
                    ) -> tuple[RecurrentLayer | None, str | None]:
    """The refittable layer of `node` given its masked weights {input index: name}, or (None, why not); `twins`:
    how many other nodes read its weights (its B is its own when they alone read it too)."""
    op = node.op_type
    if _attr(node, "layout", 0):
        return None, f"{op} '{node.name}' has layout=1 (batch first: onnxruntime does not run it); left as pruned"
    for i in (1, 2):
        if _input(node, i) not in inits:
            return None, f"{op} '{node.name}': input {i} is computed, not a constant; left as pruned"
    b = _input(node, 3)
    bias = b if refit_bias and b in inits and users.get(b, 0) == 1 + twins else None
    return RecurrentLayer(node, weights.get(1), weights.get(2), bias), None


@dataclass
class _Problem:
    """One least-squares problem of a direction: the gate blocks `gates`, the weights `parts` ("W", "R") as
    columns; `reset`: the R rows are r_t ⊙ H_{t-1} (GRU h, linear_before_reset=0)."""

    direction: int
    gates: tuple[int, ...]
    parts: tuple[str, ...]
    reset: bool = False
    free: tuple[str, ...] = ()  # the parts refit (masked); the others are held fixed
    gram: object = None


class RecurrentFit:
    """One recurrent node's Grams while the data streams by, then its solves and write-back (reconstruct._Fit's
    interface: `inputs` read from the pruned model, `targets` from the dense one, `feed`, `finish`)."""

    def __init__(self, layer: RecurrentLayer, inits, masks, dense_consts):
        from onnxprune.converter.reconstruct import _Gram

        self.layer, node = layer, layer.node
        self.op, self.gates = node.op_type, RECURRENT_GATES[node.op_type]
        self.hidden = int(_attr(node, "hidden_size", 0))
        self.direction = _text(_attr(node, "direction", b"forward"))
        self.clip = _attr(node, "clip", None)
        self.names = {"W": node.input[1], "R": node.input[2]}
        self.masks = {p: np.asarray(masks[n], dtype=bool) if n in masks else None for p, n in self.names.items()}
        self.current = {p: numpy_helper.to_array(inits[n]).astype(np.float64) for p, n in self.names.items()}
        self.dense = {p: numpy_helper.to_array(dense_consts[n]).astype(np.float64) for p, n in self.names.items()}
        dirs = self.current["W"].shape[0]
        b = _input(node, 3)
        self.b = (numpy_helper.to_array(inits[b]).astype(np.float64) if b in inits
                  else np.zeros((dirs, 2 * self.gates * self.hidden)))
        self.dense_b = (numpy_helper.to_array(dense_consts[b]).astype(np.float64) if b in dense_consts else self.b)
        self.reset_fn = self._reset_activation()
        self.problems = [p for d in range(dirs) for p in self._problems(d)]
        for p in self.problems:
            p.free = tuple(part for part in p.parts if self.masks[part] is not None)
            p.gram = _Gram(1, intercept=layer.bias is not None)
        self.problems = [p for p in self.problems if p.free]
        self.inputs, self.targets = layer.captures()

    def _reset_activation(self):
        """The GRU reset gate's activation (f, the first of each direction's pair), or None if not one we compute."""
        if self.op != "GRU":
            return None
        names = [_text(a) for a in _attr(self.layer.node, "activations", [])] or ["Sigmoid", "Tanh"] * 2
        if any(names[i] not in ACTIVATIONS for i in range(0, len(names), 2)):
            return None
        return [ACTIVATIONS[names[i]] for i in range(0, len(names), 2)]

    def _problems(self, d: int) -> list[_Problem]:
        if self.op != "GRU":
            return [_Problem(d, tuple(range(self.gates)), ("W", "R"))]
        out = [_Problem(d, (GRU_Z, GRU_R), ("W", "R"))]
        if _attr(self.layer.node, "linear_before_reset", 0):
            return out + [_Problem(d, (GRU_H,), ("W",)), _Problem(d, (GRU_H,), ("R",))]
        if self.reset_fn is None:
            self.layer.notes.append(f"GRU '{self.layer.node.name}': reset gate activation not computed; R_h left "
                                    "as pruned")
            return out + [_Problem(d, (GRU_H,), ("W",))]
        return out + [_Problem(d, (GRU_H,), ("W", "R"), reset=True)]

    # -------------------------------------------------------------------------------------------- rows

    def _sequences(self, values: dict[str, np.ndarray], node=None):
        """(X [T, N, in], Y [T, dirs, N, H], h0 [dirs, N, H]) (layout 0: recurrent_layer refuses layout 1)."""
        node = self.layer.node if node is None else node
        x, y = values[node.input[0]], values[state_name(node)]
        h0 = values.get(_input(node, 5))
        if h0 is None:
            h0 = np.zeros(y.shape[1:], dtype=y.dtype)
        return x, y, h0

    def _reverse(self, d: int) -> bool:
        return self.direction == "reverse" or (self.direction == "bidirectional" and d == 1)

    def _rows(self, values, d: int, node=None) -> tuple[np.ndarray, np.ndarray]:
        """(X_t, H_{t-1}) rows [T·N, in] and [T·N, H] of direction d. With sequence_lens, a reverse direction starts
        at each sequence's last step from initial_h (the steps after it are padding, their Y zeros)."""
        x, y, h0 = self._sequences(values, node)
        hd = y[:, d]
        prev = (np.concatenate([hd[1:], h0[d][None]]) if self._reverse(d)
                else np.concatenate([h0[d][None], hd[:-1]]))
        lens = self._lens(values, node, len(x))
        if lens is not None and self._reverse(d):
            last = np.arange(len(x))[:, None] == lens[None, :] - 1  # [T, N]: each sequence's last step
            prev = np.where(last[..., None], h0[d][None], prev)
        return (x.reshape(-1, x.shape[-1]).astype(np.float64), prev.reshape(-1, prev.shape[-1]).astype(np.float64))

    def _lens(self, values, node, steps: int) -> np.ndarray | None:
        """Each sequence's length (sequence_lens [N]), or None when the node takes none."""
        node = self.layer.node if node is None else node
        name = _input(node, 4)
        return None if not name else np.minimum(np.asarray(values[name], dtype=np.int64).reshape(-1), steps)

    def _valid(self, values, node, steps: int) -> np.ndarray | None:
        """[T·N] rows that are steps of a sequence (not padding past its sequence_lens), or None for all."""
        lens = self._lens(values, node, steps)
        return None if lens is None else (np.arange(steps)[:, None] < lens[None, :]).reshape(-1)

    def _block(self, weights, part: str, d: int, gates) -> np.ndarray:
        h = self.hidden
        return np.concatenate([weights[part][d, g * h:(g + 1) * h] for g in gates])

    def _bias(self, b: np.ndarray, part: str, d: int, gates) -> np.ndarray:
        h, off = self.hidden, (0 if part == "W" else self.gates * self.hidden)
        return np.concatenate([b[d, off + g * h:off + (g + 1) * h] for g in gates])

    def _reset(self, x, hp, weights, b, d: int) -> np.ndarray:
        """r_t of direction d from rows and weights (GRU, linear_before_reset=0)."""
        a = (x @ self._block(weights, "W", d, (GRU_R,)).T + hp @ self._block(weights, "R", d, (GRU_R,)).T
             + self._bias(b, "W", d, (GRU_R,)) + self._bias(b, "R", d, (GRU_R,)))
        if self.clip is not None:
            a = np.clip(a, -self.clip, self.clip)
        return self.reset_fn[d](a)

    def _columns(self, p: _Problem, x, hp, weights, b) -> dict[str, np.ndarray]:
        rows = {"W": x, "R": hp}
        if p.reset:
            rows["R"] = self._reset(x, hp, weights, b, p.direction) * hp
        return rows

    def feed_captures(self, pruned: dict, dense: dict) -> None:
        """Values by capture: one batch of rows from each site whose body ran (a branch that did not gives none)."""
        for node, scope in self.layer.sites:
            px = {node.input[0]: pruned[(node.input[0], scope)]}
            dt = {n: dense[(n, scope)] for n in site_names(node)}
            if all(v.size for v in (*px.values(), *dt.values())):
                self.feed(px, dt, node)

    def feed(self, pruned: dict[str, np.ndarray], dense: dict[str, np.ndarray], node=None) -> None:
        node = self.layer.node if node is None else node
        x = pruned[node.input[0]]
        valid = self._valid(dense, node, len(x))  # padded steps are no rows: the node neither reads nor writes there
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        if valid is not None:
            x = x[valid]
        for d in sorted({p.direction for p in self.problems}):
            xd, hd = self._rows(dense, d, node)
            if valid is not None:
                xd, hd = xd[valid], hd[valid]
            for p in (q for q in self.problems if q.direction == d):
                dcols = self._columns(p, xd, hd, self.dense, self.dense_b)
                cols = {"W": x, "R": dcols["R"]}  # the state rows are the dense model's (module doc)
                t = sum(dcols[part] @ self._block(self.dense, part, d, p.gates).T for part in p.parts)
                t = t + sum(self._bias(self.dense_b, part, d, p.gates) for part in p.parts)
                for part in p.parts:
                    if part not in p.free:  # held fixed: its own contribution comes off the target
                        t = t - cols[part] @ self._block(self.current, part, d, p.gates).T
                if self.layer.bias is None:  # the biases stay: off the target too
                    t = t - sum(self._bias(self.b, part, d, p.gates) for part in p.parts)
                p.gram.add(np.concatenate([cols[part] for part in p.free], axis=1), t)

    # --------------------------------------------------------------------------------------------- solve

    def finish(self, inits, damp: float, report, prior: bool | str = False) -> None:
        from onnxprune.converter.reconstruct import _solve, _write

        layer = self.layer
        if not self.problems or self.problems[0].gram.rows == 0:
            for name in (layer.w, layer.r):
                if name:
                    report.skipped[name] = "no calibration samples"
            return
        new = {p: self.current[p] * self.masks[p] if self.masks[p] is not None else self.current[p].copy()
               for p in ("W", "R")}
        new_b = self.b.copy()
        h = self.hidden
        before = after = rows = 0.0
        any_prior = False
        for p in self.problems:
            gram, d = p.gram, p.direction
            w = np.concatenate([self._block(new, part, d, p.gates) for part in p.free], axis=1)
            m = np.concatenate([self._block(self.masks, part, d, p.gates) for part in p.free], axis=1)
            c = (sum(self._bias(self.b, part, d, p.gates) for part in p.parts) if gram.intercept else None)
            toward_kept = gram.rows < w.shape[1] if prior == "auto" else bool(prior)
            any_prior |= toward_kept
            sol_w, sol_c, e0, e1 = _solve(gram, w * m, c, m, damp, toward_kept)
            before, rows = before + e0, max(rows, gram.rows)
            if e1 > e0:  # the ridge can lose on tiny data: never make a problem worse
                after += e0
                continue
            after += e1
            start = 0
            for part in p.free:
                width = new[part].shape[2]
                block = np.where(m[:, start:start + width], sol_w[:, start:start + width], 0.0)
                for k, g in enumerate(p.gates):
                    new[part][d, g * h:(g + 1) * h] = block[k * h:(k + 1) * h]
                start += width
            if gram.intercept:  # the intercept is Wb + Rb of the parts; the first free part's half takes the change
                own = p.free[0]
                rest = sum(self._bias(self.b, part, d, p.gates) for part in p.parts if part != own)
                off = 0 if own == "W" else self.gates * h
                for k, g in enumerate(p.gates):
                    new_b[d, off + g * h:off + (g + 1) * h] = (sol_c - rest)[k * h:(k + 1) * h]
        entry = {"error_before": before / rows, "error_after": after / rows, "samples": int(rows),
                 "target": float(sum(p.gram.tt.sum() for p in self.problems)) / rows, "prior": any_prior,
                 "recurrent": True}
        for part, name in (("W", layer.w), ("R", layer.r)):
            if name:
                dtype = numpy_helper.to_array(inits[name]).dtype
                stored = new[part].astype(dtype)
                stored[~self.masks[part]] = 0
                _write(inits[name], stored)
                report.refit[name] = entry
        if layer.bias:
            _write(inits[layer.bias], new_b.astype(numpy_helper.to_array(inits[layer.bias]).dtype))
        for note in layer.notes:
            report.skipped.setdefault(layer.r or layer.weight, note)
