"""One typed config: defaults, YAML, overrides, validation, and "did you mean" for typos."""

from __future__ import annotations

import pytest

from maskwatch.config import TrainConfig, load_config
from maskwatch.core.errors import ConfigError


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
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_config(path)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("epochs", "many", "epochs: Input should be a valid integer"),
        ("arch", "vgg99", "arch must be one of"),
        ("class_weights", "sometimes", "class_weights"),
        ("lr", -1, "lr must be > 0"),
        ("batch_size", 2.5, "batch_size: Input should be a valid integer"),
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
    with pytest.raises(ConfigError, match=f"unknown setting .*did you mean '{expected}'"):
        load_config(path)


@pytest.mark.parametrize("key, value", [("epochs", 0), ("finetune_epochs", 0), ("patience", 0), ("dropout", 1.0)])
def test_out_of_range_numbers_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(**{key: value})


# -- several datasets


def test_data_list_in_yaml_with_per_dataset_options(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "data:\n"
        "  - path: ../shared/data/faces\n"
        "  - path: ../shared/data/scenes\n"
        "    crops: true\n"
        "    min_face: 12\n"
        "    splits: data/splits/scenes\n"
        "    weight: 2.0\n"
        "classes: [with_mask, without_mask]\n"
        "min_face: 20\n"
    )
    cfg = load_config(path)
    faces, scenes = cfg.sources()
    assert (faces.name, faces.crops, faces.min_face, faces.weight, faces.splits) == ("faces", False, 20, 1.0, None)
    assert (scenes.name, scenes.crops, scenes.min_face, scenes.weight) == ("scenes", True, 12, 2.0)
    assert scenes.splits == "data/splits/scenes" and scenes.crop_margin == cfg.crop_margin
    assert cfg.classes == ["with_mask", "without_mask"]
    cfg.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_an_older_single_data_config_still_loads_and_saves_alike(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data: ../shared/data/scenes\ncrops: true\nmin_face: 24\n")
    cfg = load_config(path)
    (source,) = cfg.sources()
    assert (source.path, source.crops, source.min_face, source.weight) == ("../shared/data/scenes", True, 24, 1.0)
    assert cfg.to_dict()["data"] == "../shared/data/scenes"  # readers of config["data"] still get a path
    from maskwatch.config import DataSource

    folded = load_config(data=[DataSource.parse("scenes,crops,min_face=12,splits=lists,weight=3")], min_face=20)
    assert folded.to_dict()["data"] == "scenes"  # one dataset's own options become the top-level ones
    assert (folded.crops, folded.min_face, folded.splits) == (True, 12, "lists")


def test_cli_form_of_a_dataset():
    from maskwatch.config import DataSource

    source = DataSource.parse("../shared/data/scenes,crops,min-face=12,splits=data/splits/scenes,weight=2")
    assert source == DataSource("../shared/data/scenes", crops=True, min_face=12, splits="data/splits/scenes",
                                weight=2.0)
    assert DataSource.parse("faces") == DataSource("faces")
    assert DataSource.parse("scenes,crops=false").crops is False
    with pytest.raises(ConfigError, match="did you mean 'weight'"):
        DataSource.parse("scenes,wieght=2")
    with pytest.raises(ConfigError, match="min_face: Input should be a valid integer"):
        DataSource.parse("scenes,min_face=small")


@pytest.mark.parametrize(
    "data, message",
    [
        ([{"path": "a", "weight": 0}], "weight: Input should be greater than 0"),
        ([{"path": "a", "min_face": 0}], "min_face: Input should be greater than or equal to 1"),
        ([{"crops": True}], "needs a 'path'"),
        ([3], "expected a path or a mapping"),
    ],
)
def test_bad_datasets_are_refused(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data=data)


def test_dataset_names_are_unique_and_classes_need_two():
    cfg = load_config(data=["x/scenes", "y/scenes", {"path": "z", "name": "mine"}])
    assert [s.name for s in cfg.sources()] == ["scenes", "scenes-2", "mine"]
    assert load_config(classes="with_mask, without_mask").classes == ["with_mask", "without_mask"]
    with pytest.raises(ConfigError, match="at least two classes"):
        load_config(classes=["with_mask"])


def test_the_readme_lists_every_config_key():
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1] / "README.md"
    if not readme.is_file():
        pytest.skip("README.md not found beside tests/")
    table = readme.read_text().split("Config keys (`TrainConfig`", 1)[-1]
    missing = [name for name in TrainConfig.model_fields if f"`{name}`" not in table]
    assert not missing, f"README's config key table lacks {missing}"


def test_environment_overrides_sit_between_the_file_and_the_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nlr: 0.01\n")
    env = {"MASKWATCH_TRAIN_EPOCHS": "5", "MASKWATCH_TRAIN_LR": "0.02", "MASKWATCH_TRAIN_DATA": '["a", "b"]'}
    cfg = load_config(path, env=env, lr=0.5)
    assert (cfg.epochs, cfg.lr) == (5, 0.5)
    assert [s.path for s in cfg.data] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"MASKWATCH_TRAIN_EPOCS.*did you mean 'epochs'"):
        load_config(env={"MASKWATCH_TRAIN_EPOCS": "5"})
