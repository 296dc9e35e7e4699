"""Episodes from several worker processes, in seed order, that never hang on the way out.

``multiprocessing.Pool`` was used here before. Its ``terminate()`` (which its context manager calls)
can deadlock: it takes the task queue's lock, and a worker killed while waiting for a task holds that
lock forever. It hung ``collect --workers 2`` at the end of a run and on Ctrl-C. These workers are
plain processes with their own queues; on the way out the parent kills them and never waits on a lock
they might hold.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Callable, Iterator
from typing import Any

_POLL_S = 1.0
"""How often the parent checks that its workers are alive while it waits for an episode."""


def _work(init: Callable[..., None], init_args: tuple, episode: Callable[[int], Any], seeds, results) -> None:
    import signal

    # Ctrl-C reaches the whole process group: the parent stops the workers and finalizes the dataset.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        init(*init_args)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        results.put((None, None, f"{type(exc).__name__}: {exc}"))
        return
    while (seed := seeds.get()) is not None:
        try:
            results.put((seed, episode(seed), None))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            results.put((seed, None, f"{type(exc).__name__}: {exc}"))


def ordered_episodes(
    init: Callable[..., None], init_args: tuple, episode: Callable[[int], Any], first_seed: int, workers: int
) -> Iterator[Any]:
    """``episode(seed)`` for seeds ``first_seed, first_seed + 1, ...`` run in ``workers`` spawned
    processes (each runs ``init(*init_args)`` once), yielded in seed order until the caller stops.

    ``init`` and ``episode`` must be importable module-level functions. An exception in a worker, or
    a worker that dies, raises ``RuntimeError`` here naming it.
    """
    ctx = mp.get_context("spawn")  # a forked MuJoCo/EGL context is not safe to reuse in a child
    seeds, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_work, args=(init, init_args, episode, seeds, results), daemon=True)
             for _ in range(workers)]  # fmt: skip
    for proc in procs:
        proc.start()
    next_seed, want, done = first_seed, first_seed, {}
    for _ in range(2 * workers):  # two episodes queued per worker keep every worker busy
        seeds.put(next_seed)
        next_seed += 1
    try:
        while True:
            while want not in done:
                try:
                    seed, ep, error = results.get(timeout=_POLL_S)
                except queue.Empty:
                    dead = [p.exitcode for p in procs if not p.is_alive()]
                    if dead:
                        raise RuntimeError(f"a collect worker process died (exit code {dead[0]})") from None
                    continue
                if error is not None:  # the worker's exception, as text: nothing is unpickled here
                    raise RuntimeError(f"a collect worker failed: {error}")
                done[seed] = ep
                seeds.put(next_seed)
                next_seed += 1
            yield done.pop(want)
            want += 1
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.join(timeout=10)
        for q in (seeds, results):
            q.cancel_join_thread()  # never wait on a pipe nobody reads any more
            q.close()


__all__ = ["ordered_episodes"]
