"""What this (shared, virtual) machine gives right now, printed with the load benchmarks' results, and when.

    speedup = cpu_parallel_speedup(procs=2)   # e.g. 1.63: 2 vCPUs can give anything from about 1.1 to 2 times one
    us = loopback_message_us()                # e.g. 14.2: one small message through the kernel's loopback TCP
    cpu = cpu_description()                   # e.g. {"model": "AMD EPYC", "threads_per_core": 1}
    when = run_date_utc()                     # e.g. "2026-11-26 10:40 UTC": every result's `date_utc`

Two machines of the same kind can differ by 2x in streams carried (docs/scaling.md); the figures above
say which kind of host a result came from.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import statistics
import time
from pathlib import Path

RUN_DATE_FORMAT = "%Y-%m-%d %H:%M UTC"  # `date_utc` of every stored result; benchmarks/report.py prints it
PROBE_SECONDS = 0.2  # one busy segment
PROBE_ROUNDS = 9  # alone / together / alone triples; the median ratio is reported
LOOPBACK_MESSAGE_BYTES = 1_300  # about one 40 ms int16 chunk or two landmark frames, as a websocket message
LOOPBACK_MESSAGES = 400  # per round
LOOPBACK_ROUNDS = 7  # the median round is reported
LOOPBACK_MAX_BYTES = 64 * 1024  # one message must fit the socket buffers: the probe sends before it reads


def _worker(conn) -> None:
    """Spin for the seconds each command gives and answer with the loop turns; None ends the worker."""
    while True:
        seconds = conn.recv()
        if seconds is None:
            return
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += 1
        conn.send(n)


def cpu_parallel_speedup(procs: int = 2, seconds: float = PROBE_SECONDS, rounds: int = PROBE_ROUNDS) -> float:
    """Loop turns of `procs` processes together / turns of one alone, over segments of `seconds`.

    The workers start once and run segments back to back: one alone, `procs` together, one alone again,
    and each round divides by the mean of its two alone segments, so the host's drift cancels; the median
    over `rounds` is returned. (Spawning fresh processes per measurement, with idle gaps between, read
    1.8-2.4 for 2 processes on these 2 vCPUs, above what two vCPUs can give, and failed a fresh-clone test
    run at 2.4; back to back, 28 calls read 1.07-1.97.)
    """
    if procs < 1 or seconds <= 0 or rounds < 1:
        raise ValueError(f"procs must be >= 1, seconds > 0 and rounds >= 1, got {procs}, {seconds} and {rounds}")
    ctx = mp.get_context("spawn")
    pipes = [ctx.Pipe() for _ in range(procs)]
    workers = [ctx.Process(target=_worker, args=(child,), daemon=True) for _, child in pipes]
    for w in workers:
        w.start()

    def segment(k: int) -> int:  # the first k workers spin together; their total turns
        for parent, _ in pipes[:k]:
            parent.send(seconds)
        return sum(parent.recv() for parent, _ in pipes[:k])

    try:
        segment(procs)  # every interpreter is up and warm before anything counts
        ratios = []
        for _ in range(rounds):
            before = segment(1)
            together = segment(procs)
            after = segment(1)
            ratios.append(together / max((before + after) / 2, 1))
    finally:
        for parent, _ in pipes:
            parent.send(None)
        for w in workers:
            w.join(10)
    return round(statistics.median(ratios), 2)


def loopback_message_us(n_bytes: int = LOOPBACK_MESSAGE_BYTES, messages: int = LOOPBACK_MESSAGES,
                        rounds: int = LOOPBACK_ROUNDS) -> float:
    """Microseconds of this process's time for one message of n_bytes sent and received over loopback TCP.

    One process, one connection: send a message, read it back on the other end, repeat. That is the kernel's
    share of every audio message a server reads and every frame it writes (system calls and the TCP stack),
    which is where hosts of the same kind were seen to differ. Median over `rounds` rounds of `messages`.
    """
    if not 1 <= n_bytes <= LOOPBACK_MAX_BYTES or messages < 1 or rounds < 1:
        raise ValueError(f"n_bytes must be in [1, {LOOPBACK_MAX_BYTES}], messages and rounds >= 1, got {n_bytes}, "
                         f"{messages} and {rounds}")
    payload = bytes(n_bytes)
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()[:2]) as a:
        b, _ = server.accept()
        with b:
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            per_round = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                for _ in range(messages):
                    a.sendall(payload)
                    got = 0
                    while got < n_bytes:
                        got += len(b.recv(n_bytes - got))
                per_round.append((time.perf_counter() - t0) / messages * 1e6)
    return round(statistics.median(per_round), 2)


def cpu_list(text: str) -> set[int]:
    """A Linux CPU list ('0', '1-7', '0,2-3', as in /sys and taskset) -> its CPU numbers; ValueError if malformed."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def cpu_description() -> dict:
    """The CPU model name and how many hardware threads share a core (2: the vCPUs may be one core's siblings)."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = None
    siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list")
    try:
        threads = len(cpu_list(siblings.read_text().strip()))
    except (OSError, ValueError):
        pass
    return {"model": model, "threads_per_core": threads, "cpus": os.cpu_count()}


def run_date_utc() -> str:
    """Now, as every benchmark result records it (`date_utc`): the report prints this, never a file's time."""
    return time.strftime(RUN_DATE_FORMAT, time.gmtime())
