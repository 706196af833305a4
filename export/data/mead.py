"""MEAD labels (speaker, emotion, intensity level) from a MEAD path or a flattened MEAD clip name.

MEAD keeps `Mxxx/video/front/<emotion>/level_<n>/<clip>.mp4` with its sound in
`Mxxx/audio/<emotion>/level_<n>/<clip>.m4a`; sample repositories flatten it to `M030_level_3_angry_016`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePath

MEAD_EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
MEAD_VIDEO_SUFFIXES = (".mp4",)
MEAD_AUDIO_SUFFIX = ".m4a"

_SPEAKER = re.compile(r"^[MW]\d{3}$")
_LEVEL = re.compile(r"^level_(\d+)$")
_EMO = "|".join(MEAD_EMOTIONS)
# flattened names: M030_level_3_angry_016 (SPECTRE samples) and M030_sad_3_001 (EAMM crops)
_FLAT = (
    re.compile(rf"(?<![A-Za-z0-9])([MW]\d{{3}})_level_(\d+)_({_EMO})_(\d+)$"),
    re.compile(rf"(?<![A-Za-z0-9])([MW]\d{{3}})_({_EMO})_(\d+)_(\d+)$"),
)


@dataclass(frozen=True)
class MeadClip:
    speaker: str  # e.g. "M030"
    emotion: str  # one of MEAD_EMOTIONS
    level: int  # intensity 1..3
    clip: str  # clip number within the emotion/level folder, e.g. "016"
    view: str | None = None  # camera ("front", ...) for video paths, None for audio or flattened names
    audio_path: Path | None = None  # the matching .m4a for a video path in the MEAD tree


def parse_mead_path(path: str | PurePath) -> MeadClip | None:
    """Labels of a file in the MEAD tree (video or audio); None when the path is not MEAD's layout."""
    p = PurePath(path)
    parts = p.parts
    if len(parts) < 5:
        return None
    level_m = _LEVEL.match(parts[-2])
    emotion = parts[-3]
    if level_m is None or emotion not in MEAD_EMOTIONS:
        return None
    if parts[-4] in ("audio",) and len(parts) >= 5 and _SPEAKER.match(parts[-5]):
        return MeadClip(parts[-5], emotion, int(level_m.group(1)), p.stem)
    if len(parts) >= 6 and parts[-5] == "video" and _SPEAKER.match(parts[-6]):
        view = parts[-4]
        root = Path(*parts[:-5])  # .../Mxxx
        audio = root / "audio" / emotion / parts[-2] / (p.stem + MEAD_AUDIO_SUFFIX)
        return MeadClip(parts[-6], emotion, int(level_m.group(1)), p.stem, view, audio)
    return None


def parse_mead_name(name: str) -> MeadClip | None:
    """Labels of a flattened MEAD clip name or path stem (`M030_level_3_angry_016`, `M030_sad_3_001`)."""
    stem = PurePath(name).stem
    m = _FLAT[0].search(stem)
    if m:
        return MeadClip(m.group(1), m.group(3), int(m.group(2)), m.group(4))
    m = _FLAT[1].search(stem)
    if m:
        return MeadClip(m.group(1), m.group(2), int(m.group(3)), m.group(4))
    return None


def mead_labels(path_or_name: str | PurePath) -> MeadClip | None:
    """Tree layout first, then a flattened name; None for anything that is not MEAD."""
    return parse_mead_path(path_or_name) or parse_mead_name(str(path_or_name))
