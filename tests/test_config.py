"""One typed config: defaults, YAML, overrides, validation, and "did you mean" for typos."""

from __future__ import annotations

import pytest

from maskwatch.config import ConfigError, TrainConfig, load_config


def test_defaults_follow_the_reference_recipe():
    cfg = load_config()
    assert (cfg.arch, cfg.lr, cfg.batch_size, cfg.image_size, cfg.rotation) == ("mobilenet_v2", 1e-3, 32, 224, 15.0)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nlr: 0.01\naugment: false\nimage_size: 128\n")
    cfg = load_config(path, lr=0.5, epochs=None)
    assert (cfg.epochs, cfg.lr, cfg.augment, cfg.image_size) == (3, 0.5, False, 128)


def test_typo_gets_a_suggestion(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epocs: 3\n")
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        load_config(path)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("epochs", "many", "cannot use"),
        ("arch", "vgg99", "arch must be one of"),
        ("class_weights", "sometimes", "class_weights"),
        ("lr", -1, "lr must be > 0"),
        ("batch_size", 2.5, "cannot use"),
    ],
)
def test_bad_values_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(**{key: value})


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(epochs=7, data="somewhere", finetune=2)
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_non_mapping_yaml_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_every_field_has_a_default():
    TrainConfig()  # constructing with no arguments is what makes "every default in one place" true


@pytest.mark.parametrize(
    "key, expected",
    [
        ("learning_rate", "lr"),
        ("num_epochs", "epochs"),
        ("batchsize", "batch_size"),
        ("img_size", "image_size"),
        ("backbone", "arch"),
        ("output_dir", "out"),
        ("Learning-Rate", "lr"),
    ],
)
def test_common_aliases_get_a_suggestion(tmp_path, key, expected):
    path = tmp_path / "run.yaml"
    path.write_text(f"{key}: 3\n")
    with pytest.raises(ConfigError, match=f"unknown config key .*Did you mean '{expected}'"):
        load_config(path)


@pytest.mark.parametrize("key, value", [("epochs", 0), ("finetune_epochs", 0), ("patience", 0), ("dropout", 1.0)])
def test_out_of_range_numbers_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(**{key: value})
