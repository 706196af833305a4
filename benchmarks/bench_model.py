"""Streaming model per call and per stream-frame: ONNX Runtime vs torch eager, plus the paper's own model.

Usage: kfusion bench model [--batches 1,8,32,128] [--frames-per-stream 300] [--paper-runs 8] [--json PATH]
Each call carries one frame per stream with its recurrent state; the paper's model runs per 1 s window.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.machine import run_date_utc
from engine.cache import cache_dir

TRAIN_DIR = cache_dir("train")
SPEECH_SECONDS = 20.0
FRAMES_PER_PAPER_WINDOW = 30  # our batch-1 streaming calls timed after each of the paper model's windows
INTERLEAVE_PARTS = 5  # each engine's calls for one batch size run in this many alternating blocks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="ONNX model (default: the one shipped in engine/assets)")
    parser.add_argument(
        "--checkpoint",
        help="torch checkpoint for the torch peer (default: one under "
        f"{TRAIN_DIR} matching the ONNX file, else random weights of the same dims)",
    )
    parser.add_argument("--batches", default="1,8,32,128", help="streams per call, comma-separated")
    parser.add_argument(
        "--frames-per-stream",
        type=int,
        default=300,
        help="calls per batch size for each engine (one frame per stream per call)",
    )
    parser.add_argument(
        "--max-stream-frames",
        type=int,
        default=20_000,
        help="cap on calls x streams per batch size and engine (keeps big batches short)",
    )
    parser.add_argument("--paper-runs", type=int, default=8, help="timed 1 s windows of the paper's model")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper's wav2vec2 model")
    parser.add_argument("--workdir", default=str(cache_dir("bench-model")), help="scratch folder for the speech")


def find_checkpoint(meta) -> tuple[Path | None, str]:
    """A checkpoint under TRAIN_DIR for the ONNX model's meta: same config and version, else same dims."""
    import torch

    from export.model import ModelDims
    from export.predict import CHECKPOINT_FORMAT

    same_dims = []
    for path in sorted(TRAIN_DIR.rglob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            ck = torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError, ValueError) as exc:  # half-written or foreign file
            print(f"  skipping {path}: {type(exc).__name__}")
            continue
        if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
            continue
        if ck.get("config_hash") == meta.config_hash and ck.get("model_version") == meta.model_version:
            return path, "same config and version as the ONNX file"
        dims = ModelDims.from_dict(ck["dims"])
        if (dims.window_hops, dims.n_features, dims.lookahead_ms, dims.state_size) == (
            meta.window_hops,
            meta.n_features,
            meta.lookahead_ms,
            meta.state_size,
        ):
            same_dims.append((path, ck.get("model_version")))
    if same_dims:
        path, version = same_dims[0]
        return path, f"same window and state size as the ONNX file, version {version}"
    return None, "no matching checkpoint"


def torch_peer(meta, explicit: str | None = None):
    """(torch model in eval mode, where it came from): a checkpoint, else random weights of the same dims."""
    import torch

    from export.model import KFusion, ModelDims
    from export.predict import load_checkpoint

    path, why = (Path(explicit), "given") if explicit else find_checkpoint(meta)
    if path is not None:
        model, _, _ = load_checkpoint(path)
        return model, f"{path} ({why})"
    torch.manual_seed(0)
    dims = ModelDims(
        window_hops=meta.window_hops,
        lookahead_ms=meta.lookahead_ms,
        fps=int(meta.fps),
        n_features=meta.n_features,
        feature_version=meta.feature_version,
    )
    if dims.state_size != meta.state_size:
        print(f"  note: ModelDims defaults give state {dims.state_size}, the ONNX file has {meta.state_size}")
    return KFusion(dims).eval(), f"random weights, ModelDims defaults ({why})"


def speech_windows(workdir: Path, meta):
    """Real TTS speech -> model input windows (n, W, F) at the model's fps (the streaming definition)."""
    from benchmarks.bench_features import tts_speech
    from engine import features
    from engine.timing import gather_windows, n_frames

    y = tts_speech(workdir, SPEECH_SECONDS)
    n = n_frames(len(y), int(meta.fps)) - 10  # leave the lookahead inside the audio
    hops = features.extract(y)
    return gather_windows(hops, features.SILENCE, n, int(meta.fps), meta.lookahead_ms, meta.window_hops), y


def _time_engine(step, windows, batch: int, calls: int, identity, emotion, state0):
    """(wall, thread CPU) seconds per call of step(feats (B,1,W,F), identity, emotion, state) -> (lm, state).

    Thread CPU time counts only this thread's own work, so it is far less sensitive than wall time to
    other processes on a shared machine (both engines compute on the calling thread: one intra-op thread).
    """
    import numpy as np

    n = len(windows)
    offsets = (np.arange(batch) * 37) % n  # each stream at its own place in the speech
    state = state0
    wall, cpu = [], []
    step(windows[offsets][:, None], identity, emotion, state)  # first call allocates
    for k in range(calls):
        feats = np.ascontiguousarray(windows[(offsets + k) % n][:, None])  # (B, 1, W, F)
        t, c = time.perf_counter(), time.thread_time()
        _, state = step(feats, identity, emotion, state)
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    return wall, cpu


def _agreement(session, model, windows, meta) -> float:
    """Largest |ORT - torch| landmark difference (px) over 60 streamed frames of 4 streams."""
    import numpy as np
    import torch

    b = 4
    ident = np.repeat(meta.mean_face[None], b, 0).astype(np.float32)
    emo = np.zeros((b, meta.n_emotions), np.float32)
    s_ort = s_pt = np.zeros((b, meta.state_size), np.float32)
    worst = 0.0
    with torch.no_grad():
        for k in range(60):
            feats = np.ascontiguousarray(windows[(np.arange(b) * 37 + k) % len(windows)][:, None])
            lm_o, s_ort = session.run_raw(feats, ident, s_ort, emo)  # the network alone, as torch
            lm_t, s_t = model(
                torch.from_numpy(feats),
                torch.from_numpy(ident),
                torch.from_numpy(emo),
                torch.from_numpy(s_pt),
            )
            s_pt = s_t.numpy()
            worst = max(worst, float(np.abs(lm_o - lm_t.numpy()).max()))
    return worst


def _paper(args, y, mean_face, stats, ours_b1_calls, ours_batched_ms: float | None) -> dict:
    """Time the paper's model per 1 s window, with our batch-1 streaming calls (seconds each, from
    `ours_b1_calls()`) timed between its windows so that the ratio sees the same machine load."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from benchmarks.paper_peer import FRAMES_PER_WINDOW, WINDOW_SAMPLES, PaperPeer

    t = time.perf_counter()
    peer = PaperPeer.build(seed=0)
    build_s = time.perf_counter() - t
    counts = peer.parameter_counts()
    ident = torch.from_numpy(np.asarray(mean_face, np.float32))[None]  # (1, 68, 2)
    starts = np.linspace(0, len(y) - WINDOW_SAMPLES, args.paper_runs + 1).astype(int)
    peer(torch.from_numpy(y[starts[0] : starts[0] + WINDOW_SAMPLES])[None], ident)  # warm-up window
    times, cpu, ours, ours_cpu = [], [], [], []
    for s in tqdm(starts[1:], desc="paper model, 1 s windows", unit="window"):
        audio = torch.from_numpy(np.ascontiguousarray(y[s : s + WINDOW_SAMPLES]))[None]
        t, c = time.perf_counter(), time.thread_time()
        out = peer(audio, ident)
        times.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
        wall_b1, cpu_b1 = ours_b1_calls()
        ours += wall_b1
        ours_cpu += cpu_b1
    ours_ms = stats([x * 1e3 for x in ours])
    ours_frame_ms = ours_ms["median"]
    window_cpu_ms = stats([x * 1e3 for x in cpu])
    if out.shape != (1, FRAMES_PER_WINDOW, 68, 2) or not torch.isfinite(out).all():
        raise ValueError(f"paper model gave {tuple(out.shape)} (finite: {bool(torch.isfinite(out).all())})")
    window_ms = stats([x * 1e3 for x in times])
    heads_s = []
    with torch.no_grad():
        w2v = peer.encoder(torch.from_numpy(np.ascontiguousarray(y[:WINDOW_SAMPLES]))[None]).last_hidden_state
        for _ in range(len(times)):  # the heads alone, on wav2vec2's output (B, 49, 768)
            t = time.perf_counter()
            peer.heads(w2v, ident)
            heads_s.append(time.perf_counter() - t)
    res = {
        "built_with": peer.built_with,
        "build_s": build_s,
        "params": counts,
        "runs": len(times),
        "window_ms": window_ms,
        "heads_ms": stats([x * 1e3 for x in heads_s]),
        "window_cpu_ms": window_cpu_ms,
        "ours_b1_interleaved_ms": ours_ms,
        "ours_b1_interleaved_cpu_ms": stats([x * 1e3 for x in ours_cpu]),
        "ratio_live_vs_ours_b1_cpu": window_cpu_ms["median"] / stats([x * 1e3 for x in ours_cpu])["median"],
        "offline_frame_ms": window_ms["median"] / FRAMES_PER_WINDOW,
        "live_frame_ms": window_ms["median"],  # the 1 s window recomputed for every new frame
        "live_compute_s_per_s": window_ms["median"] * FRAMES_PER_WINDOW / 1e3,
        "ratio_live_vs_ours_b1": window_ms["median"] / ours_frame_ms,
        "ratio_offline_vs_ours_b1": window_ms["median"] / FRAMES_PER_WINDOW / ours_frame_ms,
    }
    if ours_batched_ms is not None:
        res["ratio_live_vs_ours_batched"] = window_ms["median"] / ours_batched_ms
    return res


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import onnxruntime as ort
    import torch
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm

    from benchmarks.bench_features import _machine, _stats
    from engine import features
    from engine.session import ModelSession

    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not batches or min(batches) < 1:
        raise ValueError(f"--batches must be positive integers, got {args.batches!r}")
    if args.frames_per_stream < 10 or args.paper_runs < 1:
        raise ValueError(
            "--frames-per-stream must be >= 10 and --paper-runs >= 1, got "
            f"{args.frames_per_stream} and {args.paper_runs}"
        )
    threadpool_limits(1)
    torch.set_num_threads(1)
    features.warmup()
    session = ModelSession(args.model, providers="cpu")
    meta = session.meta
    model, source = torch_peer(meta, args.checkpoint)
    windows, y = speech_windows(Path(args.workdir), meta)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"machine: {_machine()}")
    print(f"versions: onnxruntime {ort.__version__}, torch {torch.__version__}, numpy {np.__version__}")
    print(
        f"model: {session.path} (version {meta.model_version}, state {meta.state_size}, window "
        f"{meta.window_hops} hops x {meta.n_features} features); torch peer: {source}, {n_params:,} params"
    )
    print(
        f"settings: batches {batches}, {args.frames_per_stream} calls per batch (capped at "
        f"{args.max_stream_frames} stream-frames), one frame per stream per call, state carried; "
        f"ORT 1 intra-op thread, spinning off; torch eager 1 thread, no_grad; {len(windows)} windows "
        f"of {SPEECH_SECONDS:.0f} s TTS speech"
    )

    def ort_step(feats, ident, emo, state):
        return session.run_raw(feats, ident, state, emo)  # the network alone (no lip seal), as torch

    def torch_step(feats, ident, emo, state):
        with torch.no_grad():
            lm, st = model(
                torch.from_numpy(feats),
                torch.from_numpy(ident),
                torch.from_numpy(emo),
                torch.from_numpy(state),
            )
        return lm.numpy(), st.numpy()

    results = {
        "date_utc": run_date_utc(),
        "machine": _machine(),
        "model": str(session.path),
        "model_version": meta.model_version,
        "torch_peer": source,
        "settings": {"batches": batches, "speech_s": SPEECH_SECONDS},
        "batches": {},
    }
    for b in tqdm(batches, desc="batch sizes", unit="batch"):
        calls = max(10, min(args.frames_per_stream, args.max_stream_frames // b))
        ident = np.repeat(meta.mean_face[None], b, 0).astype(np.float32)
        emo = np.zeros((b, meta.n_emotions), np.float32)
        state0 = np.zeros((b, meta.state_size), np.float32)
        timed = {"ort": ([], []), "torch": ([], [])}
        for part in range(INTERLEAVE_PARTS):  # alternate engines so both see the same machine load
            n = calls // INTERLEAVE_PARTS + (part < calls % INTERLEAVE_PARTS)
            for name, step in (("ort", ort_step), ("torch", torch_step)):
                wall, cpu = _time_engine(step, windows, b, n, ident, emo, state0)
                timed[name][0].extend(wall)
                timed[name][1].extend(cpu)
        row = {"calls": calls}
        for name, (wall, cpu) in timed.items():
            row[name] = {
                "call_ms": _stats([x * 1e3 for x in wall]),
                "stream_frame_ms": _stats([x * 1e3 / b for x in wall]),
                "call_cpu_ms": _stats([x * 1e3 for x in cpu]),
            }
        row["torch_over_ort"] = row["torch"]["call_ms"]["median"] / row["ort"]["call_ms"]["median"]
        row["torch_over_ort_cpu"] = (
            row["torch"]["call_cpu_ms"]["median"] / row["ort"]["call_cpu_ms"]["median"]
        )
        results["batches"][str(b)] = row
    ckpt_matches = "same config" in source
    if ckpt_matches:
        results["max_abs_diff_px"] = _agreement(session, model, windows, meta)

    print(
        f"{'wall ms':<24}{'call med':>9}{'p99':>9}{'max':>9} | {'stream-frame med':>16}{'p99':>9}"
        f" | {'CPU ms/call med':>15}"
    )
    for b, row in results["batches"].items():
        for name in ("ort", "torch"):
            c, f, u = row[name]["call_ms"], row[name]["stream_frame_ms"], row[name]["call_cpu_ms"]
            label = f"{'ORT' if name == 'ort' else 'torch'} B={b} ({row['calls']} calls)"
            print(
                f"{label:<24}{c['median']:>9.3f}{c['p99']:>9.3f}{c['max']:>9.3f} | "
                f"{f['median']:>16.4f}{f['p99']:>9.4f} | {u['median']:>15.3f}"
            )
        print(
            f"  ratio torch/ORT at B={b}: {row['torch_over_ort']:.2f}x wall, "
            f"{row['torch_over_ort_cpu']:.2f}x CPU (ORT/torch {1 / row['torch_over_ort']:.2f} wall)"
        )
    if ckpt_matches:
        print(
            f"ORT vs torch agreement: max |diff| {results['max_abs_diff_px']:.2e} px "
            "over 60 frames x 4 streams"
        )

    big = str(max(batches))
    ours_big = results["batches"][big]["ort"]["stream_frame_ms"]["median"] if len(batches) > 1 else None
    if not args.no_paper:
        ident1, emo1, state1 = (
            meta.mean_face[None].astype(np.float32),
            np.zeros((1, meta.n_emotions), np.float32),
            np.zeros((1, meta.state_size), np.float32),
        )

        def ours_b1_calls():
            return _time_engine(ort_step, windows, 1, FRAMES_PER_PAPER_WINDOW, ident1, emo1, state1)

        p = _paper(args, y, meta.mean_face, _stats, ours_b1_calls, ours_big)
        ours_b1 = p["ours_b1_interleaved_ms"]["median"]
        results["paper_peer"] = p
        w = p["window_ms"]
        print(
            f"paper model (wav2vec2-base + transformer/BiLSTM/conv/KAN heads, {p['built_with']}, "
            f"{p['params']['encoder']:,} + {p['params']['heads']:,} params, random weights, torch eager "
            f"1 thread, {p['runs']} timed windows after 1 warm-up):"
        )
        print(
            f"  1 s window -> 30 frames: median {w['median']:.1f} ms, p99 {w['p99']:.1f}, max {w['max']:.1f} "
            f"(heads alone: median {p['heads_ms']['median']:.1f} ms; CPU median "
            f"{p['window_cpu_ms']['median']:.1f} ms)"
        )
        print(
            f"  offline (once per window): {p['offline_frame_ms']:.2f} ms per frame = "
            f"{p['ratio_offline_vs_ours_b1']:.0f}x our B=1 streaming frame ({ours_b1:.3f} ms median, "
            f"{FRAMES_PER_PAPER_WINDOW} calls timed after each window)"
        )
        print(
            f"  live (window recomputed each frame): {p['live_frame_ms']:.1f} ms per frame, "
            f"{p['live_compute_s_per_s']:.2f} s of compute per second of audio = "
            f"{p['ratio_live_vs_ours_b1']:.0f}x our B=1 streaming frame "
            f"({p['ratio_live_vs_ours_b1_cpu']:.0f}x in CPU time)"
        )
        if ours_big is not None:
            print(
                f"  vs our per stream-frame at B={big} ({ours_big:.4f} ms): "
                f"{p['ratio_live_vs_ours_batched']:.0f}x (live)"
            )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
