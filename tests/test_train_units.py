"""Unit tests of the training pieces that need no model."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from ferwild.data.loader import BatchTransform, EpochBatchSampler
from ferwild.runs import RunError
from ferwild.train import EpochScheduler, F1DropScheduler, class_weights, confusion_matrix_torch, metrics_from_confusion


def test_class_weights_formula_and_missing_class():
    w = class_weights(np.array([0, 0, 0, 1]), 2)
    torch.testing.assert_close(w, torch.tensor([4 / (2 * 3), 4 / (2 * 1)]))
    assert torch.all(class_weights(np.array([0, 1]), 2, "none") == 1)
    torch.testing.assert_close(class_weights(np.array([0, 0, 0, 1]), 2, "sqrt"),
                               torch.tensor([(4 / 6) ** 0.5, 2 ** 0.5]))
    with pytest.raises(RunError, match="no training rows"):
        class_weights(np.array([0, 0]), 3)


def test_f1_drop_rule_is_the_studys():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    s = F1DropScheduler(opt, threshold=0.10, factor=0.8)
    assert not s.step(0.80)              # first epoch: nothing to compare
    assert not s.step(0.73)              # -8.75 %: within 10 %
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert s.step(0.60)                  # -17.8 %: decay
    assert opt.param_groups[0]["lr"] == pytest.approx(0.8e-3)
    restored = F1DropScheduler(opt)
    restored.load_state_dict(s.state_dict())
    assert restored.previous == 0.60


def test_cosine_with_warmup_sets_each_epochs_rate():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    s = EpochScheduler(opt, "cosine", epochs=6, warmup_epochs=2)
    rates = [opt.param_groups[0]["lr"]]
    for _ in range(5):
        s.step()
        rates.append(opt.param_groups[0]["lr"])
    # warm-up 0.05, 0.1; then cosine over the 4 remaining epochs, starting at the base rate
    expected = [0.05, 0.1] + [0.05 * (1 + np.cos(np.pi * k / 4)) for k in range(4)]
    assert rates == pytest.approx(expected)
    # a resumed scheduler continues where the saved one was
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    resumed = EpochScheduler(opt2, "cosine", epochs=6, warmup_epochs=2)
    resumed.load_state_dict(s.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(rates[-1])
    # no warm-up: the plain cosine of before (first epoch at the base rate)
    opt3 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    plain = EpochScheduler(opt3, "cosine", epochs=4)
    assert opt3.param_groups[0]["lr"] == pytest.approx(0.1)
    plain.step()
    assert opt3.param_groups[0]["lr"] == pytest.approx(0.05 * (1 + np.cos(np.pi / 4)))


def test_metrics_from_confusion_match_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    p[:100] = y[:100]
    cm = confusion_matrix_torch(torch.as_tensor(y), torch.as_tensor(p), 6)  # class 5 absent
    acc, f1 = metrics_from_confusion(cm)
    assert acc == pytest.approx((y == p).mean())
    assert f1 == pytest.approx(f1_score(y, p, average="macro", labels=range(6), zero_division=0))


def test_sampler_shards_cover_everything_and_resume_skips():
    full = np.concatenate(list(EpochBatchSampler(10, 3, seed=1, epoch=2)))
    assert sorted(full) == list(range(10))
    again = np.concatenate(list(EpochBatchSampler(10, 3, seed=1, epoch=2)))
    np.testing.assert_array_equal(full, again)
    assert not np.array_equal(full, np.concatenate(list(EpochBatchSampler(10, 3, seed=1, epoch=3))))
    ranks = [np.concatenate(list(EpochBatchSampler(10, 2, seed=1, epoch=0, rank=r, world_size=3))) for r in range(3)]
    assert {len(r) for r in ranks} == {4}                       # padded to equal length
    assert set(np.concatenate(ranks)) == set(range(10))
    skipped = list(EpochBatchSampler(10, 3, seed=1, epoch=2, skip_batches=2))
    np.testing.assert_array_equal(np.concatenate(skipped), full[6:])


def test_batch_transform_grey_to_rgb_resize_normalise():
    images = torch.full((2, 1, 48, 48), 255, dtype=torch.uint8)
    out = BatchTransform(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(images)
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out, torch.full_like(out, 2.0))  # (1 - 0.5) / 0.25
    gen = torch.Generator().manual_seed(0)
    aug = BatchTransform(32, (0, 0, 0), (1, 1, 1), train=True, generator=gen)
    x = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    a = aug(x)
    gen.manual_seed(0)
    torch.testing.assert_close(aug(x), a)
    with pytest.raises(ValueError):
        aug(x.float())


def test_stratified_subset_is_fixed_per_class_and_validated():
    import pandas as pd

    from ferwild.config import ConfigError, RunConfig
    from ferwild.train import stratified_subset

    rows = pd.DataFrame({"label": ["a"] * 100 + ["b"] * 10 + ["c"] * 1, "x": range(111)})
    half = stratified_subset(rows, 0.5)
    assert half["label"].value_counts().to_dict() == {"a": 50, "b": 5, "c": 1}   # every class kept
    assert half.index.is_monotonic_increasing                                    # manifest order
    assert half.equals(stratified_subset(rows, 0.5))                             # the same faces each run
    assert not half.equals(stratified_subset(rows, 0.5, seed=1))
    assert len(stratified_subset(rows, 1.0)) == 111
    for bad in (0, 1.5, -0.1, "half"):
        with pytest.raises(ConfigError, match="data.train_fraction"):
            RunConfig.load(None, [f"data.train_fraction={bad}"])
    assert RunConfig.load(None, ["data.train_fraction=0.25"]).data.train_fraction == 0.25
