"""A face model fitted on the pack's train split: identities, a linear mouth/jaw basis, blinks, head motion
and expressions. `FaceModel.fit(pack_dir)` once (cached as .npz), then `compose(...)` per utterance."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import welch

from engine import face
from engine.config import DEFAULT_FPS, N_LANDMARKS

log = logging.getLogger("kfusion.synth")

# Features the deformation basis is regressed on (canonical px): inner-lip gap, mouth width (48-54),
# chin height (point 8 y) and lip thickness (outer-lip height minus inner gap).
FEATURES = ("gap", "width", "jaw", "thick")
DEFORMING = np.concatenate([face.JAW, face.MOUTH])
NEUTRAL_GAP_QUANTILE = 0.15  # frames with the smallest gap define a speaker's relaxed mouth
BLINK_EAR_RATIO = 0.6  # eye aspect ratio below this fraction of the clip median counts as a blink
BLINK_MIN_S = 0.06
BLINK_RATE_PER_MIN_RANGE = (6.0, 30.0)
BLINK_DURATION_S_RANGE = (0.1, 0.4)
HEAD_PSD_FREQS_HZ = np.linspace(0.0, DEFAULT_FPS / 2.0, 65)
UPPER_LIDS, LOWER_LIDS = np.array([37, 38, 43, 44]), np.array([41, 40, 47, 46])
EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")


def _features(canon: np.ndarray) -> np.ndarray:
    """(T, 68, 2) canonical shapes -> (T, 4) FEATURES."""
    gap = face.inner_lip_gap(canon)
    width = np.linalg.norm(canon[:, 54] - canon[:, 48], axis=-1)
    outer = canon[:, 57, 1] - canon[:, 51, 1]
    return np.stack([gap, width, canon[:, 8, 1], outer - gap], axis=-1)


def _eye_aspect(points: np.ndarray) -> np.ndarray:
    def one(e):
        v = np.linalg.norm(points[:, e[1]] - points[:, e[5]], axis=-1) + np.linalg.norm(points[:, e[2]] - points[:, e[4]], axis=-1)
        return v / (2.0 * np.linalg.norm(points[:, e[0]] - points[:, e[3]], axis=-1))
    return 0.5 * (one(face.LEFT_EYE) + one(face.RIGHT_EYE))


def _fill_nan(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN rows of (T, D)."""
    t = np.arange(len(x))
    ok = ~np.isnan(x).any(axis=1)
    return np.stack([np.interp(t, t[ok], x[ok, d]) for d in range(x.shape[1])], axis=1)


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths (frames) of the runs of True in a boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def _relative_head(poses: np.ndarray) -> np.ndarray:
    """Pose track (T, 4) canonical->frame -> head motion about the canonical centre relative to the mean pose,
    [log_scale, angle, dx, dy] in canonical px, as engine.face.apply_head_motion takes it."""
    mean = face.invert_similarity(poses.mean(0))
    c = np.asarray(face.CANONICAL_CENTRE_PX)
    moved = np.stack([face.apply_similarity(face.apply_similarity(c, p), mean) for p in poses])
    return np.column_stack([poses[:, 0] + mean[0], poses[:, 1] + mean[1], moved - c])


def _close_inner_lips(shape: np.ndarray) -> np.ndarray:
    """Move the inner-lip pairs (61-67, 62-66, 63-65) to their shared midpoint: lips in contact."""
    out = shape.copy()
    for u, lo in zip(face.INNER_LIP_UPPER, face.INNER_LIP_LOWER):
        mid = 0.5 * (out[u] + out[lo])
        out[u], out[lo] = mid, mid
    return out


def read_train_clips(pack_dir: Path) -> list[tuple[str, np.ndarray, float]]:
    """(id, landmarks (T, 68, 2) source px with NaN rows, fps) for the pack's train split."""
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    clips = [c for c in manifest["clips"] if c["split"] == "train"]
    if not clips:
        raise ValueError(f"{pack_dir}/manifest.json has no clips with split == 'train'")
    return [(c["id"], np.load(pack_dir / c["landmarks"]).astype(np.float64), float(c["fps"])) for c in clips]


@dataclass
class FaceModel:
    identities: np.ndarray  # (N, 68, 2) relaxed closed-mouth canonical shapes
    identity_ids: list  # pack clip id of each identity
    basis: np.ndarray  # (4, 68, 2) canonical px per unit of each FEATURE
    feature_scale: np.ndarray  # (4,) gap p95, jaw p95, width std, thickness std (px)
    blink_rate_per_min: float
    blink_duration_s: float
    head_psd: np.ndarray  # (4, F) normalised spectrum shape of [log_scale, angle, dx, dy] on HEAD_PSD_FREQS_HZ
    head_std: np.ndarray  # (4,) median per-clip standard deviation of the head pose

    @classmethod
    def fit(cls, pack_dir: Path) -> FaceModel:
        ids, identities, feats, disps, psds, stds = [], [], [], [], [], []
        blinks, blink_frames, minutes = 0, [], 0.0
        for cid, lm, fps in read_train_clips(pack_dir):
            valid = ~np.isnan(lm).any(axis=(1, 2))
            if valid.sum() < 2 * fps:
                continue
            ref = face.mean_shape(lm[valid][:: max(1, int(valid.sum() // 60))], iterations=5)
            canon, poses = face.to_canonical(lm, ref)
            c = canon[valid]
            f = _features(c)
            quiet = f[:, 0] <= np.quantile(f[:, 0], NEUTRAL_GAP_QUANTILE)
            ids.append(cid)
            identities.append(_close_inner_lips(c[quiet].mean(0)))
            feats.append(f - f.mean(0))
            disps.append((c - c.mean(0))[:, DEFORMING].reshape(len(c), -1))
            # head motion in canonical px / rad / log-scale about the clip's mean pose
            head = _relative_head(_fill_nan(poses))
            stds.append(head.std(0))
            fr, pxx = welch(head, fs=fps, nperseg=min(64, len(head)), axis=0)
            psds.append(np.stack([np.interp(HEAD_PSD_FREQS_HZ, fr, pxx[:, d]) for d in range(4)]) * len(head))
            # blinks: runs of frames whose eye aspect ratio drops well below the clip's median
            ear = _eye_aspect(c)
            runs = _runs(ear < BLINK_EAR_RATIO * np.median(ear))
            runs = runs[(runs >= BLINK_MIN_S * fps) & (runs <= BLINK_DURATION_S_RANGE[1] * 2 * fps)]
            blink_frames += list(runs / fps)
            blinks += len(runs)
            minutes += len(c) / fps / 60.0
        x = np.concatenate(feats)
        y = np.concatenate(disps)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)  # (4, len(DEFORMING) * 2)
        basis = np.zeros((len(FEATURES), N_LANDMARKS, 2))
        basis[:, DEFORMING] = coef.reshape(len(FEATURES), len(DEFORMING), 2)
        # a typical speaker's opening range: median over clips of the 5-95 % spread
        def spread(k):
            return float(np.median([np.quantile(f[:, k], 0.95) - np.quantile(f[:, k], 0.05) for f in feats]))
        scale = np.array([spread(0), x[:, 1].std(), spread(2), x[:, 3].std()])
        rate = float(np.clip(blinks / max(minutes, 1e-6), *BLINK_RATE_PER_MIN_RANGE))
        dur = float(np.clip(np.median(blink_frames) if blink_frames else 0.2, *BLINK_DURATION_S_RANGE))
        psd = np.mean(psds, axis=0)
        psd /= psd.sum(axis=1, keepdims=True)
        model = cls(np.stack(identities), ids, basis, scale, rate, dur, psd, np.median(stds, axis=0))
        log.info("face model: %d identities, feature scale %s px, blinks %.1f/min of %.2f s (raw %d in %.1f min), "
                 "head std %s", len(ids), np.round(scale, 2), rate, dur, blinks, minutes, np.round(model.head_std, 4))
        return model

    def save(self, path: Path) -> None:
        np.savez(path, identities=self.identities, identity_ids=np.array(self.identity_ids), basis=self.basis,
                 feature_scale=self.feature_scale, blink=np.array([self.blink_rate_per_min, self.blink_duration_s]),
                 head_psd=self.head_psd, head_std=self.head_std)

    @classmethod
    def load(cls, path: Path) -> FaceModel:
        z = np.load(path)
        return cls(z["identities"], [str(s) for s in z["identity_ids"]], z["basis"], z["feature_scale"],
                   float(z["blink"][0]), float(z["blink"][1]), z["head_psd"], z["head_std"])

    @classmethod
    def load_or_fit(cls, pack_dir: Path, cache: Path) -> FaceModel:
        if cache.is_file():
            return cls.load(cache)
        model = cls.fit(pack_dir)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        model.save(tmp)
        tmp.replace(cache)
        return model

    # --- per-utterance tracks ----------------------------------------------------------------------
    def blink_track(self, rng: np.random.Generator, n: int, fps: int = DEFAULT_FPS) -> np.ndarray:
        """(n,) eyelid closure in [0, 1]: Poisson blinks, fast close (40 %) and slower reopening."""
        out = np.zeros(n)
        t = rng.exponential(60.0 / self.blink_rate_per_min) * rng.random()
        duration = n / fps
        while t < duration:
            d = self.blink_duration_s * rng.uniform(0.7, 1.4)
            tt = np.arange(n) / fps - t
            close = np.clip(tt / (0.4 * d), 0, 1)
            reopen = np.clip(1 - (tt - 0.4 * d) / (0.6 * d), 0, 1)
            out = np.maximum(out, np.where(tt < 0.4 * d, close, reopen) * (tt >= 0))
            t += max(d + 0.5, rng.exponential(60.0 / self.blink_rate_per_min))
        return out

    def head_track(self, rng: np.random.Generator, n: int, amount: float = 1.0, fps: int = DEFAULT_FPS) -> np.ndarray:
        """(n, 4) [log_scale, angle, dx, dy] coloured noise with the pack's pose spectrum and spread."""
        m = max(n, 2 * len(HEAD_PSD_FREQS_HZ))
        spec = np.fft.rfft(rng.standard_normal((m, 4)), axis=0)
        freqs = np.fft.rfftfreq(m, 1.0 / fps)
        gain = np.sqrt(np.stack([np.interp(freqs, HEAD_PSD_FREQS_HZ, self.head_psd[d]) for d in range(4)], axis=1))
        x = np.fft.irfft(spec * gain, n=m, axis=0)[:n]
        x -= x.mean(0)
        x /= np.maximum(x.std(0), 1e-9)
        return x * self.head_std * amount

    def compose(self, identity: int, params: np.ndarray, blink: np.ndarray, expression: np.ndarray,
                head: np.ndarray) -> np.ndarray:
        """Identity + basis @ params (T, 4) + expression (68, 2), blinks, then head motion -> (T, 68, 2)."""
        neutral = self.identities[identity]
        shapes = neutral + np.einsum("tk,kpd->tpd", params, self.basis) + expression
        upper, lower = shapes[:, UPPER_LIDS], shapes[:, LOWER_LIDS]
        shapes[:, UPPER_LIDS] = upper + 0.9 * blink[:, None, None] * (lower - upper)
        return face.apply_head_motion(shapes, head)


# Expression offsets in canonical px at full intensity (interocular 100 px), and the mouth-parameter
# bias each expression adds (gap, width, jaw, thick in feature-scale units).
_EXPRESSION_POINTS = {
    "happy": {48: (-3.0, -3.5), 54: (3.0, -3.5), 60: (-2.0, -2.5), 64: (2.0, -2.5), 49: (-1.0, -1.5),
              53: (1.0, -1.5), 59: (-1.0, -1.0), 55: (1.0, -1.0), 40: (0, -1.0), 41: (0, -1.0), 46: (0, -1.0),
              47: (0, -1.0)},
    "sad": {48: (0.5, 3.5), 54: (-0.5, 3.5), 60: (0.3, 2.0), 64: (-0.3, 2.0), 20: (0, -3.0), 21: (0.5, -5.0),
            22: (-0.5, -5.0), 23: (0, -3.0), 17: (0, 1.5), 26: (0, 1.5), 37: (0, 1.0), 38: (0, 1.0),
            43: (0, 1.0), 44: (0, 1.0)},
    "angry": {17: (0, 2.0), 18: (0.5, 3.0), 19: (1.0, 4.0), 20: (1.5, 5.0), 21: (2.5, 6.0), 22: (-2.5, 6.0),
              23: (-1.5, 5.0), 24: (-1.0, 4.0), 25: (-0.5, 3.0), 26: (0, 2.0), 40: (0, -1.0), 41: (0, -1.0),
              46: (0, -1.0), 47: (0, -1.0), 48: (1.0, 0.5), 54: (-1.0, 0.5)},
    "surprised": {**{p: (0.0, -7.0) for p in range(17, 27)}, 21: (0, -8.5), 22: (0, -8.5),
                  37: (0, -2.0), 38: (0, -2.0), 43: (0, -2.0), 44: (0, -2.0)},
}
EXPRESSION_PARAM_BIAS = {"neutral": (0, 0, 0, 0), "happy": (0, 0.6, 0, 0), "sad": (0, -0.2, 0, 0),
                         "angry": (0, -0.2, 0, -0.5), "surprised": (0.12, -0.3, 0.15, 0.3)}


def expression_offsets(emotion: str, intensity: float) -> np.ndarray:
    """(68, 2) canonical px offsets of an expression at `intensity` (0 = none, 1 = full)."""
    if emotion not in EMOTIONS:
        raise ValueError(f"emotion must be one of {EMOTIONS}, got {emotion!r}")
    out = np.zeros((N_LANDMARKS, 2))
    for point, (dx, dy) in _EXPRESSION_POINTS.get(emotion, {}).items():
        out[point] = (dx * intensity, dy * intensity)
    return out
