"""Dual-domain features, one 10 ms hop at a time: 80 log-mel bands plus 10 prosodic context values.

Numba kernels process only the samples that are new since the last hop (see docs/design.md, Features).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

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


# --- tables (numpy, built once at import; numba freezes them into the kernels) -----------------
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


# --- kernels ------------------------------------------------------------------------------------
@njit(cache=True, fastmath={"contract"})  # FMA only: same rounding on every call
def _dot(x, i, j, n):
    """sum_m x[i+m] * x[j+m], m < n, in 8 interleaved partial sums (fast, and the same order every call)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    m = 0
    while m + 8 <= n:
        a0 += x[i + m] * x[j + m]
        a1 += x[i + m + 1] * x[j + m + 1]
        a2 += x[i + m + 2] * x[j + m + 2]
        a3 += x[i + m + 3] * x[j + m + 3]
        a4 += x[i + m + 4] * x[j + m + 4]
        a5 += x[i + m + 5] * x[j + m + 5]
        a6 += x[i + m + 6] * x[j + m + 6]
        a7 += x[i + m + 7] * x[j + m + 7]
        m += 8
    while m < n:
        a0 += x[i + m] * x[j + m]
        m += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, fastmath={"contract"})  # FMA only: same rounding on every call
def _power_spectrum(frame, re, im, power):
    """|rfft(hann * frame, 512)|^2 into power (N_BINS,); frame is the 400 newest samples."""
    for n in range(_HALF):  # pack even/odd samples as one complex sequence, in bit-reversed order
        r = _BITREV[n]
        a = 2 * n
        re[r] = frame[a] * _WINDOW[a] if a < MEL_WIN_SAMPLES else 0.0
        im[r] = frame[a + 1] * _WINDOW[a + 1] if a + 1 < MEL_WIN_SAMPLES else 0.0
    size = 2
    while size <= _HALF:
        half = size // 2
        step = _HALF // size
        for start in range(0, _HALF, size):
            for k in range(half):
                c = _TW_COS[k * step]
                s = _TW_SIN[k * step]
                p = start + k
                q = p + half
                tr = c * re[q] + s * im[q]
                ti = c * im[q] - s * re[q]
                re[q] = re[p] - tr
                im[q] = im[p] - ti
                re[p] += tr
                im[p] += ti
        size *= 2
    for k in range(N_BINS):  # split the packed spectrum into the real signal's bins 0..256
        ar = re[k % _HALF]
        ai = im[k % _HALF]
        br = re[(_HALF - k) % _HALF]
        bi = im[(_HALF - k) % _HALF]
        er = 0.5 * (ar + br)
        ei = 0.5 * (ai - bi)
        orr = 0.5 * (ai + bi)
        oi = -0.5 * (ar - br)
        c = _POST_COS[k]
        s = _POST_SIN[k]
        xr = er + c * orr + s * oi
        xi = ei + c * oi - s * orr
        power[k] = xr * xr + xi * xi


@njit(cache=True, fastmath={"contract"})  # FMA only: same rounding on every call
def _yin(hist, acf32, block, acf, cmnd):
    """YIN (as librosa.yin, center=False) on hist, the 640 newest samples; returns (f0_hz, aperiodicity).

    The autocorrelation is kept incrementally (float32 products and sums of the same samples as hist;
    energies and the normalisation stay float64): bin row b, acf32[b * 272 + tau], holds sum x[t] x[t+tau]
    over the t of hop block b whose partner t+tau has arrived, so each hop adds only the 160 products per
    lag that the new samples complete (a third of a direct evaluation) and the frame's acf is the sum of
    4 bins. hist's block i (samples 160 i .. 160 i + 159) is bin row (block - 3 + i) % 4.
    """
    e = YIN_FRAME_SAMPLES - HOP_SAMPLES  # first new sample in hist
    new = _N_BLOCKS * _BIN_STRIDE + _PAD - e  # acf32[new + t] = float32 x[t] for new t, else 0 (padding)
    cur = (block % _N_BLOCKS) * _BIN_STRIDE
    for tau in range(_BIN_STRIDE):
        acf32[cur + tau] = 0.0
    # the new products x[t] x[t+tau] are those with t+tau among the new samples. Each pass takes 8 t
    # (of one hop block) over whole vectors of lags, adding their 8 products per lag in order of t in a
    # register (as a loop over t would, bit for bit): the padding zeros out the products outside the
    # range, and lags 0 and 268..271 collect unused sums
    for t0 in range((e - YIN_MAX_PERIOD) // _T_PASS * _T_PASS, YIN_FRAME_SAMPLES - 1, _T_PASS):
        lo = max(1, e - t0 - (_T_PASS - 1)) // _LANES * _LANES
        hi = (min(YIN_MAX_PERIOD, YIN_FRAME_SAMPLES - 1 - t0) + _LANES) // _LANES * _LANES
        row = acf32[((block - 3 + t0 // HOP_SAMPLES) % _N_BLOCKS) * _BIN_STRIDE + lo :]
        z = acf32[new + t0 + lo :]
        x0 = np.float32(hist[t0])
        x1 = np.float32(hist[t0 + 1])
        x2 = np.float32(hist[t0 + 2])
        x3 = np.float32(hist[t0 + 3])
        x4 = np.float32(hist[t0 + 4])
        x5 = np.float32(hist[t0 + 5])
        x6 = np.float32(hist[t0 + 6])
        x7 = np.float32(hist[t0 + 7])
        for m in range(hi - lo):
            a = row[m]
            a += x0 * z[m]
            a += x1 * z[m + 1]
            a += x2 * z[m + 2]
            a += x3 * z[m + 3]
            a += x4 * z[m + 4]
            a += x5 * z[m + 5]
            a += x6 * z[m + 6]
            a += x7 * z[m + 7]
            row[m] = a
    energy = _dot(hist, 0, 0, YIN_FRAME_SAMPLES)
    for tau in range(1, YIN_MAX_PERIOD + 1):
        # the four float32 block sums, added in float64
        acf[tau] = (float(acf32[tau]) + float(acf32[_BIN_STRIDE + tau])) + (
            float(acf32[2 * _BIN_STRIDE + tau]) + float(acf32[3 * _BIN_STRIDE + tau])
        )
    # d(tau) = 2 (acf0 - acf(tau)) - sum_{m<tau} x[m]^2 ; cumulative-mean normalisation (librosa 0.11)
    head = 0.0
    running = 0.0
    n_cmnd = YIN_MAX_PERIOD - YIN_MIN_PERIOD + 1
    for tau in range(1, YIN_MAX_PERIOD + 1):
        head += hist[tau - 1] * hist[tau - 1]
        d = 2.0 * (energy - acf[tau]) - (head if tau > 1 else 0.0)  # librosa: d(1) has no head term
        running += d
        if tau >= YIN_MIN_PERIOD:
            cmnd[tau - YIN_MIN_PERIOD] = d / (running / tau + 2.2250738585072014e-308)
    best = -1
    for j in range(n_cmnd):  # first trough under the threshold, else the global minimum
        if j == 0:
            trough = cmnd[0] < cmnd[1]
        elif j == n_cmnd - 1:
            trough = cmnd[j] < cmnd[j - 1]
        else:
            trough = cmnd[j] < cmnd[j - 1] and cmnd[j] <= cmnd[j + 1]
        if trough and cmnd[j] < YIN_TROUGH_THRESHOLD:
            best = j
            break
    if best < 0:
        best = 0
        for j in range(1, n_cmnd):
            if cmnd[j] < cmnd[best]:
                best = j
    shift = 0.0
    if 0 < best < n_cmnd - 1:
        a = cmnd[best + 1] + cmnd[best - 1] - 2.0 * cmnd[best]
        b = 0.5 * (cmnd[best + 1] - cmnd[best - 1])
        if abs(b) < abs(a):
            shift = -b / a
    f0 = SAMPLE_RATE_HZ / (YIN_MIN_PERIOD + best + shift)
    aper = min(max(cmnd[best], 0.0), 1.0) if energy > 0.0 else 1.0
    return f0, aper


@njit(cache=True, fastmath={"contract"})  # FMA only: same rounding on every call
def _process(hist, acf32, prev, work, x, n_hops, first_hop, out):
    """Run n_hops hops over x (float32); returns False, touching nothing, if x holds NaN or inf.

    work is float64 scratch (_WORK values) for the FFT, the power spectrum and YIN.
    """
    for i in range(x.shape[0]):
        if not math.isfinite(x[i]):
            return False
    re = work[:_HALF]
    im = work[_HALF : 2 * _HALF]
    power = work[2 * _HALF : 2 * _HALF + N_BINS]
    acf = work[2 * _HALF + N_BINS : 2 * _HALF + N_BINS + YIN_MAX_PERIOD + 1]
    cmnd = work[2 * _HALF + N_BINS + YIN_MAX_PERIOD + 1 :]
    frame0 = YIN_FRAME_SAMPLES - MEL_WIN_SAMPLES
    new = _N_BLOCKS * _BIN_STRIDE + _PAD
    for h in range(n_hops):
        for i in range(YIN_FRAME_SAMPLES - HOP_SAMPLES):
            hist[i] = hist[i + HOP_SAMPLES]
        for i in range(HOP_SAMPLES):
            hist[YIN_FRAME_SAMPLES - HOP_SAMPLES + i] = x[h * HOP_SAMPLES + i]
            acf32[new + i] = x[h * HOP_SAMPLES + i]
        row = out[h]
        frame = hist[frame0:]
        # time domain over the 25 ms frame: rms, zero crossings
        ms = _dot(frame, 0, 0, MEL_WIN_SAMPLES) / MEL_WIN_SAMPLES
        rms = math.sqrt(ms)
        crossings = 0
        neg_prev = frame[0] < -ZCR_THRESHOLD
        for i in range(1, MEL_WIN_SAMPLES):
            neg = frame[i] < -ZCR_THRESHOLD
            crossings += neg != neg_prev
            neg_prev = neg
        # spectrum: log-mel, centroid, flux
        _power_spectrum(frame, re, im, power)
        flux = 0.0
        for b in range(N_MELS):
            acc = 0.0
            lo = _MEL_START[b]
            for k in range(_MEL_STOP[b] - lo):
                acc += _MEL_W[b, k] * power[lo + k]
            logmel = math.log(acc + MEL_FLOOR)
            flux += max(0.0, max(logmel, FLUX_FLOOR_LOG) - max(prev[b], FLUX_FLOOR_LOG))
            prev[b] = logmel
            row[b] = logmel
        for k in range(N_BINS):  # magnitudes in place (it vectorises), then the sums in order
            power[k] = math.sqrt(power[k])
        mag_sum = 0.0
        weighted = 0.0
        for k in range(N_BINS):
            mag_sum += power[k]
            weighted += power[k] * _BIN_KHZ[k]
        centroid = weighted / mag_sum if mag_sum >= 2.2250738585072014e-308 else weighted
        # YIN over the 40 ms frame
        f0, aper = _yin(hist, acf32, first_hop + h, acf, cmnd)
        voiced = aper < VOICED_MAX_APERIODICITY and rms >= VOICED_MIN_RMS
        semis = 12.0 * math.log2(f0 / F0_REF_HZ) if voiced else 0.0
        log_rms = math.log(rms + RMS_FLOOR)
        row[_LOG_RMS] = log_rms
        row[_ZCR] = crossings / MEL_WIN_SAMPLES
        row[_F0] = semis
        row[_VOICED] = 1.0 if voiced else 0.0
        row[_APER] = aper
        row[_CENTROID] = centroid
        row[_FLUX] = flux / N_MELS
        row[_D_RMS] = log_rms - prev[_LOG_RMS]
        row[_D_F0] = semis - prev[_F0]
        row[_D_CENTROID] = centroid - prev[_CENTROID]
        prev[_LOG_RMS] = log_rms
        prev[_F0] = semis
        prev[_CENTROID] = centroid
    return True


# --- public API ---------------------------------------------------------------------------------
class FeatureExtractor:
    """Streaming features for one 16 kHz stream: push any number of samples, get the hops they complete."""

    def __init__(self) -> None:
        self._hist = np.zeros(YIN_FRAME_SAMPLES)  # the 640 newest samples (float64); zeros before start
        # YIN autocorrelation per hop block, float32: twice the SIMD width (each bin sums <= 160 products);
        # then the newest hop in float32 between zeros
        self._acf32 = np.zeros(_ACF32, np.float32)
        self._work = np.empty(_WORK)  # scratch for the kernels
        self._prev = _SILENCE64.copy()  # the previous hop (log-mel in [:80]) for deltas and flux
        self._pending = np.zeros(0, np.float32)  # samples of the hop not yet complete (< HOP_SAMPLES)
        self.hops_emitted = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """samples: (n,) float32 at 16 kHz -> (n_new_hops, N_FEATURES) float32."""
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
        out = np.empty((n_hops, N_FEATURES), np.float32)
        if not _process(self._hist, self._acf32, self._prev, self._work, x, n_hops, self.hops_emitted, out):
            raise ValueError("samples must be finite, got NaN or inf")
        self._pending = x[n_hops * HOP_SAMPLES :].copy()
        self.hops_emitted += n_hops
        return out


def extract(samples16k: np.ndarray) -> np.ndarray:
    """Features of a whole 16 kHz signal: (len // HOP_SAMPLES, N_FEATURES), the same as any chunking."""
    samples16k = np.asarray(samples16k)
    if samples16k.dtype == np.float64:
        samples16k = samples16k.astype(np.float32)
    return FeatureExtractor().push(samples16k)


def warmup() -> None:
    """Compile (first run) or load (cache=True) the kernels, so the first real hop is fast."""
    FeatureExtractor().push(np.zeros(HOP_SAMPLES, np.float32))
