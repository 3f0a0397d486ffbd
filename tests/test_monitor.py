"""ferwild.audit.monitor on its own: batch statistics and the retrain rule, without a model."""

import numpy as np
import pandas as pd
import pytest

from ferwild.audit.model_outputs import ModelOutputs
from ferwild.audit.monitor import MonitorConfig, _with_retrain, batch_statistics

NAMES = ["a", "b", "c"]


def _outputs(rng: np.random.Generator, n: int, shift: float, mix: list[float]) -> ModelOutputs:
    labels = rng.choice(3, size=n, p=mix)
    features = rng.normal(size=(n, 8)).astype(np.float32) + np.float32(shift)
    probs = np.full((n, 3), 0.1, np.float32)
    probs[np.arange(n), labels] = 0.8
    return ModelOutputs(pd.DataFrame({"path": [f"{i}.png" for i in range(n)]}), features, probs,
                        np.full(n, -1), NAMES)


@pytest.fixture(scope="module")
def reference():
    return _outputs(np.random.default_rng(0), 300, 0.0, [1 / 3] * 3)


def test_a_batch_like_the_reference_is_not_flagged(reference):
    config = MonitorConfig(n_permutations=200)
    stats = batch_statistics(reference, _outputs(np.random.default_rng(1), 200, 0.0, [1 / 3] * 3), config)
    assert not stats["flagged"] and stats["p_value"] > config.alpha and stats["domain_auc"] < config.auc_threshold
    assert stats["n"] == 200 and stats["predicted_mix_tv"] < 0.1
    assert sum(stats[f"pred_{n}"] for n in NAMES) == pytest.approx(1.0)


def test_a_shifted_batch_is_flagged_and_its_class_mix_measured(reference):
    config = MonitorConfig(n_permutations=200)
    stats = batch_statistics(reference, _outputs(np.random.default_rng(2), 200, 1.0, [0.8, 0.1, 0.1]), config)
    assert stats["flagged"] and stats["p_value"] < config.alpha and stats["domain_auc"] > 0.8
    assert stats["pred_a"] > 0.7 and stats["predicted_mix_tv"] > 0.3
    # a significant but small shift is not flagged when the AUC threshold is not reached
    strict = MonitorConfig(n_permutations=200, auc_threshold=0.99)
    assert not batch_statistics(reference, _outputs(np.random.default_rng(2), 200, 1.0, [0.8, 0.1, 0.1]),
                                strict)["flagged"]


def test_retrain_needs_patience_consecutive_flags():
    history = pd.DataFrame({"batch": list("abcdef"), "flagged": ["True", "False", "True", "True", "1", "False"]})
    assert _with_retrain(history, 1)["retrain"].tolist() == [True, False, True, True, True, False]
    assert _with_retrain(history, 2)["retrain"].tolist() == [False, False, False, True, True, False]
    assert _with_retrain(history, 3)["retrain"].tolist() == [False, False, False, False, True, False]
    with pytest.raises(ValueError, match="patience"):
        MonitorConfig(patience=0)
