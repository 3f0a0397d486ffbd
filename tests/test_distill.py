"""Distillation: slimming a trained fer_vgg into a narrower student, and training on a teacher's
probabilities (optim.targets: teacher)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ferwild.config import ConfigError, RunConfig
from ferwild.distill import slim_fer_vgg, slim_state_dict
from ferwild.models import FERVGG, FERModel, create_model
from ferwild.preprocessing import Preprocessing
from ferwild.runs import RunError


def _vgg(widths, seed=0):
    torch.manual_seed(seed)
    model = FERModel("x", FERVGG(widths=widths), 256, 7, Preprocessing(48, (0.5,) * 3, (0.5,) * 3),
                     dict(enumerate("abcdefg")))
    # trained-looking BatchNorm: scales of different sizes, non-trivial running statistics
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.weight.data = torch.randn_like(m.weight)
            m.running_mean.data = torch.randn_like(m.running_mean)
            m.running_var.data = torch.rand_like(m.running_var) + 0.5
    return model.eval()


def test_slimming_to_the_same_widths_is_the_same_network():
    teacher = _vgg((32, 64, 128, 256))
    student = _vgg((32, 64, 128, 256), seed=1)
    student.load_state_dict(slim_state_dict(teacher, student), strict=True)
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(student(x), teacher(x), atol=1e-5)


def test_slimming_keeps_the_channels_with_the_largest_batchnorm_scale():
    teacher, student = _vgg((32, 64, 128, 256)), _vgg((16, 32, 64, 128), seed=1)
    weights = slim_state_dict(teacher, student)
    student.load_state_dict(weights, strict=True)
    conv0, bn0 = teacher.backbone.body[0], teacher.backbone.body[1]
    keep = bn0.weight.abs().topk(16).indices.sort().values
    assert torch.equal(weights["backbone.body.0.weight"], conv0.weight[keep])
    # the next conv's inputs are the kept channels, in the same order
    conv1 = teacher.backbone.body[3]
    keep1 = teacher.backbone.body[4].weight.abs().topk(16).indices.sort().values
    assert torch.equal(weights["backbone.body.3.weight"], conv1.weight[keep1][:, keep])
    assert weights["head.weight"].shape == (7, 256)


def test_slimming_refuses_a_wider_or_deeper_student():
    teacher = _vgg((16, 32, 64, 128))
    with pytest.raises(ValueError, match="wider"):
        slim_state_dict(teacher, _vgg((32, 64, 128, 256)))
    deeper = FERModel("x", FERVGG(widths=(16, 32, 64, 128), depths=(3, 3, 3, 3)), 256, 7,
                      Preprocessing(48, (0.5,) * 3, (0.5,) * 3), dict(enumerate("abcdefg")))
    with pytest.raises(ValueError, match="keeps the depth"):
        slim_state_dict(teacher, deeper)


def test_slim_fer_vgg_from_the_shipped_default_loads_as_the_students_start(tmp_path):
    path = slim_fer_vgg("ferwild:ferplus_vgg", "fer_vgg_half", tmp_path / "init.safetensors")
    student = create_model("fer_vgg_half", 7, pretrained=str(path))
    report = student.pretrained_report
    assert report["missing"] == [] and report["loaded"] == len(student.backbone.state_dict())


def test_teacher_targets_config_checks():
    with pytest.raises(ConfigError, match="needs optim.teacher"):
        RunConfig.load(None, ["optim.targets=teacher"])
    with pytest.raises(ConfigError, match="needs optim.targets teacher"):
        RunConfig.load(None, ["optim.teacher=p.parquet"])
    with pytest.raises(ConfigError, match="teacher_weight"):
        RunConfig.load(None, ["optim.targets=teacher", "optim.teacher=p.parquet", "optim.teacher_weight=1.5"])


def test_training_on_a_teacher_fits_its_mixed_targets(tmp_path, tiny_run):
    from ferwild.data.prepared import PreparedDataset
    from ferwild.evaluate import evaluate_run
    from ferwild.train import _load_training_data, fit, teacher_targets

    run, prep, _ = tiny_run
    evaluate_run(run, prep, "train", tmp_path / "teacher", device="cpu")
    teacher_file = tmp_path / "teacher" / "predictions.parquet"
    config = RunConfig.load(None, [f"data.path={prep}", "model.name=cnn_small", "model.pretrained=none",
                                   "model.image_size=32", "train.batch_size=32", "train.epochs=1",
                                   "optim.targets=teacher", f"optim.teacher={teacher_file}",
                                   "optim.teacher_weight=0.75", "data.use_augmented_rows=false"])
    data = _load_training_data(config)
    rows = PreparedDataset(prep).rows("train", include_augmented=False)
    teacher = pd.read_parquet(teacher_file).set_index("row_id")
    names = data.label_names
    expected_teacher = teacher.loc[rows["row_id"], [f"prob_{n}" for n in names]].to_numpy()
    onehot = np.eye(len(names))[rows["label"].map({n: i for i, n in enumerate(names)}).to_numpy()]
    np.testing.assert_allclose(data.train_set.votes.numpy(), 0.75 * expected_teacher + 0.25 * onehot, atol=1e-5)
    fit(config, tmp_path / "student", log=lambda message: None)
    assert (tmp_path / "student" / "checkpoints" / "BEST").is_file()

    # rows the teacher never saw (the balancing rows) are a clear error, not a silent fallback
    with pytest.raises(RunError, match="no prediction for"):
        teacher_targets(teacher_file, PreparedDataset(prep).rows("val"), names, 0.5)
    with pytest.raises(RunError, match="no file"):
        teacher_targets(tmp_path / "missing.parquet", rows, names, 0.5)


def test_pretrained_head_keeps_a_checkpoints_answers_and_checks_its_labels(tmp_path):
    import json

    from safetensors.torch import save_file

    from ferwild.train import load_pretrained_head

    trained = _vgg((16, 32, 64, 128))
    folder = tmp_path / "checkpoints" / "final"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "state.json").write_text(json.dumps({"label_names": list("abcdefg")}))
    student = create_model("fer_vgg_half", 7, pretrained=str(folder / "model.safetensors"),
                           id2label=dict(enumerate("abcdefg"))).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert not torch.allclose(student(x), trained(x), atol=1e-4)  # backbone only: a fresh head
        load_pretrained_head(student, folder / "model.safetensors", list("abcdefg"))
        assert torch.allclose(student(x), trained(x), atol=1e-4)  # now the checkpoint's own answers
    with pytest.raises(ConfigError, match="head reads"):
        load_pretrained_head(student, folder / "model.safetensors", list("gfedcba"))
    (folder / "state.json").unlink()
    with pytest.raises(ConfigError, match="which class"):
        load_pretrained_head(student, folder / "model.safetensors", list("abcdefg"))
    wide = create_model("fer_vgg", 5, pretrained="none", id2label=dict(enumerate("abcde")))
    (folder / "state.json").write_text(json.dumps({"label_names": list("abcdefg")}))
    with pytest.raises(ConfigError, match="does not fit|head reads"):
        load_pretrained_head(wide, folder / "model.safetensors", list("abcdefg"))
    with pytest.raises(ConfigError, match="model.safetensors"):
        load_pretrained_head(student, tmp_path / "missing.pt", list("abcdefg"))
