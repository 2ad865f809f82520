"""The report: one self-contained report.html (checked in a real headless browser when one is installed) and a
report.json with the same numbers; hostile names escaped; figures drawn from the models."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import matplotlib.image
import numpy as np
import pytest

from onnxprune.converter import report_plots
from onnxprune.converter.pipeline import configure, run
from onnxprune.converter.report import _pixel_shape, build_table, write_report
from onnxprune.models import builders

HOSTILE_NODE = '<img src=x onerror="alert(1)">fc1'
HOSTILE_MODEL = "<script>alert('model')</script>.onnx"
FIGURES = ("metric-vs-pruned", "sensitivity", "weight-histograms", "sparsity-pattern")


def _lenet300_with_hostile_node():
    model = builders.lenet300_like(hidden=(300, 100), seed=0)
    for node in model.graph.node:
        if node.name == "/fc1/Gemm":
            node.name = HOSTILE_NODE
    return model


def _extras(report: dict) -> dict:
    """What the integrator adds around the pipeline's report: history, sensitivity, latency, command, seed."""
    layers = report["layers"]
    history = [{"round": 1, "phase": "prune", "overall_density": 0.5, "density": {}, "metric": 0.981, "fits": True,
                "neurons": {"Gemm '<fc1>'": 150}},
               {"round": 2, "phase": "prune", "overall_density": 0.2, "density": {}, "metric": 0.978, "fits": True},
               {"round": 3, "phase": "prune", "overall_density": 0.1, "density": {}, "metric": 0.95, "fits": False}]
    levels = [0.1, 0.5, 0.9, 0.99]
    sensitivity = {r["weight"]: {"node": r["node"], "kind": r["kind"], "levels": levels,
                                 "values": [98.0, 97.5, 90.0 - i, 40.0]} for i, r in enumerate(layers)}
    latency = {"provider": "CPUExecutionProvider", "threads": 1, "graph_optimization": "ORT_ENABLE_ALL",
               "warmup": 5, "onnxruntime": "x", "notes": [],
               "batches": [{"batch": 1, "runs": 50, "ratio": 0.5, "speedup": 2.0,
                            "a": {"median_ms": 0.2, "q1_ms": 0.19, "q3_ms": 0.21, "iqr_ms": 0.02, "min_ms": 0.18},
                            "b": {"median_ms": 0.1, "q1_ms": 0.09, "q3_ms": 0.11, "iqr_ms": 0.02, "min_ms": 0.08}}]}
    report.update({
        "model": HOSTILE_MODEL,
        "command": "onnxprune prune m.onnx -o out.onnx --report rep",
        "metrics": {"data": "mnist <b>slice</b>", "metric": "accuracy", "before": 0.982, "after": 0.978,
                    "loss_pp": 0.4, "output_error": {"agreement": 0.99, "max_rel": 0.3, "mean_rel": 0.02}},
        "act": {r["weight"]: a for r, a in zip(layers, (0.38, 0.65, 1.0))},
        "budget": {"max_loss_pp": 0.5, "measured_loss_pp": 0.4, "met": True},
        "options": {"sparsity": 0.9, "seed": 0},
        "nan_metric": float("nan"),
    })
    report["notes"] = list(report["notes"]) + ["note with <script>alert('note')</script>"]
    return {"history": history, "sensitivity": sensitivity, "latency": latency}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    model = _lenet300_with_hostile_node()
    result = run(model, configure(sparsity=0.9))
    extras = _extras(result.report)
    out = tmp_path_factory.mktemp("report")
    html_path, json_path = write_report(result.report, out, original_model=result.original,
                                        pruned_dense_model=result.dense_model, **extras)
    return html_path, json_path, result


class Page(HTMLParser):
    """The bits the tests look at: images, the layer table's cells (data-key/data-value), scripts, links."""

    def __init__(self):
        super().__init__()
        self.images, self.scripts, self.urls = [], 0, []
        self.rows: list[dict] = []
        self._in_layers = False
        self._row: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if a.get(key):
                self.urls.append(a[key])
        if tag == "table" and "layers" in (a.get("class") or ""):
            self._in_layers = True
        if self._in_layers and tag == "tr":
            self._row = {"total": "total" in (a.get("class") or "")}
        if self._in_layers and tag == "td" and self._row is not None and "data-key" in a:
            self._row[a["data-key"]] = json.loads(a["data-value"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_layers = False
        if tag == "tr" and self._row is not None:
            if len(self._row) > 1:
                self.rows.append(self._row)
            self._row = None


def parse(path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_report_html_is_self_contained(written):
    html_path, _, _ = written
    page = parse(html_path)
    assert page.scripts == 0
    assert all(u.startswith("data:image/png;base64,") for u in page.urls), "no external references"
    assert "http-equiv=\"Content-Security-Policy\"" in html_path.read_text()
    assert len(page.images) == len(FIGURES)


def test_every_image_is_a_decodable_nonuniform_png(written):
    html_path, _, _ = written
    for src in parse(html_path).images:
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300
        assert float(np.std(pixels)) > 0.01, "an image that is one flat colour drew nothing"


def test_report_json_has_the_numbers_of_the_html_table(written):
    html_path, json_path, result = written
    doc = json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    rows = parse(html_path).rows
    body, total = [r for r in rows if not r["total"]], [r for r in rows if r["total"]]
    table = doc["table"]
    assert len(body) == len(table["rows"]) == len(result.report["layers"]) and len(total) == 1
    for cells, row in zip(body, table["rows"]):
        for key in ("weights", "flops", "act_pct", "w_pct", "flop_pct", "threshold"):
            assert cells[key] == row[key], key
    for key in ("weights", "flops", "w_pct", "flop_pct"):
        assert total[0][key] == table["total"][key], key
    fc1 = table["rows"][0]
    assert fc1["weights"] == 235200 and fc1["flops"] == 2 * 235200
    assert fc1["w_pct"] == pytest.approx(10.0) and fc1["flop_pct"] == pytest.approx(10.0)
    assert fc1["act_pct"] == pytest.approx(38.0)
    assert doc["summary"]["compression"] == pytest.approx(10.0)
    assert doc["run"]["nan_metric"] is None, "NaN becomes null"
    assert [f["id"] for f in doc["figures"]] == list(FIGURES)
    assert doc["reproduction"]["versions"]["onnxruntime"] and doc["reproduction"]["command"].startswith("onnxprune")


def test_hostile_names_are_escaped(written):
    html_path, json_path, _ = written
    text = html_path.read_text()
    assert "<script>" not in text and 'onerror="alert' not in text and "<b>slice</b>" not in text
    assert "&lt;script&gt;alert(&#x27;model&#x27;)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;fc1" in text
    assert json.loads(json_path.read_text())["table"]["rows"][0]["layer"] == HOSTILE_NODE


def test_minimal_report_without_optional_parts(tmp_path):
    result = run(builders.lenet5_like(seed=1), configure(sparsity=0.5))
    report = result.report
    for key in ("history", "sensitivity", "neurons", "act"):
        report.pop(key, None)
    report["compression"] = float("inf")
    html_path, json_path = write_report(report, tmp_path / "new", original_model=result.original,
                                        pruned_dense_model=result.dense_model)
    text = html_path.read_text()
    assert "metric was not measured" in text and "Latency was not measured" in text
    doc = json.loads(json_path.read_text())
    assert doc["summary"]["compression"] is None
    assert [f["id"] for f in doc["figures"]] == ["weight-histograms", "sparsity-pattern"]


def test_flops_unknown_when_macs_are_unknown():
    report = {"layers": [{"node": "n", "op": "MatMul", "weight": "w", "shape": [4, 4], "params": 16,
                          "nonzeros": 4, "density": 0.25, "macs": None}],
              "before": {"params": 16, "nonzeros": 16}, "after": {"params": 16, "nonzeros": 4}}
    table = build_table(report)
    assert table["rows"][0]["flops"] is None and table["rows"][0]["w_pct"] == 25.0
    assert table["total"]["flops"] is None and table["total"]["flop_pct"] is None


def test_neurons_come_from_rows_or_the_report():
    row = {"node": "n", "op": "Gemm", "weight": "w", "shape": [4, 4], "params": 16, "nonzeros": 4, "macs": 16,
           "neurons": 4}
    base = {"before": {"params": 16, "nonzeros": 16}, "after": {"nonzeros": 4}}
    from_rows = build_table({**base, "layers": [{**row, "neurons_before": 4, "neurons_after": 2}]})
    from_report = build_table({**base, "layers": [row], "neurons": {"layers": {"w": {"before": 4, "after": 3}}}})
    plain = build_table({**base, "layers": [row]})
    assert (from_rows["rows"][0]["neurons_before"], from_rows["rows"][0]["neurons_after"]) == (4, 2)
    assert (from_report["rows"][0]["neurons_before"], from_report["rows"][0]["neurons_after"]) == (4, 3)
    assert plain["rows"][0]["neurons_before"] is None


def test_pixel_map_only_for_a_layer_fed_by_a_flattened_image():
    lenet300, lenet5 = builders.lenet300_like(), builders.lenet5_like()
    assert _pixel_shape(lenet300, "/fc1/Gemm", 1, 784) == (28, 28)
    assert _pixel_shape(lenet300, "/fc2/Gemm", 1, 300) is None
    assert _pixel_shape(lenet5, "/fc1/Gemm", 1, 800) is None


def test_histograms_show_two_lobes_after_pruning():
    rng = np.random.default_rng(0)
    before = rng.standard_normal((200, 300)).astype(np.float32)
    after = np.where(np.abs(before) > 1.0, before, 0)
    png = report_plots.weight_histograms([("w", before, after)], {"w": 1.0})
    assert png.startswith(b"\x89PNG") and matplotlib.image.imread(io.BytesIO(png), format="png").shape[2] in (3, 4)


def _browser() -> str | None:
    for name in (os.environ.get("ONNXPRUNE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _chromium(browser, tmp_path, *args) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def test_report_renders_in_headless_chromium(written, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser installed (apt-get install -y chromium, or set ONNXPRUNE_CHROMIUM)")
    html_path, _, _ = written
    shot = tmp_path / "shot.png"
    done = _chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000",
                     html_path.resolve().as_uri())
    assert shot.exists() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    pixels = matplotlib.image.imread(shot, format="png")
    assert pixels.shape[:2] == (2000, 1200) and float(np.std(pixels)) > 0.02

    # Which images loaded: a copy of the page with a script (the report's CSP forbids scripts) that writes the
    # count of decoded images into the DOM, read back with --dump-dom.
    probe = tmp_path / "probe.html"
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html_path.read_text())
    script = ("<script>window.addEventListener('load', () => { const imgs = [...document.images];"
              " const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
              " document.body.setAttribute('data-images', ok + '/' + imgs.length); });</script>")
    probe.write_text(text.replace("</body>", script + "</body>"))
    done = _chromium(browser, tmp_path, "--dump-dom", "--virtual-time-budget=5000", probe.as_uri())
    found = re.search(r'data-images="(\d+)/(\d+)"', done.stdout)
    assert found, f"probe did not run: {done.stderr[-2000:]}"
    assert found.group(1) == found.group(2) == str(len(FIGURES)), f"images loaded: {found.group(0)}"


def test_nothing_is_infinite_in_the_plots_inputs():
    png = report_plots.metric_vs_pruned([{"round": 1, "density": math.nan, "metric": 0.9}], metric="accuracy")
    assert png.startswith(b"\x89PNG")


def test_rounds_table_lists_each_round_with_neurons_and_budget(written):
    html_path, _, _ = written
    text = html_path.read_text(encoding="utf-8")
    rounds = text[text.index('id="rounds"'):text.index('id="deployment"')]
    assert rounds.count("<tr>") == 4  # header + three rounds
    assert "Gemm &#x27;&lt;fc1&gt;&#x27; 150" in rounds  # neurons left, escaped
    assert "no, undone" in rounds and rounds.count(">yes<") == 2


def test_parity_accepted_by_the_noise_rule_says_so(tmp_path):
    """A parity the verifier passed by the float32-noise allowance (converter/verify.py) is named in the HTML: the
    floor, the multiple and the output, beside the max diff; a plain pass says nothing of noise."""
    result = run(builders.lenet5_like(seed=1), configure(sparsity=0.5))
    report = result.report
    plain, _ = write_report(report, tmp_path / "plain", original_model=result.original,
                            pruned_dense_model=result.dense_model)
    assert "rounding noise" not in plain.read_text()
    report["parity"] = {**report["parity"], "noise_floor": 3.1e-7, "noise_multiple": 4.0, "worst_output": "probs<b>"}
    noisy, json_path = write_report(report, tmp_path / "noisy", original_model=result.original,
                                    pruned_dense_model=result.dense_model)
    text = noisy.read_text()
    assert text.count("4x the dense model's own rounding noise (3.1e-07 on <code>probs&lt;b&gt;</code>)") == 2
    assert json.loads(json_path.read_text())["parity"]["noise_floor"] == 3.1e-7


def test_the_summary_gives_the_whole_models_ratio_when_most_float_weights_are_not_prunable():
    """Newcomer audit: a dynamo GRU export whose GRU weights sit behind Slices said "4.35K -> 496 nonzero (8.8x
    fewer)" of a model with 93.4K float weights. A learned positional table added to the embeddings (a bias: not
    prunable) is most of this one."""
    import io

    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from rich.console import Console

    from onnxprune.converter.inspect import print_prune_summary
    from onnxprune.converter.pipeline import configure, run
    from onnxprune.models import third_party_builders as tb

    model = tb.token_classifier(vocab=10, dim=8, seq_len=200)
    gather = next(n for n in model.graph.node if n.op_type == "Gather")
    pos = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(pos, "pos"))
    added = gather.output[0] + "_pos"
    for n in model.graph.node:
        n.input[:] = [added if i == gather.output[0] else i for i in n.input]
    model.graph.node.insert(list(model.graph.node).index(gather) + 1,
                            helper.make_node("Add", [gather.output[0], "pos"], [added], name="/pos/Add"))
    onnx.checker.check_model(model, full_check=True)
    result = run(model, configure(sparsity=0.5))
    whole = result.report["all_weights"]
    assert whole["before"] == 200 * 8 + 10 * 8 + 8 * 4 + 4  # positions, the table, the fc weight and its bias
    assert whole["after"] == whole["before"] - (result.report["before"]["nonzeros"] - result.report["after"]["nonzeros"])
    out = io.StringIO()
    print_prune_summary(result.report, Console(file=out, width=200))
    text = out.getvalue()
    assert "all float weights 1.72K -> " in text and "of them are not prunable here" in text
    # a model whose float weights are nearly all prunable says nothing more
    from onnxprune.models import builders

    dense = run(builders.mlp_gemm(), configure(sparsity=0.5))
    out = io.StringIO()
    print_prune_summary(dense.report, Console(file=out, width=200))
    assert "all float weights" not in out.getvalue()
    assert np.isfinite(dense.report["all_weights"]["before"])


def test_the_summary_says_what_the_written_layers_hold_after_dead_neuron_removal(tmp_path):
    """Newcomer audit: the summary said 62.9K nonzeros at W% 30.4% and `inspect` of the output 53.9% of 117K; after
    dead-neuron removal the written layers are smaller, and a removed neuron's incoming weights were nonzero."""
    import io

    import numpy as np
    import onnx
    from rich.console import Console

    from onnxprune.converter.inspect import print_prune_summary
    from onnxprune.converter.pipeline import configure, run
    from onnxprune.models import builders
    from onnxprune.passes.weights import find_prunable, weight_array

    result = run(builders.mlp_gemm(), configure(sparsity=0.9))
    report = result.report
    assert report["neurons"]["removed"] > 0
    path = tmp_path / "o.onnx"
    onnx.save(result.model, path)
    from onnxprune.converter.modelio import load_model

    written = load_model(path).model  # decoded as `inspect` reads it
    inv = find_prunable(written, with_macs=False).prunable
    assert report["params_after_shrink"] == sum(w.size for w in inv)
    assert report["nonzeros_after_shrink"] == sum(int(np.count_nonzero(weight_array(written, w.name))) for w in inv)
    assert report["nonzeros_after_shrink"] <= report["after"]["nonzeros"]
    out = io.StringIO()
    print_prune_summary(report, Console(file=out, width=300))
    assert "the written layers hold" in out.getvalue()


def test_the_summary_gives_the_written_models_ratio_when_removal_took_nonzeros(tmp_path):
    """README audit: a Conv-Flatten-Gemm at --sparsity 0.9 printed "weights 101K -> 10.1K nonzero (10.0x fewer)"
    and, on the next line, that the written layers hold 5.44K nonzero (the removed neurons' weights went with
    them): `inspect` of the output then says 18.5x. The line gives that ratio too."""
    import io

    from rich.console import Console

    from onnxprune.converter.inspect import _ratio, count, print_prune_summary
    from onnxprune.converter.pipeline import configure, run
    from onnxprune.models import builders

    report = run(builders.mlp_gemm(), configure(sparsity=0.9)).report
    nz, before = report["nonzeros_after_shrink"], report["before"]["nonzeros"]
    assert nz < report["after"]["nonzeros"]
    out = io.StringIO()
    print_prune_summary(report, Console(file=out, width=400))
    assert f"{count(nz)} nonzero, {_ratio(before / nz)} fewer than the input's {count(before)}" in out.getvalue()


def test_the_json_gives_the_written_files_ratio_beside_the_pruned_one(tmp_path):
    """README audit left it: --json's `compression` counts in the input's shapes (10.0x) where the written file,
    after dead-neuron removal, holds fewer nonzeros; `compression_written` is what `inspect` of the output counts."""
    import onnx

    from onnxprune.converter.inspect import inspect_model
    from onnxprune.models import builders
    from tests.hardening.helpers import invoke

    onnx.save(builders.mlp_gemm(), tmp_path / "m.onnx")
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--data", "random", "--sparsity", "0.9",
                 "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    written = inspect_model(tmp_path / "out.onnx")["totals"]["nonzeros"]
    assert report["compression_written"] == pytest.approx(report["before"]["nonzeros"] / written)
    assert report["compression_written"] > report["compression"]


def test_compression_counts_from_the_inputs_own_nonzeros(tmp_path):
    """Issue 13: a model already 25% zeros was reported "1.7x fewer" for 1.26x. The ratio is the input's nonzeros
    over the output's, as the summary's "A -> B nonzero" beside it; on a dense input that is weights / nonzeros."""
    import onnx
    from onnx import numpy_helper

    import onnxprune

    model = builders.mlp_gemm(in_features=64, hidden=(128, 64), seed=0)
    for t in model.graph.initializer:
        if len(t.dims) == 2:
            w = numpy_helper.to_array(t).copy()
            w.reshape(-1)[::4] = 0.0  # a quarter of every weight matrix already zero
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    onnx.save(model, tmp_path / "sparse.onnx")
    result = onnxprune.prune(str(tmp_path / "sparse.onnx"), output=str(tmp_path / "out.onnx"), sparsity=0.5)
    b, a = result.report["before"], result.report["after"]
    assert b["nonzeros"] == pytest.approx(0.75 * b["params"], rel=0.01)
    assert result.report["compression"] == pytest.approx(b["nonzeros"] / a["nonzeros"])
    assert result.report["compression"] == pytest.approx(1.5, rel=0.02)  # half of all weights kept, 3/4 were nonzero


def test_the_level_search_and_its_budget_line_use_the_decision_rule(tmp_path):
    """README audit: `--max-loss 0.5 --iterations 5` on 300 labelled samples printed "budget: measured loss 0.33 pp,
    --max-loss 0.5 pp: met" and lost 1.40 pp on --eval-data: the level search and the check judged by the mean, with
    no margin for the set's noise. Both now judge by the decision rule, as the automatic search does, and the budget
    line gives the rule's closest test."""
    import json

    import onnx

    from onnxprune.models import builders
    from tests.hardening.helpers import invoke

    onnx.save(builders.mlp_gemm(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((120, 16)).astype(np.float32))
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--data", tmp_path / "calib.npz",
                 "--max-loss", "50", "--iterations", "2", "--epochs", "1", "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("budget:"))
    assert "the rule's closest test" in line and "by the mean" not in line, line
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["summary"]["budget_met"]
    rounds = [h for h in report["history"] if h.get("phase") == "prune"]
    assert rounds and all("decision" in h and h["fits"] == h["decision"]["within"] for h in rounds)
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "auto.onnx", "--data", tmp_path / "calib.npz",
                 "--max-loss", "50", "--time-budget", "20s")
    assert res.exit_code == 0, res.output
    assert "the rule's closest test" in res.output


def test_crop_inputs_says_when_no_input_feature_went(tmp_path):
    """README audit: --crop-inputs said nothing when there was nothing to crop (every input feature still read)."""
    from onnxprune.converter.pipeline import configure, run
    from onnxprune.models import builders

    notes = run(builders.mlp_gemm(), configure(sparsity=0.1, crop_inputs=True)).report["notes"]
    assert any(n.startswith("--crop-inputs: no input feature went") for n in notes), notes
    notes = run(builders.mlp_gemm(), configure(sparsity=0.97, crop_inputs=True)).report["notes"]
    assert not any(n.startswith("--crop-inputs: no input feature went") for n in notes), notes


def test_the_automatic_plans_own_cropping_is_not_said_as_a_flag(tmp_path):
    """The automatic plan crops inputs by itself: "--crop-inputs: no input feature went" was said on runs that never
    passed the flag (magika's default run)."""
    from onnxprune.converter.pipeline import configure, run
    from onnxprune.models import builders

    feed = {"input": np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)}
    np.savez(tmp_path / "calib.npz", **feed)
    result = run(builders.mlp_gemm(), configure(max_loss=1.0, data=str(tmp_path / "calib.npz"), time_budget="20s"))
    assert not any("--crop-inputs" in n for n in result.report["notes"]), result.report["notes"]


def test_parameters_held_in_attributes_count_among_all_float_weights():
    """Sweep 29: skl2onnx's scaler + PCA + SVC said "weights 20.6K -> 9.41K nonzero (2.19x fewer)" for its PCA
    MatMul alone, the file unchanged: the SVM's 55.5K support vectors and coefficients are node attributes, which no
    pass prunes, and the line for the whole model did not count them. A MatMul feeding a LinearClassifier: its
    coefficients and intercepts count, and the line is said."""
    import io

    import numpy as np
    import onnx
    from onnx import helper
    from rich.console import Console

    from onnxprune.converter.inspect import print_prune_summary
    from onnxprune.converter.pipeline import configure, run
    from onnxprune.models import third_party_builders as tb

    clf = tb.linear_classifier(in_features=6, classes=4)
    w = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    node = clf.graph.node[0]
    node.input[0] = "projected"
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "W"], ["projected"], name="pca"), node], "g",
                              [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 8])],
                              list(clf.graph.output), [onnx.numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=list(clf.opset_import))
    model.ir_version = clf.ir_version
    onnx.checker.check_model(model, full_check=True)
    result = run(model, configure(sparsity=0.5))
    whole = result.report["all_weights"]
    assert whole["before"] == 48 + 24 + 4  # W, the coefficients and the intercepts
    assert whole["after"] == 24 + 24 + 4
    out = io.StringIO()
    print_prune_summary(result.report, Console(file=out, width=200))
    assert "all float weights 76 -> 52 nonzero (1.46x fewer): 37% of them are not prunable here" in out.getvalue()


def test_weights_a_matmulnbits_holds_packed_are_counted_in_the_whole_model_figure():
    """Sweep 30's L4: onnxruntime's 4-bit MatMulNBits holds its weights packed (K x N values of 4 bits, in blocks);
    the tool prunes the float head only, and the whole-model line counted float weights alone ("all float weights
    5.83K", its 67K 4-bit weights nowhere). They count now, whole and as nonzero, and the line says so."""
    import onnx
    from onnx import helper, numpy_helper
    from rich.console import Console

    from onnxprune.converter.inspect import print_prune_summary

    k, n, block = 64, 16, 32
    rng = np.random.default_rng(0)
    packed = rng.integers(0, 256, (n, k // block, block // 2), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.02, n * (k // block)).astype(np.float32)
    head = (rng.standard_normal((n, 10)) / 4).astype(np.float32)
    nodes = [helper.make_node("MatMulNBits", ["input", "B", "scales"], ["h"], domain="com.microsoft", K=k, N=n,
                              bits=4, block_size=block, name="q4"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "head"], ["y"],
                                                                                   name="head")]
    graph = helper.make_graph(nodes, "nbits", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", k])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(a, name) for a, name in ((packed, "B"), (scales, "scales"),
                                                                                 (head, "head"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=8)
    result = run(model, configure(sparsity=0.5))
    whole = result.report["all_weights"]
    assert whole["packed"] == k * n and whole["packed_what"] == ["4-bit values of 1 MatMulNBits"]
    assert whole["before"] == k * n + np.count_nonzero(scales) + 160 and whole["after"] == whole["before"] - 80
    out = io.StringIO()
    print_prune_summary(result.report, Console(file=out, width=300))
    assert "all weights 1.22K -> 1.14K nonzero" in out.getvalue()
    assert "1.02K of them are 4-bit values of 1 MatMulNBits, counted as nonzero" in out.getvalue()


def test_the_summary_lists_a_few_layers_with_long_names_shortened():
    """Real models 44: tf2onnx --tflite names a Conv after every op TFLite folded into it, joined by ';' (300
    characters a node), and MediaPipe's hand landmarker's summary listed every layer that lost neurons: one line of
    2,624 characters. The line lists four layers, then how many more; a long name keeps its ends."""
    import io

    from rich.console import Console

    from onnxprune.converter.inspect import print_prune_summary
    from onnxprune.converter.pipeline import configure, run
    from onnxprune.models import builders
    from onnxprune.plain import NAME_CHARS, short_name

    model = builders.mlp_gemm(hidden=(32, 32, 32, 32, 32), seed=0)
    for i, node in enumerate(model.graph.node):
        node.name = ";".join(f"model_1/model/batch_normalization_{i}_{k}/FusedBatchNormV3" for k in range(6))
    report = run(model, configure(sparsity=0.9)).report
    changed = [v for v in report["neurons"]["layers"].values() if v["before"] != v["after"]]
    assert len(changed) > 4
    out = io.StringIO()
    print_prune_summary(report, Console(file=out, width=2000, color_system=None))
    line = next(t for t in out.getvalue().splitlines() if t.startswith("dead neurons removed"))
    assert f"(+{len(changed) - 4} more)" in line and len(line) < 800
    assert short_name(changed[0]["node"]) in line and changed[0]["node"] not in line
    shown = short_name(changed[0]["node"])
    assert shown.startswith("model_1/model/batch_norma") and shown.endswith("_5/FusedBatchNormV3") and "…" in shown
    assert short_name("model_1/model/re_lu/Relu6;a/b;c/d;model_1/model/conv2d/Conv2D") == \
        "model_1/model/re_lu/Relu6;…;model_1/model/conv2d/Conv2D"
    assert len(short_name("x" * 500)) == NAME_CHARS and short_name("conv2d_1") == "conv2d_1"
    assert all(len(cell) <= NAME_CHARS for cell in map(short_name, (v["node"] for v in changed)))


def test_a_scan_of_many_layers_names_the_most_sensitive_without_a_layout_warning():
    """Real models 52: CapSpot's YOLOX detector scanned 83 layers; a legend of every one collapsed the axes and
    matplotlib's "constrained_layout not applied because axes sizes collapsed to zero" UserWarning reached the
    terminal with its file and line. The legend names the LEGEND_LAYERS most sensitive layers, the rest are drawn
    unnamed and counted."""
    import warnings

    from matplotlib.figure import Figure

    curves = {f"Conv_{i}": {"levels": [0.1, 0.3, 0.6], "values": [99.0, 98.0 - i / 10, 97.0 - i / 5], "kind": "conv"}
              for i in range(83)}
    drawn = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = report_plots.sensitivity_curves(curves, metric="agreement", baseline=1.0, values_in_percent=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    fig = Figure()
    ax = fig.subplots()
    original = type(ax).legend

    def spy(self, *a, **k):
        drawn.append(self.get_legend_handles_labels()[1])
        return original(self, *a, **k)

    type(ax).legend = spy
    try:
        report_plots.sensitivity_curves(curves, metric="agreement", baseline=1.0, values_in_percent=True)
    finally:
        type(ax).legend = original
    (labels,) = drawn
    assert len(labels) == report_plots.LEGEND_LAYERS + 2  # the named layers, the count of the rest, the dense line
    assert "Conv_82" in labels and "Conv_0" not in labels  # the most sensitive (lowest values) are named
    assert "(+67 less sensitive layers, unnamed)" in labels
