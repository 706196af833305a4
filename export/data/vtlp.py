"""Vocal tract length perturbation on log-mel features: another speaker's formants, for training augmentation.

    warped = warp_log_mel(mel, alpha)     # mel (B, ..., 80) log-mel, alpha (B,): spectrum scaled by alpha

A longer or shorter vocal tract scales the formant frequencies by a factor alpha (about 0.85-1.2 between
adult speakers). The warped spectrum at frequency f is the original at f / alpha, read off the mel bands'
centre frequencies by linear interpolation in Hz; bands past the top edge repeat the top band. Used by
`kfusion train --vtlp V` (alpha uniform in [1 - V, 1 + V] per crop); prosody features are left alone.
"""

from __future__ import annotations

import numpy as np

MAX_VTLP = 0.3  # alpha outside [0.7, 1.3] no longer sounds like a human adult


def band_centres_hz() -> np.ndarray:
    """(80,) centre frequency of each mel band of engine/features.py."""
    from engine import features as fx

    edges = fx._mel_to_hz(np.linspace(fx._hz_to_mel(0.0), fx._hz_to_mel(fx.MEL_FMAX_HZ), fx.N_MELS + 2))
    return edges[1:-1]


def warp_log_mel(mel, alpha):
    """mel (B, ..., 80) torch log-mel, alpha (B,) torch factors -> the same shape, each row's spectrum scaled."""
    import torch

    if mel.shape[-1] != len(band_centres_hz()):
        raise ValueError(f"expected {len(band_centres_hz())} mel bands on the last axis, got shape {tuple(mel.shape)}")
    if alpha.ndim != 1 or alpha.shape[0] != mel.shape[0]:
        raise ValueError(f"alpha must have shape ({mel.shape[0]},), got {tuple(alpha.shape)}")
    if bool(((alpha < 1 - MAX_VTLP) | (alpha > 1 + MAX_VTLP)).any()):
        raise ValueError(f"alpha must be in [{1 - MAX_VTLP}, {1 + MAX_VTLP}], got {alpha.tolist()}")
    centres = torch.as_tensor(band_centres_hz(), dtype=mel.dtype)
    src_hz = centres[None, :] / alpha[:, None].to(mel.dtype)  # (B, 80): where each output band reads from
    pos = torch.searchsorted(centres, src_hz.contiguous()).clamp(1, len(centres) - 1)  # right neighbour
    lo_hz, hi_hz = centres[pos - 1], centres[pos]
    frac = ((src_hz - lo_hz) / (hi_hz - lo_hz)).clamp(0.0, 1.0)  # below the first / past the last band: edge
    shape = (mel.shape[0],) + (1,) * (mel.ndim - 2) + (mel.shape[-1],)
    lo = torch.gather(mel, -1, (pos - 1).reshape(shape).expand_as(mel))
    hi = torch.gather(mel, -1, pos.reshape(shape).expand_as(mel))
    return lo + frac.reshape(shape) * (hi - lo)
