"""Speed perturbation of a real training segment: the audio played `factor` times faster (pitch moves with it,
as in Kaldi's speed perturbation) and the face tracks resampled in time to match.

    fast = speed_perturbed(seg, 1.1)   # 10 % faster: 1/1.1 of the frames, the same identity

Frame i of the result shows the face at original time i * factor / fps, so every mouth shape keeps its sound.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from engine.config import SAMPLE_RATE_HZ
from engine.timing import n_frames

MIN_FACTOR, MAX_FACTOR = 0.8, 1.25  # beyond this speech stops sounding like the speaker


def check_factor(factor: float) -> float:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not MIN_FACTOR <= factor <= MAX_FACTOR \
            or factor == 1.0:
        raise ValueError(f"a speed factor must be a number in [{MIN_FACTOR}, {MAX_FACTOR}] other than 1, got {factor!r}")
    return float(factor)


def _resample_track(track: np.ndarray, t_src: np.ndarray) -> np.ndarray:
    """track (T, ...) sampled at frames 0..T-1 -> values at fractional frames t_src (clamped to the ends)."""
    t = np.clip(t_src, 0.0, len(track) - 1)
    i0 = np.floor(t).astype(np.int64)
    i1 = np.minimum(i0 + 1, len(track) - 1)
    w = (t - i0).reshape((-1,) + (1,) * (track.ndim - 1)).astype(track.dtype)
    return track[i0] * (1 - w) + track[i1] * w


def speed_perturbed(seg, factor: float):
    """A copy of `seg` (export.data.pack.Segment) sped up by `factor` (< 1 slows it down)."""
    import soxr

    factor = check_factor(factor)
    # playing SR * factor samples per second at SR: resample from SR * factor down to SR
    audio = soxr.resample(seg.audio.astype(np.float32), SAMPLE_RATE_HZ * factor, SAMPLE_RATE_HZ).astype(np.float32)
    t = n_frames(len(audio), seg.fps)
    src = np.arange(t) * factor  # original frame index shown by new frame i
    head = _resample_track(seg.head, src).astype(np.float32)
    angle = _resample_track(np.unwrap(seg.head[:, 1]), src)  # interpolated without a jump across +-pi,
    head[:, 1] = np.angle(np.exp(1j * angle))  # then wrapped back into (-pi, pi] like the source
    return dataclasses.replace(seg, clip_id=f"{seg.clip_id}@speed{factor:g}", audio=audio,
                               canonical=_resample_track(seg.canonical, src).astype(np.float32), head=head,
                               start_s=seg.start_s / factor)
