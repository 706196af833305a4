"""Load generator shared by `kfusion bench capacity` and the soak test: a few client processes, each driving
many asyncio websocket streams of real speech paced in real time (bench_latency's client process).

    results, client_cpu_s = run_clients("ws://127.0.0.1:8765/ws", n_streams=64, seconds=10, n_procs=2)
    summary = summarize(results, seconds=10, chunk_ms=20, lookahead_ms=80, late_budget_ms=50)
"""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np

# DEFAULT_CHUNK_MS: the audio per message of `kfusion stream` and the browser page, the load clients' default too
from clients.stream_client import DEFAULT_CHUNK_MS

DEFAULT_CLIENT_PROCS = 2  # client processes share the server's 2 vCPUs: keep them few
RESULT_TIMEOUT_EXTRA_S = 120.0
CLIENT_READY_TIMEOUT_S = 120.0
CLIENTS = ("stream", "lean")
CHUNK_MS_RANGE = (10, 200)  # --chunk-ms of the load benchmarks; the default is `kfusion stream`'s DEFAULT_CHUNK_MS
# the load benchmarks' target (capacity, scaleout, admission): a trial passes with the server p99 at most this and no
# frame dropped, lost or late, a frame being late past chunk + lookahead + this much audio lag
SERVER_P99_TARGET_MS = 50.0


def check_chunk_ms(chunk_ms: int) -> int:
    """--chunk-ms of the load benchmarks: a whole number of ms in CHUNK_MS_RANGE, else ValueError."""
    if not CHUNK_MS_RANGE[0] <= chunk_ms <= CHUNK_MS_RANGE[1]:
        raise ValueError(f"--chunk-ms must be in [{CHUNK_MS_RANGE[0]}, {CHUNK_MS_RANGE[1]}] ms, got {chunk_ms}")
    return chunk_ms


def add_chunk_ms_argument(p) -> None:
    p.add_argument("--chunk-ms", type=int, default=DEFAULT_CHUNK_MS,
                   help="audio per client message, ms: fewer, larger messages cost the server less per stream, "
                        "and every frame waits for its chunk to fill (the late budget grows with it)")


def split_streams(n_streams: int, n_procs: int) -> list[int]:
    """Streams per client process, as even as possible (no process without a stream)."""
    if n_streams < 1 or n_procs < 1:
        raise ValueError(f"n_streams and n_procs must be >= 1, got {n_streams} and {n_procs}")
    n_procs = min(n_procs, n_streams)
    return [n_streams // n_procs + (1 if i < n_streams % n_procs else 0) for i in range(n_procs)]


def run_clients(url: str, n_streams: int, seconds: float, n_procs: int = DEFAULT_CLIENT_PROCS,
                chunk_ms: int = 20, seed: int = 0, on_go=None, client: str = "stream",
                cpus: frozenset[int] | None = None) -> tuple[list[dict], float]:
    """Blocking: spawn the client processes, start them together, return (one dict per stream, client CPU s).

    Each dict holds `frames`, `expected` (end.frames), `dropped`, `close`, `error` and per-frame lists
    `server` (ms, frame header send - recv), `e2e` (ms) and `lag` (ms, speech instant -> arrival), in
    arrival order. on_go(): called once every process has started and prepared its audio, just before
    the streams begin. client: "stream" (`kfusion stream`'s own client, one asyncio task per stream) or
    "lean" (benchmarks/lean_client.py: websockets' sans-I/O protocol, far less client CPU per stream).
    cpus: pin the client processes to these CPU numbers (None: wherever this process may run).
    """
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {', '.join(CLIENTS)}, got {client!r}")
    if client == "lean":
        from benchmarks.lean_client import client_proc as _client_proc
    else:
        from benchmarks.bench_latency import _client_proc
    return run_procs(_client_proc, url, split_streams(n_streams, n_procs), seconds, chunk_ms, seed, on_go, cpus=cpus)


def run_procs(target, url: str, per_proc: list[int], seconds: float, chunk_ms: int, seed: int, on_go=None,
              cpus: frozenset[int] | None = None, **kwargs) -> tuple[list[dict], float]:
    """Blocking: spawn one process per entry of per_proc, each running target(url, n_streams, seconds, chunk_ms,
    seed, out_q, ready, go, **kwargs); start them together once all are ready; return (their stream dicts,
    their CPU s). cpus: pin each process to these CPU numbers as soon as it exists (before it loads audio)."""
    ctx = mp.get_context("spawn")
    q, ready, go = ctx.Queue(), ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=target, args=(url, k, seconds, chunk_ms, seed * 1000 + i, q, ready, go),
                         kwargs=kwargs, daemon=True) for i, k in enumerate(per_proc)]
    for p in procs:
        p.start()
        if cpus:
            os.sched_setaffinity(p.pid, cpus)
            if os.sched_getaffinity(p.pid) != cpus:
                raise ValueError(f"client process {p.pid} could not be pinned to CPUs {sorted(cpus)}")
    results: list[dict] = []
    cpu_s = 0.0
    try:
        for _ in procs:
            if not ready.acquire(True, CLIENT_READY_TIMEOUT_S):
                raise ValueError(f"a client process was not ready within {CLIENT_READY_TIMEOUT_S} s")
        if on_go is not None:
            on_go()
        go.set()
        for _ in procs:
            got = q.get(True, seconds + RESULT_TIMEOUT_EXTRA_S)
            results.extend(got["streams"])
            cpu_s += got["cpu_s"]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
    return results, cpu_s


def pcts(values) -> dict:
    v = np.asarray(values, np.float64)
    if not v.size:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {"p50": round(float(np.percentile(v, 50)), 3), "p99": round(float(np.percentile(v, 99)), 3),
            "max": round(float(v.max()), 3), "n": int(v.size)}


def summarize(results: list[dict], seconds: float, chunk_ms: int, lookahead_ms: float,
              late_budget_ms: float, fps: int = 30, sample_rate_hz: int = 16_000) -> dict:
    """Totals and percentiles over every stream. A frame is late when its audio lag exceeds
    chunk_ms + lookahead_ms + late_budget_ms; a frame is lost when a stream got fewer than its audio makes."""
    from engine import timing

    n_chunks = int(seconds * 1000 / chunk_ms)
    per_stream = timing.n_frames(n_chunks * (sample_rate_hz * chunk_ms // 1000), fps)
    ok = [r for r in results if not r.get("error")]
    cat = lambda key: [v for r in ok for v in r[key]]
    lag = cat("lag")
    budget = chunk_ms + lookahead_ms + late_budget_ms
    # the server's own time (chunk in -> frame out) for the late frames: small values mean the delay was
    # outside the server's processing (the event loop not reading yet, the socket, the host stalling)
    late_server = [sv for r in ok for lg, sv in zip(r["lag"], r["server"]) if lg > budget]
    frames = int(sum(r["frames"] for r in ok))
    return {
        "streams": len(results),
        "errors": [r["error"] for r in results if r.get("error")][:5],
        "n_errors": sum(1 for r in results if r.get("error")),
        "frames": frames,
        "frames_expected": per_stream * len(results),
        "lost": per_stream * len(results) - frames,
        "dropped": int(sum(r["dropped"] for r in ok)),
        "late": int(sum(v > budget for v in lag)),
        "late_frames_server_ms": pcts(late_server),
        "late_budget_ms": budget,
        "server_ms": pcts(cat("server")),
        "end_to_end_ms": pcts(cat("e2e")),
        "audio_lag_ms": pcts(lag),
    }


def failure_reasons(s: dict, p99_target_ms: float | None = None) -> list[str]:
    """Why a trial fails, from its summary: failed streams, a server p99 over p99_target_ms (when given), then
    dropped, late and lost frames; late ones say how long the server itself held them (a few ms means the
    delay was elsewhere: the event loop, the socket, a host stall). Empty: the trial passes."""
    out = []
    if s.get("n_errors"):
        out.append(f"{s['n_errors']} streams failed: {s['errors'][:2]}")
    if p99_target_ms is not None:
        p99 = s["server_ms"]["p99"]
        if p99 is None or p99 > p99_target_ms:
            out.append(f"server p99 {p99} ms > {p99_target_ms} ms")
    for key in ("dropped", "late", "lost"):
        if s[key]:
            extra = ""
            if key == "late" and s["late_frames_server_ms"]["n"]:
                extra = f" (server time for them: median {s['late_frames_server_ms']['p50']} ms)"
            out.append(f"{s[key]} frames {key}{extra}")
    return out
