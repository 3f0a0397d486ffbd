"""Where jobs run (``ferwild.parallel``): inline, local processes and Ray give the same results."""

from __future__ import annotations

import os

import pytest

from ferwild.parallel import RayUnavailable, ray_session, run_jobs


def _square_and_threads(job: dict) -> tuple[int, str]:
    """A job: its value squared, and the OpenMP thread count the worker saw."""
    return job["x"] ** 2, os.environ.get("OMP_NUM_THREADS", "")


@pytest.mark.parametrize("workers,ray_address", [(1, None), (2, None), (2, "local")],
                         ids=["inline", "processes", "ray"])
def test_run_jobs_gives_every_result_and_reports_progress(workers, ray_address):
    if ray_address:
        pytest.importorskip("ray")
        import sys

        from ray import cloudpickle

        # a test module is not importable on Ray's workers: send its functions by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    jobs = [{"x": x} for x in range(7)]
    seen = []
    results = run_jobs(_square_and_threads, jobs, workers, lambda done, total: seen.append((done, total)),
                       ray_address=ray_address)
    assert sorted(r[0] for r in results) == [x * x for x in range(7)]
    assert seen[0] == (0, 7) and seen[-1] == (7, 7) and len(seen) == 8
    if workers > 1:  # a worker is one core's worth of work
        assert {r[1] for r in results} == {"1"}


def test_an_unreachable_ray_is_one_clear_error():
    pytest.importorskip("ray")
    with pytest.raises(RayUnavailable, match="cannot connect to Ray at 'ray://127.0.0.1:1'"):
        with ray_session("ray://127.0.0.1:1"):
            pass
