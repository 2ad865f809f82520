"""Every `onnxprune ...` command in README.md's code blocks, and a check that each parses.

`python -m tests.readme_commands` lists them and parses each with the CLI's own click definitions (every flag
exists, every value converts, every callback accepts it; nothing runs). `--plan` also runs each `prune` command's
plan with the README's placeholder files replaced by the shipped LeNet-300-100 and a small .npz (cheap: no search),
so a flag combination the planner refuses is caught too. tests/test_readme_commands.py runs the parse.
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\s*$")


def code_blocks(text: str):
    """(language, [lines]) of each fenced block."""
    block, lang = None, ""
    for line in text.splitlines():
        m = FENCE.match(line.strip())
        if m and block is None:
            block, lang = [], m.group(1)
        elif line.strip() == "```" and block is not None:
            yield lang, block
            block = None
        elif block is not None:
            block.append(line)


def commands(path: Path = ROOT / "README.md") -> list[list[str]]:
    """argv after `onnxprune` of every command in the file's bash blocks (continuations joined, comments cut)."""
    found = []
    for lang, lines in code_blocks(path.read_text()):
        if lang not in ("bash", "sh", ""):
            continue
        joined, buf = [], ""
        for line in lines:
            if line.rstrip().endswith("\\"):
                buf += line.rstrip()[:-1] + " "
                continue
            joined.append(buf + line)
            buf = ""
        for line in joined:
            for part in re.split(r"&&|;", line):
                words = shlex.split(part, comments=True)
                words = [w for w in words if w != "$(command"]
                for i, w in enumerate(words):
                    if w == "onnxprune" or w == "onnxprune)":
                        found.append(words[i + 1:])
                        break
    return found


def parse(argv: list[str]) -> None:
    """Parse argv with the CLI's click definitions, running callbacks but not the command."""
    from onnxprune.converter.cli import cli

    name, rest = argv[0], list(argv[1:])
    with cli.make_context("onnxprune", [name]) as ctx:
        cmd = cli.get_command(ctx, name)
        if cmd is None:
            raise ValueError(f"no command {name!r}")
        cmd.make_context(name, rest, parent=ctx)


def plan_argv(argv: list[str], model: str, data: str, recipe: str | None) -> list[str]:
    """A prune command's argv with the README's placeholder files replaced, and --plan."""
    out = []
    for w in argv:
        if w.endswith(".onnx") and not out or (out and out[-1] in ("prune",) and w.endswith(".onnx")):
            w = model
        elif w.endswith(".npz") or w.startswith("/tmp/mnist/"):
            w = data
        elif w.endswith("recipe.toml") and recipe:
            w = recipe
        out.append(w)
    return out + ([] if "--plan" in out else ["--plan"])


def main() -> int:
    import subprocess
    import tempfile

    import numpy as np

    cmds = commands()
    bad = 0
    for argv in cmds:
        try:
            parse(argv)
            print("parses  onnxprune", shlex.join(argv))
        except Exception as exc:  # noqa: BLE001 - a report
            bad += 1
            print("FAILS   onnxprune", shlex.join(argv), "->", type(exc).__name__, exc)
    if "--plan" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            data = f"{tmp}/d.npz"
            rng = np.random.default_rng(0)
            np.savez(data, input=rng.random((8, 1, 28, 28), np.float32), labels=rng.integers(0, 10, 8))
            recipe = sys.argv[sys.argv.index("--recipe") + 1] if "--recipe" in sys.argv else None
            for argv in cmds:
                if not argv or argv[0] != "prune":
                    continue
                args = plan_argv(argv, str(ROOT / "models" / "lenet300.onnx"), data, recipe)
                if "--recipe" in args and not recipe:
                    print("skipped (no --recipe FILE given) onnxprune", shlex.join(argv))
                    continue
                res = subprocess.run([sys.executable, "-m", "onnxprune", *args], capture_output=True, text=True)
                ok = res.returncode == 0
                bad += not ok
                tail = (res.stderr.strip().splitlines() or [""])[-1]
                print("plans  " if ok else "REFUSED", "onnxprune", shlex.join(argv), "" if ok else "-> " + tail)
    print(f"{len(cmds)} commands, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
