"""eSpeak NG TTS through libespeak-ng (ctypes) with exact phoneme timings, mapped to festival radio phones.

`synthesize(requests)` -> list of (audio (N,) float32 at 16 kHz, phones [(radio phone, start_s, end_s)]).
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import soxr

from engine.config import SAMPLE_RATE_HZ
from export.synth.request import SpeechRequest

LIBRARY = "libespeak-ng.so.1"
LANGS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "Annie", "adam", "Andy", "Denis", "steph", "linda", "max", "paul")
VOICES = tuple(f"{lang}+{v}" for lang in LANGS for v in VARIANTS)
DEFAULT_RATE_WPM = 175
RATE_WPM_RANGE = (80, 450)
DEFAULT_PITCH = 50  # espeak's 0..100 pitch and range scales; 50 is each voice's own default
PITCH_UNITS_PER_SEMITONE = 4.0  # about right around the default pitch
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
CHARS_UTF8 = 1
POS_CHARACTER = 1
EVENT_LIST_TERMINATED, EVENT_SAMPLERATE, EVENT_PHONEME = 0, 8, 7
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4
PAUSES = ("_", "_:", "_!", "_^_", "||", "|", "_!_")

# espeak English phoneme mnemonics (phsource/ph_english*) -> festival radio phones (visemes.py)
PHONE_MAP = {
    "p": "p", "b": "b", "m": "m", "t": "t", "d": "d", "k": "k", "g": "g", "n": "n", "N": "ng", "f": "f",
    "v": "v", "T": "th", "D": "dh", "s": "s", "z": "z", "S": "sh", "Z": "zh", "h": "hh", "tS": "ch",
    "dZ": "jh", "l": "l", "r": "r", "w": "w", "j": "y", "W": "w", "x": "k", "?": "t", "C": "hh", "L": "l",
    "a": "ae", "a#": "ax", "A:": "aa", "A@": "aa", "A": "aa", "aa": "aa", "@": "ax", "@L": "ax", "@2": "ax",
    "@5": "ax", "3": "er", "3:": "er", "aI": "ay", "aI@": "ay", "aI3": "ay", "aU": "aw", "aU@": "aw",
    "e": "eh", "E": "eh", "e@": "eh", "eI": "ey", "i": "iy", "i:": "iy", "i@": "iy", "i@3": "iy", "I": "ih",
    "I#": "ih", "I2": "ih", "0": "aa", "O": "ao", "O:": "ao", "O@": "ao", "O2": "ao", "OI": "oy", "o@": "ow",
    "oU": "ow", "o": "ow", "u:": "uw", "u": "uw", "U": "uh", "U@": "uh", "V": "ah", "Q": "aa", "y": "uw",
    ";": "y",  # the linking glide in "the odd" (en-us)
}
PHONE_MARKS = "#;/-!^123456789"  # allophone/length marks stripped when a mnemonic has no exact entry


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT in speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakRequest(SpeechRequest):
    """One espeak-ng utterance; voice is 'lang+variant' from VOICES."""

    VOICES = VOICES
    VOICES_NAME = "espeak.VOICES"


class _Engine:
    """The process' one libespeak-ng instance (the library keeps global state)."""

    _instance: _Engine | None = None

    def __init__(self):
        try:
            self.lib = ctypes.CDLL(LIBRARY)
        except OSError as err:
            raise FileNotFoundError(f"{LIBRARY} not found (Debian package espeak-ng / libespeak-ng1)") from err
        self.sample_rate_hz = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate_hz <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate_hz})")
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[str, int]] = []
        self._cb = _CALLBACK(self._on_audio)  # keep a reference: the library calls it later
        self.lib.espeak_SetSynthCallback(self._cb)

    @classmethod
    def get(cls) -> _Engine:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _on_audio(self, wav, n, events) -> int:
        if n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_PHONEME:
                self.events.append((events[i].id.string.decode("ascii", "replace"), int(events[i].sample)))
            i += 1
        return 0

    def say(self, req: EspeakRequest) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """int16 samples at the library's rate and [(mnemonic, start sample)] for one request."""
        if self.lib.espeak_SetVoiceByName(req.voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {req.voice!r}")
        rate = int(np.clip(round(DEFAULT_RATE_WPM / req.duration_stretch), *RATE_WPM_RANGE))
        pitch = int(np.clip(round(DEFAULT_PITCH + PITCH_UNITS_PER_SEMITONE * req.pitch_semitones), 0, 100))
        span = int(np.clip(round(DEFAULT_PITCH * req.f0_range), 0, 100))
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, span)):
            self.lib.espeak_SetParameter(param, value, 0)
        self.chunks, self.events = [], []
        text = req.text.encode("utf-8")
        err = self.lib.espeak_Synth(text, len(text) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed ({err}) for {req.text!r}")
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return audio, self.events


def to_radio(mnemonic: str) -> str:
    """An espeak English phoneme mnemonic -> festival radio phone ('pau' for pauses)."""
    if mnemonic in PAUSES or mnemonic.startswith("_"):
        return "pau"
    if mnemonic in PHONE_MAP:
        return PHONE_MAP[mnemonic]
    stripped = mnemonic.rstrip(PHONE_MARKS) or mnemonic
    for key in (stripped, stripped[:2], stripped[:1]):
        if key in PHONE_MAP:
            return PHONE_MAP[key]
    raise ValueError(f"no radio phone for espeak phoneme {mnemonic!r}; expected English mnemonics")


def phone_segments(events: list[tuple[str, int]], n_samples: int, sr: int) -> list[tuple[str, float, float]]:
    """[(mnemonic, start sample)] -> contiguous [(radio phone, start_s, end_s)] covering 0..n_samples/sr,
    leading silence as 'pau', zero-length phones dropped, neighbouring pauses merged (espeak ends on a pause)."""
    bounds = [(to_radio(m), min(max(s, 0), n_samples)) for m, s in events]
    out: list[list] = []
    starts = [0] + [s for _, s in bounds]
    ends = [s for _, s in bounds] + [n_samples]
    for phone, start, end in zip(["pau"] + [p for p, _ in bounds], starts, ends):
        if end <= start:
            continue
        if out and phone == "pau" and out[-1][0] == "pau":
            out[-1][2] = end
        else:
            out.append([phone, start, end])
    if not out:
        raise ValueError("espeak produced no audio")
    return [(p, s / sr, e / sr) for p, s, e in out]


def synthesize(requests: list[EspeakRequest]) -> list[tuple[np.ndarray, list]]:
    """Each request -> (audio at 16 kHz float32, phones [(radio phone, start_s, end_s)])."""
    engine = _Engine.get()
    sr = engine.sample_rate_hz
    out = []
    for req in requests:
        pcm, events = engine.say(req)
        if len(pcm) == 0 or not events:
            raise RuntimeError(f"espeak-ng made no audio/phonemes for {req.text!r} ({req.voice})")
        phones = phone_segments(events, len(pcm), sr)
        y = soxr.resample(pcm.astype(np.float32) / 32768.0, sr, SAMPLE_RATE_HZ).astype(np.float32)
        out.append((y, phones))
    return out


def combine_corpora(sources: list[Path], out: Path) -> dict:
    """Write out/manifest.json listing every clip of the `sources` corpora with absolute file paths."""
    out.mkdir(parents=True, exist_ok=True)
    merged: dict | None = None
    for src in sources:
        m = json.loads((Path(src) / "manifest.json").read_text())
        for rec in m["clips"]:
            for key in ("audio", "landmarks", "phones"):
                rec[key] = str((Path(src) / rec[key]).resolve())
        if merged is None:
            merged = {**m, "voices": list(m["voices"]), "synth": {"sources": []}, "clips": []}
        elif m["layout"] != merged["layout"]:
            raise ValueError(f"{src} has layout {m['layout']!r}, expected {merged['layout']!r}")
        merged["voices"] += [v for v in m["voices"] if v not in merged["voices"]]
        merged["synth"]["sources"].append({"path": str(Path(src).resolve()), **m.get("synth", {})})
        merged["clips"] += m["clips"]
    if merged is None:
        raise ValueError("need at least one source corpus")
    ids = [r["id"] for r in merged["clips"]]
    if len(set(ids)) != len(ids):
        raise ValueError("source corpora share clip ids")
    merged["synth"]["minutes"] = round(sum(r["duration_s"] for r in merged["clips"]) / 60.0, 3)
    (out / "manifest.json").write_text(json.dumps(merged, indent=1))
    return merged
