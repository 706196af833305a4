"""Feature front end per 10 ms hop: numba (one hop at a time) vs librosa (rolling 1 s buffer, whole seconds).

Usage: kfusion bench features [--seconds 30] [--rolling-hops 300] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import run_date_utc
from engine.cache import cache_dir

TEXT = (
    "The quick brown fox jumps over the lazy dog while the children watch from the garden. "
    "Bob bought a big blue map for the trip to Paris, and we were watching the moon over the quiet harbour. "
    "She sells sea shells by the sea shore every summer, although the weather is rarely kind. "
    "Please call Stella and ask her to bring these things with her from the store: six spoons of fresh "
    "snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob. "
    "Numbers like seventeen, forty two and one hundred and six are read out slowly and clearly. "
    "How are you today? I am fine, thank you, and I hope the rest of the week goes well for all of us."
)
FIRST_FEATURE_CODE = (
    "import time; t0 = time.perf_counter()\n"
    "import numpy as np\n"
    "from engine.features import FeatureExtractor\n"
    "FeatureExtractor().push(np.zeros(160, np.float32))\n"
    "print(time.perf_counter() - t0)\n"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of TTS speech to run over")
    parser.add_argument(
        "--rolling-hops", type=int, default=300, help="hops sampled for the rolling-buffer peer"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of numba and librosa timing"
    )
    parser.add_argument("--warm-runs", type=int, default=3, help="new processes timed for the warm start")
    parser.add_argument(
        "--workdir", default=str(cache_dir("bench-features")), help="scratch folder for the speech"
    )


def tts_speech(workdir: Path, seconds: float):
    """About `seconds` of espeak-ng speech (festival as a fallback), float32 at 16 kHz."""
    import numpy as np
    import soundfile as sf
    import soxr

    workdir.mkdir(parents=True, exist_ok=True)
    wav = workdir / "speech.wav"
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), TEXT], check=True)
    elif shutil.which("text2wave"):
        txt = workdir / "speech.txt"
        txt.write_text(TEXT)
        subprocess.run(["text2wave", "-o", str(wav), str(txt)], check=True)
    else:
        raise FileNotFoundError("neither espeak-ng nor festival's text2wave is installed")
    y, sr = sf.read(wav, dtype="float32")
    y = soxr.resample(y, sr, 16000).astype(np.float32)
    n = int(seconds * 16000)
    return np.tile(y, n // len(y) + 1)[:n]


class LibrosaPeer:
    """The same features with librosa over a buffer: its first 480 samples are context, then 160 per hop."""

    def __init__(self) -> None:
        import librosa

        self.librosa = librosa
        self.mel_basis = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80)  # built once, as a fair peer

    def features(self, buf):
        import numpy as np

        lr = self.librosa
        frame = buf[240:]  # the 400-sample frames of our hops; the Hann sits 56 samples into a 512 frame
        spec = np.abs(
            lr.stft(np.pad(frame, 56), n_fft=512, hop_length=160, win_length=400, window="hann", center=False)
        )
        logmel = np.log(self.mel_basis @ spec**2 + 1e-10)
        rms = lr.feature.rms(y=frame, frame_length=400, hop_length=160, center=False)
        zcr = lr.feature.zero_crossing_rate(frame, frame_length=400, hop_length=160, center=False)
        centroid = lr.feature.spectral_centroid(S=spec, sr=16000, n_fft=512)
        f0 = lr.yin(buf, fmin=60, fmax=500, sr=16000, frame_length=640, center=False)
        return logmel, rms, zcr, centroid, f0


def librosa_reference(y):
    """librosa's features on our hop grid (hop k ends at sample (k+1)*160, zeros before the start).

    Returns mel_db (K, 80), centroid_khz, rms, zcr, f0_hz (K,), all float64 from float64 input.
    """
    import librosa
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    k = len(y) // 160

    def padded(frame_len: int, extra: int = 0):  # frame t of librosa's result = our hop t
        return np.concatenate([np.zeros(frame_len - 160 + extra), y, np.zeros(512)])

    # the 400-sample Hann sits in the middle of librosa's 512-sample frame, 56 samples in
    spec = np.abs(
        librosa.stft(padded(400, 56), n_fft=512, hop_length=160, win_length=400, window="hann", center=False)
    )
    mel = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80) @ spec**2
    frame400 = padded(400)
    return {
        "mel_db": 10 * np.log10(mel + 1e-10)[:, :k].T,
        "centroid_khz": librosa.feature.spectral_centroid(S=spec, sr=16000, n_fft=512)[0, :k] / 1e3,
        "rms": librosa.feature.rms(y=frame400, frame_length=400, hop_length=160, center=False)[0, :k],
        "zcr": librosa.feature.zero_crossing_rate(frame400, frame_length=400, hop_length=160, center=False)[
            0, :k
        ],
        "f0_hz": librosa.yin(padded(640), fmin=60, fmax=500, sr=16000, frame_length=640, center=False)[:k],
    }


def _first_feature_s(env: dict) -> tuple[float, float]:
    """(seconds from spawn to first feature, seconds inside the process) for a new Python process."""
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", FIRST_FEATURE_CODE],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return time.perf_counter() - t, float(out.stdout.strip().splitlines()[-1])


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return f"{cpu}, {os.cpu_count()} CPUs, load average {load[0]:.2f}, {platform.platform()}, Python {platform.python_version()}"


def _stats(xs) -> dict:
    import numpy as np

    a = np.asarray(xs, dtype=np.float64)
    return {"median": float(np.median(a)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def run(args: argparse.Namespace) -> int:
    import librosa
    import numba
    import numpy as np
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm

    from engine import features as F

    threadpool_limits(1)  # one BLAS/OpenMP thread, as in the engine
    y = tts_speech(Path(args.workdir), args.seconds)
    n_hops = len(y) // 160
    print(f"machine: {_machine()}")
    print(f"versions: numpy {np.__version__}, numba {numba.__version__}, librosa {librosa.__version__}")
    print(
        f"settings: {args.seconds:.0f} s TTS speech at 16 kHz, {n_hops} hops of 160 samples, features v"
        f"{F.FEATURE_VERSION} ({F.N_FEATURES}/hop), {args.rounds} interleaved rounds, "
        f"{args.rolling_hops} rolling-buffer hops, BLAS threads 1"
    )

    # accuracy against librosa over the whole signal
    ours = F.extract(y)
    ref = librosa_reference(y)
    mel_err_db = float(np.abs(ours[:, : F.N_MELS] * (10 / np.log(10)) - ref["mel_db"]).max())
    voiced = ours[:, F.N_MELS + F.CONTEXT_NAMES.index("voiced")] == 1
    semis = ours[voiced, F.N_MELS + F.CONTEXT_NAMES.index("f0_semitones")].astype(np.float64)
    f0_err_cents = float(np.abs(1200 * np.log2(F.F0_REF_HZ * 2 ** (semis / 12) / ref["f0_hz"][voiced])).max())

    F.warmup()
    peer = LibrosaPeer()
    padded = np.concatenate([np.zeros(16000, np.float32), y])  # 1 s of stream-start zeros before hop 0
    rng = np.random.default_rng(0)
    rolling_hops = np.sort(
        rng.choice(np.arange(99, n_hops), size=min(args.rolling_hops, n_hops - 99), replace=False)
    )
    numba_ns, rolling_ns, whole_ns = [], [], []
    cpu_ns = {"numba": [], "rolling": [], "whole": []}  # thread CPU time: immune to being descheduled
    for r in tqdm(range(args.rounds), desc="rounds", unit="round"):
        ex = F.FeatureExtractor()
        for k0 in range(0, n_hops, 100):  # push one hop at a time, as a live stream does
            c = time.thread_time_ns()
            for k in range(k0, min(k0 + 100, n_hops)):
                hop = y[k * 160 : (k + 1) * 160]
                t = time.perf_counter_ns()
                ex.push(hop)
                numba_ns.append(time.perf_counter_ns() - t)
            cpu_ns["numba"].append((time.thread_time_ns() - c) / (min(k0 + 100, n_hops) - k0))
        for k in rolling_hops[r :: args.rounds]:  # recompute the 1 s buffer ending at hop k (+ YIN context)
            buf = padded[(k + 1) * 160 - 480 : (k + 1) * 160 + 16000]
            c = time.thread_time_ns()
            t = time.perf_counter_ns()
            peer.features(buf)
            rolling_ns.append(time.perf_counter_ns() - t)
            cpu_ns["rolling"].append(time.thread_time_ns() - c)
        for s in range(r, int(len(y) // 16000), args.rounds):  # once per whole second (100 hops)
            buf = padded[s * 16000 + 16000 - 480 : (s + 1) * 16000 + 16000]
            c = time.thread_time_ns()
            t = time.perf_counter_ns()
            out = peer.features(buf)
            whole_ns.append((time.perf_counter_ns() - t) / out[0].shape[1])
            cpu_ns["whole"].append((time.thread_time_ns() - c) / out[0].shape[1])
    numba_us = _stats(np.asarray(numba_ns) / 1e3)
    rolling_us = _stats(np.asarray(rolling_ns) / 1e3)
    whole_us = _stats(np.asarray(whole_ns) / 1e3)

    print(
        "start-up: the ahead-of-time kernel, then numba cold (fresh NUMBA_CACHE_DIR, compiles) and warm (same "
        "cache), each in new processes ...", flush=True
    )
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache_dir:
        from benchmarks.bench_coldstart import _kernel_dir
        from engine import kernel_build as K

        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, OMP_NUM_THREADS="1", **{K.MODE_ENV: "jit"})
        aot_env = dict(env, **{K.MODE_ENV: "aot", K.KERNEL_DIR_ENV: str(_kernel_dir(cache_dir))})
        aot = [_first_feature_s(aot_env) for _ in range(args.warm_runs)]
        cold_wall, cold_in = _first_feature_s(env)
        warm = [_first_feature_s(env) for _ in range(args.warm_runs)]
    warm_wall = statistics.median(w for w, _ in warm)
    warm_in = statistics.median(i for _, i in warm)
    aot_wall = statistics.median(w for w, _ in aot)
    aot_in = statistics.median(i for _, i in aot)

    results = {
        "date_utc": run_date_utc(),
        "machine": {"cpu": _machine(), "numpy": np.__version__, "numba": numba.__version__,
                    "librosa": librosa.__version__},
        "settings": {"seconds": args.seconds, "hops": n_hops, "feature_version": F.FEATURE_VERSION,
                     "features_per_hop": F.N_FEATURES, "rounds": args.rounds, "rolling_hops": args.rolling_hops,
                     "blas_threads": 1, "speech": "TTS speech at 16 kHz"},
        "numba_hop_us": numba_us,
        "librosa_rolling_hop_us": rolling_us,
        "librosa_whole_second_hop_us": whole_us,
        "ratio_vs_rolling": rolling_us["median"] / numba_us["median"],
        "ratio_vs_whole": whole_us["median"] / numba_us["median"],
        "mel_max_abs_db": mel_err_db,
        "f0_max_abs_cents": f0_err_cents,
        "kernel": F.kernel()[1],
        "cold_start_s": cold_wall,
        "warm_start_s": aot_wall,
        "numba_warm_start_s": warm_wall,
    }
    print(f"{'per hop (us)':<34}{'median':>10}{'p99':>10}{'max':>10}{'n':>8}  (our kernel: {results['kernel']})")
    for name, st, n in (
        ("numba, one hop per push", numba_us, len(numba_ns)),
        ("librosa, rolling 1 s buffer", rolling_us, len(rolling_ns)),
        ("librosa, once per whole second", whole_us, len(whole_ns)),
    ):
        print(f"{name:<34}{st['median']:>10.1f}{st['p99']:>10.1f}{st['max']:>10.1f}{n:>8}")
    print(f"ratio librosa rolling / numba: {results['ratio_vs_rolling']:.0f}x (target >= 100x)")
    print(f"ratio librosa whole-second / numba: {results['ratio_vs_whole']:.2f}x (target >= 1.5x)")
    print(f"numba median {numba_us['median']:.1f} us/hop (target <= 30 us)")
    cpu = {k: float(np.median(v)) / 1e3 for k, v in cpu_ns.items()}
    print(
        f"thread CPU time per hop (median; immune to a busy machine descheduling long calls): numba "
        f"{cpu['numba']:.1f} us (blocks of 100 hops), librosa rolling {cpu['rolling']:.0f} us, whole second "
        f"{cpu['whole']:.1f} us; ratios {cpu['rolling'] / cpu['numba']:.0f}x and {cpu['whole'] / cpu['numba']:.2f}x"
    )
    print(
        f"agreement with librosa: mel max {mel_err_db:.2e} dB, f0 max {f0_err_cents:.2e} cents "
        f"on {int(voiced.sum())} voiced hops"
    )
    print(
        f"first feature in a new process: built kernel {aot_wall:.2f} s ({aot_in:.2f} s in-process; median of "
        f"{args.warm_runs}) (target <= 0.5 s); numba warm {warm_wall:.2f} s ({warm_in:.2f} s in-process; "
        f"{warm_wall / aot_wall:.1f}x the built kernel), numba cold {cold_wall:.2f} s ({cold_in:.2f} s in-process)"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
