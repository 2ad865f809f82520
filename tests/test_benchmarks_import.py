"""Benchmarks are run by hand, not by CI: importing each one here keeps them from rotting when the code moves."""

import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted(p.stem for p in (Path(__file__).parent / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_imports_and_has_a_main(name):
    module = importlib.import_module(f"tests.benchmarks.{name}")
    assert callable(getattr(module, "main", None)), f"{name} has no main()"
