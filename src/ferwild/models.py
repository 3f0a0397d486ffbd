"""Model zoo: a backbone plus an N-way linear head, with the preprocessing it expects.

Every model is a :class:`FERModel`: ``backbone`` maps normalised images ``(N, 3, S, S)`` to
embeddings ``(N, D)`` and ``head`` is an ``nn.Linear(D, num_classes)``. The model carries its
``name``, ``num_classes``, ``preprocessing`` (input size, mean, std) and ``id2label``, and
:meth:`FERModel.config` is the small JSON-able dict that :func:`model_from_config` turns back
into the same architecture (checkpoints store that dict plus the safetensors weights).

Built-in names (:data:`MODEL_REGISTRY`)::

    vit_b16    ViT-B/16, Hugging Face transformers ViTModel; hub weights google/vit-base-patch16-224-in21k
    resnet50   torchvision ResNet-50; hub weights ResNet50_Weights.IMAGENET1K_V2
    resnet18   torchvision ResNet-18; hub weights ResNet18_Weights.IMAGENET1K_V1
    vit_tiny   a small HF ViT (192-d, 4 layers, 3 heads, patch 8, 64 px); random init or a local checkpoint
    cnn_small  a ~100k-parameter CNN for 48-64 px CPU runs; random init or a local checkpoint
    fer_vgg    a VGG-style CNN for 48 px faces (~2.5M parameters), the architecture of the shipped model
    fer_vgg_tiny  the same at demo size (~0.43M parameters): the demo's main model
    fer_vgg_half  fer_vgg at half width (~0.78M parameters, a quarter of the cost): a distillation student

and ``timm:<model_name>`` for any timm model. New names are added with :func:`register_model`.

``pretrained`` (see :func:`create_model`) is ``"none"`` (random init), ``"hub"`` (the entry's
standard weights from the standard caches, downloaded only when online), ``"hf:<repo_id>"``,
``"torchvision:<Weights.NAME>"``, or a local path: a Hugging Face model folder, a
``.safetensors`` file, or a ``.pt``/``.pth``/``.bin`` state dict, which is only ever read with
``torch.load(..., weights_only=True)``. Pretrained weights go into the backbone; the head is
always new.

Heavy libraries (transformers, timm, torchvision models) are imported inside the functions
that need them, so ``import ferwild.models`` stays light.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import re
import socket
import warnings
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from torch.nn import functional as F

from ferwild.formatting import first_line
from ferwild.preprocessing import Preprocessing

__all__ = [
    "ModelEntry",
    "MODEL_REGISTRY",
    "register_model",
    "UnknownModelError",
    "PretrainedWeightsUnavailable",
    "UnsafeCheckpointError",
    "IncompatibleWeightsError",
    "FERModel",
    "FEREnsemble",
    "create_model",
    "model_from_config",
    "list_models",
    "count_parameters",
]

CONFIG_FORMAT = "ferwild.model/1"
#: Test-time augmentations a model can apply at inference (see :class:`FERModel`).
TTA_MODES = ("none", "flip")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

_TRUE = {"1", "true", "yes", "on"}
_PROBE_TIMEOUT_S = 3.0


# ----------------------------------------------------------------------------- errors


class UnknownModelError(ValueError):
    """A model name that is neither in :data:`MODEL_REGISTRY` nor ``timm:<a timm model>``."""


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be obtained (or used).

    The message says which weights, where they were looked for, how to put them there, and
    that ``--pretrained none`` trains from random init. Subclasses narrow the cause.
    """


class UnsafeCheckpointError(PretrainedWeightsUnavailable):
    """A checkpoint holds pickled objects other than tensors; it is refused, never unpickled."""


class IncompatibleWeightsError(PretrainedWeightsUnavailable):
    """A checkpoint was read but its tensors do not fit the backbone (nothing matched, or shapes differ)."""


_NONE_HINT = "Pass `--pretrained none` (pretrained=\"none\") to train from random initialisation instead."


# ----------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class ModelEntry:
    """A registry row: how a named model looks before it is built."""

    name: str
    description: str
    default_input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained_source: str  # "hf:<repo>", "torchvision:<Weights.NAME>" or "none"


# ----------------------------------------------------------------------------- registry

MODEL_REGISTRY: dict[str, ModelEntry] = {}
_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_PARAM_COUNT_CACHE: dict[str, tuple[int, int]] = {}


def register_model(entry: ModelEntry, builder: Callable[..., nn.Module], *, overwrite: bool = False) -> None:
    """Add a model name.

    ``builder(image_size=S)`` returns the backbone: an ``nn.Module`` mapping normalised
    ``(N, 3, S, S)`` images to ``(N, D)`` embeddings, ideally with an int attribute
    ``num_features`` (= D; otherwise D is found by a dry run). The head is added by
    :func:`create_model`. A backbone may define ``load_pretrained_state_dict(sd, source)`` and
    ``load_pretrained_directory(path)`` to adapt foreign checkpoints; otherwise checkpoints are
    matched by key and shape.
    """
    if not isinstance(entry, ModelEntry):
        raise TypeError("entry must be a ModelEntry")
    if not entry.name or entry.name.startswith("timm:") or entry.name in {"none", "hub"}:
        raise ValueError(f"invalid model name {entry.name!r}")
    if entry.name in MODEL_REGISTRY and not overwrite:
        raise ValueError(f"model {entry.name!r} is already registered (pass overwrite=True to replace it)")
    if not callable(builder):
        raise TypeError("builder must be callable")
    Preprocessing(entry.default_input_size, entry.mean, entry.std)  # validates the numbers
    MODEL_REGISTRY[entry.name] = entry
    _BUILDERS[entry.name] = builder
    _PARAM_COUNT_CACHE.pop(entry.name, None)


def _unknown_model(name: str, extra: str = "") -> UnknownModelError:
    names = ", ".join(MODEL_REGISTRY)
    return UnknownModelError(
        f"unknown model {name!r}{extra}; choose one of: {names}, "
        "or 'timm:<model_name>' for any timm model (e.g. timm:convnext_tiny; see timm.list_models())"
    )


# ----------------------------------------------------------------------------- backbones


class HFViTBackbone(nn.Module):
    """A transformers ``ViTModel`` (no pooler); the embedding is the final [CLS] token."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        from transformers import ViTModel

        if config.image_size % config.patch_size:
            raise ValueError(
                f"image size {config.image_size} is not a multiple of the ViT patch size {config.patch_size}"
            )
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.num_features = int(config.hidden_size)
        self.patch_size = int(config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=pixel_values).last_hidden_state[:, 0]

    # -- pretrained loading: through transformers' own loader, which renames legacy keys
    #    (encoder.layer.N.attention.attention.query -> layers.N.attention.q_proj, "vit." prefixes).

    def load_pretrained_directory(self, path: Path) -> dict:
        cfg = json.loads((Path(path) / "config.json").read_text())
        src_grid = int(cfg.get("image_size", self.vit.config.image_size)) // int(cfg.get("patch_size", self.patch_size))
        return self._load_via_transformers(str(path), None, src_grid * self.patch_size, str(path))

    def load_pretrained_state_dict(self, state_dict: dict[str, torch.Tensor], source: str) -> dict:
        src_size = self.vit.config.image_size
        for key, value in state_dict.items():
            if key.endswith("position_embeddings") and value.ndim == 3:
                grid = math.isqrt(value.shape[1] - 1)
                if grid * grid != value.shape[1] - 1:
                    raise IncompatibleWeightsError(
                        f"{source}: {key} has {value.shape[1]} positions, not 1 + a square grid. {_NONE_HINT}"
                    )
                src_size = grid * self.patch_size
                break
        return self._load_via_transformers(None, state_dict, src_size, source)

    def _load_via_transformers(self, path: str | None, state_dict: dict | None, src_size: int, source: str) -> dict:
        from transformers import ViTModel

        cfg = copy.deepcopy(self.vit.config)
        cfg.image_size = src_size
        try:
            with _quiet_transformers():
                loaded, info = ViTModel.from_pretrained(
                    path, config=cfg, state_dict=state_dict, add_pooling_layer=False,
                    output_loading_info=True, local_files_only=True, weights_only=True, dtype=torch.float32,
                )
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise IncompatibleWeightsError(
                f"the weights in {source} do not fit this ViT backbone "
                f"(hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, patch {cfg.patch_size}): "
                f"{first_line(exc)}. {_NONE_HINT}"
            ) from exc
        own_keys = list(loaded.state_dict())
        missing = sorted(info.get("missing_keys", ()))
        unexpected = sorted(
            k for k in info.get("unexpected_keys", ()) if not re.match(r"^(vit\.)?(pooler|classifier|head)\.", k)
        )
        if len(missing) >= len(own_keys):
            raise IncompatibleWeightsError(
                f"none of the tensors in {source} match the ViT backbone (checkpoint keys like "
                f"{_examples(info.get('unexpected_keys', ()))}; expected keys like {_examples(own_keys)}). {_NONE_HINT}"
            )
        weights = loaded.state_dict()
        key = "embeddings.position_embeddings"
        target = self.vit.embeddings.position_embeddings.shape
        if weights[key].shape != target:
            weights[key] = _resize_pos_embed(weights[key], math.isqrt(target[1] - 1))
        self.vit.load_state_dict(weights, strict=True)
        return _report(source, len(own_keys) - len(missing), missing, unexpected)


def _resize_pos_embed(pos: torch.Tensor, new_grid: int) -> torch.Tensor:
    """(1, 1 + g*g, D) -> (1, 1 + new_grid**2, D): [CLS] kept, the grid resized bicubically."""
    cls_tok, grid_tok = pos[:, :1], pos[:, 1:]
    old_grid = math.isqrt(grid_tok.shape[1])
    dim = grid_tok.shape[-1]
    grid_tok = grid_tok.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
    grid_tok = F.interpolate(grid_tok, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid_tok = grid_tok.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim).to(pos.dtype)
    return torch.cat([cls_tok, grid_tok], dim=1)


def _vit_builder(hidden: int, layers: int, heads: int, mlp: int, patch: int) -> Callable[..., nn.Module]:
    def build(*, image_size: int) -> nn.Module:
        from transformers import ViTConfig

        config = ViTConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=mlp, patch_size=patch, image_size=image_size, num_channels=3,
            hidden_act="gelu", layer_norm_eps=1e-12, qkv_bias=True,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
        return HFViTBackbone(config)

    return build


def _torchvision_resnet_builder(arch: str, features: int) -> Callable[..., nn.Module]:
    def build(*, image_size: int) -> nn.Module:  # ResNets are size-agnostic (adaptive pooling)
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        net.fc = nn.Identity()
        net.num_features = features
        return net

    return build


class SmallCNN(nn.Module):
    """~100k-parameter CNN for 48-64 px faces: three conv stages, global average pooling, 128-d."""

    def __init__(self, widths: tuple[int, int, int] = (32, 48, 128)) -> None:
        super().__init__()
        c1, c2, c3 = widths

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(3, c1), *block(c1, c1), nn.MaxPool2d(2),
            *block(c1, c2), *block(c2, c2), nn.MaxPool2d(2),
            *block(c2, c3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.num_features = c3
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.body(pixel_values)


def _small_cnn_builder(*, image_size: int) -> nn.Module:
    return SmallCNN()


class FERVGG(nn.Module):
    """VGG-style CNN made for 48 px faces (~2.5M parameters): ferwild's FER2013 default model.

    Four stages of 3x3 conv-BN-ReLU blocks (``depths``) with ``widths`` channels, each ending in
    a 2x2 max-pool, then the flattened ``S/16 x S/16`` grid -> a ``hidden``-wide fully connected
    layer. Flattening (rather than global pooling) keeps where on the aligned face a feature
    fired, which matters for expressions (mouth vs brows); it ties the net to one input size.
    The shape follows the from-scratch VGG variants that lead FER2013 (Khaireddin & Chen 2021),
    narrowed so that a full training fits on two CPU cores (bf16, channels-last).
    """

    def __init__(self, image_size: int = 48, widths: tuple[int, ...] = (32, 64, 128, 256),
                 depths: tuple[int, ...] = (2, 2, 3, 3), hidden: int = 256, dropout: float = 0.3) -> None:
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError("widths and depths need one entry per stage")
        factor = 2 ** len(widths)
        if image_size % factor:
            raise ValueError(f"image size {image_size} is not a multiple of {factor} (the net pools {len(widths)} times)")
        layers: list[nn.Module] = []
        cin = 3
        for width, depth in zip(widths, depths):
            for _ in range(depth):
                layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        grid = image_size // factor
        self.neck = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin * grid * grid, hidden, bias=False),
            nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )
        self.num_features = hidden
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.neck(self.body(pixel_values))


def _fer_vgg_builder(*, image_size: int) -> nn.Module:
    return FERVGG(image_size=image_size)


def _fer_vgg_half_builder(*, image_size: int) -> nn.Module:
    # the live model: every stage at half the channels (a quarter of the multiply-adds), same
    # depth and the same 256-wide neck, so a student can start from the full net's strongest
    # channels (ferwild.distill.slim_fer_vgg) instead of from scratch
    return FERVGG(image_size=image_size, widths=(16, 32, 64, 128))


def _fer_vgg_tiny_builder(*, image_size: int) -> nn.Module:
    # a sixth of the shipped net's cost: half the widths, one conv fewer in each stage but the
    # last two. On ~1,000 synthetic faces it reaches val macro-F1 ~0.7 in 3-4 epochs at ~800
    # img/s on 2 CPU cores, where the global-pooled cnn_small sits at chance for 3 epochs
    # (pooling away where a feature fired - mouth or brows - is what slows it down).
    return FERVGG(image_size=image_size, widths=(16, 32, 64, 128), depths=(1, 1, 2, 2), hidden=128)


# ----------------------------------------------------------------------------- the model


class FERModel(nn.Module):
    """A backbone + N-way linear head, carrying what a run needs to be reused.

    Attributes: ``name``, ``num_classes``, ``preprocessing``, ``id2label``, ``num_features``
    (D), ``backbone`` (images -> (N, D)), ``head`` (``nn.Linear(D, num_classes)``) and
    ``pretrained_report`` (what :func:`create_model` loaded: source, tensor counts, missing and
    unexpected keys; ``None`` for random init).

    ``tta`` is the test-time augmentation of inference (:data:`TTA_MODES`): with ``"flip"``, an
    eval-mode forward reads each face and its mirror image and returns the log of their mean
    class probabilities (so a softmax gives the averaged probabilities, and an ONNX export
    carries the same computation). Training-mode forwards never augment. It travels in
    :meth:`config`.

    ``temperature`` (T > 0, default 1) calibrates inference: an eval-mode forward divides its
    output (the logits, or TTA's log mean probabilities) by T, so a softmax gives calibrated
    probabilities (T is
    fitted on validation by :func:`ferwild.metrics.fit_temperature`; ``argmax`` is unchanged).
    It travels in :meth:`config` and in ONNX exports.
    """

    def __init__(
        self,
        name: str,
        backbone: nn.Module,
        num_features: int,
        num_classes: int,
        preprocessing: Preprocessing,
        id2label: dict[int, str],
    ) -> None:
        super().__init__()
        self.name = name
        self.num_classes = int(num_classes)
        self.num_features = int(num_features)
        self.preprocessing = preprocessing
        self.id2label = dict(id2label)
        self.backbone = backbone
        self.head = nn.Linear(self.num_features, self.num_classes)
        self.pretrained_report: dict | None = None
        self._backbone_frozen = False
        self.tta = "none"
        self.temperature = 1.0

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"{self.name} expects normalised images of shape (N, 3, S, S), got {tuple(pixel_values.shape)}; "
                "grey images must be replicated to 3 channels"
            )

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Penultimate embeddings ``(N, D)``."""
        self._check_input(pixel_values)
        return self.backbone(pixel_values)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised ``(N, 3, S, S)`` floats -> logits ``(N, num_classes)`` (with ``tta="flip"``
        in eval mode: log mean probabilities of the image and its mirror; then divided by the
        temperature in eval mode)."""
        return self.forward_with_features(pixel_values)[1]

    def forward_with_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` of one pass: the embeddings of the images (not of their
        mirrors) and exactly what :meth:`forward` returns (the audit needs both, and must score
        the model as it is deployed: with its TTA and temperature)."""
        features = self.features(pixel_values)
        logits = self.head(features)
        if self.training:
            return features, logits
        if self.tta != "none":
            mirrored = self.head(self.features(pixel_values.flip(-1)))
            mean = (logits.float().softmax(1) + mirrored.float().softmax(1)) / 2
            logits = mean.clamp_min(1e-12).log()
        # last, so that T is fitted on exactly what an uncalibrated forward returns
        return features, (logits / self.temperature if self.temperature != 1.0 else logits)

    def set_tta(self, mode: str) -> "FERModel":
        """Choose the test-time augmentation (``"none"`` or ``"flip"``); returns the model."""
        if mode not in TTA_MODES:
            raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, not {mode!r}")
        self.tta = mode
        return self

    def set_temperature(self, temperature: float) -> "FERModel":
        """Set the inference temperature (> 0; 1 leaves the logits as trained); returns the model."""
        value = float(temperature)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"temperature must be a finite number > 0, not {temperature!r}")
        self.temperature = value
        return self

    def config(self) -> dict:
        """JSON-able dict from which :func:`model_from_config` rebuilds this architecture."""
        config = {
            "format": CONFIG_FORMAT,
            "name": self.name,
            "num_classes": self.num_classes,
            "image_size": self.preprocessing.input_size,
            "id2label": {str(k): v for k, v in sorted(self.id2label.items())},
            "num_features": self.num_features,
            "preprocessing": self.preprocessing.to_dict(),
        }
        if self.tta != "none":  # absent by default: configs (and cache keys) of other runs are unchanged
            config["tta"] = self.tta
        if self.temperature != 1.0:
            config["temperature"] = self.temperature
        return config

    def freeze_backbone(self, freeze: bool = True) -> None:
        """Freeze (or unfreeze) everything but the head.

        While frozen the backbone also stays in eval mode (BatchNorm statistics and dropout
        fixed) even when ``model.train()`` is called: a linear probe on fixed features.
        """
        self._backbone_frozen = bool(freeze)
        for p in self.backbone.parameters():
            p.requires_grad_(not freeze)
        for p in self.head.parameters():
            p.requires_grad_(True)
        self.backbone.train(self.training and not freeze)

    def train(self, mode: bool = True) -> "FERModel":
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.train(False)
        return self


class FEREnsemble(FERModel):
    """Several trained :class:`FERModel` of one architecture and label set, read as one model.

    An eval-mode forward averages the members' class probabilities (each member's on the image
    and, with ``tta="flip"``, on its mirror too) and returns their log, divided by the
    ensemble's ``temperature``: exactly what a single :class:`FERModel` returns, so evaluation,
    calibration, the recogniser and ONNX export take an ensemble unchanged. ``features`` are
    the members' embeddings side by side (``num_features`` = members x D). Members are trained
    one by one (``ferwild train``) and combined by :func:`ferwild.ensemble.combine_runs`; an
    ensemble is never trained as a whole (a training-mode forward raises).

    Its :meth:`config` is the members' config plus ``"ensemble": <number of members>``;
    :func:`model_from_config` rebuilds it, and its weights are the members' under
    ``members.<i>.``.
    """

    def __init__(self, members: list[FERModel]) -> None:
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two or more members, got {len(members)}")
        first = members[0]
        for m in members[1:]:
            if (m.name, m.num_classes, m.id2label, m.preprocessing.to_dict()) != (
                    first.name, first.num_classes, first.id2label, first.preprocessing.to_dict()):
                raise ValueError("ensemble members must share architecture, labels and preprocessing")
        nn.Module.__init__(self)
        self.name = first.name
        self.num_classes = first.num_classes
        self.member_features = first.num_features
        self.num_features = first.num_features * len(members)
        self.preprocessing = first.preprocessing
        self.id2label = dict(first.id2label)
        self.members = nn.ModuleList(m.set_tta("none").set_temperature(1.0) for m in members)
        self.pretrained_report = None
        self._backbone_frozen = False
        self.tta = "none"
        self.temperature = 1.0

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The members' embeddings side by side, ``(N, members x D)``."""
        self._check_input(pixel_values)
        return torch.cat([m.backbone(pixel_values) for m in self.members], dim=1)

    def forward_with_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            raise RuntimeError("an ensemble is not trained as a whole: train its members (ferwild train) and "
                               "combine them with ferwild.ensemble.combine_runs")
        self._check_input(pixel_values)
        views = [pixel_values, pixel_values.flip(-1)] if self.tta != "none" else [pixel_values]
        features, probs = [], None
        for member in self.members:
            for i, view in enumerate(views):
                emb = member.backbone(view)
                if i == 0:
                    features.append(emb)
                p = member.head(emb).float().softmax(1)
                probs = p if probs is None else probs + p
        logits = (probs / (len(self.members) * len(views))).clamp_min(1e-12).log()
        logits = logits / self.temperature if self.temperature != 1.0 else logits
        return torch.cat(features, dim=1), logits

    def config(self) -> dict:
        config = super().config()
        config["num_features"] = self.member_features
        config["ensemble"] = len(self.members)
        return config

    def freeze_backbone(self, freeze: bool = True) -> None:
        raise RuntimeError("an ensemble is not trained as a whole; freeze its members' backbones one by one")


# ----------------------------------------------------------------------------- helpers


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones once); only those with ``requires_grad`` if asked."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _examples(keys: Any, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") if keys else "(none)"


def _report(source: str, loaded: int, missing: list[str], unexpected: list[str]) -> dict:
    if missing:
        warnings.warn(
            f"{len(missing)} backbone tensors are not in {source} and stay randomly initialised: {_examples(missing)}",
            stacklevel=3,
        )
    if unexpected:
        warnings.warn(f"{len(unexpected)} tensors in {source} were not used: {_examples(unexpected)}", stacklevel=3)
    return {"source": source, "loaded": int(loaded), "missing": list(missing), "unexpected": list(unexpected)}


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return num_classes


def _check_id2label(id2label: Mapping | None, num_classes: int) -> dict[int, str]:
    if id2label is None:
        return {i: f"class_{i}" for i in range(num_classes)}
    labels = {int(k): str(v) for k, v in id2label.items()}
    if sorted(labels) != list(range(num_classes)):
        raise ValueError(f"id2label must have exactly the ids 0..{num_classes - 1}, got {sorted(labels)}")
    if len(set(labels.values())) != num_classes:
        raise ValueError(f"id2label has repeated names: {labels}")
    return labels


def _check_image_size(image_size: Any) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    return int(image_size)


def _feature_dim(backbone: nn.Module, image_size: int) -> int:
    dim = getattr(backbone, "num_features", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        backbone.train(was_training)
    if out.ndim != 2:
        raise ValueError(f"a backbone must return (N, D) embeddings, got shape {tuple(out.shape)}")
    return int(out.shape[1])


# ----------------------------------------------------------------------------- weights: where and how


def _offline_reason() -> str | None:
    for var in ("FERWILD_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"offline mode is on ({var}={os.environ[var]})"
    return None


def _unreachable_reason(url: str) -> str | None:
    """None when a TCP connection to the URL's host (or the HTTPS proxy) opens within a few seconds."""
    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(v)), None)
    target = urlparse(proxy if proxy else url)
    host = target.hostname
    port = target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return f"cannot tell the host of {url!r}"
    try:
        socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"no network: {host}:{port} is not reachable ({exc})"
    return None


def _hf_cache_dir() -> Path:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _torch_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"  # $TORCH_HOME/hub/checkpoints


def _hf_download(repo_spec: str, filenames: list[str], model_name: str, *, with_config: bool) -> Path:
    """Path of the first of ``filenames`` in the HF hub cache, downloading it only when online."""
    from huggingface_hub import hf_hub_download

    repo_id, _, revision = repo_spec.partition("@")
    cache = _hf_cache_dir()
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    reason = _offline_reason() or _unreachable_reason(endpoint)
    errors = []
    found = None
    for filename in filenames:
        try:
            found = hf_hub_download(
                repo_id, filename, revision=revision or None, cache_dir=cache, local_files_only=reason is not None,
            )
            break
        except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
            errors.append(f"{filename}: {first_line(exc)}")
    if found is None:
        why = reason or "download failed"
        raise PretrainedWeightsUnavailable(
            f"pretrained weights for {model_name!r} (Hugging Face hub model {repo_id!r}, file "
            f"{' or '.join(filenames)}) are not available: {why}, and they are not in the Hugging Face hub cache "
            f"{cache} (looked up in $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub). "
            f"To use them: on a machine with network run `hf download {repo_id}` (huggingface_hub's CLI; or "
            f"`python -c \"from huggingface_hub import snapshot_download; snapshot_download('{repo_id}')\"`) and copy "
            f"that cache here (point HF_HOME at it), or download the model folder and pass its path: "
            f"--pretrained /path/to/folder (a .safetensors or .pt state dict also works). {_NONE_HINT}"
            + ("" if reason else f" [details: {'; '.join(errors)}]")
        )
    if with_config:
        try:
            hf_hub_download(repo_id, "config.json", revision=revision or None, cache_dir=cache, local_files_only=reason is not None)
        except Exception:  # noqa: BLE001 - the weights alone still load (keys and shapes say the rest)
            pass
    return Path(found)


def _url_download(url: str, what: str, model_name: str) -> Path:
    """A torch.hub-style cached file ($TORCH_HOME/hub/checkpoints/<name>), downloaded only when online."""
    fname = os.path.basename(urlparse(url).path)
    path = _torch_checkpoint_dir() / fname
    if path.is_file():
        return path
    reason = _offline_reason() or _unreachable_reason(url)
    failure = None
    if reason is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            match = torch.hub.HASH_REGEX.search(fname)
            torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=True)
            return path
        except Exception as exc:  # noqa: BLE001
            failure = f"download failed ({first_line(exc)})"
    raise PretrainedWeightsUnavailable(
        f"pretrained weights for {model_name!r} ({what}) are not available: {reason or failure}, and "
        f"{fname} is not in the torch hub cache: looked for {path} ($TORCH_HOME/hub/checkpoints; "
        f"TORCH_HOME={os.environ.get('TORCH_HOME', '(unset, default ~/.cache/torch)')}). "
        f"To use them: download {url} on a machine with network and place it at {path}, or pass the file: "
        f"--pretrained /path/to/{fname}. {_NONE_HINT}"
    )


def _torchvision_weights_file(spec: str, model_name: str) -> Path:
    import torchvision

    try:
        weights = torchvision.models.get_weight(spec)
    except Exception as exc:  # noqa: BLE001
        raise PretrainedWeightsUnavailable(f"unknown torchvision weights {spec!r}: {first_line(exc)}. {_NONE_HINT}") from exc
    return _url_download(weights.url, f"torchvision {spec}", model_name)


def _resolve_source(source: str, model_name: str, hf_dir: bool) -> tuple[str, Path]:
    """("dir" | "file", path) for an "hf:<repo>" or "torchvision:<Weights>" source."""
    if source.startswith("hf:"):
        weights = _hf_download(source[3:], ["model.safetensors", "pytorch_model.bin"], model_name, with_config=hf_dir)
        return ("dir", weights.parent) if hf_dir else ("file", weights)
    if source.startswith("torchvision:"):
        return "file", _torchvision_weights_file(source[len("torchvision:"):], model_name)
    raise PretrainedWeightsUnavailable(f"unknown pretrained source {source!r} for {model_name!r}. {_NONE_HINT}")


def _normalise_pretrained(pretrained: Any) -> str | Path:
    """'none' | 'hub' | 'hf:...' | 'torchvision:...' | an existing Path."""
    if pretrained is None or pretrained is False:
        return "none"
    if pretrained is True:
        return "hub"
    if isinstance(pretrained, os.PathLike):
        text = os.fspath(pretrained)
    elif isinstance(pretrained, str):
        text = pretrained.strip()
    else:
        raise TypeError(f"pretrained must be 'none', 'hub', a source or a path, got {type(pretrained).__name__}")
    if not isinstance(pretrained, os.PathLike):
        low = text.lower()
        if low in {"none", "", "random", "scratch"}:
            return "none"
        if low in {"hub", "default", "imagenet"}:
            return "hub"
        if low.startswith(("hf:", "torchvision:")):
            return text
    path = Path(text).expanduser()
    if not path.exists():
        raise PretrainedWeightsUnavailable(
            f"pretrained={text!r}: no such file or directory. pretrained is 'none', 'hub', 'hf:<repo_id>', "
            f"'torchvision:<Weights.NAME>', or a path to a Hugging Face model folder, a .safetensors file or a "
            f".pt/.pth state dict. {_NONE_HINT}"
        )
    return path


# ----------------------------------------------------------------------------- weights: reading


def _torch_load_safe(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"refused to load {path}: it contains pickled Python objects other than tensors and plain "
            f"containers, and ferwild only reads checkpoints with torch.load(..., weights_only=True), which "
            f"never runs code from the file ({first_line(exc)}). Save just the state dict "
            f"(torch.save(model.state_dict(), path)) or convert it to .safetensors where you trust the file. "
            f"{_NONE_HINT}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise PretrainedWeightsUnavailable(f"cannot read {path} as a PyTorch state dict: {first_line(exc)}. {_NONE_HINT}") from exc


def _read_weights_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise PretrainedWeightsUnavailable(f"cannot read {path} as safetensors: {first_line(exc)}. {_NONE_HINT}") from exc
    if path.suffix == ".json" and path.name.endswith(".index.json"):
        index = json.loads(path.read_text())
        merged: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            merged.update(_read_weights_file(path.parent / shard))
        return merged
    return _torch_load_safe(path)


_DIR_WEIGHT_NAMES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)


def _weights_file_in_dir(path: Path) -> Path:
    for name in _DIR_WEIGHT_NAMES:
        if (path / name).is_file():
            return path / name
    candidates = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".pt", ".pth", ".bin"})
    if len(candidates) == 1:
        return candidates[0]
    raise PretrainedWeightsUnavailable(
        f"{path} holds no single weights file (looked for {', '.join(_DIR_WEIGHT_NAMES)} or one "
        f"*.safetensors/*.pt/*.pth/*.bin; found {len(candidates)}). {_NONE_HINT}"
    )


def _normalise_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Unwrap {"state_dict": ...}-style checkpoints, drop non-tensors, strip "module."; keep only
    the backbone of a ferwild checkpoint ("backbone.*", dropping its "head.*")."""
    for _ in range(3):
        if not isinstance(obj, Mapping) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in ("state_dict", "model_state_dict", "model", "module", "net") if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise IncompatibleWeightsError(f"{source} does not hold a state dict (got {type(obj).__name__}). {_NONE_HINT}")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise IncompatibleWeightsError(f"{source} holds no tensors. {_NONE_HINT}")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


_HEAD_PREFIXES = {"fc", "classifier", "head", "heads", "pooler", "last_linear", "logits"}


def _generic_load(backbone: nn.Module, sd: dict[str, torch.Tensor], source: str, model_name: str) -> dict:
    own = backbone.state_dict()
    matched, mismatched, unexpected = {}, [], []
    for key, value in sd.items():
        if key in own:
            if tuple(own[key].shape) == tuple(value.shape):
                matched[key] = value
            else:
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        elif key.split(".", 1)[0] not in _HEAD_PREFIXES:
            unexpected.append(key)
    if not matched:
        raise IncompatibleWeightsError(
            f"none of the {len(sd)} tensors in {source} match {model_name}'s backbone (checkpoint keys like "
            f"{_examples(sd)}; the backbone expects keys like {_examples(own)}). {_NONE_HINT}"
        )
    if mismatched:
        raise IncompatibleWeightsError(
            f"{len(mismatched)} tensors in {source} have other shapes than {model_name}'s backbone: "
            f"{'; '.join(mismatched[:3])}{' ...' if len(mismatched) > 3 else ''}. Is it a checkpoint of another "
            f"architecture? {_NONE_HINT}"
        )
    backbone.load_state_dict(matched, strict=False)
    missing = [k for k in own if k not in matched and not k.endswith("num_batches_tracked")]
    return _report(source, len(matched), missing, unexpected)


def _load_into_backbone(backbone: nn.Module, kind: str, path: Path, model_name: str) -> dict:
    if kind == "dir" and hasattr(backbone, "load_pretrained_directory") and (path / "config.json").is_file():
        return backbone.load_pretrained_directory(path)
    file = _weights_file_in_dir(path) if path.is_dir() else path
    sd = _normalise_state_dict(_read_weights_file(file), str(file))
    if hasattr(backbone, "load_pretrained_state_dict"):
        return backbone.load_pretrained_state_dict(sd, str(file))
    return _generic_load(backbone, sd, str(file), model_name)


# ----------------------------------------------------------------------------- create


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained: str | None = "none",
    image_size: int | None = None,
    id2label: dict[int, str] | None = None,
) -> FERModel:
    """Build ``name`` with a new ``num_classes``-way linear head.

    Args:
        name: a :data:`MODEL_REGISTRY` name or ``timm:<model_name>``.
        num_classes: >= 2.
        pretrained: ``"none"``/``None`` (random init); ``"hub"`` (the entry's standard weights from
            the standard caches: HF hub cache for HF models, $TORCH_HOME for torchvision, timm's
            hub weights; downloaded only when online, else :class:`PretrainedWeightsUnavailable`
            without waiting); ``"hf:<repo_id>"``; ``"torchvision:<Weights.NAME>"``; or a local
            path: a HF model folder, a ``.safetensors`` file or a ``.pt``/``.pth``/``.bin`` state
            dict (read with ``weights_only=True`` only). Weights go into the backbone; the head
            stays new; tensors that do not fit raise :class:`IncompatibleWeightsError`.
        image_size: overrides the entry's default input size (ViT position embeddings are
            built, or resized from a checkpoint, for it; ResNets are size-agnostic).
        id2label: class id -> name for ids ``0..num_classes-1`` (default ``class_<i>``).

    All parameters are trainable.
    """
    num_classes = _check_num_classes(num_classes)
    labels = _check_id2label(id2label, num_classes)
    image_size = _check_image_size(image_size)
    spec = _normalise_pretrained(pretrained)
    if not isinstance(name, str):
        raise _unknown_model(repr(name))
    if name.startswith("timm:"):
        return _create_timm(name, num_classes, spec, image_size, labels)
    if name not in MODEL_REGISTRY:
        raise _unknown_model(name)
    entry = MODEL_REGISTRY[name]
    size = image_size or entry.default_input_size
    builder = _BUILDERS[name]
    is_hf = entry.pretrained_source.startswith("hf:")

    # Find the weights before building anything, so a missing file fails fast.
    source: tuple[str, Path] | None = None
    if spec == "hub":
        if entry.pretrained_source in ("", "none"):
            raise PretrainedWeightsUnavailable(
                f"{name!r} has no hub weights (pretrained_source 'none'): it is random-init only unless you give "
                f"a local checkpoint (--pretrained /path/to/weights.safetensors or .pt, or a model folder). {_NONE_HINT}"
            )
        source = _resolve_source(entry.pretrained_source, name, hf_dir=is_hf)
    elif isinstance(spec, str) and spec != "none":
        source = _resolve_source(spec, name, hf_dir=spec.startswith("hf:"))
    elif isinstance(spec, Path):
        source = ("dir" if spec.is_dir() else "file", spec)

    backbone = builder(image_size=size)
    model = FERModel(name, backbone, _feature_dim(backbone, size), num_classes,
                     Preprocessing(size, entry.mean, entry.std), labels)
    if source is not None:
        model.pretrained_report = _load_into_backbone(backbone, source[0], source[1], name)
    return model


def _create_timm(name: str, num_classes: int, spec: str | Path, image_size: int | None, labels: dict[int, str]) -> FERModel:
    import timm

    arch = name[len("timm:"):]
    if not arch or not timm.is_model(arch):
        raise _unknown_model(name, extra=f" (timm has no model {arch!r})")
    cfg = timm.models.get_pretrained_cfg(arch)
    cfg_dict = cfg.to_dict() if cfg is not None else {}
    kwargs: dict[str, Any] = {"num_classes": 0}
    if image_size is not None and cfg_dict.get("fixed_input_size", False):
        kwargs["img_size"] = image_size

    state_dict = None
    source_text = None
    if spec == "hub":
        if cfg_dict.get("hf_hub_id"):
            fnames = [cfg_dict["hf_hub_filename"]] if cfg_dict.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
            file = _hf_download(cfg_dict["hf_hub_id"], fnames, name, with_config=False)
        elif cfg_dict.get("url"):
            file = _url_download(cfg_dict["url"], f"timm {arch}", name)
        else:
            raise PretrainedWeightsUnavailable(f"timm has no pretrained weights for {arch!r}. {_NONE_HINT}")
    elif isinstance(spec, str) and spec != "none":
        file = _resolve_source(spec, name, hf_dir=False)[1]
    elif isinstance(spec, Path):
        file = _weights_file_in_dir(spec) if spec.is_dir() else spec
    else:
        file = None
    if file is not None:
        source_text = str(file)
        state_dict = _normalise_state_dict(_read_weights_file(file), source_text)

    if state_dict is None:
        backbone = timm.create_model(arch, pretrained=False, **kwargs)
        report = None
    else:
        try:
            backbone = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"state_dict": state_dict}, **kwargs)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise IncompatibleWeightsError(f"the weights in {source_text} do not fit timm {arch!r}: {first_line(exc)}. {_NONE_HINT}") from exc
        for attr in ("pretrained_cfg", "default_cfg"):  # don't keep a second copy of the weights alive
            pcfg = getattr(backbone, attr, None)
            if isinstance(pcfg, dict):
                pcfg.pop("state_dict", None)
        report = _report(source_text, len(backbone.state_dict()), [], [])
    pcfg = dict(getattr(backbone, "pretrained_cfg", None) or cfg_dict)
    size = image_size or int(pcfg.get("input_size", (3, 224, 224))[-1])
    prep = Preprocessing(size, pcfg.get("mean", IMAGENET_MEAN), pcfg.get("std", IMAGENET_STD))
    dim = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    model = FERModel(name, backbone, int(dim), num_classes, prep, labels)
    model.pretrained_report = report
    return model


def model_from_config(config: dict) -> FERModel:
    """Rebuild (random init) the architecture described by :meth:`FERModel.config`
    (a :class:`FEREnsemble` when it says ``"ensemble": <members>``)."""
    if config.get("ensemble"):
        members = int(config["ensemble"])
        member = {k: v for k, v in config.items() if k not in ("ensemble", "tta", "temperature")}
        model = FEREnsemble([model_from_config(member) for _ in range(members)])
        return model.set_tta(config.get("tta", "none")).set_temperature(config.get("temperature", 1.0))
    missing = [k for k in ("name", "num_classes", "image_size") if k not in config]
    if missing:
        raise ValueError(f"model config lacks {', '.join(missing)}: {config}")
    id2label = config.get("id2label")
    model = create_model(
        config["name"], int(config["num_classes"]), pretrained="none", image_size=int(config["image_size"]),
        id2label={int(k): v for k, v in id2label.items()} if id2label is not None else None,
    )
    if config.get("preprocessing"):
        prep = Preprocessing.from_dict(config["preprocessing"])
        if prep.input_size != model.preprocessing.input_size:
            raise ValueError(f"config preprocessing input_size {prep.input_size} != image_size {config['image_size']}")
        model.preprocessing = prep
    if "num_features" in config and int(config["num_features"]) != model.num_features:
        raise ValueError(
            f"{config['name']} now has {model.num_features}-d features, the config says {config['num_features']} "
            "(a different library version?)"
        )
    return model.set_tta(config.get("tta", "none")).set_temperature(config.get("temperature", 1.0))


def _param_count(name: str) -> tuple[int, int]:
    """(parameters of backbone + 6-way head, feature dim), built on the meta device (no memory, no init cost)."""
    if name not in _PARAM_COUNT_CACHE:
        entry, builder = MODEL_REGISTRY[name], _BUILDERS[name]
        try:
            with torch.device("meta"):
                backbone = builder(image_size=entry.default_input_size)
                dim = _feature_dim(backbone, entry.default_input_size)
        except Exception:  # noqa: BLE001 - a builder that cannot live on meta: build it for real
            backbone = builder(image_size=entry.default_input_size)
            dim = _feature_dim(backbone, entry.default_input_size)
        _PARAM_COUNT_CACHE[name] = (count_parameters(backbone) + dim * 6 + 6, dim)
    return _PARAM_COUNT_CACHE[name]


def list_models() -> list[dict]:
    """One dict per registry entry: name, input_size, params (backbone + a 6-way head), num_features,
    pretrained_source, description. ``timm:<model_name>`` names are accepted besides these."""
    rows = []
    for name, entry in MODEL_REGISTRY.items():
        params, dim = _param_count(name)
        rows.append({
            "name": name, "input_size": entry.default_input_size, "params": params, "num_features": dim,
            "pretrained_source": entry.pretrained_source, "description": entry.description,
        })
    return rows


# ----------------------------------------------------------------------------- built-ins

register_model(
    ModelEntry("vit_b16", "ViT-B/16 (transformers); hub: ImageNet-21k",
               224, HALF, HALF, "hf:google/vit-base-patch16-224-in21k"),
    _vit_builder(hidden=768, layers=12, heads=12, mlp=3072, patch=16),
)
register_model(
    ModelEntry("resnet50", "ResNet-50 (torchvision); hub: ImageNet-1k V2",
               224, IMAGENET_MEAN, IMAGENET_STD, "torchvision:ResNet50_Weights.IMAGENET1K_V2"),
    _torchvision_resnet_builder("resnet50", 2048),
)
register_model(
    ModelEntry("resnet18", "ResNet-18 (torchvision); hub: ImageNet-1k",
               224, IMAGENET_MEAN, IMAGENET_STD, "torchvision:ResNet18_Weights.IMAGENET1K_V1"),
    _torchvision_resnet_builder("resnet18", 512),
)
register_model(
    ModelEntry("vit_tiny", "small ViT (transformers, 192-d, 4 layers, patch 8) for CPU runs", 64, HALF, HALF, "none"),
    _vit_builder(hidden=192, layers=4, heads=3, mlp=768, patch=8),
)
register_model(
    ModelEntry("cnn_small", "~100k-parameter CNN for 48-64 px CPU demos and tests",
               48, HALF, HALF, "none"),
    _small_cnn_builder,
)
register_model(
    ModelEntry("fer_vgg", "VGG-style CNN for 48 px faces (~2.5M parameters); the shipped FER2013 model's architecture",
               48, HALF, HALF, "none"),
    _fer_vgg_builder,
)
register_model(
    ModelEntry("fer_vgg_half", "fer_vgg at half width (16-128 channels, same depth, ~0.78M parameters): a "
               "distillation student at a quarter of fer_vgg's cost", 48, HALF, HALF, "none"),
    _fer_vgg_half_builder,
)
register_model(
    ModelEntry("fer_vgg_tiny", "fer_vgg at demo size (16-128 channels, ~0.43M parameters): learns in minutes on a CPU",
               48, HALF, HALF, "none"),
    _fer_vgg_tiny_builder,
)
