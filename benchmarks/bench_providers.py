"""`kfusion bench providers`: ONNX Runtime's CUDA provider against its CPU provider (one thread), same process.

- parity: the demo speech through `infer_track` on each session; the largest and mean landmark difference;
- cost: one model call at batch sizes 1 to 2048, median / p99 / max on each, and the CUDA / CPU ratio.

It needs onnxruntime-gpu and a GPU. Where the CUDA provider is not there it says so and skips (exit 0, no
JSON), so `make bench` on a CPU-only machine keeps the results a GPU machine wrote.
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np

from benchmarks.load_clients import pcts
from benchmarks.machine import run_date_utc

BATCHES = (1, 8, 32, 128, 512, 2048)
WARMUP_CALLS = 10
CALLS_SMALL = 200  # batches up to 128
CALLS_LARGE = 30  # batches above 128 (the CPU takes 20-160 ms a call there)


def add_arguments(p) -> None:
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")


def call_cost(session, batch: int, calls: int) -> dict:
    """Times of `calls` model calls (ms) at `batch` rows of one frame, after WARMUP_CALLS untimed ones."""
    from engine.batcher import silence_batch

    inputs = silence_batch(session, batch)  # cost does not depend on the values (silence vs noise: within 1 %)
    for _ in range(WARMUP_CALLS):
        session.run(*inputs)
    ms = np.empty(calls)
    for i in range(calls):
        t = time.perf_counter()
        session.run(*inputs)
        ms[i] = (time.perf_counter() - t) * 1000.0
    return pcts(ms)


def compare(reference, other, batches=BATCHES) -> dict:
    """Parity on the demo speech and call cost by batch: `other` (CUDA) against `reference` (CPU)."""
    from engine.config import EngineConfig
    from engine.demo import demo_speech_path
    from engine.infer import infer_track, load_audio

    audio, sr = load_audio(demo_speech_path())
    a = infer_track(reference, EngineConfig(), audio, sr)["landmarks"]
    t0 = time.perf_counter()
    b = infer_track(other, EngineConfig(), audio, sr)["landmarks"]
    other_s = time.perf_counter() - t0
    diff = np.abs(a - b)
    parity = {"frames": int(a.shape[0]), "max_abs_px": float(diff.max()), "mean_abs_px": float(diff.mean()),
              "other_infer_s": round(other_s, 3)}
    cost = {}
    for batch in batches:
        calls = CALLS_SMALL if batch <= 128 else CALLS_LARGE
        ref, oth = call_cost(reference, batch, calls), call_cost(other, batch, calls)
        cost[str(batch)] = {"cpu_ms": ref, "cuda_ms": oth, "ratio_cuda_over_cpu_p50": round(oth["p50"] / ref["p50"], 3),
                            "cuda_us_per_row_p50": round(oth["p50"] * 1000.0 / batch, 2)}
    return {"parity": parity, "cost_by_batch": cost}


def run(args) -> int:
    import onnxruntime as ort

    from engine.session import ModelSession

    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError as exc:
        raise ValueError(f"--batches must be comma-separated integers, got {args.batches!r}") from exc
    if not batches or min(batches) < 1:
        raise ValueError(f"--batches must list batch sizes >= 1, got {args.batches!r}")
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        print(f"kfusion bench providers: skipped: it needs onnxruntime-gpu and a GPU; this ONNX Runtime "
              f"{ort.__version__} offers {available}")
        return 0
    t0 = time.perf_counter()
    cpu = ModelSession(providers="cpu")
    cpu_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cuda = ModelSession(providers="cuda")  # refuses a session that fell back to the CPU
    cuda_load_s = time.perf_counter() - t0
    out = {
        "benchmark": "providers",
        "date_utc": run_date_utc(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "onnxruntime": ort.__version__, "gpu": _gpu_name()},
        "settings": {"batches": list(batches), "model": cpu.meta.model_version, "cpu_threads": 1,
                     "lip_seal_pct": cpu.lip_seal_pct},
        "session_load_s": {"cpu": round(cpu_load_s, 3), "cuda": round(cuda_load_s, 3)},
        **compare(cpu, cuda, batches),
    }
    p = out["parity"]
    print(f"parity on the demo speech ({p['frames']} frames): max {p['max_abs_px']:.4f} px, "
          f"mean {p['mean_abs_px']:.5f} px")
    print("batch | CPU p50 / p99 / max ms | CUDA p50 / p99 / max ms | CUDA / CPU (p50)")
    for b, row in out["cost_by_batch"].items():
        c, g = row["cpu_ms"], row["cuda_ms"]
        print(f"{b:>5} | {c['p50']} / {c['p99']} / {c['max']} | {g['p50']} / {g['p99']} / {g['max']} | "
              f"{row['ratio_cuda_over_cpu_p50']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


def _gpu_name() -> str | None:
    import subprocess

    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                           check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None
