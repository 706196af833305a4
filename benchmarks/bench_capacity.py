"""How many live 30 fps streams one server process keeps in real time: the largest N with server p99 within
50 ms and no frame late, dropped or lost. Peer (same run): the same search with batching off (max_batch=1).

Usage: kfusion bench capacity [--max 256] [--seconds 8] [--client-procs 2] [--json out.json]
       kfusion bench capacity --at 128 --repeats 5   (no search: how often N streams pass, batched and not)
       kfusion bench capacity --at 128 --server-cpus 0 --client-cpus 1-7   (server and clients on their own CPUs)
       kfusion bench capacity --chunk-ms 40   (clients that send 40 ms of audio per message: half the messages)
Real websocket clients in a few separate processes (each driving many asyncio streams) send real speech
paced in real time in 20 ms chunks (--chunk-ms); they share the machine's CPUs with the server. The search doubles N
(or halves it) from --start until a trial fails (passes), then bisects down to --resolution streams; the
batched and unbatched searches take turns, trial by trial.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from benchmarks.load_clients import (
    DEFAULT_CHUNK_MS,
    SERVER_P99_TARGET_MS,
    add_chunk_ms_argument,
    check_chunk_ms,
)
from benchmarks.machine import run_date_utc
from engine import eventloop

log = logging.getLogger("kfusion.bench.capacity")

SETTLE_S = 1.0  # between trials: let the previous clients' sockets close
PROBE_BATCH = 32  # speed probe before each trial: model calls of this many rows ...
PROBE_CALLS = 40  # ... this many times (about 0.1 s)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def parse_cpus(text: str | None, what: str) -> frozenset[int] | None:
    """'0', '1-7' or '0,2-3' -> CPU numbers this process may use; None or '' -> None (no pinning)."""
    if not text:
        return None
    from benchmarks.machine import cpu_list

    allowed = os.sched_getaffinity(0)
    try:
        cpus = cpu_list(text)
    except ValueError:
        raise ValueError(f"{what}: expected CPU numbers like 0, 1-7 or 0,2-3, got {text!r}") from None
    if not cpus or not cpus <= allowed:
        raise ValueError(f"{what}: CPUs {sorted(cpus)} are not all among this process's CPUs {sorted(allowed)}")
    return frozenset(cpus)


async def _trial(session, cfg, n: int, seconds: float, n_procs: int, seed: int, client: str,
                 client_cpus: frozenset[int] | None = None, chunk_ms: int = DEFAULT_CHUNK_MS) -> dict:
    """One server (in this process) under n client streams for `seconds`; verdict and figures."""
    from benchmarks.load_clients import failure_reasons, run_clients, summarize
    from engine.server import LandmarkServer

    server = LandmarkServer(cfg, session=session)
    await server.start()
    url = f"ws://{cfg.host}:{server.port}/ws"
    load1 = os.getloadavg()[0]
    mark: list[float] = []
    try:
        results, client_cpu = await asyncio.get_running_loop().run_in_executor(
            None, lambda: run_clients(url, n, seconds, n_procs, chunk_ms, seed,
                                      on_go=lambda: mark.extend((time.perf_counter(), _cpu_s())), client=client,
                                      cpus=client_cpus))
    finally:
        wall, cpu = (time.perf_counter() - mark[0], _cpu_s() - mark[1]) if mark else (1.0, 0.0)
        calls, rows = server.batcher.calls, server.batcher.rows
        await server.stop()
    s = summarize(results, seconds, chunk_ms, session.meta.lookahead_ms, SERVER_P99_TARGET_MS)
    reasons = failure_reasons(s, SERVER_P99_TARGET_MS)
    s.update(ok=not reasons, why=reasons, load1_at_start=round(load1, 2),
             server_cpu_share=round(cpu / wall, 3), client_cpu_share=round(client_cpu / wall, 3),
             # CPU per stream and second of wall time: comparable across trials and runs of different sizes
             server_cpu_ms_per_stream_s=round(1000 * cpu / (wall * n), 2),
             client_cpu_ms_per_stream_s=round(1000 * client_cpu / (wall * n), 2),
             batches={"calls": calls, "mean_rows": round(rows / max(1, calls), 2)})
    return s


def _plan(start: int, max_streams: int, resolution: int):
    """The search as a generator: yields the next N to try, is sent whether it passed, returns (good, bad).

    Doubles (or halves) from `start` until a trial fails (passes), then bisects down to `resolution`.
    """
    good, bad, n = 0, None, min(start, max_streams)
    if (yield n):  # double up to the first failure (or the maximum) ...
        good = n
        while bad is None and n < max_streams:
            n = min(2 * n, max_streams)
            if (yield n):
                good = n
            else:
                bad = n
    else:  # ... or halve down to the first success
        bad = n
        while good == 0 and n > 1:
            n //= 2
            if (yield n):
                good = n
            else:
                bad = n
    while bad is not None and bad - good > resolution:
        mid = (good + bad) // 2
        if (yield mid):
            good = mid
        else:
            bad = mid
    return good, bad


def speed_probe_us(session, batch: int = PROBE_BATCH, calls: int = PROBE_CALLS) -> float:
    """How fast this shared machine is right now: median model time per row at `batch` (us), idle server.

    The host's other tenants change it by 2x within minutes; trials are only comparable at similar probes.
    """
    from engine.batcher import silence_batch

    inputs = silence_batch(session, batch)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        session.run(*inputs)
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e6 / batch, 1)


def _session_and_configs(args, most_streams: int):
    """The one warmed-up model session every trial shares, and the server configs: batched, and the peer
    with batching off (max_batch=1)."""
    from dataclasses import replace

    from engine.batcher import warm_up
    from engine.config import EngineConfig
    from engine.session import ModelSession

    base = EngineConfig(port=args.port, batch_wait_ms=args.batch_wait_ms, event_loop=args.event_loop,
                        max_streams=max(256, 2 * most_streams), providers="cpu", model_path=args.model)
    session = ModelSession(base.model_path, base.providers)
    warm_up(session)
    return session, {"batched": base, "unbatched": replace(base, max_batch=1)}


async def _main(args) -> dict:
    """Both searches (batched and the unbatched peer) in alternating trials, so that both see the same
    background load on a shared machine."""
    from tqdm import tqdm

    session, configs = _session_and_configs(args, args.max)
    plans = {label: _plan(args.start, args.max, args.resolution) for label in configs}
    next_n = {label: next(plan) for label, plan in plans.items()}
    out: dict = {label: {"trials": {}} for label in configs}
    with tqdm(desc="capacity trials", unit="trial") as bar:
        while next_n:
            for label in list(next_n):
                n = next_n[label]
                bar.set_postfix_str(f"{label}: {n} streams")
                probe = speed_probe_us(session)
                t = await _trial(session, configs[label], n, args.seconds, args.client_procs, seed=bar.n,
                                 client=args.client, client_cpus=args.client_cpu_set, chunk_ms=args.chunk_ms)
                t["speed_probe_us_per_row"] = probe
                out[label]["trials"][str(n)] = t
                bar.update(1)
                log.info("%s %d streams: %s (server p99 %s ms, lag p99 %s ms, server cpu %.2f) %s", label, n,
                         "ok" if t["ok"] else "FAIL", t["server_ms"]["p99"], t["audio_lag_ms"]["p99"],
                         t["server_cpu_share"], "; ".join(t["why"]))
                await asyncio.sleep(SETTLE_S)
                try:
                    next_n[label] = plans[label].send(t["ok"])
                except StopIteration as done:
                    out[label]["capacity"], out[label]["first_failing"] = done.value
                    del next_n[label]
    out["lookahead_ms"] = session.meta.lookahead_ms
    out["model_version"] = session.meta.model_version
    return out


async def _repeat(args) -> dict:
    """--at N: `repeats` trials of N streams each way (batched, then unbatched, alternating): how reliably N holds.

    The search above stops at the first failing trial, and on a shared host one stall fails a trial, so a
    found capacity swings from run to run; the pass count at a fixed N says how often that N holds.
    """
    from tqdm import tqdm

    session, configs = _session_and_configs(args, args.at)
    out: dict = {label: {"trials": []} for label in configs}
    with tqdm(total=args.repeats * len(configs), desc=f"{args.at} streams, repeated", unit="trial") as bar:
        for k in range(args.repeats):
            for label, cfg in configs.items():
                probe = speed_probe_us(session)
                t = await _trial(session, cfg, args.at, args.seconds, args.client_procs, seed=k, client=args.client,
                                 client_cpus=args.client_cpu_set, chunk_ms=args.chunk_ms)
                t["speed_probe_us_per_row"] = probe
                out[label]["trials"].append(t)
                bar.update(1)
                log.info("%s %d streams, trial %d: %s (server p99 %s ms, %d late) %s", label, args.at, k + 1,
                         "ok" if t["ok"] else "FAIL", t["server_ms"]["p99"], t["late"], "; ".join(t["why"]))
                await asyncio.sleep(SETTLE_S)
    for label in configs:
        trials = out[label]["trials"]
        p99s = [t["server_ms"]["p99"] for t in trials if t["server_ms"]["p99"] is not None]
        out[label].update(
            passed=sum(t["ok"] for t in trials), repeats=len(trials),
            server_p99_ms_per_trial={"median": round(float(np.median(p99s)), 3) if p99s else None,
                                     "max": round(max(p99s), 3) if p99s else None},
            late_frames_per_trial=[t["late"] for t in trials],
            server_cpu_ms_per_stream_s=[t["server_cpu_ms_per_stream_s"] for t in trials])
    out["lookahead_ms"] = session.meta.lookahead_ms
    out["model_version"] = session.meta.model_version
    return out


def add_arguments(p) -> None:
    p.add_argument("--max", type=int, default=256, help="largest number of streams to try")
    p.add_argument("--start", type=int, default=16,
                   help="first trial's streams (doubled until a trial fails, halved until one passes)")
    p.add_argument("--resolution", type=int, default=2, help="stop bisecting when the bracket is this narrow")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each trial")
    p.add_argument("--client-procs", type=int, default=2, help="client processes (each drives many streams)")
    p.add_argument("--client", default="lean", choices=("lean", "stream"),
                   help="load clients: benchmarks/lean_client.py (lean: the same protocol on websockets' sans-I/O "
                        "layer, about 0.6x the client CPU, streams connected before the audio starts) or "
                        "`kfusion stream`'s own client (stream: one task per stream, each starts on connecting)")
    p.add_argument("--at", type=int, default=0,
                   help="no search: run --repeats trials of this many streams each way, and count the passes")
    p.add_argument("--repeats", type=int, default=5, help="trials per side with --at")
    add_chunk_ms_argument(p)
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument("--event-loop", dest="event_loop", default="auto", choices=("auto", "uvloop", "asyncio"),
                   help="the server's event loop (the clients use uvloop when installed)")
    p.add_argument("--server-cpus", default="",
                   help="pin the server (this process) to these CPUs, e.g. 0 (default: no pinning)")
    p.add_argument("--client-cpus", default="",
                   help="pin the client processes to these CPUs, e.g. 1-7: on a machine with spare cores this "
                        "measures the server alone on its core, without the clients' competition")
    p.add_argument("--model", default=None,
                   help="ONNX model to serve (default: the shipped one); e.g. to size a model of your own")
    p.add_argument("--port", type=int, default=8792)
    p.add_argument("--json", help="write the results here")


def run(args) -> int:
    if args.max < 1 or args.start < 1 or args.seconds <= 0 or args.client_procs < 1 or args.resolution < 1:
        raise ValueError("--max, --start, --client-procs and --resolution must be >= 1 and --seconds > 0, got "
                         f"{args.max}, {args.start}, {args.client_procs}, {args.resolution}, {args.seconds}")
    if args.at < 0 or args.repeats < 1:
        raise ValueError(f"--at must be >= 0 (0 = search) and --repeats >= 1, got {args.at} and {args.repeats}")
    check_chunk_ms(args.chunk_ms)
    if args.model is not None and not Path(args.model).is_file():
        raise FileNotFoundError(f"--model: no ONNX model file at {args.model}")
    server_cpus = parse_cpus(args.server_cpus, "--server-cpus")
    args.client_cpu_set = parse_cpus(args.client_cpus, "--client-cpus")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("kfusion.server").setLevel(logging.WARNING)
    logging.getLogger("kfusion").setLevel(logging.WARNING)
    log.setLevel(logging.INFO)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load1 = os.getloadavg()[0]
    from benchmarks.machine import cpu_description, cpu_parallel_speedup, loopback_message_us

    speedup = cpu_parallel_speedup(2)  # how much of the second vCPU this shared host gives right now
    if server_cpus:
        os.sched_setaffinity(0, server_cpus)  # the clients are spawned from here, then moved to theirs
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "load1_at_start": round(load1, 2),
               "python": platform.python_version(), "cpu_parallel_speedup_2_procs": speedup,
               "cpu": cpu_description(), "loopback_message_us": loopback_message_us(),
               "server_cpus": sorted(server_cpus) if server_cpus else "any",
               "client_cpus": sorted(args.client_cpu_set) if args.client_cpu_set else "any"}
    if args.at:
        return _report_repeat(args, machine, eventloop.run(_repeat(args), args.event_loop))
    r = eventloop.run(_main(args), args.event_loop)
    b, u = r["batched"]["capacity"], r["unbatched"]["capacity"]
    best = r["batched"]["trials"].get(str(b), {}) if b else {}
    out = {
        "date_utc": run_date_utc(),
        "machine": machine,
        "settings": {"max": args.max, "start": args.start, "resolution": args.resolution, **_settings(args, r)},
        "capacity_streams": b,
        "peer_unbatched_capacity_streams": u,
        "ratio_batched_to_unbatched": round(b / u, 2) if u else None,
        "at_capacity": {k: best.get(k) for k in ("server_ms", "audio_lag_ms", "end_to_end_ms", "batches",
                                                  "server_cpu_share", "client_cpu_share",
                                                  "server_cpu_ms_per_stream_s", "client_cpu_ms_per_stream_s")},
        "batched": r["batched"],
        "unbatched": r["unbatched"],
    }
    _write(out, args.json)
    print(f"capacity: {b} streams batched, {u} unbatched (max_batch=1): ratio "
          f"{out['ratio_batched_to_unbatched']}; server p99 at capacity "
          f"{(best.get('server_ms') or {}).get('p99')} ms")
    return 0 if b > 0 else 1


def _settings(args, r: dict) -> dict:
    return {"seconds": args.seconds, "client_procs": args.client_procs, "chunk_ms": args.chunk_ms, "fps": 30,
            "batch_wait_ms": args.batch_wait_ms, "event_loop": eventloop.resolve(args.event_loop),
            "server_p99_target_ms": SERVER_P99_TARGET_MS, "model": r["model_version"],
            "model_path": args.model or "shipped (engine/assets)",
            "lookahead_ms": r["lookahead_ms"], "client": args.client,
            "clients": "real websocket streams of real speech, paced in real time, in "
                       f"{args.client_procs} client processes "
                       + (f"pinned to CPUs {args.client_cpus}, the server to {args.server_cpus or 'any'}"
                          if args.client_cpus else "on the same CPUs as the server")}


def _report_repeat(args, machine: dict, r: dict) -> int:
    b, u = r["batched"], r["unbatched"]
    out = {"date_utc": run_date_utc(), "machine": machine,
           "settings": {"at": args.at, "repeats": args.repeats, **_settings(args, r)},
           "streams": args.at, "batched_passed": b["passed"], "peer_unbatched_passed": u["passed"],
           "pass_rate_batched": round(b["passed"] / b["repeats"], 3),
           "pass_rate_unbatched": round(u["passed"] / u["repeats"], 3),
           "batched": b, "unbatched": u}
    _write(out, args.json)
    print(f"{args.at} streams: {b['passed']} of {b['repeats']} trials passed batched, {u['passed']} of "
          f"{u['repeats']} unbatched (max_batch=1); median server p99 per trial "
          f"{b['server_p99_ms_per_trial']['median']} ms batched, {u['server_p99_ms_per_trial']['median']} ms unbatched")
    return 0


def _write(out: dict, path: str | None) -> None:
    text = json.dumps(out, indent=2)
    print(text)
    if path:
        with open(path, "w") as fh:
            fh.write(text + "\n")
