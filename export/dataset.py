"""Training data for KFusion: pack/synthetic segments -> cached feature hops -> model windows -> batches.

Features are cached per segment under CACHE_DIR/<feature_version>/; windows come from
engine.timing.gather_windows, the same definition the streaming engine uses.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.cache import cache_dir
from engine.config import HOP_SAMPLES, N_LANDMARKS, SAMPLE_RATE_HZ
from engine.timing import gather_windows
from export.model import EMOTIONS, ModelDims

log = logging.getLogger("kfusion.dataset")
CACHE_DIR = cache_dir("train", "features")
PAD_S = 0.5  # zeros appended before feature extraction: covers any lookahead up to 500 ms


@dataclass
class Item:
    """One segment ready for training: windows (T, W, F), targets and labels (numpy, float32)."""

    key: str
    source: str
    windows: np.ndarray  # (T, W, F) model input, the streaming definition
    canonical: np.ndarray  # (T, 68, 2) canonical 256 px target
    head: np.ndarray  # (T, 4) head motion target
    identity: np.ndarray  # (68, 2)
    emotion: int  # index into EMOTIONS, -1 when unknown

    @property
    def frames(self) -> int:
        return len(self.canonical)


def segment_key(seg) -> str:
    h = hashlib.sha1(np.ascontiguousarray(seg.audio[: SAMPLE_RATE_HZ]).tobytes()).hexdigest()[:8]
    name = f"{seg.source}_{seg.clip_id}_{seg.start_s:.3f}_{len(seg.audio)}_{h}"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def segment_hops(seg, cache_dir: Path = CACHE_DIR) -> np.ndarray:
    """(K, F) feature hops of the segment's audio plus PAD_S of zeros, cached on disk."""
    from engine import features

    folder = cache_dir / features.FEATURE_VERSION
    path = folder / f"{segment_key(seg)}.npy"
    if path.is_file():
        hops = np.load(path)
        if hops.shape[1] == features.N_FEATURES:
            return hops
    pad = np.zeros(int(PAD_S * SAMPLE_RATE_HZ) + HOP_SAMPLES, np.float32)
    hops = features.extract(np.concatenate([seg.audio.astype(np.float32), pad])).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, hops)
    tmp.replace(path)
    return hops


def emotion_index(name: str | None) -> int:
    return EMOTIONS.index(name) if name in EMOTIONS else -1


def make_items(segments, dims: ModelDims, cache_dir: Path = CACHE_DIR, desc: str = "features") -> list[Item]:
    """Feature windows and targets for each segment (features cached per segment)."""
    from engine import features

    if features.N_FEATURES != dims.n_features or features.FEATURE_VERSION != dims.feature_version:
        raise ValueError(f"ModelDims want features {dims.feature_version!r} x {dims.n_features}, engine has "
                         f"{features.FEATURE_VERSION!r} x {features.N_FEATURES}")
    items = []
    for seg in tqdm(segments, desc=desc, unit="seg"):
        if seg.fps != dims.fps:
            raise ValueError(f"segment {seg.clip_id} is at {seg.fps} fps, the model at {dims.fps}")
        t = len(seg.canonical)
        hops = segment_hops(seg, cache_dir)
        win = gather_windows(hops, features.SILENCE, t, dims.fps, dims.lookahead_ms, dims.window_hops)
        items.append(Item(segment_key(seg), seg.source, win.astype(np.float32), seg.canonical.astype(np.float32),
                          seg.head.astype(np.float32), seg.identity.astype(np.float32),
                          emotion_index(seg.emotion)))
    return items


@dataclass(frozen=True)
class Normaliser:
    """Statistics fitted on training items; copied into the model's buffers."""

    feat_mean: np.ndarray  # (F,)
    feat_std: np.ndarray  # (F,)
    disp_mean: np.ndarray  # (68, 2) mean of canonical - identity
    disp_std: np.ndarray  # (68, 2)
    head_mean: np.ndarray  # (4,)
    head_std: np.ndarray  # (4,)


def fit_normaliser(items: list[Item], min_std: float = 1e-3) -> Normaliser:
    hops = np.concatenate([it.windows[:, -1] for it in items])  # newest hop of every frame
    disp = np.concatenate([it.canonical - it.identity[None] for it in items])
    head = np.concatenate([it.head for it in items])
    return Normaliser(
        hops.mean(0), np.maximum(hops.std(0), min_std),
        disp.mean(0), np.maximum(disp.std(0), min_std),
        head.mean(0), np.maximum(head.std(0), min_std),
    )


class BatchSampler:
    """Seeded random crops from two pools (pack, synthetic) mixed at a chosen fraction.

    Each batch row is a crop of up to `crop_frames` frames; shorter segments are padded and masked.
    With probability `start_prob` a crop starts at frame 0, where the stream starts from silence.
    """

    def __init__(self, pools: dict[str, list[Item]], crop_frames: int, batch_size: int, seed: int,
                 emotion_dropout: float, start_prob: float = 0.25) -> None:
        self.pools = {k: v for k, v in pools.items() if v}
        if not self.pools:
            raise ValueError("no training items in any pool")
        self.crop_frames, self.batch_size = crop_frames, batch_size
        self.emotion_dropout, self.start_prob = emotion_dropout, start_prob
        self.rng = np.random.default_rng(seed)
        # within a pool, segments are drawn in proportion to their length
        self.weights = {k: np.array([it.frames for it in v], np.float64) for k, v in self.pools.items()}
        for k in self.weights:
            self.weights[k] /= self.weights[k].sum()

    def batch(self, fractions: dict[str, float]) -> dict[str, np.ndarray]:
        names = [k for k in self.pools if fractions.get(k, 0) > 0]
        if not names:
            raise ValueError(f"mix fractions {fractions} select none of the pools {list(self.pools)}")
        p = np.array([fractions[k] for k in names], np.float64)
        choice = self.rng.choice(len(names), size=self.batch_size, p=p / p.sum())
        rows = []
        for c in choice:
            pool = names[c]
            it = self.pools[pool][self.rng.choice(len(self.pools[pool]), p=self.weights[pool])]
            n = min(self.crop_frames, it.frames)
            a = 0 if self.rng.random() < self.start_prob else int(self.rng.integers(0, it.frames - n + 1))
            rows.append((it, a, n))
        out = self.collate(rows)
        out["synthetic"] = np.array([names[c] == "synth" for c in choice], np.float32)  # (B,) 1 = synthetic row
        return out

    def collate(self, rows) -> dict[str, np.ndarray]:
        b, t = len(rows), max(n for _, _, n in rows)
        w, f = rows[0][0].windows.shape[1:]
        out = {
            "feats": np.zeros((b, t, w, f), np.float32),
            "canonical": np.zeros((b, t, N_LANDMARKS, 2), np.float32),
            "head": np.zeros((b, t, 4), np.float32),
            "mask": np.zeros((b, t), np.float32),
            "identity": np.zeros((b, N_LANDMARKS, 2), np.float32),
            "emotion": np.zeros((b, len(EMOTIONS)), np.float32),
        }
        for i, (it, a, n) in enumerate(rows):
            out["feats"][i, :n] = it.windows[a:a + n]
            out["canonical"][i, :n] = it.canonical[a:a + n]
            out["head"][i, :n] = it.head[a:a + n]
            out["mask"][i, :n] = 1.0
            out["identity"][i] = it.identity
            if it.emotion >= 0 and self.rng.random() >= self.emotion_dropout:
                out["emotion"][i, it.emotion] = 1.0
        return out


def full_batch(item: Item, use_emotion: bool = False) -> dict[str, np.ndarray]:
    """One whole segment as a batch of one (for validation: the stream starts from zero state)."""
    emo = np.zeros((1, len(EMOTIONS)), np.float32)
    if use_emotion and item.emotion >= 0:
        emo[0, item.emotion] = 1.0
    return {
        "feats": item.windows[None], "canonical": item.canonical[None], "head": item.head[None],
        "mask": np.ones((1, item.frames), np.float32), "identity": item.identity[None], "emotion": emo,
    }
