"""AudioInput: any rate, format and chunking of real speech in, the same 16 kHz float32 stream out."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from engine.audio import AudioInput

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def speech_native(speech_wav) -> tuple[np.ndarray, int]:
    """espeak-ng speech at its own rate (22.05 kHz), float32 mono."""
    y, sr = sf.read(speech_wav, dtype="float32")
    return y, sr


def stream(ai: AudioInput, pcm: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, i = [], 0
    while i < len(pcm):
        n = sizes[len(out) % len(sizes)]
        out.append(ai.push(pcm[i : i + n]))
        i += n
    out.append(ai.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("rate_hz", [8000, 22050, 44100, 48000])
def test_streaming_resample_equals_one_shot(speech_native, rate_hz):
    y, sr = speech_native
    x = soxr.resample(y, sr, rate_hz).astype(np.float32)
    one_shot = soxr.resample(x, rate_hz, 16000, quality="HQ").astype(np.float32)
    sizes = [int(s) for s in RNG.integers(1, 3000, size=50)]
    streamed = stream(AudioInput(rate_hz), x, sizes)
    assert streamed.dtype == np.float32 and streamed.ndim == 1
    assert abs(len(streamed) - len(one_shot)) <= 1
    n = min(len(streamed), len(one_shot))
    assert np.abs(streamed[:n] - one_shot[:n]).max() < 1e-4


def test_16k_passes_through_untouched(speech_16k):
    ai = AudioInput(16000)
    got = stream(ai, speech_16k, [160, 333, 1, 4000])
    np.testing.assert_array_equal(got, speech_16k)
    assert ai.samples_out == ai.frames_in == len(speech_16k)


def test_int16_bytes_match_float32(speech_16k):
    pcm16 = np.round(np.clip(speech_16k, -1, 1) * 32767).astype(np.int16)
    as_float = pcm16.astype(np.float32) / 32768
    via_bytes = stream(AudioInput(16000, sample_format="pcm16"), pcm16.tobytes(), [640, 2, 5000])
    via_array = stream(AudioInput(16000, sample_format="pcm16"), pcm16, [999])
    np.testing.assert_array_equal(via_bytes, as_float)
    np.testing.assert_array_equal(via_array, as_float)
    rate = 44100  # and through the resampler: int16 and float32 of the same sound agree
    x = soxr.resample(speech_16k, 16000, rate).astype(np.float32)
    x16 = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    a = stream(AudioInput(rate, sample_format="pcm16"), x16, [1234])
    b = stream(AudioInput(rate), x16.astype(np.float32) / 32768, [1234])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_interleaved_stereo_is_downmixed(speech_16k):
    left = speech_16k
    right = np.roll(speech_16k, 37) * np.float32(0.5)
    inter = np.stack([left, right], axis=1)  # (frames, 2)
    expected = (left + right) / 2
    np.testing.assert_allclose(stream(AudioInput(16000, channels=2), inter, [700]), expected, atol=1e-7)
    np.testing.assert_allclose(
        stream(AudioInput(16000, channels=2), inter.reshape(-1), [702]), expected, atol=1e-7
    )
    pcm = np.round(inter * 16000).astype(np.int16)
    got = stream(AudioInput(16000, channels=2, sample_format="pcm16"), pcm.tobytes(), [4 * 321])
    np.testing.assert_allclose(got, pcm.astype(np.float32).mean(axis=1) / 32768, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_rate_hz": 7999}, "8000..48000"),
        ({"sample_rate_hz": 96000}, "8000..48000"),
        ({"sample_rate_hz": 16000.0}, "integer"),
        ({"sample_rate_hz": 16000, "channels": 0}, "channels"),
        ({"sample_rate_hz": 16000, "sample_format": "s24"}, "sample_format"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AudioInput(**kwargs)


@pytest.mark.parametrize("rate_hz", [16000, 48000])
def test_bad_chunks_are_rejected_and_leave_the_stream_intact(speech_16k, rate_hz):
    x = soxr.resample(speech_16k, 16000, rate_hz).astype(np.float32) if rate_hz != 16000 else speech_16k
    x16 = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    reference = stream(AudioInput(rate_hz, sample_format="pcm16"), x16, [1000])
    ai = AudioInput(rate_hz, sample_format="pcm16")
    out = [ai.push(x16[:1000])]
    nan_chunk = np.full(10, np.nan, np.float32)
    for bad, match in [
        (x16[1000:2000].astype(np.float32), "int16"),  # wrong dtype
        (x16[1000:2000].tobytes()[:-1], "whole number of 2-byte frames"),  # odd byte count
        (b"", "empty"),
        (x16[:0], "empty"),
        (x16[1000:2000].reshape(-1, 4), "shape"),
        ([1, 2, 3], "bytes or a numpy array"),
        (nan_chunk, "int16"),
    ]:
        with pytest.raises(ValueError, match=match):
            ai.push(bad)
    with pytest.raises(ValueError, match="cannot change mid-stream"):
        ai.push(x16[1000:2000], sample_rate_hz=rate_hz // 2)
    out.append(ai.push(x16[1000:], sample_rate_hz=rate_hz))
    out.append(ai.flush())
    np.testing.assert_array_equal(np.concatenate(out), reference)
    with pytest.raises(ValueError, match="flushed"):
        ai.push(x16[:100])


def test_non_finite_float_samples_are_rejected(speech_16k):
    ai = AudioInput(22050, channels=2)
    good = np.zeros((100, 2), np.float32)
    for value in (np.nan, np.inf, -np.inf):
        bad = good.copy()
        bad[50, 1] = value
        with pytest.raises(ValueError, match="finite"):
            ai.push(bad)
        with pytest.raises(ValueError, match="finite"):
            ai.push(bad.tobytes())
    with pytest.raises(ValueError, match="multiple of 2 channels"):
        ai.push(np.zeros(3, np.float32))
    assert ai.frames_in == 0 and ai.push(good).dtype == np.float32
