"""Tracks through a centred moving average: the tracker's frame-to-frame jitter taken out.

    calm = smoothed_targets(seg, frames=3)   # same audio and identity; canonical and head averaged over 3 frames

The pack's faces are dlib tracks, and part of their frame-to-frame motion is the tracker's jitter, which no
model of the audio can predict (kfusion eval's `oracle_smoothed_truth`, this same average applied to the
truth, measures it). Training may smooth its targets; evaluation always scores against the raw tracks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import uniform_filter1d


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


def smoothed_targets(seg, frames: int):
    """A copy of `seg` (export.data.pack.Segment) with canonical (T, 68, 2) and head (T, 4) through
    centred_mean; frames == 1 returns seg."""
    if check_frames(frames) == 1:
        return seg
    return dataclasses.replace(seg, canonical=centred_mean(seg.canonical, frames).astype(np.float32),
                               head=centred_mean(seg.head, frames).astype(np.float32))
