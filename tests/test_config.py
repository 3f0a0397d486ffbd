import numpy as np
import pytest
import yaml

from ferwild.config import ConfigError, RunConfig


def test_defaults_are_the_study_recipe():
    c = RunConfig()
    assert (c.model.name, c.model.pretrained) == ("vit_b16", "hub")
    assert (c.optim.optimizer, c.optim.lr, c.optim.scheduler) == ("adam", 1e-3, "f1_drop")
    assert (c.optim.f1_drop_threshold, c.optim.f1_drop_factor) == (0.10, 0.8)
    assert (c.train.batch_size, c.train.epochs) == (256, 3)
    assert c.optim.class_weights == "balanced"


def test_layering_defaults_file_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "resnet50"}, "optim": {"lr": "1e-4"},
                                    "train": {"epochs": 5}}))
    c = RunConfig.load(path, ["train.epochs=2", "optim.optimizer=SGD", "model.image_size=112"])
    assert c.model.name == "resnet50" and c.optim.lr == 1e-4
    assert c.train.epochs == 2 and c.optim.optimizer == "sgd" and c.model.image_size == 112
    c.save(tmp_path / "resolved.yaml")
    assert RunConfig.load(tmp_path / "resolved.yaml") == c


@pytest.mark.parametrize("override,message", [
    ("optim.lrr=1", "unknown key"), ("optimizer.lr=1", "unknown config section"),
    ("lr=1", "section.key"), ("optim.lr", "section.key=value"),
    ("optim.optimizer=adagrad", "adam"), ("train.epochs=0", "epochs"),
    ("train.micro_batch_size=100", "multiple"), ("optim.lr=-1", "positive"),
    ("optim.nesterov=true", "nesterov needs optimizer sgd"),
    ("optim.label_smoothing=1.0", "label_smoothing"), ("optim.warmup_epochs=-1", "warmup_epochs"),
    ("optim.warmup_epochs=2", "needs scheduler cosine"), ("optim.class_weights=inverse", "sqrt"),
    ("data.augment_options={degress: 10}", "unknown data.augment_options"),
    ("data.augment_options={flip_p: 2}", "probability"),
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.load(None, [override])


def test_unknown_yaml_keys_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  nmae: resnet50\n")
    with pytest.raises(ConfigError, match="nmae"):
        RunConfig.load(path)
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.load(tmp_path / "nope.yaml")


def test_recipe_options_reach_the_augmentation(tmp_path):
    c = RunConfig.load(None, ["data.augment_options={degrees: 15, scale: [0.8, 1.2], erase_p: 0.5}",
                              "optim.optimizer=sgd", "optim.nesterov=true", "optim.scheduler=cosine",
                              "optim.warmup_epochs=2", "optim.label_smoothing=0.1"])
    aug = c.data.augment_config()
    assert (aug.degrees, aug.scale, aug.erase_p) == (15, (0.8, 1.2), 0.5)
    assert aug.flip_p == 0.5  # untouched fields keep their defaults
    c.save(tmp_path / "resolved.yaml")
    assert RunConfig.load(tmp_path / "resolved.yaml") == c


def test_the_shipped_recipe_file_loads():
    from pathlib import Path

    c = RunConfig.load(Path(__file__).resolve().parents[1] / "recipes" / "fer2013.yaml")
    assert c.model.name == "fer_vgg" and c.data.augment and c.optim.nesterov


def test_check_int_refuses_bools_fractions_and_small_values():
    from ferwild.config import check_int

    assert check_int(3, "n", 1) == 3 and check_int(2.0, "n", 0) == 2 and check_int(np.int64(4), "n", 1) == 4
    for bad in (True, 2.5, 0, "3", None):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            check_int(bad, "n", 1)
