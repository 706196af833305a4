"""Phonemes (festival radio set) -> mouth parameters per video frame, with Cohen-Massaro coarticulation
(dominance-weighted targets), bilabial closure and the visual lead over the sound."""

from __future__ import annotations

import numpy as np

from engine.config import DEFAULT_FPS

PARAMS = ("jaw", "lip", "spread", "round", "tuck")  # jaw/lip opening 0..1, spread/round 0..1, lower-lip tuck
VISUAL_LEAD_S = 0.04  # the mouth moves this much before the sound it makes
ANTICIPATION_S = 0.05  # dominance reaches this much further before a phone than its half-length...
CARRYOVER_S = 0.03  # ...and this much further after it
DOMINANCE_POWER = 2.0
CLOSURE_LEAD_S = 0.015  # lips are shut this long before a bilabial's acoustic closure begins
# Coarticulation undershoots the targets; this gain was set so the corpus' inner-lip gap percentiles
# (50th, 95th about 5 and 16 px) match the pack's train split measured above each clip's 5th percentile.
GAP_GAIN = 1.7
GRID_HZ = 200  # coarticulation is evaluated on this grid, then sampled at the frame times
BILABIALS = ("p", "b", "m")
OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay")
SILENCES = ("pau", "h#", "sil")
LONG_PAUSE_S = 0.12  # pauses at least this long close the lips in their middle

# phone -> (targets for PARAMS, dominance for PARAMS). Low dominance = the phone borrows its neighbours'
# shape (e.g. t, k, h); high dominance = the shape is obligatory (lip closure, rounding, labiodentals).
_V = {  # vowels: jaw, lip, spread, round, tuck
    "aa": (1.0, 1.0, 0.1, 0.0), "ae": (0.85, 0.85, 0.45, 0.0), "ah": (0.75, 0.75, 0.1, 0.0),
    "ao": (0.9, 0.85, 0.0, 0.45), "aw": (0.85, 0.85, 0.1, 0.3), "ay": (0.9, 0.9, 0.25, 0.0),
    "eh": (0.55, 0.6, 0.4, 0.0), "ey": (0.45, 0.5, 0.5, 0.0), "ih": (0.35, 0.4, 0.4, 0.0),
    "iy": (0.2, 0.25, 0.8, 0.0), "ax": (0.4, 0.45, 0.1, 0.0), "er": (0.3, 0.3, 0.0, 0.45),
    "uw": (0.25, 0.22, 0.0, 0.95), "ow": (0.45, 0.42, 0.0, 0.85), "oy": (0.4, 0.4, 0.0, 0.7),
    "uh": (0.3, 0.3, 0.0, 0.6),
}
TARGETS: dict[str, tuple[np.ndarray, np.ndarray]] = {}
for _p, (_j, _l, _s, _r) in _V.items():
    TARGETS[_p] = (np.array([_j, _l, _s, _r, 0.0]), np.array([1.0, 1.0, 0.8, 1.5 if _r > 0.5 else 0.8, 0.3]))
_C = {  # consonants: targets (jaw, lip, spread, round, tuck), dominance
    "p": ((0.05, 0.0, 0.0, 0.0, 0.0), (1.5, 2.5, 0.2, 0.2, 1.0)),
    "b": ((0.05, 0.0, 0.0, 0.0, 0.0), (1.5, 2.5, 0.2, 0.2, 1.0)),
    "m": ((0.05, 0.0, 0.0, 0.0, 0.0), (1.5, 2.5, 0.2, 0.2, 1.0)),
    "f": ((0.1, 0.06, 0.15, 0.0, 1.0), (1.0, 3.0, 0.3, 0.3, 5.0)),
    "v": ((0.1, 0.06, 0.15, 0.0, 1.0), (1.0, 3.0, 0.3, 0.3, 5.0)),
    "w": ((0.15, 0.15, 0.0, 1.0, 0.0), (1.0, 2.0, 1.0, 6.0, 1.0)),
    "r": ((0.2, 0.22, 0.0, 0.5, 0.0), (0.6, 0.8, 0.6, 2.0, 0.5)),
    "sh": ((0.15, 0.18, 0.0, 0.65, 0.0), (1.0, 1.0, 0.8, 3.0, 0.5)),
    "zh": ((0.15, 0.18, 0.0, 0.65, 0.0), (1.0, 1.0, 0.8, 3.0, 0.5)),
    "ch": ((0.15, 0.15, 0.0, 0.6, 0.0), (1.0, 1.0, 0.8, 3.0, 0.5)),
    "jh": ((0.15, 0.15, 0.0, 0.6, 0.0), (1.0, 1.0, 0.8, 3.0, 0.5)),
    "s": ((0.1, 0.15, 0.5, 0.0, 0.0), (1.5, 1.0, 0.8, 0.5, 0.5)),
    "z": ((0.1, 0.15, 0.5, 0.0, 0.0), (1.5, 1.0, 0.8, 0.5, 0.5)),
    "th": ((0.25, 0.3, 0.2, 0.0, 0.0), (0.8, 1.0, 0.3, 0.3, 0.5)),
    "dh": ((0.25, 0.3, 0.2, 0.0, 0.0), (0.8, 1.0, 0.3, 0.3, 0.5)),
    "t": ((0.2, 0.25, 0.25, 0.0, 0.0), (0.5, 0.5, 0.3, 0.2, 0.3)),
    "d": ((0.2, 0.25, 0.25, 0.0, 0.0), (0.5, 0.5, 0.3, 0.2, 0.3)),
    "n": ((0.2, 0.25, 0.25, 0.0, 0.0), (0.5, 0.5, 0.3, 0.2, 0.3)),
    "l": ((0.3, 0.32, 0.2, 0.0, 0.0), (0.5, 0.5, 0.3, 0.2, 0.3)),
    "y": ((0.2, 0.22, 0.5, 0.0, 0.0), (0.6, 0.6, 0.8, 0.3, 0.3)),
    "k": ((0.3, 0.3, 0.15, 0.0, 0.0), (0.3, 0.3, 0.2, 0.2, 0.3)),
    "g": ((0.3, 0.3, 0.15, 0.0, 0.0), (0.3, 0.3, 0.2, 0.2, 0.3)),
    "ng": ((0.25, 0.25, 0.15, 0.0, 0.0), (0.3, 0.3, 0.2, 0.2, 0.3)),
    "hh": ((0.4, 0.4, 0.1, 0.0, 0.0), (0.15, 0.15, 0.1, 0.1, 0.3)),
}
for _p, (_t, _d) in _C.items():
    TARGETS[_p] = (np.array(_t, float), np.array(_d, float))
SILENCE_TARGET = (np.zeros(len(PARAMS)), np.array([0.8, 0.8, 0.5, 0.5, 0.5]))
for _p in SILENCES:
    TARGETS[_p] = SILENCE_TARGET


def _dominance(t: np.ndarray, centre: float, duration: float, alpha: np.ndarray) -> np.ndarray:
    """(len(t), P) dominance alpha * exp(-|tau| / width); wider before the centre (anticipation)."""
    tau = t[:, None] - centre
    width = np.where(tau < 0, 0.5 * duration + ANTICIPATION_S, 0.5 * duration + CARRYOVER_S)
    return alpha[None, :] * np.exp(-((np.abs(tau) / width) ** DOMINANCE_POWER))


def mouth_params(phones: list[tuple[str, float, float]], n_frames: int, fps: int = DEFAULT_FPS,
                 lead_s: float = VISUAL_LEAD_S) -> np.ndarray:
    """Phones [(phone, start_s, end_s)] -> (n_frames, len(PARAMS)) mouth parameters at times i / fps."""
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    unknown = sorted({p for p, _, _ in phones if p not in TARGETS})
    if unknown:
        raise ValueError(f"no viseme for phones {unknown}; expected festival radio phones")
    t = np.arange(int(np.ceil(n_frames / fps * GRID_HZ)) + 1) / GRID_HZ
    num = np.zeros((len(t), len(PARAMS)))
    den = np.full((len(t), len(PARAMS)), 1e-6)
    closed = np.zeros(len(t), bool)
    for phone, start, end in phones:
        target, alpha = TARGETS[phone]
        dur = max(end - start, 1e-3)
        d = _dominance(t, 0.5 * (start + end) - lead_s, dur, alpha)
        num += d * target
        den += d
        if phone in BILABIALS:  # lips meet as the acoustic closure starts and part at the burst near its end
            closed |= (t >= start - CLOSURE_LEAD_S) & (t <= end - 0.2 * dur)
        elif phone in SILENCES and dur >= LONG_PAUSE_S:
            closed |= (t >= start + 0.05) & (t <= end - lead_s - 0.08)
    out = num / den
    out[closed, 1] = 0.0
    frame_t = np.arange(n_frames) / fps
    frames = np.stack([np.interp(frame_t, t, out[:, k]) for k in range(len(PARAMS))], axis=1)
    # every bilabial shows at least one closed frame, at the one nearest its (lead-shifted) middle
    for phone, start, end in phones:
        if phone in BILABIALS:
            i = round(0.5 * (start + end) * fps)
            if 0 <= i < n_frames:
                frames[i, 1] = 0.0
    return frames


def to_features(params: np.ndarray, feature_scale: np.ndarray, articulation: float = 1.0,
                bias: np.ndarray | None = None) -> np.ndarray:
    """Mouth parameters (T, 5) -> face-model features (T, 4): gap, width, jaw, thickness in canonical px."""
    jaw, lip, spread, rnd, tuck = params.T
    gap_scale, width_std, jaw_scale, thick_std = feature_scale
    b = np.zeros(4) if bias is None else np.asarray(bias, float)
    gap = np.maximum(0.0, articulation * lip + b[0]) * gap_scale * GAP_GAIN
    gap = np.where(lip <= 0.0, 0.0, gap)  # contact stays contact whatever the expression
    width = (1.6 * spread - 2.2 * rnd + b[1]) * width_std
    jaw_px = (articulation * jaw + b[2]) * jaw_scale
    thick = (1.2 * rnd - 1.5 * tuck + b[3]) * thick_std
    return np.stack([gap, width, jaw_px, thick], axis=1)
