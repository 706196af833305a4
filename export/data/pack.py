"""Load the talking-face pack, or any folder in its format, as fixed-fps canonical training segments.

Usage: `segments = load_segments(split="train", fps=30)`; each segment holds 16 kHz audio, canonical
shapes, a head-motion track and its identity (mean) shape, with frame 0 at audio sample 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.interpolate import Akima1DInterpolator
from tqdm import tqdm

from engine.config import N_LANDMARKS, SAMPLE_RATE_HZ
from engine.face import CANONICAL_CENTRE_PX, interocular, mean_shape, similarity_matrix, to_canonical
from engine.timing import n_frames
from export.data.mead import mead_labels

REPO = Path(__file__).resolve().parents[2]
PACK_DIR = Path(os.environ.get("KFUSION_PACK_DIR") or REPO.parent / "shared" / "data" / "talking-faces")
CACHE_DIR = Path(os.environ.get("KFUSION_CACHE_DIR") or REPO.parent / "cache" / "kfusion-data")
SPLITS = ("train", "val", "test")
MAX_GAP_S = 0.2  # NaN runs up to this long are interpolated; longer ones cut the clip
MIN_SEGMENT_S = 1.0  # pieces shorter than this are dropped
# A jump between consecutive tracked frames larger than this is a shot cut or a switch to another
# face (the detector re-runs every 10th frame), not head motion: the clip is cut there.
MAX_JUMP_INTEROCULARS = 0.5  # face centre moving more than half an eye distance in one frame
MAX_JUMP_LOG_SCALE = float(np.log(1.25))  # face size changing by more than 25 % in one frame
REFERENCE_FRAME_STEP = 2  # every 2nd train frame goes into the reference (mean) face
REFERENCE_VERSION = 1  # bump when the reference computation changes (invalidates the disk cache)
_RECORD_KEYS = ("id", "split", "audio", "landmarks", "fps")

log = logging.getLogger("kfusion.data")
_reference_memo: dict[str, np.ndarray] = {}


@dataclass(frozen=True)
class Segment:
    """One contiguous, face-tracked stretch of a clip at the model fps; frame i is at audio sample i*SR/fps."""

    clip_id: str
    split: str
    source: str  # source_dataset of the clip (e.g. "HDTF", "MEAD", "synth"), or the folder name
    emotion: str | None
    fps: int
    audio: np.ndarray  # (N,) float32 16 kHz; sample 0 is the time of frame 0
    canonical: np.ndarray  # (T, 68, 2) float32 canonical 256 px frame, T == n_frames(N, fps)
    head: np.ndarray  # (T, 4) float32 [log_scale, angle_rad, dx_px, dy_px] about the canonical centre
    identity: np.ndarray  # (68, 2) float32 mean canonical shape of the segment
    start_s: float = 0.0  # time of frame 0 in the clip's audio (s)
    median_pose: np.ndarray | None = None  # (4,) similarity taking head-moved canonical to source pixels


def load_manifest(root: str | Path = PACK_DIR) -> list[dict]:
    """The records of `root`/manifest.json, with `audio`, `video` and `landmarks` made absolute paths."""
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in {root} (expected the talking-face pack or a "
                                "`kfusion prepare` / `kfusion synth` output folder)")
    data = json.loads(path.read_text())
    clips = data.get("clips") if isinstance(data, dict) else data
    if not isinstance(clips, list):
        raise ValueError(f"{path}: expected a list of records or {{'clips': [...]}}, got {type(clips).__name__}")  # noqa: TRY004
    records = []
    for rec in clips:
        missing = [k for k in _RECORD_KEYS if k not in rec]
        if missing:
            raise ValueError(f"{path}: record {rec.get('id', '?')!r} lacks {missing} (needs {list(_RECORD_KEYS)})")
        r = dict(rec)
        for key in ("audio", "video", "landmarks"):
            if r.get(key):
                r[key] = str(root / r[key])
        records.append(r)
    return records


def reference_shape(root: str | Path = PACK_DIR) -> np.ndarray:
    """(68, 2) canonical generalised-Procrustes mean face of the train split, cached under CACHE_DIR."""
    records = [r for r in load_manifest(root) if r["split"] == "train"]
    if not records:
        raise ValueError(f"{root} has no train-split clips to build the reference shape from")
    stamp = [(r["id"], os.path.getsize(r["landmarks"]), int(os.path.getmtime(r["landmarks"]))) for r in records]
    key = hashlib.sha1(json.dumps([REFERENCE_VERSION, REFERENCE_FRAME_STEP, stamp]).encode()).hexdigest()[:16]
    if key in _reference_memo:
        return _reference_memo[key].copy()
    cache = CACHE_DIR / f"reference_shape_{key}.npy"
    if cache.is_file():
        ref = np.load(cache)
    else:
        frames = np.concatenate([np.load(r["landmarks"])[::REFERENCE_FRAME_STEP] for r in records])
        ref = mean_shape(frames.astype(np.float64)).astype(np.float32)
        try:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, ref)
            os.replace(tmp, cache)
        except OSError as exc:  # a read-only cache only costs time
            log.warning("could not cache the reference shape at %s: %s", cache, exc)
    _reference_memo[key] = ref
    return ref.copy()


def canonical_root(root: str | Path) -> Path:
    """Whose train-split mean face is the canonical frame: the talking-face pack's when it is there (so
    every corpus shares one frame), else `root`'s own (a machine that has only its own corpus)."""
    if (Path(PACK_DIR) / "manifest.json").is_file():
        return Path(PACK_DIR)
    log.warning("no talking-face pack at %s: %s's own train-split mean face is the canonical frame "
                "(set KFUSION_PACK_DIR to use the pack's)", PACK_DIR, root)
    return Path(root)


def load_segments(root: str | Path = PACK_DIR, split: str | None = "train", fps: int = 30,
                  progress: bool = True) -> list[Segment]:
    """Every usable segment of the clips of `split` (None: all splits) in `root`, at `fps` frames/s.

    Landmarks are put in the pack's canonical frame (its train-split mean face; see canonical_root), resampled from the
    clip's own frame rate, short NaN gaps (<= MAX_GAP_S) filled, and clips cut at longer ones.
    """
    if not isinstance(fps, (int, np.integer)) or isinstance(fps, bool) or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    root = Path(root)
    records = load_manifest(root)
    if split is not None:
        present = sorted({r["split"] for r in records})
        records = [r for r in records if r["split"] == split]
        if not records:
            log.warning("%s has no clips in split %r (splits present: %s)", root, split, present)
    reference = reference_shape(canonical_root(root)).astype(np.float64)
    segments: list[Segment] = []
    for rec in tqdm(records, desc=f"segments {root.name}/{split or 'all'}", unit="clip", disable=not progress):
        segments.extend(clip_segments(rec, reference, int(fps), default_source=root.name))
    return segments


def load_audio(path: str | Path) -> np.ndarray:
    """(N,) float32 mono 16 kHz from a sound file (downmixed, resampled with soxr when needed)."""
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE_HZ:
        y = soxr.resample(y, sr, SAMPLE_RATE_HZ)
    return np.ascontiguousarray(y, dtype=np.float32)


def valid_runs(valid: np.ndarray, max_gap_frames: int) -> list[tuple[int, int]]:
    """(first, last) indices of the runs of valid frames, bridging invalid gaps of <= max_gap_frames."""
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) - 1 > max_gap_frames)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def split_at_jumps(runs: list[tuple[int, int]], landmarks: np.ndarray) -> list[tuple[int, int]]:
    """Cut each (first, last) run of landmarks (T, 68, 2) where the face jumps between tracked frames."""
    centre = landmarks.mean(axis=1)
    io = interocular(landmarks)
    out = []
    for a, b in runs:
        knots = np.arange(a, b + 1)[~np.isnan(io[a:b + 1])]
        jump = np.linalg.norm(np.diff(centre[knots], axis=0), axis=1) / io[knots[:-1]]
        rescale = np.abs(np.diff(np.log(io[knots])))
        cuts = np.flatnonzero((jump > MAX_JUMP_INTEROCULARS) | (rescale > MAX_JUMP_LOG_SCALE))
        starts = np.concatenate([[0], cuts + 1])
        ends = np.concatenate([cuts, [len(knots) - 1]])
        out.extend((int(knots[i]), int(knots[j])) for i, j in zip(starts, ends))
    return out


def resample_track(t_src: np.ndarray, values: np.ndarray, t_new: np.ndarray) -> np.ndarray:
    """Interpolate values (K, ...) known at times t_src (K,) at t_new (modified Akima; linear under 4 knots)."""
    t_new = np.clip(t_new, t_src[0], t_src[-1])
    flat = values.reshape(len(values), -1)
    if len(t_src) < 4:
        out = np.stack([np.interp(t_new, t_src, col) for col in flat.T], axis=1)
    else:
        out = Akima1DInterpolator(t_src, flat, axis=0, method="makima")(t_new)
    return out.reshape((len(t_new),) + values.shape[1:])


def head_motion(poses: np.ndarray, median_pose: np.ndarray) -> np.ndarray:
    """Poses (T, 4) (canonical -> pixels, as to_canonical gives) -> head motion (T, 4) about the centre.

    With M = median_pose: apply_similarity(apply_head_motion(c, head[t]), M) == apply_similarity(c, poses[t]).
    """
    m, t_m = similarity_matrix(median_pose)
    m_inv = np.linalg.inv(m)
    scale = np.exp(poses[:, 0])
    cos, sin = np.cos(poses[:, 1]) * scale, np.sin(poses[:, 1]) * scale
    a_t = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (T, 2, 2)
    a_q = m_inv @ a_t  # M^-1 o P_t, linear part
    t_q = (poses[:, 2:4] - t_m) @ m_inv.T  # M^-1 o P_t, translation
    c = np.asarray(CANONICAL_CENTRE_PX)
    d = t_q + a_q @ c - c  # x' = A (x - c) + c + d
    return np.column_stack([poses[:, 0] - median_pose[0], poses[:, 1] - median_pose[1], d])


def clip_segments(rec: dict, reference: np.ndarray, fps: int, default_source: str = "unknown") -> list[Segment]:
    """Segments of one manifest record (absolute paths, as load_manifest gives) at `fps`.

    Sample 0 of the clip's wav is the time of video frame 0 and frame j is at j / fps_src (the pack's
    convention; `kfusion prepare` trims or pads a sound track that starts off the first frame).
    """
    lm = np.load(rec["landmarks"])
    if lm.ndim != 3 or lm.shape[1:] != (N_LANDMARKS, 2):
        raise ValueError(f"{rec['landmarks']}: expected (T, {N_LANDMARKS}, 2) landmarks, got {lm.shape}")
    fps_src = float(rec["fps"])
    if not fps_src > 0:
        raise ValueError(f"{rec['id']}: fps must be > 0, got {rec['fps']!r}")
    audio = load_audio(rec["audio"])
    canon, poses = to_canonical(lm.astype(np.float64), reference)
    valid = ~np.isnan(poses).any(axis=1)
    emotion = rec.get("emotion")
    if emotion is None:
        mead = mead_labels(rec.get("source_path") or rec["id"])
        emotion = mead.emotion if mead else None
    source = rec.get("source_dataset") or rec.get("source") or default_source
    min_frames = int(np.ceil(MIN_SEGMENT_S * fps))
    out = []
    runs = valid_runs(valid, int(np.floor(MAX_GAP_S * fps_src + 1e-9)))
    for a, b in split_at_jumps(runs, lm.astype(np.float64)):
        s0 = int(np.ceil(a * SAMPLE_RATE_HZ / fps_src - 1e-6))  # first audio sample at or after frame a
        t0, t_end = s0 / SAMPLE_RATE_HZ, b / fps_src
        if t_end < t0:
            continue
        t_frames = int(np.floor((t_end - t0) * fps + 1e-9)) + 1  # model frames inside the tracked span
        n = min(t_frames * SAMPLE_RATE_HZ // fps, len(audio) - s0)
        if n <= 0:
            continue
        t = n_frames(n, fps)
        if t < min_frames:
            continue
        knots = np.arange(a, b + 1)[valid[a:b + 1]]
        t_src = knots / fps_src
        t_new = t0 + np.arange(t) / fps
        c = resample_track(t_src, canon[knots], t_new)
        p_src = poses[knots].copy()
        p_src[:, 1] = np.unwrap(p_src[:, 1])
        p = resample_track(t_src, p_src, t_new)
        median = np.median(p, axis=0)
        out.append(Segment(
            clip_id=str(rec["id"]), split=str(rec["split"]), source=str(source), emotion=emotion, fps=fps,
            audio=audio[s0:s0 + n].copy(), canonical=c.astype(np.float32),
            head=head_motion(p, median).astype(np.float32), identity=c.mean(axis=0).astype(np.float32),
            start_s=t0, median_pose=median.astype(np.float64),
        ))
    return out
