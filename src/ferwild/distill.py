"""Start a narrower student from a trained ``fer_vgg``: its strongest channels, by network slimming.

Distillation in ferwild is ordinary training with other targets: ``ferwild evaluate TEACHER
--split train`` writes the teacher's probabilities, and ``optim.targets: teacher`` fits them
(:func:`ferwild.train.teacher_targets`). What a student gains from a warm start is here:
:func:`slim_fer_vgg` keeps, in every conv layer of a trained :class:`~ferwild.models.FERVGG`,
the output channels whose BatchNorm scale is largest (network slimming, Liu et al., ICCV 2017),
and cuts the next layer's inputs to match, so the student (e.g. ``fer_vgg_half``) begins from
the teacher's own features instead of from random weights::

    slim_fer_vgg("ferwild:ferplus_vgg", "fer_vgg_half", "student_init.safetensors")
    # then: ferwild train recipes/ferplus_student.yaml model.pretrained=student_init.safetensors ...
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ferwild.models import FERVGG, FERModel, create_model
from ferwild.runs import load_run

__all__ = ["slim_fer_vgg", "slim_state_dict"]


def _conv_bn_pairs(body: nn.Sequential) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    layers = list(body)
    return [(m, layers[i + 1]) for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]


def slim_state_dict(teacher: FERModel, student: FERModel) -> dict[str, torch.Tensor]:
    """The student's state dict (``backbone.*`` and ``head.*``) cut from the teacher's weights.

    Both must be :class:`FERVGG` models with the same depths and input size; every student
    layer must be at most as wide as the teacher's. Each conv keeps the output channels with
    the largest ``|gamma|`` of the BatchNorm after it; the neck's linear layer keeps the inputs
    that come from kept channels (all its outputs when the widths match).
    """
    if not (isinstance(teacher.backbone, FERVGG) and isinstance(student.backbone, FERVGG)):
        raise ValueError("slimming needs two fer_vgg-family models")
    src, dst = _conv_bn_pairs(teacher.backbone.body), _conv_bn_pairs(student.backbone.body)
    if len(src) != len(dst):
        raise ValueError(f"teacher has {len(src)} conv layers, student {len(dst)}: slimming keeps the depth")
    out: dict[str, torch.Tensor] = {}
    names = {id(m): n for n, m in student.backbone.named_modules()}
    keep_in = torch.arange(3)
    with torch.no_grad():
        for (conv_t, bn_t), (conv_s, bn_s) in zip(src, dst):
            if conv_s.out_channels > conv_t.out_channels:
                raise ValueError(f"student layer {names[id(conv_s)]} is wider than the teacher's")
            keep_out = bn_t.weight.abs().topk(conv_s.out_channels).indices.sort().values
            out[f"backbone.{names[id(conv_s)]}.weight"] = conv_t.weight[keep_out][:, keep_in].clone()
            for key in ("weight", "bias", "running_mean", "running_var"):
                out[f"backbone.{names[id(bn_s)]}.{key}"] = getattr(bn_t, key)[keep_out].clone()
            out[f"backbone.{names[id(bn_s)]}.num_batches_tracked"] = bn_t.num_batches_tracked.clone()
            keep_in = keep_out
        lin_t = next(m for m in teacher.backbone.neck if isinstance(m, nn.Linear))
        lin_s = next(m for m in student.backbone.neck if isinstance(m, nn.Linear))
        bn1_t = next(m for m in teacher.backbone.neck if isinstance(m, nn.BatchNorm1d))
        grid = lin_t.in_features // src[-1][0].out_channels
        weight = lin_t.weight.reshape(lin_t.out_features, -1, grid)[:, keep_in].reshape(lin_t.out_features, -1)
        keep_hidden = bn1_t.weight.abs().topk(lin_s.out_features).indices.sort().values
        if tuple(weight[keep_hidden].shape) != tuple(lin_s.weight.shape):
            raise ValueError(f"neck {tuple(weight[keep_hidden].shape)} does not fit the student's {tuple(lin_s.weight.shape)}")
        neck_names = {id(m): n for n, m in student.backbone.named_modules()}
        bn1_s = next(m for m in student.backbone.neck if isinstance(m, nn.BatchNorm1d))
        out[f"backbone.{neck_names[id(lin_s)]}.weight"] = weight[keep_hidden].clone()
        for key in ("weight", "bias", "running_mean", "running_var"):
            out[f"backbone.{neck_names[id(bn1_s)]}.{key}"] = getattr(bn1_t, key)[keep_hidden].clone()
        out[f"backbone.{neck_names[id(bn1_s)]}.num_batches_tracked"] = bn1_t.num_batches_tracked.clone()
        out["head.weight"] = teacher.head.weight[:, keep_hidden].clone()
        out["head.bias"] = teacher.head.bias.clone()
    return out


def slim_fer_vgg(teacher_run: str | os.PathLike, student_name: str, out_path: str | os.PathLike) -> Path:
    """Write a ``.safetensors`` start for ``student_name`` (a registered fer_vgg-family model)
    cut from ``teacher_run``'s best checkpoint (a run directory or ``ferwild:<name>``); use it
    as the student's ``model.pretrained``. Returns the path."""
    from safetensors.torch import save_file

    teacher, state = load_run(teacher_run)
    student = create_model(student_name, teacher.num_classes, image_size=teacher.preprocessing.input_size,
                           id2label=teacher.id2label)
    weights = slim_state_dict(teacher.float(), student)
    missing = sorted(set(student.state_dict()) - set(weights))
    if missing:
        raise ValueError(f"slimming left student tensors unset: {missing[:3]}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().float() if v.is_floating_point() else v.contiguous() for k, v in weights.items()},
              out, metadata={"format": "pt", "ferwild": "1", "slimmed_from": str(teacher_run)})
    return out
