"""The synthetic corpus: real festival speech, a face model fitted on the real pack, the pack's file format."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine import face
from engine.config import N_LANDMARKS, SAMPLE_RATE_HZ

PACK = Path(__file__).resolve().parents[2] / "shared" / "data" / "talking-faces"

pytestmark = pytest.mark.skipif(shutil.which("festival") is None, reason="festival is not installed")

OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay")
BILABIALS = ("p", "b", "m")


@pytest.fixture(scope="module")
def face_model_path(tmp_path_factory, pack_manifest) -> Path:
    from export.synth.face_model import FaceModel

    path = tmp_path_factory.mktemp("synth_model") / "face_model.npz"
    FaceModel.load_or_fit(PACK, path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, face_model_path, make_synth_corpus) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_a")
    return out, make_synth_corpus(out, 0.05, face_model=face_model_path)


def test_same_seed_gives_identical_files(corpus, tmp_path, face_model_path, make_synth_corpus):
    out_a, manifest = corpus
    out_b = tmp_path / "b"
    out_b.mkdir()
    make_synth_corpus(out_b, 0.05, face_model=face_model_path)
    files = sorted(p.name for p in out_a.iterdir() if p.name not in ("synth_run.json", "face_model.npz"))
    assert len(manifest["clips"]) == 3 and len(files) == 1 + 3 * 3
    for name in files:
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name
    (tmp_path / "c").mkdir()
    other = make_synth_corpus(tmp_path / "c", 0.05, face_model=face_model_path, seed=8)
    assert [c["text"] for c in other["clips"]] != [c["text"] for c in manifest["clips"]]


def test_files_match_the_pack_format(corpus):
    import soundfile as sf

    out, manifest = corpus
    assert manifest["layout"] == "ibug68"
    for rec in manifest["clips"]:
        info = sf.info(out / rec["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE_HZ, 1, "PCM_16")
        lm = np.load(out / rec["landmarks"])
        assert lm.dtype == np.float32 and lm.shape == (rec["frames"], N_LANDMARKS, 2)
        assert rec["frames"] == int(np.ceil(info.frames * rec["fps"] / SAMPLE_RATE_HZ))
        # canonical frame: eyes placed as engine.face places them (long real chins may pass y = 256)
        assert np.isfinite(lm).all() and -50 < lm.min() and lm.max() < 306
        assert abs(face.interocular(lm).mean() - face.CANONICAL_INTEROCULAR_PX) < 10
        eye_mid = lm[:, list(face.EYE_OUTER_CORNERS)].mean(axis=(0, 1))
        assert np.abs(eye_mid - np.asarray(face.CANONICAL_EYE_MID_PX)).max() < 25
        assert rec["source_dataset"] == "synth" and rec["split"] in ("train", "val")
        assert rec["emotion"] in manifest["emotions"] and rec["voice"] in manifest["voices"] and rec["text"]


def test_pack_loader_reads_the_corpus(corpus):
    from export.data.pack import load_segments

    out, manifest = corpus
    segments = load_segments(out, split=None, fps=30, progress=False)
    assert {s.clip_id for s in segments} == {c["id"] for c in manifest["clips"]}
    for s in segments:
        assert s.source == "synth" and s.canonical.shape[1:] == (N_LANDMARKS, 2)
        assert len(s.canonical) == int(np.ceil(len(s.audio) * 30 / SAMPLE_RATE_HZ))


def test_phones_cover_the_audio(corpus):
    out, manifest = corpus
    for rec in manifest["clips"]:
        phones = json.loads((out / rec["phones"]).read_text())
        starts = np.array([p["start_s"] for p in phones])
        ends = np.array([p["end_s"] for p in phones])
        assert starts[0] == 0.0 and np.all(ends > starts) and np.allclose(starts[1:], ends[:-1])
        assert abs(ends[-1] - rec["duration_s"]) < 0.05, (ends[-1], rec["duration_s"])
        assert phones[0]["phone"] == "pau" and len(phones) > 5


@pytest.fixture(scope="module")
def bob(face_model_path, tmp_path_factory):
    """'Bob bought a big blue map...' in every voice, through festival and the face model."""
    from engine.timing import n_frames
    from export.synth.cli import landmarks_for, utterance_spec
    from export.synth.face_model import FaceModel
    from export.synth.festival import VOICES, TtsRequest, synthesize

    model = FaceModel.load(face_model_path)
    text = "Bob bought a big blue map. Pam may buy my hot pot on Maui."
    results = synthesize([TtsRequest(text, v) for v in VOICES], tmp_path_factory.mktemp("bob"))
    out = []
    for voice, (audio, phones) in zip(VOICES, results):
        spec = utterance_spec(3, 0, len(model.identities))
        spec.update(voice=voice, emotion="neutral", emotion_intensity=0.0, articulation=1.0)
        out.append((audio, phones, landmarks_for(model, spec, phones, n_frames(len(audio), 30))))
    return out


def test_lips_close_on_bilabials_and_open_on_open_vowels(bob):
    for audio, phones, lm in bob:
        gap = face.inner_lip_gap(lm)
        at = [(p, gap[min(round(0.5 * (s + e) * 30), len(gap) - 1)]) for p, s, e in phones]
        closed = [g for p, g in at if p in BILABIALS]
        opened = [g for p, g in at if p in OPEN_VOWELS]
        assert len(closed) >= 8 and len(opened) >= 4
        assert max(closed) < 0.3, closed
        assert np.median(opened) > 4.0 and min(opened) > 1.0, opened
        assert gap.max() < 30.0


def test_mouth_leads_the_sound(bob):
    """Lips are already shut at the acoustic start of every bilabial after a vowel (closure before burst)."""
    from export.synth.visemes import CLOSURE_LEAD_S

    for _, phones, lm in bob:
        gap = face.inner_lip_gap(lm)
        for (p0, _, _), (p1, s, e) in itertools.pairwise(phones):
            if p1 in BILABIALS and p0 in OPEN_VOWELS + ("uw", "iy", "ih", "ow", "ey", "ax"):
                i = int(np.ceil((s - CLOSURE_LEAD_S) * 30))
                if i / 30 <= e - 0.2 * (e - s):
                    assert gap[i] < 0.3, (p1, s, gap[i])


def test_rounded_vowels_narrow_the_mouth(bob):
    for _, phones, lm in bob:
        width = np.linalg.norm(lm[:, 54] - lm[:, 48], axis=-1) / face.interocular(lm) * 100
        at = {p: [] for p in ("uw", "ae", "iy", "ay")}
        for p, s, e in phones:
            if p in at:
                at[p].append(width[min(round(0.5 * (s + e) * 30), len(width) - 1)])
        assert np.mean(at["uw"]) < np.mean(at["ae"] + at["iy"] + at["ay"]) - 1.0, at


def test_sentence_generator_is_varied():
    from export.synth.text import sentence

    rng = np.random.default_rng(0)
    texts = [sentence(rng, e) for e in ("neutral", "happy", "sad", "angry", "surprised") for _ in range(100)]
    words = [w.strip(".,?!'").lower() for t in texts for w in t.split()]
    assert len(set(texts)) >= 495
    assert len(set(words)) > 300
    assert sum(t.endswith("?") for t in texts) > 50 and sum(any(c.isdigit() for c in t) for t in texts) > 20
    assert sum(w[:1] in "pbm" for w in words) / len(words) > 0.15
    assert all('"' not in t and 3 <= len(t.split()) <= 45 for t in texts)
    with pytest.raises(ValueError, match="emotion"):
        sentence(rng, "bored")


def test_face_model_and_expressions(face_model_path):
    from export.synth.face_model import FaceModel, expression_offsets

    model = FaceModel.load(face_model_path)
    assert len(model.identities) >= 50 and np.abs(face.inner_lip_gap(model.identities)).max() < 1e-9
    assert np.allclose([face.inner_lip_gap(b) for b in model.basis], [1, 0, 0, 0], atol=1e-6)
    assert 5 <= model.blink_rate_per_min <= 30
    happy, sad = expression_offsets("happy", 1.0), expression_offsets("sad", 1.0)
    assert happy[48, 1] < 0 and happy[54, 1] < 0 and sad[48, 1] > 0 and sad[21, 1] < 0
    assert expression_offsets("surprised", 1.0)[17:27, 1].max() < 0 and expression_offsets("angry", 1.0)[21, 1] > 0
    with pytest.raises(ValueError, match="emotion"):
        expression_offsets("bored", 1.0)


def test_bad_input_is_refused():
    from export.synth.festival import TtsRequest
    from export.synth.visemes import mouth_params

    with pytest.raises(ValueError, match="voice"):
        TtsRequest("hello", "no_such_voice")
    with pytest.raises(ValueError, match="text"):
        TtsRequest('say "hi"', "kal_diphone")
    with pytest.raises(ValueError, match="radio phones"):
        mouth_params([("xx", 0.0, 0.1)], 3)
