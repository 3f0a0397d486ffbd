"""Precise BN: a trained model's BatchNorm statistics re-estimated on clean faces, nothing else changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ferwild.data.prepared import PreparedDataset
from ferwild.precise_bn import has_batchnorm, precise_bn_run, update_bn_stats
from ferwild.runs import load_run


def test_update_bn_stats_is_the_plain_average_and_leaves_weights_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    model[1].running_mean.fill_(5.0)  # stale statistics, as after training on other images
    model[1].running_var.fill_(9.0)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(37, 3, 8, 8)).astype(np.float32)
    update_bn_stats(model, x, batch_size=10)  # 10, 10, 10, 7: the average over all batches, not the last ones'
    with torch.no_grad():
        h = model[0](torch.from_numpy(x))
    per_batch = [h[i:i + 10] for i in range(0, 37, 10)]
    mean = sum(b.mean((0, 2, 3)) for b in per_batch) / len(per_batch)  # each batch's mean, averaged
    np.testing.assert_allclose(model[1].running_mean.numpy(), mean.numpy(), rtol=1e-4, atol=1e-5)
    assert not model.training
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_update_bn_stats_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="no BatchNorm"):
        update_bn_stats(nn.Sequential(nn.Conv2d(3, 4, 3)), np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="at least 2"):
        update_bn_stats(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), np.zeros((1, 3, 8, 8), np.float32))


def test_precise_bn_run_is_a_run_every_command_reads(tiny_run, tmp_path):
    run, prep, _ = tiny_run
    before, _ = load_run(run)
    assert has_batchnorm(before)
    out = precise_bn_run(run, prep, tmp_path / "pbn", faces=50, seed=1)
    after, state = load_run(out)
    record = json.loads((out / "checkpoints" / "final" / "state.json").read_text())["precise_bn"]
    assert record["faces"] == 50 and record["split"] == "train" and state["label_names"] == PreparedDataset(prep).label_names
    stats = [k for k in before.state_dict() if k.endswith("running_mean")]
    assert stats and any(not torch.allclose(before.state_dict()[k], after.state_dict()[k]) for k in stats)
    for k, v in before.state_dict().items():  # every weight as trained
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, after.state_dict()[k]), k
    # the same draw gives the same statistics
    again, _ = load_run(precise_bn_run(run, prep, tmp_path / "pbn2", faces=50, seed=1))
    for k in stats:
        assert torch.equal(again.state_dict()[k], after.state_dict()[k])


def test_an_ensemble_gets_each_members_statistics():
    from ferwild.models import FEREnsemble, create_model

    members = [create_model("cnn_small", 3, pretrained="none", image_size=32, id2label=dict(enumerate("abc")))
               for _ in range(2)]
    ensemble = FEREnsemble(members).eval()
    x = np.random.default_rng(0).normal(0.5, 2.0, size=(16, 3, 32, 32)).astype(np.float32)
    update_bn_stats(ensemble, x, batch_size=8)
    for member in ensemble.members:
        bn = next(m for m in member.modules() if isinstance(m, nn.BatchNorm2d))
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))  # estimated, not the init
    assert not ensemble.training
