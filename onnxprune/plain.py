"""Plain values for files and people: the one JSON/TOML cleaner and the one number formatter.

    plain(obj)                 JSON-ready: numpy -> Python, tuples/sets -> lists, NaN/inf -> None, Path -> str
    plain(obj, toml=True)      TOML-ready: None and empty tables dropped, NaN/inf refused (a recipe holds no NaN)
    dumps(obj)                 strict JSON text (never bare NaN/Infinity)
    count(266_200) == "266K"   3 significant digits with K/M/G;  nbytes(1_065_000) == "1.02 MB"
    listed(names) == "a, b, c (+2 more)"   the first few of a list, and how many are not shown: more(5, 3)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import PurePath

from onnxprune.errors import ConfigError


def plain(obj, *, toml: bool = False):
    if isinstance(obj, Mapping):
        items = ((str(k), plain(v, toml=toml)) for k, v in obj.items())
        if toml:  # None and empty tables left out: loading gives them their defaults
            return {k: v for k, v in items if v is not None and not (isinstance(v, dict) and not v)}
        return dict(items)
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(v, toml=toml) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy arrays and scalars
        return plain(obj.tolist(), toml=toml)
    if isinstance(obj, float) and not math.isfinite(obj):
        if toml:
            raise ConfigError(f"cannot write {obj} into a recipe.")
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    return str(obj)


def dumps(obj, **kwargs) -> str:
    """JSON text that every parser reads: NaN and infinities become null."""
    return json.dumps(plain(obj), allow_nan=False, **kwargs)


def count(n, digits: int = 3) -> str:
    """266200 -> '266K', 1234567 -> '1.23M', None -> 'unknown'."""
    if n is None:
        return "unknown"
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.{digits}g}{unit}"
    return f"{n:.0f}"


def more(total: int, shown: int, what: str = "more") -> str:
    """" (+2 more)" for the items of `total` past the `shown` first ones; "" when every one is shown."""
    return f" (+{total - shown} {what})" if total > shown else ""


def listed(items, shown: int = 3, sep: str = ", ") -> str:
    """The first `shown` of `items` (strings) joined by `sep`, then more(): "'a', 'b', 'c' (+2 more)"."""
    items = list(items)
    return sep.join(items[:shown]) + more(len(items), shown)


NAME_CHARS = 60  # a node name longer than this is shortened where the terminal lists layers (`short_name`)


def short_name(name: str, limit: int = NAME_CHARS) -> str:
    """A long node name shortened for a table or a listing, its ends kept: TFLite's fused names, the names of every
    op folded into one joined by ';' (tf2onnx --tflite: 300 characters a Conv), as their first and last parts, then
    a middle ellipsis past `limit`. Real models 44: MediaPipe's hand landmarker wrote a 2,624-character summary line."""
    if len(name) <= limit:
        return name
    parts = name.split(";")
    if len(parts) > 2:
        name = f"{parts[0]};…;{parts[-1]}"
    if len(name) <= limit:
        return name
    half = (limit - 1) // 2
    return f"{name[:half]}…{name[len(name) - (limit - 1 - half):]}"


def nbytes(n) -> str:
    """1065000 -> '1.02 MB' (binary units, as file managers show them), None -> 'unknown'."""
    if n is None:
        return "unknown"
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"
