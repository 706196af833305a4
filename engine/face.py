"""The canonical face frame: iBUG-68 point groups, similarity (Procrustes) fits and pose tracks.

The canonical frame is a 256x256 aligned face crop, x right, y down (as in the KFusion paper). A face
is placed so that the midpoint of the outer eye corners (points 36 and 45) sits at CANONICAL_EYE_MID_PX,
the eye line is horizontal and the inter-ocular distance is CANONICAL_INTEROCULAR_PX.
"""

from __future__ import annotations

import numpy as np

from engine.config import CANONICAL_SIZE_PX, N_LANDMARKS

CANONICAL_INTEROCULAR_PX = 100.0
CANONICAL_EYE_MID_PX = (CANONICAL_SIZE_PX / 2.0, CANONICAL_SIZE_PX * 0.42)
CANONICAL_CENTRE_PX = (CANONICAL_SIZE_PX / 2.0, CANONICAL_SIZE_PX / 2.0)

JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
NOSE = np.arange(27, 36)
EYES = np.arange(36, 48)
LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
OUTER_LIPS = np.arange(48, 60)
INNER_LIPS = np.arange(60, 68)
MOUTH = np.arange(48, 68)
EYE_OUTER_CORNERS = (36, 45)
INNER_LIP_UPPER = np.array([61, 62, 63])
INNER_LIP_LOWER = np.array([67, 66, 65])
# the same points as slices, for seal_lips' views (the lower lip runs backwards: 67 66 65 pairs with 61 62 63)
_UPPER_LIP = slice(int(INNER_LIP_UPPER.min()), int(INNER_LIP_UPPER.max()) + 1)
_LOWER_LIP = slice(int(INNER_LIP_LOWER.min()), int(INNER_LIP_LOWER.max()) + 1)
# Points that move little with speech: the fit that removes head pose uses only these.
RIGID = np.concatenate([NOSE, EYES])


def interocular(points: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance, (..., 68, 2) -> (...)."""
    a, b = EYE_OUTER_CORNERS
    return np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)


def inner_lip_gap(points: np.ndarray) -> np.ndarray:
    """Mean vertical inner-lip opening (points 61-63 vs 67-65), (..., 68, 2) -> (...); numpy or torch."""
    return (points[..., INNER_LIP_LOWER, 1] - points[..., INNER_LIP_UPPER, 1]).mean(axis=-1)


def seal_lips(points: np.ndarray, dead_zone_pct: float) -> np.ndarray:
    """Shut nearly-closed lips: a dead zone on the inner-lip gap, (..., 68, 2) -> a new float32 array.

    For each inner-lip pair (61-67, 62-66, 63-65) the signed gap g is measured along the face's own
    down axis (normal to the eye line 36->45, so head roll and scale do not matter); with d =
    dead_zone_pct % of the eye distance it becomes g - d when g >= d, 0 when 0 <= g < d, and stays g
    when the lips already cross (g < 0): each lip moves clip(g, 0, d) / 2 toward the other. A model
    trained to the mean leaves p, b and m slightly ajar; this closes them and narrows open lips by d.
    Points are handled as complex numbers x + iy, in a dozen numpy calls on views: the engine runs this
    after every model call, when ONNX Runtime has just pushed numpy's own data out of the CPU caches
    (there it costs 70-250 us a call against about 22 us in a loop).
    """
    out = np.array(points, np.float32)  # a C-contiguous copy, so (x, y) pairs view as complex64
    if dead_zone_pct <= 0 or out.size == 0:
        return out
    z = out.view(np.complex64)[..., 0]  # (..., 68)
    eye = z[..., EYE_OUTER_CORNERS[1]] - z[..., EYE_OUTER_CORNERS[0]]
    iod = np.maximum(np.abs(eye), np.float32(1e-6))[..., None]  # eye corners apart, or no direction
    down = eye[..., None] * np.complex64(1j) / iod  # the eye line turned +90 degrees: image down
    upper = z[..., _UPPER_LIP]  # views into out (no gather or scatter): 61 62 63
    lower = z[..., _LOWER_LIP][..., ::-1]  # 67 66 65, paired with them
    gap = ((lower - upper) * down.conj()).real  # (..., 3), > 0 open
    half = np.minimum(np.maximum(gap, 0.0), iod * np.float32(dead_zone_pct / 100.0)) * np.float32(0.5) * down
    upper += half
    lower -= half
    return out


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity taking src (N, 2) onto dst (N, 2) (Umeyama).

    Returns [log_scale, angle_rad, tx, ty] with dst ~= s * R(angle) @ src + t.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum()
    if var_s <= 0:
        raise ValueError("cannot fit a similarity to a degenerate point set")
    # For 2-D similarity the optimum is closed form in complex numbers: d = a * s, a = s*R.
    a = float((s0[:, 0] * d0[:, 0] + s0[:, 1] * d0[:, 1]).sum() / var_s)
    b = float((s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum() / var_s)
    scale = float(np.hypot(a, b))
    angle = float(np.arctan2(b, a))
    rot = np.array([[a, -b], [b, a]])
    t = mu_d - rot @ mu_s
    return np.array([np.log(scale), angle, t[0], t[1]])


def similarity_matrix(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[log_scale, angle, tx, ty] -> (2x2 matrix, translation)."""
    s = np.exp(pose[0])
    c, sn = np.cos(pose[1]) * s, np.sin(pose[1]) * s
    return np.array([[c, -sn], [sn, c]]), np.array([pose[2], pose[3]])


def apply_similarity(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Apply [log_scale, angle, tx, ty] to points (..., 2)."""
    m, t = similarity_matrix(pose)
    return points @ m.T + t


def invert_similarity(pose: np.ndarray) -> np.ndarray:
    m, t = similarity_matrix(pose)
    mi = np.linalg.inv(m)
    ti = -mi @ t
    return np.array([-pose[0], -pose[1], ti[0], ti[1]])


def place_canonical(shape: np.ndarray) -> np.ndarray:
    """Scale, rotate and move one shape (68, 2) so its eyes sit where the canonical frame puts them."""
    a, b = EYE_OUTER_CORNERS
    left, right = shape[a], shape[b]
    src = np.stack([left, right])
    half = CANONICAL_INTEROCULAR_PX / 2.0
    ex, ey = CANONICAL_EYE_MID_PX
    dst = np.array([[ex - half, ey], [ex + half, ey]])
    return apply_similarity(shape, fit_similarity(src, dst))


def mean_shape(shapes: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Generalised Procrustes mean of shapes (N, 68, 2), NaN frames ignored, placed canonically."""
    shapes = shapes[~np.isnan(shapes).any(axis=(1, 2))]
    if len(shapes) == 0:
        raise ValueError("mean_shape needs at least one shape without NaN")
    ref = place_canonical(shapes[0])
    for _ in range(iterations):
        aligned = np.stack([apply_similarity(s, fit_similarity(s[RIGID], ref[RIGID])) for s in shapes])
        ref = place_canonical(aligned.mean(0))
    return ref


def to_canonical(frames: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a track (T, 68, 2) into canonical shapes and per-frame poses.

    Each frame is fitted onto `reference` (a canonical mean shape) over the RIGID points. Returns
    (canonical (T, 68, 2), poses (T, 4)) where poses take the canonical shape back to the frame's
    pixels: frames[t] ~= apply_similarity(canonical[t], poses[t]). NaN frames stay NaN in both.
    """
    if frames.ndim != 3 or frames.shape[1:] != (N_LANDMARKS, 2):
        raise ValueError(f"expected landmarks of shape (T, {N_LANDMARKS}, 2), got {frames.shape}")
    canon = np.full(frames.shape, np.nan)
    poses = np.full((len(frames), 4), np.nan)
    for t, f in enumerate(frames):
        if np.isnan(f).any():
            continue
        p = fit_similarity(f[RIGID], reference[RIGID])
        canon[t] = apply_similarity(f, p)
        poses[t] = invert_similarity(p)
    return canon, poses


def apply_head_motion(canonical: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Move canonical shapes (..., 68, 2) by head motion (..., 4) = [log_scale, angle, dx, dy].

    The motion turns and scales about the canonical centre, then shifts by (dx, dy) px:
    x' = s R (x - c) + c + d. Zero head motion leaves the shape where it is.
    """
    c = np.asarray(CANONICAL_CENTRE_PX)
    s = np.exp(head[..., 0])[..., None, None]
    cos, sin = np.cos(head[..., 1])[..., None], np.sin(head[..., 1])[..., None]
    x = canonical[..., 0] - c[0]
    y = canonical[..., 1] - c[1]
    out = np.stack([cos * x - sin * y, sin * x + cos * y], axis=-1) * s
    return out + c + head[..., None, 2:4]
