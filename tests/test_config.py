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


# --------------------------------------------------------------------------------------------
# one convention for every command's settings


def _every_settings():
    from ferwild.audit import AuditConfig, MonitorConfig, RebalanceConfig
    from ferwild.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from ferwild.config import AugmentConfig
    from ferwild.data.prepare import PrepareConfig
    from ferwild.predict import PredictConfig

    return [RunConfig(), DataConfig(), ModelConfig(), OptimConfig(), TrainConfig(), PrepareConfig(),
            AuditConfig(attributes=("gender",)), RebalanceConfig(attributes=("gender", "age")), MonitorConfig(),
            PredictConfig(sample_fps=2), AugmentConfig()]


@pytest.mark.parametrize("settings", _every_settings(), ids=lambda s: type(s).__name__)
def test_every_settings_class_round_trips_through_a_plain_dict(settings):
    import json

    from ferwild.config import Settings

    assert isinstance(settings, Settings)
    plain = settings.to_dict()
    assert json.loads(json.dumps(plain)) == plain  # JSON/YAML-able as saved beside outputs
    assert type(settings).from_dict(plain) == settings
    with pytest.raises(ConfigError, match="unknown .*'colour'"):
        type(settings).from_dict({**plain, "colour": 1})


def _bad_settings():
    from ferwild.audit import AuditConfig, MonitorConfig, RebalanceConfig
    from ferwild.config import AugmentConfig
    from ferwild.data.prepare import PrepareConfig
    from ferwild.predict import PredictConfig

    return [
        (PrepareConfig, {"size": 8}, "size must be an integer >= 16"),
        (PrepareConfig, {"margin": "wide"}, "margin must be in \\[0, 2\\]"),
        (PrepareConfig, {"align": "dlib"}, "align must be one of auto"),
        (PrepareConfig, {"balance": "lots"}, "balance .* must be 'max' or a positive count"),
        (AuditConfig, {"alpha": 1.5}, "alpha must be in \\(0, 1\\)"),
        (AuditConfig, {"which": "middle"}, "which must be one of best, last"),
        (AuditConfig, {"top_k": -1}, "top_k must be an integer >= 0"),
        (MonitorConfig, {"patience": 0}, "patience must be an integer >= 1"),
        (MonitorConfig, {"auc_threshold": 0.3}, "auc_threshold must be in \\[0.5, 1\\]"),
        (PredictConfig, {"batch_images": 2.5}, "batch_images must be an integer >= 1"),
        (PredictConfig, {"sample_fps": 0}, "sample_fps must be positive"),
        (RebalanceConfig, {"attributes": ("gender",), "target": "many"}, "target must be 'max', 'median'"),
        (RebalanceConfig, {"attributes": ()}, "at least one attribute"),
        (AugmentConfig, {"flip_p": 2}, "flip_p \\(a probability\\) must be in \\[0, 1\\]"),
        (AugmentConfig, {"scale": (1.2, 0.8)}, "scale must be an increasing pair"),
    ]


@pytest.mark.parametrize("cls,values,message", _bad_settings(), ids=lambda v: getattr(v, "__name__", None))
def test_a_bad_value_is_a_config_error_naming_the_field(cls, values, message):
    with pytest.raises(ConfigError, match=message):
        cls(**values)


def test_numbers_written_as_text_are_parsed_in_one_place():
    from ferwild.config import check_count_or_choice, check_number, parse_number

    assert parse_number("1e-3") == 1e-3 and parse_number(" 5 ") == 5 and isinstance(parse_number("5"), int)
    assert parse_number("adam") == "adam" and parse_number(None) is None and parse_number(2) == 2
    assert check_number("1e-4", "lr", low=0, low_open=True) == 1e-4
    for bad in ("fast", True, None, float("nan")):
        with pytest.raises(ConfigError, match="lr must be positive"):
            check_number(bad, "lr", low=0, low_open=True)
    assert check_count_or_choice("MAX", "t", ("max",)) == "max" and check_count_or_choice("500", "t", ("max",)) == 500
    assert check_count_or_choice(7.0, "t", ("max",)) == 7
    for bad in (True, "2.5", 0, "-3", "most"):
        with pytest.raises(ConfigError, match="t "):
            check_count_or_choice(bad, "t", ("max",))


def test_validating_a_config_does_not_import_torch(tmp_path):
    """Settings validation (augmentation options included) is pure Python: a bad recipe fails
    in a fresh process before torch is ever imported."""
    import subprocess
    import sys

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  augment: true\n  augment_options: {degrees: 15, erase_p: 0.4}\n")
    code = ("import sys\nfrom ferwild.config import RunConfig, ConfigError\n"
            f"RunConfig.load({str(recipe)!r})\n"
            "try:\n    RunConfig.from_dict({'data': {'augment_options': {'erase_p': 2}}})\n"
            "except ConfigError as e:\n    print('rejected', 'erase_p' in str(e))\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["rejected", "True", "False"]
