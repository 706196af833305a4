"""Process start to first landmark frame (ONNX Runtime vs torch eager) and to `kfusion serve` /healthz.

Usage: kfusion bench coldstart [--runs 5] [--serve-runs 3] [--json PATH]
Each run is a fresh Python process. The engine's rows use the feature kernel's ahead-of-time build (built here
first when missing); "numba warm" shares a filled NUMBA_CACHE_DIR, "numba cold" starts from an empty one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import run_date_utc
from engine import kernel_build
from engine.cache import cache_dir

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 1.5  # /healthz and the first frame within this long of process start
CHUNK_MS = 20  # PCM pushed per call, as a live client sends it
SERVE_TIMEOUT_S = 60.0
POLL_S = 0.005
CHILD = "from benchmarks.bench_coldstart import child; child({engine!r}, {speech!r}, {ckpt!r})"
# does `kfusion serve` import torch while building its parser? (it should not: start-up time)
SERVE_IMPORTS_TORCH = (
    "import sys; from engine.cli import build_parser; build_parser(['serve']); print('torch' in sys.modules)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=5, help="warm new processes per engine")
    parser.add_argument("--serve-runs", type=int, default=3, help="`kfusion serve` starts timed")
    parser.add_argument(
        "--checkpoint", help="torch checkpoint for the torch peer (default: as `bench model`)"
    )
    parser.add_argument(
        "--workdir", default=str(cache_dir("bench-coldstart")), help="scratch folder for the speech"
    )


class TorchSession:
    """ModelSession.run on a torch model (the peer), for Stream.process."""

    def __init__(self, model) -> None:
        self.model = model

    def run(self, feats, identity, state, emotion):
        import torch

        with torch.no_grad():
            lm, st = self.model(*(torch.from_numpy(a) for a in (feats, identity, emotion, state)))
        return lm.numpy(), st.numpy()


def child(engine: str, speech_path: str, checkpoint: str | None) -> None:
    """Runs in the new process: import, load, warm up, push 20 ms chunks until a frame; print milestones."""
    marks = {}
    import numpy as np

    from engine import features
    from engine.config import EngineConfig
    from engine.stream import Stream

    if engine == "ort":
        import onnxruntime  # noqa: F401 - imported by ModelSession anyway; here so the stages compare

        from engine.session import ModelSession

        marks["imports"] = time.perf_counter()
        session = ModelSession(providers="cpu")
        meta = session.meta
    else:  # the peer: the same steps with torch eager instead of ONNX Runtime
        import torch

        from engine.session import ModelMeta
        from export.model import EMOTIONS, KFusion, ModelDims
        from export.predict import load_checkpoint

        torch.set_num_threads(1)
        marks["imports"] = time.perf_counter()
        if checkpoint:
            model, dims, ck = load_checkpoint(checkpoint)
            mean_face = np.asarray(ck["mean_face"], np.float32)
        else:
            torch.manual_seed(0)
            dims = ModelDims()
            model = KFusion(dims).eval()
            mean_face = np.full((68, 2), 128.0, np.float32)
        meta = ModelMeta(
            "1",
            "torch",
            "",
            16000,
            160,
            dims.n_features,
            dims.feature_version,
            float(dims.fps),
            dims.lookahead_ms,
            dims.window_hops,
            dims.state_size,
            len(EMOTIONS),
            EMOTIONS,
            "ibug68",
            "canonical256",
            mean_face,
        )
        session = TorchSession(model)

    marks["model_loaded"] = time.perf_counter()
    features.warmup()
    marks["features_warm"] = time.perf_counter()
    speech = np.load(speech_path)  # (N,) float32 16 kHz real speech
    stream = Stream(EngineConfig(), meta)
    chunk = 16000 * CHUNK_MS // 1000
    frames = []
    for start in range(0, len(speech), chunk):
        frames = stream.process(session, speech[start : start + chunk, None])
        if frames:
            break
    marks["first_frame"] = time.perf_counter()
    marks["cpu_s"] = time.process_time()  # CPU seconds of this process (all threads) since it started
    if not frames or frames[0].landmarks.shape != (68, 2) or not np.isfinite(frames[0].landmarks).all():
        raise ValueError(f"{engine}: no valid first frame from {len(speech)} samples of speech")
    marks["audio_ms_pushed"] = (start + chunk) / 16.0
    print(json.dumps(marks))


def _spawn_child(engine: str, speech: Path, ckpt: str | None, env: dict) -> dict:
    """Seconds from spawn to each milestone of `child`, measured on the shared monotonic clock."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(engine=engine, speech=str(speech), ckpt=ckpt)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{engine} child failed ({out.returncode}): {out.stderr[-2000:]}")
    marks = json.loads(out.stdout.strip().splitlines()[-1])
    res = {k: v - t0 for k, v in marks.items() if k not in ("audio_ms_pushed", "cpu_s")}
    res["audio_ms_pushed"] = marks["audio_ms_pushed"]
    res["first_frame_cpu"] = marks["cpu_s"]
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthz(port: int) -> bool:
    """One raw HTTP GET /healthz; True on a 200 answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(
                f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a live process has used, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime in clock ticks


def _serve_to_healthz(env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds from spawning `kfusion serve` to its first 200 on /healthz; then it is stopped."""
    kfusion = Path(sys.executable).with_name("kfusion")
    cmd = [str(kfusion), "serve"] if kfusion.is_file() else [sys.executable, "-m", "engine.cli", "serve"]
    port = _free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while time.perf_counter() - t0 < SERVE_TIMEOUT_S:
            if _healthz(port):
                return time.perf_counter() - t0, _cpu_s(proc.pid)
            if proc.poll() is not None:
                raise RuntimeError(
                    f"kfusion serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}"
                )
            time.sleep(POLL_S)
        raise RuntimeError(f"kfusion serve did not answer /healthz within {SERVE_TIMEOUT_S:.0f} s")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _spawn_s(cmd: list[str], env: dict) -> float:
    """Seconds to run a command to completion in a new process."""
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _kernel_dir(scratch: str) -> Path:
    """The folder holding a current ahead-of-time feature-kernel build (built into scratch when missing)."""
    found = kernel_build.find_build(kernel_build.build_key())
    if found is not None:
        return found.parent
    print("building the feature kernel ahead of time (not installed yet) ...", flush=True)
    return kernel_build.build(Path(scratch) / "kernels").parent


def _summary(runs: list[dict], key: str) -> dict:
    from benchmarks.bench_features import _stats

    return _stats([r[key] for r in runs])


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from benchmarks.bench_features import _machine, tts_speech
    from benchmarks.bench_model import find_checkpoint
    from engine.session import ModelSession

    if args.runs < 1 or args.serve_runs < 0:
        raise ValueError(f"--runs must be >= 1 and --serve-runs >= 0, got {args.runs} and {args.serve_runs}")
    workdir = Path(args.workdir)
    speech = workdir / "speech16k.npy"
    np.save(speech, tts_speech(workdir, 3.0))
    meta = ModelSession(providers="cpu").meta
    ckpt = args.checkpoint
    if ckpt is None:
        path, _ = find_checkpoint(meta)
        ckpt = None if path is None else str(path)
    try:
        import engine.server  # noqa: F401 - only checks that the server can be started

        serve_ok = args.serve_runs > 0
        serve_note = "" if serve_ok else "skipped (--serve-runs 0)"
    except ImportError as exc:
        serve_ok, serve_note = False, f"unavailable: engine.server does not import ({exc})"
    print(f"machine: {_machine()}")
    print(
        f"settings: {args.runs} warm runs per engine, 1 cold run (empty NUMBA_CACHE_DIR; OS file cache "
        "warm), "
        f"{args.serve_runs} serve runs; speech pushed in {CHUNK_MS} ms chunks as fast as it is taken "
        f"(audio arrival time not included); torch peer: {ckpt or 'random weights'}; OMP_NUM_THREADS=1"
    )

    results: dict = {
        "date_utc": run_date_utc(),
        "machine": _machine(),
        "settings": {
            "runs": args.runs,
            "serve_runs": args.serve_runs,
            "chunk_ms": CHUNK_MS,
            "torch_checkpoint": ckpt,
        },
        "target_s": TARGET_S,
    }
    with tempfile.TemporaryDirectory(prefix="numba-cold-") as cache_dir:
        base = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        jit_env = dict(base, **{kernel_build.MODE_ENV: "jit"})
        env = dict(base, **{kernel_build.MODE_ENV: "aot", kernel_build.KERNEL_DIR_ENV: str(_kernel_dir(cache_dir))})
        print("cold run (numba compiles the feature kernels) ...", flush=True)
        cold = _spawn_child("ort", speech, ckpt, jit_env)
        ort_runs, jit_runs, torch_runs, serve_runs, bare_runs = [], [], [], [], []
        for i in tqdm(range(args.runs), desc="warm rounds", unit="round"):
            ort_runs.append(_spawn_child("ort", speech, ckpt, env))
            jit_runs.append(_spawn_child("ort", speech, ckpt, jit_env))
            torch_runs.append(_spawn_child("torch", speech, ckpt, env))
            bare_runs.append({"python_bare": _spawn_s([sys.executable, "-c", "pass"], env)})
            if serve_ok and i < args.serve_runs:
                wall, cpu = _serve_to_healthz(env)
                serve_runs.append({"healthz": wall, "healthz_cpu": cpu})
        serve_torch = subprocess.run(
            [sys.executable, "-c", SERVE_IMPORTS_TORCH],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )

    stages = ("imports", "model_loaded", "features_warm", "first_frame")
    for name, runs in (("ort", ort_runs), ("ort_numba_warm", jit_runs), ("torch", torch_runs)):
        results[name] = {k: _summary(runs, k) for k in stages}
    results["ort_cold"] = {k: cold[k] for k in stages}
    results["torch_over_ort_first_frame"] = (
        results["torch"]["first_frame"]["median"] / results["ort"]["first_frame"]["median"]
    )
    results["serve_healthz_s"] = _summary(serve_runs, "healthz") if serve_runs else serve_note
    if serve_runs:
        results["serve_healthz_cpu_s"] = _summary(serve_runs, "healthz_cpu")
    results["numba_warm_over_aot_first_frame"] = (
        results["ort_numba_warm"]["first_frame"]["median"] / results["ort"]["first_frame"]["median"]
    )
    for name, runs in (("ort", ort_runs), ("ort_numba_warm", jit_runs), ("torch", torch_runs)):
        results[name]["first_frame_cpu"] = _summary(runs, "first_frame_cpu")
    results["ort_cold"]["first_frame_cpu"] = cold["first_frame_cpu"]
    results["python_bare_s"] = _summary(bare_runs, "python_bare")
    results["serve_parser_imports_torch"] = serve_torch.stdout.strip() == "True"
    results["audio_ms_pushed_before_first_frame"] = ort_runs[0]["audio_ms_pushed"]

    print(
        f"{'seconds from spawn (medians)':<32}{'imports':>9}{'loaded':>9}{'warm':>9}{'frame':>9}{'p99':>9}"
        f"{'max':>9}{'CPU s':>9}"
    )
    for label, key in (
        (f"ORT, built kernel (n={args.runs})", "ort"),
        (f"ORT, numba warm (n={args.runs})", "ort_numba_warm"),
        (f"torch eager (n={args.runs})", "torch"),
    ):
        r = results[key]
        print(
            f"{label:<32}"
            + "".join(f"{r[k]['median']:>9.3f}" for k in stages)
            + f"{r['first_frame']['p99']:>9.3f}{r['first_frame']['max']:>9.3f}"
            + f"{r['first_frame_cpu']['median']:>9.3f}"
        )
    print(
        f"{'ORT, numba cold (n=1)':<32}"
        + "".join(f"{cold[k]:>9.3f}" for k in stages)
        + f"{'':>18}{cold['first_frame_cpu']:>9.3f}"
    )
    print(
        f"first frame: torch/ORT ratio {results['torch_over_ort_first_frame']:.2f}x, numba warm/built kernel "
        f"{results['numba_warm_over_aot_first_frame']:.2f}x; "
        f"{results['audio_ms_pushed_before_first_frame']:.0f} ms of audio pushed before frame 0 was due"
    )
    if serve_runs:
        h = results["serve_healthz_s"]
        print(
            f"kfusion serve -> /healthz 200: median {h['median']:.3f} s, p99 {h['p99']:.3f}, "
            f"max {h['max']:.3f} (n={len(serve_runs)}); CPU used by then: median "
            f"{results['serve_healthz_cpu_s']['median']:.3f} s"
        )
    else:
        print(f"kfusion serve -> /healthz: {serve_note}")
    print(
        f"bare `python -c pass`: median {results['python_bare_s']['median']:.3f} s; `kfusion serve` parser "
        f"imports torch: {results['serve_parser_imports_torch']}"
    )
    ok_frame = results["ort"]["first_frame"]["median"] <= TARGET_S
    ok_serve = bool(serve_runs) and results["serve_healthz_s"]["median"] <= TARGET_S
    print(
        f"target {TARGET_S} s: first frame {'met' if ok_frame else 'MISSED'}, "
        f"/healthz {'met' if ok_serve else 'MISSED' if serve_runs else 'not measured'} (medians, warm)"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
