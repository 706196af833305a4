"""Admission by load: streams that keep arriving, served with `kfusion serve --max-load F` against the same
arrivals with no limit (the peer, same run).

Usage: kfusion bench admission [--max-load 0.85] [--streams 160] [--per-wave 4] [--gap-s 1] [--seconds 40]
Each side is a real `kfusion serve` process. Client processes open `--per-wave` new websocket streams every
`--gap-s` seconds until `--streams` have arrived; each admitted stream sends `--seconds` of real speech paced
in real time. Past what one worker carries, the unlimited server makes every stream late; with the limit, the
streams it admits should stay within target (server p99 <= 50 ms, no frame late, dropped or lost) and the
rest get 1013.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

from benchmarks.load_clients import SERVER_P99_TARGET_MS
from benchmarks.machine import run_date_utc

log = logging.getLogger("kfusion.bench.admission")

CHUNK_MS = 20


def add_arguments(p) -> None:
    p.add_argument("--max-load", type=float, default=0.85, help="the limited server's --max-load")
    p.add_argument("--streams", type=int, default=160, help="streams that arrive in all")
    p.add_argument("--per-wave", type=int, default=4, help="new streams per wave (split over the client processes)")
    p.add_argument("--gap-s", type=float, default=1.0, help="seconds between waves")
    p.add_argument("--seconds", type=float, default=40.0, help="speech each admitted stream sends")
    p.add_argument("--client-procs", type=int, default=2, help="client processes")
    p.add_argument("--port", type=int, default=8796, help="the limited server; the unlimited one uses +1")
    p.add_argument("--log-dir", default="/tmp", help="where the servers' logs go")
    p.add_argument("--json", help="write the results here")


def _side(max_load: float, args, port: int, lookahead_ms: float) -> dict:
    from benchmarks.bench_scaleout import ServerProcess
    from benchmarks.lean_client import arrivals_proc
    from benchmarks.load_clients import failure_reasons, run_procs, split_streams, summarize

    server = ServerProcess(1, port, 2 * args.streams, Path(args.log_dir) / f"kfusion-admission-{max_load:g}.log",
                           "cpu", ("--max-load", str(max_load)))
    mark: list[float] = []
    try:
        per_proc = split_streams(args.streams, args.client_procs)
        results, client_cpu = run_procs(arrivals_proc, f"ws://127.0.0.1:{port}/ws", per_proc, args.seconds,
                                        CHUNK_MS, 0, on_go=lambda: mark.extend((time.perf_counter(), server.cpu_s())),
                                        per_wave=args.per_wave // args.client_procs, gap_s=args.gap_s)
        wall, cpu = time.perf_counter() - mark[0], server.cpu_s() - mark[1]
    finally:
        server.stop()
    admitted = [r for r in results if r.get("admitted")]
    refused = [r for r in results if not r.get("admitted")]
    s = summarize(admitted, args.seconds, CHUNK_MS, lookahead_ms, SERVER_P99_TARGET_MS) if admitted else {}
    why = failure_reasons(s, SERVER_P99_TARGET_MS) if admitted else ["no stream admitted"]
    return {"max_load": max_load, "offered": len(results), "admitted": len(admitted),
            "refused_1013": sum(1 for r in refused if r.get("close") == 1013),
            "refused_other": [r.get("error") or r.get("close") for r in refused if r.get("close") != 1013][:5],
            "admitted_within_target": not why, "why": why, **s,
            "server_cpu_share": round(cpu / wall, 3), "client_cpu_share": round(client_cpu / wall, 3)}


def run(args) -> int:
    from engine.session import ModelSession

    if not 0 < args.max_load <= 1 or args.streams < 1 or args.per_wave < 1 or args.gap_s <= 0 or args.seconds <= 0:
        raise ValueError(f"expected --max-load in (0, 1], --streams and --per-wave >= 1, --gap-s and --seconds > 0; "
                         f"got {args.max_load}, {args.streams}, {args.per_wave}, {args.gap_s}, {args.seconds}")
    if args.client_procs < 1 or args.per_wave % args.client_procs:
        raise ValueError(f"--per-wave must be a multiple of --client-procs (each process opens its share of every "
                         f"wave), got {args.per_wave} and {args.client_procs}")
    meta = ModelSession(None, "cpu").meta
    load1 = os.getloadavg()[0]
    sides = {}
    for i, (name, limit) in enumerate((("limited", args.max_load), ("unlimited", 0.0))):
        print(f"{name} server (--max-load {limit:g}): {args.streams} streams arriving {args.per_wave} per "
              f"{args.gap_s:g} s, {args.seconds:g} s of speech each ...", flush=True)
        sides[name] = _side(limit, args, args.port + i, meta.lookahead_ms)
        d = sides[name]
        srv = d.get("server_ms", {})
        print(f"  admitted {d['admitted']} of {d['offered']} ({d['refused_1013']} refused with 1013); admitted "
              f"streams: server p50/p99/max {srv.get('p50')}/{srv.get('p99')}/{srv.get('max')} ms, "
              f"{d.get('late', 'n/a')} late, {d.get('lost', 'n/a')} lost frames; "
              f"{'within target' if d['admitted_within_target'] else 'NOT within target: ' + '; '.join(d['why'])}")
    lim, peer = sides["limited"], sides["unlimited"]
    ratio = (round(lim["server_ms"]["p99"] / peer["server_ms"]["p99"], 4)
             if lim.get("server_ms", {}).get("p99") and peer.get("server_ms", {}).get("p99") else None)
    out = {
        "benchmark": "admission",
        "date_utc": run_date_utc(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load1_at_start": round(load1, 2),
                    "python": platform.python_version()},
        "settings": {"max_load": args.max_load, "streams": args.streams, "per_wave": args.per_wave,
                     "gap_s": args.gap_s, "seconds": args.seconds, "client_procs": args.client_procs,
                     "chunk_ms": CHUNK_MS, "server_p99_target_ms": SERVER_P99_TARGET_MS,
                     "model": meta.model_version, "lookahead_ms": meta.lookahead_ms,
                     "clients": "real websocket streams of real speech paced in real time (lean clients), "
                                "arriving in waves, on the same CPUs"},
        "ratio_server_p99_limited_vs_unlimited": ratio,
        "limited": lim,
        "unlimited": peer,
    }
    print(f"server p99 of admitted streams, limited / unlimited: {ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if lim["admitted_within_target"] else 1
