"""Recipes: every choice written to TOML, read back strictly, refused for another model unless allowed."""

from __future__ import annotations

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from onnxprune.errors import ConfigError
from onnxprune.converter.pipeline import RunConfig, configure, run
from onnxprune.converter.plan import recipe_of
from onnxprune.converter.recipe import dump_recipe, load_recipe, option_fields
from onnxprune.models import builders

SHA = "ab" * 32
OTHER = "cd" * 32


def options() -> RunConfig:
    return configure(sparsity=0.8, layers={"fc1.weight": 0.9}, exclude=("fc3*",), levels=(0.5, 0.9),
                        iterations=2, lr=3e-4, schedule="cubic", seed=7, metric="accuracy",
                        sparse_format="initializer")


def write(tmp_path, opts=None, **kw):
    flat = recipe_of(opts or options())
    flat["input_sha256"] = SHA
    return dump_recipe(flat, tmp_path / "recipe.toml", **kw)


def test_round_trip_gives_back_every_choice(tmp_path):
    path = write(tmp_path)
    loaded = load_recipe(path, SHA)
    assert loaded["layers"] == {"fc1.weight": 0.9} and loaded["exclude"] == ("fc3*",)
    assert loaded["levels"] == (0.5, 0.9) and loaded["seed"] == 7 and loaded["lr"] == 3e-4
    assert recipe_of(configure(**loaded)) == recipe_of(options())
    text = path.read_text()
    assert f'model_sha256 = "{SHA}"' in text and 'version = "' in text
    assert 'sparse_format = "initializer"' in text and 'schedule = "cubic"' in text
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.toml"], "atomic write leaves no temp file"


def test_data_is_not_part_of_a_recipe():
    assert "data" not in option_fields() and "eval_data" not in option_fields()
    assert {"sparsity", "layers", "schedule", "lr", "seed", "metric", "sparse_format"} <= set(option_fields())


def test_unknown_option_names_the_key_and_the_valid_ones(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text().replace("seed = 7", "seed = 7\nsparsityy = 0.5"))
    with pytest.raises(ConfigError, match="'sparsityy'") as err:
        load_recipe(path, SHA)
    assert "valid keys: sparsity, quality, layers" in str(err.value)


def test_unknown_section_and_data_keys_are_refused(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text() + "\n[extras]\nx = 1\n")
    with pytest.raises(ConfigError, match="'extras'.*valid keys: onnxprune, options, resolved"):
        load_recipe(path, SHA)
    path = write(tmp_path)
    path.write_text(path.read_text().replace("seed = 7", 'seed = 7\ndata = "calib.npz"'))
    with pytest.raises(ConfigError, match="data is given per run"):
        load_recipe(path, SHA)


def test_recipe_for_another_model_is_refused_unless_allowed(tmp_path):
    path = write(tmp_path)
    with pytest.raises(ConfigError, match="written for another model") as err:
        load_recipe(path, OTHER)
    assert SHA[:12] in str(err.value) and OTHER[:12] in str(err.value) and "--allow-other-model" in str(err.value)
    assert load_recipe(path, OTHER, allow_other_model=True)["seed"] == 7
    assert load_recipe(path, SHA.upper())["seed"] == 7  # hex case does not matter
    assert load_recipe(path, None)["seed"] == 7  # model of unknown origin: nothing to compare


def test_wrong_types_name_the_field(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text().replace("seed = 7", 'seed = "seven"'))
    with pytest.raises(ConfigError, match=r"\[options\] seed must be an integer"):
        load_recipe(path, SHA)
    path = write(tmp_path)
    path.write_text(path.read_text().replace('"fc1.weight" = 0.9', '"fc1.weight" = "high"'))
    with pytest.raises(ConfigError, match=r"layers.fc1.weight must be a number"):
        load_recipe(path, SHA)


def test_unreadable_recipes_say_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.toml", SHA)
    bad = tmp_path / "bad.toml"
    bad.write_text("[options\nseed = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(bad, SHA)
    newer = write(tmp_path)
    newer.write_text(newer.read_text().replace("recipe_format = 2", "recipe_format = 99"))
    with pytest.raises(ConfigError, match="recipe_format 99"):
        load_recipe(newer, SHA)


def test_resolved_per_layer_sparsities_are_recorded_and_replay_gives_the_same_bytes(tmp_path):
    model = builders.lenet300_like(hidden=(40, 20), seed=3)
    opts = configure(quality=1.0, exclude=("fc3*",), seed=5)
    first = run(model, opts)
    flat = recipe_of(opts) | {"input_sha256": SHA}
    path = dump_recipe(flat, tmp_path / "recipe.toml", report=first.report)
    text = path.read_text()
    assert "[resolved.sparsity]" in text and '"fc1.weight" = ' in text and "fc3.weight" not in text
    replay = run(model, configure(**load_recipe(path, SHA)))
    assert replay.model.SerializeToString() == first.model.SerializeToString()


def test_a_recipe_holds_one_table_per_step_and_format_1_recipes_still_load(tmp_path):
    path = write(tmp_path)
    doc = tomllib.loads(path.read_text())
    assert doc["options"]["targets"]["sparsity"] == 0.8 and doc["options"]["data"]["seed"] == 7
    assert doc["options"]["scan"]["levels"] == [0.5, 0.9]
    flat = tmp_path / "flat.toml"
    flat.write_text('[onnxprune]\nrecipe_format = 1\n[options]\nsparsity = 0.8\nseed = 3\n[options.layers]\n'
                    '"fc1.weight" = 0.9\n')
    assert load_recipe(flat, None) == {"sparsity": 0.8, "seed": 3, "layers": {"fc1.weight": 0.9}}
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[onnxprune]\nrecipe_format = 2\n[options.data]\nlr = 0.1\n')
    with pytest.raises(ConfigError, match=r"'lr' belongs to \[options.retrain\]"):
        load_recipe(wrong, None)


def test_an_automatic_runs_recipe_leaves_out_the_retraining_settings_the_search_chooses():
    """Newcomer audit: report.json's options and the Reproduce block listed lr 0.001, temperature 4, batch 128 (the
    defaults) for an automatic run that chose 0.003, 1 and 32; replayed, they would have been passed as given."""
    import numpy as np

    from onnxprune.converter.plan import configure, recipe_of

    data = {"input": np.zeros((200, 8), np.float32)}
    auto = recipe_of(configure(max_loss=1.0, data=data))
    assert auto["max_loss"] == 1.0 and not {"lr", "temperature", "train_batch_size", "epochs"} & set(auto)
    given = recipe_of(configure(max_loss=1.0, data=data, lr=0.01))
    assert given["lr"] == 0.01 and "temperature" not in given
    hand = recipe_of(configure(max_loss=1.0, data=data, iterations=3))  # a hand recipe keeps every setting it ran
    assert hand["lr"] == 1e-3 and hand["temperature"] == 4.0


def test_an_automatic_runs_recipe_records_the_input_crop_it_ran_and_a_replay_crops_alike():
    """CI audit: an automatic run crops the input to what the weights read (plan.resolved_shrink), but its recipe
    said `crop_inputs = false` (the flag's default); the replay passed that as the user's choice and wrote an
    uncropped model: another file (sha256) from the same choices, so a CI cache keyed on it missed."""
    import numpy as np

    from onnxprune.converter.plan import build_plan, configure, recipe_of

    data = {"input": np.zeros((200, 8), np.float32)}

    def crop(config):
        return next(s for s in build_plan(config) if s.name == "shrink").config.crop_inputs

    auto = configure(max_loss=1.0, data=data)
    assert crop(auto) and recipe_of(auto)["crop_inputs"] is True
    assert crop(configure(data=data, **recipe_of(auto)))  # the replay crops as the run did
    for off in ({"crop_inputs": False}, {"gather_inputs": True}, {"neurons": False}):
        config = configure(max_loss=1.0, data=data, **off)
        assert not crop(config) and recipe_of(config)["crop_inputs"] is False
        assert not crop(configure(data=data, **recipe_of(config)))
    assert recipe_of(configure(sparsity=0.5))["crop_inputs"] is False  # a hand run: as given
