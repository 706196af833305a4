"""Left-right mirroring of a real training segment: the face flipped about the canonical centre, the sound kept.

    flipped = mirrored(seg)   # same audio; x -> 2 c - x, iBUG-68 points swapped side for side

The pack's train split is 13 minutes of about 90 faces; a mirrored copy shows each mouth shape on a face
whose asymmetries (and tracker biases) run the other way, with the same sound.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from engine.face import CANONICAL_CENTRE_PX


def _ibug68_mirror_order() -> np.ndarray:
    """order[i] = the point that lands on point i's place after a left-right flip (an involution)."""
    pairs = [(j, 16 - j) for j in range(8)]  # jaw 0..16 (8 is the chin)
    pairs += [(17 + j, 26 - j) for j in range(5)]  # brows 17..21 <-> 26..22
    pairs += [(31, 35), (32, 34)]  # nose base (27..30, the bridge, and 33 stay)
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips (51, 57 stay)
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips (62, 66 stay)
    order = np.arange(68)
    for a, b in pairs:
        order[a], order[b] = b, a
    return order


MIRROR_ORDER = _ibug68_mirror_order()


def mirror_points(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) canonical points -> their left-right mirror image, in iBUG-68 order."""
    out = np.array(points[..., MIRROR_ORDER, :], copy=True)
    out[..., 0] = 2.0 * CANONICAL_CENTRE_PX[0] - out[..., 0]
    return out


def mirror_head(head: np.ndarray) -> np.ndarray:
    """(..., 4) head motion [log_scale, angle, dx, dy] -> the mirror image's: angle and dx change sign."""
    out = np.array(head, copy=True)
    out[..., 1] = -out[..., 1]
    out[..., 2] = -out[..., 2]
    return out


def mirrored(seg):
    """A copy of `seg` (export.data.pack.Segment) with its face mirrored left-right and its sound kept."""
    return dataclasses.replace(
        seg, clip_id=f"{seg.clip_id}@mirror",
        canonical=mirror_points(seg.canonical).astype(np.float32),
        head=mirror_head(seg.head).astype(np.float32),
        identity=mirror_points(seg.identity).astype(np.float32),
        median_pose=None)  # the copy has no source video to map back to
