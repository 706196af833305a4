"""Baselines the model must beat: a still identity face, the still mean face, and a loudness regressor.

The loudness regressor is a ridge-regularised linear map, fitted on the TRAIN split only, from causal
log-RMS features (level, deltas, level above its running mean) to the jaw and lip displacement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config import N_LANDMARKS, SAMPLE_RATE_HZ
from engine.face import JAW, MOUTH
from engine.timing import frame_sample, lookahead_samples

RMS_WINDOW_MS = 40  # loudness window ending at the frame time (+ lookahead)
RMS_FLOOR = 1e-4  # added before the log: about -80 dBFS
LEVEL_EMA_S = 1.5  # time constant of the causal running mean of log RMS
RIDGE = 1e-2  # ridge strength, relative to the mean feature energy
FIT_SPLIT = "train"
MOVING_POINTS = np.concatenate([JAW, MOUTH])  # (37,) points the regressor moves
LOUDNESS_FEATURE_NAMES = ("bias", "log_rms", "delta", "delta2", "log_rms_above_mean", "log_rms_prev3")


def still_face(shape: np.ndarray, n_frames: int) -> np.ndarray:
    """A face (68, 2) held still for n_frames -> (n_frames, 68, 2)."""
    shape = np.asarray(shape, dtype=np.float32)
    if shape.shape != (N_LANDMARKS, 2):
        raise ValueError(f"expected a face of shape ({N_LANDMARKS}, 2), got {shape.shape}")
    return np.repeat(shape[None], n_frames, axis=0)


def log_rms_track(audio: np.ndarray, n_frames: int, fps: int, lookahead_ms: float = 0.0) -> np.ndarray:
    """(n_frames,) natural-log RMS of the RMS_WINDOW_MS ending at each frame's time + lookahead.

    Samples before the start and past the end of `audio` count as silence, as in the stream.
    """
    win = RMS_WINDOW_MS * SAMPLE_RATE_HZ // 1000
    ends = np.array([frame_sample(i, fps) for i in range(n_frames)]) + lookahead_samples(lookahead_ms)
    power = np.concatenate([[0.0], np.cumsum(np.asarray(audio, np.float64) ** 2)])
    hi = np.clip(ends, 0, len(audio))
    lo = np.clip(ends - win, 0, len(audio))
    rms = np.sqrt((power[hi] - power[lo]) / win)
    return np.log(rms + RMS_FLOOR)


def loudness_features(audio: np.ndarray, n_frames: int, fps: int, lookahead_ms: float = 0.0) -> np.ndarray:
    """(n_frames, len(LOUDNESS_FEATURE_NAMES)) causal loudness features; frames before 0 are silence."""
    e = log_rms_track(audio, n_frames, fps, lookahead_ms)
    silent = float(np.log(RMS_FLOOR))
    padded = np.concatenate([np.full(3, silent), e])
    prev1, prev2, prev3 = padded[2:-1], padded[1:-2], padded[:-3]
    alpha = 1.0 / (LEVEL_EMA_S * fps)
    ema = np.empty_like(e)
    acc = silent
    for i, v in enumerate(e):  # causal running mean of the level
        acc += alpha * (v - acc)
        ema[i] = acc
    return np.column_stack([np.ones_like(e), e, e - prev1, e - 2 * prev1 + prev2, e - ema, prev3])


@dataclass(frozen=True)
class LoudnessRegressor:
    """Linear map from loudness features to jaw+lip displacement (37 points x 2) from the identity."""

    weights: np.ndarray  # (n_features, len(MOVING_POINTS) * 2)
    fps: int
    lookahead_ms: float
    fitted_on: tuple[str, ...]  # clip ids of the train-split segments it was fitted on
    fit_split: str = FIT_SPLIT

    @classmethod
    def fit(cls, segments: list, fps: int, lookahead_ms: float = 0.0) -> LoudnessRegressor:
        """Fit on train-split segments (export.data.pack.Segment); any other split is refused."""
        if not segments:
            raise ValueError("LoudnessRegressor.fit needs at least one train-split segment")
        wrong = sorted({s.split for s in segments if s.split != FIT_SPLIT})
        if wrong:
            raise ValueError(f"the loudness regressor is fitted on the {FIT_SPLIT!r} split only, got {wrong}")
        bad_fps = sorted({s.fps for s in segments if s.fps != fps})
        if bad_fps:
            raise ValueError(f"segments must be at {fps} fps, got {bad_fps}")
        xs, ys = [], []
        for s in segments:
            n = len(s.canonical)
            xs.append(loudness_features(s.audio, n, fps, lookahead_ms))
            ys.append((s.canonical[:, MOVING_POINTS] - s.identity[MOVING_POINTS]).reshape(n, -1))
        x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)
        ok = np.isfinite(y).all(axis=1)
        x, y = x[ok], y[ok]
        gram = x.T @ x
        reg = RIDGE * np.trace(gram) / len(gram) * np.eye(len(gram))
        reg[0, 0] = 0.0  # the bias is not shrunk
        w = np.linalg.solve(gram + reg, x.T @ y)
        return cls(weights=w, fps=fps, lookahead_ms=float(lookahead_ms),
                   fitted_on=tuple(sorted({s.clip_id for s in segments})))

    def predict(self, audio: np.ndarray, identity: np.ndarray, n_frames: int) -> np.ndarray:
        """(n_frames, 68, 2): the identity with jaw and lips moved by the loudness of `audio`."""
        x = loudness_features(audio, n_frames, self.fps, self.lookahead_ms)
        out = still_face(identity, n_frames).astype(np.float64)
        out[:, MOVING_POINTS] += (x @ self.weights).reshape(n_frames, len(MOVING_POINTS), 2)
        return out.astype(np.float32)
