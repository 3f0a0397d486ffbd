"""Run configuration: one typed dataclass per concern, layered defaults < YAML file < CLI.

The defaults are the study's recipe (ViT-B/16 from ImageNet-21k, Adam at 1e-3, batch 256,
3 epochs, class-weighted cross-entropy, learning rate x0.8 when validation macro-F1 drops by
more than 10%). The resolved configuration is saved beside every run as ``config.yaml``.

Overrides use dotted keys: ``optim.lr=1e-4 train.epochs=5 model.name=resnet50``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULERS = ("f1_drop", "cosine", "constant")
CLASS_WEIGHTS = ("balanced", "sqrt", "none")
PRECISIONS = ("auto", "fp32", "bf16")


class ConfigError(ValueError):
    """A configuration value or key that cannot be used (one clear line for the user)."""


@dataclass
class DataConfig:
    """Which prepared dataset, which splits, and how batches are fed."""

    path: str = ""                      # a folder written by `ferwild prepare`
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    use_augmented_rows: bool = True     # the balancing rows written by prepare
    augment: bool = False               # on-the-fly augmentation of training batches (the study
                                        # augmented offline, to balance classes, as `prepare` does)
    augment_options: dict = field(default_factory=dict)  # AugmentConfig fields to change, e.g.
                                        # {degrees: 15, translate: 0.1, erase_p: 0.5}
    num_workers: int = 0                # DataLoader workers; the cache is memory-mapped

    def __post_init__(self):
        if self.num_workers < 0:
            raise ConfigError("data.num_workers must be >= 0")
        self.augment_options = dict(self.augment_options or {})
        self.augment_config()  # fail now on an unknown or bad option, not at the first batch

    def augment_config(self):
        """The on-the-fly augmentation: :class:`AugmentConfig` defaults with ``augment_options`` applied."""
        from ferwild.data.augment import AugmentConfig

        known = {f.name for f in dataclasses.fields(AugmentConfig)}
        bad = sorted(set(self.augment_options) - known)
        if bad:
            raise ConfigError(f"unknown data.augment_options {bad}; known: {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.augment_options.items()}
        try:
            return AugmentConfig(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"data.augment_options: {exc}") from None


@dataclass
class ModelConfig:
    """The backbone (a registry name or ``timm:<name>``) and its weights."""

    name: str = "vit_b16"
    pretrained: str = "hub"             # none | hub | a local path
    image_size: int | None = None       # None: the model's default input size
    freeze_backbone: bool = False

    def __post_init__(self):
        if self.image_size is not None and not 16 <= int(self.image_size) <= 1024:
            raise ConfigError(f"model.image_size must be between 16 and 1024, not {self.image_size}")


@dataclass
class OptimConfig:
    """Optimizer, learning-rate rule and loss weighting."""

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9               # SGD / RMSprop
    nesterov: bool = False              # SGD only
    weight_decay: float = 0.0
    scheduler: str = "f1_drop"          # the study's rule; cosine | constant
    warmup_epochs: int = 0              # linear warm-up before the schedule (cosine / constant)
    label_smoothing: float = 0.0        # of the training cross-entropy
    f1_drop_threshold: float = 0.10     # relative drop of val macro-F1 that triggers a decay
    f1_drop_factor: float = 0.8
    class_weights: str = "balanced"     # n / (C * n_c) over the rows trained on | sqrt (its square root) | none

    def __post_init__(self):
        try:  # YAML reads "1e-3" (no dot) as a string
            for name in ("lr", "momentum", "weight_decay", "f1_drop_threshold", "f1_drop_factor",
                         "label_smoothing"):
                setattr(self, name, float(getattr(self, name)))
        except (TypeError, ValueError):
            raise ConfigError(f"optim.{name} must be a number, not {getattr(self, name)!r}") from None
        self.optimizer = str(self.optimizer).lower()
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optim.optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"optim.scheduler must be one of {', '.join(SCHEDULERS)}, not {self.scheduler!r}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise ConfigError(f"optim.class_weights must be one of {', '.join(CLASS_WEIGHTS)}, "
                              f"not {self.class_weights!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"optim.label_smoothing must be in [0, 1), not {self.label_smoothing}")
        if int(self.warmup_epochs) != self.warmup_epochs or self.warmup_epochs < 0:
            raise ConfigError(f"optim.warmup_epochs must be a whole number >= 0, not {self.warmup_epochs}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError("optim.nesterov needs optimizer sgd with momentum > 0")
        if self.warmup_epochs and self.scheduler == "f1_drop":
            raise ConfigError("optim.warmup_epochs needs scheduler cosine or constant (the F1-drop rule has no warm-up)")
        if not float(self.lr) > 0:
            raise ConfigError(f"optim.lr must be positive, not {self.lr}")
        if not 0 < self.f1_drop_factor <= 1 or not 0 <= self.f1_drop_threshold < 1:
            raise ConfigError("optim.f1_drop_factor must be in (0, 1] and f1_drop_threshold in [0, 1)")


@dataclass
class TrainConfig:
    """Loop settings."""

    epochs: int = 3
    batch_size: int = 256               # the effective (global) batch
    micro_batch_size: int | None = None # per-step batch on one device; accumulation makes up the rest
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    precision: str = "auto"             # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    max_train_batches: int | None = None  # cap per epoch, for smoke runs
    channels_last: bool = False         # NHWC tensors: faster convolutions (CPU oneDNN, GPU tensor cores)

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError("train.epochs must be >= 1")
        if self.batch_size < 1 or (self.micro_batch_size is not None and self.micro_batch_size < 1):
            raise ConfigError("train.batch_size and train.micro_batch_size must be >= 1")
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ConfigError(f"train.batch_size ({self.batch_size}) must be a multiple of "
                              f"train.micro_batch_size ({self.micro_batch_size})")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}")


@dataclass
class RunConfig:
    """Everything a training run needs; saved resolved as ``RUN_DIR/config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-able)."""
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RunConfig":
        """Build from a nested dict; unknown sections/keys are errors (typos must not pass)."""
        data = data or {}
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(data) - set(sections)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; expected {sorted(sections)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            section_cls = f.default_factory  # type: ignore[misc]
            values = data.get(f.name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"config section {f.name!r} must be a mapping")
            known = {sf.name for sf in dataclasses.fields(section_cls)}
            bad = set(values) - known
            if bad:
                raise ConfigError(f"unknown key(s) {sorted(bad)} in section {f.name!r}; known: {sorted(known)}")
            try:
                kwargs[f.name] = section_cls(**values)
            except TypeError as exc:
                raise ConfigError(f"section {f.name!r}: {exc}") from None
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> "RunConfig":
        """Defaults, then the YAML file (if any), then ``key=value`` overrides."""
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = yaml.safe_load(Path(path).read_text()) or {}
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {path}") from None
            except yaml.YAMLError as exc:
                raise ConfigError(f"cannot parse {path}: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{path} must hold a mapping of sections")
        base = cls.from_dict(data).to_dict()
        for item in overrides or []:
            apply_override(base, item)
        return cls.from_dict(base)


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int, or a one-line ``ValueError`` naming ``name``: bools, fractions
    (``2.5``; ``2.0`` is accepted) and values below ``minimum`` are refused."""
    try:
        whole = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError):
        whole = False
    if not whole or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override in place; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2:
        raise ConfigError(f"override key {key!r} must be section.key (e.g. optim.lr=1e-4)")
    section, name = parts
    if section not in data:
        raise ConfigError(f"unknown config section {section!r} in override {item!r}")
    if name not in data[section]:
        raise ConfigError(f"unknown key {name!r} in section {section!r}; known: {sorted(data[section])}")
    value = yaml.safe_load(raw) if raw.strip() else None
    # YAML reads 1e-3 as a string (no dot); numbers the user meant should stay numbers.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    data[section][name] = value
