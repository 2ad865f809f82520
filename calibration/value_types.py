"""What kind of value a graph input or output is, read from its onnx TypeProto, without onnxruntime (inspect reads
models without importing it): the tensor behind an optional, a sequence's element tensor, a type in words, and a
dim named by arithmetic of other dims."""

from __future__ import annotations

import ast

import onnx


def value_tensor(type_proto: onnx.TypeProto) -> tuple[str, onnx.TypeProto.Tensor | None]:
    """(kind, tensor type) of a graph input's type: "tensor" for a tensor or an optional tensor, "sequence" for a
    sequence of tensors (its element type), else (the type in words, None)."""
    which = type_proto.WhichOneof("value")
    if which == "tensor_type":
        return "tensor", type_proto.tensor_type
    if which == "optional_type" and type_proto.optional_type.elem_type.WhichOneof("value") == "tensor_type":
        return "tensor", type_proto.optional_type.elem_type.tensor_type
    if which == "sequence_type" and type_proto.sequence_type.elem_type.WhichOneof("value") == "tensor_type":
        return "sequence", type_proto.sequence_type.elem_type.tensor_type
    return type_words(type_proto), None


def type_words(t: onnx.TypeProto) -> str:
    """A value type as inspect prints it: "float32", "seq(float32)", "map(int64, float32)", "optional(...)"."""
    kind = t.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        tt = getattr(t, kind)
        name = str(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else "?"
        return name if kind == "tensor_type" else f"sparse({name})"
    if kind == "sequence_type":
        return f"seq({type_words(t.sequence_type.elem_type)})"
    if kind == "map_type":
        key = onnx.helper.tensor_dtype_to_np_dtype(t.map_type.key_type)
        return f"map({key}, {type_words(t.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({type_words(t.optional_type.elem_type)})"
    return kind or "?"


def dim_params(vi: onnx.ValueInfoProto) -> list[str]:
    """The dim_param of each axis of an input as the data holds it ('' when unnamed or fixed): an optional tensor's
    axes, a sequence's stacking axis ('') and then its element's axes; [] for what no data feeds."""
    kind, tt = value_tensor(vi.type)
    if tt is None:
        return []
    params = [d.dim_param if d.HasField("dim_param") else "" for d in tt.shape.dim] if tt.HasField("shape") else [""]
    return ["", *params] if kind == "sequence" else params


def unfed_reason(name: str, kind: str) -> str:
    """What prune says (and inspect notes) of an input no data of ours can feed, `kind` its type in words."""
    return (f"input '{name}' is {kind}: onnxprune feeds tensors, optional tensors and sequences of tensors, not this "
            "type, so it can neither measure nor verify the model; export the model with a tensor input")


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.FloorDiv: lambda a, b: a // b, ast.Div: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}


def dim_expression(name: str, size: int, batch_names: set[str] = frozenset(), values: dict | None = None) -> int:
    """A dim named `name` when every plain name in it is `size` (or its entry in `values`): the arithmetic (+, -, *,
    / and // as integer division, %) of an expression dim (torch dynamo's "P + 1", "8*T8 + 8"), read, never run as
    code; `size` for a plain name or one this cannot read (a batch name inside it, a function, a value below 1)."""
    try:
        tree = ast.parse(name.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return size
    if isinstance(tree, ast.Name):
        return size

    def ev(node) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id not in batch_names:
            return (values or {}).get(node.id, size)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(name)

    try:
        got = ev(tree)
    except (ValueError, ZeroDivisionError):
        return size
    return got if got >= 1 else size


def is_dim_expression(name: str) -> bool:
    """Whether a dim's name is arithmetic of other names ("P + 1"), not a plain name ("P", "batch_size")."""
    try:
        tree = ast.parse(name.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        return False
    return isinstance(tree, (ast.BinOp, ast.UnaryOp))
