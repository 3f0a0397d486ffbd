from collections import Counter

import pytest

from ferwild.data.balance import balance_plan, class_count_figure, parse_balance


def test_balance_plan_reaches_max_and_cycles_sources():
    labels = ["a"] * 10 + ["b"] * 3 + ["c"] * 1
    plan = balance_plan(labels, "max", seed=0)
    added = Counter(labels[p] for p, _ in plan)
    assert added == {"b": 7, "c": 9}
    # every source of b is reused at most ceil(7/3) = 3 times
    assert max(Counter(p for p, _ in plan if labels[p] == "b").values()) == 3
    assert balance_plan(labels, "max", seed=0) == plan
    assert balance_plan(labels, "max", seed=1) != plan


def test_balance_plan_target_count_never_removes():
    labels = ["a"] * 10 + ["b"] * 3
    plan = balance_plan(labels, 5, seed=0)
    assert Counter(labels[p] for p, _ in plan) == {"b": 2}


def test_parse_balance():
    assert parse_balance("none") is None and parse_balance("max") == "max" and parse_balance("12") == 12
    with pytest.raises(ValueError):
        parse_balance("lots")


def test_class_count_figure(tmp_path):
    class_count_figure({"a": 3, "b": 1}, {"a": 3, "b": 3}, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
