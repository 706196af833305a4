"""Tracks through a centred moving average: the tracker's frame-to-frame jitter taken out.

    calm = smoothed_targets(seg, frames=3)   # same audio and identity; canonical and head averaged over 3 frames
    calm = smoothed_targets(seg, frames=5, keep_closures=True)   # and lips shut in the track stay shut

The pack's faces are dlib tracks, and part of their frame-to-frame motion is the tracker's jitter, which no
model of the audio can predict (kfusion eval's `oracle_smoothed_truth`, this same average applied to the
truth, measures it). Training may smooth its targets; evaluation always scores against the raw tracks.

A mean also opens short closures: over the pack's train split a 5-frame mean lifts 35 % of the frames whose
lips are shut (inner gap at most 2 % of the eye distance) above that line. `keep_closures` puts those back.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import uniform_filter1d

from engine.face import INNER_LIP_LOWER, INNER_LIP_UPPER
from export.articulation import CLOSED_GAP_PCT, inner_gap_pct  # shut lips as bench articulation counts them


def check_frames(frames: int, what: str = "target_smooth_frames") -> int:
    """The window must be a positive odd number of frames, so it stays centred on each frame."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1 or frames % 2 == 0:
        raise ValueError(f"{what} must be an odd whole number of frames >= 1 (an odd number keeps the window "
                         f"centred; 1 = off), got {frames!r}")
    return frames


def centred_mean(track: np.ndarray, frames: int, what: str = "the window") -> np.ndarray:
    """(T, ...) -> float64 (T, ...): each frame the mean of the `frames` frames centred on it, edges repeated."""
    check_frames(frames, what)
    return uniform_filter1d(np.asarray(track, np.float64), frames, axis=0, mode="nearest")


def kept_closures(raw: np.ndarray, calm: np.ndarray, closed_gap_pct: float = CLOSED_GAP_PCT) -> np.ndarray:
    """calm (T, 68, 2) with its lips shut again where raw's are: a new float64 array.

    In each frame where raw's inner-lip gap (engine.face.inner_lip_gap, canonical frame, y down) is at most
    closed_gap_pct % of raw's outer-eye-corner distance, each inner-lip pair (61-67, 62-66, 63-65) whose gap
    calm has widened is narrowed back to raw's gap, both lips moving half the way along y about their
    midpoint. Every other point and frame is calm's.
    """
    raw = np.asarray(raw, np.float64)
    out = np.array(calm, np.float64)
    if raw.shape != out.shape or raw.ndim != 3 or raw.shape[1:] != (68, 2):
        raise ValueError(f"raw and calm must both be (T, 68, 2), got {raw.shape} and {out.shape}")
    shut = inner_gap_pct(raw) <= closed_gap_pct  # (T,)
    up, low = INNER_LIP_UPPER, INNER_LIP_LOWER
    excess = (out[:, low, 1] - out[:, up, 1]) - (raw[:, low, 1] - raw[:, up, 1])  # (T, 3) widening per pair
    half = np.where(shut[:, None] & (excess > 0), excess / 2.0, 0.0)
    out[:, up, 1] += half
    out[:, low, 1] -= half
    return out


def smoothed_targets(seg, frames: int, keep_closures: bool = False):
    """A copy of `seg` (export.data.pack.Segment) with canonical (T, 68, 2) and head (T, 4) through
    centred_mean, and with keep_closures its shut lips kept shut (kept_closures); frames == 1 returns seg."""
    if check_frames(frames) == 1:
        return seg
    canonical = centred_mean(seg.canonical, frames)
    if keep_closures:
        canonical = kept_closures(seg.canonical, canonical)
    return dataclasses.replace(seg, canonical=canonical.astype(np.float32),
                               head=centred_mean(seg.head, frames).astype(np.float32))
