"""How much parallel CPU this (shared, virtual) machine gives right now: the work of `procs` busy Python
processes against one, run side by side. 2 vCPUs can give anything from about 1.1 to 2 times.

    speedup = cpu_parallel_speedup(procs=2, seconds=1.0)   # e.g. 1.73
"""

from __future__ import annotations

import multiprocessing as mp
import time

PROBE_SECONDS = 1.0


def _spin(seconds: float, go, out) -> None:
    """Count loop turns for `seconds` after `go` is set (all processes start together)."""
    go.wait()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += 1
    out.put(n)


def _turns(procs: int, seconds: float) -> int:
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_spin, args=(seconds, go, out), daemon=True) for _ in range(procs)]
    for w in workers:
        w.start()
    time.sleep(0.3)  # let the interpreters finish starting before the clock runs
    go.set()
    total = sum(out.get(True, seconds + 60.0) for _ in workers)
    for w in workers:
        w.join(10)
    return total


def cpu_parallel_speedup(procs: int = 2, seconds: float = PROBE_SECONDS) -> float:
    """Loop turns of `procs` processes together / turns of one alone (same length of time)."""
    if procs < 1 or seconds <= 0:
        raise ValueError(f"procs must be >= 1 and seconds > 0, got {procs} and {seconds}")
    alone = _turns(1, seconds)
    return round(_turns(procs, seconds) / max(alone, 1), 2)
