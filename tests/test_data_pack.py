"""Pack loading: canonical/head-motion round trip on real landmarks, fps resampling, NaN gaps, splits, sync."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.config import SAMPLE_RATE_HZ
from engine.face import (
    CANONICAL_EYE_MID_PX,
    CANONICAL_INTEROCULAR_PX,
    apply_head_motion,
    apply_similarity,
    inner_lip_gap,
    interocular,
)
from engine.timing import n_frames
from export.data import pack
from export.data.mead import mead_labels, parse_mead_name, parse_mead_path

LOWER_FACE = np.r_[5:12, 55:60, 64:68]  # jaw bottom and lower lip: moved down to open the mouth
SRC_FPS = 25
MOUTH_HZ, MOUTH_PX = 1.7, 6.0


def _segments(rec: dict, fps: int) -> list[pack.Segment]:
    return pack.clip_segments(rec, pack.reference_shape().astype(np.float64), fps)


def test_reference_shape_is_canonical():
    ref = pack.reference_shape()
    assert ref.shape == (68, 2) and ref.dtype == np.float32
    assert interocular(ref) == pytest.approx(CANONICAL_INTEROCULAR_PX, abs=1e-3)
    np.testing.assert_allclose((ref[36] + ref[45]) / 2, CANONICAL_EYE_MID_PX, atol=1e-3)
    assert ref[30, 1] > ref[36, 1] and ref[57, 1] > ref[30, 1] and ref[8, 1] > ref[57, 1]  # eyes, nose, lip, chin
    assert pack.reference_shape() is not ref  # callers get a copy they may modify


def test_round_trip_reproduces_real_landmarks(pack_clip):
    """At the clip's own fps the segments land on its frames: head motion + median pose give the pixels back."""
    assert float(pack_clip["fps"]) == 25.0
    lm = np.load(pack_clip["landmarks"]).astype(np.float64)
    segs = _segments(pack_clip, 25)
    assert segs
    for s in segs:
        first = round(s.start_s * 25)
        assert s.start_s == pytest.approx(first / 25, abs=1e-9)
        src = lm[first:first + len(s.canonical)]
        ok = ~np.isnan(src).any(axis=(1, 2))
        assert ok.mean() > 0.9
        moved = apply_head_motion(s.canonical.astype(np.float64), s.head.astype(np.float64))
        back = apply_similarity(moved, s.median_pose)
        err = np.linalg.norm(back[ok] - src[ok], axis=-1)
        assert err.max() < 0.01, err.max()  # px: float32 rounding only
        # the canonical frame: rigid points sit on the reference, identity is the mean shape
        assert np.abs(np.median(s.head[:, :2], axis=0)).max() < 1e-4
        np.testing.assert_allclose(s.identity, s.canonical.mean(0), atol=1e-4)
        assert np.median(np.abs(interocular(s.canonical) - CANONICAL_INTEROCULAR_PX)) < 3.0


def _synthetic_track(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Known motion of the reference face: (canonical (T,68,2), pixel landmarks (T,68,2)) at times t (s)."""
    ref = pack.reference_shape().astype(np.float64)
    canon = np.repeat(ref[None], len(t), axis=0)
    canon[:, LOWER_FACE, 1] += MOUTH_PX * (1 + np.sin(2 * np.pi * MOUTH_HZ * t))[:, None]
    poses = np.column_stack([
        np.log(1.8) + 0.08 * np.sin(2 * np.pi * 0.4 * t),
        0.15 * np.sin(2 * np.pi * 0.7 * t),
        200 + 25 * np.sin(2 * np.pi * 0.5 * t),
        150 + 12 * np.cos(2 * np.pi * 0.3 * t),
    ])
    pixels = np.stack([apply_similarity(c, p) for c, p in zip(canon, poses)])
    return canon, pixels


def _write_clip(root: Path, clip_id: str, lm: np.ndarray, audio: np.ndarray, fps: float, split="train") -> dict:
    """A folder in the pack's format holding one clip; returns its record with absolute paths."""
    root.mkdir(parents=True, exist_ok=True)
    sf.write(root / f"{clip_id}.wav", audio, SAMPLE_RATE_HZ, subtype="PCM_16")
    np.save(root / f"{clip_id}.lm68.npy", lm.astype(np.float32))
    rec = {"id": clip_id, "split": split, "audio": f"{clip_id}.wav", "landmarks": f"{clip_id}.lm68.npy",
           "fps": fps, "frames": len(lm), "emotion": "happy"}
    path = root / "manifest.json"
    clips = json.loads(path.read_text())["clips"] if path.is_file() else []
    path.write_text(json.dumps({"clips": clips + [rec]}))
    return next(r for r in pack.load_manifest(root) if r["id"] == clip_id)


@pytest.fixture
def speech_6s(speech_16k) -> np.ndarray:
    reps = int(np.ceil(6.0 * SAMPLE_RATE_HZ / len(speech_16k)))
    return np.tile(speech_16k, reps)[: 6 * SAMPLE_RATE_HZ]


def test_resample_25_to_30_fps_matches_known_motion(tmp_path, speech_6s):
    t_src = np.arange(int(6.0 * SRC_FPS)) / SRC_FPS
    _, pixels = _synthetic_track(t_src)
    rec = _write_clip(tmp_path, "synthetic25", pixels, speech_6s, SRC_FPS)
    segs = pack.load_segments(tmp_path, split="train", fps=30, progress=False)
    assert len(segs) == 1
    s = segs[0]
    assert (s.clip_id, s.emotion, s.fps, s.start_s) == ("synthetic25", "happy", 30, 0.0)
    assert len(s.canonical) == n_frames(len(s.audio), 30) == 179  # frames at or before the last video frame (5.96 s)
    t_new = np.arange(len(s.canonical)) / 30
    canon_true, pix_true = _synthetic_track(t_new)
    gap_true = inner_lip_gap(canon_true)
    # lip opening at the new frame times (between the 25 fps samples) follows the known sine
    assert np.abs(inner_lip_gap(s.canonical) - gap_true).max() < 0.02 * MOUTH_PX
    back = apply_similarity(apply_head_motion(s.canonical.astype(np.float64), s.head.astype(np.float64)),
                            s.median_pose)
    assert np.abs(back - pix_true).max() < 0.1  # px, against poses moving up to ~90 px/s
    np.testing.assert_array_equal(s.audio, pack.load_audio(rec["audio"])[: len(s.audio)])


def test_short_gap_filled_long_gap_cuts_and_audio_stays_in_sync(tmp_path, speech_6s):
    t_src = np.arange(int(6.0 * SRC_FPS)) / SRC_FPS
    _, pixels = _synthetic_track(t_src)
    short = pixels.copy()
    short[40:45] = np.nan  # 0.2 s: filled
    rec = _write_clip(tmp_path, "short_gap", short, speech_6s, SRC_FPS)
    (s,) = _segments(rec, 30)
    t_new = np.arange(len(s.canonical)) / 30
    err = np.abs(inner_lip_gap(s.canonical) - inner_lip_gap(_synthetic_track(t_new)[0]))
    near_gap = (t_new > 39 / SRC_FPS - 0.1) & (t_new < 45 / SRC_FPS + 0.1)
    assert err[near_gap].max() < 0.35 * MOUTH_PX  # 0.24 s without data: a smooth bridge, not the true arc
    assert err[~near_gap].max() < 0.02 * MOUTH_PX
    long_ = pixels.copy()
    long_[20:32] = np.nan  # 0.48 s gap cuts; the 0.8 s piece before it is dropped
    long_[88:96] = np.nan  # 0.32 s gap cuts again
    rec = _write_clip(tmp_path, "long_gap", long_, speech_6s, SRC_FPS)
    segs = _segments(rec, 30)
    audio = pack.load_audio(rec["audio"])
    assert [round(s.start_s * SRC_FPS) for s in segs] == [32, 96]
    for s in segs:
        s0 = round(s.start_s * SAMPLE_RATE_HZ)
        np.testing.assert_array_equal(s.audio, audio[s0:s0 + len(s.audio)])  # cut at frame 0's time
        assert len(s.canonical) == n_frames(len(s.audio), 30)
        assert not np.isnan(s.canonical).any() and not np.isnan(s.head).any()
        last_t = s.start_s + (len(s.canonical) - 1) / 30
        assert last_t <= (87 if s is segs[0] else 149) / SRC_FPS + 1e-9  # no frame past the tracked span
    # 29.97 fps: frame 0 of a later piece starts at the first audio sample at or after its video frame
    rec = _write_clip(tmp_path, "ntsc", long_, speech_6s, 29.97)
    segs = _segments(rec, 30)
    assert segs[0].start_s == pytest.approx(np.ceil(32 / 29.97 * SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ)


def test_splits_respected(pack_manifest):
    by_split = {c["id"]: c["split"] for c in pack_manifest["clips"]}
    val = pack.load_segments(split="val", progress=False)
    assert val and {s.split for s in val} == {"val"}
    assert all(by_split[s.clip_id] == "val" for s in val)
    records = {r["id"]: r for r in pack.load_manifest()}
    for s in val:  # every segment: frames match its audio, which is the clip's sound from frame 0's time on
        assert len(s.canonical) == len(s.head) == n_frames(len(s.audio), s.fps) >= s.fps * pack.MIN_SEGMENT_S
        s0 = round(s.start_s * SAMPLE_RATE_HZ)
        np.testing.assert_array_equal(s.audio, pack.load_audio(records[s.clip_id]["audio"])[s0:s0 + len(s.audio)])
    ids = {r["id"] for r in pack.load_manifest() if r["split"] == "train"}
    assert not ids & {c["id"] for c in pack_manifest["clips"] if c["split"] == "test"}
    with pytest.raises(ValueError, match="fps"):
        pack.load_segments(split="val", fps=0, progress=False)


def test_valid_runs_and_bad_input(tmp_path):
    valid = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1], bool)
    assert pack.valid_runs(valid, 2) == [(0, 5), (9, 10)]
    assert pack.valid_runs(~np.ones(3, bool), 2) == []
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        pack.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"clips": [{"id": "x", "split": "train"}]}))
    with pytest.raises(ValueError, match="lacks"):
        pack.load_manifest(tmp_path)


def test_mead_paths():
    v = parse_mead_path("/data/MEAD/M030/video/front/angry/level_3/016.mp4")
    assert (v.speaker, v.emotion, v.level, v.clip, v.view) == ("M030", "angry", 3, "016", "front")
    assert v.audio_path == Path("/data/MEAD/M030/audio/angry/level_3/016.m4a")
    a = parse_mead_path("W015/audio/neutral/level_1/030.m4a")
    assert (a.speaker, a.emotion, a.level, a.clip, a.view) == ("W015", "neutral", 1, "030", None)
    assert parse_mead_path("M030/video/front/bored/level_3/016.mp4") is None
    assert parse_mead_path("clips/lrs2_00009.mp4") is None
    assert parse_mead_path("M030/video/front/angry/3/016.mp4") is None
    n = parse_mead_name("samples/MEAD/M003_level_1_disgusted_015.mp4")
    assert (n.speaker, n.emotion, n.level, n.clip) == ("M003", "disgusted", 1, "015")
    n = mead_labels("test/crop/M030_sad_3_001.mp4")
    assert (n.speaker, n.emotion, n.level, n.clip) == ("M030", "sad", 3, "001")
    assert mead_labels("grid_bbaf2n") is None and mead_labels("sad_WDA_AOC") is None


def test_without_the_pack_a_corpus_uses_its_own_mean_face(monkeypatch, caplog):
    """A machine with only its own corpus (here: the pack itself, as any corpus) still loads it: the
    canonical frame falls back to the corpus's own train-split mean face, with a warning."""
    root = pack.PACK_DIR
    with_pack = pack.load_segments(root, "val", 30, progress=False)
    monkeypatch.setattr(pack, "PACK_DIR", Path("/nonexistent/talking-faces"))
    with caplog.at_level("WARNING", logger="kfusion.data"):
        without = pack.load_segments(root, "val", 30, progress=False)
    assert "no talking-face pack at /nonexistent/talking-faces" in caplog.text
    assert [s.clip_id for s in without] == [s.clip_id for s in with_pack]
    for a, b in zip(without, with_pack):  # the corpus is the pack here, so the frames are the same
        np.testing.assert_array_equal(a.canonical, b.canonical)
