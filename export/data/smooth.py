"""Training targets through a centred moving average: the tracker's frame-to-frame jitter taken out.

    calm = smoothed_targets(seg, frames=3)   # same audio and identity; canonical and head averaged over 3 frames

The pack's faces are dlib tracks, and part of their frame-to-frame motion is the tracker's jitter, which no
model of the audio can predict (kfusion eval's `oracle_smoothed_truth` measures it). Only training targets
are smoothed; evaluation always scores against the raw tracks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import uniform_filter1d


def check_frames(frames: int) -> int:
    """The window must be a positive odd number of frames, so it stays centred on each frame."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1 or frames % 2 == 0:
        raise ValueError(f"target_smooth_frames must be an odd whole number of frames >= 1 (1 = off), got {frames!r}")
    return frames


def smoothed_targets(seg, frames: int):
    """A copy of `seg` (export.data.pack.Segment) with canonical (T, 68, 2) and head (T, 4) averaged over a centred
    window of `frames` frames along time (the edge frames repeated past either end); frames == 1 returns seg."""
    if check_frames(frames) == 1:
        return seg
    canonical = uniform_filter1d(seg.canonical.astype(np.float64), frames, axis=0, mode="nearest")
    head = uniform_filter1d(seg.head.astype(np.float64), frames, axis=0, mode="nearest")
    return dataclasses.replace(seg, canonical=canonical.astype(np.float32), head=head.astype(np.float32))
