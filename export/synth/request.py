"""One utterance for a TTS engine, checked once; festival and espeak-ng each narrow it to their voices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

MAX_LISTED_VOICES = 5  # error messages list the voices when there are this few, else name the table


@dataclass(frozen=True)
class SpeechRequest:
    """Text, voice, rate factor (>1 slower), pitch shift in semitones, F0 range factor."""

    VOICES: ClassVar[tuple[str, ...]] = ()
    VOICES_NAME: ClassVar[str] = "VOICES"  # where users find the voice table, for error messages

    text: str
    voice: str
    duration_stretch: float = 1.0
    pitch_semitones: float = 0.0
    f0_range: float = 1.0

    def __post_init__(self):
        if self.voice not in self.VOICES:
            known = (str(self.VOICES) if len(self.VOICES) <= MAX_LISTED_VOICES
                     else f"{self.VOICES_NAME} (e.g. {self.VOICES[0]!r})")
            raise ValueError(f"voice must be one of {known}, got {self.voice!r}")
        if not 0.5 <= self.duration_stretch <= 2.0:
            raise ValueError(f"duration_stretch must be in [0.5, 2], got {self.duration_stretch}")
        self.check_text()

    @classmethod
    def from_spec(cls, spec: dict):
        """From an utterance spec (export.synth.cli.utterance_spec): its text, voice and prosody fields."""
        return cls(spec["text"], spec["voice"], spec["duration_stretch"], spec["pitch_semitones"], spec["f0_range"])

    def check_text(self) -> None:
        if not self.text.strip():
            raise ValueError(f"text must be non-empty, got {self.text!r}")
