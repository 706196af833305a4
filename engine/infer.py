"""Landmark tracks for audio files through the same streaming core as the server: DIR/<stem>.npz.

Usage: kfusion infer speech.wav [more.mp3 ...] --out DIR [--fps 30] [--identity face.npy] [--emotion happy]
Each npz holds landmarks float32 (T, 68, 2) iBUG-68 in the canonical 256 px frame, frame i = audio time
i / fps, T = engine.timing.n_frames(16 kHz samples, fps), and fps; the audio end is padded with zeros
to cover the lookahead of the last frames.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from engine.config import MAX_INPUT_RATE_HZ, MIN_INPUT_RATE_HZ, N_LANDMARKS, SAMPLE_RATE_HZ, EngineConfig
from engine.session import add_lip_seal_argument

log = logging.getLogger("kfusion.infer")


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Any audio file -> ((n, channels) float32, rate). soundfile first, librosa (ffmpeg) for the rest."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.LibsndfileError:
        import librosa

        try:
            with warnings.catch_warnings():  # librosa warns before falling back to audioread/ffmpeg
                warnings.simplefilter("ignore")
                y, sr = librosa.load(str(path), sr=None, mono=False)
        except Exception as exc:  # audioread/ffmpeg raise many types for undecodable files
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ValueError(f"{path}: cannot decode audio: expected a sound file that libsndfile (wav, flac, ogg, "
                             f"mp3) or ffmpeg can read ({why})") from exc
        audio = np.atleast_2d(y).T.astype(np.float32)
    if audio.shape[0] == 0:
        raise ValueError(f"{path}: no audio samples")
    if not MIN_INPUT_RATE_HZ <= sr <= MAX_INPUT_RATE_HZ:  # outside what a stream takes: resample first
        import soxr

        audio = soxr.resample(audio, sr, SAMPLE_RATE_HZ).astype(np.float32)
        sr = SAMPLE_RATE_HZ
    return np.ascontiguousarray(audio), int(sr)


def infer_track(session, config: EngineConfig, audio: np.ndarray, sample_rate_hz: int,
                identity: np.ndarray | None = None, emotion: np.ndarray | None = None) -> dict:
    """(n, channels) float32 audio -> {"landmarks": (T, 68, 2), "controls": (T, 9) or None}.

    The whole clip goes through one Stream (push, finish) and one model call over all T frames.
    """
    from engine.stream import Stream

    audio = np.asarray(audio, np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    stream = Stream(config, session.meta, sample_rate_hz=sample_rate_hz, channels=audio.shape[1],
                    sample_format="f32", identity=identity, emotion=emotion)
    frames = stream.process(session, audio, final=True)
    if len(frames) != stream.total_frames:
        raise ValueError(f"internal: {len(frames)} frames for T={stream.total_frames}")
    lm = np.stack([f.landmarks for f in frames]) if frames else np.zeros((0, N_LANDMARKS, 2), np.float32)
    ctl = np.stack([f.controls for f in frames]) if frames and config.controls else None
    return {"landmarks": lm.astype(np.float32), "controls": ctl}


def add_arguments(p) -> None:
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, mp4, ...; any sample rate)")
    p.add_argument("--out", required=True, help="output folder for <stem>.npz")
    p.add_argument("--fps", type=int, default=30, choices=(25, 30, 60))
    p.add_argument("--model", dest="model_path", help="ONNX model (default: the shipped one)")
    p.add_argument("--providers", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--identity", help=".npy (68, 2) neutral face in the canonical 256 px frame")
    p.add_argument("--emotion", help="emotion name (one of the model's emotions)")
    p.add_argument("--smoothing", action="store_true", help="One Euro filter on the landmarks")
    p.add_argument("--controls", action="store_true", help="also write ARKit-named controls (T, 9)")
    add_lip_seal_argument(p)


def run(args) -> int:
    from tqdm import tqdm

    from engine.controls import CONTROL_NAMES
    from engine.session import ModelSession

    config = EngineConfig(model_path=args.model_path, providers=args.providers, fps=args.fps,
                          smoothing=args.smoothing, controls=args.controls, lip_seal_pct=args.lip_seal_pct)
    config.log()
    session = ModelSession(config.model_path, config.providers, config.lip_seal_pct)
    identity = None
    if args.identity:
        identity = np.load(args.identity).astype(np.float32)
        if identity.shape != (N_LANDMARKS, 2):
            raise ValueError(f"--identity must hold a ({N_LANDMARKS}, 2) array, got {identity.shape}")
    emotion = None
    if args.emotion:
        if args.emotion not in session.meta.emotions:
            raise ValueError(f"--emotion must be one of {session.meta.emotions}, got {args.emotion!r}")
        emotion = np.zeros(session.meta.n_emotions, np.float32)
        emotion[session.meta.emotions.index(args.emotion)] = 1.0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stems = [Path(a).stem for a in args.audio]
    if len(set(stems)) != len(stems):
        raise ValueError(f"input files must have distinct stems (outputs are <stem>.npz), got {stems}")
    for path in tqdm(args.audio, desc="infer", unit="file"):
        audio, sr = load_audio(path)
        track = infer_track(session, config, audio, sr, identity, emotion)
        extra = {}
        if track["controls"] is not None:
            extra = {"controls": track["controls"], "control_names": np.array(CONTROL_NAMES)}
        dest = out / f"{Path(path).stem}.npz"
        np.savez(dest, landmarks=track["landmarks"], fps=np.int64(config.fps),
                 model_version=np.array(session.meta.model_version), **extra)
        log.info("%s: %d frames at %d fps -> %s", path, len(track["landmarks"]), config.fps, dest)
    return 0
