"""Executors: run many :class:`RunSpec` and write their records.

The local executor is a process pool. Each worker gets ``cores // workers`` torch threads,
so that workers never oversubscribe the machine. A run whose record already exists (with
status ``ok`` or ``diverged``) is skipped, so a killed sweep resumes where it stopped;
``failed`` runs are tried again.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from obsbench.results import read_record, record_path
from obsbench.suite import RunSpec

FINAL = ("ok", "diverged")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, available_cores() // workers)


@dataclass(frozen=True)
class Outcome:
    """What became of one run in a sweep: its status, or ``skipped`` if it was done before."""

    run_id: str
    status: str


def pending(runs: Sequence[RunSpec], directory: Path) -> tuple[list[RunSpec], list[str]]:
    """Split ``runs`` into those still to do and the ids of those already done."""
    todo, done = [], []
    seen: set[str] = set()
    for spec in runs:
        run_id = spec.run_id
        if run_id in seen:
            continue
        seen.add(run_id)
        path = record_path(directory, run_id)
        if path.is_file() and read_record(path).status in FINAL:
            done.append(run_id)
        else:
            todo.append(spec)
    return todo, done


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _work(spec: RunSpec, directory: str) -> tuple[str, str]:
    from obsbench.runner import run_and_write

    return run_and_write(spec, Path(directory))


def run_local(runs: Sequence[RunSpec], directory: Path, workers: int = 1) -> Iterator[Outcome]:
    """Run ``runs`` in a local process pool, yielding an :class:`Outcome` per run as it ends.

    Runs whose records exist are yielded first, as ``skipped``. At most ``workers`` runs are
    in flight at once, so an interrupted sweep loses at most that many runs' work.
    """
    todo, done = pending(runs, directory)
    for run_id in done:
        yield Outcome(run_id, "skipped")
    if not todo:
        return
    directory.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers, len(todo)))
    context = multiprocessing.get_context("spawn")
    queue = list(reversed(todo))
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(threads_per_worker(workers),)) as pool:
        in_flight: set[Future[tuple[str, str]]] = set()
        try:
            while queue or in_flight:
                while queue and len(in_flight) < workers:
                    in_flight.add(pool.submit(_work, queue.pop(), str(directory)))
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield Outcome(*future.result())
        except BaseException:
            for future in in_flight:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
