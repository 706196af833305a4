"""Festival TTS with exact phoneme timings: many utterances per festival process, 16 kHz float32 out.

`synthesize(requests, workdir)` -> list of (audio (N,) float32 at 16 kHz, phones [(phone, start_s, end_s)]),
phones always in festival's radio set (the non-English voices' phones are mapped, export/synth/phonesets.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from engine.config import SAMPLE_RATE_HZ
from export.synth.phonesets import phones_to_radio
from export.synth.request import SpeechRequest
from export.synth.sox import sox_same_length

ENGLISH_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
# Festival's voices for other languages (Debian festvox-* packages), each with its phone set's language
# (export/synth/phonesets.py maps their phones to radio phones). They read English text by their own
# letter-to-sound rules, which is enough to widen the speakers a model hears; `kfusion synth --engine intl`
# (English text) and `--engine intl-native` (their own languages) speak with INTL_TRAIN_VOICES, and
# `kfusion bench articulation --engine intl` tests on the others, which no corpus holds, reading sentences
# in their own language.
INTL_VOICES = {
    "lp_diphone": "italian", "pc_diphone": "italian",  # Italian woman, man
    "czech_machac": "czech", "czech_krb": "czech", "czech_dita": "czech", "czech_ph": "czech",  # man, boy, woman, man
    "hy_fi_mv_diphone": "finnish", "suo_fi_lj_diphone": "finnish",  # Finnish man, woman
    "upc_ca_ona_hts": "catalan",  # Catalan woman (HTS)
}
INTL_TRAIN_VOICES = ("lp_diphone", "czech_machac", "czech_krb", "hy_fi_mv_diphone")
INTL_HELD_OUT_VOICES = tuple(v for v in INTL_VOICES if v not in INTL_TRAIN_VOICES)
VOICES = ENGLISH_VOICES + tuple(INTL_VOICES)
# Mean/std F0 that festival's linear-regression intonation model targets for each diphone voice.
DIPHONE_F0_HZ = {"kal_diphone": (105.0, 14.0), "ked_diphone": (110.0, 16.0)}
FESTIVAL_TIMEOUT_S = 600


class TtsRequest(SpeechRequest):
    """One festival utterance; the text goes into a Scheme string, so no double quotes or backslashes."""

    VOICES = VOICES
    VOICES_NAME = "festival.VOICES"

    def check_text(self) -> None:
        if '"' in self.text or "\\" in self.text or not self.text.strip():
            raise ValueError(f"text must be non-empty without double quotes or backslashes, got {self.text!r}")


def intl_text(text: str) -> str:
    """Text as the non-English voices can read it: the Italian front end fails on apostrophes and on some
    questions, so apostrophes go and question marks become full stops (for every such voice, alike)."""
    return text.replace("'", "").replace("?", ".")


def _scheme(req: TtsRequest, wav: Path, segs: Path) -> str:
    lines = [f"(voice_{req.voice})"]
    text = intl_text(req.text) if req.voice in INTL_VOICES else req.text
    if req.voice in INTL_VOICES:  # pitch is shifted afterwards (see _pitch_shift); HTS ona ignores the stretch
        lines.append(f"(Parameter.set 'Duration_Stretch {req.duration_stretch:.4f})")
    elif req.voice in DIPHONE_F0_HZ:
        mean, std = DIPHONE_F0_HZ[req.voice]
        mean *= 2.0 ** (req.pitch_semitones / 12.0)
        lines.append(f"(Parameter.set 'Duration_Stretch {req.duration_stretch:.4f})")
        lines.append(f"(set! int_lr_params '((target_f0_mean {mean:.2f}) (target_f0_std {std * req.f0_range:.2f})"
                     " (model_f0_mean 170) (model_f0_std 34)))")
    else:  # HTS: the engine's own speed option; pitch is shifted afterwards (see _pitch_shift)
        lines.append("(set! hts_engine_params (append cmu_us_slt_arctic_hts::hts_engine_params "
                     f"(list '(\"-r\" {1.0 / req.duration_stretch:.4f}))))")
    # unwind-protect: an utterance festival cannot say leaves no files, and the batch goes on
    lines += [
        f'(set! utt (Utterance Text "{text}"))',
        (f"(unwind-protect (begin (utt.synth utt) (utt.save.wave utt \"{wav}\" 'riff) "
         f'(utt.save.segs utt "{segs}")) nil)'),
    ]
    return "\n".join(lines)


def read_segs(path: Path) -> list[tuple[str, float, float]]:
    """festival .segs (end time, 100, phone per line after a '#') -> [(phone, start_s, end_s)]."""
    phones, start = [], 0.0
    body = path.read_text().split("#", 1)[-1]
    for line in body.strip().splitlines():
        end_s, _, phone = line.split()
        end = float(end_s)
        phones.append((phone, start, end))
        start = end
    if not phones:
        raise ValueError(f"{path} holds no phone segments")
    return phones


def _pitch_shift(y: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Time-preserving pitch shift with sox (WSOLA), used for the HTS voice."""
    return sox_same_length(y, sr, ["pitch", f"{100.0 * semitones:.1f}"])


def synthesize(requests: list[TtsRequest], workdir: Path) -> list[tuple[np.ndarray, list]]:
    """Run one festival process over all requests; returns (audio at 16 kHz float32, phones) each."""
    exe = shutil.which("festival")
    if exe is None:
        raise FileNotFoundError("festival is not installed (Debian packages festival, festvox-*)")
    workdir.mkdir(parents=True, exist_ok=True)
    script = "\n".join(_scheme(r, workdir / f"u{i}.wav", workdir / f"u{i}.segs")
                       for i, r in enumerate(requests))
    (workdir / "batch.scm").write_text(script + "\n")
    proc = subprocess.run([exe, "-b", str(workdir / "batch.scm")], check=False, capture_output=True, text=True,
                          timeout=FESTIVAL_TIMEOUT_S)
    out = []
    for i, req in enumerate(requests):
        wav, segs = workdir / f"u{i}.wav", workdir / f"u{i}.segs"
        if not wav.is_file() or not segs.is_file():
            raise RuntimeError(f"festival made no output for {req.text!r}: {proc.stderr[-400:]}")
        y, sr = sf.read(wav, dtype="float32")
        if abs(req.pitch_semitones) > 0.05 and req.voice not in DIPHONE_F0_HZ:
            y = _pitch_shift(y, sr, req.pitch_semitones)
        if sr != SAMPLE_RATE_HZ:
            y = soxr.resample(y, sr, SAMPLE_RATE_HZ).astype(np.float32)
        phones = read_segs(segs)
        if req.voice in INTL_VOICES:
            phones = phones_to_radio(phones, INTL_VOICES[req.voice])
        out.append((y, phones))
        wav.unlink()
        segs.unlink()
    return out
