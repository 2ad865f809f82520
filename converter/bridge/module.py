"""OnnxModule: an ONNX graph run as a trainable ``torch.nn.Module``, node by node through the op registry.

Building a module:
  1. Every node is looked up first (domain, op type, opset), nodes inside If/Loop bodies too; all unsupported nodes
     are reported in one ``UnsupportedOpError``. Local functions are inlined before that.
  2. Initializers named in ``trainable`` become ``nn.Parameter``s in their exact ONNX layout, in
     ``self.params`` (a ParameterDict under sanitized keys); ``onnx_parameters()`` maps ONNX names to them.
     float32/float64 parameters keep their dtype. float16/bfloat16 ones are trained through float32 *master
     copies*: the parameter is float32, the graph sees it cast to its ONNX dtype, and ``write_back`` rounds
     it back (an untouched value round-trips bit for bit). ``dtype=`` overrides every float dtype (e.g.
     float64 for gradcheck) including Cast targets; ``write_back`` still writes the ONNX dtype. Change dtypes
     with ``dtype=`` rather than ``module.double()``, which would leave Cast nodes producing float32.
  3. Every other initializer, and every Constant node's value, becomes a non-persistent buffer of
     ``self.constants`` (so ``.to(device)`` moves it and ``state_dict()`` holds only the trainable ones);
     int tensors keep their int dtype. Initializers also listed as graph inputs (IR < 4) are initializers.
  4. Nodes run in topological order; each value is dropped as soon as its last consumer has run.

Dropout: in ``train()`` mode each Dropout node drops at ``dropout_ratios[node_name]`` (initially its own ONNX
ratio; nodes without a name are keyed ``"<op_type>_<index>"``), in ``eval()`` mode it is the identity.
BatchNormalization always uses its running statistics (they stay frozen while fine-tuning).

Sketch::

    m = OnnxModule(model, trainable={"fc1.weight", "fc1.bias"})
    loss = F.cross_entropy(m(x)[0], y); loss.backward(); opt.step()
    model = m.write_back(model)          # same initializer names, dtypes and shapes; new values
"""

from __future__ import annotations

import heapq
import logging
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Union

import numpy as np
import onnx
import onnx.inliner
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from onnxprune.errors import ConfigError, ConverterError, ModelError, UnsupportedOpError
from onnxprune.passes.scopes import FLOAT_TYPES, outer_reads

from .ops import (CONTROL_FLOW_OPS, ONNX_TO_TORCH, NodeContext, OpDef, RunState, default_dropout_ratio, lookup,
                  normalize_domain, numpy_to_torch, parse_attributes, sparse_to_dense, supported_ops,
                  tensor_raw_bytes)

log = logging.getLogger(__name__)

_MASTER_DTYPE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


@dataclass
class _Step:
    fn: object
    name: str
    op_type: str
    inputs: tuple
    outputs: tuple
    attrs: dict
    ctx: NodeContext
    free: tuple = ()


class OnnxModule(nn.Module):
    """Run ``model``'s graph in torch; train the initializers named in ``trainable``."""

    def __init__(self, model: onnx.ModelProto, trainable: Iterable[str] = (), device=None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__()
        if len(model.functions):
            model = onnx.inliner.inline_local_functions(model)
        graph = model.graph
        self._dtype = dtype
        self._run = RunState()
        opsets = {normalize_domain(o.domain): o.version for o in model.opset_import}
        nodes = list(graph.node)
        names = _unique_node_names(nodes)
        resolved = _resolve_nodes(nodes, names, opsets, self._run, dtype)  # raises before any tensor work

        init_types = {t.name: t.data_type for t in graph.initializer}
        init_types.update({s.values.name: s.values.data_type for s in graph.sparse_initializer})
        _check_initializer_types(init_types)
        trainable = _check_trainable(trainable, init_types, graph)

        self.params = nn.ParameterDict()
        self.constants = nn.Module()
        self._param_keys: dict[str, str] = {}
        self._onnx_dtypes: dict[str, torch.dtype] = {}
        self._param_seeds: list[tuple[str, str, Optional[torch.dtype]]] = []
        self._buffer_seeds: list[tuple[str, str]] = []
        consts = self._load_initializers(graph, trainable)

        order = _toposort(nodes, {i.name for i in graph.input} | set(init_types))
        self._steps = self._plan(order, nodes, names, resolved, consts, self._buffer_seeds)
        self._outputs = tuple(o.name for o in graph.output)
        self._inputs = tuple(i.name for i in graph.input if i.name not in init_types)
        self._sequences = {i.name for i in graph.input if i.type.HasField("sequence_type")}
        _mark_last_uses(self._steps, self._outputs)
        self._base_dropout = dict(self._run.dropout_ratios)
        if device is not None:
            self.to(device)
        log.debug("OnnxModule: %d nodes to run, %d trainable tensors, %d constants", len(self._steps),
                  len(self._param_keys), len(self._buffer_seeds))

    # ---------------------------------------------------------------------------------------------------- build

    def _load_initializers(self, graph, trainable: list) -> dict[str, torch.Tensor]:
        readers = [(t.name, lambda t=t: numpy_helper.to_array(t)) for t in graph.initializer]
        readers += [(s.values.name, lambda s=s: sparse_to_dense(s)) for s in graph.sparse_initializer]
        trainable = set(trainable)
        taken: set[str] = set()
        consts = {}
        for name, read in readers:
            try:
                tensor = numpy_to_torch(read())
            except Exception as e:  # external data not loaded, truncated raw_data, ...
                raise ModelError(f"cannot read initializer '{name}': {e}; load the model with its external data "
                                 "(converter.modelio.load_model)") from e
            self._onnx_dtypes[name] = tensor.dtype
            compute = self._dtype if (self._dtype is not None and tensor.is_floating_point()) else tensor.dtype
            key = _sanitize(name, taken, self.params if name in trainable else self.constants)
            if name in trainable:
                master = self._dtype or _MASTER_DTYPE.get(tensor.dtype, tensor.dtype)
                self.params[key] = nn.Parameter(tensor.to(master))
                self._param_keys[name] = key
                self._param_seeds.append((name, key, None if compute == master else compute))
            else:
                consts[name] = tensor.to(compute)
                self.constants.register_buffer(key, consts[name], persistent=False)
                self._buffer_seeds.append((name, key))
        return consts

    def _plan(self, order, nodes, names, resolved, consts, seeds: list) -> list[_Step]:
        """Fold Constant-like nodes into buffers, fill build-time constant inputs, compile bodies, make the steps."""
        taken = set(self.constants._buffers)
        steps = []
        for i in order:
            node = nodes[i]
            opdef, attrs, ctx = resolved[i]
            if opdef.fold and all(n == "" or n in consts for n in node.input):
                self._fold(node, opdef, attrs, ctx, consts, taken, seeds)
                continue
            inputs = tuple(node.input)
            if any(isinstance(v, _Pending) for v in attrs.values()):
                outer = tuple(sorted(outer_reads(node)))
                attrs = {k: Body(self, v, outer) if isinstance(v, _Pending) else v for k, v in attrs.items()}
                inputs += outer
            for j in opdef.static_inputs:
                if j < len(node.input) and node.input[j] in consts:
                    ctx.static[j] = consts[node.input[j]].reshape(-1).tolist()
            if node.op_type == "Dropout":
                has_ratio = len(node.input) > 1 and node.input[1] != ""
                self._run.dropout_ratios[ctx.name] = default_dropout_ratio(attrs, ctx, has_ratio)
            steps.append(_Step(opdef.fn, names[i], node.op_type, inputs, tuple(node.output), attrs, ctx))
        return steps

    def _fold(self, node, opdef: OpDef, attrs, ctx, consts, taken, seeds: list) -> None:
        for j in opdef.static_inputs:
            if j < len(node.input) and node.input[j]:
                ctx.static[j] = consts[node.input[j]].reshape(-1).tolist()
        outs = opdef.fn([consts[n] if n else None for n in node.input], attrs, ctx)
        for name, t in zip(node.output, [outs] if isinstance(outs, torch.Tensor) else outs):
            if name:
                if self._dtype is not None and t.is_floating_point():
                    t = t.to(self._dtype)
                consts[name] = t
                key = _sanitize(name, taken, self.constants)
                self.constants.register_buffer(key, t, persistent=False)
                seeds.append((name, key))

    def _body_constants(self, graph, seeds: list) -> dict[str, torch.Tensor]:
        """A body's own initializers, as non-persistent buffers (bodies hold no trainable parameters)."""
        taken = set(self.constants._buffers)
        consts = {}
        for t in graph.initializer:
            tensor = numpy_to_torch(numpy_helper.to_array(t))
            if self._dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(self._dtype)
            key = _sanitize(t.name, taken, self.constants)
            self.constants.register_buffer(key, tensor, persistent=False)
            seeds.append((t.name, key))
            consts[t.name] = tensor
        return consts

    # -------------------------------------------------------------------------------------------------- forward

    def forward(self, *args, **kwargs) -> tuple:
        """Graph inputs positionally (graph order) or by name; returns all graph outputs, in order."""
        values = self._feeds(args, kwargs)
        for name, key, dtype in self._param_seeds:
            p = self.params[key]
            values[name] = p if dtype is None else p.to(dtype)
        buffers = self.constants._buffers
        for name, key in self._buffer_seeds:
            values[name] = buffers[key]
        self._run.training = self.training
        _execute(self._steps, values)
        return tuple(values[n] for n in self._outputs)

    def _feeds(self, args, kwargs) -> dict:
        if len(args) > len(self._inputs):
            raise TypeError(f"OnnxModule takes {len(self._inputs)} inputs {list(self._inputs)}, got {len(args)}")
        feeds = dict(zip(self._inputs, args))
        for name, v in kwargs.items():
            if name not in self._inputs:
                raise TypeError(f"'{name}' is not a graph input; inputs are {list(self._inputs)}")
            if name in feeds:
                raise TypeError(f"input '{name}' given both positionally and by name")
            feeds[name] = v
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise TypeError(f"missing graph input(s) {missing}; inputs are {list(self._inputs)}")
        for name, v in feeds.items():
            if isinstance(v, (list, tuple)) and name in self._sequences:  # a sequence given as its elements: as the
                v = (torch.stack(list(v)) if all(isinstance(e, torch.Tensor) for e in v)  # data holds them, stacked
                     else np.stack([np.asarray(e) for e in v]))  # (arrays then go to the module's device below)
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(np.asarray(v), device=self._device())
            if self._dtype is not None and v.is_floating_point() and v.dtype != self._dtype:
                v = v.to(self._dtype)
            # a seq(tensor) input: its elements stacked on axis 0, as the data holds them (ops/sequence.py)
            feeds[name] = list(v.unbind(0)) if name in self._sequences else v
        return feeds

    def _device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    # ------------------------------------------------------------------------------------------ parameters, I/O

    def onnx_parameters(self) -> dict[str, nn.Parameter]:
        """The trainable parameters keyed by ONNX initializer name."""
        return {name: self.params[key] for name, key in self._param_keys.items()}

    def write_back(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of ``model`` whose trainable initializers hold the parameter values.

        Same names, dtypes and shapes. An initializer whose value did not change is left byte for byte as it
        was; a changed one is stored as raw_data in its ONNX dtype (fp16/bf16 masters rounded to nearest).
        """
        out = onnx.ModelProto()
        out.CopyFrom(model)
        by_name = {t.name: t for t in out.graph.initializer}
        missing = [n for n in self._param_keys if n not in by_name]
        if missing:
            raise ModelError(f"write_back: the model has no dense initializer(s) {missing}; pass the model this "
                             "module was built from (densified)")
        for name, key in self._param_keys.items():
            proto = by_name[name]
            value = self.params[key].detach().to("cpu", self._onnx_dtypes[name])
            if list(value.shape) != list(proto.dims):
                raise ModelError(f"write_back: parameter '{name}' has shape {list(value.shape)}, the initializer "
                                 f"{list(proto.dims)}")
            raw = tensor_raw_bytes(value)
            if raw != tensor_raw_bytes(numpy_to_torch(numpy_helper.to_array(proto))):
                _set_raw(proto, raw)
        return out

    # --------------------------------------------------------------------------------------------------- dropout

    @property
    def dropout_ratios(self) -> dict:
        """Live {Dropout node name: ratio} used in train mode (None: the node's run-time ratio input)."""
        return self._run.dropout_ratios

    @dropout_ratios.setter
    def dropout_ratios(self, ratios: Mapping[str, Optional[float]]) -> None:
        _check_dropout_names(ratios, self._base_dropout)
        for name, p in ratios.items():
            self._run.dropout_ratios[name] = None if p is None else _check_ratio(name, float(p))

    def set_dropout_scale(self, factor: Union[float, Mapping[str, float]]) -> dict:
        """Set each Dropout ratio to its node's own ONNX ratio times ``factor`` (not cumulative).

        ``factor`` is one number for all nodes or {node name: factor} for some; e.g. Han et al.'s
        D_new = D_old * sqrt(C_new / C_old). Nodes whose ratio is a run-time tensor cannot be scaled.
        Returns the ratios now in force.
        """
        factors = dict(factor) if isinstance(factor, Mapping) else {n: factor for n in self._base_dropout}
        _check_dropout_names(factors, self._base_dropout)
        for name, f in factors.items():
            base = self._base_dropout[name]
            if base is None:
                if isinstance(factor, Mapping):
                    raise ConfigError(f"Dropout '{name}' takes its ratio from a run-time tensor; set "
                                      "dropout_ratios['{name}'] instead of scaling it")
                log.warning("Dropout '%s': ratio is a run-time tensor, not rescaled", name)
                continue
            self._run.dropout_ratios[name] = _check_ratio(name, base * float(f))
        return dict(self._run.dropout_ratios)

    def extra_repr(self) -> str:
        return (f"nodes={len(self._steps)}, inputs={list(self._inputs)}, outputs={list(self._outputs)}, "
                f"trainable={len(self._param_keys)}")


# --------------------------------------------------------------------------------------------- bodies, running


@dataclass
class _Pending:
    """A graph attribute whose nodes are resolved; `OnnxModule._plan` compiles it into a `Body`."""

    graph: onnx.GraphProto
    names: list
    resolved: list


class Body:
    """An If/Loop body compiled once: its steps run over the outer values it reads and its own inputs.

    Its initializers and Constant nodes are buffers of the owning module (moved by ``.to(device)``); a weight
    that should train lives in the main graph (outer scope), which bodies read like any other outer value.
    """

    def __init__(self, owner: "OnnxModule", pending: _Pending, outer: tuple):
        graph = pending.graph
        self.outer = outer
        self.inputs = tuple(i.name for i in graph.input)
        self.outputs = tuple(o.name for o in graph.output)
        self._types = [o.type.tensor_type.elem_type for o in graph.output]
        self._dims = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output]
        self._constants = owner.constants
        self._seeds: list[tuple[str, str]] = []
        consts = owner._body_constants(graph, self._seeds)
        nodes = list(graph.node)
        order = _toposort(nodes, set(self.inputs) | set(consts) | set(outer))
        self.steps = owner._plan(order, nodes, pending.names, pending.resolved, consts, self._seeds)
        _mark_last_uses(self.steps, self.outputs)

    def run(self, outer_values: list, inputs: list) -> list:
        values = dict(zip(self.outer, outer_values))
        values.update(zip(self.inputs, inputs))
        buffers = self._constants._buffers
        for name, key in self._seeds:
            values[name] = buffers[key]
        _execute(self.steps, values)
        return [values[n] for n in self.outputs]

    def output_dtype(self, index: int) -> torch.dtype:
        return ONNX_TO_TORCH.get(self._types[index], torch.float32)

    def output_dims(self, index: int) -> list[int]:
        """Declared dims of output `index`, 0 where symbolic or unknown."""
        return self._dims[index]


def _execute(steps, values: dict) -> None:
    """Run the steps in order over `values` (name -> tensor), dropping each value after its last use."""
    for step in steps:
        try:
            out = step.fn([values[n] if n else None for n in step.inputs], step.attrs, step.ctx)
        except torch.OutOfMemoryError:
            raise
        except ConverterError:
            raise
        except Exception as e:
            raise ConverterError(f"{step.op_type} node '{step.name}' failed in the torch bridge: {e}") from e
        if out is None or isinstance(out, torch.Tensor):  # None: an empty Optional
            out = (out,)
        for name, t in zip(step.outputs, out):
            if name:
                values[name] = t
        for name in step.free:
            values.pop(name, None)


def _mark_last_uses(steps, outputs) -> None:
    keep = set(outputs)
    last: dict[str, int] = {}
    for k, step in enumerate(steps):
        for n in step.outputs:
            last[n] = k
        for n in step.inputs:
            last[n] = k
    dying: dict[int, list] = {}
    for n, k in last.items():
        if n and n not in keep:
            dying.setdefault(k, []).append(n)
    for k, step in enumerate(steps):
        step.free = tuple(dying.get(k, ()))


# -------------------------------------------------------------------------------------------------------- helpers


def _unique_node_names(nodes) -> list[str]:
    names, seen = [], set()
    for i, n in enumerate(nodes):
        name = n.name or f"{n.op_type}_{i}"
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        names.append(name)
    return names


def _resolve_nodes(nodes, names, opsets, run: RunState, dtype) -> list:
    """(OpDef, attrs, ctx) for every node, bodies included, or one UnsupportedOpError listing every node (in any
    body) we cannot run."""
    problems: list = []
    resolved = _resolve(nodes, names, opsets, run, dtype, problems)
    if problems:
        raise _unsupported_error(problems)
    return resolved


def _resolve(nodes, names, opsets, run: RunState, dtype, problems: list) -> list:
    resolved = []
    for node, name in zip(nodes, names):
        domain = normalize_domain(node.domain)
        opset = opsets.get(domain)
        label = domain or "ai.onnx"
        reason = None
        if opset is None:
            reason = f"the model imports no opset for domain '{label}'"
        opdef = lookup(domain, node.op_type, opset) if reason is None else None
        if reason is None and opdef is None:
            reason = ("control flow op with no implementation (the bridge runs If, Loop and Scan from opset 9)"
                      if domain == "" and node.op_type in CONTROL_FLOW_OPS else "no implementation")
        attrs = ctx = None
        if reason is None:
            try:
                attrs = parse_attributes(node)
            except ValueError as e:
                reason = str(e)
        if reason is None:
            attrs = _resolve_bodies(node, name, attrs, opsets, run, dtype, problems)
            ctx = NodeContext(name, node.op_type, domain, opset, len(node.output), float_dtype=dtype, run=run)
            reason = opdef.check(attrs, ctx) if opdef.check else None
        if reason is not None:
            problems.append((label, node.op_type, opset, name, reason))
        resolved.append((opdef, attrs, ctx))
    return resolved


def _resolve_bodies(node, name, attrs: dict, opsets, run, dtype, problems: list) -> dict:
    """Graph attributes become `_Pending` bodies (their nodes resolved now, so every gap is reported at once);
    ops with bodies also get their number of own inputs (`_inputs`) and their names (`_input_names`)."""
    bodies = {k: v for k, v in attrs.items() if isinstance(v, onnx.GraphProto)}
    if not bodies:
        return attrs
    attrs = dict(attrs, _inputs=len(node.input), _input_names=list(node.input))
    for key, graph in bodies.items():
        body_nodes = list(graph.node)
        body_names = [f"{name}/{key}/{n}" for n in _unique_node_names(body_nodes)]
        attrs[key] = _Pending(graph, body_names, _resolve(body_nodes, body_names, opsets, run, dtype, problems))
    return attrs


def _unsupported_error(problems) -> UnsupportedOpError:
    groups: dict[tuple, list] = {}
    for domain, op_type, opset, name, reason in problems:
        groups.setdefault((domain, op_type, opset, reason), []).append(name)
    lines = [f"  - {op} ({dom}, opset {ops}): {', '.join(repr(n) for n in nodes)}: {reason}"
             for (dom, op, ops, reason), nodes in groups.items()]
    n_types = len({(d, o) for d, o, _ in supported_ops()})
    err = UnsupportedOpError(
        f"the torch bridge cannot run {len(problems)} node(s) of this model:\n" + "\n".join(lines)
        + f"\nIt implements {n_types} op types (converter.bridge.supported_ops()); fine-tuning needs every node. "
          "Skip fine-tuning for this model or add the op to converter/bridge/ops/ (one module per op family).")
    err.unsupported = problems
    return err


def _check_initializer_types(init_types: dict) -> None:
    bad = {n: TensorProto.DataType.Name(t) for n, t in init_types.items() if t not in ONNX_TO_TORCH}
    if bad:
        raise UnsupportedOpError(f"the torch bridge cannot hold initializer(s) of these element types: {bad}")


def _check_trainable(trainable: Iterable[str], init_types: dict, graph) -> list:
    trainable = list(dict.fromkeys(trainable))
    unknown = [n for n in trainable if n not in init_types]
    if unknown:
        raise ConfigError(f"trainable tensor(s) {unknown} are not initializers of graph '{graph.name}'")
    sparse = {s.values.name for s in graph.sparse_initializer}
    not_float = [n for n in trainable if init_types[n] not in FLOAT_TYPES]
    if not_float:
        raise ConfigError(f"trainable tensor(s) {not_float} are not floating point; only float initializers train")
    in_sparse = [n for n in trainable if n in sparse]
    if in_sparse:
        raise ConfigError(f"trainable tensor(s) {in_sparse} are sparse initializers; densify the model first "
                          "(converter.modelio.load_model does)")
    return trainable


def _sanitize(name: str, taken: set, container: nn.Module) -> str:
    """A unique attribute-safe key for ``name``: non-word characters become '_'."""
    base = re.sub(r"\W", "_", name) or "_"
    if base[0].isdigit():
        base = "_" + base
    key, k = base, 1
    while key in taken or hasattr(container, key):
        key = f"{base}_{k}"
        k += 1
    taken.add(key)
    return key


def _toposort(nodes, available: set) -> list[int]:
    """Node indices in a topological order, original order among ready nodes."""
    producer = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer[o] = i
    deps = []
    for i, n in enumerate(nodes):
        d = set()
        reads = list(n.input) + (sorted(outer_reads(n)) if any(a.type == onnx.AttributeProto.GRAPH
                                                                for a in n.attribute) else [])
        for x in reads:
            if not x or x in available:
                continue
            if x not in producer:
                raise ModelError(f"node '{n.name or n.op_type}' reads '{x}', which no node, initializer or graph "
                                 "input provides")
            d.add(producer[x])
        deps.append(d)
    users: dict[int, list] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op_type for i in range(len(nodes)) if waiting[i] > 0]
        raise ModelError(f"the graph has a cycle through node(s) {stuck[:10]}")
    return order


def _set_raw(proto: onnx.TensorProto, raw: bytes) -> None:
    for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data",
              "external_data"):
        proto.ClearField(f)
    proto.ClearField("data_location")  # not `= DEFAULT`: proto2 writes an explicitly set default (2 bytes a tensor)
    proto.raw_data = raw


def _check_dropout_names(names: Iterable[str], known: Mapping) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{unknown} are not Dropout nodes of this model; Dropout nodes: {sorted(known)}")


def _check_ratio(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"Dropout '{name}': ratio {p} is outside [0, 1]")
    return p
