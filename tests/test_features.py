"""The numba feature front end matches librosa on real speech, and any chunking gives the same hops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.bench_features import librosa_reference
from engine import features as F
from engine.config import HOP_SAMPLES, SAMPLE_RATE_HZ

CTX = {name: F.N_MELS + i for i, name in enumerate(F.CONTEXT_NAMES)}
MAX_MEL_DB = 1e-3
MAX_F0_CENTS = 1.0


def check_against_librosa(y: np.ndarray, min_voiced_fraction: float) -> None:
    ours = F.extract(y)
    ref = librosa_reference(y)
    assert ours.shape == (len(y) // HOP_SAMPLES, F.N_FEATURES) and ours.dtype == np.float32
    mel_db = ours[:, : F.N_MELS].astype(np.float64) * (10 / np.log(10))
    assert np.abs(mel_db - ref["mel_db"]).max() < MAX_MEL_DB
    assert abs(F.MEL_FLOOR - 1e-10) < 1e-25  # the reference uses the same floor
    np.testing.assert_allclose(ours[:, CTX["log_rms"]], np.log(ref["rms"] + F.RMS_FLOOR), atol=1e-5)
    np.testing.assert_allclose(ours[:, CTX["zcr"]], ref["zcr"], atol=1e-6)
    np.testing.assert_allclose(ours[:, CTX["centroid_khz"]], ref["centroid_khz"], atol=1e-5)
    voiced = ours[:, CTX["voiced"]] == 1
    assert set(np.unique(ours[:, CTX["voiced"]])) <= {0.0, 1.0}
    assert voiced.mean() >= min_voiced_fraction, f"only {voiced.mean():.0%} of the speech hops are voiced"
    f0_ours = F.F0_REF_HZ * 2 ** (ours[voiced, CTX["f0_semitones"]].astype(np.float64) / 12)
    cents = 1200 * np.log2(f0_ours / ref["f0_hz"][voiced])
    assert np.abs(cents).max() < MAX_F0_CENTS
    assert np.all(ours[~voiced, CTX["f0_semitones"]] == 0)
    aper = ours[:, CTX["aperiodicity"]]
    assert aper.min() >= 0 and aper.max() <= 1 and np.all(aper[voiced] < F.VOICED_MAX_APERIODICITY)


def test_matches_librosa_on_espeak_speech(speech_16k):
    check_against_librosa(speech_16k, min_voiced_fraction=0.2)


def test_matches_librosa_on_a_pack_clip(pack_clip):
    import soundfile as sf

    y, sr = sf.read(pack_clip["audio"], dtype="float32", frames=5 * SAMPLE_RATE_HZ)
    assert sr == SAMPLE_RATE_HZ and y.ndim == 1
    check_against_librosa(y, min_voiced_fraction=0.1)


def test_silence_is_the_silence_vector_and_constants_hold():
    assert F.N_FEATURES == F.N_MELS + F.N_CONTEXT == 90 and len(F.CONTEXT_NAMES) == F.N_CONTEXT == 10
    assert isinstance(F.FEATURE_VERSION, str) and F.SILENCE.shape == (F.N_FEATURES,)
    hops = F.extract(np.zeros(30 * HOP_SAMPLES, np.float32))
    assert hops.shape == (30, F.N_FEATURES)
    np.testing.assert_array_equal(hops, np.broadcast_to(F.SILENCE, hops.shape))


def test_sine_gives_its_pitch_and_the_deltas_are_causal_differences():
    t = np.arange(SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    y = (0.3 * np.sin(2 * np.pi * 200.0 * t) * np.minimum(1, t * 4)).astype(np.float32)  # 250 ms fade-in
    hops = F.extract(y)
    steady = hops[40:]
    assert np.all(steady[:, CTX["voiced"]] == 1)
    # 200 Hz = 12 st over 100 Hz; librosa's YIN (zero-extended difference) reads a pure tone ~3 cents sharp
    np.testing.assert_allclose(steady[:, CTX["f0_semitones"]], 12.0, atol=0.05)
    np.testing.assert_allclose(steady[:, CTX["centroid_khz"]], 0.2, atol=0.05)
    prev = np.vstack([F.SILENCE, hops[:-1]])
    for name in ("log_rms", "f0_semitones", "centroid_khz"):
        np.testing.assert_allclose(
            hops[:, CTX["d_" + name]], hops[:, CTX[name]] - prev[:, CTX[name]], atol=1e-5
        )
    assert hops[:, CTX["flux"]].min() >= 0 and hops[:20, CTX["flux"]].max() > 0.1  # the fade-in rises


@pytest.fixture(scope="module")
def excerpt(speech_16k) -> tuple[np.ndarray, np.ndarray]:
    """1.3 s of speech from the middle (a partial last hop included) and its whole-signal features."""
    y = speech_16k[SAMPLE_RATE_HZ // 2 : SAMPLE_RATE_HZ // 2 + 13 * SAMPLE_RATE_HZ // 10 + 77]
    return y, F.extract(y)


def push_in_chunks(y: np.ndarray, sizes) -> tuple[np.ndarray, F.FeatureExtractor]:
    ex = F.FeatureExtractor()
    out, i, sizes = [], 0, list(sizes)
    while i < len(y):
        n = sizes.pop(0) if sizes else len(y) - i
        got = ex.push(y[i : i + n])
        assert got.shape == (ex.hops_emitted - sum(len(o) for o in out), F.N_FEATURES)
        out.append(got)
        i += n
    return np.concatenate(out), ex


def test_one_chunk_and_one_sample_chunks_equal_extract(excerpt):
    y, whole = excerpt
    one, ex = push_in_chunks(y, [len(y)])
    np.testing.assert_allclose(one, whole, atol=1e-6)
    short = y[: 20 * HOP_SAMPLES + 3]
    singles, ex = push_in_chunks(short, [1] * len(short))
    assert ex.hops_emitted == 20
    np.testing.assert_allclose(singles, whole[:20], atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2000), min_size=1, max_size=40))
def test_random_chunking_equals_extract(excerpt, sizes):
    y, whole = excerpt
    got, ex = push_in_chunks(y, sizes)
    assert ex.hops_emitted == len(whole)
    np.testing.assert_allclose(got, whole, atol=1e-6)


def test_bad_input_is_rejected_without_touching_the_stream(excerpt):
    y, whole = excerpt
    ex = F.FeatureExtractor()
    first = ex.push(y[:1000])
    bad = y[1000:1500].copy()
    bad[123] = np.nan
    with pytest.raises(ValueError, match="finite"):
        ex.push(bad)
    bad[123] = np.inf
    with pytest.raises(ValueError, match="finite"):
        ex.push(bad)
    with pytest.raises(ValueError, match="float32"):
        ex.push(y[1000:1500].astype(np.float64))
    with pytest.raises(ValueError, match="1-D"):
        ex.push(y[1000:1500].reshape(-1, 2))
    with pytest.raises(ValueError, match="numpy array"):
        ex.push(list(y[1000:1500]))
    assert ex.push(np.zeros(0, np.float32)).shape == (0, F.N_FEATURES)
    read_only = np.frombuffer(y[1000:].tobytes(), dtype=np.float32)  # also read-only input, same numbers
    assert not read_only.flags.writeable
    rest = ex.push(read_only)
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)


def test_hops_can_be_written_into_the_callers_rows(excerpt):
    """push(x, out=rows): the same numbers as a plain push, in place; a wrong `out` changes nothing."""
    y, whole = excerpt
    ex = F.FeatureExtractor()
    store = np.full((len(whole) + 4, F.N_FEATURES), -7.0, np.float32)
    i = 0
    for n in (37, 160, 1000, 333, len(y)):  # remainders carried between pushes
        x = y[i:i + n]
        k = ex.hops_emitted
        m = ex.hops_for(len(x))
        with pytest.raises(ValueError, match=rf"C-contiguous float32 of shape \({m}, {F.N_FEATURES}\)"):
            ex.push(x, out=store[k:k + m + 1])
        assert ex.hops_emitted == k, "a refused `out` leaves the stream as it was"
        got = ex.push(x, out=store[k:k + m])
        assert m == 0 or np.shares_memory(got, store), "the hops are written where the caller asked"
        i += n
        if i >= len(y):
            break
    np.testing.assert_array_equal(store[:len(whole)], whole)
    assert np.all(store[len(whole):] == -7.0), "nothing written past the hops"
