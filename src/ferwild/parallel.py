"""Where independent jobs run: inline, in local worker processes, or as Ray tasks on a cluster.

One home for the three ways ferwild spreads work that grows with the data:

- :func:`run_jobs` runs plain-data jobs (``prepare``'s chunks to decode, align and cache, its
  balancing blocks, ``rebalance``'s blocks) inline, in a spawn-context process pool, or as Ray
  tasks (``ray_address``), each worth one core (torch and OpenMP at one thread);
- :func:`ray_session` connects to (or starts) Ray for ``study``, ``prepare`` and ``predict``:
  ``"local"`` starts a private Ray on this machine, ``"auto"`` joins the cluster this machine
  belongs to, ``"ray://HOST:10001"`` is a Ray Client connection to a remote head node.

Jobs must be idempotent and commit their output atomically (``ferwild.files``): Ray retries a
task whose worker died, and a rerun after a killed driver skips what was committed. On a
cluster, the output folder must be on storage every node sees, under the same path.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_IN_WORKER = False


class RayUnavailable(RuntimeError):
    """``ray_address`` was given but Ray is not installed or cannot be reached."""


def in_worker() -> bool:
    """True inside a worker started by :func:`run_jobs` (which should use one thread)."""
    return _IN_WORKER


def worker_init() -> None:
    """Make this process one core's worth of work: OpenMP and torch at one thread."""
    global _IN_WORKER
    _IN_WORKER = True
    os.environ["OMP_NUM_THREADS"] = "1"  # whatever the parent allows
    os.environ["MKL_NUM_THREADS"] = "1"
    if "torch" in sys.modules:  # only when already loaded: workers that never need torch never pay for it
        sys.modules["torch"].set_num_threads(1)


def _run_in_worker(function: Callable[[dict[str, Any]], Any], job: dict[str, Any]) -> Any:
    worker_init()
    return function(job)


@contextmanager
def ray_session(address: str, *, num_cpus: int | None = None) -> Iterator[Any]:
    """The ``ray`` module, connected to ``address`` for the duration of the block.

    A Ray this call starts is shut down on exit; one already initialised by the caller is left
    running. ``num_cpus`` caps a ``"local"`` Ray (default: every CPU).

    Raises:
        RayUnavailable: Ray is not installed, or the address cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray-address needs Ray: pip install 'ferwild[cluster]' (or 'ray[default]')") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address == "local":
                # a private Ray: its start-up notices (token, "Started a local Ray instance") are noise
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayUnavailable(f"cannot connect to Ray at {address!r}: {exc}") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def run_jobs(function: Callable[[dict[str, Any]], Any], jobs: list[dict[str, Any]], workers: int,
             progress: Callable[[int, int], None] | None, *, ray_address: str | None = None) -> list[Any]:
    """Run independent jobs; returns their results in completion order.

    Inline when ``workers`` <= 1 or there is one job; else in a spawn-context pool of ``workers``
    processes; with ``ray_address``, as Ray tasks of one CPU each (``workers`` is then the
    cluster's business). ``progress(done, total)`` is called as jobs finish (in any order).
    """
    total = len(jobs)
    if progress:
        progress(0, total)
    results: list[Any] = []
    if ray_address and jobs:
        with ray_session(ray_address, num_cpus=workers or None) as ray:
            # max_retries: a job lost with its node is simply run again (jobs are idempotent)
            remote = ray.remote(num_cpus=1, max_retries=3)(_run_in_worker)
            pending = [remote.remote(function, job) for job in jobs]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                results.append(ray.get(ready[0]))
                if progress:
                    progress(len(results), total)
        return results
    if workers <= 1 or total <= 1:
        for job in jobs:
            results.append(function(job))
            if progress:
                progress(len(results), total)
        return results
    # spawn, not fork: torch's thread pools do not survive a fork safely.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes=min(workers, total), initializer=worker_init) as pool:
        for result in pool.imap_unordered(function, jobs):
            results.append(result)
            if progress:
                progress(len(results), total)
    return results
