"""`kfusion prepare`: turn talking-head videos (any folder, MEAD's tree too) into the pack's training format.

Usage: kfusion prepare VIDEO_OR_DIR... --out DIR [--jobs 2]   -> DIR/<id>.wav, DIR/<id>.lm68.npy, manifest.json
Needs dlib (`pip install dlib-bin`), its 68-point model (`apt-get install libdlib-data`), OpenCV and ffmpeg.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from engine.config import LANDMARK_LAYOUT, SAMPLE_RATE_HZ
from export.data.landmarks_dlib import (
    DEFAULT_PREDICTOR,
    DETECT_UPSAMPLE,
    INSTALL_DLIB,
    INSTALL_MODEL,
    REDETECT_EVERY_FRAMES,
    LandmarkTracker,
    VideoError,
    missing_requirements,
)
from export.data.mead import mead_labels, parse_mead_path

VIDEO_SUFFIXES = (".mp4", ".mpg", ".mpeg", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".flv")
SOUND_SUFFIXES = (".wav", ".m4a", ".flac", ".mp3", ".aac", ".ogg")  # sibling files used when a video is silent
DEFAULT_JOBS = 2
MANIFEST_UNITS = "pixels of the source video, x right, y down; NaN where no face was found"

log = logging.getLogger("kfusion.prepare")
_tracker: LandmarkTracker | None = None  # one per worker process


class ClipError(ValueError):
    """A clip that cannot be used; the message says why (no sound track, no face, ...)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (f"Requirements: {INSTALL_DLIB}; {INSTALL_MODEL}; ffmpeg (apt-get install ffmpeg). "
                     "Finished clips are skipped on a re-run; clips that cannot be used are listed at the end.")
    parser.add_argument("inputs", nargs="+", type=Path, help="video files or folders (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (the pack's format)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help=f"parallel clips (default {DEFAULT_JOBS})")
    parser.add_argument("--split", default="train", help="split written into every record (default train)")
    parser.add_argument("--predictor", type=Path, default=DEFAULT_PREDICTOR,
                        help=f"dlib 68-point model (default {DEFAULT_PREDICTOR}, from libdlib-data)")
    parser.add_argument("--redetect-every", type=int, default=REDETECT_EVERY_FRAMES,
                        help=f"re-run the face detector every N frames (default {REDETECT_EVERY_FRAMES})")
    parser.add_argument("--upsample", type=int, default=DETECT_UPSAMPLE,
                        help=f"detector upsampling, 1 finds smaller faces (default {DETECT_UPSAMPLE}, as the pack)")


def find_videos(inputs: list[Path]) -> list[Path]:
    """Video files named or found (recursively) under the inputs, sorted, without duplicates."""
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found.extend(p for p in sorted(item.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        elif item.is_file():
            found.append(item)
        else:
            raise FileNotFoundError(f"no such video or folder: {item}")
    return sorted({Path(os.path.abspath(p)) for p in found})  # not resolve(): keep MEAD's tree in linked paths


def clip_ids(videos: list[Path]) -> dict[Path, str]:
    """A unique file-name-safe id per video: MEAD's tree -> M030_angry_level3_016, else the stem (or path)."""
    ids: dict[Path, str] = {}
    for v in videos:
        mead = parse_mead_path(v)
        ids[v] = f"{mead.speaker}_{mead.emotion}_level{mead.level}_{mead.clip}" if mead else v.stem
    counts: dict[str, int] = {}
    for name in ids.values():
        counts[name] = counts.get(name, 0) + 1
    for v, name in ids.items():
        if counts[name] > 1:  # same stem in several folders: use the path
            ids[v] = "_".join(v.with_suffix("").parts[-3:])
    return {v: re.sub(r"[^A-Za-z0-9_.-]+", "_", name) for v, name in ids.items()}


def probe_streams(path: Path) -> dict[str, float]:
    """Start time (s) of the first video and audio stream, as ffprobe reports them (0 where unknown)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,start_time",
                          "-of", "json", str(path)], capture_output=True, text=True, check=False)
    starts: dict[str, float] = {}
    if out.returncode == 0:
        for s in json.loads(out.stdout or "{}").get("streams", []):
            kind, t = s.get("codec_type"), s.get("start_time")
            if kind in ("video", "audio") and kind not in starts:
                starts[kind] = float(t) if t not in (None, "N/A") else 0.0
    return starts


def decode_sound(video: Path, starts: dict[str, float]) -> tuple[np.ndarray, str]:
    """16 kHz mono int16 sound lined up with the video's frame 0; (samples, where it came from).

    `starts` are the video's stream start times: a sound track that starts before or after the first
    frame is trimmed or padded so that sample 0 is the time of frame 0.
    """
    mead = mead_labels(video)
    candidates = [video]
    if mead and mead.audio_path is not None:
        candidates.insert(0, mead.audio_path)  # MEAD keeps the sound in a separate tree
    candidates += [video.with_suffix(s) for s in SOUND_SUFFIXES if video.with_suffix(s).is_file()]
    for src in candidates:
        if not src.is_file():
            continue
        run = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(src), "-map", "0:a:0", "-ac", "1",
                              "-ar", str(SAMPLE_RATE_HZ), "-f", "s16le", "-"], capture_output=True, check=False)
        if run.returncode != 0 or not run.stdout:
            continue
        pcm = np.frombuffer(run.stdout, np.int16)
        if src == video:
            lag = round((starts.get("audio", 0.0) - starts.get("video", 0.0)) * SAMPLE_RATE_HZ)
            pcm = np.concatenate([np.zeros(lag, np.int16), pcm]) if lag > 0 else pcm[-lag:]
        return pcm, str(src)
    raise ClipError("no sound track (and no sound file beside it)")


def _init_worker(predictor: str, redetect_every: int, upsample: int) -> None:
    global _tracker
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = (predictor, redetect_every, upsample)
    if _tracker is None or _tracker.settings != settings:  # loading the 95 MB model takes seconds
        _tracker = LandmarkTracker(predictor, redetect_every, upsample)


def prepare_clip(video: Path, clip_id: str, out: Path, split: str) -> dict:
    """Write <id>.wav, <id>.lm68.npy and <id>.json (the record, written last) for one video."""
    import soundfile as sf

    starts = probe_streams(video)
    if "video" not in starts:
        raise ClipError("unreadable video (ffprobe finds no video stream)")
    pcm, sound_src = decode_sound(video, starts)
    try:
        lm, fps, width, height = _tracker.track(video)
    except VideoError as exc:
        raise ClipError(f"unreadable video: {exc}") from exc
    with_face = int((~np.isnan(lm).any(axis=(1, 2))).sum())
    if with_face == 0:
        raise ClipError(f"no face found in {len(lm)} frames")
    tmp_wav, tmp_lm = out / f".{clip_id}.tmp.wav", out / f".{clip_id}.tmp.npy"
    sf.write(tmp_wav, pcm, SAMPLE_RATE_HZ, subtype="PCM_16")
    np.save(tmp_lm, lm.astype(np.float32))
    os.replace(tmp_wav, out / f"{clip_id}.wav")
    os.replace(tmp_lm, out / f"{clip_id}.lm68.npy")
    rec = {"id": clip_id, "split": split, "audio": f"{clip_id}.wav", "video": str(video),
           "landmarks": f"{clip_id}.lm68.npy", "fps": round(fps, 3), "frames": len(lm),
           "frames_with_face": with_face, "duration_s": round(len(pcm) / SAMPLE_RATE_HZ, 6),
           "width": width, "height": height, "sound_source": sound_src}
    mead = mead_labels(video)
    if mead:
        rec.update(source_dataset="MEAD", speaker=mead.speaker, emotion=mead.emotion, level=mead.level)
    (out / f"{clip_id}.json").write_text(json.dumps(rec, indent=1))
    return rec


def _prepare_one(args: tuple[Path, str, Path, str]) -> tuple[str, dict | None, str | None]:
    video, clip_id, out, split = args
    try:
        return clip_id, prepare_clip(video, clip_id, out, split), None
    except (ClipError, OSError, ValueError, subprocess.SubprocessError) as exc:
        return clip_id, None, f"{video}: {exc}"


def _prepare_all(todo: list, jobs: int, init: tuple):
    """Yield (id, record or None, error or None) per clip as they finish, in `jobs` processes."""
    if not todo:
        return
    if jobs == 1 or len(todo) == 1:
        _init_worker(*init)
        yield from map(_prepare_one, todo)
        return
    with ProcessPoolExecutor(min(jobs, len(todo)), initializer=_init_worker, initargs=init) as pool:
        for fut in as_completed([pool.submit(_prepare_one, t) for t in todo]):
            yield fut.result()


def _done(out: Path, clip_id: str) -> bool:
    return all((out / f"{clip_id}{s}").is_file() for s in (".json", ".wav", ".lm68.npy"))


def write_manifest(out: Path) -> list[dict]:
    """Gather every finished clip's record into out/manifest.json (the pack's layout)."""
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))
               if p.name != "manifest.json" and not p.name.startswith(".")]
    records = [r for r in records if _done(out, r["id"])]
    manifest = {"layout": LANDMARK_LAYOUT, "units": MANIFEST_UNITS, "audio": "16 kHz mono PCM16 WAV",
                "clips": records}
    tmp = out / ".manifest.tmp.json"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / "manifest.json")
    return records


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    problems = missing_requirements(args.predictor)
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        problems.append("ffmpeg/ffprobe are not on PATH: apt-get install ffmpeg")
    if problems:
        print("kfusion prepare: cannot run:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    videos = find_videos(args.inputs)
    if not videos:
        raise ValueError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {[str(p) for p in args.inputs]}")
    args.out.mkdir(parents=True, exist_ok=True)
    ids = clip_ids(videos)
    todo = [(v, ids[v], args.out, args.split) for v in videos if not _done(args.out, ids[v])]
    log.info("prepare: %d videos, %d already done, %d to do, %d jobs -> %s",
             len(videos), len(videos) - len(todo), len(todo), args.jobs, args.out)
    failures: list[str] = []
    with tqdm(total=len(todo), desc="prepare", unit="clip") as bar:
        for _, _rec, err in _prepare_all(todo, args.jobs, (str(args.predictor), args.redetect_every, args.upsample)):
            failures += [err] if err else []
            bar.update()
    records = write_manifest(args.out)
    print(f"prepared {len(records)} clips in {args.out} ({len(todo) - len(failures)} new); "
          f"{len(failures)} could not be used")
    for err in failures:
        print(f"  unusable: {err}")
    return 0 if records else 1
