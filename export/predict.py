"""Checkpoint I/O and whole-utterance prediction for both model variants (used by eval and tests).

    model, dims, meta = load_checkpoint("/work/cache/train/stream/best.pt")
    track = predict_segment(model, audio16k, identity)  # (T, 68, 2) canonical 256 px, head applied
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from engine.config import HOP_SAMPLES, N_LANDMARKS
from engine.timing import gather_windows, n_frames, samples_needed
from export.model import EMOTIONS, KFusion, ModelDims, config_hash

CHECKPOINT_FORMAT = "kfusion-ckpt-1"


def save_checkpoint(path: str | os.PathLike, model: KFusion, config: dict, mean_face: np.ndarray,
                    model_version: str, **extra) -> None:
    """Write weights + ModelDims + training config + normalisers (buffers) + mean face, atomically."""
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "dims": model.dims.to_dict(),
        "config": config,
        "config_hash": config_hash(config),
        "model_version": model_version,
        "mean_face": np.asarray(mean_face, np.float32).tolist(),
        "emotions": list(EMOTIONS),
        "state_dict": model.state_dict(),
        **extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> tuple[KFusion, ModelDims, dict]:
    """-> (model in eval mode, its ModelDims, the checkpoint dict without the weights).

    An exported streaming model (.onnx) works too: its weights are mapped back (export/onnx_import.py), and
    the dict holds its metadata (model_version, config_hash, mean_face, emotions, lip_seal_pct)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix.lower() == ".onnx":
        from export.onnx_import import state_dict_from_onnx

        dims, state_dict, meta = state_dict_from_onnx(path)
        model = KFusion(dims)
        model.load_state_dict(state_dict)
        return model.eval(), dims, meta
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a kfusion checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    dims = ModelDims.from_dict(ckpt["dims"])
    model = KFusion(dims)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer")}
    return model, dims, meta


def audio_windows(audio16k: np.ndarray, n: int, dims: ModelDims) -> np.ndarray:
    """(N,) 16 kHz audio -> model input windows (n, W, F) for frames 0..n-1 (the streaming definition)."""
    from engine import features

    if features.N_FEATURES != dims.n_features or features.FEATURE_VERSION != dims.feature_version:
        raise ValueError(
            f"model wants features {dims.feature_version!r} x {dims.n_features}, engine has "
            f"{features.FEATURE_VERSION!r} x {features.N_FEATURES}"
        )
    audio = np.asarray(audio16k, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape (N,), got {audio.shape}")
    need = samples_needed(n - 1, dims.fps, dims.lookahead_ms) if n else 0
    need = -(-max(need, len(audio)) // HOP_SAMPLES) * HOP_SAMPLES
    if need > len(audio):
        audio = np.concatenate([audio, np.zeros(need - len(audio), np.float32)])
    hops = features.extract(audio)  # (K, F)
    return gather_windows(hops, features.SILENCE, n, dims.fps, dims.lookahead_ms, dims.window_hops)


def emotion_vector(emotion: str | np.ndarray | None) -> np.ndarray:
    """None -> zeros (infer from audio); a name -> one-hot over EMOTIONS; a vector is passed through."""
    if emotion is None:
        return np.zeros(len(EMOTIONS), np.float32)
    if isinstance(emotion, str):
        if emotion not in EMOTIONS:
            raise ValueError(f"emotion must be one of {EMOTIONS}, got {emotion!r}")
        v = np.zeros(len(EMOTIONS), np.float32)
        v[EMOTIONS.index(emotion)] = 1.0
        return v
    v = np.asarray(emotion, np.float32)
    if v.shape != (len(EMOTIONS),):
        raise ValueError(f"emotion vector must have shape ({len(EMOTIONS)},), got {v.shape}")
    return v


@torch.no_grad()
def predict_segment(model: KFusion, audio16k: np.ndarray, identity: np.ndarray,
                    emotion: str | np.ndarray | None = None, n: int | None = None) -> np.ndarray:
    """Landmarks (T, 68, 2) in the canonical 256 px frame, head motion applied, for one utterance.

    T defaults to the frames inside the audio (engine.timing.n_frames). The streaming model starts
    from the zero state, exactly as a new stream does.
    """
    identity = np.asarray(identity, np.float32)
    if identity.shape != (N_LANDMARKS, 2):
        raise ValueError(f"identity must have shape ({N_LANDMARKS}, 2), got {identity.shape}")
    dims = model.dims
    if n is None:
        n = n_frames(len(audio16k), dims.fps)
    windows = audio_windows(audio16k, n, dims)
    feats = torch.from_numpy(windows).float().unsqueeze(0)
    emo = torch.from_numpy(emotion_vector(emotion)).unsqueeze(0)
    out, _ = model(feats, torch.from_numpy(identity).unsqueeze(0), emo, model.initial_state(1))
    return out[0].numpy()
