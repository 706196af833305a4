"""Which feature hops feed which landmark frame: one definition shared by training, streaming and infer.

Feature hop k summarises audio that ends at sample (k + 1) * HOP_SAMPLES and is emitted as soon as
that sample has arrived. Landmark frame i shows the face at audio time i / fps. With a lookahead of
L ms, frame i reads the `window` hops ending at the last hop that is complete at time i / fps + L.
Hops before the start of the audio are silence.
"""

from __future__ import annotations

import numpy as np

from engine.config import HOP_SAMPLES, SAMPLE_RATE_HZ


def lookahead_samples(lookahead_ms: float) -> int:
    n = lookahead_ms * SAMPLE_RATE_HZ / 1000.0
    if abs(n - round(n)) > 1e-6:
        raise ValueError(f"lookahead_ms={lookahead_ms} must be a whole number of samples at {SAMPLE_RATE_HZ} Hz")
    return round(n)


def frame_sample(i: int, fps: int) -> int:
    """First sample at or after the time of frame i (ceil(i * SR / fps))."""
    return -(-i * SAMPLE_RATE_HZ // fps)


def last_hop(i: int, fps: int, lookahead_ms: float) -> int:
    """Index of the newest feature hop frame i may read (can be negative near the start)."""
    return last_hop_at(i, fps, lookahead_samples(lookahead_ms))


def last_hop_at(i: int, fps: int, look_samples: int) -> int:
    """last_hop with the lookahead already in whole samples (a live stream asks this for every frame)."""
    return (frame_sample(i, fps) + look_samples) // HOP_SAMPLES - 1


def samples_needed(i: int, fps: int, lookahead_ms: float) -> int:
    """How many input samples must have arrived before frame i can be computed."""
    return (last_hop(i, fps, lookahead_ms) + 1) * HOP_SAMPLES


def n_frames(n_samples: int, fps: int) -> int:
    """Frames whose time i / fps lies inside a clip of n_samples (ceil(n * fps / SR))."""
    return -(-n_samples * fps // SAMPLE_RATE_HZ)


def window_indices(n: int, fps: int, lookahead_ms: float, window: int) -> np.ndarray:
    """(n, window) hop indices for frames 0..n-1; negative entries mean silence before the start."""
    last = np.array([last_hop(i, fps, lookahead_ms) for i in range(n)], dtype=np.int64)
    return last[:, None] + np.arange(-window + 1, 1, dtype=np.int64)[None, :]


def gather_windows(hops: np.ndarray, silence: np.ndarray, n: int, fps: int, lookahead_ms: float,
                   window: int) -> np.ndarray:
    """Stack the model input for frames 0..n-1 from a hop sequence (K, F) -> (n, window, F).

    `silence` (F,) stands in for hops before the start. Every hop a frame needs must be in `hops`
    (pad the audio with zeros past its end to cover the last frames' lookahead).
    """
    idx = window_indices(n, fps, lookahead_ms, window)
    if n and idx.max() >= len(hops):
        raise ValueError(f"frame {n - 1} needs hop {idx.max()}, but only {len(hops)} hops were given")
    table = np.concatenate([silence[None, :].astype(hops.dtype), hops], axis=0)
    return table[np.maximum(idx + 1, 0)]
