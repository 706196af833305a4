"""The espeak-ng engine of the synthetic corpus: libespeak-ng phoneme timings, radio phones, closed bilabials."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import numpy as np
import pytest

from engine import face
from engine.config import SAMPLE_RATE_HZ

PACK = Path(__file__).resolve().parents[2] / "shared" / "data" / "talking-faces"
TEXT = "Bob bought a big blue map. Pam may buy my hot pot on Maui."
VOICES = ("en-us+m3", "en-gb-x-rp+f2", "en-029+klatt", "en-gb-scotland+Annie")
OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay")
BILABIALS = ("p", "b", "m")

pytestmark = pytest.mark.skipif(ctypes.util.find_library("espeak-ng") is None, reason="libespeak-ng is not installed")


@pytest.fixture(scope="module")
def face_model_path(tmp_path_factory, pack_manifest) -> Path:
    from export.synth.face_model import FaceModel

    path = tmp_path_factory.mktemp("espeak_model") / "face_model.npz"
    FaceModel.load_or_fit(PACK, path)
    return path


@pytest.fixture(scope="module")
def spoken():
    from export.synth.espeak import EspeakRequest, synthesize

    reqs = [EspeakRequest(TEXT, v, stretch, semis) for v, stretch, semis in zip(VOICES, (1.0, 1.3, 0.8, 1.1),
                                                                                (0.0, 3.0, -2.0, 1.0))]
    return synthesize(reqs)


def test_phone_timings_cover_the_audio(spoken):
    from export.synth.visemes import TARGETS

    for audio, phones in spoken:
        assert audio.dtype == np.float32 and len(audio) > SAMPLE_RATE_HZ
        starts = np.array([s for _, s, _ in phones])
        ends = np.array([e for _, _, e in phones])
        assert starts[0] == 0.0 and np.all(ends > starts) and np.allclose(starts[1:], ends[:-1])
        assert abs(ends[-1] - len(audio) / SAMPLE_RATE_HZ) < 0.002
        assert all(p in TARGETS for p, _, _ in phones)
        assert sum(p in BILABIALS for p, _, _ in phones) >= 12 and phones[0][0] == "pau"


def test_phone_timings_match_the_sound(spoken):
    """Vowels are loud and the pause between the two sentences is near silent, where espeak says they are."""
    def rms(audio, s, e):
        seg = audio[int(s * SAMPLE_RATE_HZ):int(e * SAMPLE_RATE_HZ)]
        return float(np.sqrt(np.mean(seg**2)))

    for audio, phones in spoken:
        vowels = [rms(audio, s, e) for p, s, e in phones if p in OPEN_VOWELS + ("uw", "iy", "ey", "ow")]
        pauses = [rms(audio, s + 0.02, e - 0.02) for p, s, e in phones[1:-1] if p == "pau" and e - s > 0.1]
        assert len(pauses) >= 1 and len(vowels) >= 10
        assert max(pauses) < 0.05 * np.median(vowels), (pauses, np.median(vowels))


def test_lips_close_at_bilabial_centres(spoken, face_model_path):
    from engine.timing import n_frames
    from export.synth.cli import landmarks_for, utterance_spec
    from export.synth.face_model import FaceModel

    model = FaceModel.load(face_model_path)
    for voice, (audio, phones) in zip(VOICES, spoken):
        spec = utterance_spec(3, 1, len(model.identities), "espeak")
        spec.update(voice=voice, emotion="neutral", emotion_intensity=0.0, articulation=1.0)
        gap = face.inner_lip_gap(landmarks_for(model, spec, phones, n_frames(len(audio), 30)))
        at = [(p, gap[min(round(0.5 * (s + e) * 30), len(gap) - 1)]) for p, s, e in phones]
        closed = [g for p, g in at if p in BILABIALS]
        opened = [g for p, g in at if p in OPEN_VOWELS]
        assert max(closed) < 0.3, (voice, closed)
        assert len(opened) >= 4 and np.median(opened) > 4.0, (voice, opened)


def test_cli_espeak_engine_writes_the_pack_format(tmp_path, face_model_path, make_synth_corpus):
    import soundfile as sf

    from export.data.pack import load_segments
    from export.synth import cli, espeak

    manifest = make_synth_corpus(tmp_path, 0.1, "espeak", face_model=face_model_path)
    assert manifest["voices"] == list(espeak.VOICES) and len(manifest["clips"]) >= 3
    for rec in manifest["clips"]:
        assert rec["id"].startswith("espeak7_") and rec["voice"] in espeak.VOICES and rec["tts_engine"] == "espeak"
        assert sf.info(tmp_path / rec["audio"]).samplerate == SAMPLE_RATE_HZ
        assert np.load(tmp_path / rec["landmarks"]).shape == (rec["frames"], 68, 2)
    # festival specs are drawn exactly as before the engine option existed
    assert cli.utterance_spec(1, 5, 60)["id"] == "synth1_000005"
    assert cli.utterance_spec(1, 5, 60)["voice"] == cli.utterance_spec(1, 5, 60, "festival")["voice"]
    combined = tmp_path / "combined"
    espeak.combine_corpora([tmp_path], combined)
    segments = load_segments(combined, split=None, fps=30, progress=False)
    assert {s.clip_id for s in segments} == {c["id"] for c in manifest["clips"]}


def test_bad_input_is_refused():
    from export.synth.cli import utterance_spec
    from export.synth.espeak import EspeakRequest, to_radio

    with pytest.raises(ValueError, match="voice"):
        EspeakRequest("hello", "kal_diphone")
    with pytest.raises(ValueError, match="text"):
        EspeakRequest("  ", "en-us+m1")
    with pytest.raises(ValueError, match="English mnemonics"):
        to_radio("~~")
    with pytest.raises(ValueError, match="engine"):
        utterance_spec(1, 0, 10, "sapi")
