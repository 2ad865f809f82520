"""The pipeline as a list of steps: plans per kind of run, the runner's checks, --plan, and the defects the
restructuring fixed (each with its own test)."""

import contextlib
import json
import logging

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.calibration.runtime import make_session
from onnxprune.converter import modelio
from onnxprune.converter.cli import cli
from onnxprune.converter.pipeline import configure, run
from onnxprune.converter.plan import build_plan
from onnxprune.converter.steps.base import RunState, Step, check_plan, run_steps
from onnxprune.converter.steps.load import InventoryStep, LoadStep
from onnxprune.errors import ConfigError, ParityError, PassError
from onnxprune.models import builders
from onnxprune.passes.weights import weight_array
from onnxprune.plain import dumps
from tests.converter._data import self_labelled


@pytest.fixture(scope="module")
def teacher_data():
    return self_labelled(hidden=(32, 16), model_seed=4, n=300, data_seed=1)


def _names(**choices) -> list[str]:
    return [s.name for s in build_plan(configure(**choices))]


def test_each_kind_of_run_is_its_own_step_list():
    tail = ["shrink", "encode", "verify"]
    assert _names(sparsity=0.9) == ["load", "inventory", "random-shapes", "read-check", "targets", "prune", *tail,
                                    "report"]
    assert _names(max_loss=1.0, data="d.npz", one_shot=True) == ["load", "inventory", "data", "read-check", "targets",
                                                                  "choose-apart", "scan", "fit-budget", "prune",
                                                                  "unread-rows", *tail, "measure", "report",
                                                                  "budget-check"]
    assert _names(max_loss=1.0, data="d.npz") == ["load", "inventory", "data", "read-check", "targets", "auto-search",
                                                   "unread-rows", *tail, "measure", "report", "budget-check"]
    assert _names(max_loss=1.0, data="d.npz", one_shot=True, time_budget="60s")[4:8] == ["targets", "choose-apart",
                                                                                          "clock", "scan"]
    assert _names(max_loss=1.0, data="random") == _names(max_loss=1.0, data="random", one_shot=True)
    assert _names(max_loss=1.0, data="random")[:4] == ["load", "inventory", "random-shapes", "data"]  # no real data
    assert _names(sparsity=0.9, data="d.npz", iterations=2) == ["load", "inventory", "data", "read-check", "targets",
                                                                 "retrain", *tail, "measure", "report"]
    assert _names(max_loss=1.0, data="d.npz", iterations=2) == ["load", "inventory", "data", "read-check", "targets",
                                                                 "scan", "allocate", "budget-search", "unread-rows",
                                                                 *tail, "measure", "report", "budget-check"]


def test_only_the_budgeted_retraining_holds_out_a_validation_part():
    def split(**choices):
        return next(s for s in build_plan(configure(data="d.npz", **choices)) if s.name == "data").split

    assert split(max_loss=1.0, iterations=2) and split(max_loss=1.0) and not split(max_loss=1.0, one_shot=True)
    assert not split(sparsity=0.5, iterations=2)


class _Boom(Step):
    name = "boom"
    needs = ("inventory",)

    def run(self, state):
        raise ValueError("no such thing")


def test_a_failing_step_is_named_with_the_steps_before_it():
    state = RunState(source=builders.lenet300_like(hidden=(8, 8)))
    with pytest.raises(PassError, match=r"step 'boom' failed after \[load, inventory\]: ValueError: no such thing"):
        run_steps([LoadStep(), InventoryStep(), _Boom()], state)
    assert set(state.seconds) == {"load", "inventory"}


def test_a_step_whose_needs_no_earlier_step_gives_is_refused_before_anything_runs():
    with pytest.raises(ConfigError, match=r"step 'boom' needs inventory, which no step before it gives "
                                          r"\(steps before it: load\)"):
        check_plan([LoadStep(), _Boom()])


class _Lazy(Step):
    name = "lazy"
    needs = ("original",)
    gives = ("inventory",)

    def run(self, state):
        pass


def test_a_step_that_does_not_give_what_it_promised_is_an_error():
    with pytest.raises(PassError, match="step 'lazy' did not give inventory"):
        run_steps([LoadStep(), _Lazy()], RunState(source=builders.lenet300_like(hidden=(8, 8))))


def test_unknown_choice_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) learning_rate; valid: .*lr"):
        configure(learning_rate=0.1)


def test_cli_plan_prints_the_steps_with_their_settings_and_does_nothing(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(builders.lenet300_like(hidden=(16, 8)), model)
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(cli, ["prune", str(model), "-o", str(out), "--max-loss", "0.5", "--data", "random",
                                   "--iterations", "2", "--lr", "0.02", "--plan"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    steps = [ln.split()[1] for ln in lines if ln[:3].strip().rstrip(".").isdigit()]
    assert steps == ["load", "inventory", "random-shapes", "data", "read-check", "targets", "scan", "allocate",
                     "budget-search", "shrink", "encode", "verify", "measure", "report", "budget-check"]
    assert "      lr = 0.02" in lines and "      max_loss = 0.5" in lines
    assert not out.exists()
    res = CliRunner().invoke(cli, ["prune", str(model), "-o", str(out), "--sparsity", "0.5", "--plan", "--json"])
    plan = json.loads(res.output)["plan"]
    assert [p["step"] for p in plan][:6] == ["load", "inventory", "random-shapes", "read-check", "targets", "prune"]
    assert plan[2]["settings"]["sizes"] == [2, 32, 64, 224] and plan[4]["settings"]["sparsity"] == 0.5
    assert not out.exists()


def test_state_masks_are_sliced_with_the_shrunk_weights(teacher_data):
    """PruneResult.state.masks line up with PruneResult.model after dead-neuron removal."""
    model, data = teacher_data
    result = run(model, configure(sparsity=0.9, data=data, iterations=1, epochs=1, lr=0.01, neuron_sparsity=0.5))
    final = modelio.from_proto(result.model).model  # sparse weights decoded
    assert result.report["neurons"]["removed"] > 0
    for name, mask in result.state.masks.items():
        w = weight_array(final, name)
        assert mask.shape == w.shape, name
        np.testing.assert_array_equal(mask, w != 0, err_msg=name)


# ---------------------------------------------------------------- defects found on review


def test_output_error_is_measured_against_the_input_models_outputs(teacher_data):
    model, data = teacher_data
    result = run(model, configure(sparsity=0.8, data=data))
    ref = make_session(model).run(None, {"input": data["input"]})[0].astype(np.float64)
    got = make_session(result.model).run(None, {"input": data["input"]})[0].astype(np.float64)
    rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    err = result.report["metrics"]["output_error"]
    assert err["mean_rel"] == pytest.approx(rel.mean(), rel=1e-4)
    assert err["max_rel"] == pytest.approx(rel.max(), rel=1e-4)


def test_measure_scores_and_compares_from_one_run_of_the_output_model(teacher_data, monkeypatch):
    """The metric and the output error come from one session and one pass over the data (a 22M encoder paid two)."""
    from onnxprune.calibration.metrics import Evaluator
    from onnxprune.converter.steps.data import Data
    from onnxprune.converter.steps.verify import measure

    model, data = teacher_data
    config = configure(sparsity=0.8, data=data)
    result = run(model, config)
    built = []
    real = Evaluator.session
    monkeypatch.setattr(Evaluator, "session", lambda self, m: built.append(m) or real(self, m))
    again = measure(Data(model, config.data), result.model)
    assert sum(m is result.model for m in built) == 1  # (the others score the input model: the reference)
    first = result.report["metrics"]
    assert again["after"] == pytest.approx(first["after"], abs=1e-12)
    assert again["output_error"] == pytest.approx(first["output_error"], abs=1e-12)


def test_json_is_strict_json_nan_and_infinity_become_null(tmp_path):
    assert dumps({"a": float("nan"), "b": [float("inf"), np.float32(1.5)]}) == '{"a": null, "b": [null, 1.5]}'
    model = tmp_path / "m.onnx"
    onnx.save(builders.lenet300_like(hidden=(16, 8)), model)
    res = CliRunner().invoke(cli, ["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--sparsity", "0.5", "--data",
                                   "random", "--iterations", "1", "--json"])
    assert res.exit_code == 0, res.output

    def refuse(constant):
        raise AssertionError(f"bare {constant} in --json output")

    report = json.loads(res.stdout, parse_constant=refuse)
    assert report["compression"] == pytest.approx(2.0, rel=0.01)


@pytest.mark.parametrize("flag", ["--crop-inputs", "--gather-inputs"])
def test_no_neurons_with_an_input_cut_is_a_usage_error_not_silently_ignored(tmp_path, flag):
    model = tmp_path / "m.onnx"
    onnx.save(builders.lenet300_like(hidden=(16, 8)), model)
    res = CliRunner().invoke(cli, ["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--sparsity", "0.5",
                                   "--no-neurons", flag])
    assert res.exit_code == 2 and f"{flag} is part of dead-neuron removal, which --no-neurons turns off" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o.onnx").exists()


def test_an_exclude_that_covers_every_layer_fails_before_the_scan(teacher_data, monkeypatch):
    import onnxprune.converter.steps.scan as scan_step

    def no_scan(*a, **k):
        raise AssertionError("the scan ran before the exclude was checked")

    monkeypatch.setattr(scan_step, "scan", no_scan)
    model, data = teacher_data
    with pytest.raises(ConfigError, match=r"--exclude \* leaves no layer to prune"):
        run(model, configure(max_loss=1.0, data=data, iterations=2, exclude=("*",)))


def test_the_layer_target_is_the_kept_rounds_not_the_first_allocation(teacher_data):
    model, data = teacher_data
    result = run(model, configure(max_loss=100.0, data=data, iterations=3, epochs=0.5, lr=0.01,
                                  levels=(0.5, 0.8), seed=0))
    kept = [h for h in result.history if h["fits"]][-1]
    assert kept["level"] > 0  # the search went past the allocation it started from
    for row in result.report["layers"]:
        assert row["target"] == {"sparsity": kept["targets"][row["weight"]]}
        assert 1 - row["density"] >= kept["targets"][row["weight"]] - 1 / row["params"]  # reached it (to 1 weight)


def test_the_layer_table_shows_the_sparsity_reached_beside_the_target():
    from onnxprune.converter.report import _target_text

    assert _target_text({"sparsity": 0.9}, 0.9) == "sparsity 0.9"
    assert _target_text({"sparsity": 0.9}, 0.95) == "sparsity 0.9 (reached 0.95)"
    assert _target_text({"quality": 1.5}, 0.7) == "quality 1.5 (reached 0.7)"


def test_verbosity_flags_are_accepted_after_the_subcommand(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(builders.lenet300_like(hidden=(16, 8)), model)
    res = CliRunner().invoke(cli, ["inspect", str(model), "-q", "-v"])
    assert res.exit_code == 0 and res.output == ""
    res = CliRunner().invoke(cli, ["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--sparsity", "2",
                                   "--debug"])
    # --debug after the subcommand: the traceback on stderr, the usage error's own exit code
    assert res.exit_code == 2 and "Traceback (most recent call last)" in res.output and "ConfigError" in res.output


def test_the_command_lines_defaults_are_the_step_configs_defaults():
    """The CLI passes only what was typed; its shown defaults must be the configs' own."""
    from onnxprune.converter.plan import RunConfig, owners

    config = RunConfig()
    prune = cli.commands["prune"]
    checked = 0
    ctx = click_context()
    for param in prune.params:
        default = param.get_default(ctx, call=True)
        if type(default).__name__ == "Sentinel":  # click >= 8.2 says "no default" with a sentinel
            default = None
        if param.name in owners() and default is not None and not param.multiple:
            value = getattr(getattr(config, owners()[param.name]), param.name)
            default = param.type_cast_value(ctx, default)
            if param.callback is not None:
                default = param.callback(ctx, param, default)
            assert default == value, f"--{param.name.replace('_', '-')}: CLI default {default!r}, config {value!r}"
            checked += 1
    assert checked >= 15


def click_context():
    import click

    return click.Context(cli.commands["prune"])


def test_every_steps_description_is_its_whole_first_paragraph():
    """Newcomer audit: `--plan` cut the load step mid-sentence ("... an Identity between a weight and")."""
    from onnxprune.converter.steps.base import STEPS

    for name, cls in STEPS.items():
        doc = (cls.__doc__ or "").strip()
        if not doc:
            continue
        text = cls.describe(cls.__new__(cls))
        assert "\n" not in text and text == " ".join(doc.split("\n\n")[0].split()), name
        assert text.endswith((".", ")", "?")), f"{name}: {text!r}"


def test_a_model_whose_output_a_random_op_reaches_is_refused_at_load_naming_the_op_and_output(tmp_path):
    """Sweep 33: a VAE exported with its sampling (torch.randn_like: RandomNormalLike) was "budget met" on its
    reconstruction, which two runs of the input model give far apart; onnxruntime seeds each session alike, so the
    measurement held only while both models drew the same numbers in the same order. It is refused at load naming the
    op and the output it reaches, and inspect says so; a random op that reaches no output is no reason."""
    from onnxprune.converter.steps.load import load
    from onnxprune.errors import ModelError
    from onnxprune.models.third_party_builders import sampling_vae

    model = sampling_vae()
    onnx.checker.check_model(model, full_check=True)
    session = make_session(model)
    x = {"input": np.random.default_rng(0).standard_normal((16, 12)).astype(np.float32)}
    (recon_a, mu_a), (recon_b, mu_b) = session.run(None, x), session.run(None, x)
    assert np.array_equal(mu_a, mu_b) and np.abs(recon_a - recon_b).max() > 1e-3  # onnxruntime: recon is chance
    with pytest.raises(ModelError) as err:
        load(model)
    text = str(err.value)
    assert "draws random numbers: RandomNormalLike '/sample/RandomNormalLike' (output 'recon')" in text
    assert "'mu'" not in text and "decoder on the mean" in text
    onnx.save(model, tmp_path / "m.onnx")
    res = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--sparsity",
                                   "0.5"])
    assert res.exit_code == 1 and "draws random numbers" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.onnx").exists()
    res = CliRunner().invoke(cli, ["inspect", str(tmp_path / "m.onnx")])
    assert res.exit_code == 0 and "warning: the model draws random numbers (RandomNormalLike" in res.output
    load(sampling_vae(outputs=("mu",)))  # the sampling reaches no output: loads


def test_a_dropout_the_forward_always_applies_is_refused_with_advice_that_fits_it(tmp_path):
    """Sweep 36: an MC-dropout MLP (in .eval(), its forward F.dropout(h, 0.2, training=True)) exported for inference
    still holds a Dropout whose training_mode is true; the refusal told its user to call model.eval(), which they had
    done. With Dropouts alone it now names the always-on dropout and what to change; with a BatchNormalization in
    training mode the advice stays the export's mode alone. prune and inspect say the same."""
    from onnxprune.converter.steps.load import load
    from onnxprune.errors import ModelError
    from onnxprune.models.third_party_builders import training_mode_net

    model = training_mode_net(batchnorm=False)
    onnx.checker.check_model(model, full_check=True)
    make_session(model)  # onnxruntime runs it
    with pytest.raises(ModelError) as err:
        load(model)
    text = str(err.value)
    assert "Dropout '/d/Dropout' (training_mode true) makes every output" in text
    assert "F.dropout(x, p, training=True)" in text and "training=self.training" in text
    onnx.save(model, tmp_path / "m.onnx")
    res = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--sparsity",
                                   "0.5"])
    assert res.exit_code == 1 and "training=self.training" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(cli, ["inspect", str(tmp_path / "m.onnx")])
    assert res.exit_code == 0 and "training=self.training" in res.output
    with pytest.raises(ModelError) as err:  # a BatchNormalization in training mode: the export's mode
        load(training_mode_net())
    assert "training=self.training" not in str(err.value) and " make every output" in str(err.value)


def test_a_model_exported_in_training_mode_is_refused_at_load_naming_its_nodes(tmp_path):
    """Sweep 30: a CNN exported with training=TrainingMode.TRAINING (BatchNormalization training_mode=1, Dropout with a
    constant true training_mode) ran 24 s and ended "differs from the dense model ... report it with --debug"; it is
    refused at load in one line that names the nodes and the export to use. The same graph for inference loads."""
    from onnxprune.converter.steps.load import load
    from onnxprune.errors import ModelError
    from onnxprune.models.third_party_builders import training_mode_net

    model = training_mode_net()
    onnx.checker.check_model(model, full_check=True)
    make_session(model)  # onnxruntime runs it
    with pytest.raises(ModelError) as err:
        load(model)
    text = str(err.value)
    assert "exported in training mode" in text and "/bn/BatchNormalization' (training_mode=1)" in text
    assert "Dropout '/d/Dropout' (training_mode true)" in text and "TrainingMode.EVAL" in text
    onnx.save(model, tmp_path / "m.onnx")
    res = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--sparsity",
                                   "0.5"])
    assert res.exit_code == 1 and "exported in training mode" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["inspect", str(tmp_path / "m.onnx")])  # run first: it says so too
    assert res.exit_code == 0 and "warning: the model was exported in training mode (BatchNormalization" in res.output
    for node in model.graph.node:  # for inference: BN's statistics stored, Dropout off
        if node.op_type == "BatchNormalization":
            del node.attribute[:]
            del node.output[1:]
        if node.op_type == "Constant":
            node.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(False), node.output[0]))
    assert load(model).model is not None


def test_a_list_in_a_message_shows_its_first_few_and_counts_the_rest():
    """The one "(+N more)" of every message that names a few of many (plain.listed, plain.more)."""
    from onnxprune.plain import listed, more

    assert listed(["'a'", "'b'", "'c'", "'d'", "'e'"]) == "'a', 'b', 'c' (+2 more)"
    assert listed(iter(["a", "b", "c"])) == "a, b, c" and listed([]) == ""
    assert listed(["a", "b", "c"], 1, sep="; ") == "a (+2 more)"
    assert more(4, 1, "more like it") == " (+3 more like it)" and more(2, 2) == ""


def test_a_dead_neuron_removal_that_fails_leaves_the_pruned_model_whole_and_says_so(teacher_data, monkeypatch):
    """Real models 45's F1 (a channel rule's IndexError on a Reshape to a scalar) failed the whole run after the
    search had chosen a verified result. An unexpected failure of the removal keeps every neuron (as --no-neurons),
    writes the pruned weights, verifies them like any result and says so in a note; with debug logging (--debug,
    -vv) the failure still stops the run with its traceback. The failure here comes after the channels were found
    and cut from the pass's own copy of the graph: the model and the masks the run holds are untouched."""
    from onnxprune.passes import dead_neurons

    model, data = teacher_data

    def broken(graph, model):
        raise IndexError("list index out of range")

    monkeypatch.setattr(dead_neurons, "_export", broken)
    result = run(model, configure(sparsity=0.9, data=data))
    notes = [n for n in result.report["notes"] if n.startswith("dead-neuron removal was skipped")]
    assert len(notes) == 1 and "(IndexError: list index out of range)" in notes[0], result.report["notes"]
    assert not result.report.get("neurons")
    assert result.report["parity"]["max_abs_diff"] <= 1e-5
    _written_is_the_input_times_the_masks(result, model, data)
    with _debug_logging(), pytest.raises(PassError, match="pass 'dead-neurons' failed after \\[none\\]: IndexError"):
        run(model, configure(sparsity=0.9, data=data))


def _written_is_the_input_times_the_masks(result, model, data) -> None:
    """Every neuron kept: the written model has the input's shapes, its weights are the input's times the run's
    (unsliced) masks, and onnxruntime gives that model's outputs."""
    final = modelio.from_proto(result.model).model
    masked = onnx.ModelProto()
    masked.CopyFrom(model)
    for init in masked.graph.initializer:
        assert weight_array(final, init.name).shape == tuple(init.dims), init.name
        if init.name in result.state.masks:
            assert result.state.masks[init.name].shape == tuple(init.dims), init.name
            init.CopyFrom(onnx.numpy_helper.from_array(
                onnx.numpy_helper.to_array(init) * result.state.masks[init.name], init.name))
            np.testing.assert_array_equal(weight_array(final, init.name), weight_array(masked, init.name))
    name = model.graph.input[0].name
    x = data[name][:50]
    np.testing.assert_allclose(make_session(result.model).run(None, {name: x})[0],
                               make_session(masked).run(None, {name: x})[0], rtol=1e-5, atol=1e-5)


@contextlib.contextmanager
def _debug_logging():
    """onnxprune.* at DEBUG, as --debug and -vv set it."""
    logger = logging.getLogger("onnxprune")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.setLevel(level)


def test_a_dead_neuron_removal_the_parity_check_rejects_is_undone_and_the_pruned_weights_are_written(
        teacher_data, monkeypatch):
    """A channel rule that removes the wrong thing (the issue's paddle2onnx OCR models: the parity check rejected the
    shrunk output, `--no-neurons` passed) failed the run. When the shrunk model differs from the pruned one, the
    verify step encodes the pruned model again with every neuron kept, with its masks and notes as before the shrink,
    checks it, and says so; a second difference (the encoding's) and debug logging still stop the run."""
    from onnxprune.passes import dead_neurons

    model, data = teacher_data
    real = dead_neurons.remove_dead_neurons

    def wrong(model, **kw):
        out, report = real(model, **kw)
        assert report.removed and out is not model
        bias = next(t for t in out.graph.initializer if t.name.endswith("bias"))
        bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + 1.0, bias.name))
        return out, report

    monkeypatch.setattr(dead_neurons, "remove_dead_neurons", wrong)
    result = run(model, configure(sparsity=0.9, data=data))
    notes = [n for n in result.report["notes"] if n.startswith("dead-neuron removal was undone")]
    assert len(notes) == 1 and "differs from the dense model with the same weights" in notes[0], result.report
    assert not result.report.get("neurons") and result.report["parity"]["max_abs_diff"] <= 1e-5
    _written_is_the_input_times_the_masks(result, model, data)
    with _debug_logging(), pytest.raises(ParityError, match="differs from the dense model with the same weights"):
        run(model, configure(sparsity=0.9, data=data))
    monkeypatch.setenv("ONNXPRUNE_DEBUG", "1")  # the command line's other switch for tracebacks
    with pytest.raises(ParityError, match="differs from the dense model with the same weights"):
        run(model, configure(sparsity=0.9, data=data))
    monkeypatch.delenv("ONNXPRUNE_DEBUG")
    from onnxprune.converter import verify

    def always(*a, **kw):
        raise ParityError("output 'y' differs from the dense model with the same weights: the encoding's")

    monkeypatch.setattr(verify, "check_parity", always)  # unshrunk, it differs too: the run stops
    with pytest.raises(ParityError, match="the encoding's"):
        run(model, configure(sparsity=0.9, data=data))
