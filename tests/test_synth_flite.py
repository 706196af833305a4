"""The flite engine: `flite -psdur` phone timings that line up with the sound, radio phones, a held-out voice."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.config import SAMPLE_RATE_HZ

PACK = Path(__file__).resolve().parents[2] / "shared" / "data" / "talking-faces"
TEXT = "Bob bought a big blue map. Pam may buy my hot pot on Maui."
OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay")
BILABIALS = ("p", "b", "m")

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (Debian package flite)")


@pytest.fixture(scope="module")
def spoken():
    from export.synth.flite import VOICES, FliteRequest, synthesize

    reqs = [FliteRequest(TEXT, v, stretch, semis) for v, stretch, semis in zip(VOICES, (1.0, 1.3, 0.8, 1.1),
                                                                               (0.0, 3.0, -2.0, 1.0))]
    return list(zip(reqs, synthesize(reqs)))


def test_psdur_output_becomes_contiguous_phones():
    from export.synth.flite import parse_psdur

    assert parse_psdur("pau:0.25 b:0.3 aa:0.45\n") == [("pau", 0.0, 0.25), ("b", 0.25, 0.3), ("aa", 0.3, 0.45)]
    with pytest.raises(ValueError, match="phone:end_seconds"):
        parse_psdur("pau 0.25")
    with pytest.raises(ValueError, match="before its start"):
        parse_psdur("pau:0.25 b:0.2")
    with pytest.raises(ValueError, match="no phone segments"):
        parse_psdur("  \n")


@needs_flite
def test_phone_timings_cover_the_audio_in_radio_phones(spoken):
    from export.synth.visemes import TARGETS

    for req, (audio, phones) in spoken:
        assert audio.dtype == np.float32 and len(audio) > 2 * SAMPLE_RATE_HZ
        starts = np.array([s for _, s, _ in phones])
        ends = np.array([e for _, _, e in phones])
        assert starts[0] == 0.0 and np.all(ends > starts) and np.allclose(starts[1:], ends[:-1])
        # flite's diphone voice stops the sound inside the closing pause; speech itself is all there
        speech_end = max(e for p, _, e in phones if p != "pau")
        assert speech_end <= len(audio) / SAMPLE_RATE_HZ <= ends[-1] + 0.002, req.voice
        assert all(p in TARGETS for p, _, _ in phones)
        assert sum(p in BILABIALS for p, _, _ in phones) >= 12 and phones[0][0] == "pau"


@needs_flite
def test_rate_and_pitch_reach_the_sound(spoken):
    """A stretch of 1.3 makes the same text longer than at 0.8, so flite heard the setting."""
    lengths = {req.duration_stretch: len(audio) for req, (audio, _) in spoken}
    assert lengths[1.3] > 1.3 * lengths[0.8]


@needs_flite
def test_phone_timings_match_the_sound(spoken):
    """Vowels are loud and the pause between the two sentences is near silent, where flite says they are."""
    def rms(audio, s, e):
        seg = audio[int(s * SAMPLE_RATE_HZ):int(e * SAMPLE_RATE_HZ)]
        return float(np.sqrt(np.mean(seg**2)))

    for req, (audio, phones) in spoken:
        vowels = [rms(audio, s, e) for p, s, e in phones if p in OPEN_VOWELS + ("uw", "iy", "ey", "ow")]
        pauses = [rms(audio, s + 0.02, e - 0.02) for p, s, e in phones[1:-1] if p == "pau" and e - s > 0.1]
        assert len(pauses) >= 1 and len(vowels) >= 10, req.voice
        assert max(pauses) < 0.05 * np.median(vowels), (req.voice, pauses, np.median(vowels))


@needs_flite
def test_cli_flite_engine_writes_training_voices_only(tmp_path, make_synth_corpus):
    import soundfile as sf

    from export.synth import flite

    manifest = make_synth_corpus(tmp_path, 0.15, "flite")
    assert manifest["voices"] == list(flite.TRAIN_VOICES) and len(manifest["clips"]) >= 3
    assert not set(flite.HELD_OUT_VOICES) & {r["voice"] for r in manifest["clips"]}
    for rec in manifest["clips"]:
        assert rec["id"].startswith("flite7_") and rec["tts_engine"] == "flite"
        assert sf.info(tmp_path / rec["audio"]).samplerate == SAMPLE_RATE_HZ
        assert np.load(tmp_path / rec["landmarks"]).shape == (rec["frames"], 68, 2)


def test_bad_input_is_refused():
    from export.synth.flite import HELD_OUT_VOICES, TRAIN_VOICES, VOICES, FliteRequest

    assert HELD_OUT_VOICES == ("rms",) and set(TRAIN_VOICES) | set(HELD_OUT_VOICES) == set(VOICES)
    with pytest.raises(ValueError, match="voice must be one of .*rms"):
        FliteRequest("hello", "kal_diphone")
    with pytest.raises(ValueError, match="text"):
        FliteRequest("  ", "awb")
