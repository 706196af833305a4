"""CMU Flite TTS with exact phoneme timings (`flite -psdur`), festival radio phones, 16 kHz float32 out.

`synthesize(requests)` -> list of (audio (N,) float32 at 16 kHz, phones [(phone, start_s, end_s)]).
Flite's clustergen voices (awb, rms, slt) are CMU ARCTIC speakers that festival's packages here do not
carry (slt only as an HTS voice), so flite widens the voices a model hears in training, or tests it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from engine.config import SAMPLE_RATE_HZ
from export.synth.request import SpeechRequest

# kal16: diphone (the speaker of festival's kal_diphone); awb (Scottish English, male), rms (US, male),
# slt (US, female): clustergen voices. Flite's plain `kal` runs at 8 kHz and is left out.
VOICES = ("kal16", "slt", "awb", "rms")
# `kfusion synth --engine flite` speaks with these; rms stays out of every corpus, so that
# `kfusion bench articulation` can test on a voice no model heard (benchmarks/bench_articulation.py).
TRAIN_VOICES = ("kal16", "slt", "awb")
HELD_OUT_VOICES = tuple(v for v in VOICES if v not in TRAIN_VOICES)
FLITE_TIMEOUT_S = 120


class FliteRequest(SpeechRequest):
    """One flite utterance; voice from VOICES. f0_range is not applied (flite has no such knob for every voice)."""

    VOICES = VOICES
    VOICES_NAME = "flite.VOICES"


def parse_psdur(text: str) -> list[tuple[str, float, float]]:
    """`flite -psdur` output ('pau:0.249 b:0.314 ...', each phone with its end time) -> [(phone, start_s, end_s)]."""
    phones, start = [], 0.0
    for token in text.split():
        phone, sep, end_s = token.rpartition(":")
        if not sep or not phone:
            raise ValueError(f"expected 'phone:end_seconds' tokens from flite -psdur, got {token!r}")
        end = float(end_s)
        if end < start:
            raise ValueError(f"flite phone {phone!r} ends at {end} s, before its start {start} s")
        phones.append((phone, start, end))
        start = end
    if not phones:
        raise ValueError("flite printed no phone segments")
    return phones


def _flite() -> str:
    exe = shutil.which("flite")
    if exe is None:
        raise FileNotFoundError("flite is not installed (Debian package flite)")
    return exe


def say(req: FliteRequest, exe: str | None = None) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """One request -> (audio at 16 kHz float32, phones). Rate and pitch via flite's duration_stretch, f0_shift."""
    exe = exe or _flite()
    with tempfile.TemporaryDirectory(prefix="kfusion-flite-") as tmp:
        wav = Path(tmp) / "u.wav"
        cmd = [exe, "-voice", req.voice, "-psdur",
               "--setf", f"duration_stretch={req.duration_stretch:.4f}",
               "--setf", f"f0_shift={2.0 ** (req.pitch_semitones / 12.0):.4f}",
               "-t", req.text, "-o", str(wav)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FLITE_TIMEOUT_S, check=False)
        if proc.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"flite failed ({proc.returncode}) for {req.text!r} ({req.voice}): {proc.stderr[-400:]}")
        y, sr = sf.read(wav, dtype="float32")
    if y.ndim != 1 or not len(y):
        raise RuntimeError(f"flite made no mono audio for {req.text!r} ({req.voice})")
    if sr != SAMPLE_RATE_HZ:
        y = soxr.resample(y, sr, SAMPLE_RATE_HZ).astype(np.float32)
    return y, parse_psdur(proc.stdout)


def synthesize(requests: list[FliteRequest]) -> list[tuple[np.ndarray, list]]:
    """Each request -> (audio at 16 kHz float32, phones [(radio phone, start_s, end_s)])."""
    exe = _flite()
    return [say(req, exe) for req in requests]
