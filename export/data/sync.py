"""Audio-video sync repair for real training clips: find each segment's lip-to-sound offset with a trained
model (the lag that best lines its predicted inner-lip gap up with the tracked one) and shift the track.

Web video is often a few frames out of sync (see the pack's own `sync_check`); training on it blurs the
timing the model learns. The estimate is used only when it is clear (a real gain in correlation at a
small lag), and only on training data: validation and test segments are never touched.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from engine.config import SAMPLE_RATE_HZ
from engine.face import inner_lip_gap
from engine.timing import n_frames

log = logging.getLogger("kfusion.sync")

MAX_LAG_FRAMES = 5  # 167 ms at 30 fps: larger offsets are more likely a bad track than a bad mux
MIN_GAIN_R = 0.05  # shift only when the best lag beats lag 0 by this much in Pearson r
MIN_BEST_R = 0.3  # ... and the best lag's r is at least this
MIN_FRAMES = 90  # 3 s: shorter segments give no reliable lag


def lag_curve(pred_gap: np.ndarray, true_gap: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson r of pred[i] against truth[i + lag] for lag = -max_lag..max_lag (NaN where undefined)."""
    n = len(pred_gap)
    if len(true_gap) != n:
        raise ValueError(f"the two gap tracks must have the same length, got {n} and {len(true_gap)}")
    rs = np.full(2 * max_lag + 1, np.nan)
    for k, lag in enumerate(range(-max_lag, max_lag + 1)):
        a = pred_gap[max(0, -lag): n - max(0, lag)]
        b = true_gap[max(0, lag): n - max(0, -lag)]
        if len(a) > 2 and a.std() > 1e-9 and b.std() > 1e-9:
            rs[k] = np.corrcoef(a, b)[0, 1]
    return rs


def choose_lag(rs: np.ndarray, max_lag: int) -> int:
    """The lag to correct (frames; + means the track is late), or 0 when the evidence is weak."""
    if np.all(np.isnan(rs)):
        return 0
    k = int(np.nanargmax(rs))
    r0, best = rs[max_lag], rs[k]
    if np.isnan(r0) or best < MIN_BEST_R or best - r0 < MIN_GAIN_R:
        return 0
    return k - max_lag


def shift_segment(seg, lag_frames: int):
    """The segment re-synced by lag_frames (> 0: the lips came late), both tracks trimmed to fit.

    lag > 0: truth frame i + lag belongs with audio time i, so the track's first frames go.
    lag < 0: truth frame i belongs with audio time i - lag, so the audio's first -lag frames of sound go.
    """
    if lag_frames == 0:
        return seg
    canonical, head, audio, start_s = seg.canonical, seg.head, seg.audio, seg.start_s
    if lag_frames > 0:
        canonical, head = canonical[lag_frames:], head[lag_frames:]
    else:
        cut = round(-lag_frames * SAMPLE_RATE_HZ / seg.fps)
        audio, start_s = audio[cut:], start_s + cut / SAMPLE_RATE_HZ
    t = min(len(canonical), n_frames(len(audio), seg.fps))
    audio = audio[: t * SAMPLE_RATE_HZ // seg.fps]  # the shortest sound that still holds t frames
    return dataclasses.replace(seg, audio=audio, canonical=canonical[:t], head=head[:t], start_s=start_s)


def align_segments(segments: list, checkpoint: str, max_lag: int = MAX_LAG_FRAMES) -> tuple[list, list[dict]]:
    """Estimate and correct each segment's offset with the model in `checkpoint` (torch, CPU).

    Returns (segments, report): one report row per segment with its lag (frames), r at lag 0 and at the
    chosen lag.
    """
    import torch
    from tqdm import tqdm

    from export.predict import load_checkpoint, predict_segment

    model, dims, _ = load_checkpoint(checkpoint)
    model.eval()
    out, report = [], []
    with torch.no_grad():
        for seg in tqdm(segments, desc="sync check", unit="seg"):
            if seg.fps != dims.fps:
                raise ValueError(f"segment {seg.clip_id} is at {seg.fps} fps, the model at {dims.fps}")
            lag, r0, r_best = 0, float("nan"), float("nan")
            if len(seg.canonical) >= MIN_FRAMES:
                pred = predict_segment(model, seg.audio, seg.identity, n=len(seg.canonical))
                rs = lag_curve(inner_lip_gap(pred), inner_lip_gap(seg.canonical), max_lag)
                lag = choose_lag(rs, max_lag)
                r0, r_best = float(rs[max_lag]), float(rs[lag + max_lag])
            out.append(shift_segment(seg, lag))
            report.append({"clip": seg.clip_id, "start_s": round(seg.start_s, 3), "frames": len(seg.canonical),
                           "lag_frames": lag, "r_at_0": round(r0, 3), "r_at_lag": round(r_best, 3)})
    moved = [r for r in report if r["lag_frames"]]
    log.info("sync check: %d of %d segments shifted (lags %s)", len(moved), len(report),
             sorted(r["lag_frames"] for r in moved))
    return out, report
