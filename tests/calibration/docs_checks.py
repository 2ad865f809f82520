"""The checks docs/metrics.md gives users, loaded as they are written there (tests compare them with the tool)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def docs_function(name: str):
    """The function `name` of the numpy snippet in docs/metrics.md that defines it (the snippet run as written)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    start = doc.index(f"    import numpy as np\n    def {name}")
    namespace: dict = {}
    exec(textwrap.dedent(doc[start:doc.index("\n\n", start)]), namespace)
    return namespace[name]
