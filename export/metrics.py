"""Landmark quality metrics: LD, LVD (whole face and mouth) and the lip-gap correlation and lag.

All distances are per frame (mean Euclidean distance over points), divided by the ground truth's
inter-ocular distance (points 36-45), then averaged over frames: never one norm over a whole batch.
Velocities are frame-to-frame differences along TIME, never along the landmark axis.
"""

from __future__ import annotations

import numpy as np

from engine.face import MOUTH, inner_lip_gap, interocular, to_canonical

MAX_LAG_MS = 200.0  # lip-gap lag search range, +- ms
STILL_STD_PX = 1e-6  # a lip gap varying less than this (px) is a still mouth
METRIC_NAMES = ("ld", "mouth_ld", "lvd", "mouth_lvd", "lip_gap_corr", "lip_gap_lag_ms")


def _check_pair(pred: np.ndarray, true: np.ndarray) -> None:
    if pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"expected landmark tracks (T, P, 2), got pred {pred.shape}")
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and truth {true.shape} must have the same shape")


def _per_frame_distance(pred: np.ndarray, true: np.ndarray, scale: np.ndarray,
                        points: np.ndarray | None) -> np.ndarray:
    """(T,68,2) x2 -> (T,) mean per-point Euclidean distance / scale; NaN where a frame is missing."""
    if points is not None:
        pred, true = pred[:, points], true[:, points]
    return np.linalg.norm(pred - true, axis=-1).mean(axis=-1) / scale


def landmark_distance(pred: np.ndarray, true: np.ndarray, points: np.ndarray | None = None) -> float:
    """LD: mean over frames of (mean per-point distance / ground-truth inter-ocular distance).

    Frames where either track is NaN are skipped. `points` selects a subset (e.g. MOUTH) for the
    distance; the normaliser always comes from the full truth shape.
    """
    _check_pair(pred, true)
    d = _per_frame_distance(pred, true, interocular(true), points)
    d = d[np.isfinite(d)]
    return float(d.mean()) if len(d) else float("nan")


def landmark_velocity_distance(pred: np.ndarray, true: np.ndarray, points: np.ndarray | None = None) -> float:
    """LVD: LD computed on frame-to-frame velocities x[t] - x[t-1] (along time), per frame then mean.

    Normalised by the truth's inter-ocular distance at frame t. A constant offset has zero LVD.
    """
    _check_pair(pred, true)
    if len(true) < 2:
        return float("nan")
    vp, vt = np.diff(pred, axis=0), np.diff(true, axis=0)
    d = _per_frame_distance(vp, vt, interocular(true[1:]), points)
    d = d[np.isfinite(d)]
    return float(d.mean()) if len(d) else float("nan")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    if a.std() < STILL_STD_PX or b.std() < STILL_STD_PX:  # a still face has no defined correlation
        return float("nan")
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den)


def lagged_correlation(pred: np.ndarray, true: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson r between pred[t] and true[t - k] for k = -max_lag..max_lag, (2*max_lag+1,).

    A positive k at the peak means the prediction is late (it shows what the truth showed k frames
    earlier).
    """
    if pred.shape != true.shape or pred.ndim != 1:
        raise ValueError(f"expected two 1-D series of one length, got {pred.shape} and {true.shape}")
    out = np.full(2 * max_lag + 1, np.nan)
    n = len(pred)
    for j, k in enumerate(range(-max_lag, max_lag + 1)):
        if k >= 0:
            out[j] = _pearson(pred[k:], true[: n - k])
        else:
            out[j] = _pearson(pred[: n + k], true[-k:])
    return out


def max_lag_frames(fps: float, max_lag_ms: float = MAX_LAG_MS) -> int:
    return int(np.floor(max_lag_ms * fps / 1000.0 + 1e-9))


def lip_gap_curve(pred: np.ndarray, true: np.ndarray, fps: float) -> np.ndarray:
    """Correlation of predicted vs true inner-lip gap (points 61-63 vs 67-65) at lags within +-200 ms."""
    _check_pair(pred, true)
    return lagged_correlation(inner_lip_gap(pred), inner_lip_gap(true), max_lag_frames(fps))


def peak_of_curve(curve: np.ndarray, fps: float) -> tuple[float, float, float]:
    """(r at lag 0, lag in ms at the peak, r at the peak) of a lag curve centred on lag 0."""
    max_lag = (len(curve) - 1) // 2
    if not np.isfinite(curve).any():
        return float("nan"), float("nan"), float("nan")
    j = int(np.nanargmax(curve))
    return float(curve[max_lag]), (j - max_lag) * 1000.0 / fps, float(curve[j])


def canonicalise(track: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Remove head pose: fit each frame's rigid points (nose, eyes) onto the reference shape."""
    return to_canonical(np.asarray(track, dtype=np.float64), np.asarray(reference, dtype=np.float64))[0]


def clip_metrics(pred: np.ndarray, true: np.ndarray, fps: float, reference: np.ndarray) -> dict:
    """All metrics for one clip, both tracks (T, 68, 2) first moved to the canonical frame.

    Returns METRIC_NAMES plus `lip_gap_curve` (list, lags -max..max frames) and `lip_gap_corr_peak`.
    """
    _check_pair(pred, true)
    p, t = canonicalise(pred, reference), canonicalise(true, reference)
    curve = lip_gap_curve(p, t, fps)
    r0, lag_ms, r_peak = peak_of_curve(curve, fps)
    return {
        "ld": landmark_distance(p, t),
        "mouth_ld": landmark_distance(p, t, MOUTH),
        "lvd": landmark_velocity_distance(p, t),
        "mouth_lvd": landmark_velocity_distance(p, t, MOUTH),
        "lip_gap_corr": r0,
        "lip_gap_lag_ms": lag_ms,
        "lip_gap_corr_peak": r_peak,
        "lip_gap_curve": curve.tolist(),
        "frames": len(t),
    }


def aggregate(per_clip: list[dict], fps: float) -> dict:
    """Macro average over clips: each clip's frame-mean counts once, whatever its length.

    The lip-gap lag comes from the mean over clips of the per-clip lag curves (more robust than a
    mean of per-clip argmaxes); `lip_gap_corr` is that mean curve at lag 0 (NaN curves are skipped).
    """
    if not per_clip:
        raise ValueError("aggregate needs at least one clip")
    out = {}
    for name in ("ld", "mouth_ld", "lvd", "mouth_lvd"):
        vals = np.array([c[name] for c in per_clip], dtype=np.float64)
        out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    curves = np.array([c["lip_gap_curve"] for c in per_clip], dtype=np.float64)
    ok = np.isfinite(curves)
    counts = ok.sum(axis=0)
    sums = np.where(ok, curves, 0.0).sum(axis=0)
    mean_curve = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    r0, lag_ms, r_peak = peak_of_curve(mean_curve, fps)
    out.update(lip_gap_corr=r0, lip_gap_lag_ms=lag_ms, lip_gap_corr_peak=r_peak,
               n_clips=len(per_clip), frames=int(sum(c["frames"] for c in per_clip)))
    if all("closures" in c for c in per_clip):  # real closures (export.articulation.speech_closures), pooled
        total, shut = sum(c["closures"] for c in per_clip), sum(c["closures_shut"] for c in per_clip)
        out.update(closures=int(total), closures_shut_fraction=shut / total if total else float("nan"))
    return out


def paired_ratio(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """Compare per-clip errors a (model) and b (rival) on the same clips: mean(a) / mean(b), its 95 %
    bootstrap interval (clips resampled with replacement) and the share of clips where a < b."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"expected two non-empty per-clip vectors of one length, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    boots = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"ratio": float(a.mean() / b.mean()), "ci95": [float(lo), float(hi)],
            "clips_better": float((a < b).mean()), "n_clips": len(a)}
