"""Real speech with its p, b and m marked, for `kfusion bench articulation --engine grid`: the talking-face
pack's GRID test clips, whose words their names spell (export/data/grid.py), timed by aligning festival's
English voices saying the same words onto each recording (export/synth/align.py).

Each utterance also carries the clip's tracked face, so the bench can score the real lips at the same phones:
how often they shut says how far to trust the phone times, and what a perfect model would score.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

GRID_SOURCE = "GRID"
SPLIT = "test"  # the pack's GRID clips are all in its test split: reported here, never used to choose


def grid_speech(n_clips: int, fps: int) -> list[dict]:
    """[{text, voice, audio, phones, identity, truth}] for the first n_clips GRID clips (by clip id) that were
    tracked in one piece. `truth` is the tracked face (T, 68, 2) in the canonical frame, `identity` its mean
    shape (what `kfusion eval` gives the models)."""
    from tqdm import tqdm

    from engine.config import SAMPLE_RATE_HZ
    from export.data.grid import grid_sentence
    from export.data.pack import PACK_DIR, load_manifest, load_segments
    from export.synth import festival
    from export.synth.align import align_phones

    durations = {r["id"]: float(r["duration_s"]) for r in load_manifest(PACK_DIR) if r["source_dataset"] == GRID_SOURCE}
    if not durations:
        raise FileNotFoundError(f"no {GRID_SOURCE} clips in {PACK_DIR}/manifest.json")
    segments = {}
    for seg in load_segments(PACK_DIR, SPLIT, fps, progress=False):
        if seg.clip_id in durations:
            segments.setdefault(seg.clip_id, []).append(seg)
    whole = sorted(cid for cid, segs in segments.items()  # a clip cut by a tracking gap no longer holds all its words
                   if len(segs) == 1 and segs[0].start_s == 0.0
                   and len(segs[0].audio) / SAMPLE_RATE_HZ >= durations[cid] - 2.0 / fps)
    if len(segments) > len(whole):
        print(f"GRID clips not tracked in one piece, left out: {sorted(set(segments) - set(whole))}")
    out = []
    with tempfile.TemporaryDirectory(prefix="kfusion-bench-grid-") as tmp:
        for cid in tqdm(whole[:n_clips], desc="GRID clips: festival renditions, alignment", unit="clip"):
            seg = segments[cid][0]
            text = grid_sentence(cid)
            renditions = festival.synthesize([festival.TtsRequest(text, v) for v in festival.ENGLISH_VOICES],
                                             Path(tmp))
            out.append({"text": text, "voice": cid, "audio": seg.audio.astype(np.float32),
                        "phones": align_phones(seg.audio, renditions), "identity": seg.identity,
                        "truth": seg.canonical})
    return out
