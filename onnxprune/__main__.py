"""`python -m onnxprune …` is the `onnxprune` command."""

from onnxprune.converter.cli import main

main()
