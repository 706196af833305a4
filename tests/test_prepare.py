"""`kfusion prepare` on real pack videos: reproduces the pack's dlib landmarks and sound, MEAD labels, resuming."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from export import prepare
from export.data import pack
from export.data.landmarks_dlib import missing_requirements

PACK = pack.PACK_DIR
SHORT_CLIP = "grid_bbaf2n"  # GRID, 75 frames of 360x288 MPEG-1 with its own sound track
MEAD_CLIP = "spectre_M003_happy_024"  # MEAD M003, happy, level 1: 63 frames


@pytest.fixture(scope="module")
def requirements():
    problems = missing_requirements()
    if problems:
        pytest.skip("; ".join(problems))
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    if not (PACK / "manifest.json").is_file():
        pytest.skip(f"the talking-face pack is not at {PACK}")
    return {r["id"]: r for r in pack.load_manifest(PACK)}


def kfusion(argv: list[str]) -> int:
    """`kfusion prepare ...` through the module's own parser and run (what engine/cli.py calls)."""
    assert argv[0] == "prepare"
    parser = argparse.ArgumentParser(prog="kfusion prepare")
    prepare.add_arguments(parser)
    return prepare.run(parser.parse_args(argv[1:]))


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def test_prepare_reproduces_pack_and_resumes(tmp_path, requirements, capsys):
    rec = requirements[SHORT_CLIP]
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(rec["video"], videos / Path(rec["video"]).name)
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=1", "-f", "lavfi", "-i",
            "sine=frequency=440:duration=1", "-shortest", str(videos / "noface.mp4"))
    _ffmpeg("-i", rec["video"], "-an", "-t", "1", str(videos / "silent.mp4"))
    out = tmp_path / "out"
    assert kfusion(["prepare", str(videos), "--out", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "prepared 1 clips" in printed and "3 could not be used" in printed
    assert "broken.mp4" in printed and "noface.mp4: no face found" in printed and "silent.mp4: no sound" in printed

    (got,) = pack.load_manifest(out)
    assert got["id"] == SHORT_CLIP and got["split"] == "train"
    for key in ("fps", "frames", "frames_with_face", "width", "height"):
        assert got[key] == rec[key], key
    ours, theirs = np.load(got["landmarks"]), np.load(rec["landmarks"])
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    err = np.linalg.norm(ours - theirs, axis=-1)
    assert np.median(err) <= 0.5 and np.percentile(err, 99) <= 2.0  # px; dlib on the same frames
    y, sr = sf.read(got["audio"], dtype="int16")
    y_pack, _ = sf.read(rec["audio"], dtype="int16")
    assert sr == 16000 and y.ndim == 1 and len(y) == len(y_pack)
    assert np.abs(y.astype(int) - y_pack).max() <= 1  # same ffmpeg decode, 16 kHz mono PCM16
    assert pack.load_segments(out, fps=30, progress=False)

    mtime = Path(got["landmarks"]).stat().st_mtime_ns
    assert kfusion(["prepare", str(videos), "--out", str(out), "--jobs", "2"]) == 0
    assert "(0 new)" in capsys.readouterr().out  # finished clips are skipped
    assert Path(got["landmarks"]).stat().st_mtime_ns == mtime


def test_prepare_mead_tree(tmp_path, requirements):
    rec = requirements[MEAD_CLIP]
    clip_dir = tmp_path / "MEAD" / "M003" / "video" / "front" / "happy" / "level_1"
    sound_dir = tmp_path / "MEAD" / "M003" / "audio" / "happy" / "level_1"
    clip_dir.mkdir(parents=True)
    sound_dir.mkdir(parents=True)
    (clip_dir / "024.mp4").symlink_to(rec["video"])
    _ffmpeg("-i", rec["audio"], "-c:a", "aac", "-b:a", "128k", str(sound_dir / "024.m4a"))
    out = tmp_path / "out"
    assert kfusion(["prepare", str(tmp_path / "MEAD"), "--out", str(out), "--jobs", "1"]) == 0
    (got,) = json.loads((out / "manifest.json").read_text())["clips"]
    assert got["id"] == "M003_happy_level1_024"
    assert (got["speaker"], got["emotion"], got["level"], got["source_dataset"]) == ("M003", "happy", 1, "MEAD")
    assert got["sound_source"].endswith("024.m4a")
    err = np.linalg.norm(np.load(out / got["landmarks"]) - np.load(rec["landmarks"]), axis=-1)
    assert np.median(err) <= 0.5
    y, _ = sf.read(out / got["audio"])
    y_pack, _ = sf.read(rec["audio"])
    assert len(y) == len(y_pack) and np.corrcoef(y, y_pack)[0, 1] > 0.99  # the .m4a, lined up at lag 0
    (seg, *_) = pack.load_segments(out, fps=30, progress=False)
    assert seg.emotion == "happy"


def test_missing_model_is_named(tmp_path, capsys):
    problems = missing_requirements(tmp_path / "nothing.dat")
    assert any("libdlib-data" in p and "nothing.dat" in p for p in problems)
    video = tmp_path / "x.mp4"
    video.write_bytes(b"")
    code = kfusion(["prepare", str(video), "--out", str(tmp_path / "o"), "--predictor", str(tmp_path / "no.dat")])
    assert code == 2 and "apt-get install libdlib-data" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        kfusion(["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])


MIXED_CLIPS = ("sad_WDA_AOC", "grid_swwp2s", "ret_face1", "av2av_10", "lrs2_00009", "astorfi_sample_video",
               "smirk_dafoe", "skyreels_drv4", "spectre_M003_happy_024", "avcross_E1", "eamm_M030_sad_3_001",
               "lrs3_8UhqkX2VAmo_00001")


@pytest.mark.slow
def test_prepare_matches_pack_on_mixed_sources(tmp_path, requirements, capsys):
    """12 clips: HDTF, GRID, LRS2/3, MEAD, web, 22.1-30 fps, mp4/mpg/webm, NaN frames, a silent video + wav."""
    videos = [requirements[c]["video"] for c in MIXED_CLIPS]
    assert kfusion(["prepare", *videos, "--out", str(tmp_path), "--jobs", "2"]) == 0
    assert f"prepared {len(MIXED_CLIPS)} clips" in capsys.readouterr().out
    errors = []
    for got in pack.load_manifest(tmp_path):
        rec = requirements[got["id"]]
        ours, theirs = np.load(got["landmarks"]), np.load(rec["landmarks"])
        assert ours.shape == theirs.shape and got["fps"] == rec["fps"], got["id"]
        assert np.array_equal(np.isnan(ours[:, 0, 0]), np.isnan(theirs[:, 0, 0])), got["id"]
        errors.append(np.linalg.norm(ours - theirs, axis=-1)[~np.isnan(ours[:, :, 0])])
    err = np.concatenate(errors)
    assert np.median(err) <= 2.0 and np.percentile(err, 99) <= 2.0, (np.median(err), np.percentile(err, 99))
