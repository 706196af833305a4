"""Live latency under load: N real websocket clients (separate processes) send real speech in real time.

Usage: kfusion bench latency --streams 1,16,64,128 --seconds 10 [--json out.json] [--chunk-ms 20]
server_ms: arrival of the chunk that completes a frame's audio -> the frame handed to the socket.
end_to_end_ms: the client's send of that chunk -> the frame's arrival at the client.
audio_lag_ms: the moment the frame's speech would have been spoken into a mic -> the frame's arrival.
Peer (same run): one bare model call (batch 1, one frame) on the same session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
import urllib.request

import numpy as np

from benchmarks.load_clients import pcts
from benchmarks.machine import run_date_utc
from engine import eventloop

log = logging.getLogger("kfusion.bench.latency")

MAX_CLIENT_PROCS = 4
STARTUP_TIMEOUT_S = 30.0
LATE_MARGIN_MS = 5.0  # a frame is late when audio_lag > chunk + lookahead + this


def _speech() -> tuple[np.ndarray, int]:
    from engine.demo import demo_speech_path
    from engine.infer import load_audio

    audio, sr = load_audio(demo_speech_path())
    return audio.mean(axis=1).astype(np.float32), sr


def prepare_clips(n_streams: int, seconds: float, chunk_ms: int, seed: int) -> tuple[list[list[bytes]], int, np.ndarray]:
    """(pcm16 chunks per stream, each looping the speech from its own offset; sample rate; start offsets s)."""
    from engine import protocol as P

    audio, sr = _speech()
    chunk = sr * chunk_ms // 1000
    n_chunks = int(seconds * 1000 / chunk_ms)
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n_streams):
        idx = (int(rng.integers(0, len(audio))) + np.arange(n_chunks * chunk)) % len(audio)
        clips.append([P.encode_audio(b, "pcm16") for b in audio[idx].reshape(n_chunks, chunk)])
    offsets = rng.uniform(0, chunk_ms / 1000.0, n_streams)  # clients are not in lock-step
    return clips, sr, offsets


def _client_proc(url: str, n_streams: int, seconds: float, chunk_ms: int, seed: int, out_q, ready, go) -> None:
    """One client process: n_streams websocket streams, each looping the speech from its own offset.

    All imports and audio preparation happen before `ready` is signalled; streaming starts on `go`,
    so no process is still starting up while others measure.
    """
    from clients.stream_client import stream_audio
    from engine import protocol as P

    clips, sr, offsets = prepare_clips(n_streams, seconds, chunk_ms, seed)
    ready.release()
    go.wait()

    async def one(k: int) -> dict:
        await asyncio.sleep(float(offsets[k]))
        try:
            r = await stream_audio(url, clips[k], sr, pace_s=chunk_ms / 1000.0, open_timeout_s=60.0)
        except (OSError, TimeoutError, P.ProtocolError) as exc:  # refused or broken: report, do not hide
            return {"error": f"{type(exc).__name__}: {exc}"}
        # plain lists only: asyncio.run's shutdown reprs finished tasks, and arrays make that very slow
        return {"frames": len(r.index), "e2e": r.e2e_ms, "lag": r.lag_ms, "server": r.server_ms,
                "dropped": (r.end.dropped or 0) if r.end else 0, "error": r.error,
                "expected": None if r.end is None else r.end.frames, "close": r.close_code}

    async def main():
        return await asyncio.gather(*(one(k) for k in range(n_streams)))

    cpu0 = time.process_time()
    out = eventloop.run(main())  # uvloop when installed, as `kfusion stream` uses
    out_q.put({"streams": out, "cpu_s": time.process_time() - cpu0})


async def _run_load(cfg, n_streams: int, seconds: float, chunk_ms: int) -> dict:
    from engine.batcher import warm_up
    from engine.server import LandmarkServer
    from engine.session import ModelSession

    session = ModelSession(cfg.model_path, cfg.providers, cfg.lip_seal_pct)
    warm_up(session)
    # peer: a bare model call, batch 1, one frame, on the same session
    meta = session.meta
    feats = np.zeros((1, 1, meta.window_hops, meta.n_features), np.float32)
    ident, state = meta.mean_face[None].astype(np.float32), session.initial_state(1)
    bare = []
    for _ in range(300):
        t = time.perf_counter()
        session.run(feats, ident, state)
        bare.append((time.perf_counter() - t) * 1000.0)
    from benchmarks.bench_capacity import speed_probe_us

    probe = speed_probe_us(session)  # how fast the shared host is right now (it swings 2x)
    server = LandmarkServer(cfg, session=session)
    await server.start()
    url = f"ws://{cfg.host}:{server.port}/ws"
    n_procs = min(MAX_CLIENT_PROCS, n_streams)
    per = [n_streams // n_procs + (1 if i < n_streams % n_procs else 0) for i in range(n_procs)]
    ctx = mp.get_context("spawn")
    q, ready, go = ctx.Queue(), ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_client_proc, args=(url, k, seconds, chunk_ms, 1000 + i, q, ready, go), daemon=True)
             for i, k in enumerate(per)]
    for p in procs:
        p.start()
    loop = asyncio.get_running_loop()
    for _ in procs:  # every client process has imported and prepared its audio
        if not await loop.run_in_executor(None, ready.acquire, True, STARTUP_TIMEOUT_S * 4):
            raise ValueError("a client process did not get ready in time")
    go.set()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    results, client_cpu_s = [], 0.0
    from tqdm import tqdm

    with tqdm(total=n_procs, desc=f"latency {n_streams} streams", unit="proc") as bar:
        for _ in procs:
            got = await loop.run_in_executor(None, q.get, True, seconds + 120.0)
            results.extend(got["streams"])
            client_cpu_s += got["cpu_s"]
            bar.update(1)
    server_cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    for p in procs:
        p.join(10)
    calls, rows = server.batcher.calls, server.batcher.rows
    frame_log = np.asarray(server.frame_log, np.float64).reshape(-1, 6)
    await server.stop()
    return {"results": results, "frame_log": frame_log, "bare_ms": bare, "calls": calls, "rows": rows,
            "speed_probe_us_per_row": probe,
            "cpu": {"server_s": round(server_cpu_s, 2), "clients_s": round(client_cpu_s, 2), "wall_s": round(wall_s, 2),
                    "server_ms_per_stream_second": round(1000 * server_cpu_s / (n_streams * seconds), 2)},
            "lookahead_ms": meta.lookahead_ms, "model_version": meta.model_version,
            "lip_seal_pct": session.lip_seal_pct, "provider": session.providers[0]}


def measure_startup(port: int, providers: str = "auto") -> dict:
    """Seconds from launching `kfusion serve` to /healthz answering, and to the first frame."""
    from websockets.sync.client import connect

    from engine import protocol as P

    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--port", str(port),
                             "--providers", providers], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        healthz = None
        while time.perf_counter() - t0 < STARTUP_TIMEOUT_S:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        healthz = time.perf_counter() - t0
                        break
            except OSError:
                time.sleep(0.02)  # the server process is still starting: nothing to wait on but time
        if healthz is None:
            raise ValueError(f"kfusion serve did not answer /healthz within {STARTUP_TIMEOUT_S} s")
        with connect(f"ws://127.0.0.1:{port}/ws", compression=None) as ws:
            ws.send(P.encode_message(P.Start(sample_rate=16000, format="pcm16")))
            ws.recv()
            ws.send(np.zeros(1600 + 1280, np.int16).tobytes())  # 100 ms plus the lookahead
            while not isinstance(ws.recv(), bytes):
                pass
        first = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)
    return {"healthz_s": round(healthz, 3), "first_frame_s": round(first, 3)}


CDF_QUANTILES = np.linspace(0.0, 100.0, 401)  # percent; the CDF plots of benchmarks/report.py read these


def _cdf(values) -> list[float]:
    v = np.asarray(values, np.float64)
    return [] if not v.size else [round(float(x), 3) for x in np.percentile(v, CDF_QUANTILES)]


def parse_streams(text: str) -> list[int]:
    """'1,16,64,128' -> [1, 16, 64, 128]; every count >= 1."""
    try:
        counts = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError as exc:
        raise ValueError(f"--streams must be a comma-separated list of integers, got {text!r}") from exc
    if not counts or min(counts) < 1:
        raise ValueError(f"--streams must list stream counts >= 1, got {text!r}")
    return counts


def add_arguments(p) -> None:
    p.add_argument("--streams", default="1,16,64,128", help="stream count, or a comma-separated sweep")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--chunk-ms", type=int, default=20)
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument("--port", type=int, default=8790)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--lip-seal-pct", type=float, default=None,
                   help="the server's lip seal (default: the model's own; 0 measures the engine without it)")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up measurement")
    p.add_argument("--providers", default="auto", choices=("auto", "cpu", "cuda"),
                   help="the server's ONNX Runtime provider, as `kfusion serve --providers` (default: CUDA when present)")


def _one(args, n_streams: int) -> tuple[dict, list[str]]:
    """One load run at n_streams: percentiles, per-stage breakdown, CDF points, peer ratio."""
    from engine.config import EngineConfig

    cfg = EngineConfig(port=args.port, batch_wait_ms=args.batch_wait_ms, max_streams=max(256, n_streams),
                       lip_seal_pct=args.lip_seal_pct, providers=args.providers)
    load1 = os.getloadavg()[0]
    r = eventloop.run(_run_load(cfg, n_streams, args.seconds, args.chunk_ms), cfg.event_loop)
    ok = [x for x in r["results"] if not x.get("error")]
    errors = [x["error"] for x in r["results"] if x.get("error")]
    cat = lambda key: [v for x in ok for v in x[key]]
    fl = r["frame_log"]
    budget_ms = args.chunk_ms + r["lookahead_ms"] + LATE_MARGIN_MS
    lag = cat("lag")
    server_ms = pcts(cat("server"))
    bare = pcts(r["bare_ms"])
    return {
        "streams": n_streams,
        "load1_at_start": round(load1, 2),
        "speed_probe_us_per_row": r["speed_probe_us_per_row"],
        "client_procs": min(MAX_CLIENT_PROCS, n_streams),
        "model": r["model_version"],
        "lookahead_ms": r["lookahead_ms"],
        "lip_seal_pct": r["lip_seal_pct"],
        "provider": r["provider"],
        "frames": int(sum(x["frames"] for x in ok)),
        "frames_expected": int(sum(x["expected"] or 0 for x in ok)),
        "server_ms": server_ms,
        "end_to_end_ms": pcts(cat("e2e")),
        "audio_lag_ms": pcts(lag),
        "dropped": int(sum(x["dropped"] for x in ok)),
        "late": int(sum(v > budget_ms for v in lag)),
        "late_budget_ms": budget_ms,
        "stages_ms": {"features": pcts(fl[:, 2]), "queue_batch_wait": pcts(fl[:, 3]), "model": pcts(fl[:, 4]),
                      "send_queue": pcts(fl[:, 5])},
        "batches": {"calls": r["calls"], "mean_rows": round(r["rows"] / max(1, r["calls"]), 2)},
        "cpu": r["cpu"],
        "peer_bare_model_ms": bare,
        "ratio_server_p50_to_bare_model_p50": round(server_ms["p50"] / bare["p50"], 2) if server_ms["p50"] else None,
        "cdf": {"quantiles_pct": [round(float(q), 2) for q in CDF_QUANTILES], "server_ms": _cdf(cat("server")),
                "end_to_end_ms": _cdf(cat("e2e"))},
        "errors": errors[:10],
    }, errors


def run(args) -> int:
    counts = parse_streams(args.streams)
    if args.seconds <= 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("kfusion.server").setLevel(logging.WARNING)
    load1 = os.getloadavg()[0]
    startup = None if args.no_startup else measure_startup(args.port + 1, args.providers)
    runs, failed = [], False
    for n in counts:
        one, errors = _one(args, n)
        runs.append(one)
        failed |= bool(errors)
        short = {k: one[k] for k in ("streams", "provider", "server_ms", "end_to_end_ms", "audio_lag_ms", "dropped", "late")}
        short["stages_ms_p50"] = {k: v["p50"] for k, v in one["stages_ms"].items()}
        print(json.dumps(short), flush=True)
    out = {
        "benchmark": "latency",
        "date_utc": run_date_utc(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load1_at_start": round(load1, 2),
                    "python": platform.python_version()},
        "settings": {"streams": counts, "seconds": args.seconds, "chunk_ms": args.chunk_ms,
                     "batch_wait_ms": args.batch_wait_ms, "model": runs[0]["model"],
                     "lookahead_ms": runs[0]["lookahead_ms"], "lip_seal_pct": runs[0]["lip_seal_pct"],
                     "provider": runs[0]["provider"], "max_client_procs": MAX_CLIENT_PROCS},
        "runs": runs,
        "startup": startup,
    }
    text = json.dumps({k: v for k, v in out.items() if k != "runs"} | {"runs": [
        {k: v for k, v in r.items() if k != "cdf"} for r in runs]}, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(json.dumps(out, indent=1) + "\n")
    return 0 if not failed else 1
