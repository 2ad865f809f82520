"""One import name: the installed distribution exposes `onnxprune` and its subpackages, nothing generic."""

import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TOPS = {"converter": "onnxprune.converter", "passes": "onnxprune.passes", "calibration": "onnxprune.calibration",
        "models": "onnxprune.models", "onnxprune": "onnxprune"}


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed_under_the_onnxprune_name():
    listed = set(_setuptools()["packages"])
    found = {".".join((TOPS[p.parent.relative_to(ROOT).parts[0]], *p.parent.relative_to(ROOT).parts[1:]))
             for top in TOPS for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert all(name == "onnxprune" or name.startswith("onnxprune.") for name in listed), listed


def test_every_folder_of_modules_is_a_listed_package():
    """README audit: converter/steps/ had modules but no __init__.py, so the test above did not see it and the
    packages list left it out: a wheel (`pip install .`, not -e) had no onnxprune.converter.steps, and every
    `onnxprune prune` ended in "internal error (ModuleNotFoundError: No module named 'onnxprune.converter.steps')"."""
    listed = set(_setuptools()["packages"])
    folders = {p.parent for top in TOPS for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}
    for folder in folders:
        rel = folder.relative_to(ROOT).parts
        name = ".".join((TOPS[rel[0]], *rel[1:]))
        assert (folder / "__init__.py").is_file(), f"{folder.relative_to(ROOT)} has modules but no __init__.py"
        assert name in listed, f"add {name} to [tool.setuptools] packages in pyproject.toml"


def test_package_dir_maps_the_owner_folders_under_onnxprune():
    mapping = _setuptools()["package-dir"]
    assert {k: v for k, v in mapping.items() if k != "onnxprune"} == {v: k for k, v in TOPS.items() if k != "onnxprune"}


def test_no_module_imports_the_bare_folder_names():
    """`import models` in a user's project must get the user's package: we never import the bare names."""
    bad = []
    for top in TOPS:
        for path in (ROOT / top).rglob("*.py"):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.strip()
                if stripped.startswith(tuple(f"{kw} {t}" for kw in ("from", "import") for t in TOPS if t != "onnxprune")):
                    if not stripped.startswith(("from onnxprune", "import onnxprune")):
                        bad.append(f"{path.relative_to(ROOT)}:{i}: {stripped}")
    assert not bad, bad


def test_a_users_own_models_package_is_not_shadowed(tmp_path):
    """Inside a project with its own `models/` package, `import models` is the user's and ours is onnxprune.models."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("WHO = 'user'\n")
    code = ("import sys, models, onnxprune, onnxprune.models.paths as p; "
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules; "
            "assert models.WHO == 'user'; assert not hasattr(models, 'paths'); "
            "assert p.LENET300_ONNX.is_file(); assert callable(onnxprune.prune); "
            "assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_inspect_reads_a_model_without_importing_onnxruntime_or_torch():
    """inspect only reads the file: a calibration-line helper (calibration.feeds) once pulled in onnxruntime through
    an annotation's import, and an opset note through converter.verify, on every `onnxprune inspect`."""
    from onnxprune.models.paths import LENET300_ONNX

    code = ("import sys; from pathlib import Path; from onnxprune.converter.inspect import inspect_model; "
            f"inspect_model(Path({str(LENET300_ONNX)!r})); "
            "assert 'onnxruntime' not in sys.modules and 'torch' not in sys.modules, "
            "[m for m in ('onnxruntime', 'torch') if m in sys.modules]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_inspect_sizes_a_contrib_op_model_without_importing_onnxruntime_or_torch(tmp_path):
    """Heavy models 51's L7: where onnx's shape inference leaves a layer's input unsized (a com.microsoft op before
    it), onnxruntime's symbolic shape inference sizes it, and `import onnxruntime.tools.symbolic_shape_infer` ran
    onnxruntime's package and `onnxruntime.tools`, which imports torch (2.7 s); its file is now loaded alone."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
                               helper.make_node("MatMul", ["g", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w])
    path = tmp_path / "gelu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]), path)
    code = ("import sys; from pathlib import Path; from onnxprune.converter.inspect import inspect_model; "
            f"r = inspect_model(Path({str(path)!r})); "
            "assert [layer['macs'] for layer in r['layers']] == [128], r['layers']; "
            "assert 'onnxruntime' not in sys.modules and 'torch' not in sys.modules, "
            "[m for m in ('onnxruntime', 'torch') if m in sys.modules]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_dir_lists_prune_and_the_public_names_only():
    """A newcomer's `dir(onnxprune)` listed 'annotations' (the __future__ import) and not `prune`, the one function
    the README calls (it is loaded on first use)."""
    code = ("import onnxprune, sys; names = dir(onnxprune); print(' '.join(names)); "
            "assert 'prune' in names and 'annotations' not in names and not any(n.startswith('_') for n in names); "
            "assert all(hasattr(onnxprune, n) for n in names); assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_a_fixed_target_prune_runs_without_torch(tmp_path):
    """Audit 40: every `onnxprune.prune(...)` imported torch (plan -> steps.auto -> auto.search -> auto.hyper's
    top-level `import torch`), so a fixed-target run failed with a raw ModuleNotFoundError where torch is absent,
    and paid torch's import where it is present. A fixed-target run and a one-shot budget never need it."""
    from onnxprune.models.paths import LENET300_ONNX

    code = ("import sys; sys.modules['torch'] = None; import numpy as np, onnxprune; "
            f"r = onnxprune.prune({str(LENET300_ONNX)!r}, sparsity=0.5, output={str(tmp_path / 'a.onnx')!r}); "
            "x = np.random.default_rng(0).random((40, 1, 28, 28), dtype=np.float32); "
            f"s = onnxprune.prune({str(LENET300_ONNX)!r}, data=x, max_loss=50, one_shot=True, time_budget=30); "
            "print(round(r.report['compression'], 2), s.report['budget']['met'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2.0", "True"], out.stdout
    assert (tmp_path / "a.onnx").is_file()
