"""Scale-out across processes: `kfusion serve --workers 2` vs `--workers 1` under the same live load.

Usage: kfusion bench scaleout [--streams 32,64,96,128] [--workers 2] [--seconds 8] [--chunk-ms 20] [--json out.json]
Both servers run as real `kfusion serve` processes on their own ports; each stream count is tried on one,
then the other, with real websocket clients sending real speech paced in real time (benchmarks/load_clients.py).
A trial is within target when the server p99 is <= 50 ms and no frame is late, dropped or lost (the
capacity benchmark's target). Peer (same run): the one-process server.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.load_clients import (
    DEFAULT_CHUNK_MS,
    SERVER_P99_TARGET_MS,
    add_chunk_ms_argument,
    check_chunk_ms,
)
from benchmarks.machine import run_date_utc
from clients.stream_client import server_health

log = logging.getLogger("kfusion.bench.scaleout")

STARTUP_TIMEOUT_S = 120.0
SETTLE_S = 1.0
CLK_TCK_HZ = os.sysconf("SC_CLK_TCK")


def _cpu_s(pids) -> float:
    """User + system CPU seconds of these processes so far (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / CLK_TCK_HZ


class ServerProcess:
    """`kfusion serve --workers N` in a subprocess, ready once N distinct worker pids answer /healthz."""

    def __init__(self, workers: int, port: int, max_streams: int, log_path: Path, providers: str = "cpu",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.workers, self.port, self.log_path = workers, port, log_path
        env = dict(os.environ, OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "engine.cli", "serve", "--workers", str(workers), "--port", str(port),
               "--max-streams", str(max_streams), "--providers", providers, *extra_args]
        with open(log_path, "w") as fh:  # a file, not a pipe: a full pipe would block the server's logging
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=fh)
        self.pids: set[int] = set()
        t_end = time.monotonic() + STARTUP_TIMEOUT_S
        while len(self.pids) < workers:
            if self.proc.poll() is not None or time.monotonic() > t_end:
                self.stop()
                raise ValueError(f"`kfusion serve --workers {workers}` did not start; see {log_path}")
            h = server_health(port)
            if h is None:
                time.sleep(0.2)  # still starting: nothing to wait on but time
            else:
                self.pids.add(h["pid"])

    def cpu_s(self) -> float:
        return _cpu_s(self.pids | {self.proc.pid})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _trial(server: ServerProcess, n: int, seconds: float, n_procs: int, seed: int, lookahead_ms: float,
           client: str, chunk_ms: int = DEFAULT_CHUNK_MS) -> dict:
    from benchmarks.load_clients import failure_reasons, run_clients, summarize

    load1 = os.getloadavg()[0]
    mark: list[float] = []
    results, client_cpu = run_clients(f"ws://127.0.0.1:{server.port}/ws", n, seconds, n_procs, chunk_ms, seed,
                                      on_go=lambda: mark.extend((time.perf_counter(), server.cpu_s())), client=client)
    wall, cpu = time.perf_counter() - mark[0], server.cpu_s() - mark[1]
    s = summarize(results, seconds, chunk_ms, lookahead_ms, SERVER_P99_TARGET_MS)
    why = failure_reasons(s, SERVER_P99_TARGET_MS)
    s.update(ok=not why, why=why, load1_at_start=round(load1, 2), server_cpu_share=round(cpu / wall, 3),
             client_cpu_share=round(client_cpu / wall, 3))
    return s


def add_arguments(p) -> None:
    p.add_argument("--streams", default="32,64,96,128", help="comma-separated stream counts to try")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the scaled-out server")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each trial")
    p.add_argument("--client-procs", type=int, default=2, help="client processes (each drives many streams)")
    p.add_argument("--client", default="lean", choices=("lean", "stream"),
                   help="load clients (as `kfusion bench capacity --client`)")
    add_chunk_ms_argument(p)
    p.add_argument("--port", type=int, default=8794, help="the one-process server; the scaled-out one uses +1")
    p.add_argument("--log-dir", default="/tmp", help="where the servers' logs go")
    p.add_argument("--providers", default="cpu", choices=("cpu", "cuda"),
                   help="the servers' ONNX Runtime provider (cuda: every worker opens its own session on the GPU)")
    p.add_argument("--json", help="write the results here")


def run(args) -> int:
    from tqdm import tqdm

    from benchmarks.bench_latency import parse_streams
    from engine.session import ModelSession

    counts = parse_streams(args.streams)
    if args.workers < 2 or args.seconds <= 0 or args.client_procs < 1:
        raise ValueError(f"--workers must be >= 2, --seconds > 0 and --client-procs >= 1, got {args.workers}, "
                         f"{args.seconds}, {args.client_procs}")
    check_chunk_ms(args.chunk_ms)
    meta = ModelSession(None, "cpu").meta
    load1 = os.getloadavg()[0]
    from benchmarks.machine import cpu_description, cpu_parallel_speedup, loopback_message_us

    speedup = cpu_parallel_speedup(args.workers)  # what a second (third, ...) process can get here right now
    host = {"cpu": cpu_description(), "loopback_message_us": loopback_message_us()}
    labels = {1: "workers_1", args.workers: f"workers_{args.workers}"}
    trials: dict[str, dict] = {label: {} for label in labels.values()}
    servers = {}
    try:
        for i, w in enumerate(labels):
            servers[w] = ServerProcess(w, args.port + i, 2 * max(counts),
                                       Path(args.log_dir) / f"kfusion-scaleout-w{w}.log", args.providers)
        with tqdm(total=len(counts) * len(servers), desc="scale-out trials", unit="trial") as bar:
            for k, n in enumerate(counts):
                for w, server in servers.items():
                    bar.set_postfix_str(f"{n} streams, {w} worker(s)")
                    t = _trial(server, n, args.seconds, args.client_procs, seed=k, lookahead_ms=meta.lookahead_ms,
                               client=args.client, chunk_ms=args.chunk_ms)
                    trials[labels[w]][str(n)] = t
                    log.info("%d worker(s), %d streams: %s (server p99 %s ms) %s", w, n, "ok" if t["ok"] else "FAIL",
                             t["server_ms"]["p99"], "; ".join(t["why"]))
                    bar.update(1)
                    time.sleep(SETTLE_S)
    finally:
        for server in servers.values():
            server.stop()
    best = {label: max([int(n) for n, t in tr.items() if t["ok"]], default=0) for label, tr in trials.items()}
    one, many = best[labels[1]], best[labels[args.workers]]
    p99 = {label: {n: tr[str(n)]["server_ms"]["p99"] for n in counts} for label, tr in trials.items()}
    p99_ratio = {n: float(f"{p99[labels[args.workers]][n] / p99[labels[1]][n]:.3g}")  # 3 digits: can be 0.003
                 for n in counts if p99[labels[1]][n] and p99[labels[args.workers]][n]}
    out = {
        "benchmark": "scaleout",
        "date_utc": run_date_utc(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load1_at_start": round(load1, 2),
                    "python": platform.python_version(), f"cpu_parallel_speedup_{args.workers}_procs": speedup,
                    **host},
        "settings": {"streams": counts, "workers": args.workers, "seconds": args.seconds,
                     "client_procs": args.client_procs, "providers": args.providers, "chunk_ms": args.chunk_ms,
                     "server_p99_target_ms": SERVER_P99_TARGET_MS,
                     "model": meta.model_version, "lookahead_ms": meta.lookahead_ms, "client": args.client,
                     "clients": "real websocket streams of real speech paced in real time, on the same CPUs"},
        "streams_within_target": best,
        "ratio_streams_within_target": round(many / one, 2) if one else None,
        "ratio_server_p99_by_streams": p99_ratio,
        "trials": trials,
    }
    text = json.dumps(out, indent=2)
    print(text)
    print(f"streams within target (p99 <= {SERVER_P99_TARGET_MS:g} ms, none late/dropped/lost): "
          f"{one} with 1 process, {many} with {args.workers} (ratio {out['ratio_streams_within_target']})")
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    return 0 if one or many else 1
