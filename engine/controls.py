"""ARKit-named avatar controls (0..1) from one landmark frame, measured against the neutral identity face.

Head pose is removed first (similarity fit on the rigid nose and eye points). Distances are in units
of the identity's inter-ocular distance; each control is a clipped linear map of one geometric cue.
"""

from __future__ import annotations

import numpy as np

from engine import face

CONTROL_NAMES = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft",
                 "mouthSmileRight", "browInnerUp", "eyeBlinkLeft", "eyeBlinkRight")
# full-scale ranges, as fractions of the inter-ocular distance (IOD) or of the neutral value
JAW_OPEN_FULL_IOD = 0.25  # chin drop (nose tip to chin) at jawOpen = 1
LIPS_CLOSED_GAP_IOD = 0.04  # inner-lip gap below which the lips touch
FUNNEL_OPEN_IOD = 0.08  # inner-lip gap of a full funnel
PUCKER_NARROW_FRAC = 0.2  # mouth width shrink (fraction of neutral) at mouthPucker = 1
SMILE_FULL_IOD = 0.08  # corner rise plus outward pull at mouthSmile = 1
BROW_UP_FULL_IOD = 0.1  # inner-brow rise at browInnerUp = 1
CHIN, NOSE_TIP = 8, 30
MOUTH_RIGHT, MOUTH_LEFT = 48, 54  # subject's right (image left) and left corners
INNER_BROWS = (21, 22)
INNER_EYE_CORNERS = (39, 42)
EYE_LIDS = {"right": ((37, 41), (38, 40)), "left": ((43, 47), (44, 46))}


def _eye_opening(p: np.ndarray, side: str) -> float:
    return float(np.mean([p[b, 1] - p[a, 1] for a, b in EYE_LIDS[side]]))


def _cues(p: np.ndarray) -> dict[str, float]:
    mid = (p[MOUTH_RIGHT] + p[MOUTH_LEFT]) / 2.0
    return {
        "chin": float(np.linalg.norm(p[CHIN] - p[NOSE_TIP])),
        "gap": float(face.inner_lip_gap(p)),
        "width": float(np.linalg.norm(p[MOUTH_LEFT] - p[MOUTH_RIGHT])),
        "corner_right": float((mid[1] - p[MOUTH_RIGHT, 1]) + (mid[0] - p[MOUTH_RIGHT, 0])),
        "corner_left": float((mid[1] - p[MOUTH_LEFT, 1]) + (p[MOUTH_LEFT, 0] - mid[0])),
        "brow": float(np.mean(p[list(INNER_EYE_CORNERS), 1]) - np.mean(p[list(INNER_BROWS), 1])),
        "eye_right": _eye_opening(p, "right"),
        "eye_left": _eye_opening(p, "left"),
    }


def controls_from_landmarks(points: np.ndarray, identity: np.ndarray) -> np.ndarray:
    """(68, 2) frame and (68, 2) neutral face (same canonical frame) -> (9,) float32 in CONTROL_NAMES order."""
    points = np.asarray(points, np.float64)
    identity = np.asarray(identity, np.float64)
    pose = face.fit_similarity(points[face.RIGID], identity[face.RIGID])
    p = face.apply_similarity(points, pose)  # head motion removed
    iod = float(face.interocular(identity))
    if iod <= 0:
        raise ValueError(f"identity face must have a positive inter-ocular distance, got {iod}")
    c, n = _cues(p), _cues(identity)
    jaw = (c["chin"] - n["chin"]) / (JAW_OPEN_FULL_IOD * iod)
    lips_touch = 1.0 - c["gap"] / (LIPS_CLOSED_GAP_IOD * iod)
    pucker = (n["width"] - c["width"]) / (PUCKER_NARROW_FRAC * n["width"])
    funnel = min(max(pucker, 0.0), 1.0) * c["gap"] / (FUNNEL_OPEN_IOD * iod)
    smile_l = (c["corner_left"] - n["corner_left"]) / (SMILE_FULL_IOD * iod)
    smile_r = (c["corner_right"] - n["corner_right"]) / (SMILE_FULL_IOD * iod)
    brow = (c["brow"] - n["brow"]) / (BROW_UP_FULL_IOD * iod)
    blink_l = 1.0 - c["eye_left"] / max(n["eye_left"], 1e-6)
    blink_r = 1.0 - c["eye_right"] / max(n["eye_right"], 1e-6)
    # mouthClose (ARKit): lips held together while the jaw is open
    close = min(max(jaw, 0.0), 1.0) * min(max(lips_touch, 0.0), 1.0)
    values = [jaw, close, funnel, pucker, smile_l, smile_r, brow, blink_l, blink_r]
    return np.clip(np.asarray(values, np.float32), 0.0, 1.0)
