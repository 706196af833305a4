"""Dual-domain features, one 10 ms hop at a time: 80 log-mel bands plus 10 prosodic context values.

Numba kernels (engine/feature_kernels.py) process only the samples that are new since the last hop (see
docs/design.md, Features); engine/kernel_build.py loads their ahead-of-time build when there is one.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from engine.config import HOP_SAMPLES, SAMPLE_RATE_HZ

FEATURE_VERSION = "kf1"

# --- analysis settings --------------------------------------------------------------------------
MEL_WIN_SAMPLES = 400  # 25 ms Hann window ending at the hop boundary
N_FFT = 512
N_BINS = N_FFT // 2 + 1
N_MELS = 80
MEL_FMAX_HZ = SAMPLE_RATE_HZ / 2
MEL_FLOOR = 1e-10  # log-mel = ln(mel power + MEL_FLOOR)
RMS_FLOOR = 1e-5  # log_rms = ln(rms + RMS_FLOOR)
ZCR_THRESHOLD = 1e-10  # |x| <= this counts as +0 (librosa.zero_crossings default)
YIN_FRAME_SAMPLES = 640  # 40 ms frame ending at the hop boundary (librosa.yin frame_length)
F0_MIN_HZ = 60.0
F0_MAX_HZ = 500.0
YIN_TROUGH_THRESHOLD = 0.1  # librosa.yin default
YIN_MIN_PERIOD = math.floor(SAMPLE_RATE_HZ / F0_MAX_HZ)  # 32 samples
YIN_MAX_PERIOD = min(math.ceil(SAMPLE_RATE_HZ / F0_MIN_HZ), YIN_FRAME_SAMPLES - 1)  # 267 samples
F0_REF_HZ = 100.0  # f0_semitones = 12 log2(f0 / F0_REF_HZ)
# Voicing: YIN's normalised difference at the chosen lag below this, and the 25 ms frame not near-silent.
VOICED_MAX_APERIODICITY = 0.25
VOICED_MIN_RMS = 1e-3  # -60 dBFS
# Flux: mean over the bands of the rise in log-mel since the previous hop, log-mel clipped from below here.
FLUX_FLOOR_LOG = math.log(1e-6)

CONTEXT_NAMES = (
    "log_rms",  # ln(rms + RMS_FLOOR), rms as librosa.feature.rms over the 25 ms frame
    "zcr",  # zero-crossing rate over the 25 ms frame (librosa.feature.zero_crossing_rate)
    "f0_semitones",  # 12 log2(f0 / 100 Hz) when voiced, else 0 (YIN as librosa.yin, 40 ms frame)
    "voiced",  # 1 when aperiodicity < VOICED_MAX_APERIODICITY and rms >= VOICED_MIN_RMS, else 0
    "aperiodicity",  # YIN cumulative-mean-normalised difference at the chosen lag, clipped to 0..1; 1 on zeros
    "centroid_khz",  # spectral centroid of the magnitude spectrum (librosa.feature.spectral_centroid)
    "flux",  # mean_b max(0, max(L_k[b], FLUX_FLOOR_LOG) - max(L_{k-1}[b], FLUX_FLOOR_LOG)), L = log-mel
    "d_log_rms",  # causal deltas: this hop minus the previous hop (the hop before the stream is SILENCE)
    "d_f0_semitones",
    "d_centroid_khz",
)
N_CONTEXT = len(CONTEXT_NAMES)
N_FEATURES = N_MELS + N_CONTEXT
_LOG_RMS, _ZCR, _F0, _VOICED, _APER, _CENTROID, _FLUX, _D_RMS, _D_F0, _D_CENTROID = range(N_MELS, N_FEATURES)
_N_BLOCKS = YIN_FRAME_SAMPLES // HOP_SAMPLES  # autocorrelation bins, one per hop block of the YIN frame
_LANES = 8  # float32 lags per SIMD vector (AVX) in YIN's autocorrelation update
_T_PASS = 8  # samples t whose products one pass over a bin row adds (in registers, in order of t)
_BIN_STRIDE = (YIN_MAX_PERIOD // _LANES + 1) * _LANES  # 272 lags per bin row: whole vectors, 0..267 used
_PAD = _T_PASS + _LANES  # zeros either side of the newest hop's float32 copy, so out-of-range products are 0
_ACF32 = _N_BLOCKS * _BIN_STRIDE + HOP_SAMPLES + 2 * _PAD  # float32 state: 4 bin rows, then the padded hop
# float64 scratch values per extractor: FFT re and im, power, YIN's acf and cmnd
_WORK = 2 * (N_FFT // 2) + (N_FFT // 2 + 1) + (YIN_MAX_PERIOD + 1) + (YIN_MAX_PERIOD - YIN_MIN_PERIOD + 1)
if _N_BLOCKS * HOP_SAMPLES != YIN_FRAME_SAMPLES or YIN_MAX_PERIOD >= 2 * HOP_SAMPLES:
    raise ValueError("the YIN frame must be whole hops long and the longest period under two hops")
if HOP_SAMPLES % _T_PASS:
    raise ValueError("a pass of YIN's autocorrelation update must not straddle two hop blocks")

_SILENCE64 = np.zeros(N_FEATURES)  # float64: the kernels' state starts here
_SILENCE64[:N_MELS] = math.log(MEL_FLOOR)
_SILENCE64[_LOG_RMS] = math.log(RMS_FLOOR)
_SILENCE64[_APER] = 1.0
SILENCE = _SILENCE64.astype(np.float32)  # the hop vector of all-zero audio
SILENCE.flags.writeable = False
_NO_SAMPLES = np.zeros(0, np.float32)  # an empty remainder, shared and read-only
_NO_SAMPLES.flags.writeable = False


# --- tables (numpy, built once at import; the kernels freeze them in) -----------------
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa.hz_to_mel, htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    mels = f / (200.0 / 3)
    log_t = f >= 1000.0
    return np.where(log_t, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), (200.0 / 3) * m)


def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_BINS) Slaney-normalised mel filters, as librosa.filters.mel(sr=16000, n_fft=512, n_mels=80)."""
    fft_hz = np.arange(N_BINS) * (SAMPLE_RATE_HZ / N_FFT)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(MEL_FMAX_HZ), N_MELS + 2))
    fdiff = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32).astype(np.float64)  # librosa builds the bank in float32


def _sparse_mel() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bank = mel_filterbank()
    starts = np.zeros(N_MELS, np.int64)
    stops = np.zeros(N_MELS, np.int64)
    for b in range(N_MELS):
        nz = np.flatnonzero(bank[b])
        starts[b], stops[b] = (nz[0], nz[-1] + 1) if nz.size else (0, 0)
    flat = np.zeros((N_MELS, int((stops - starts).max())), np.float64)
    for b in range(N_MELS):
        flat[b, : stops[b] - starts[b]] = bank[b, starts[b] : stops[b]]
    return starts, stops, flat


_MEL_START, _MEL_STOP, _MEL_W = _sparse_mel()
_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(MEL_WIN_SAMPLES) / MEL_WIN_SAMPLES)  # periodic Hann
_HALF = N_FFT // 2  # the real 512-point FFT runs as one 256-point complex FFT
_BITREV = np.array([int(format(i, "08b")[::-1], 2) for i in range(_HALF)], dtype=np.int64)
_TW_COS = np.cos(2.0 * np.pi * np.arange(_HALF // 2) / _HALF)
_TW_SIN = np.sin(2.0 * np.pi * np.arange(_HALF // 2) / _HALF)
_POST_COS = np.cos(2.0 * np.pi * np.arange(N_BINS) / N_FFT)
_POST_SIN = np.sin(2.0 * np.pi * np.arange(N_BINS) / N_FFT)
_BIN_KHZ = np.arange(N_BINS) * (SAMPLE_RATE_HZ / N_FFT) / 1000.0
if 1 << int(math.log2(_HALF)) != _HALF:
    raise ValueError(f"N_FFT must be a power of two, got {N_FFT}")


# --- public API ---------------------------------------------------------------------------------
_kernel: tuple | None = None  # (process function, "aot" | "jit"), resolved once per process
_kernel_lock = threading.Lock()  # the server warms up on a worker thread while the model loads


def kernel() -> tuple:
    """(process function, "aot" | "jit"): the ahead-of-time build when current, else numba's cached JIT."""
    global _kernel
    with _kernel_lock:
        if _kernel is None:
            from engine import kernel_build

            _kernel = kernel_build.load()
        return _kernel


class FeatureExtractor:
    """Streaming features for one 16 kHz stream: push any number of samples, get the hops they complete."""

    def __init__(self) -> None:
        self._hist = np.zeros(YIN_FRAME_SAMPLES)  # the 640 newest samples (float64); zeros before start
        # YIN autocorrelation per hop block, float32: twice the SIMD width (each bin sums <= 160 products);
        # then the newest hop in float32 between zeros
        self._acf32 = np.zeros(_ACF32, np.float32)
        self._work = np.empty(_WORK)  # scratch for the kernels
        self._prev = _SILENCE64.copy()  # the previous hop (log-mel in [:80]) for deltas and flux
        self._pending = _NO_SAMPLES  # samples of the hop not yet complete (< HOP_SAMPLES)
        self.hops_emitted = 0
        self._process = kernel()[0]

    def hops_for(self, n_samples: int) -> int:
        """How many hops a push of n_samples more samples completes."""
        return (self._pending.shape[0] + n_samples) // HOP_SAMPLES

    def push(self, samples: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """samples: (n,) float32 at 16 kHz -> (n_new_hops, N_FEATURES) float32.

        out: where to write them, C-contiguous float32 (hops_for(n), N_FEATURES) (a live stream's hop buffer);
        on an error nothing is written and no state changes."""
        if not isinstance(samples, np.ndarray) or samples.ndim != 1 or samples.dtype != np.float32:
            got = (
                f"{samples.dtype} array of shape {samples.shape}"
                if isinstance(samples, np.ndarray)
                else type(samples).__name__
            )
            raise ValueError(f"samples must be a 1-D float32 numpy array at {SAMPLE_RATE_HZ} Hz, got {got}")
        if self._pending.size:
            x = np.concatenate((self._pending, samples))
        elif samples.flags.c_contiguous and samples.flags.writeable:
            x = samples
        else:  # strided or read-only input would make numba compile another specialisation
            x = np.array(samples, dtype=np.float32, order="C")
        n_hops = x.shape[0] // HOP_SAMPLES
        if out is None:
            out = np.empty((n_hops, N_FEATURES), np.float32)
        elif out.shape != (n_hops, N_FEATURES) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous float32 of shape ({n_hops}, {N_FEATURES}), got {out.dtype} "
                             f"{out.shape}")
        if not self._process(self._hist, self._acf32, self._prev, self._work, x, n_hops, self.hops_emitted, out):
            raise ValueError("samples must be finite, got NaN or inf")
        rest = x.shape[0] - n_hops * HOP_SAMPLES
        self._pending = x[n_hops * HOP_SAMPLES :].copy() if rest else _NO_SAMPLES
        self.hops_emitted += n_hops
        return out


def extract(samples16k: np.ndarray) -> np.ndarray:
    """Features of a whole 16 kHz signal: (len // HOP_SAMPLES, N_FEATURES), the same as any chunking."""
    samples16k = np.asarray(samples16k)
    if samples16k.dtype == np.float64:
        samples16k = samples16k.astype(np.float32)
    return FeatureExtractor().push(samples16k)


def warmup() -> str:
    """Load the kernel (the ahead-of-time build, or numba's cache, compiling on a first run), so the first
    real hop is fast; returns which kernel runs, "aot" or "jit"."""
    FeatureExtractor().push(np.zeros(HOP_SAMPLES, np.float32))
    return kernel()[1]
