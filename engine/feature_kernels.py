"""The numba kernels behind engine.features: one 10 ms hop of log-mel and prosody per loop turn.

Imported only when the ahead-of-time build (engine/kernel_build.py) is missing or stale, or to build it;
a process that finds the build never imports numba.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.config import HOP_SAMPLES, SAMPLE_RATE_HZ
from engine.features import (  # tables and settings, frozen into the kernels
    _APER,
    _BIN_KHZ,
    _BIN_STRIDE,
    _BITREV,
    _CENTROID,
    _D_CENTROID,
    _D_F0,
    _D_RMS,
    _F0,
    _FLUX,
    _HALF,
    _LANES,
    _LOG_RMS,
    _MEL_START,
    _MEL_STOP,
    _MEL_W,
    _N_BLOCKS,
    _PAD,
    _POST_COS,
    _POST_SIN,
    _T_PASS,
    _TW_COS,
    _TW_SIN,
    _VOICED,
    _WINDOW,
    _ZCR,
    F0_REF_HZ,
    FLUX_FLOOR_LOG,
    MEL_FLOOR,
    MEL_WIN_SAMPLES,
    N_BINS,
    N_MELS,
    RMS_FLOOR,
    VOICED_MAX_APERIODICITY,
    VOICED_MIN_RMS,
    YIN_FRAME_SAMPLES,
    YIN_MAX_PERIOD,
    YIN_MIN_PERIOD,
    YIN_TROUGH_THRESHOLD,
    ZCR_THRESHOLD,
)


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
