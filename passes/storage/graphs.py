"""Small graph helpers the storage formats share."""

from __future__ import annotations

import onnx

from onnxprune.errors import ModelError

# A crafted shape must not make us allocate terabytes: refuse any tensor above this many elements.
MAX_ELEMENTS = 2**33


def all_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from all_graphs(attr.g)
            for g in attr.graphs:
                yield from all_graphs(g)


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def fed_inputs(model: onnx.ModelProto) -> set[str]:
    """The main graph's inputs a caller may feed, which no sparse form may replace: all of them, but below IR 4 not
    the initializers, which that IR lists among the inputs whatever the exporter meant (torch.onnx at opset 7-8, the
    ONNX model zoo's classic CNNs). From IR 4 an initializer listed as an input is there by choice
    (torch.onnx's keep_initializers_as_inputs=True): a default a caller may override."""
    names = {i.name for i in model.graph.input}
    if model.ir_version < 4:
        names -= {t.name for t in model.graph.initializer}
    return names


def drop_inputs(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the graph inputs named in `names` (initializers below IR 4 that a node now computes)."""
    kept = [i for i in graph.input if i.name not in names]
    if len(kept) != len(graph.input):
        del graph.input[:]
        graph.input.extend(kept)


def replace_initializers(graph: onnx.GraphProto, *, drop: set[str], add=()) -> None:
    """Drop the named initializers (keeping the order of the rest) and append `add`."""
    if drop:
        kept = [t for t in graph.initializer if t.name not in drop]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    graph.initializer.extend(add)


def refuse_huge(count: int, name: str, where="model") -> None:
    if count > MAX_ELEMENTS:
        raise ModelError(
            f"tensor '{name}' in {where} declares {count:.3g} elements, above the limit of {MAX_ELEMENTS:.3g}; "
            "the file is corrupted or crafted."
        )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300].rstrip(". ")
