"""How much parallel CPU this (shared, virtual) machine gives right now: the work of `procs` busy Python
processes against one, run side by side. 2 vCPUs can give anything from about 1.1 to 2 times.

    speedup = cpu_parallel_speedup(procs=2, seconds=1.0)   # e.g. 1.73
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time

PROBE_SECONDS = 1.0
PROBE_ROUNDS = 3  # alone/together pairs; the median ratio is reported


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


def cpu_parallel_speedup(procs: int = 2, seconds: float = PROBE_SECONDS, rounds: int = PROBE_ROUNDS) -> float:
    """Loop turns of `procs` processes together / turns of one alone (same length of time). Each round runs
    one alone, then `procs` together, then one alone again, and divides by the mean of the two alone runs,
    so a drift of the host's speed cancels; the median over `rounds` is returned (a single alone/together
    pair once read 2.83 on 2 vCPUs)."""
    if procs < 1 or seconds <= 0 or rounds < 1:
        raise ValueError(f"procs must be >= 1, seconds > 0 and rounds >= 1, got {procs}, {seconds} and {rounds}")
    ratios = []
    for _ in range(rounds):
        before = _turns(1, seconds)
        together = _turns(procs, seconds)
        after = _turns(1, seconds)
        ratios.append(together / max((before + after) / 2, 1))
    return round(statistics.median(ratios), 2)
