"""One Euro filter for landmark tracks: causal, adaptive low-pass, zero added latency (no frames held).

Casiez, Roussel, Vogel (CHI 2012): the cutoff rises with speed, so slow jitter is smoothed and fast
motion (speech onsets) passes. `OneEuroFilter(fps)(points)` filters one frame of any shape.
"""

from __future__ import annotations

import math

import numpy as np

DERIVATIVE_CUTOFF_HZ = 1.0


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    tau_s = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau_s / dt_s)


class OneEuroFilter:
    """Element-wise One Euro filter at a fixed frame rate; state is the previous output and speed."""

    def __init__(self, fps: float, min_cutoff_hz: float = 3.0, beta: float = 0.05,
                 d_cutoff_hz: float = DERIVATIVE_CUTOFF_HZ) -> None:
        if fps <= 0 or min_cutoff_hz <= 0 or d_cutoff_hz <= 0 or beta < 0:
            raise ValueError(f"need fps, min_cutoff_hz, d_cutoff_hz > 0 and beta >= 0, got "
                             f"{fps}, {min_cutoff_hz}, {d_cutoff_hz}, {beta}")
        self.dt_s = 1.0 / fps
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.a_d = _alpha(d_cutoff_hz, self.dt_s)
        self._x: np.ndarray | None = None  # previous filtered value
        self._dx: np.ndarray | None = None  # previous filtered speed (units per second)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self._x) / self.dt_s
        self._dx = self.a_d * dx + (1.0 - self.a_d) * self._dx
        a = _alpha(self.min_cutoff_hz + self.beta * np.abs(self._dx), self.dt_s)
        self._x = (a * x + (1.0 - a) * self._x).astype(np.float32)
        return self._x.copy()

    def filter_track(self, track: np.ndarray) -> np.ndarray:
        """(T, ...) -> (T, ...) filtered in time order (same numbers as calling per frame)."""
        return np.stack([self(f) for f in track]) if len(track) else np.asarray(track, np.float32)
