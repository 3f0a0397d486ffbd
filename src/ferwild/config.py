"""Configuration: one typed dataclass per concern, one convention for every command.

Every command's settings (``RunConfig``'s sections here; ``PrepareConfig``, ``AuditConfig``,
``RebalanceConfig``, ``MonitorConfig``, ``PredictConfig`` beside the code
that uses them) is a :class:`Settings` dataclass:

- validated in ``__post_init__`` with the checks below (``check_int``, ``check_number``,
  ``check_choice``), so a bad value fails on construction, before anything is written, with a
  one-line :class:`ConfigError` (a ``ValueError``) that names the field;
- numbers given as text (YAML reads ``1e-3`` as a string) are parsed by one function,
  :func:`parse_number`;
- ``to_dict()`` gives the plain, YAML/JSON-able form saved beside a run's outputs, and
  ``from_dict()`` rebuilds it, refusing unknown keys (a typo must not pass silently).

A training run's configuration layers defaults < YAML file < CLI overrides. Its defaults are
the study's recipe (ViT-B/16 from ImageNet-21k, Adam at 1e-3, batch 256, 3 epochs,
class-weighted cross-entropy, learning rate x0.8 when validation macro-F1 drops by more than
10%). The resolved configuration is saved beside every run as ``config.yaml``. Overrides use
dotted keys: ``optim.lr=1e-4 train.epochs=5 model.name=resnet50``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULERS = ("f1_drop", "cosine", "constant")
TARGETS = ("hard", "votes", "teacher")
CLASS_WEIGHTS = ("balanced", "sqrt", "none")
PRECISIONS = ("auto", "fp32", "bf16")


class ConfigError(ValueError):
    """A configuration value or key that cannot be used (one clear line for the user)."""


# --------------------------------------------------------------------------------------------
# the convention: parsing and checks shared by every settings class


def parse_number(value: Any) -> Any:
    """A number written as text (``"1e-3"``, ``"5"``) as a number; anything else unchanged.

    YAML reads ``1e-3`` (no dot) as a string, and CLI overrides arrive as text: this is the one
    place such strings become numbers.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text) if any(c in text for c in ".eE") or text.lower() in ("inf", "-inf", "nan") \
                else int(text)
        except ValueError:
            return value
    return value


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int, or a one-line :class:`ConfigError` naming ``name``: bools, fractions
    (``2.5``; ``2.0`` is accepted), text and values below ``minimum`` are refused."""
    try:
        whole = not isinstance(value, (bool, str)) and int(value) == value
    except (TypeError, ValueError):
        whole = False
    if not whole or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` (a number, or a number as text) as a float inside the given interval, or a
    one-line :class:`ConfigError` naming ``name`` and the interval. ``low_open``/``high_open``
    exclude the bound itself."""
    number = parse_number(value)
    ok = not isinstance(number, (bool, str)) and number is not None
    if ok:
        try:
            number = float(number)
        except (TypeError, ValueError):
            ok = False
    if ok and number == number:  # NaN is never inside an interval
        ok = (low is None or (number > low if low_open else number >= low)) \
            and (high is None or (number < high if high_open else number <= high))
    else:
        ok = False
    if not ok:
        if low is not None and high is not None:
            where = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low == 0 and low_open:
            where = "positive"
        elif low is not None:
            where = f"{'>' if low_open else '>='} {low:g}"
        elif high is not None:
            where = f"{'<' if high_open else '<='} {high:g}"
        else:
            where = "a number"
        raise ConfigError(f"{name} must be {where}, not {value!r}")
    return number


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a one-line :class:`ConfigError` listing them."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, not {value!r}")
    return value


def check_count_or_choice(value: Any, name: str, choices: tuple[str, ...]) -> str | int:
    """One of ``choices`` (any case) or a positive whole count (``"500"`` reads as 500), else a
    one-line :class:`ConfigError`; bools are refused. For targets such as ``max`` or ``2000``."""
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in ("true", "false"):
        count = None
    elif text in choices:
        return text
    else:
        number = parse_number(text)
        count = number if isinstance(number, int) or (isinstance(number, float) and number.is_integer()) else None
    if count is None:
        raise ConfigError(f"{name} must be {', '.join(repr(c) for c in choices)} or a positive count, not {value!r}")
    if count < 1:
        raise ConfigError(f"{name} count must be positive, not {value!r}")
    return int(count)


SettingsT = TypeVar("SettingsT", bound="Settings")


class Settings:
    """Base of every settings dataclass: plain-dict round trip with unknown keys refused.

    Subclasses are ``@dataclass`` (frozen or not) and validate in ``__post_init__`` with the
    checks above.
    """

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, YAML/JSON-able (tuples become lists)."""
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[SettingsT], data: dict[str, Any] | None, *, what: str | None = None) -> SettingsT:
        """Build from a dict; an unknown key is a :class:`ConfigError` naming the known ones."""
        data = dict(data or {})
        what = what or cls.__name__
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in {what}; known: {sorted(known)}")
        # JSON and YAML have no tuples: lists come back as the tuples the fields declare
        hints = typing.get_type_hints(cls)
        data = {k: _tuples(v) if isinstance(v, list) and _declares_tuple(hints.get(k)) else v
                for k, v in data.items()}
        try:
            return cls(**data)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{what}: {exc}") from None


def _declares_tuple(hint: Any) -> bool:
    """Whether a type hint is a tuple, or a union with one (``tuple[str, ...] | None``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_declares_tuple(arg) for arg in typing.get_args(hint))
    return hint is tuple or typing.get_origin(hint) is tuple


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class AugmentConfig(Settings):
    """Ranges of ``ferwild.data.augment.augment_batch``'s random operations (defaults: mild, face-preserving).

    Lives with the settings so that validating a config never imports torch."""

    flip_p: float = 0.5
    degrees: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05          # fraction of the image side
    brightness: float = 0.3          # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.3
    saturation: float = 0.2
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.1, 1.2)
    erase_p: float = 0.3             # occlusion patch (hand/object stand-in)
    erase_area: tuple[float, float] = (0.02, 0.12)
    erase_ratio: tuple[float, float] = (0.5, 2.0)
    # face-shaped occluders placed by the crops' landmark template (ferwild.data.occluders:
    # sunglasses, a mask, a hand, half the face), one of them on this share of the images
    occlude_p: float = 0.0
    # where the 5 landmarks sit in the crops, normalised to [0, 1]; None: training fills it in
    # from the prepared dataset's face alignment
    occlude_points: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self):
        if self.occlude_points is not None:
            points = tuple(tuple(float(v) for v in p) for p in self.occlude_points)
            if len(points) != 5 or any(len(p) != 2 or not 0 <= min(p) <= max(p) <= 1 for p in points):
                raise ConfigError(f"occlude_points must be 5 (x, y) pairs in [0, 1], not {self.occlude_points!r}")
            object.__setattr__(self, "occlude_points", points)  # frozen: normalised once, here
        for name in ("flip_p", "blur_p", "erase_p", "occlude_p"):
            check_number(getattr(self, name), f"{name} (a probability)", low=0, high=1)
        for name in ("degrees", "translate", "brightness", "contrast", "saturation"):
            check_number(getattr(self, name), name, low=0)
        for name in ("scale", "blur_sigma", "erase_area", "erase_ratio"):
            low, high = (check_number(v, name, low=0) for v in getattr(self, name))
            if (name == "scale" and low == 0) or low > high:
                raise ConfigError(f"{name} must be an increasing pair of positive numbers, not {getattr(self, name)!r}")


@dataclass
class DataConfig(Settings):
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
    train_fraction: float = 1.0         # train on this class-stratified share of the training rows,
                                        # the same faces in every run (drawn with seed 0, not
                                        # train.seed): fits a study grid into a CPU budget

    def __post_init__(self):
        self.num_workers = check_int(self.num_workers, "data.num_workers", 0)
        self.train_fraction = check_number(self.train_fraction, "data.train_fraction", low=0.0, high=1.0,
                                           low_open=True)
        self.augment_options = dict(self.augment_options or {})
        self.augment_config()  # fail now on an unknown or bad option, not at the first batch

    def augment_config(self):
        """The on-the-fly augmentation: :class:`AugmentConfig` defaults with ``augment_options`` applied."""
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
class ModelConfig(Settings):
    """The backbone (a registry name or ``timm:<name>``) and its weights."""

    name: str = "vit_b16"
    pretrained: str = "hub"             # none | hub | a local path
    # also keep the classification head of `pretrained`, a ferwild checkpoint's model.safetensors
    # trained on the same labels (fine-tuning or distilling a trained model starts from its own
    # answers; a fresh head's first epoch shakes the backbone)
    pretrained_head: bool = False
    image_size: int | None = None       # None: the model's default input size
    freeze_backbone: bool = False

    def __post_init__(self):
        if self.image_size is not None:
            self.image_size = check_int(self.image_size, "model.image_size", 16)
            if self.image_size > 1024:
                raise ConfigError(f"model.image_size must be between 16 and 1024, not {self.image_size}")


@dataclass
class OptimConfig(Settings):
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
    # What the training cross-entropy fits: hard (each face's label) | votes (the crowd's vote
    # distribution, e.g. FER+; faces without votes fall back to their label) | teacher
    # (distillation: a trained model's probabilities, `teacher`, mixed with the crowd's
    # distribution or the label as teacher_weight : 1 - teacher_weight). Class weights and
    # label smoothing apply to each. Hard labels still drive stratification and selection.
    targets: str = "hard"
    teacher: str = ""                   # targets teacher: a predictions.parquet written by `ferwild evaluate`
                                        # on the training split (row_id + prob_<label> columns)
    teacher_weight: float = 0.5         # share of the teacher in the targets (the rest: votes or label)

    def __post_init__(self):
        check_choice(self.targets, "optim.targets", TARGETS)
        self.teacher_weight = check_number(self.teacher_weight, "optim.teacher_weight", low=0, high=1)
        if (self.targets == "teacher") != bool(self.teacher):
            raise ConfigError("optim.targets teacher needs optim.teacher (a predictions.parquet of the teacher on the "
                              "training split), and optim.teacher needs optim.targets teacher")
        self.lr = check_number(self.lr, "optim.lr", low=0, low_open=True)
        self.momentum = check_number(self.momentum, "optim.momentum", low=0)
        self.weight_decay = check_number(self.weight_decay, "optim.weight_decay", low=0)
        self.label_smoothing = check_number(self.label_smoothing, "optim.label_smoothing", low=0, high=1,
                                            high_open=True)
        self.f1_drop_threshold = check_number(self.f1_drop_threshold, "optim.f1_drop_threshold", low=0, high=1,
                                              high_open=True)
        self.f1_drop_factor = check_number(self.f1_drop_factor, "optim.f1_drop_factor", low=0, high=1, low_open=True)
        self.warmup_epochs = check_int(self.warmup_epochs, "optim.warmup_epochs", 0)
        self.optimizer = check_choice(str(self.optimizer).lower(), "optim.optimizer", OPTIMIZERS)
        check_choice(self.scheduler, "optim.scheduler", SCHEDULERS)
        check_choice(self.class_weights, "optim.class_weights", CLASS_WEIGHTS)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError("optim.nesterov needs optimizer sgd with momentum > 0")
        if self.warmup_epochs and self.scheduler == "f1_drop":
            raise ConfigError("optim.warmup_epochs needs scheduler cosine or constant (the F1-drop rule has no warm-up)")


@dataclass
class TrainConfig(Settings):
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
        self.epochs = check_int(self.epochs, "train.epochs", 1)
        self.batch_size = check_int(self.batch_size, "train.batch_size", 1)
        self.eval_batch_size = check_int(self.eval_batch_size, "train.eval_batch_size", 1)
        self.seed = check_int(self.seed, "train.seed", 0)
        if self.micro_batch_size is not None:
            self.micro_batch_size = check_int(self.micro_batch_size, "train.micro_batch_size", 1)
        if self.max_train_batches is not None:
            self.max_train_batches = check_int(self.max_train_batches, "train.max_train_batches", 1)
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ConfigError(f"train.batch_size ({self.batch_size}) must be a multiple of "
                              f"train.micro_batch_size ({self.micro_batch_size})")
        check_choice(self.precision, "train.precision", PRECISIONS)


@dataclass
class RunConfig(Settings):
    """Everything a training run needs; saved resolved as ``RUN_DIR/config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

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
            values = data.get(f.name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"config section {f.name!r} must be a mapping")
            kwargs[f.name] = f.default_factory.from_dict(values, what=f"section {f.name!r}")  # type: ignore[misc]
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
    data[section][name] = parse_number(value)
